"""End to end, as a user waits: the layer's predict_proba / predict against its base's.

LogisticRegression base, 20 features plus an integer group column in ``X`` (kept as a
feature, the default), fitted on 20,000 rows. Ratios are to the base's own call on the same
rows, measured in the same run, round-robin (each round times every call once; the best of
``--repeat`` rounds is kept, so a busy neighbour slows all of them alike):

* batch: ``predict_proba`` and ``predict`` (parity decisions) at ``--rows`` rows, with 2
  and 10 groups;
* one row: ``partial_predict_proba`` of one row against the base's one-row
  ``predict_proba``, for every streaming criterion; its floor is the same call
  through a stream whose engine serves the base's row unchanged (the front end's
  cost: validation, groups, the base's call, the lock, the output array), so the
  difference is the stream's own step, in the loop.

Usage: ``python benchmarks/bench_estimator.py [--rows 1000000] [--repeat 7]``.
"""

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from skfairlayer import EqualOpportunity, FairnessLayerClassifier


def _best(func, repeat):
    return _round_robin([func], repeat)[0]


def _round_robin(funcs, repeat):
    """Best time of each of ``funcs``, timed in turn ``repeat`` times."""
    best = [np.inf] * len(funcs)
    for _ in range(repeat):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _data(n, seed=0, n_groups=2, n_classes=2):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    X = rng.normal(size=(n, 20)) + 0.3 * group[:, None]
    z = X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n)
    y = np.digitize(z, np.quantile(z, np.linspace(0, 1, n_classes + 1)[1:-1]))
    return np.column_stack([X, group.astype(float)]), y


def batch(rows, repeat, n_groups=2):
    X, y = _data(20_000, n_groups=n_groups)
    Xb, _ = _data(rows, seed=1, n_groups=n_groups)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.01, sensitive_features=20)
    clf.fit(X, y)
    base = clf.estimator_
    t_base, t_proba, t_pred = _round_robin(
        [lambda: base.predict_proba(Xb), lambda: clf.predict_proba(Xb), lambda: clf.predict(Xb)],
        repeat,
    )
    print(f"batch of {rows:,} rows, {n_groups} groups: base predict_proba {t_base * 1e3:.1f} ms")
    print(f"  layer predict_proba {t_proba * 1e3:.1f} ms ({t_proba / t_base:.2f}x)")
    print(f"  layer predict       {t_pred * 1e3:.1f} ms ({t_pred / t_base:.2f}x)")


_STREAMING = {
    "demographic parity (binary)": ({}, 2),
    "demographic parity (3 classes)": ({}, 3),
    "equal opportunity (binary)": ({"criterion": "equal_opportunity"}, 2),
    "equal opportunity (class 1 of 3)": ({"criterion": EqualOpportunity(positive_class=1)}, 3),
    "mean residual (binary)": ({"criterion": "mean_residual"}, 2),
}


class _Unchanged:
    """A stream engine that serves the base's row unchanged: no stream arithmetic."""

    def step_one(self, score, code):
        return score, None

    def commit(self, new, n_rows):
        pass


def one_row(repeat):
    print("one row: partial_predict_proba against the base's one-row predict_proba; floor: the "
          "same call through a stream that serves the base's row unchanged")
    for name, (params, n_classes) in _STREAMING.items():
        X, y = _data(5_000, n_classes=n_classes)
        clf, floor = (FairnessLayerClassifier(
            LogisticRegression(), tolerance=0.02, sensitive_features=20, **params
        ).fit(X, y) for _ in range(2))
        floor.stream_.engines["proba"] = _Unchanged()
        rows = [X[i : i + 1] for i in range(200)]
        base = clf.estimator_

        def serve(method, rows=rows):
            def run():
                for r in rows:
                    method(r)

            return run

        t_base, t_layer, t_floor = (t / len(rows) for t in _round_robin(
            [serve(base.predict_proba), serve(clf.partial_predict_proba),
             serve(floor.partial_predict_proba)], repeat))
        print(f"  {name}: base {t_base * 1e6:.0f} us, layer {t_layer * 1e6:.0f} us "
              f"({t_layer / t_base:.2f}x); floor {t_floor * 1e6:.0f} us ({t_floor / t_base:.2f}x): "
              f"the stream's step {(t_layer - t_floor) * 1e6:.0f} us")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    for n_groups in (2, 10):
        batch(args.rows, args.repeat, n_groups)
    one_row(args.repeat)


if __name__ == "__main__":
    main()
