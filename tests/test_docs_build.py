"""The Sphinx documentation builds offline with warnings as errors (gallery execution skipped).

The examples themselves run in tests/test_examples.py; this checks the pages, the
API reference generated from the docstrings and the gallery's generated pages.
Skipped when the docs extra (Sphinx, numpydoc, sphinx-gallery) is not installed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    """Check that sphinx-build -W succeeds on a copy of docs/ and examples/."""
    for module in ("sphinx", "numpydoc", "sphinx_gallery"):
        pytest.importorskip(module)
    # Build a copy, so that generated sources never land in the working tree.
    ignore = shutil.ignore_patterns("_build", "generated", "auto_examples", "gen_modules")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=ignore)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
        "-D", "plot_gallery=0", str(tmp_path / "docs"), str(tmp_path / "html"),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    html = tmp_path / "html"
    for page in (
        "index.html",
        "user_guide/decisions.html",
        "api.html",
        "generated/skfairlayer.FairnessLayerClassifier.html",
        "generated/skfairlayer.plotting.ParityTradeoffDisplay.html",
        "auto_examples/index.html",
        "auto_examples/plot_quickstart_adult.html",
    ):
        assert (html / page).is_file(), page
