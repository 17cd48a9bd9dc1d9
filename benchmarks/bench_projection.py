"""Speed and memory of the exact parity projection, relative to one clip pass.

Run ``python benchmarks/bench_projection.py`` (full: n = 1e6 and 1e7) or with
``--quick`` (n up to 1e6, a few seconds). Prints a markdown table.

Columns
-------
floor
    One ``np.clip(s, 0, 1)`` over the same array, allocating its output: the
    least any projection must cost.
exact (layout)
    ``solve_exact`` on a pre-built problem with a prepared ``GroupLayout``
    (groups encoded once, as a caller with a fixed partition would).
exact
    ``solve_exact`` on a pre-built problem without a layout (group sizes read
    off the weights on each call).
warm
    ``solve_exact`` with a layout and ``warm_start`` = the solution of another
    batch from the same distribution (streaming / fine-tuning).
project()
    The public ``skfairlayer.project(proba, groups)``, end to end: validation,
    group encoding, problem construction, solve, verification, result.
vjp
    ``ProjectionResult.vjp`` of a fresh result of ``project`` (the
    linearization at the solution built, then one product), and ``vjp
    product`` the product alone on a built one.
sorted
    The reference ``solve_sorted`` (per-group tables and bisection).
peak / input
    ``tracemalloc`` peak during ``solve_exact`` (without layout, so the codes
    it builds are counted) over the bytes of the score array.
path
    ``info["path"]`` of the solve: ``uniform-2`` (two groups) or ``uniform``.

handed, fewest
    Floors of any verified exact projection here, handed the answer (the solution's
    shifts): ``handed`` checks the codes and writes the output pass at those shifts with
    its verification sums, as the solver does; ``fewest`` adds the passes the leanest
    exact solve makes before its output (the group sums of the scores, one bracket pass
    around the answer), without any search. Their outputs equal ``project()``'s.

``--multiclass`` instead times the exact multiclass solver (softmax scores of
normal logits with a group effect, 4 groups, tolerance 0.01): ``solve_simplex``
on a built problem and ``project()`` end to end, against one clip pass over the
``(n, K)`` scores, and counts the solve's evaluations of the full data (each is
one pass over the rows; the subsample's start is not counted).

``--clock cpu`` times by ``time.process_time`` (CPU time of the process, page
faults included) instead of the wall clock: on a busy shared machine the wall
clock also measures the other tenants. (The solver starts no threads.)

The timings of one row are taken round-robin over the methods, ``repeats``
rounds of ``BURST`` back-to-back calls each (so data stay cache-resident for
every method, as for the floor, and a busy machine inflates all columns
alike); the minimum is kept. The ratio is time / floor. The data: logistic scores of a normal with a group offset
(overlapping score distributions, a parity gap of ~0.1), tolerance 0.01.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from skfairlayer import project
from skfairlayer._criteria import GroupStatistics, ProjectionProblem, build_problem
from skfairlayer._sensitivity import Linearization
from skfairlayer._solvers import _simplex
from skfairlayer._solvers._exact import GroupLayout, solve_exact, solve_sorted

TOLERANCE = 0.01
#: Consecutive timed calls of one method within a round.
BURST = 3


def make_data(n, k, seed=0):
    """Scores and group codes of one synthetic batch."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n).astype(np.intp)
    offset = 0.6 * (codes - (k - 1) / 2) / max(k - 1, 1)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.5, n) + offset)))
    return scores, codes


def make_problem(scores, codes, k):
    """The demographic-parity problem of a batch, groups already encoded."""
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    fam = GroupStatistics(codes=codes, weights=(1.0 / counts)[codes], n_groups=k,
                          tolerance=TOLERANCE, name="demographic parity", uniform=True)
    return ProjectionProblem(scores, (fam,), lower=np.asarray(0.0), upper=np.asarray(1.0))


def peak_memory(fn):
    """Peak bytes allocated (tracemalloc) while running ``fn``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def oracles(scores, codes, k, shifts):
    """Two floors of a verified exact projection of ``(scores, codes)``, handed its answer.

    ``handed``: the codes checked (range, sizes, ``uint8`` for two groups) and the
    output pass ``clip(s - c_g)`` at the solution's ``shifts`` with its group sums (the
    verification's; a non-finite score shows there), as the solver writes it. ``fewest``:
    ``handed`` plus the passes the leanest exact solve makes before its output, the
    group sums of the scores and one bracket pass around the answer. No search, no
    subsample, no reduced problem: any exact solve here costs at least ``fewest``.
    """
    from skfairlayer._problem import _uniform_family
    from skfairlayer._solvers._uniform import _Indicator, _uniform_output, _uniform_pass

    def checked():  # the codes' range, then the family as project() builds it
        if codes.min() < 0 or codes.max() >= k:
            raise ValueError("codes out of range")
        fam = _uniform_family(codes, k, TOLERANCE, 0, None, None)
        return (_Indicator(fam._small_codes) if k == 2 else None), fam.totals

    def handed():
        f, totals = checked()
        return _uniform_output(scores, codes, f, shifts, 0.0, 1.0, totals)

    def fewest():
        f, totals = checked()
        if f is None:
            np.bincount(codes, weights=scores, minlength=k)
        else:
            f.sums(scores)
        _uniform_pass(scores, codes, f, shifts, 1e-3, 0.0, 1.0)
        return _uniform_output(scores, codes, f, shifts, 0.0, 1.0, totals)

    return handed, fewest


def bench(n, k, repeats, sorted_repeats, clock=time.perf_counter):
    """One table row: minimum time of each method, in milliseconds, and the memory ratio."""
    scores, codes = make_data(n, k)
    problem = make_problem(scores, codes, k)
    layout = GroupLayout(codes, k)
    previous = solve_exact(make_problem(*make_data(n, k, seed=1), k))  # another batch
    result = project(scores, codes, tolerance=TOLERANCE)
    grad = np.random.default_rng(2).normal(size=n)
    built = Linearization(result.problem, result.proba)
    methods = {
        "floor": lambda: np.clip(scores, 0.0, 1.0),
        "layout": lambda: solve_exact(problem, layout=layout),
        "exact": lambda: solve_exact(problem),
        "warm": lambda: solve_exact(problem, warm_start=previous, layout=layout),
        "project": lambda: project(scores, codes, tolerance=TOLERANCE),
        "vjp": lambda: Linearization(result.problem, result.proba).vjp(grad),
        "vjp product": lambda: built.vjp(grad),
    }
    methods["handed"], methods["fewest"] = oracles(scores, codes, k, np.asarray(result.shifts[0]))
    times = {name: [] for name in methods}
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            for _ in range(BURST):  # back to back: the data stay cache-resident, as for the floor
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
    best = {name: 1e3 * min(ts) for name, ts in times.items()}
    if sorted_repeats:
        ts = []
        for _ in range(sorted_repeats):
            t0 = clock()
            reference = solve_sorted(problem)
            ts.append(clock() - t0)
        best["sorted"] = 1e3 * min(ts)
        gap = np.abs(solve_exact(problem).outputs - reference.outputs).max()
        if gap > 1e-9:
            raise AssertionError(f"exact and sorted solvers differ by {gap:.3g} at n={n}, k={k}")
    gap = np.abs(methods["handed"]()[0] - result.proba).max()
    if gap > 1e-10:  # the shifts as ``nu / n`` round differently from the solver's own
        raise AssertionError(f"the oracle's outputs differ from project()'s by {gap:.3g}")
    best["memory"] = peak_memory(lambda: solve_exact(problem)) / scores.nbytes
    best["path"] = solve_exact(problem).info["path"]
    return best


def make_multiclass(n, n_classes, k=4, seed=0):
    """Softmax scores of normal logits with a group effect, and the group codes."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n)
    logits = rng.normal(size=(n, n_classes)) + 0.5 * np.eye(n_classes)[codes % n_classes]
    scores = np.exp(logits)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores, codes


def bench_multiclass(n, n_classes, repeats, clock=time.perf_counter):
    """One multiclass row: minimum times (ms) and full-data evaluations of one solve."""
    scores, codes = make_multiclass(n, n_classes)
    problem = build_problem("demographic_parity", scores, [(codes, 4)], TOLERANCE)
    methods = {
        "floor": lambda: np.clip(scores, 0.0, 1.0),
        "solve": lambda: _simplex.solve_simplex(problem),
        "project": lambda: project(scores, codes, tolerance=TOLERANCE),
    }
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    best = {name: 1e3 * min(ts) for name, ts in times.items()}
    calls, primal = [], _simplex._Rows.primal

    def counted(rows, nu):
        calls.append(rows.n)
        return primal(rows, nu)

    _simplex._Rows.primal = counted
    try:
        best["iterations"] = _simplex.solve_simplex(problem).iterations
    finally:
        _simplex._Rows.primal = primal
    best["evaluations"] = calls.count(n)
    return best


def main_multiclass(quick, clock):
    """The multiclass table (``--multiclass``)."""
    cases = [(100_000, 3, 5), (1_000_000, 3, 3), (1_000_000, 5, 3)]
    if not quick:
        cases.append((10_000_000, 3, 2))
    header = ("| n | classes | floor ms | solve_simplex ms | ratio | project() ms | ratio "
              "| full evaluations | iterations |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n, n_classes, repeats in cases:
        r = bench_multiclass(n, n_classes, repeats, clock)
        f = r["floor"]
        print(f"| {n:.0e} | {n_classes} | {f:.2f} | {r['solve']:.1f} | {r['solve'] / f:.0f}x "
              f"| {r['project']:.1f} | {r['project'] / f:.0f}x | {r['evaluations']} "
              f"| {r['iterations']} |")
        sys.stdout.flush()


def machine():
    """A one-line description of the machine and the libraries."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}; load average {load}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock (default) or CPU time of the process")
    parser.add_argument("--multiclass", action="store_true",
                        help="the exact multiclass (simplex) solver instead")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.multiclass:
        print(f"Machine: {machine()}; clock: {args.clock}\n")
        main_multiclass(args.quick, clock)
        print(f"\nAfter the run: {machine()}")
        return
    if args.quick:
        cases = [(100_000, 2, 15, 2), (1_000_000, 2, 7, 1), (100_000, 10, 15, 2)]
    else:
        cases = [(1_000_000, 2, 21, 2), (10_000_000, 2, 7, 1), (1_000_000, 10, 21, 2)]
    print(f"Machine: {machine()}; clock: {args.clock}\n")
    header = ("| n | groups | floor ms | exact (layout) ms | ratio | exact ms | ratio | warm ms | ratio "
              "| project() ms | ratio | vjp ms | ratio | vjp product ms | ratio | sorted ms | ratio "
              "| handed ms | ratio | fewest ms | ratio | peak / input | path |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n, k, repeats, sorted_repeats in cases:
        r = bench(n, k, repeats, sorted_repeats, clock)
        f = r["floor"]

        def cell(name, r=r, f=f):
            return f"{r[name]:.2f} | {r[name] / f:.1f}x" if name in r else "- | -"

        print(f"| {n:.0e} | {k} | {f:.3f} | {cell('layout')} | {cell('exact')} | {cell('warm')} "
              f"| {cell('project')} | {cell('vjp')} | {cell('vjp product')} | {cell('sorted')} "
              f"| {cell('handed')} | {cell('fewest')} | {r['memory']:.2f} | {r['path']} |")
        sys.stdout.flush()
    print(f"\nAfter the run: {machine()}")


if __name__ == "__main__":
    main()
