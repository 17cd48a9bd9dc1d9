"""Measured comparison on UCI Adult (sex): skfairlayer vs fairlearn's post-processing and reductions.

For each seed: a stratified 70/30 split of the shipped Adult data; the features
(without ``sex``, which no model sees) are one-hot encoded / standardised by a
transformer fitted on the training split; every method uses the same
logistic regression. Reported, as mean ± standard deviation over the seeds:

- accuracy of the decisions and ROC AUC of the scores, on the test split;
- demographic-parity gap (difference of group means, ``sex``) of the scores
  and of the decisions on the test split;
- fit and predict wall time (seconds, one BLAS thread by default; the shared
  preprocessing is excluded, the base model's fit is included for every
  method).

Methods:

- ``base LR``: the logistic regression alone (decisions: probability >= 0.5);
- ``skfairlayer proba``: ``FairnessLayerClassifier.predict_proba`` (batch
  projection of the test split) and its probabilities thresholded at 0.5;
- ``skfairlayer decisions``: ``FairnessLayerClassifier.predict`` (exact
  parity decisions on the test split), scores as in the previous row;
- ``skfairlayer fitted``: ``inference="fitted"`` (per-group shifts and
  thresholds learned on the training split, applied row by row);
- ``fairlearn ThresholdOptimizer`` (``constraints="demographic_parity"``) and
  ``fairlearn ExponentiatedGradient`` (``DemographicParity``, difference bound
  = tolerance), when fairlearn is installed. Their decisions are randomised
  (``predict(random_state=seed)``); their scores are the probability of a
  positive decision (``_pmf_predict``).

``--speed`` adds a second table: the time of the post-processing step alone
on synthetic batches of growing size (two groups, scores given): skfairlayer's
exact projection and its exact parity decisions, the same projection solved
as a generic quadratic program by cvxpy + Clarabel (the approach of
differentiable-optimization layers such as cvxpylayers, on which the paper's
layer is built), and fairlearn's ThresholdOptimizer (fit + predict on the
given scores).

Usage::

    python benchmarks/compare.py                 # 5 seeds, tolerance 0.01
    python benchmarks/compare.py --seeds 2 --no-eg   # quicker
    python benchmarks/compare.py --seeds 0 --speed   # the speed table only
"""

import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import demographic_parity_difference

try:
    import fairlearn
    from fairlearn.postprocessing import ThresholdOptimizer
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient
except ImportError:  # the comparison then covers skfairlayer only
    fairlearn = None

COLUMNS = [
    ("accuracy", "accuracy"),
    ("auc", "ROC AUC"),
    ("gap_proba", "DP gap (scores)"),
    ("gap_pred", "DP gap (decisions)"),
    ("fit", "fit (s)"),
    ("predict", "predict (s)"),
]


def base_model():
    # newton-cholesky: the fastest exact solver for n_samples >> n_features.
    return LogisticRegression(solver="newton-cholesky")


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def evaluate(y, groups, proba, pred):
    gap = lambda v: demographic_parity_difference(y, v, sensitive_features=groups)  # noqa: E731
    return {
        "accuracy": accuracy_score(y, pred),
        "auc": np.nan if proba is None else roc_auc_score(y, proba),
        "gap_proba": np.nan if proba is None else gap(proba),
        "gap_pred": gap(pred),
    }


def run_seed(X, y, sex, seed, tolerance, with_eg):
    X_tr, X_te, y_tr, y_te, s_tr, s_te = train_test_split(
        X, y, sex, test_size=0.3, stratify=y, random_state=seed
    )
    prep = make_column_transformer(  # dense output: fairlearn needs dense X
        (
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            make_column_selector(dtype_include="category"),
        ),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    )
    Z_tr = prep.fit_transform(X_tr)
    Z_te = prep.transform(X_te)
    rows = {}
    base_model().fit(Z_tr, y_tr)  # warm-up, untimed: first-call overheads are not the method's

    base, t_fit = timed(base_model().fit, Z_tr, y_tr)
    proba, t_pred = timed(lambda: base.predict_proba(Z_te)[:, 1])
    rows["base LR"] = {
        **evaluate(y_te, s_te, proba, (proba >= 0.5).astype(int)),
        "fit": t_fit, "predict": t_pred,
    }

    layer = FairnessLayerClassifier(base_model(), tolerance=tolerance)
    _, t_fit = timed(layer.fit, Z_tr, y_tr, sensitive_features=s_tr)
    proba, t_proba = timed(lambda: layer.predict_proba(Z_te, sensitive_features=s_te)[:, 1])
    pred, t_pred = timed(layer.predict, Z_te, sensitive_features=s_te)
    rows["skfairlayer proba"] = {
        **evaluate(y_te, s_te, proba, (proba >= 0.5).astype(int)),
        "fit": t_fit, "predict": t_proba,
    }
    rows["skfairlayer decisions"] = {
        **evaluate(y_te, s_te, proba, pred), "fit": t_fit, "predict": t_pred,
    }

    fitted = FairnessLayerClassifier(base_model(), tolerance=tolerance, inference="fitted")
    _, t_fit = timed(fitted.fit, Z_tr, y_tr, sensitive_features=s_tr)
    proba = fitted.predict_proba(Z_te, sensitive_features=s_te)[:, 1]
    pred, t_pred = timed(fitted.predict, Z_te, sensitive_features=s_te)
    rows["skfairlayer fitted"] = {
        **evaluate(y_te, s_te, proba, pred), "fit": t_fit, "predict": t_pred,
    }

    if fairlearn is None:
        return rows
    to = ThresholdOptimizer(
        estimator=base_model(), constraints="demographic_parity",
        predict_method="predict_proba",
    )
    _, t_fit = timed(to.fit, Z_tr, y_tr, sensitive_features=s_tr)
    pred, t_pred = timed(to.predict, Z_te, sensitive_features=s_te, random_state=seed)
    # probability of a positive randomised decision (can exceed 1 by an ulp: clip)
    proba = np.clip(to._pmf_predict(Z_te, sensitive_features=s_te)[:, 1], 0.0, 1.0)
    rows["fairlearn ThresholdOptimizer"] = {
        **evaluate(y_te, s_te, proba, pred), "fit": t_fit, "predict": t_pred,
    }
    if with_eg:
        eg = ExponentiatedGradient(base_model(), DemographicParity(difference_bound=tolerance))
        _, t_fit = timed(eg.fit, Z_tr, y_tr, sensitive_features=s_tr)
        pred, t_pred = timed(eg.predict, Z_te, random_state=seed)
        proba = np.clip(eg._pmf_predict(Z_te)[:, 1], 0.0, 1.0)
        rows["fairlearn ExponentiatedGradient"] = {
            **evaluate(y_te, s_te, proba, pred), "fit": t_fit, "predict": t_pred,
        }
    return rows


def markdown(results, n_seeds, tolerance):
    names = list(results[0])
    lines = [
        "| method | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for name in names:
        cells = []
        for key, _ in COLUMNS:
            values = np.array([r[name][key] for r in results], dtype=float)
            if np.isnan(values).all():
                cells.append("—")
                continue
            digits = 3 if key in ("fit", "predict") else 4
            if key in ("fit", "predict"):
                cells.append(f"{values.mean():.{digits}f}")
            else:
                cells.append(f"{values.mean():.{digits}f} ± {values.std():.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"UCI Adult (sex), stratified 70/30 splits, {n_seeds} seeds (mean ± std), "
        f"tolerance {tolerance:g}; same logistic regression base for every method."
    )
    return "\n".join(lines)


class _GivenScores(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose positive-class probability is column 0 of X."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        s = np.asarray(X)[:, 0]
        return np.column_stack([1 - s, s])

    def predict(self, X):
        return (np.asarray(X)[:, 0] >= 0.5).astype(int)


def _cvxpy_projection(scores, groups, tolerance):
    import cvxpy as cp

    p = cp.Variable(scores.size)
    t = cp.Variable()
    rows = []
    for g in np.unique(groups):
        mask = (groups == g).astype(float) / np.sum(groups == g)
        rows += [mask @ p >= t, mask @ p <= t + tolerance]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(p - scores)), [p >= 0, p <= 1, *rows])
    problem.solve(solver=cp.CLARABEL)
    return p.value


def speed_table(sizes, tolerance, repeats=3):
    """Markdown table of post-processing times (best of ``repeats``) per batch size."""
    from skfairlayer import project
    from skfairlayer._decisions import parity_decisions

    try:
        import cvxpy  # noqa: F401
    except ImportError:
        cvxpy = None
    methods = {
        "skfairlayer project (exact)": lambda s, g: project(s, g, tolerance=tolerance),
        "skfairlayer parity decisions": lambda s, g: parity_decisions(s, g, 2, tolerance),
    }
    if cvxpy is not None:
        methods["cvxpy + Clarabel QP (generic layer)"] = (
            lambda s, g: _cvxpy_projection(s, g, tolerance)
        )
    if fairlearn is not None:
        def threshold_optimizer(s, g):
            to = ThresholdOptimizer(
                estimator=_GivenScores().fit(None, None), constraints="demographic_parity",
                predict_method="predict_proba", prefit=True,
            )
            X = s[:, None]
            to.fit(X, (s > 0.5).astype(int), sensitive_features=g)
            return to.predict(X, sensitive_features=g, random_state=0)

        methods["fairlearn ThresholdOptimizer (fit + predict)"] = threshold_optimizer
    lines = [
        "| method | " + " | ".join(f"n = {n:,}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    rng = np.random.default_rng(0)
    data = {}
    for n in sizes:
        g = rng.integers(0, 2, n)
        data[n] = (np.clip(rng.beta(2, 5, n) + 0.15 * g, 0, 1), g)
    for name, func in methods.items():
        cells = []
        for n in sizes:
            if "cvxpy" in name and n > 100_000:
                cells.append("—")
                continue
            best = min(timed(func, *data[n])[1] for _ in range(repeats))
            cells.append(f"{best * 1e3:.1f} ms")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Post-processing time only (best of {repeats}), two groups, tolerance {tolerance:g}, "
        "one thread."
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of random splits")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--no-eg", action="store_true", help="skip ExponentiatedGradient")
    parser.add_argument("--speed", action="store_true", help="add the post-processing speed table")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="BLAS/OpenMP threads (default 1: stable, comparable timings)",
    )
    args = parser.parse_args(argv)
    with threadpool_limits(limits=args.threads):
        run(args)


def run(args):

    X, y = load_adult(return_X_y=True)
    sex = X["sex"].to_numpy()
    X = X.drop(columns=["sex"])
    results = []
    for seed in range(args.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # third-party deprecations
            results.append(
                run_seed(X, y.to_numpy(), sex, seed, args.tolerance, not args.no_eg)
            )
        print(f"seed {seed} done", file=sys.stderr)
    if fairlearn is None:
        print("fairlearn is not installed: its rows are left out.", file=sys.stderr)
    if results:
        print(markdown(results, args.seeds, args.tolerance))
    if args.speed:
        print()
        print(speed_table([1_000, 10_000, 100_000, 1_000_000], args.tolerance))


if __name__ == "__main__":
    main()
