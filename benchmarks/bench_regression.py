"""Regression outputs: mean parity (the layer) against the Wasserstein barycenter, and speed.

Run ``python benchmarks/bench_regression.py`` (n = 1e6 for the timings) or with
``--quick`` (n = 1e5). Prints two markdown tables.

Distortion at equal mean gap
    Data from :func:`skfairlayer.datasets.make_paper_regression` (3 groups of
    different spreads). For each ``alpha``, the barycenter map's outputs have
    some mean gap ``G``; the layer (``project`` with ``tolerance=G``, no
    bounds) meets the same gap. Columns: the root mean squared change of
    each, their ratio (layer / barycenter, at most 1 by MATH.md section 5),
    and the largest KS distance between groups after each (the barycenter
    also equalises distributions; the layer only means).
Time at n rows
    Minimum over repeats of ``project`` (exact solver, unbounded and
    bounded), of ``barycenter_projection``, and of the floor: one
    ``np.clip`` pass over the same array (allocating its output). The ratio
    is time / floor.
"""

import argparse
import platform
import time

import numpy as np

from skfairlayer import barycenter_projection, project
from skfairlayer.datasets import make_paper_regression
from skfairlayer.metrics import ks_distance, mean_difference


def _best(fn, repeats):
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def distortion_table(n, seed=0):
    X, y, g = make_paper_regression(n, 5, n_groups=3, group_shift=1.0, random_state=seed)
    s = y * (1.0 + 0.5 * g)  # groups of different spreads: distributions are not shifted copies
    rows = []
    for alpha in [0.25, 0.5, 0.75, 0.9, 1.0]:
        bary = barycenter_projection(s, g, alpha=alpha)
        gap = mean_difference(None, bary, sensitive_features=g)
        layer = project(s, g, tolerance=gap, bounds=(-np.inf, np.inf)).proba
        d_b = float(np.sqrt(np.mean((bary - s) ** 2)))
        d_l = float(np.sqrt(np.mean((layer - s) ** 2)))
        rows.append((alpha, gap, d_l, d_b, d_l / d_b,
                     ks_distance(None, layer, sensitive_features=g),
                     ks_distance(None, bary, sensitive_features=g)))
    print("| alpha | mean gap | rms change, layer | rms change, barycenter | ratio "
          "| KS, layer | KS, barycenter |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| {:.2f} | {:.4f} | {:.4f} | {:.4f} | {:.3f} | {:.3f} | {:.3f} |".format(*r))


def timing_table(n, repeats, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, n)
    s = rng.normal(size=n) * 10.0 + 5.0 * g
    floor = _best(lambda: np.clip(s, -20.0, 40.0), repeats)
    cases = {
        "project, unbounded": lambda: project(s, g, tolerance=0.1, bounds=(-np.inf, np.inf)),
        "project, bounds (-20, 40)": lambda: project(s, g, tolerance=0.1, bounds=(-20.0, 40.0)),
        "barycenter_projection": lambda: barycenter_projection(s, g),
    }
    print(f"| method (n = {n:.0e}, 3 groups) | seconds | ratio to floor |")
    print("|---|---|---|")
    print(f"| floor: one np.clip | {floor:.4f} | 1 |")
    for name, fn in cases.items():
        t = _best(fn, repeats)
        print(f"| {name} | {t:.4f} | {t / floor:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1e5 for the timings")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}\n")
    distortion_table(20_000)
    print()
    timing_table(100_000 if args.quick else 1_000_000, repeats=3 if args.quick else 5)


if __name__ == "__main__":
    main()
