"""Streaming on UCI Adult (sex): the pooled-gap primal-dual against the paper's algorithm.

Setup (per seed): the shipped Adult data is shuffled; the last ``--n-stream``
rows (20,000) form the stream, the others (12,561) fit
``FairnessLayerClassifier(LogisticRegression())`` with groups ``sex`` (not seen
by the model; one-hot / standardised features prepared once, so that the
stream is a numpy array and each call goes through the estimator's public
``partial_predict_proba`` / ``partial_predict``). The stream is then served in
batches of 1, 4, 16 and 64 rows, probabilities and decisions, by
``stream_algorithm="pooled"`` (default) and ``"paper"``.

Reported per algorithm and batch size:

- ``gap>=2000``: largest pooled gap of the served probabilities (difference
  of the two groups' mean served probability over all rows served so far)
  from row 2,000 on, and ``final``: at the end; the base scores' pooled gap
  for reference;
- ``cert@2000`` / ``cert@end``: the certificate (guaranteed bound on the
  pooled gap) reported by ``stream_report()`` (pooled algorithm only);
- ``distortion``: squared distortion ``sum (p - s)^2`` of the served
  probabilities divided by that of the offline projection of the whole
  stream at the same tolerance (``skfairlayer.project``, the hindsight
  optimum of a batch that knows every row);
- ``dec gap>=2000``: largest pooled selection-rate gap of the served
  decisions from row 2,000 on; ``dec acc``: their accuracy, next to the
  accuracy of the offline parity decisions of the whole stream
  (``predict`` on all 20,000 rows at once);
- ``us/call``: mean wall time of one ``partial_predict_proba`` call.

A second table times one row: the base ``LogisticRegression.predict_proba``,
``partial_predict_proba`` (pooled), and the batch ``predict_proba``.

Targets (issue 3): one-row ``partial_predict_proba`` <= 1.5x the base's
``predict_proba``; batch size 1, tolerance 0.02: pooled gap <= tolerance from
row 2,000 on, distortion <= 1.25x the offline projection; decisions' pooled
selection-rate gap <= tolerance from row 2,000 on.

Usage::

    python benchmarks/bench_streaming.py                   # 1 seed, random order
    python benchmarks/bench_streaming.py --seeds 3 --order age   # drifting stream
"""

import argparse
import time

import numpy as np
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from skfairlayer import FairnessLayerClassifier, project


def load(n_stream, seed, order):
    """Dense features (sex code last), target, and the fit / stream split."""
    try:
        from skfairlayer.datasets import load_adult

        adult = load_adult(sensitive_features="sex")
        X, y = adult.data, np.asarray(adult.target)
    except ImportError:  # datasets module missing: read the shared copy
        import pandas as pd

        frame = pd.read_csv("/work/shared/data/adult.csv", skipinitialspace=True)
        y = (frame.pop("income-per-year") == ">50K").to_numpy().astype(int)
        X = frame
    sex = (X["sex"].astype(str) == "Male").to_numpy().astype(np.float64)
    features = X.drop(columns=["sex"])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    fit_rows, stream_rows = perm[: len(y) - n_stream], perm[len(y) - n_stream :]
    if order == "age":  # drifting stream: roughly sorted by age (group shares drift too)
        age = features["age"].to_numpy().astype(float)[stream_rows]
        stream_rows = stream_rows[np.argsort(age + rng.normal(0, 5, age.size), kind="stable")]
    prep = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False),
         make_column_selector(dtype_exclude="number")),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    )
    prep.fit(features.iloc[fit_rows])
    dense = np.c_[prep.transform(features), sex]
    return dense[fit_rows], y[fit_rows], dense[stream_rows], y[stream_rows]


def pooled_gaps(values, groups):
    """Pooled gap after each row (NaN while a group is missing)."""
    onehot = np.eye(2)[groups]
    counts = np.cumsum(onehot, axis=0)
    sums = np.cumsum(onehot * values[:, None], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return np.abs(means[:, 1] - means[:, 0])


def run_stream(clf, X, algorithm, batch):
    """Serve the stream; return probabilities, decisions, certificates at 2000 / end, us/call."""
    clf.set_params(stream_algorithm=algorithm, stream_step=None)
    clf.reset_stream()
    n = X.shape[0]
    proba, labels, cert_2000 = [], [], np.nan
    spent = 0.0
    calls = 0
    for i in range(0, n, batch):
        t0 = time.perf_counter()
        proba.append(clf.partial_predict_proba(X[i : i + batch])[:, 1])
        spent += time.perf_counter() - t0
        calls += 1
        labels.append(clf.partial_predict(X[i : i + batch]))
        if i < 2000 <= i + batch:
            cert_2000 = clf.stream_report().certificate
    cert_end = clf.stream_report().certificate
    return np.concatenate(proba), np.concatenate(labels), cert_2000, cert_end, spent / calls * 1e6


def one_row_timing(clf, X, repeat=15, number=1000):
    """Per-call time of one row: base, partial_predict_proba, batch predict_proba (interleaved)."""
    clf.set_params(stream_algorithm="pooled", stream_step=None)
    clf.reset_stream()
    rows = [X[i : i + 1] for i in range(number)]
    base_rows = [r[:, :-1] for r in rows]

    def once(func, data):
        start = time.perf_counter()
        for r in data:
            func(r)
        return (time.perf_counter() - start) / len(data) * 1e6

    times = np.array(
        [
            (
                once(clf.estimator_.predict_proba, base_rows),
                once(clf.partial_predict_proba, rows),
                once(clf.predict_proba, rows[:200]),
            )
            for _ in range(repeat)
        ]
    )
    return times.min(axis=0), np.median(times[:, 1] / times[:, 0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--n-stream", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--order", choices=["random", "age"], default="random")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = parser.parse_args()
    eps = args.tolerance
    with threadpool_limits(args.threads):
        for seed in range(args.seeds):
            X_fit, y_fit, X, y = load(args.n_stream, seed, args.order)
            g = X[:, -1].astype(int)
            clf = FairnessLayerClassifier(
                LogisticRegression(max_iter=2000), tolerance=eps, sensitive_features=-1
            ).fit(X_fit, y_fit)
            s = clf.estimator_.predict_proba(X[:, :-1])[:, 1]
            offline = project(s, g, tolerance=eps).proba
            d_off = np.sum((offline - s) ** 2)
            acc_off = np.mean(clf.predict(X) == y)
            raw = pooled_gaps(s, g)
            print(
                f"\nseed {seed}, order {args.order}: fit {len(y_fit)} rows, stream {len(y)} rows, "
                f"tolerance {eps}; base pooled gap {raw[-1]:.4f} "
                f"(>=2000: max {np.nanmax(raw[1999:]):.4f}); offline distortion {d_off:.2f}, "
                f"offline parity-decision accuracy {acc_off:.4f}"
            )
            header = (
                f"{'algorithm':>9} {'batch':>5} | {'gap>=2000':>9} {'final':>7} {'cert@2000':>9} "
                f"{'cert@end':>8} {'distortion':>10} | {'dec gap>=2000':>13} {'dec acc':>7} | "
                f"{'us/call':>8}"
            )
            print(header)
            print("-" * len(header))
            for algorithm in ("pooled", "paper"):
                for batch in args.batch_sizes:
                    p, labels, c2000, cend, us = run_stream(clf, X, algorithm, batch)
                    gaps = pooled_gaps(p, g)
                    dgaps = pooled_gaps((labels == clf.classes_[1]).astype(float), g)
                    ratio = np.sum((p - s) ** 2) / d_off
                    print(
                        f"{algorithm:>9} {batch:>5} | {np.nanmax(gaps[1999:]):>9.4f} "
                        f"{gaps[-1]:>7.4f} {c2000:>9.4f} {cend:>8.4f} {ratio:>9.3f}x | "
                        f"{np.nanmax(dgaps[1999:]):>13.4f} {np.mean(labels == y):>7.4f} | "
                        f"{us:>8.1f}"
                    )
        (t_base, t_partial, t_batch), paired = one_row_timing(clf, X)
    print(
        f"\none row (us per call, best of 15 interleaved runs of 1000 calls): base "
        f"LogisticRegression.predict_proba {t_base:.1f} | partial_predict_proba (pooled) "
        f"{t_partial:.1f} ({t_partial / t_base:.2f}x; median of the paired ratios "
        f"{paired:.2f}x) | batch predict_proba {t_batch:.1f} ({t_batch / t_base:.2f}x)"
    )


if __name__ == "__main__":
    main()
