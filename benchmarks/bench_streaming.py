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

A third table (``--criteria``, on by default) streams other criteria one row
at a time (``CriterionStreamState``): plug-in equal opportunity on Adult
(``sex``; the pooled statistic is the mean weighted by the base posterior of
the positive class; ``TPR gap`` is the label-based true-positive-rate gap of
the served decisions, base decisions for reference), marginal demographic
parity on Adult (``sex`` and ``race`` as White / other, each attribute
separately), and multiclass demographic parity on a synthetic 3-class,
3-group stream (per-class means; drifting group shares and class mix). Same
columns: the largest pooled gap (over classes and attributes) from row 2,000
on, the certificates, the distortion against the offline projection of the
whole stream under the same criterion, and the decisions' pooled gap and
accuracy (next to that of the offline parity decisions of the whole stream).

Targets (issue 3): one-row ``partial_predict_proba`` <= 1.5x the base's
``predict_proba``; batch size 1, tolerance 0.02: pooled gap <= tolerance from
row 2,000 on, distortion <= 1.25x the offline projection; decisions' pooled
selection-rate gap <= tolerance from row 2,000 on.

Usage::

    python benchmarks/bench_streaming.py                   # 1 seed, random order
    python benchmarks/bench_streaming.py --seeds 3 --order age   # drifting stream
    python benchmarks/bench_streaming.py --only-criteria         # third table only
"""

import argparse
import time

import numpy as np
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from skfairlayer import FairnessLayerClassifier, project


def load(n_stream, seed, order, race=False):
    """Dense features (sex code last; with ``race``, then White code), target, fit / stream split."""
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
    sensitive = [sex]
    if race:
        sensitive.append((X["race"].astype(str) == "White").to_numpy().astype(np.float64))
        features = features.drop(columns=["race"])
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
    dense = np.c_[prep.transform(features), np.column_stack(sensitive)]
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


def block_gaps(values, weights, blocks):
    """Largest pooled (weighted) gap over blocks and columns after each row (NaN: one group)."""
    values = values.reshape(values.shape[0], -1)
    worst = np.full(values.shape[0], -np.inf)
    for codes in blocks:
        k = int(codes.max()) + 1
        onehot = np.eye(k)[codes] * weights[:, None]
        W = np.cumsum(onehot, axis=0)
        for c in range(values.shape[1]):
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.cumsum(onehot * values[:, c : c + 1], axis=0) / W
            gap = np.nanmax(means, axis=1) - np.nanmin(means, axis=1)
            gap[np.isnan(means).any(axis=1)] = np.nan
            worst = np.fmax(worst, gap)
    worst[np.isinf(worst)] = np.nan
    return worst


def synthetic_multiclass(n_fit, n_stream, seed):
    """3 classes, 3 groups; group shares and the class mix drift along the stream."""
    rng = np.random.default_rng(seed)
    n = n_fit + n_stream
    t = np.r_[np.zeros(n_fit), np.linspace(0, 1, n_stream)]
    g = np.array([rng.choice(3, p=[0.6 - 0.5 * q, 0.3, 0.1 + 0.5 * q]) for q in t])
    x = rng.normal(size=(n, 4)) + np.c_[0.7 * g, -0.4 * g, np.zeros(n), 0.8 * t]
    y = np.digitize(x[:, 0] + x[:, 3] + rng.normal(size=n), [0.0, 1.2])
    X = np.c_[x, g]
    return X[:n_fit], y[:n_fit], X[n_fit:], y[n_fit:]


def run_criterion(name, clf, X, y, blocks, eps, criterion_args):
    """Serve X one row at a time (probabilities, then decisions); one table row."""
    clf.reset_stream()
    n = X.shape[0]
    cols = clf.sensitive_features if isinstance(clf.sensitive_features, list) else [
        clf.sensitive_features]
    base = clf.estimator_.predict_proba(np.delete(X, [c % X.shape[1] for c in cols], axis=1))
    K = base.shape[1]
    proba, labels, spent = [], [], 0.0
    for i in range(n):
        t0 = time.perf_counter()
        proba.append(clf.partial_predict_proba(X[i : i + 1]))
        spent += time.perf_counter() - t0
        if i == 1999:
            cert_2000 = clf.stream_report().certificate
    cert_end = clf.stream_report().certificate
    for i in range(n):
        labels.append(clf.partial_predict(X[i : i + 1]))
        if i == 1999:
            dcert_2000 = clf.stream_report("decisions").certificate
    proba, labels = np.vstack(proba), np.concatenate(labels)
    weight_class = criterion_args.get("weight_class")
    weights = np.ones(n) if weight_class is None else base[:, weight_class]
    columns = [1] if K == 2 else list(range(K))
    if weight_class is not None and K > 2:
        columns = [weight_class]
    gaps = block_gaps(proba[:, columns], weights, blocks)
    onehot = (labels[:, None] == clf.classes_[None, :]).astype(float)
    dgaps = block_gaps(onehot[:, columns], weights, blocks)
    offline = project(base if K > 2 else base[:, 1], np.column_stack(blocks) if len(blocks) > 1
                      else blocks[0], tolerance=eps, groups=criterion_args.get("groups",
                      "intersectional"), criterion=criterion_args.get("criterion",
                      "demographic_parity")).proba
    offline = offline if K > 2 else np.column_stack([1 - offline, offline])
    ratio = np.sum((proba - base) ** 2) / np.sum((offline - base) ** 2)
    extra = ""
    if weight_class is not None and K == 2:  # label-based TPR gap: served vs base decisions
        pos = y == 1
        tpr = [np.mean(labels[pos & (blocks[0] == g)] == clf.classes_[1]) for g in (0, 1)]
        tpr_base = [np.mean(base[pos & (blocks[0] == g), 1] >= 0.5) for g in (0, 1)]
        extra = f" | TPR gap {abs(tpr[0] - tpr[1]):.4f} (base {abs(tpr_base[0] - tpr_base[1]):.4f})"
    acc_offline = np.mean(clf.predict(X) == y)  # parity decisions of the whole stream at once
    print(
        f"{name:>22} | {np.nanmax(gaps[1999:]):>9.4f} {gaps[-1]:>7.4f} {cert_2000:>9.4f} "
        f"{cert_end:>8.4f} {ratio:>9.3f}x | {np.nanmax(dgaps[1999:]):>13.4f} {dcert_2000:>9.4f} "
        f"{np.mean(labels == y):>7.4f} ({acc_offline:.4f}) | {spent / n * 1e6:>7.1f}{extra}"
    )


def other_criteria(args):
    """Third table: plug-in equal opportunity, marginal groups, multiclass (batch size 1)."""
    eps = args.tolerance
    header = (
        f"{'criterion':>22} | {'gap>=2000':>9} {'final':>7} {'cert@2000':>9} {'cert@end':>8} "
        f"{'distortion':>10} | {'dec gap>=2000':>13} {'dcert@2000':>9} {'dec acc (offline)':>16} | "
        f"{'us/call':>7}"
    )
    print(f"\nother criteria, batch size 1, tolerance {eps}, seed 0")
    print(header)
    print("-" * len(header))
    X_fit, y_fit, X, y = load(args.n_stream, 0, "random", race=True)
    g_sex, g_race = X[:, -2].astype(int), X[:, -1].astype(int)
    lr = LogisticRegression(max_iter=2000)
    clf = FairnessLayerClassifier(lr, tolerance=eps, sensitive_features=-1,
                                  criterion="equal_opportunity")
    clf.fit(X_fit[:, :-1], y_fit)
    run_criterion("Adult EO (plug-in)", clf, X[:, :-1], y, [g_sex], eps,
                  {"weight_class": 1, "criterion": "equal_opportunity"})
    clf = FairnessLayerClassifier(lr, tolerance=eps, sensitive_features=[-2, -1],
                                  groups="marginal").fit(X_fit, y_fit)
    run_criterion("Adult DP marginal", clf, X, y, [g_sex, g_race], eps, {"groups": "marginal"})
    X_fit, y_fit, X, y = synthetic_multiclass(10000, args.n_stream, 0)
    clf = FairnessLayerClassifier(lr, tolerance=eps, sensitive_features=-1).fit(X_fit, y_fit)
    run_criterion("synthetic 3-class DP", clf, X, y, [X[:, -1].astype(int)], eps, {})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--n-stream", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--order", choices=["random", "age"], default="random")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--only-criteria", action="store_true",
                        help="only the third table (other criteria)")
    args = parser.parse_args()
    eps = args.tolerance
    if args.only_criteria:
        with threadpool_limits(args.threads):
            other_criteria(args)
        return
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
    with threadpool_limits(args.threads):
        other_criteria(args)


if __name__ == "__main__":
    main()
