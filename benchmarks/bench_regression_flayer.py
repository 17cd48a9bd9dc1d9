"""The F-Layer vs post-hoc projection on the paper's 32 synthetic regression configurations.

The paper's synthetic regression study: 32 datasets from a 2^5 factorial
design over the group split, the predictive power, the noise, the output box
and the linearity of the signal (n = 40,000, 150 features, tolerance 0.05,
test MSE); it reports the F-Layer beating post-hoc projection on 25 of 32.
This script runs the same design at a reduced size on
:func:`skfairlayer.datasets.make_paper_regression`, one binary level per
factor:

=================  ======================  ======================
factor             level 0                 level 1
=================  ======================  ======================
group split        balanced (0.5, 0.5)     imbalanced (0.8, 0.2)
predictive power   high (0.9)              low (0.5)
noise              gaussian                heavy (Student t, 3 df)
output box         [-3.5, 3.5]             [0, 3.5]
linearity          linear                  non-linear
=================  ======================  ======================

Two groups, ``group_shift=1.0`` in every configuration. The group is the last
column of ``X`` (``sensitive_features=n_features``); by default the base does
not see it (``sensitive_as_feature=False``) but the first feature is shifted by
the group, so the base partly infers it. With ``--group-feature`` the base sees
the group; then, for a linear base and unbounded outputs, the post-hoc
projection of the least-squares fit is already the least-squares fit among
parity-meeting models (the group's coefficient absorbs the group means, and
the within-group coefficients are the same), so fine-tuning has almost nothing
to gain.

For each configuration, base and seed, one draw of ``n_train + n_test`` rows
is split in two; on the training part

* post-hoc: ``FairnessLayerRegressor(base, tolerance=0.05, bounds=box,
  cv=None)`` (the fitted base, projected);
* F-Layer: the same with ``fine_tune=FineTuning(max_epochs=30)`` (the fitted
  base fine-tuned through the layer, early stopping on a 10% validation
  split, ``random_state=seed``);

both predict the test part as one batch (``inference="batch"``: parity holds
exactly on that batch). Reported per base: the number of configurations (of
32) where the F-Layer's test MSE, averaged over seeds, is lower; the median
and range of the relative change ``(F-Layer - post-hoc) / post-hoc``; and the
largest test mean gap of each (checked to be at most ``0.05 + 1e-9 * std(y)``)
and that all predictions lie within the box. The floor is the unconstrained
base's test MSE (no layer), reported as the ratio of each method's MSE to it.

Usage::

    python benchmarks/bench_regression_flayer.py            # 3 seeds
    python benchmarks/bench_regression_flayer.py --quick    # 1 seed
    python benchmarks/bench_regression_flayer.py --per-config   # also every row
    python benchmarks/bench_regression_flayer.py --group-feature    # the base sees the group
"""

import argparse
import itertools
import platform
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor

from skfairlayer import FairnessLayerRegressor, FineTuning
from skfairlayer.datasets import make_paper_regression
from skfairlayer.metrics import mean_difference

TOLERANCE = 0.05
LEVELS = {
    "split": [(0.5, 0.5), (0.8, 0.2)],
    "power": [0.9, 0.5],
    "noise": ["gaussian", "heavy"],
    "box": [(-3.5, 3.5), (0.0, 3.5)],
    "linear": [True, False],
}
BASES = {
    "Ridge": lambda seed: Ridge(),
    "MLPRegressor(32)": lambda seed: MLPRegressor(
        hidden_layer_sizes=(32,), max_iter=200, random_state=seed
    ),
}


def configurations():
    """The 32 configurations: dicts of one level per factor, with a short code."""
    for bits in itertools.product((0, 1), repeat=len(LEVELS)):
        cfg = {name: levels[b] for (name, levels), b in zip(LEVELS.items(), bits, strict=True)}
        cfg["code"] = "".join(map(str, bits))
        yield cfg


def run_one(cfg, make_base, seed, n_train, n_test, n_features, fine_tune, hide_group=True):
    """Test MSE of post-hoc and F-Layer (and the bare base) on one draw."""
    X, y, g = make_paper_regression(
        n_train + n_test, n_features, group_proportions=cfg["split"], group_shift=1.0,
        predictive_power=cfg["power"], noise=cfg["noise"], linear=cfg["linear"],
        output_box=cfg["box"], random_state=seed,
    )
    X = np.c_[X, g]  # the group is the last column; the layer reads it from there
    tr, te = slice(0, n_train), slice(n_train, None)
    out = {}
    for name, tuning in (("posthoc", False), ("flayer", fine_tune)):
        reg = FairnessLayerRegressor(
            make_base(seed), tolerance=TOLERANCE, bounds=cfg["box"], cv=None,
            sensitive_features=n_features, sensitive_as_feature=not hide_group,
            fine_tune=tuning, random_state=seed,
        )
        reg.fit(X[tr], y[tr])
        pred = reg.predict(X[te])
        gap = mean_difference(None, pred, sensitive_features=g[te])
        in_box = bool(np.all((pred >= cfg["box"][0]) & (pred <= cfg["box"][1])))
        out[name] = (float(np.mean((pred - y[te]) ** 2)), gap, in_box)
        if name == "posthoc":  # the bare base, fitted in the same call: the floor
            base_pred = reg.estimator_.predict(X[te, :n_features] if hide_group else X[te])
            out["base"] = float(np.mean((base_pred - y[te]) ** 2))
    out["slack"] = 1e-9 * float(np.std(y[tr]))
    return out


def run(args):
    fine_tune = FineTuning(max_epochs=args.epochs)
    seeds = range(1 if args.quick else args.seeds)
    results = {}
    for base_name, make_base in BASES.items():
        t0 = time.perf_counter()
        rows = []
        for cfg in configurations():
            runs = [run_one(cfg, make_base, s, args.n_train, args.n_test, args.n_features,
                            fine_tune, not args.group_feature) for s in seeds]
            post = np.mean([r["posthoc"][0] for r in runs])
            flay = np.mean([r["flayer"][0] for r in runs])
            base = np.mean([r["base"] for r in runs])
            gap = max(max(r["posthoc"][1], r["flayer"][1]) for r in runs)
            meets = all(max(r["posthoc"][1], r["flayer"][1]) <= TOLERANCE + r["slack"]
                        and r["posthoc"][2] and r["flayer"][2] for r in runs)
            rows.append((cfg["code"], base, post, flay, gap, meets))
        results[base_name] = (rows, time.perf_counter() - t0)
    return results


def report(results, args):
    n_seeds = 1 if args.quick else args.seeds
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}; "
          f"n_train={args.n_train}, n_test={args.n_test}, {args.n_features} features, "
          f"{n_seeds} seed(s), FineTuning(max_epochs={args.epochs}), tolerance {TOLERANCE}\n")
    print(f"group column {'seen by' if args.group_feature else 'hidden from'} the base\n")
    print("| base | F-Layer wins / ties / losses (of 32) | median rel. MSE change | range | "
          "post-hoc / floor (median) | F-Layer / floor (median) | max test gap | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for base_name, (rows, seconds) in results.items():
        base, post, flay = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
        rel = (flay - post) / post
        ok = all(r[5] for r in rows)  # parity within tolerance and predictions in the box
        wins, ties = int(np.sum(flay < post)), int(np.sum(flay == post))
        print(f"| {base_name} | {wins} / {ties} / {32 - wins - ties} | {np.median(rel):+.2%} | "
              f"[{rel.min():+.2%}, {rel.max():+.2%}] | {np.median(post / base):.3f} | "
              f"{np.median(flay / base):.3f} | "
              f"{max(r[4] for r in rows):.4f} ({'ok' if ok else 'FAIL'}) | {seconds:.0f} |")
    if args.per_config:
        print("\nconfiguration code: split, power, noise, box, linear (0 = first level)\n")
        print("| base | config | floor MSE | post-hoc MSE | F-Layer MSE | rel. change |")
        print("|---|---|---|---|---|---|")
        for base_name, (rows, _) in results.items():
            for code, base, post, flay, _, _ in rows:
                print(f"| {base_name} | {code} | {base:.4f} | {post:.4f} | {flay:.4f} | "
                      f"{(flay - post) / post:+.2%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=3000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--group-feature", action="store_true",
                        help="the base also sees the group column")
    parser.add_argument("--per-config", action="store_true", help="also one row per config")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MLP max_iter=200, as configured
        results = run(args)
    report(results, args)


if __name__ == "__main__":
    main()
