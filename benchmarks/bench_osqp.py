"""Wall time of the general solver (``skfairlayer._solvers._osqp.solve_osqp``).

Binary demographic parity, 10 groups, tolerance 0.01, n = 1e4, 1e5, 1e6 rows
(scores ``clip(Beta(2, 5) + 0.05 * group)``, so that parity binds). For each n:

``cold``
    Setup + solve from nothing (row matrix, OSQP setup and run, active-set
    finish, verification): what a first call costs.
``warm``
    Re-solve of the same structure (same groups and weights) with new scores
    (the old ones plus N(0, 0.02) noise, clipped): the structure held by an
    ``OSQPBackend`` and the previous solution (``warm_start``) are reused.
``full``
    Cold setup + solve with OSQP on the whole problem (``subsample_above=inf``:
    no subsample, no zero-multiplier start), one run: what OSQP itself costs.
``exact``
    The exact sorted solver on the same problem, for reference.
``clip``
    One ``np.clip`` pass over the same array: a floor for any method that
    touches every row; the ratios ``cold/clip`` and ``warm/clip`` are printed.

Every answer is checked as :mod:`skfairlayer._projection` does (parity <= 1e-9,
bounds exact) and compared with the exact solver. Times are the median of
``--repeat`` runs (median). ``--multiclass`` adds a table for multiclass parity on the
simplex (4 classes, 5 groups, one family per class column) and for binary
parity plus one extra mean row (``mean(p) >= mean(s) + 0.02``), which only this
solver handles.

Usage::

    python benchmarks/bench_osqp.py
    python benchmarks/bench_osqp.py --sizes 1e4 1e5 --repeat 5 --multiclass
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp

from skfairlayer._criteria import AffineRows, DemographicParity, ProjectionProblem
from skfairlayer._solvers._exact import solve_sorted
from skfairlayer._solvers._osqp import OSQPBackend, solve_osqp


def _median(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def _check(problem, sol):
    parity = problem.parity_violation(sol.outputs)
    box = problem.box_violation(sol.outputs)
    assert parity <= 1e-9, parity
    assert box <= (1e-12 if problem.simplex else 0.0), box
    return parity


def _binary(n, k, tol, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n)
    scores = np.clip(rng.beta(2, 5, n) + 0.05 * codes, 0, 1)
    problem = ProjectionProblem(scores, DemographicParity().families(codes, k, scores, tol))
    noisy = np.clip(scores + rng.normal(scale=0.02, size=n), 0, 1)
    return problem, ProjectionProblem(noisy, problem.families)


def _cold(problem):
    return solve_osqp(problem)


def bench_binary(sizes, repeat, k=10, tol=0.01):
    print(f"Binary demographic parity, {k} groups, tolerance {tol} (median of {repeat})")
    head = (
        f"{'n':>9} {'cold s':>8} {'warm s':>8} {'full s':>8} {'exact s':>8} {'clip ms':>8} "
        f"{'cold/clip':>9} {'warm/clip':>9} {'parity viol':>11} {'|p-exact|':>9}  paths"
    )
    print(head)
    print("-" * len(head))
    for n in sizes:
        problem, rescored = _binary(n, k, tol)
        t_cold, sol = _median(lambda p=problem: _cold(p), repeat)
        viol = _check(problem, sol)

        def warm(p=problem, q=rescored):
            backend = OSQPBackend()
            first = solve_osqp(p, backend=backend)  # untimed: only the re-solve is timed
            start = time.perf_counter()
            out = solve_osqp(q, warm_start=first, backend=backend)
            return time.perf_counter() - start, out

        runs = [warm() for _ in range(repeat)]
        t_warm, sol_warm = float(np.median([r[0] for r in runs])), runs[-1][1]
        _check(rescored, sol_warm)
        t_full, sol_full = _median(lambda p=problem: solve_osqp(p, subsample_above=np.inf), 1)
        _check(problem, sol_full)
        t_exact, ref = _median(lambda p=problem: solve_sorted(p), repeat)
        t_clip, _ = _median(lambda s=problem.scores: np.clip(s, 0.01, 0.99), max(repeat, 5))
        diff = max(
            np.abs(sol.outputs - ref.outputs).max(),
            np.abs(sol_warm.outputs - solve_sorted(rescored).outputs).max(),
            np.abs(sol_full.outputs - ref.outputs).max(),
        )
        paths = f"{'+'.join(sol.info['path'])} / {'+'.join(sol_warm.info['path'])}"
        print(
            f"{n:>9.0e} {t_cold:>8.3f} {t_warm:>8.3f} {t_full:>8.3f} {t_exact:>8.3f} "
            f"{1e3 * t_clip:>8.3f} "
            f"{t_cold / t_clip:>9.0f} {t_warm / t_clip:>9.0f} {viol:>11.1e} {diff:>9.1e}  {paths}"
        )
    print()


def bench_general(sizes, repeat):
    print(f"General problems: cold setup + solve (median of {repeat})")
    head = f"{'problem':>34} {'n':>9} {'cold s':>8} {'parity viol':>11}  path"
    print(head)
    print("-" * len(head))
    for n in sizes:
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 5, n)
        logits = rng.normal(size=(n, 4))
        logits[:, 0] += 0.5 * codes
        scores = np.exp(logits)
        scores /= scores.sum(axis=1, keepdims=True)
        for tol in [0.01, 0.0]:
            problem = ProjectionProblem(
                scores, DemographicParity().families(codes, 5, scores, tol), simplex=True
            )
            t, sol = _median(lambda p=problem: _cold(p), repeat)
            name = f"multiclass K=4 k=5 tol={tol}"
            print(f"{name:>34} {n:>9.0e} {t:>8.3f} {_check(problem, sol):>11.1e}  "
                  f"{'+'.join(sol.info['path'])}")
        binary, _ = _binary(n, 10, 0.01)
        row = AffineRows(
            sp.csr_matrix(np.full((1, n), 1.0 / n)),
            np.array([binary.scores.mean() + 0.02]),
            np.array([np.inf]),
        )
        problem = ProjectionProblem(binary.scores, binary.families, rows=row)
        t, sol = _median(lambda p=problem: _cold(p), repeat)
        name = "binary k=10 + mean row"
        print(f"{name:>34} {n:>9.0e} {t:>8.3f} {_check(problem, sol):>11.1e}  "
              f"{'+'.join(sol.info['path'])}")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--multiclass", action="store_true",
                        help="also time multiclass parity and extra rows")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes]
    bench_binary(sizes, args.repeat)
    if args.multiclass:
        bench_general(sizes, args.repeat)


if __name__ == "__main__":
    main()
