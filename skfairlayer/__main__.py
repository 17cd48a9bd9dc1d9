"""Demo: ``python -m skfairlayer`` — a fairness layer on UCI Adult (sensitive feature: sex).

Fits a logistic regression, wraps it in :class:`~skfairlayer.FairnessLayerClassifier`
and prints accuracy, ROC AUC, parity gaps and timings of the base model, the
projected probabilities, the parity decisions and fairlearn's ThresholdOptimizer,
on a 30% test split. Needs the ``demo`` extra (pandas, fairlearn).
"""

import argparse
import importlib
import sys
import time
import warnings

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from . import FairnessLayerClassifier
from .datasets import load_adult
from .metrics import demographic_parity_difference

#: The command-line help (plain text: argparse prints it as is).
DESCRIPTION = """\
Demo: a fairness layer on UCI Adult (sensitive feature: sex).

Fits a logistic regression, wraps it in FairnessLayerClassifier and prints
accuracy, ROC AUC, parity gaps and timings of the base model, the projected
probabilities, the parity decisions and fairlearn's ThresholdOptimizer, on a
30% test split. Needs pandas and fairlearn: pip install "skfairlayer[demo]".
"""

#: Packages the demo needs beyond the core dependencies (the ``demo`` extra).
DEMO_PACKAGES = ("pandas", "fairlearn")

NUMERIC = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship",
               "race", "native-country"]


def _base_model():
    pre = ColumnTransformer([
        ("num", StandardScaler(), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
    ])
    return make_pipeline(pre, LogisticRegression(max_iter=1000))


def _timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def _row(name, y, proba, decisions, groups, fit_s, predict_s):
    gap = demographic_parity_difference
    return (
        name,
        accuracy_score(y, decisions),
        roc_auc_score(y, proba) if proba is not None else np.nan,
        gap(None, proba, sensitive_features=groups) if proba is not None else np.nan,
        gap(None, decisions, sensitive_features=groups),
        fit_s,
        predict_s,
    )


def run(tolerance=0.01, seed=0):
    """Fit and evaluate every method; return the table rows."""
    X, y = load_adult(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=seed, stratify=y
    )
    groups = X_test["sex"].to_numpy()
    rows = []

    base, fit_s = _timed(_base_model().fit, X_train.drop(columns="sex"), y_train)
    proba, pred_s = _timed(base.predict_proba, X_test.drop(columns="sex"))
    rows.append(_row("base logistic regression", y_test, proba[:, 1],
                     (proba[:, 1] >= 0.5).astype(int), groups, fit_s, pred_s))

    layer = FairnessLayerClassifier(_base_model(), tolerance=tolerance, sensitive_features="sex")
    _, fit_s = _timed(layer.fit, X_train, y_train)
    fair_proba, proba_s = _timed(layer.predict_proba, X_test)
    rows.append(_row("layer: probabilities >= 0.5", y_test, fair_proba[:, 1],
                     (fair_proba[:, 1] >= 0.5).astype(int), groups, fit_s, proba_s))
    decisions, pred_s = _timed(layer.predict, X_test)
    rows.append(_row("layer: parity decisions", y_test, fair_proba[:, 1], decisions, groups,
                     fit_s, pred_s))

    from fairlearn.postprocessing import ThresholdOptimizer

    opt = ThresholdOptimizer(estimator=_base_model(), constraints="demographic_parity",
                             predict_method="predict_proba", objective="accuracy_score")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, fit_s = _timed(opt.fit, X_train.drop(columns="sex"), y_train,
                          sensitive_features=X_train["sex"])
        pred, pred_s = _timed(opt.predict, X_test.drop(columns="sex"),
                              sensitive_features=groups, random_state=seed)
    rows.append(_row("fairlearn ThresholdOptimizer", y_test, None, pred, groups,
                     fit_s, pred_s))
    return rows


def _format(rows, tolerance):
    header = ("method", "accuracy", "ROC AUC", "gap(proba)", "gap(decisions)", "fit s",
              "predict s")
    lines = [
        f"UCI Adult, sensitive feature 'sex', 30% test split, tolerance {tolerance}",
        "gap = largest difference between groups of the mean (probabilities) or of the "
        "selection rate (decisions)",
        "the layer's fit time includes 5-fold cross-fitting of its fitted rules (cv=5)",
        "",
        f"{header[0]:<46}" + "".join(f"{h:>15}" for h in header[1:]),
    ]
    for name, *vals in rows:
        cells = "".join(
            f"{'-':>15}" if np.isnan(v) else f"{v:>15.4f}" for v in vals
        )
        lines.append(f"{name:<46}{cells}")
    return "\n".join(lines)


def missing_packages():
    """The packages of the ``demo`` extra that cannot be imported."""
    missing = []
    for name in DEMO_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def main(argv=None):
    """Command-line entry point.

    Exits with status 1 and one line on stderr naming the extra to install
    when pandas or fairlearn is missing.
    """
    parser = argparse.ArgumentParser(prog="python -m skfairlayer", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="parity tolerance (default: 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        sys.exit(
            f"python -m skfairlayer needs {' and '.join(missing)}: "
            'pip install "skfairlayer[demo]"'
        )
    print(_format(run(tolerance=args.tolerance, seed=args.seed), args.tolerance))


if __name__ == "__main__":
    main()
