"""One-row serving in instructions: ``partial_predict_proba`` against the base's ``predict_proba``.

Wall-clock figures of a 100 us call move by +-30% between runs on a shared virtual
machine. Instruction counts do not: this script runs itself under Valgrind's
callgrind (``valgrind`` must be on the PATH) and reports, per served row, the
instructions of the base's one-row ``predict_proba``, of the layer's one-row
``partial_predict_proba`` (which calls it), and of the stream's own step
(validation, engine, commit). Same setup as ``bench_estimator.py``'s one-row rows.
Each measured loop is entered through a distinct C function (``functools.reduce``,
``itertools.accumulate``, ``itertools.starmap``), whose inclusive cost callgrind
reports. Instructions are not time (cache misses are not counted), but a change
that removes work shows here reliably.

Usage: ``python benchmarks/bench_one_row_instructions.py [--rows 100]`` (about two
minutes per criterion: Python runs about 50 times slower under callgrind).
"""

import argparse
import collections
import functools
import itertools
import os
import re
import subprocess
import sys
import tempfile

_ENTRIES = {"functools_reduce": "base", "accumulate_next": "layer", "starmap_next": "stream"}


def _serve(name, rows):
    """Run under callgrind: the three measured loops, each behind its own C entry point."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_estimator import _STREAMING, _data
    from sklearn.linear_model import LogisticRegression

    from skfairlayer import FairnessLayerClassifier

    params, n_classes = _STREAMING[name]
    X, y = _data(2_000, n_classes=n_classes)
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.02, sensitive_features=20, **params
    ).fit(X, y)
    base = clf.estimator_
    batch = [X[i : i + 1] for i in range(rows)]
    for r in (X[i : i + 1] for i in range(rows, rows + 20)):  # warm every path
        base.predict_proba(r)
        clf.partial_predict_proba(r)
    inputs = [clf._stream_inputs(r, None) for r in batch]
    stream = clf._stream()
    functools.reduce(lambda _, r: base.predict_proba(r), batch, None)
    collections.deque(
        itertools.accumulate(batch, lambda _, r: clf.partial_predict_proba(r)), maxlen=0
    )
    collections.deque(
        itertools.starmap(lambda s, c: stream.serve("proba", s, c), inputs), maxlen=0
    )


def _measure(name, rows):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "--serve", name, "--rows", str(rows)],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        report = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
            check=True, capture_output=True, text=True,
        ).stdout
    costs = {}
    for line in report.splitlines():
        m = re.match(r"\s*([\d,]+)\s.*?(" + "|".join(_ENTRIES) + ")", line)
        if m:
            costs.setdefault(_ENTRIES[m.group(2)], int(m.group(1).replace(",", "")) / rows)
    return costs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args.serve, args.rows)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_estimator import _STREAMING

    print("| criterion | base kIr/row | layer kIr/row | stream step kIr/row | ratio |")
    print("|---|---|---|---|---|")
    for name in _STREAMING:
        c = _measure(name, args.rows)
        print(f"| {name} | {c['base'] / 1e3:.0f} | {c['layer'] / 1e3:.0f} | "
              f"{c['stream'] / 1e3:.0f} | {c['layer'] / c['base']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
