"""Equalized odds without labels at inference, on UCI Adult test splits.

A deployed model never sees the labels of the rows it scores, so the layer's
equalized odds at inference uses the base posteriors as plug-in weights
(``E[p | Y=1, A=g] ~ sum s_i p_i / sum s_i``): exact in expectation when the
base is calibrated within each group. This benchmark measures what that buys
on the *true* (label-based) rates.

Setup (per seed): the shipped Adult data (32,561 rows) is split at random into
a training half and a test half (stratified by label); the sensitive feature is
``sex`` (``--sensitive sex race`` for the intersectional groups). The base is
``LogisticRegression`` on one-hot / standardised features; ``+cal`` wraps it in
``CalibratedClassifierCV(method="isotonic", cv=5)``. Every method runs twice:
without the sensitive columns among the base's features, and with them
(``(+A)``): a base that sees the group can be calibrated *within* each group,
which is what the plug-in weights assume.

Methods, all evaluated on the test half with its true labels:

- ``base``: base probabilities, decisions at 0.5;
- ``layer``: ``FairnessLayerClassifier(criterion="equalized_odds")`` —
  ``predict_proba`` / ``predict`` on the whole test half (label-free plug-in,
  met exactly on the batch); ``layer+cal``: same with the calibrated base;
  ``layer fitted``: ``inference="fitted"`` (the plug-in shifts / decision rule
  learned on the training half, applied row by row);
- ``oracle``: the label-based projection / decisions of the test half
  (``project(..., labels=y_test)``) — what knowing the labels would reach;
- ``ThresholdOptimizer``: fairlearn's ``ThresholdOptimizer(constraints=
  "equalized_odds", prefit=True)`` fitted on the training half (randomised
  group thresholds, decisions only), when fairlearn is installed.

Reported (mean over seeds, max in brackets): accuracy; true TPR gap and FPR
gap (largest difference between groups of the true-positive / false-positive
rate; for probabilities the mean probability among the positives / negatives);
wall time of the post-processing on the test half.

Usage::

    python benchmarks/bench_criteria.py                  # 5 seeds, sex, tolerance 0.02
    python benchmarks/bench_criteria.py --seeds 2 --sensitive sex race --tolerance 0.05
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfairlayer import FairnessLayerClassifier, project
from skfairlayer._criteria import build_problem
from skfairlayer._multiclass_decisions import affine_decisions


def load(sensitive):
    """Adult features (DataFrame without the sensitive columns), target, group labels."""
    try:
        from skfairlayer.datasets import load_adult

        adult = load_adult(sensitive_features=tuple(sensitive))
        X, y = adult.data, np.asarray(adult.target).astype(int)
    except ImportError:  # datasets module missing: read the shared copy
        import pandas as pd

        X = pd.read_csv("/work/shared/data/adult.csv", skipinitialspace=True)
        y = (X.pop("income-per-year") == ">50K").to_numpy().astype(int)
    groups = X[list(sensitive)].astype(str).agg("|".join, axis=1).to_numpy()
    return X.drop(columns=list(sensitive)), y, groups


def rate_gaps(values, y, groups):
    """Largest between-group gap of the mean of ``values`` among y=1 and among y=0."""
    out = []
    for lab in (1, 0):
        rates = [values[(groups == g) & (y == lab)].mean() for g in np.unique(groups)]
        out.append(max(rates) - min(rates))
    return out  # [TPR gap, FPR gap]


def evaluate(name, proba, pred, y, groups, seconds):
    row = {"method": name, "time": seconds}
    if proba is not None:
        row["p_tpr"], row["p_fpr"] = rate_gaps(proba, y, groups)
    if pred is not None:
        row["acc"] = float(np.mean(pred == y))
        row["tpr"], row["fpr"] = rate_gaps(pred.astype(float), y, groups)
    return row


def run(seed, tolerance, sensitive):
    X, y, groups = load(sensitive)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed
    )
    prep = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False),
         make_column_selector(dtype_exclude="number")),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    )
    Xtr0 = prep.fit_transform(X.iloc[idx_train])
    Xte0 = prep.transform(X.iloc[idx_test])
    ytr, yte = y[idx_train], y[idx_test]
    gtr, gte = groups[idx_train], groups[idx_test]
    onehot = OneHotEncoder(sparse_output=False).fit(groups[:, None])
    rows = []
    for sees in (False, True):
        if sees:  # the base also sees the group: calibrated *within* groups
            Xtr = np.c_[Xtr0, onehot.transform(gtr[:, None])]
            Xte = np.c_[Xte0, onehot.transform(gte[:, None])]
        else:
            Xtr, Xte = Xtr0, Xte0
        rows += _methods(Xtr, Xte, ytr, yte, gtr, gte, tolerance, seed, " (+A)" if sees else "")
    return rows


def _methods(Xtr, Xte, ytr, yte, gtr, gte, tolerance, seed, tag):
    rows = []

    base = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    s = base.predict_proba(Xte)[:, 1]
    rows.append(evaluate("base" + tag, s, (s >= 0.5).astype(int), yte, gte, 0.0))

    for label, estimator in (
        ("layer", LogisticRegression(max_iter=2000)),
        ("layer+cal", CalibratedClassifierCV(LogisticRegression(max_iter=2000), method="isotonic",
                                             cv=5)),
    ):
        clf = FairnessLayerClassifier(
            estimator, tolerance=tolerance, criterion="equalized_odds", min_group_size=None
        ).fit(Xtr, ytr, sensitive_features=gtr)
        t0 = time.perf_counter()
        proba = clf.predict_proba(Xte, sensitive_features=gte)[:, 1]
        t1 = time.perf_counter()
        pred = clf.predict(Xte, sensitive_features=gte)
        t2 = time.perf_counter()
        rows.append(evaluate(label + tag, proba, pred, yte, gte, t2 - t0))
        rows[-1]["time_proba"], rows[-1]["time_pred"] = t1 - t0, t2 - t1
        if label == "layer":
            clf.set_params(inference="fitted")
            t0 = time.perf_counter()
            pf = clf.predict_proba(Xte, sensitive_features=gte)[:, 1]
            df = clf.predict(Xte, sensitive_features=gte)
            rows.append(evaluate("layer fitted" + tag, pf, df, yte, gte,
                                 time.perf_counter() - t0))

    t0 = time.perf_counter()
    oracle_p = project(s, gte, tolerance=tolerance, criterion="equalized_odds", labels=yte).proba
    _, codes = np.unique(gte, return_inverse=True)
    problem = build_problem(
        "equalized_odds", s, [(codes, codes.max() + 1)], tolerance, labels=yte
    )
    oracle_d = affine_decisions(problem).decisions
    rows.append(evaluate("oracle (test labels)" + tag, oracle_p, oracle_d, yte, gte,
                         time.perf_counter() - t0))

    try:
        from fairlearn.postprocessing import ThresholdOptimizer
    except ImportError:
        ThresholdOptimizer = None
    if ThresholdOptimizer is not None:
        to = ThresholdOptimizer(
            estimator=base, constraints="equalized_odds", prefit=True,
            predict_method="predict_proba",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            to.fit(Xtr, ytr, sensitive_features=gtr)
            t0 = time.perf_counter()
            pred = np.asarray(to.predict(Xte, sensitive_features=gte, random_state=seed))
        rows.append(evaluate("ThresholdOptimizer" + tag, None, pred, yte, gte,
                             time.perf_counter() - t0))
    return rows


def fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} [{np.max(values):.4f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--sensitive", nargs="+", default=["sex"])
    args = parser.parse_args()
    results = [run(seed, args.tolerance, args.sensitive) for seed in range(args.seeds)]
    methods = [r["method"] for r in results[0]]
    print(f"Adult, sensitive={'x'.join(args.sensitive)}, tolerance={args.tolerance}, "
          f"{args.seeds} seed(s), test half ~16,280 rows; mean [max] over seeds\n")
    head = ("method", "acc", "TPR gap", "FPR gap", "p TPR gap", "p FPR gap", "time s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in methods:
        rs = [next(r for r in res if r["method"] == m) for res in results]
        print("| " + " | ".join([
            m,
            fmt([r.get("acc") for r in rs]),
            fmt([r.get("tpr") for r in rs]),
            fmt([r.get("fpr") for r in rs]),
            fmt([r.get("p_tpr") for r in rs]),
            fmt([r.get("p_fpr") for r in rs]),
            f"{np.mean([r['time'] for r in rs]):.2f}",
        ]) + " |")


if __name__ == "__main__":
    main()
