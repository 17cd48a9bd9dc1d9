"""The exact global projection of a Dask collection of class scores (multiclass parity).

The optimum is ``P_i = proj_simplex(S_i - nu_{g_i} / n_{g_i})``, one shift
vector per group, and the core's dual method
(:func:`~skfairlayer._solvers._simplex.solve_rows`) reads the rows only
through per-group sums. Here a *rows* object evaluates those sums with one
pass over the collection per dual evaluation; the driver loop, Newton steps
and exact polish are the core's (user guide, "Beyond one machine"):

1. *Start* (``SAMPLE_BLOCKS`` partitions): labels and a stratified sample of
   each group, solved in memory by the core; its shifts start the solve.
2. *Evaluations* (one pass each, usually 3 to 5): the first also counts the
   groups (and, on a label the start did not see, is repeated with every
   label); each returns per group the sums of the projected outputs, the
   dual value and the support curvatures the Newton steps need.
3. *Output* (lazy): ``proj_simplex(S - L_g)`` at the certified shifts, each
   partition checked against its sums recorded by the certifying evaluation
   (whose totals the driver checks for parity) before it is released.
"""

from functools import partial

import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from .._criteria import build_problem
from .._projection import VERIFY_TOL
from .._solvers import _simplex
from .._validation import check_tolerance
from ..exceptions import SolverError
from . import _simplex_passes as passes
from ._blocks import Pass, aligned_blocks, compute, global_labels
from ._project import _VERIFY, BLOCK_SUMS, _LazyResult, _picks, _release

#: Rows of each group the start samples (spread over the partitions it reads).
START_ROWS = 1 << 14
#: Sampled rows per partition and group never go below this.
_MIN_TARGET = 64
#: Evaluations repeated because they found labels the start had not seen.
_RELABELS = 3
#: Most passes the dual method may make before the solve gives up (SolverError).
MAX_PASSES = 100


class _OutOfPasses(Exception):
    """The dual method used ``MAX_PASSES`` passes without converging."""


class DaskMulticlassResult(_LazyResult):
    """Outcome of :func:`skfairlayer.dask.project` on class scores of shape (n, n_classes).

    Attributes
    ----------
    proba : dask.array.Array of shape (n_samples, n_classes)
        The projected class probabilities, lazy; rows on the simplex. Each block
        is verified by the task that computes it (``verify="blocks"``), or the
        whole output before ``project`` returns (``"eager"``) or before its
        blocks are released (``"fused"``).
    shifts : ndarray of shape (n_groups, n_classes)
        ``proba[i] = proj_simplex(scores[i] - shifts[group[i]])``.
    duals : ndarray of shape (n_groups, n_classes)
        The multipliers ``nu_g = n_g * shifts_g`` (each column sums to 0).
    levels : ndarray of shape (n_classes,)
        Lower end ``t_c`` of the band ``[t_c, t_c + tolerance]`` of the group
        means of class ``c``.
    groups : ndarray of shape (n_groups,)
        Group labels, sorted as :func:`skfairlayer.project` sorts them.
    sizes : ndarray of shape (n_groups,)
        Rows per group.
    passes : int
        Passes over the whole collection the solve made: one per evaluation of
        the dual (usually 3 to 5: the start's shifts, the exact solution on the
        active pattern read off there, a round more when row supports move;
        at most ``MAX_PASSES``), plus one when the start read
        every partition (the start's partitions, the verification pass of
        ``verify="eager"`` and the output pass not included).
    info : dict
        ``sampled_blocks`` (partitions the start read; None: all),
        ``relabel_passes`` (evaluations that found labels the start had not
        seen), ``iterations`` (of the dual method), ``verify`` (the mode used).
    verification : Delayed
        Computes the per-group means of ``proba`` over the whole collection (an
        output pass) and raises :class:`~skfairlayer.exceptions.SolverError`
        unless they meet the tolerance (to ``VERIFY_TOL``) and every row is on
        the simplex; returns the gap.
    gap : float or None
        Largest gap, over the classes, of the verified group means: of the
        certified sums every output block is checked against (``"blocks"``), of
        the output (``"eager"``); None with ``"fused"``.
    """

    def __init__(self, proba, solution, verification, gap=None):
        super().__init__(proba, solution, verification, gap)
        self.levels = solution["t"]

    def __repr__(self):
        return (
            f"DaskMulticlassResult(n_groups={len(self.groups)}, "
            f"n_classes={self.shifts.shape[1]}, passes={self.passes}, gap={self.gap!r})"
        )


def as_row_blocks(scores, sensitive_features):
    """Aligned delayed blocks of 2-D class scores (one column block) and of the groups."""
    if scores.numblocks[1] > 1:
        scores = scores.rechunk({1: -1})
    chunks = tuple(scores.chunks[0])
    score_blocks = list(scores.to_delayed()[:, 0])
    return score_blocks, aligned_blocks(sensitive_features, chunks, "scores"), chunks


# ------------------------------------------------------------------ the start


def _relabelled(keys, S, g):
    """Sorted labels, their lookup, and the sample's codes in that order."""
    labels = global_labels(keys)
    lookup = {key: j for j, key in enumerate(labels.tolist())}
    where = np.fromiter((lookup[key] for key in keys), dtype=np.intp, count=len(keys))
    return labels, lookup, {"S": S, "g": where[g] if where.size else g}


def _start(score_blocks, group_blocks, chunks, n_classes):
    """Labels and a stratified sample from ``SAMPLE_BLOCKS`` partitions; whether that read
    every partition (a full pass) and how many it read."""
    picks, n_candidates = _picks(chunks)
    if not picks:
        raise ValueError("scores is empty: at least one sample is required.")
    target = max(_MIN_TARGET, -(-START_ROWS // len(picks)))
    func = partial(passes.block_start, n_classes=n_classes, target=target)
    pas = Pass([score_blocks[i] for i in picks], [group_blocks[i] for i in picks], func,
               "skfairlayer-simplex-start")
    (stats,) = compute(pas.delayed(pas.reduce(pas.keys, passes.merge_start)))
    labels, lookup, sample = _relabelled(stats["keys"], stats["S"], stats["g"])
    full = len(picks) == n_candidates
    return labels, lookup, sample, full, None if full else len(picks)


def _start_shifts(sample, k, tolerance):
    """Shifts ``(k, K)`` solving the sample in memory (the core), or zeros."""
    S, g = sample["S"], sample["g"]
    counts = np.bincount(g, minlength=k).astype(np.float64)
    zeros = np.zeros((k, S.shape[1]))
    if k < 2 or counts.min() == 0:
        return zeros
    problem = build_problem("demographic_parity", S, [(g, k)], tolerance)
    if not _simplex.supports(problem):
        return zeros
    solution = _simplex.solve_simplex(problem)
    if solution is None:
        return zeros
    return np.column_stack(solution.duals) / counts[:, None]


def _merge_new(lookup, sample, new):
    """All labels after an evaluation found some the start had not seen; the sample grows
    by the new partitions' rows of the new groups."""
    stats = passes.merge_start(new)
    old_keys = list(lookup)
    fresh = [key for key in stats["keys"] if key not in lookup]
    keys = old_keys + fresh
    position = {key: j for j, key in enumerate(keys)}
    local = np.fromiter((position[key] for key in stats["keys"]), dtype=np.intp,
                        count=len(stats["keys"]))
    g_new = local[stats["g"]] if local.size else stats["g"]
    take = g_new >= len(old_keys)
    S = np.concatenate([sample["S"], stats["S"][take]])
    g = np.concatenate([sample["g"], g_new[take]])  # old codes index old_keys
    return _relabelled(keys, S, g)


# ------------------------------------------------------------------ the evaluations


def _evaluate(score_blocks, group_blocks, lookup, Lt, n_classes, keep, discover):
    """One pass: the merged :func:`~._simplex_passes.block_primal` results."""
    n_blocks = len(score_blocks)
    target = max(_MIN_TARGET, -(-START_ROWS // max(n_blocks, 1)))
    func = partial(passes.block_primal, lookup=lookup, Lt=Lt, cols=np.arange(n_classes),
                   n_classes=n_classes, keep=keep, discover=discover, target=target)
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-simplex-eval",
               extra=range(n_blocks))
    (agg,) = compute(pas.delayed(pas.reduce(pas.keys, passes.merge_primal)))
    return agg


class _DaskRows:
    """The rows object of the core's dual method over a Dask collection (one pass per
    ``primal``); the first evaluation, made by the counting pass, is served from ``seed``."""

    def __init__(self, score_blocks, group_blocks, lookup, sizes, tolerance, n_classes, keep):
        self.blocks = (score_blocks, group_blocks)
        self.lookup, self.n_classes = lookup, n_classes
        self.k = sizes.size
        self.sizes = sizes
        self.cols = np.arange(n_classes)
        self.eps = np.full(n_classes, tolerance)
        self.keep = _keeps_sums(keep, len(score_blocks), self.k, n_classes)
        self.passes = 0
        self.seed = None

    def _result(self, agg, Lt):
        state = {"Lt": Lt, "H": agg["H"], "blocks": agg["blocks"] if self.keep else None}
        return state, agg["sums"] / self.sizes[:, None], -agg["half"]

    def start(self, nu, agg, Lt):
        """Serve ``primal(nu)`` from the counting pass (evaluated at the shifts ``Lt``)."""
        self.seed = (nu, self._result(agg, Lt))

    def primal(self, nu):
        """Outputs' state (shifts, curvatures, per-partition sums), group means, and f."""
        if self.seed is not None and np.array_equal(nu, self.seed[0]):
            return self.seed[1]
        if self.passes >= MAX_PASSES:
            raise _OutOfPasses
        Lt = np.ascontiguousarray((nu / self.sizes[:, None]).T)  # as the in-memory rows
        agg = _evaluate(*self.blocks, self.lookup, Lt, self.n_classes, self.keep, False)
        self.passes += 1
        if not np.array_equal(agg["counts"], self.sizes):
            raise SolverError(
                "The rows per group changed between passes over the collection: the data "
                "changed. Persist the collection (or make it deterministic) and project again."
            )
        return self._result(agg, Lt)

    def curvatures(self, state):
        """Per group, the support curvature ``H_g`` at the outputs ``state``."""
        return state["H"]


def solve(score_blocks, group_blocks, n_classes, tolerance, keep=False, check_labels=None,
          chunks=None):
    """The global solution (shifts, multipliers, levels, labels, sizes, passes) and lookup.

    ``keep``: the certifying evaluation's per-partition sums are returned as
    ``solution["blocks"]`` when there are at most ``BLOCK_SUMS`` (partition, group,
    class) triples (else None).
    """
    chunks = (np.nan,) * len(score_blocks) if chunks is None else tuple(chunks)
    labels, lookup, sample, full, sampled = _start(score_blocks, group_blocks, chunks,
                                                   n_classes)
    if check_labels is not None:
        check_labels(labels)
    n_passes, relabels = int(full), 0
    for _ in range(_RELABELS + 1):
        shifts = _start_shifts(sample, len(lookup), tolerance)
        Lt = np.ascontiguousarray(shifts.T)
        agg = _evaluate(score_blocks, group_blocks, lookup, Lt, n_classes,
                        _keeps_sums(keep, len(score_blocks), len(lookup), n_classes), True)
        n_passes += 1
        if not agg["new"]:
            break
        labels, lookup, sample = _merge_new(lookup, sample, agg["new"])
        relabels += 1
        if check_labels is not None:
            check_labels(labels)
    else:
        raise SolverError("Every pass over the collection found group labels the previous one "
                          "had not: the data changed. Persist the collection and project again.")
    sizes = agg["counts"]
    if sizes.sum() == 0:
        raise ValueError("scores is empty: at least one sample is required.")
    _check_size(sizes.size, n_classes)
    rows = _DaskRows(score_blocks, group_blocks, lookup, sizes, tolerance, n_classes, keep)
    nu0 = shifts * sizes[:, None]
    rows.start(nu0, agg, Lt)
    # The dense systems are small: threaded BLAS only adds contention.
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            found = _simplex.solve_rows(rows, nu0)
    except _OutOfPasses:
        found = None
    if found is None:
        raise SolverError(
            "The global multiclass solver did not reach a band residual of 1e-13 within its "
            f"iteration budget or {MAX_PASSES} passes over the collection (group sizes from "
            f"{int(sizes.min())} to {int(sizes.max())} rows: very unequal groups slow the dual "
            "method). Merge the smallest groups, or project in memory with skfairlayer.project "
            "(which falls back to OSQP)."
        )
    state, nu, levels, n_iter = found
    info = {"sampled_blocks": sampled, "relabel_passes": relabels, "iterations": n_iter}
    return {"shifts": state["Lt"].T.copy(), "Lt": state["Lt"], "nu": nu,
            "t": np.asarray(levels, dtype=np.float64), "groups": labels, "sizes": sizes,
            "passes": n_passes + rows.passes, "info": info, "blocks": state["blocks"]}, lookup


def _keeps_sums(keep, n_blocks, k, n_classes):
    """Whether an evaluation records its per-partition sums: asked for, and at most
    ``BLOCK_SUMS`` (partition, group, class) triples."""
    return keep and n_blocks * k * n_classes <= BLOCK_SUMS


def _check_size(k, n_classes):
    limit = _simplex._MAX_UNKNOWNS
    if k * (n_classes + 1) > limit:
        raise NotImplementedError(
            f"{k} groups x {n_classes} classes make the dense Newton systems of the multiclass "
            f"solver too large (groups x (classes + 1) must be at most {limit}). Merge rare "
            "groups, or project in memory with skfairlayer.project (which uses OSQP)."
        )


# ------------------------------------------------------------------ outputs and checks


def predicted_sums(blocks, n_blocks, k, n_classes):
    """Per partition, the certified per-group column sums ``(n_blocks, k, C)`` and rows
    per group ``(n_blocks, k)``, as recorded by the certifying evaluation."""
    sums, counts = np.zeros((n_blocks, k, n_classes)), np.zeros((n_blocks, k))
    for index, s, c in blocks:
        sums[index], counts[index] = s, c
    return sums, counts


def _means_gap(sums, sizes, tolerance, limit, what):
    """Largest gap over the classes of the group means; raise if it exceeds the tolerance
    by more than ``limit``."""
    means = sums / sizes[:, None]
    gap = float(np.max(means.max(axis=0) - means.min(axis=0))) if sizes.size else 0.0
    if not gap - tolerance <= limit:
        raise SolverError(
            f"The global multiclass solver returned outputs that violate parity by "
            f"{gap - tolerance:.3g} (> {limit:g}) on the whole collection ({what}). This is a "
            "bug or a numerically hard instance; please report it with the data that "
            "triggers it."
        )
    return gap


def _check_predicted(pred, sizes, tolerance):
    """Raise unless the certified sums add up to the group sizes and meet the tolerance to
    half ``VERIFY_TOL`` (the partitions' own check allows the other half); their gap."""
    sums, counts = pred
    if not np.array_equal(counts.sum(axis=0), sizes):
        raise SolverError("The certifying pass's per-partition counts do not add up to the "
                          "group sizes; this is a bug, please report it.")
    return _means_gap(sums.sum(axis=0), sizes, tolerance, VERIFY_TOL / 2, "predicted sums")


def _check_output(stats, sizes, tolerance):
    """Raise unless every output row is on the simplex and the group means meet parity."""
    passes.check_simplex(stats, "on the collection")
    if not np.array_equal(stats["counts"], sizes):
        raise SolverError("The output pass's rows per group differ from the solve's: the data "
                          "changed. Persist the collection and project again.")
    return _means_gap(stats["sums"], sizes, tolerance, VERIFY_TOL, "output")


def outputs(score_blocks, group_blocks, chunks, lookup, Lt, sizes, tolerance, verify):
    """The lazy output array and the delayed verification of the whole collection."""
    n_classes = Lt.shape[0]
    func = partial(passes.block_output, lookup=lookup, Lt=Lt, cols=np.arange(n_classes),
                   n_classes=n_classes)
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-simplex-output")
    stats = pas.reduce(pas.item(pas.keys, 1), passes.merge_output_stats)
    check_key = pas.task(partial(_check_output, sizes=sizes, tolerance=tolerance), stats)
    gap = None
    if verify == "eager":
        (gap,) = compute(pas.delayed(check_key))
        blocks = pas.item(pas.keys, 0)
    else:
        blocks = [pas.task(_release, key, check_key) for key in pas.keys]
    proba = pas.array(blocks, chunks, np.float64, columns=n_classes)
    return proba, pas.delayed(check_key), gap


def _verification(*args):
    """The delayed check of the outputs recomputed over the whole collection."""
    return outputs(*args, "fused")[1]


def checked_outputs(score_blocks, group_blocks, chunks, lookup, Lt, pred):
    """The lazy output array, each partition checked against its certified sums."""
    n_classes = Lt.shape[0]
    func = partial(passes.block_output_checked, lookup=lookup, Lt=Lt,
                   cols=np.arange(n_classes), n_classes=n_classes, slack=VERIFY_TOL / 4)
    sums, counts = pred
    extra = list(np.concatenate([sums, counts[:, :, None]], axis=2))  # (k, C + 1) each
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-simplex-output", extra=extra)
    return pas.array(pas.keys, chunks, np.float64, columns=n_classes)


def project_blocks(score_blocks, group_blocks, chunks, n_classes, tolerance, verify="blocks",
                   check_labels=None):
    """:func:`project` on aligned delayed blocks (class scores, raw groups).

    ``check_labels(labels)``, if given, runs on the group labels as soon as they are known.
    """
    if verify not in _VERIFY:
        raise ValueError(f"verify must be one of {_VERIFY}. Got {verify!r} instead.")
    tolerance = check_tolerance(tolerance)
    keep = verify == "blocks"
    solution, lookup = solve(score_blocks, group_blocks, n_classes, tolerance, keep=keep,
                             check_labels=check_labels, chunks=chunks)
    if keep and solution["blocks"] is None:  # too many sums to hold on the driver
        verify = "eager"
    solution["info"]["verify"] = verify
    Lt, sizes = solution["Lt"], solution["sizes"]
    verification = partial(_verification, score_blocks, group_blocks, chunks, lookup, Lt,
                           sizes, tolerance)
    if verify != "blocks":
        proba, check, gap = outputs(score_blocks, group_blocks, chunks, lookup, Lt, sizes,
                                    tolerance, verify)
        return DaskMulticlassResult(proba, solution, check, gap)
    pred = predicted_sums(solution["blocks"], len(score_blocks), sizes.size, n_classes)
    gap = _check_predicted(pred, sizes, tolerance)
    proba = checked_outputs(score_blocks, group_blocks, chunks, lookup, Lt, pred)
    return DaskMulticlassResult(proba, solution, verification, gap)


def project(scores, sensitive_features, *, tolerance=0.01, verify="blocks"):
    """The global multiclass projection of a 2-D Dask array (see :func:`skfairlayer.dask.project`)."""
    if not isinstance(scores, da.Array) or scores.ndim != 2:
        raise TypeError("scores must be a 2-D Dask array of class scores. "
                        f"Got {type(scores).__name__} instead.")
    score_blocks, group_blocks, chunks = as_row_blocks(scores, sensitive_features)
    return project_blocks(score_blocks, group_blocks, chunks, scores.shape[1], tolerance,
                          verify)
