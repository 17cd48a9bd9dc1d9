"""Fine-tuning through the fairness layer vs post-hoc projection, and the cost of the VJP.

Three parts (``--part``):

``vjp``
    Wall time of one verified forward projection (exact solver) against one
    vector-Jacobian product through it (building the linearization included,
    and the product alone), for n rows and k groups.
``speed``
    ``FairnessLayerClassifier(LogisticRegression(), fine_tune=True)`` fitted on
    all of UCI Adult (32,561 rows, groups ``sex``), default settings.
``quality``
    For each dataset, base and tolerance, over random stratified 70/30 splits:
    the same fitted base either projected post hoc or first fine-tuned through
    the layer (default settings, ``random_state=split``), then evaluated on the
    test split: accuracy of the parity decisions (``predict``), ROC AUC and
    log-loss (clipped to [1e-6, 1 - 1e-6]) of the projected probabilities, and
    the demographic-parity gap of the decisions, and the share of projected
    probabilities clamped at exactly 0 or 1 (these dominate the log-loss, whose
    value then depends on the clipping level). Also the paired difference
    (fine-tuned - post-hoc) per split, mean ± std.

``criteria``
    Beyond binary demographic parity, LR base, tolerance 0.01: UCI Adult with
    equal opportunity and equalized odds (groups ``sex``; fine-tuned through
    the label-based layer, and with ``label_free=True`` through the plug-in
    layer used at prediction), Adult with marginal parity over ``sex`` and
    ``race``, and a synthetic three-class problem with multiclass parity:
    accuracy, ROC AUC and log-loss of the projected probabilities at
    prediction, and the label-based gap of the decisions, on the test split.

Datasets: UCI Adult (shipped; groups ``sex``, not seen by the model; one-hot /
standardised features) and ``make_parity_classification`` (10,000 rows, 10
features; ``linear``: balanced groups, linear signal; ``nonlinear``: 80/20
groups, quadratic terms, noise 1.0). Bases: ``LogisticRegression`` and
``MLPClassifier((32,), early_stopping=True)``.

Usage::

    python benchmarks/bench_fine_tune.py                  # all parts, 5 splits
    python benchmarks/bench_fine_tune.py --part vjp
    python benchmarks/bench_fine_tune.py --part quality --splits 2 --datasets adult
    python benchmarks/bench_fine_tune.py --part criteria --splits 3
"""

import argparse
import copy
import os
import time
import warnings

import numpy as np
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from skfairlayer import FairnessLayerClassifier
from skfairlayer._criteria import build_problem
from skfairlayer._fine_tune import fine_tune
from skfairlayer._groups import encode
from skfairlayer._projection import solve_problem
from skfairlayer._sensitivity import Linearization
from skfairlayer.datasets import load_adult, make_parity_classification
from skfairlayer.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
)


def encode_groups(values, n_samples=None):
    """Codes and labels of one batch's intersectional groups."""
    (grouping,), labels = encode(values, n_samples=n_samples)
    return grouping.codes, labels



def best_time(func, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


# --------------------------------------------------------------------------- vjp
def part_vjp(rounds=15):
    """Forward vs VJP timings, interleaved (one of each per round, best of ``rounds``) so
    that load on a shared machine hits both alike."""
    print(f"## Forward projection vs VJP (interleaved, best of {rounds}, milliseconds)\n")
    print(f"Load average at start: {os.getloadavg()[0]:.2f}\n")
    print(
        "| criterion | n | k | forward (solve + verify) | forward incl. problem build "
        "| VJP incl. linearization | VJP product only | VJP / forward | VJP / forward incl. "
        "build | VJP path |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    rng = np.random.default_rng(0)
    for criterion in ("demographic_parity", "equal_opportunity"):
        for n in (1_000, 10_000, 100_000, 1_000_000):
            for k in (2, 5, 20):
                codes = rng.integers(0, k, n)
                s = np.clip(rng.beta(2, 5, n) + 0.3 * codes / k, 0.001, 0.999)
                # equal_opportunity without labels: plug-in weights s_i / sum_g s (the
                # sensitivities include their derivative)
                problem = build_problem(criterion, s, [(codes, k)], 0.01)
                p = solve_problem(problem).outputs
                g = rng.normal(size=n)
                lin = Linearization(problem, p)
                funcs = (
                    lambda problem=problem: solve_problem(problem),
                    lambda problem=problem, p=p, g=g: Linearization(problem, p).vjp(g),
                    lambda lin=lin, g=g: lin.vjp(g),
                )
                best = [np.inf] * len(funcs)
                for _ in range(rounds):
                    for j, func in enumerate(funcs):
                        best[j] = min(best[j], best_time(func, repeat=1))
                t_fwd, t_vjp, t_apply = best
                # The layer's forward as fine-tuning runs it on a batch: the criterion's problem
                # (for plug-in criteria, weights from the scores), then the solve. Timed on its
                # own: its allocations would change what the interleaved timings above measure.
                t_built = best_time(
                    lambda c=criterion, s=s, codes=codes, k=k: solve_problem(
                        build_problem(c, s, [(codes, k)], 0.01)),
                    repeat=rounds,
                )
                # The compiled products of a dense uniform family ("mask", "index", "none":
                # see skfairlayer._sensitivity_passes._DenseUniformPasses), or the general
                # linearization ("general"; its group sums and gathers compiled when built).
                path_name = lin._fast.mode if lin._fast is not None else "general"
                label = criterion if criterion == "demographic_parity" else f"{criterion} (plug-in)"
                print(
                    f"| {label} | {n:,} | {k} | {1e3 * t_fwd:.3g} | {1e3 * t_built:.3g} "
                    f"| {1e3 * t_vjp:.3g} | {1e3 * t_apply:.3g} | {t_vjp / t_fwd:.2f} "
                    f"| {t_vjp / t_built:.2f} | {path_name} |"
                )
    print()


# --------------------------------------------------------------------------- data
def adult():
    X, y = load_adult(return_X_y=True)
    sex = np.asarray(X["sex"]).astype(str)
    return X.drop(columns=["sex"]), np.asarray(y), sex


def adult_prep():
    return make_column_transformer(
        (
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            make_column_selector(dtype_include="category"),
        ),
        (StandardScaler(), make_column_selector(dtype_include="number")),
    )


DATASETS = {
    "adult": lambda: (*adult(), adult_prep),
    "linear": lambda: (
        *make_parity_classification(10_000, n_features=10, random_state=0),
        StandardScaler,
    ),
    "nonlinear": lambda: (
        *make_parity_classification(
            10_000,
            n_features=10,
            group_proportions=[0.8, 0.2],
            nonlinear=True,
            noise=1.0,
            random_state=0,
        ),
        StandardScaler,
    ),
}

BASES = {
    "LR": lambda: LogisticRegression(solver="newton-cholesky"),
    "MLP": lambda: MLPClassifier((32,), early_stopping=True, random_state=0),
}


# --------------------------------------------------------------------------- speed
def part_speed():
    X, y, sex = adult()
    model = make_pipeline(adult_prep(), LogisticRegression(solver="newton-cholesky"))
    plain = FairnessLayerClassifier(model, tolerance=0.01)
    t_plain = best_time(lambda: plain.fit(X, y, sensitive_features=sex), repeat=3)
    clf = FairnessLayerClassifier(model, tolerance=0.01, fine_tune=True, random_state=0)
    t_tuned = best_time(lambda: clf.fit(X, y, sensitive_features=sex), repeat=3)
    h = clf.fine_tune_history_
    print("## Speed: all of Adult (32,561 rows), LogisticRegression in a Pipeline (best of 3)\n")
    print(f"- fit without fine-tuning: {t_plain:.2f} s")
    print(
        f"- fit with fine-tuning (defaults): {t_tuned:.2f} s "
        f"(fine-tuning alone {t_tuned - t_plain:.2f} s; {len(h['epoch']) - 1} epochs, "
        f"best epoch {h['best_epoch']})\n"
    )


# --------------------------------------------------------------------------- quality
def evaluate(layer, Z, y, groups):
    proba = layer.predict_proba(Z, sensitive_features=groups)[:, 1]
    pred = layer.predict(Z, sensitive_features=groups)
    p = np.clip(proba, 1e-6, 1 - 1e-6)
    return {
        "accuracy": accuracy_score(y, pred),
        "auc": roc_auc_score(y, proba),
        "log_loss": float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))),
        "gap": demographic_parity_difference(y, pred, sensitive_features=groups),
        "clamped": float(np.mean((proba <= 0.0) | (proba >= 1.0))),
    }


def run_split(data, base_name, tolerances, split, check_api):
    X, y, groups, prep = data
    X_tr, X_te, y_tr, y_te, g_tr, g_te = train_test_split(
        X, y, groups, test_size=0.3, stratify=np.c_[y, groups], random_state=split
    )
    prep = prep()
    Z_tr, Z_te = prep.fit_transform(X_tr), prep.transform(X_te)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = BASES[base_name]().fit(Z_tr, y_tr)
    codes, _ = encode_groups(g_tr, n_samples=len(y_tr))
    rows = {}
    for tol in tolerances:
        posthoc = FairnessLayerClassifier(FrozenEstimator(base), tolerance=tol)
        posthoc.fit(Z_tr, y_tr, sensitive_features=g_tr)
        tuned_base = copy.deepcopy(base)
        start = time.perf_counter()
        history = fine_tune(
            tuned_base, Z_tr, y_tr, codes, classes=base.classes_, tolerance=tol, random_state=split
        )
        elapsed = time.perf_counter() - start
        tuned = FairnessLayerClassifier(FrozenEstimator(tuned_base), tolerance=tol)
        tuned.fit(Z_tr, y_tr, sensitive_features=g_tr)
        if check_api:  # the shortcut above is what fit(fine_tune=True) does
            api = FairnessLayerClassifier(
                BASES[base_name](), tolerance=tol, fine_tune=True, random_state=split
            ).fit(Z_tr, y_tr, sensitive_features=g_tr)
            np.testing.assert_allclose(api.estimator_.coef_, tuned_base.coef_)
        rows[tol] = {
            "post-hoc": evaluate(posthoc, Z_te, y_te, g_te),
            "fine-tuned": {
                **evaluate(tuned, Z_te, y_te, g_te),
                "time": elapsed,
                "epochs": len(history["epoch"]) - 1,
                "best_epoch": history["best_epoch"],
            },
        }
    return rows


METRICS = [
    ("accuracy", "accuracy"),
    ("auc", "ROC AUC"),
    ("log_loss", "log-loss (proj.)"),
    ("gap", "DP gap (decisions)"),
    ("clamped", "share at 0 or 1"),
]


def part_quality(datasets, bases, tolerances, n_splits):
    print(f"## Post-hoc projection vs fine-tuning ({n_splits} splits, mean ± std)\n")
    for ds in datasets:
        data = DATASETS[ds]()
        for base_name in bases:
            start = time.perf_counter()
            results = [
                run_split(
                    data, base_name, tolerances, split, check_api=(split == 0 and base_name == "LR")
                )
                for split in range(n_splits)
            ]
            print(f"### {ds}, {base_name} ({time.perf_counter() - start:.0f} s)\n")
            print(
                "| tolerance | method | "
                + " | ".join(lab for _, lab in METRICS)
                + " | fine-tune time (s) | best epoch / epochs |"
            )
            print("|---:|---|" + "---:|" * (len(METRICS) + 2))
            for tol in tolerances:
                for method in ("post-hoc", "fine-tuned", "difference"):
                    cells = []
                    for key, _ in METRICS:
                        if method == "difference":
                            v = np.array(
                                [
                                    r[tol]["fine-tuned"][key] - r[tol]["post-hoc"][key]
                                    for r in results
                                ]
                            )
                            cells.append(f"{v.mean():+.4f} ± {v.std():.4f}")
                        else:
                            v = np.array([r[tol][method][key] for r in results])
                            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
                    if method == "fine-tuned":
                        t = np.mean([r[tol][method]["time"] for r in results])
                        ep = " ".join(
                            f"{r[tol][method]['best_epoch']}/{r[tol][method]['epochs']}"
                            for r in results
                        )
                        cells += [f"{t:.2f}", ep]
                    else:
                        cells += ["", ""]
                    print(f"| {tol:g} | {method} | " + " | ".join(cells) + " |")
            print()


# --------------------------------------------------------------------------- criteria
def _multiclass_data(n=10_000, seed=0):
    """Three classes, two groups that shift the features and the target."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 6))
    X[:, 1] += 1.5 * a
    z = X[:, 0] + a + 0.3 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + 0.7 * rng.normal(size=n)
    return X, np.digitize(z, [0.0, 1.2]), a


CRITERIA_CASES = {
    # name: (data, criterion, groups, label-based decision metric)
    "adult-EO": ("adult", "equal_opportunity", "intersectional", "eo"),
    "adult-EOdds": ("adult", "equalized_odds", "intersectional", "eodds"),
    "adult-marginal-DP": ("adult-sex-race", "demographic_parity", "marginal", "dp"),
    "multiclass-DP": ("multiclass", "demographic_parity", "intersectional", "dp"),
}


def _criteria_data(name):
    if name == "multiclass":
        X, y, a = _multiclass_data()
        return X, y, a, StandardScaler
    X, y = load_adult(return_X_y=True)
    y = np.asarray(y)
    if name == "adult-sex-race":
        groups = np.c_[np.asarray(X["sex"]).astype(str), np.asarray(X["race"]).astype(str)]
        return X.drop(columns=["sex", "race"]), y, groups, adult_prep
    return X.drop(columns=["sex"]), y, np.asarray(X["sex"]).astype(str), adult_prep


def _decision_gap(kind, y, pred, groups):
    if kind == "eo":
        return equal_opportunity_difference(y, pred, sensitive_features=groups)
    if kind == "eodds":
        return equalized_odds_difference(y, pred, sensitive_features=groups)
    if groups.ndim == 2:  # marginal: the worst attribute
        return max(
            demographic_parity_difference(y, pred, sensitive_features=groups[:, j])
            for j in range(groups.shape[1])
        )
    if len(np.unique(y)) > 2:  # multiclass: the worst class
        return max(
            demographic_parity_difference(y, (pred == c).astype(int), sensitive_features=groups)
            for c in np.unique(y)
        )
    return demographic_parity_difference(y, pred, sensitive_features=groups)


def _evaluate_criteria(clf, Z, y, groups, kind):
    P = clf.predict_proba(Z, sensitive_features=groups)
    pred = clf.predict(Z, sensitive_features=groups)
    py = np.clip(P[np.arange(y.size), np.searchsorted(clf.classes_, y)], 1e-6, 1.0)
    auc = (
        roc_auc_score(y, P[:, 1]) if P.shape[1] == 2
        else roc_auc_score(y, P, multi_class="ovr")
    )
    return {
        "accuracy": accuracy_score(y, pred),
        "auc": auc,
        "log_loss": float(-np.mean(np.log(py))),
        "gap": _decision_gap(kind, y, pred, groups),
    }


def part_criteria(cases, n_splits, tol=0.01):
    """Post-hoc vs fine-tuned (label-based layer, and label_free) beyond binary DP."""
    print(
        f"## Fine-tuning beyond binary demographic parity (LR base, tolerance {tol:g}, "
        f"{n_splits} splits, test split, mean ± std)\n"
    )
    print(
        "Projected probabilities and decisions at prediction (label-free plug-in form for "
        "EO/EOdds); the gap column is the label-based gap of the decisions (TPR for EO, max of "
        "TPR/FPR for EOdds, selection rate for DP: worst attribute / class).\n"
    )
    print("| case | method | accuracy | ROC AUC | log-loss (proj.) | gap (decisions) "
          "| fine-tune time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in cases:
        data_name, criterion, groups_mode, kind = CRITERIA_CASES[case]
        X, y, groups, prep_factory = _criteria_data(data_name)
        methods = ["post-hoc", "fine-tuned"] + (
            ["fine-tuned (label_free)"] if kind in ("eo", "eodds") else []
        )
        results = {m: [] for m in methods}
        times = {m: [] for m in methods}
        for split in range(n_splits):
            strat = np.c_[y, groups] if groups.ndim == 1 else np.c_[y, groups[:, 0]]
            X_tr, X_te, y_tr, y_te, g_tr, g_te = train_test_split(
                X, y, groups, test_size=0.3, stratify=strat, random_state=split
            )
            prep = prep_factory()
            Z_tr, Z_te = prep.fit_transform(X_tr), prep.transform(X_te)
            base = LogisticRegression(solver="newton-cholesky").fit(Z_tr, y_tr)
            layer = {"tolerance": tol, "criterion": criterion, "groups": groups_mode,
                     "min_group_size": None}
            for method in methods:
                start = time.perf_counter()
                if method == "post-hoc":
                    model = base
                else:
                    model = copy.deepcopy(base)
                    if groups_mode == "marginal":
                        codes = [encode_groups(g_tr[:, j], n_samples=y_tr.size)[0]
                                 for j in range(g_tr.shape[1])]
                    else:
                        codes = encode_groups(g_tr, n_samples=y_tr.size)[0]
                    fine_tune(
                        model, Z_tr, y_tr, codes, classes=base.classes_, tolerance=tol,
                        criterion=criterion, random_state=split,
                        params={"label_free": method.endswith("(label_free)")},
                    )
                times[method].append(time.perf_counter() - start)
                clf = FairnessLayerClassifier(FrozenEstimator(model), **layer)
                clf.fit(Z_tr, y_tr, sensitive_features=g_tr)
                results[method].append(_evaluate_criteria(clf, Z_te, y_te, g_te, kind))
        for method in methods:
            cells = []
            for key in ("accuracy", "auc", "log_loss", "gap"):
                v = np.array([r[key] for r in results[method]])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            t = f"{np.mean(times[method]):.2f}" if method != "post-hoc" else ""
            print(f"| {case} | {method} | " + " | ".join(cells) + f" | {t} |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=["vjp", "speed", "quality", "criteria", "all"], default="all"
    )
    parser.add_argument(
        "--cases", nargs="+", default=list(CRITERIA_CASES), choices=list(CRITERIA_CASES)
    )
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--bases", nargs="+", default=list(BASES), choices=list(BASES))
    parser.add_argument("--tolerances", nargs="+", type=float, default=[0.01, 0.0001])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads (default 1: on a shared 2-core machine more threads were "
        "up to 15x slower)",
    )
    args = parser.parse_args(argv)
    with threadpool_limits(limits=args.threads):
        run(args)


def run(args):
    if args.part in ("vjp", "all"):
        part_vjp()
    if args.part in ("speed", "all"):
        part_speed()
    if args.part in ("quality", "all"):
        part_quality(args.datasets, args.bases, args.tolerances, args.splits)
    if args.part in ("criteria", "all"):
        part_criteria(args.cases, args.splits)


if __name__ == "__main__":
    main()
