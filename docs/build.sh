#!/usr/bin/env bash
# Build the HTML documentation offline, warnings as errors; runs every example of the gallery.
# Usage: bash docs/build.sh [extra sphinx-build options, e.g. -D plot_gallery=0]
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg
python -m sphinx -b html -W --keep-going docs docs/_build/html "$@"
echo "HTML pages in docs/_build/html/index.html"
