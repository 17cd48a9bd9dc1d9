"""The exact global projection of a Dask collection of scores (binary demographic parity).

(2-D class scores go to :mod:`skfairlayer.dask._simplex`, the multiclass solve.)

The optimum is ``p_i = clip(s_i - c_{g_i}, lb, ub)``, one shift per group, and
every step of the core's exact solver needs only per-group aggregates (user
guide, "Beyond one machine"). The driver holds ``O(k)`` numbers plus a bounded
set of rows:

1. *Start* (``SAMPLE_BLOCKS`` partitions): group labels, sizes, score sums and
   a stratified sample of each group, scaled to the collection, solved by the
   core (:func:`~skfairlayer._solvers._reduced._solve_model`): a centre and a
   bracket per group.
2. *Bracket* (one pass, repeated only on a miss or a new label): exact group
   sizes and sums; rows free, at the top or at the bottom for every shift of the
   bracket are aggregated, the others returned. When they fit the row budget the
   reduced model is exact and the core's Newton certifies the optimum
   (multipliers inside the bracket); otherwise a sample of them narrows the
   bracket and the pass runs again. A partition holding a label the start did
   not see returns its statistics instead, and the round is repeated with every
   label.
3. *Output* (lazy): ``clip(s - c_g, lb, ub)``, each partition checked against
   its output sums predicted from the certifying pass (whose total the driver
   checks for parity) before it is released.
"""

from functools import partial

import numpy as np

from .._projection import VERIFY_TOL
from .._solvers._reduced import _Model, _shrunk, _solve_model
from .._validation import check_tolerance
from ..exceptions import SolverError
from . import _passes
from ._blocks import Pass, as_blocks, compute, global_labels
from ._open_ends import OpenEnds, scalar_bounds

#: Rows of each group the first pass samples (spread over the partitions).
SAMPLE_ROWS = 1 << 15
#: Most uncertain rows the driver takes in one bracket pass.
MAX_ROWS = 1 << 19
#: Sampled rows per partition and group never go below this.
_MIN_TARGET = 64
#: Partitions the sampled start reads (evenly spread over the non-empty ones).
SAMPLE_BLOCKS = 8
#: Most (partition, group) pairs whose predicted output sums the driver holds for
#: ``verify="blocks"``; beyond, the verification is a separate pass (``"eager"``).
BLOCK_SUMS = 1 << 20
#: Half-width of a bracket in standard errors; bracket passes before giving up.
_Z = 6.0
_ROUNDS = 8


class _LazyResult:
    """What the binary and the multiclass Dask results share: the lazy outputs, the
    driver's solution and the verification (built on first use)."""

    def __init__(self, proba, solution, verification, gap=None):
        self.proba = proba
        self.shifts = solution["shifts"]
        self.duals = solution["nu"]
        self.groups = solution["groups"]
        self.sizes = solution["sizes"]
        self.passes = solution["passes"]
        self.info = solution["info"]
        self._verification = verification
        self.gap = gap

    @property
    def verification(self):
        """Delayed: the per-group means of ``proba`` recomputed over the whole collection
        (an output pass), checked; returns their gap."""
        if isinstance(self._verification, partial):  # built on first use
            self._verification = self._verification()
        return self._verification


class DaskProjectionResult(_LazyResult):
    """Outcome of :func:`skfairlayer.dask.project`.

    Attributes
    ----------
    proba : dask.array.Array of shape (n_samples,)
        The projected scores, lazy; each block verified by the task that computes
        it (``verify="blocks"``), or the whole output verified before ``project``
        returns (``"eager"``) or before its blocks are released (``"fused"``).
    shifts : ndarray of shape (n_groups,)
        ``proba = clip(scores - shifts[group], lb, ub)``.
    duals : ndarray of shape (n_groups,)
        The multipliers ``nu_g = n_g * shift_g`` (sum to 0).
    level : float
        Lower end ``t`` of the band ``[t, t + tolerance]`` of the group means.
    groups : ndarray of shape (n_groups,)
        Group labels, sorted as :func:`skfairlayer.project` sorts them.
    sizes : ndarray of shape (n_groups,)
        Rows per group.
    passes : int
        Passes over the whole collection the solve made (bracket passes, a
        statistics pass when the start read every partition, a range pass; the start's
        partitions, the verification pass of ``verify="eager"`` and the output
        pass not included).
    info : dict
        ``sampled_blocks`` (partitions the start read; None: all),
        ``statistics_pass``, ``relabel_passes`` (bracket passes that found labels
        the start had not seen), ``uncertain_rows`` (rows returned by each
        bracket pass), ``range_pass`` (a pass read the scores' range: an open
        bound's stand-in from the start was too near), ``rounds``, ``verify``
        (the mode used).
    verification : Delayed
        Computes the per-group means of ``proba`` over the whole collection (an
        output pass) and raises :class:`~skfairlayer.exceptions.SolverError`
        unless they meet the tolerance (to ``VERIFY_TOL``) and the bounds;
        returns the gap.
    gap : float or None
        Verified gap of the group means: of the certified sums that every output
        block is checked against (``"blocks"``), of the output (``"eager"``);
        None with ``"fused"`` (computing ``verification`` returns it).
    """

    def __init__(self, proba, solution, verification, gap=None):
        super().__init__(proba, solution, verification, gap)
        self.level = solution["t"]

    def __repr__(self):
        return (
            f"DaskProjectionResult(n_groups={len(self.groups)}, passes={self.passes}, "
            f"gap={self.gap!r})"
        )


def _targets(n_blocks, rows):
    return max(_MIN_TARGET, -(-rows // max(n_blocks, 1)))


def _statistics(score_blocks, group_blocks):
    """Labels, sizes, sums and a stratified sample of the given partitions."""
    target = _targets(len(score_blocks), SAMPLE_ROWS)
    pas = Pass(score_blocks, group_blocks, partial(_passes.block_stats, target=target),
               "skfairlayer-stats")
    (stats,) = compute(pas.delayed(pas.reduce(pas.keys, _passes.merge_stats)))
    labels = global_labels(stats["keys"])
    position = {key: j for j, key in enumerate(stats["keys"])}
    perm = np.array([position[key] for key in labels.tolist()], dtype=np.intp)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(perm.size)
    stats["counts"], stats["sums"] = stats["counts"][perm], stats["sums"][perm]
    stats["g"] = inverse[stats["g"]] if perm.size else stats["g"]
    lookup = {key: j for j, key in enumerate(labels.tolist())}
    return labels, lookup, stats


def _picks(chunks):
    """The partitions the sampled start reads, and how many are not known to be empty."""
    candidates = [i for i, c in enumerate(chunks) if c != 0]  # NaN: unknown, kept
    m = min(SAMPLE_BLOCKS, len(candidates))
    at = np.unique(np.round(np.linspace(0, len(candidates) - 1, m)).astype(np.intp))
    return [candidates[j] for j in at], len(candidates)


def _start_error(stats, scale):
    """Standard error of each group's mean score read from a fraction ``1 / scale`` of
    the collection, as if its rows were drawn at random (a biased start costs a miss)."""
    k, g, w, s = stats["counts"].size, stats["g"], stats["w"], stats["s"]
    wsum = np.maximum(np.bincount(g, weights=w, minlength=k), 1e-300)
    mean = np.bincount(g, weights=w * s, minlength=k) / wsum
    var = np.bincount(g, weights=w * (s - mean[g]) ** 2, minlength=k) / wsum
    fpc = max(0.0, 1.0 - 1.0 / scale) if scale > 0 else 1.0
    return np.sqrt(var * fpc / np.maximum(stats["counts"], 1))


def _start(score_blocks, group_blocks, chunks):
    """Labels, sizes, sums and a stratified sample from a few partitions (scaled to the
    whole collection), and how many partitions were read (None: all, a full pass).

    Fewer than two labels seen: every partition is read (the statistics pass).
    """
    picks, n_candidates = _picks(chunks)
    if not picks:
        raise ValueError("scores is empty: at least one sample is required.")
    full = len(picks) == n_candidates
    if not full:
        labels, lookup, stats = _statistics([score_blocks[i] for i in picks],
                                            [group_blocks[i] for i in picks])
        if labels.size >= 2:
            known = not np.isnan(np.sum(chunks))
            scale = (np.sum(chunks) / max(stats["rows"], 1) if known
                     else len(chunks) / len(picks))
            stats["se0"] = _start_error(stats, scale)
            for key in ("counts", "sums", "w"):
                stats[key] = stats[key] * scale
            return labels, lookup, stats, len(picks)
    labels, lookup, stats = _statistics(score_blocks, group_blocks)
    return labels, lookup, stats, None


def _relabel(lookup, stats, agg):
    """All labels, exact sizes and sums, and a start sample, after a bracket pass that
    found labels the sampled start had not seen (``agg["new"]``: the statistics of the
    partitions holding them, so every row of those groups was counted)."""
    new = _passes.merge_stats(agg["new"])
    old_keys = list(lookup)
    labels = global_labels(old_keys + [key for key in new["keys"] if key not in lookup])
    keys = labels.tolist()
    lookup = {key: j for j, key in enumerate(keys)}
    k = len(keys)
    old_at = np.array([lookup[key] for key in old_keys], dtype=np.intp)
    new_at = np.array([lookup[key] for key in new["keys"]], dtype=np.intp)
    counts, sums = np.zeros(k), np.zeros(k)
    counts[old_at] += agg["counts"]
    sums[old_at] += agg["sums"]
    counts[new_at] += new["counts"]
    sums[new_at] += new["sums"]
    # the start's rows for the groups it saw (weights scaled to the exact sizes), the
    # new partitions' rows for the others
    g_old = old_at[stats["g"]]
    seen = np.bincount(g_old, weights=stats["w"], minlength=k)
    w_old = stats["w"] * (counts / np.maximum(seen, 1e-300))[g_old]
    g_new = new_at[new["g"]] if new_at.size else new["g"]
    fresh = ~np.isin(g_new, old_at)
    sample = {"s": np.concatenate([stats["s"], new["s"][fresh]]),
              "g": np.concatenate([g_old, g_new[fresh]]),
              "w": np.concatenate([w_old, new["w"][fresh]]),
              "h": np.concatenate([stats["h"], new["h"][fresh] + stats["n_strata"]]),
              "n_strata": stats["n_strata"] + new["n_strata"], "counts": counts, "sums": sums}
    return labels, lookup, sample


def _model(sizes, agg, lb, ub, eps):
    """The (exact or sampled) model in multiplier space from aggregates and rows.

    Rows certain on the bracket enter ``A``/``Q``; the returned rows (all the
    uncertain ones, or a stratified sample with expansion weights ``w``) enter
    as rows. With a sample, the exact sums of the uncertain rows are control
    variates: only the clamped part of the sampled rows is estimated.
    """
    n_g = np.maximum(sizes, 1)
    s, g, w = agg["s"], agg["g"], agg["w"]
    A = (agg["sfree"] + ub * (agg["ntop"] + agg["nunc"]) + lb * agg["nbot"]) / n_g
    est = np.bincount(g, weights=w * (s - ub), minlength=sizes.size)
    A = A + (agg["sunc"] - ub * agg["nunc"] - est) / n_g
    A = np.where(sizes > 0, A, 0.0)
    Q = agg["nfree"] / (n_g * n_g)
    nr = n_g[g]
    return _Model((s - ub) * nr, (s - lb) * nr, w / (nr * nr), g, A, Q, sizes > 0, eps)


def _spread(sizes, agg, shifts, lb, ub, previous):
    """Bracket half-widths (shift space): a few standard errors of a sampled estimate.

    ``previous``: the half-widths of the bracket the sampled rows were uncertain on.
    """
    k = sizes.size
    s, g, w, h = agg["s"], agg["g"], agg["w"], agg["h"]
    u = s - shifts[g]
    z = np.clip(u, lb, ub) - u  # non-zero on clamped rows only: the estimated part
    strata = agg["n_strata"]
    m = np.bincount(h, minlength=strata).astype(np.float64)
    big = np.bincount(h, weights=w, minlength=strata)  # rows of the stratum
    mean = np.bincount(h, weights=z, minlength=strata) / np.maximum(m, 1)
    dev = z - mean[h]
    var = np.bincount(h, weights=dev * dev, minlength=strata) / np.maximum(m - 1, 1)
    fpc = np.maximum(1.0 - m / np.maximum(big, 1), 0.0)
    contrib = big * big * fpc * var / np.maximum(m, 1)
    sg = np.bincount(h, minlength=strata)
    stratum_group = np.zeros(strata, dtype=np.intp)
    stratum_group[h] = g
    var_g = np.bincount(stratum_group[sg > 0], weights=contrib[sg > 0], minlength=k)
    n_g = np.maximum(sizes, 1)
    # plus, for a start read from a few partitions, the error of its group means
    se = np.sqrt(var_g / (n_g * n_g) + agg.get("se0", 0.0) ** 2)
    free = (u > lb) & (u < ub)
    slope = (agg["nfree"] + np.bincount(g, weights=w * free, minlength=k)) / n_g
    # Resolution of the sample when it saw no clamped row; groups without sampled
    # (uncertain) rows are exact and move only with the level.
    rows = np.bincount(g, minlength=k)
    span = np.minimum(ub - lb, 2.0 * previous)
    floor = np.where(rows > 0, span / (4.0 * np.maximum(rows, 1)), 1e-9 * (ub - lb))
    with np.errstate(divide="ignore", invalid="ignore"):  # slope 0: no bracket from it
        half = np.where(slope > 0, _Z * (se + se.max(initial=0.0)) / slope, np.inf)
    return np.minimum(np.maximum(half, floor), 2.0 * (ub - lb) + 1.0)


def _bracket_pass(score_blocks, group_blocks, lookup, center, hh, lb, ub, budget, keep):
    """One bracket pass (group sizes and sums included); the free rows' count and sum
    are the group totals less the other rows."""
    n_blocks = len(score_blocks)
    cap = max(_MIN_TARGET, budget // max(n_blocks, 1))
    target = _targets(n_blocks, SAMPLE_ROWS)
    func = partial(_passes.block_bracket, lookup=lookup, center=center, hh=hh, lb=lb, ub=ub,
                   cap=cap, target=target, keep=keep)
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-bracket", extra=range(n_blocks))
    (agg,) = compute(pas.delayed(pas.reduce(pas.keys, _passes.merge_bracket)))
    agg.update(zip(_passes.SUMMED, agg.pop("summed"), strict=True))
    runs = agg.pop("runs")
    agg["b"] = np.repeat(runs[:, 0], runs[:, 1])  # each row's partition
    if agg["w"] is None:  # every row returned whole (see merge_bracket)
        agg["w"], agg["h"] = np.ones(agg["s"].size), agg["g"].astype(np.intp)
    agg["nfree"] = agg["counts"] - agg["nout"] + agg["nfree_x"]
    agg["sfree"] = agg["sums"] - agg["sout"] + agg["sfree_x"]
    return agg


def _initial(sizes, stats):
    """Centre and half-widths from the pass-1 sample (every row uncertain, none aggregated)."""
    k = sizes.size
    zeros = np.zeros(k)
    agg = {"s": stats["s"], "g": stats["g"], "w": stats["w"], "h": stats["h"],
           "n_strata": stats["n_strata"], "sfree": zeros, "ntop": zeros, "nbot": zeros,
           "nfree": zeros, "nunc": sizes, "sunc": stats["sums"],
           "se0": stats.get("se0", 0.0)}
    return agg


#: Bracket half-width (shift space) after a sampled model with no solution: every row is
#: uncertain, and its products with group sizes stay finite.
_WIDEST = 1e200


def _estimate(sizes, agg, lb, ub, eps, start, previous):
    """Shifts solving the sampled model, and bracket half-widths around them.

    A sample can make a model with no solution where the collection has one (e.g. a
    few rows per group, every one at a bound, means further apart than the
    tolerance): then the bracket covers every shift around the start's shifts (zero
    at first), so that the next pass returns every row, or a sample of all of them.
    """
    model = _model(sizes, agg, lb, ub, eps)
    inf = np.full(sizes.size, np.inf)
    res = _solve_model(model, -inf, inf, 1, start)
    if not res.ok or res.nu is None:
        center = np.zeros(sizes.size) if start is None else start / np.maximum(sizes, 1)
        return center, np.full(sizes.size, _WIDEST)
    shifts = res.nu / np.maximum(sizes, 1)
    return shifts, _spread(sizes, agg, shifts, lb, ub, previous)


def _one_group(labels, sizes, passes, sampled):
    k = sizes.size
    return {"shifts": np.zeros(k), "nu": np.zeros(k), "t": 0.0, "groups": labels,
            "sizes": sizes, "passes": passes,
            "info": {"rounds": 0, "sampled_blocks": sampled, "statistics_pass": sampled is None,
                     "relabel_passes": 0, "uncertain_rows": [], "range_pass": False}}


def solve(score_blocks, group_blocks, tolerance, lb, ub, budget=None, check_labels=None,
          chunks=None, keep=False):
    """The global exact solution: shifts, multipliers, level, labels, sizes, passes.

    ``check_labels(labels)``, if given, runs on the labels of the start and again on
    any label a bracket pass finds. ``chunks``: rows per partition (NaN: unknown).
    ``keep``: the certifying bracket pass's per-partition aggregates are returned as
    ``solution["agg"]`` (see :func:`predicted_sums`) when there are at most
    ``BLOCK_SUMS`` (partition, group) pairs (else None), with ``solution["pass_bounds"]``,
    the bounds that pass used (open ends: their stand-ins).
    """
    budget = MAX_ROWS if budget is None else budget
    chunks = (np.nan,) * len(score_blocks) if chunks is None else tuple(chunks)
    labels, lookup, stats, sampled = _start(score_blocks, group_blocks, chunks)
    full = sampled is None
    passes, relabels = int(full), 0
    if check_labels is not None:
        check_labels(labels)
    sizes = stats["counts"]
    if full and sizes.sum() == 0:
        raise ValueError("scores is empty: at least one sample is required.")
    if sizes.size < 2:  # a single group: nothing to equalise
        return _one_group(labels, sizes, passes, sampled), lookup
    ends = OpenEnds(lb, ub, stats["s"], tolerance)  # open ends: finite stand-ins
    lb, ub = ends.work
    center, half = _estimate(sizes, _initial(sizes, stats), lb, ub,
                             tolerance, None, np.full(sizes.size, np.inf))
    uncertain = []
    for rounds in range(1, _ROUNDS + 2):  # noqa: B007 (one more round: new labels)
        last = rounds >= _ROUNDS
        hh = _shrunk(center, half, lb, ub)
        kept = keep and len(score_blocks) * len(lookup) <= BLOCK_SUMS
        agg = _bracket_pass(score_blocks, group_blocks, lookup, center, hh, lb, ub,
                            np.iinfo(np.int64).max if last else budget, kept)
        passes += 1
        if agg["new"]:  # labels the start had not seen: every label is known now
            labels, lookup, stats = _relabel(lookup, stats, agg)
            relabels += 1
            if check_labels is not None:
                check_labels(labels)
            sizes = stats["counts"]
            ends.resample(stats["s"])
            lb, ub = ends.work
            center, half = _estimate(sizes, _initial(sizes, stats), lb, ub,
                                     tolerance, None, np.full(sizes.size, np.inf))
            continue
        sizes = agg["counts"]
        n_g = np.maximum(sizes, 1)
        uncertain.append(int(agg["nunc"].sum()))
        start = center * n_g
        if not agg["exact"]:  # a sample of the uncertain rows: a narrower bracket
            new, spread = _estimate(sizes, agg, lb, ub, tolerance, start, half)
            step = np.abs(new - center)
            center, half = new, np.maximum(spread, np.minimum(half, 2 * step))
            continue
        model = _model(sizes, agg, lb, ub, tolerance)
        lo, hi = (center - hh) * n_g, (center + hh) * n_g
        res = _solve_model(model, lo, hi, 1, start)
        if res.ok and ends.moved(agg, np.where(sizes > 0, res.nu, 0.0) / n_g, score_blocks,
                                 group_blocks):  # the start's rows missed the scores' range
            lb, ub = ends.work
            continue
        if res.ok:
            break
        if res.est is None:
            half = 8 * half
        else:
            new = res.est / n_g
            half = np.maximum(2 * half, 0.25 * np.abs(new - center))
            center = new
    else:
        raise SolverError(
            f"The global exact solve did not certify an optimum in {_ROUNDS} bracket passes. "
            "This is a bug or a numerically hard instance; please report it."
        )
    nu = np.where(sizes > 0, res.nu, 0.0)
    shifts = nu / n_g
    info = {"rounds": rounds, "uncertain_rows": uncertain, "half_width": half,
            "sampled_blocks": sampled, "statistics_pass": full, "relabel_passes": relabels,
            "range_pass": ends.range_pass}
    return {"shifts": shifts, "nu": nu, "t": float(res.t), "groups": labels, "sizes": sizes,
            "passes": passes + ends.range_pass, "info": info, "agg": agg if kept else None,
            "pass_bounds": (lb, ub)}, lookup


def predicted_sums(agg, shifts, lb, ub, n_blocks):
    """Per partition and group, the sum of the outputs and the rows, shape ``(n_blocks, 2, k)``.

    From the certifying bracket pass: the shifts lie in its bracket, so a row free on it
    outputs ``s - shift``, one at the top ``ub``, one at the bottom ``lb``; the uncertain
    rows (all on the driver) are clipped here.
    """
    k = shifts.size
    pred = np.zeros((n_blocks, 2, k))
    index, sums = agg["blocks"]  # the partitions and their (5, k) aggregates
    nfree, sfree, ntop, nbot, counts = sums.transpose(1, 0, 2)
    pred[index, 0] = ub * ntop + lb * nbot + (sfree - shifts * nfree)
    pred[index, 1] = counts
    p = np.clip(agg["s"] - shifts[agg["g"]], lb, ub)
    pred[:, 0] += np.bincount(agg["b"] * k + agg["g"], weights=p,
                              minlength=n_blocks * k).reshape(n_blocks, k)
    return pred


def _check_predicted(pred, sizes, tolerance):
    """Raise unless the predicted group means meet the tolerance to half ``VERIFY_TOL`` (the
    partitions' own check allows the other half); returns their gap."""
    if not np.array_equal(pred[:, 1].sum(axis=0), sizes):
        raise SolverError("The bracket pass's per-partition counts do not add up to the group "
                          "sizes; this is a bug, please report it.")
    present = sizes > 0
    means = pred[:, 0].sum(axis=0)[present] / sizes[present]
    gap = float(means.max() - means.min()) if means.size else 0.0
    if not gap - tolerance <= VERIFY_TOL / 2:
        raise SolverError(
            f"The global exact solver returned outputs that violate parity by "
            f"{gap - tolerance:.3g} (> {VERIFY_TOL / 2:g}) on the whole collection. This is a "
            "bug or a numerically hard instance; please report it with the data that triggers it."
        )
    return gap


def _check_output(stats, sizes, tolerance, lb, ub):
    """Raise unless the output's group means meet the tolerance and the bounds hold."""
    lo, hi = stats["lo"], stats["hi"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise SolverError("The global exact solver returned non-finite outputs.")
    if lo < lb or hi > ub:
        raise SolverError(
            f"The global exact solver returned outputs outside the bounds by "
            f"{max(lb - lo, hi - ub):.3g}."
        )
    present = sizes > 0
    means = stats["sums"][present] / sizes[present]
    gap = float(means.max() - means.min()) if means.size else 0.0
    if not gap - tolerance <= VERIFY_TOL:  # NaN fails too
        raise SolverError(
            f"The global exact solver returned outputs that violate parity by "
            f"{gap - tolerance:.3g} (> {VERIFY_TOL:g}) on the whole collection. This is a bug "
            "or a numerically hard instance; please report it with the data that triggers it."
        )
    return gap


def _release(pair, gap):
    """The output block, once the verification (``gap``) has passed."""
    return pair[0]


def outputs(score_blocks, group_blocks, chunks, lookup, shifts, sizes, tolerance, lb, ub,
            verify):
    """The lazy output array and the delayed verification of the whole collection."""
    func = partial(_passes.block_output, lookup=lookup, shifts=shifts, lb=lb, ub=ub)
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-output")
    stats = pas.reduce(pas.item(pas.keys, 1), _passes.merge_output_stats)
    check_key = pas.task(partial(_check_output, sizes=sizes, tolerance=tolerance, lb=lb, ub=ub),
                         stats)
    gap = None
    if verify == "eager":
        (gap,) = compute(pas.delayed(check_key))
        blocks = pas.item(pas.keys, 0)
    else:
        blocks = [pas.task(_release, k, check_key) for k in pas.keys]
    proba = pas.array(blocks, chunks, np.float64)
    return proba, pas.delayed(check_key), gap


def _verification(*args):
    """The delayed check of the outputs recomputed over the whole collection."""
    return outputs(*args, "fused")[1]


def checked_outputs(score_blocks, group_blocks, chunks, lookup, shifts, pred, lb, ub):
    """The lazy output array, each partition checked against its predicted sums.

    ``pred``: :func:`predicted_sums` (checked on the driver), or None (one group: the
    bounds only). One task per partition, none waiting for another.
    """
    extra = [None] * len(score_blocks) if pred is None else list(pred)
    func = partial(_passes.block_output_checked, lookup=lookup, shifts=shifts, lb=lb, ub=ub,
                   slack=VERIFY_TOL / 4)
    pas = Pass(score_blocks, group_blocks, func, "skfairlayer-output", extra=extra)
    return pas.array(pas.keys, chunks, np.float64)


_VERIFY = ("blocks", "fused", "eager")


def project(scores, sensitive_features, *, tolerance=0.01, bounds=(0.0, 1.0),
            criterion="demographic_parity", verify="blocks"):
    """Project a Dask collection of scores onto demographic parity over the whole collection.

    The same optimum as :func:`skfairlayer.project` on the concatenated data
    (to rounding), computed from per-group aggregates. Binary scores (1-D): a
    start read from ``SAMPLE_BLOCKS`` partitions, one bracket pass (more only
    when the start missed a label, the uncertain rows exceed the driver's
    budget or a bracket misses), and the lazy output pass, verified partition
    by partition. Class scores (2-D, multiclass): the core's exact simplex
    solver driven from the driver, one pass per evaluation of its dual
    (usually 3 to 5: the start's shifts, the exact solution on the active
    pattern read off there, a round more when row supports move) after a
    start read from ``SAMPLE_BLOCKS``
    partitions, then the lazy output pass, verified partition by partition
    (every row on the simplex, the group sums those certified).

    Parameters
    ----------
    scores : dask.array.Array of shape (n_samples,) or (n_samples, n_classes), or dask Series
        Positive-class scores (binary), or one row of class probabilities per
        sample (multiclass; chunked along the rows, the columns are put in one
        block).
    sensitive_features : dask.array.Array, dask Series or dask DataFrame
        Group of each row (several columns: intersectional groups), aligned
        with ``scores`` (same partitions).
    tolerance : float, default=0.01
        Largest allowed difference between two group means of the output (of
        each class column, multiclass).
    bounds : tuple of (float or None), default=(0.0, 1.0)
        Scalar lower and upper bounds of binary outputs, ``None`` (or an
        infinite value) for an open end, e.g. ``(None, None)`` for regression
        outputs (multiclass outputs are on the simplex: ignored). The passes
        put a finite stand-in beyond the scores' range for an open end and
        certify that no output reaches it.
    criterion : str, default="demographic_parity"
        Only ``"demographic_parity"`` is solved this way.
    verify : {"blocks", "eager", "fused"}, default="blocks"
        ``"blocks"``: the driver checks that the output sums predicted from the
        certifying pass meet parity, and the task computing each output block
        raises unless the block's group sums match its prediction and its
        values are within the bounds (on the simplex, multiclass; no pass of
        its own; the output streams). Beyond ``BLOCK_SUMS`` predicted sums,
        ``"eager"`` is used. ``"eager"``: one verification pass now
        (``result.gap`` is the gap of the output), then a streaming output.
        ``"fused"``: the verification sums are computed in the output pass
        itself and each output block is released once the whole output is
        verified, so the output is held in the cluster's memory until then.

    Returns
    -------
    result : DaskProjectionResult or DaskMulticlassResult
        The lazy projected scores and the solution (multiclass: a
        :class:`~skfairlayer.dask.DaskMulticlassResult`).

    Raises
    ------
    ValueError
        If the scores are not finite or the bounds not ``lower < upper``.
    NotImplementedError
        For a criterion other than demographic parity.
    SolverError
        If the answer fails verification (when the output is computed, with
        ``verify="blocks"`` or ``"fused"``).

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skfairlayer.dask import project
    >>> scores = da.from_array(np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.4]), chunks=2)
    >>> groups = da.from_array(np.array(["a", "a", "a", "b", "b", "b"]), chunks=2)
    >>> result = project(scores, groups, tolerance=0.1)
    >>> np.round(result.proba.compute(), 3)
    array([0.7, 0.6, 0.5, 0.4, 0.5, 0.6])

    Multiclass scores stay on the simplex, with parity per class column:

    >>> proba = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.4, 0.5]])
    >>> result = project(da.from_array(proba, chunks=(2, 3)), da.from_array([0, 0, 1, 1], 2),
    ...                  tolerance=0.0)
    >>> np.round(result.proba.compute(), 3)
    array([[0.45, 0.25, 0.3 ],
           [0.35, 0.35, 0.3 ],
           [0.45, 0.25, 0.3 ],
           [0.35, 0.35, 0.3 ]])
    """
    if criterion != "demographic_parity":
        raise NotImplementedError(
            "skfairlayer.dask.project solves criterion='demographic_parity' (binary or "
            "multiclass scores), whose optimum moves each group by one shift computed from "
            "per-group sums. The other criteria condition on the labels or weight each row by "
            "its own scores, and are solved by the general solver on in-memory data: use "
            "skfairlayer.project, or fit a FairnessLayerClassifier and apply its fitted rule "
            "with skfairlayer.dask.predict_proba (inference='fitted'). "
            f"Got {criterion!r} instead."
        )
    if getattr(scores, "ndim", 1) == 2 and hasattr(scores, "chunks"):  # a 2-D Dask array
        if scores.shape[1] == 1:
            scores = scores[:, 0]
        else:
            from . import _simplex  # the multiclass solve

            return _simplex.project(scores, sensitive_features, tolerance=tolerance,
                                    verify=verify)
    score_blocks, group_blocks, chunks = as_blocks(scores, sensitive_features)
    return project_blocks(score_blocks, group_blocks, chunks, tolerance, bounds, verify)


def project_blocks(score_blocks, group_blocks, chunks, tolerance, bounds=(0.0, 1.0),
                   verify="blocks", check_labels=None):
    """:func:`project` on aligned delayed blocks (scores, raw groups) with ``chunks`` rows.

    ``check_labels(labels)``, if given, runs on the group labels as soon as they are known.
    """
    if verify not in _VERIFY:
        raise ValueError(f"verify must be one of {_VERIFY}. Got {verify!r} instead.")
    tolerance = check_tolerance(tolerance)
    lb, ub = scalar_bounds(bounds)
    n_blocks = len(score_blocks)
    keep = verify == "blocks"
    solution, lookup = solve(score_blocks, group_blocks, tolerance, lb, ub,
                             check_labels=check_labels, chunks=chunks, keep=keep)
    shifts, sizes = solution["shifts"], solution["sizes"]
    if keep and sizes.size >= 2 and solution.get("agg") is None:  # too many sums to hold
        verify = "eager"
    solution["info"]["verify"] = verify

    verification = partial(_verification, score_blocks, group_blocks, chunks, lookup, shifts,
                           sizes, tolerance, lb, ub)
    if verify != "blocks":
        proba, check, gap = outputs(score_blocks, group_blocks, chunks, lookup, shifts, sizes,
                                    tolerance, lb, ub, verify)
        return DaskProjectionResult(proba, solution, check, gap)
    pred, gap = None, 0.0
    if sizes.size >= 2:
        pred = predicted_sums(solution["agg"], shifts, *solution["pass_bounds"], n_blocks)
        gap = _check_predicted(pred, sizes, tolerance)
    proba = checked_outputs(score_blocks, group_blocks, chunks, lookup, shifts, pred, lb, ub)
    return DaskProjectionResult(proba, solution, verification, gap)
