"""The global projection and parity decisions on a LocalCluster, relative to one ``sum``.

Run ``python benchmarks/bench_dask.py`` (n = 1e8 rows in 100 chunks on a 2-worker
LocalCluster) or ``--rows 1e7``. Prints a markdown table.

Setup: scores ``sigmoid(N(0, 1.5) + 0.4 * group)`` and two groups drawn at random
(int8), generated lazily by ``dask.array.random`` on the workers (never on the
driver) and persisted there; tolerance 0.01.

Rows
----
floor: ``scores.sum()``
    One reduction over the persisted score array: the least a pass can cost.
floor: ``(scores * groups).sum()``
    One reduction reading both arrays (every pass of the layer reads both).
floor: ``map_blocks(clip(s - 0.01 g)).sum()``
    The simplest output pass: a new array from both, then reduced (what the
    layer's output pass does, without the verification sums).
floor: both bare passes
    The two rows above added: what an exact method costs at least in Dask's own
    bare operations, since it must read every score and group before any output
    (the shifts depend on every row), then write the output.
project (solve: start + bracket)
    ``skfairlayer.dask.project`` (default ``verify="blocks"``): the start read from
    8 partitions, the bracket pass(es), the driver's check of the predicted sums.
    Passes: ``bracket passes + partitions read by the start / partitions``.
project (output, checked per partition)
    ``result.proba.sum()`` computed: the streaming output pass, each partition's
    task checking its own group sums and bounds.
project (total)
    Both. The ``verify="eager"`` row (not with ``--quick``): the previous default,
    one more pass verifying the whole output before returning.
decisions (solve), (output), (total)
    The same for ``skfairlayer.dask.parity_decisions``.

``--estimator`` instead times :mod:`skfairlayer.dask`'s estimator front end on a
persisted 2-D array ``X`` (three features and the group column, generated on the
workers), with a :class:`~skfairlayer.FairnessLayerClassifier` (logistic
regression) fitted in memory on 20,000 rows. Rows: the floor
``X.map_blocks(base.predict_proba).sum()`` (the base model alone, partition by
partition); ``predict_proba`` / ``predict`` with ``inference="fitted"``
(demographic parity and equalized odds: the fitted rule per partition); and
``predict_proba`` with ``inference="batch"`` (the global solve: a start read from 8
partitions, one bracket pass, the output checked partition by partition: 2 passes
unless a bracket misses), with the base scores
persisted on the workers (the default ``persist_scores=True``: the base runs once per
partition) and with ``persist_scores=False`` (the base scores every pass again).

``--classes K`` (K >= 3) instead times the multiclass projection: class scores
``softmax(N(0, 1.5) + 0.4 * group * [class 0])`` of shape ``(n, K)`` and two groups
(int8), generated and persisted on the workers. Rows: the floor ``scores.sum()``
(the persisted ``(n, K)`` array), ``project`` (solve: the start read from 8 partitions
and one pass per evaluation of the dual; passes: ``result.passes + 8/n``), its output
(``result.proba.sum()``: the checked output pass) and both.

``--blocks`` instead times the per-block numpy functions of every pass on one
1e6-row block (int8 groups, the same distribution) outside Dask, with the parameters
a solve of 10 such blocks passes them, against ``sum`` on the same block (minimum
over 8 blocks in rotation, 64 MB: not cache-resident).

Columns: seconds (median of ``--repeats`` rounds; the projection's rows and their
floors are timed round-robin, each round calling each once), ratio to the ``scores.sum()``
floor measured in the same run, passes over the data, and the driver's peak
memory: ``tracemalloc`` peak of Python allocations on the driver during one more
call (not timed: tracing slows the driver's Python code), and the growth of the driver's resident set (``ru_maxrss``) over the whole run.
"""

import argparse
import functools
import inspect
import os
import resource
import time
import tracemalloc

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster, wait

from skfairlayer.dask import parity_decisions, project

TOLERANCE = 0.01


def _data(n, chunks, seed=0):
    rs = da.random.RandomState(seed)
    groups = rs.randint(0, 2, size=n, chunks=chunks).astype(np.int8)
    z = rs.normal(0.0, 1.5, size=n, chunks=chunks) + 0.4 * groups
    scores = 1.0 / (1.0 + da.exp(-z))
    return scores, groups


def _multiclass_data(n, chunks, n_classes, seed=0):
    rs = da.random.RandomState(seed)
    groups = rs.randint(0, 2, size=n, chunks=chunks).astype(np.int8)
    z = rs.normal(0.0, 1.5, size=(n, n_classes), chunks=(chunks, n_classes))
    z = z + 0.4 * groups[:, None] * (np.arange(n_classes) == 0)
    e = da.exp(z)
    return e / e.sum(axis=1, keepdims=True), groups


def _multiclass_rows(client, n, chunk, n_chunks, n_classes, repeats):
    """The multiclass projection against ``scores.sum()`` (see ``--classes``)."""
    scores, groups = client.persist(list(_multiclass_data(n, chunk, n_classes)))
    wait([scores, groups])
    scores.sum().compute()  # warm-up (see _warm_up)
    groups.sum().compute()
    floor, _, _ = _timed(lambda: scores.sum().compute(), repeats)
    solve, res, peak = _timed(lambda: project(scores, groups, tolerance=TOLERANCE), repeats)
    out, _, peak_out = _timed(lambda: res.proba.sum().compute(), repeats)
    read = f"{res.info['sampled_blocks'] or 0}/{n_chunks}"
    rows = [("floor: scores.sum()", floor, 1, 0),
            ("project (solve: start + evaluations)", solve, f"{res.passes} + {read}", peak),
            ("project (output, checked per partition)", out, 1, peak_out),
            ("project (total)", solve + out, f"{res.passes + 1} + {read}",
             max(peak, peak_out))]
    return floor, rows, res


def _clip(s, g):
    return np.clip(s - 0.01 * g, 0.0, 1.0)


def _features(n, chunks, seed=0):
    rs = da.random.RandomState(seed)
    groups = rs.randint(0, 2, size=(n, 1), chunks=(chunks, 1)).astype(np.float64)
    z = rs.normal(0.0, 1.0, size=(n, 3), chunks=(chunks, 3)) + 0.4 * groups
    return da.concatenate([z, groups], axis=1).rechunk({1: -1})


def _estimators():
    from sklearn.linear_model import LogisticRegression

    from skfairlayer import FairnessLayerClassifier

    rng = np.random.default_rng(1)
    n = 20_000
    g = rng.integers(0, 2, n)
    X = np.column_stack([rng.normal(size=(n, 3)) + 0.4 * g[:, None], g])
    y = (X[:, 0] + X[:, 1] + rng.normal(size=n) > 0.4).astype(int)
    out = {}
    for name, params in [("dp, fitted", {"inference": "fitted"}),
                         ("equalized odds, fitted", {"inference": "fitted",
                                                     "criterion": "equalized_odds"}),
                         ("dp, batch", {})]:
        out[name] = FairnessLayerClassifier(LogisticRegression(), tolerance=TOLERANCE,
                                            sensitive_features=3, **params).fit(X, y)
    return out


def _estimator_rows(client, n, chunk, repeats):
    from skfairlayer.dask import predict, predict_proba

    X = client.persist(_features(n, chunk))
    wait(X)
    X.sum().compute()  # warm-up (see _warm_up)
    ests = _estimators()
    base = ests["dp, fitted"].estimator_
    floor, _, _ = _timed(lambda: X.map_blocks(base.predict_proba, dtype=float).sum().compute(),
                         repeats)
    rows = [("floor: X.map_blocks(base.predict_proba).sum()", floor, 1, 0)]
    for name in ("dp, fitted", "equalized odds, fitted"):
        t, _, peak = _timed(lambda e=ests[name]: predict_proba(e, X).sum().compute(), repeats)
        rows.append((f"predict_proba ({name})", t, 1, peak))
        t, _, peak = _timed(lambda e=ests[name]: predict(e, X).sum().compute(), repeats)
        rows.append((f"predict ({name})", t, 1, peak))
    batch = ests["dp, batch"]
    if "persist_scores" in inspect.signature(predict_proba).parameters:
        t, _, peak = _timed(lambda: predict_proba(batch, X).sum().compute(), repeats)
        rows.append(("predict_proba (dp, batch, persisted scores: base once, solve + "
                     "output)", t, "2 + 8/n", peak))
        kw = {"persist_scores": False}
    else:  # an older skfairlayer: the base runs in every pass
        kw = {}
    t, _, peak = _timed(lambda: predict_proba(batch, X, **kw).sum().compute(), repeats)
    rows.append(("predict_proba (dp, batch, persist_scores=False: base every pass)", t,
                 "2 + 8/n",
                 peak))
    return floor, rows


def _tasks(array, *inputs):
    """Tasks of ``array``'s graph beyond those of ``inputs``'."""
    base = set()
    for x in inputs:
        base |= set(dict(x.__dask_graph__()))
    return len(set(dict(array.__dask_graph__())) - base)


def _warm_up(*arrays):
    """One untimed reduction of each array and of their pair: the first computations on a
    fresh client pay one-off costs (imports and function pickling on the workers) that
    would otherwise land on the floor."""
    for x in arrays:
        x.sum().compute()
    da.map_blocks(_clip, *arrays, dtype=float).sum().compute()


def _unchecked(func, *args):
    """``func(*args)``, its check failing on a block it was not predicted for ignored."""
    from skfairlayer.exceptions import SolverError

    try:
        return func(*args)
    except SolverError:
        return None


def _block_rows(rows=1_000_000, copies=8, repeats=32):
    """Per-block timings (ms) of every pass's numpy function, and of ``sum`` (see --blocks)."""
    from skfairlayer.dask import _blocks

    rng = np.random.default_rng(0)
    data = []
    for _ in range(copies):
        g = rng.integers(0, 2, rows).astype(np.int8)
        data.append((1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.5, rows) + 0.4 * g))), g))
    funcs, init = {}, _blocks.Pass.__init__

    def record(self, score_blocks, group_blocks, func, name, extra=None):
        if "slack" in getattr(func, "keywords", {}):  # checked output: other blocks, no match
            func = functools.partial(func, slack=np.inf)
        elif "checked" in getattr(getattr(func, "func", None), "__name__", ""):
            func = functools.partial(_unchecked, func)  # checked decisions: counts differ
        funcs.setdefault(name, (func, () if extra is None else (extra[0],)))
        init(self, score_blocks, group_blocks, func, name, extra)

    s10, g10 = np.concatenate([d[0] for d in data[:2]] * 5), np.concatenate(
        [d[1] for d in data[:2]] * 5)
    _blocks.Pass.__init__ = record
    try:
        with dask.config.set(scheduler="synchronous"):
            ds, dg = da.from_array(s10, chunks=rows), da.from_array(g10, chunks=rows)
            res = project(ds, dg, tolerance=TOLERANCE)
            dec = parity_decisions(ds, dg, tolerance=TOLERANCE)
            dask.compute(res.proba.sum(), dec.decisions.sum())
    finally:
        _blocks.Pass.__init__ = init

    def best(fn):
        times = []
        for i in range(repeats):
            s, g = data[i % copies]
            t0 = time.perf_counter()
            fn(s, g)
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    out = [("sum (floor)", best(lambda s, g: s.sum()))]
    for name, (func, extra) in funcs.items():
        out.append((name.replace("skfairlayer-", ""),
                    best(lambda s, g, f=func, x=extra: f(s, g, *x))))
    return out


def _timed(fn, repeats):
    """Median time of ``repeats`` calls, the last result, and the driver's peak Python
    allocations in one more call (``tracemalloc`` slows Python code: not while timing)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return float(np.median(times)), out, peak


def _round_robin(fns, repeats):
    """Median time of each of ``fns`` (a dict), called in turn ``repeats`` times (a slow
    spell of the machine then slows every row alike, the floor included)."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def _peak(fn):
    """The driver's peak Python allocations (``tracemalloc``) during one call of ``fn``."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _load():
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=1e8)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="the default projection only (no verify='eager' rows, no decisions)")
    parser.add_argument("--estimator", action="store_true",
                        help="time the estimator front end instead (see the module docstring)")
    parser.add_argument("--classes", type=int, default=2,
                        help="K >= 3: time the multiclass projection (see the module docstring)")
    parser.add_argument("--blocks", action="store_true",
                        help="time the per-block numpy functions (see the module docstring)")
    args = parser.parse_args()
    if args.blocks:
        print(f"per 1e6-row block, minimum of 32 calls; load average {_load()}\n")
        print("| pass | ms | / sum |\n|---|---|---|")
        rows = _block_rows()
        for name, ms in rows:
            print(f"| {name} | {ms:.2f} | {ms / rows[0][1]:.1f} |")
        return
    n = int(args.rows)
    chunk = -(-n // args.chunks)
    if args.classes > 2:
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            floor, rows, res = _multiclass_rows(client, n, chunk, args.chunks, args.classes,
                                                args.repeats)
        print(f"n = {n:.0e} rows x {args.classes} classes, {args.chunks} chunks, "
              f"{args.workers} worker processes; gap {res.gap:.4g} (tolerance {TOLERANCE}); "
              f"{res.info['iterations']} iterations of the dual method; "
              f"load average {_load()}\n")
        _table(rows, floor)
        return
    if args.estimator:
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            floor, rows = _estimator_rows(client, n, chunk, args.repeats)
        print(f"n = {n:.0e} rows, {args.chunks} chunks, {args.workers} worker processes; "
              f"load average {_load()}\n")
        _table(rows, floor)
        return
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        scores, groups = _data(n, chunk)
        scores, groups = client.persist([scores, groups])
        wait([scores, groups])
        _warm_up(scores, groups)
        rss0 = _rss_mb()
        held = {}

        def solve():
            held["res"] = project(scores, groups, tolerance=TOLERANCE)
            return held["res"]

        timed = _round_robin({
            "sum": lambda: scores.sum().compute(),
            "both": lambda: (scores * groups).sum().compute(),
            "clip": lambda: da.map_blocks(_clip, scores, groups, dtype=float).sum().compute(),
            "solve": solve,
            "out": lambda: held["res"].proba.sum().compute(),
        }, args.repeats)
        floor, solve_t, out_t = timed["sum"], timed["solve"], timed["out"]
        res = held["res"]
        peak, peak_out = _peak(solve), _peak(lambda: res.proba.sum().compute())
        rows = [("floor: scores.sum()", floor, 1, 0),
                ("floor: (scores * groups).sum()", timed["both"], 1, 0),
                ("floor: map_blocks(clip(s - 0.01 g)).sum()", timed["clip"], 1, 0),
                ("floor: both bare passes (the two rows above added)",
                 timed["both"] + timed["clip"], 2, 0)]
        gap = res.gap
        passes = f"{res.passes} + {res.info['sampled_blocks'] or 0}/{args.chunks}"
        rows += [("project (solve: start + bracket)", solve_t, passes, peak),
                 ("project (output, checked per partition)", out_t, 1, peak_out),
                 ("project (total)", solve_t + out_t, f"{res.passes + 1} + "
                  f"{res.info['sampled_blocks'] or 0}/{args.chunks}", max(peak, peak_out))]
        if not args.quick:
            esolve, eres, epeak = _timed(
                lambda: project(scores, groups, tolerance=TOLERANCE, verify="eager"),
                args.repeats)
            eout, _, _ = _timed(lambda: eres.proba.sum().compute(), args.repeats)
            rows += [('project, verify="eager" (total: + a verification pass)', esolve + eout,
                      eres.passes + 2, epeak)]
        tasks = _tasks(res.proba, scores, groups)

        dec = None
        if not args.quick:
            dsolve, dec, dpeak = _timed(
                lambda: parity_decisions(scores, groups, tolerance=TOLERANCE), args.repeats)
            dout, _, dpeak_out = _timed(lambda: dec.decisions.sum().compute(), args.repeats)
            rows += [("decisions (solve)", dsolve, dec.passes, dpeak),
                     ("decisions (output + verification)", dout, 1, dpeak_out),
                     ("decisions (total)", dsolve + dout, dec.passes + 1,
                      max(dpeak, dpeak_out))]
        rss = _rss_mb() - rss0

    print(f"n = {n:.0e} rows, {args.chunks} chunks, {args.workers} worker processes; "
          f"gap {gap:.4g} (tolerance {TOLERANCE}); decisions gap "
          f"{dec.gap if dec else float('nan'):.4g}; "
          f"uncertain rows per bracket pass {res.info['uncertain_rows']}; output graph "
          f"{tasks} tasks over the data's; "
          f"driver RSS growth over the run {rss:.0f} MB; load average {_load()}\n")
    _table(rows, floor)


def _table(rows, floor):
    print("| step | seconds | / floor | passes | driver peak (tracemalloc) |")
    print("|---|---|---|---|---|")
    for name, t, passes, mem in rows:
        print(f"| {name} | {t:.3f} | {t / floor:.1f} | {passes} | {mem / 2**20:.1f} MB |")


if __name__ == "__main__":
    main()
