"""Exact global parity decisions over a Dask collection of scores.

The in-memory :func:`skfairlayer._decisions.parity_decisions` picks per-group
selection counts ``c_g`` maximising ``sum_g F_g(c_g)`` (``F_g``: sum of the
``c_g`` largest gains ``2 s - 1`` of group ``g``, concave) over the levels of a
band of width ``tolerance``. Globally:

1. *Histogram* (one pass): per group, counts and gain sums of the scores in
   ``bins`` equal bins of ``[0, 1]`` (``F_g`` exactly at bin edges, bounded in
   between since the gains of a bin lie in a known range).
2. *Window* (one pass, repeated only when the certificate fails): the rows of
   the bins around the estimated optimum are extracted; on the levels they
   cover, the in-memory enumeration runs exactly, and an upper bound of the
   objective everywhere else certifies that no other level does better.
3. *Decisions* (lazy): ``s > v_g``, or ``s == v_g`` up to a global position
   (ties broken by position, as in memory). The certifying window pass also
   counts each partition's rows above the window, so the driver knows how many
   rows of each group every partition selects; it checks that these add up to
   the chosen counts, and the task computing each decision block raises unless
   the block selects exactly its predicted counts (beyond ``BLOCK_COUNTS``
   (partition, group) pairs, the blocks wait for a check of the whole
   collection's counts instead).
"""

from fractions import Fraction
from functools import partial

import numpy as np

from .._decisions import _candidate_levels, _level_counts, _threshold_between, preferred_counts
from .._validation import check_tolerance
from ..exceptions import SolverError
from ._blocks import (
    Pass,
    TwoGroups,
    as_blocks,
    as_float,
    block_codes,
    compute,
    global_codes,
    global_labels,
    indicator,
    label_keys,
    recycled,
    scratch,
    sub_blocks,
    two_valued,
    union_keys,
)

_RATE_SLACK = 1e-12  # float slack of the window's rate comparisons

#: Bins of the score histogram (a power of 2: bin edges are exact).
BINS = 1 << 12
_GRID = 4096
_ROUNDS = 6
#: Most (partition, group) pairs whose predicted selected counts the driver holds (each
#: decision block checked on its own); beyond, the blocks wait for the global check.
BLOCK_COUNTS = 1 << 20
#: Most rows gathered when every level must be searched (tolerance * group size < 1).
_GATHER_ROWS = 1 << 21


class DaskParityDecisions:
    """Outcome of :func:`skfairlayer.dask.parity_decisions`.

    Attributes
    ----------
    decisions : dask.array.Array of shape (n_samples,), dtype=int
        0/1 decisions, lazy; each block checked, by the task that computes it,
        to select exactly the rows per group the certified solution predicts.
    counts, sizes : ndarray of shape (n_groups,)
        Selected rows and rows per group.
    thresholds : ndarray of shape (n_groups,)
        A score threshold per group (as in memory: midway between the last
        selected and the first rejected score).
    groups : ndarray of shape (n_groups,)
        Group labels (sorted).
    passes : int
        Passes over the data before the (lazy) decision pass.
    """

    def __init__(self, decisions, counts, sizes, thresholds, groups, passes):
        self.decisions, self.counts, self.sizes = decisions, counts, sizes
        self.thresholds, self.groups, self.passes = thresholds, groups, passes

    @property
    def rates(self):
        """Selection rate of each group."""
        return self.counts / self.sizes

    @property
    def gap(self):
        """Largest difference of two groups' selection rates."""
        r = self.rates
        return float(r.max() - r.min())

    def __repr__(self):
        return f"DaskParityDecisions(n_groups={len(self.groups)}, gap={self.gap:.3g})"


# ------------------------------------------------------------------ passes


def _bins(s, bins):
    if s.size and (s.min() < 0 or s.max() > 1 or not np.isfinite(s).all()):
        raise ValueError("parity decisions need scores in [0, 1] (probabilities). "
                         f"Got values from {s.min()!r} to {s.max()!r} instead.")
    return np.ceil(s * bins).astype(np.intp)  # bin e: ((e - 1) / bins, e / bins]


def _block_hist(s_raw, g_raw, bins):
    s = as_float(s_raw)
    width = bins + 1
    two = two_valued(g_raw)
    if two is None:
        codes, labels = block_codes(g_raw)
        k = len(labels)
        flat = codes * width + _bins(s, bins)
        cnt = np.bincount(flat, minlength=k * width)
        gain = np.bincount(flat, weights=2.0 * s - 1.0, minlength=k * width)
    else:
        labels, ind = two
        k = len(labels)
        if s.size and (s.min() < 0 or s.max() > 1 or not np.isfinite(s.sum())):
            _bins(s, bins)  # raises
        cnt, gain = np.zeros(k * width), np.zeros(k * width)
        fb, wb, flat_b = scratch("bins"), scratch("gain"), scratch("flat", np.intp)
        for sl in sub_blocks(s.size):
            m = sl.stop - sl.start
            x, t, w, flat = s[sl], fb[:m], wb[:m], flat_b[:m]
            np.multiply(x, bins, out=t)
            np.ceil(t, out=t)
            if k == 2:  # the bin offset of group 1, exact in floats
                np.copyto(w, ind[sl])
                w *= width
                t += w
            np.copyto(flat, t, casting="unsafe")
            np.multiply(x, 2.0, out=w)
            w -= 1.0
            cnt += np.bincount(flat, minlength=k * width)
            gain += np.bincount(flat, weights=w, minlength=k * width)
    return {"keys": label_keys(labels),
            "cnt": cnt.reshape(k, width).astype(np.float64),
            "gain": gain.reshape(k, width),
            "rows": [s.shape[0]]}


def _merge_hist(parts):
    keys, wheres = union_keys(parts)
    width = parts[0]["cnt"].shape[1]
    cnt, gain = np.zeros((len(keys), width)), np.zeros((len(keys), width))
    for p, where in zip(parts, wheres, strict=True):
        cnt[where] += p["cnt"]
        gain[where] += p["gain"]
    return {"keys": keys, "cnt": cnt, "gain": gain,
            "rows": [r for p in parts for r in p["rows"]]}


def _block_window(s_raw, g_raw, where, lookup, e_lo, e_hi, bins, keep=True):
    """The rows of the bins ``e_lo .. e_hi`` of their group (scores, codes, global positions),
    and (``keep``) the block's rows above them per group (``where``: the block's offset and
    index)."""
    offset, index = where
    s = as_float(s_raw)
    k = e_lo.size
    ind = indicator(g_raw, lookup)
    if ind is None:
        codes = global_codes(g_raw, lookup)
        e = _bins(s, bins)
        rows = np.flatnonzero((e >= e_lo[codes]) & (e <= e_hi[codes]))
        above = np.bincount(codes[e > e_hi[codes]], minlength=k)
        return {"s": s[rows], "g": codes[rows], "pos": rows + offset,
                "above": [(index, above)] if keep else []}
    # Bin e holds ((e - 1) / bins, e / bins]: compare with exact dyadic edges.
    low, high = (e_lo - 1.0) / bins, e_hi / float(bins)
    parts, above = [], np.zeros(2, dtype=np.int64)
    for sl in sub_blocks(s.size):
        x, f = s[sl], ind[sl]
        up0 = (x > low[0]) & ~f  # in the window or above it
        in0 = up0 & (x <= high[0])
        up1 = (x > low[1]) & f
        in1 = up1 & (x <= high[1])
        above += (np.count_nonzero(up0) - np.count_nonzero(in0),
                  np.count_nonzero(up1) - np.count_nonzero(in1))
        in0 |= in1
        parts.append(np.flatnonzero(in0) + sl.start)
    rows = np.concatenate(parts)
    return {"s": s[rows], "g": ind[rows].astype(np.intp), "pos": rows + offset,
            "above": [(index, above)] if keep else []}


def _merge_window(parts):
    out = {key: np.concatenate([p[key] for p in parts]) for key in ("s", "g", "pos")}
    out["above"] = [x for p in parts for x in p["above"]]
    return out


def _block_decide(s_raw, g_raw, offset, lookup, value, last):
    s = as_float(s_raw)
    two = TwoGroups.of(g_raw, lookup)
    if two is None:
        codes = global_codes(g_raw, lookup)
        v = value[codes]
        out = s > v
        ties = np.flatnonzero(s == v)
        out[ties] = ties + offset <= last[codes[ties]]
        return out.astype(int), np.bincount(codes, weights=out, minlength=value.size)
    # sub-block by sub-block in this thread's buffers: each row against its group's
    # threshold, the ties (decided by position) listed
    out = recycled(s.size, int)
    ind, above, other = scratch("indicator", bool), scratch("above", bool), scratch("other", bool)
    tie_parts, n1 = [], 0
    for sl in sub_blocks(s.size):
        m = sl.stop - sl.start
        x, b, u, w = s[sl], two.mask(sl, ind[:m]), above[:m], other[:m]
        _against_group(np.greater, x, value, b, u, w)
        out[sl] = u
        n1 += np.count_nonzero(np.logical_and(u, b, out=w))
        _against_group(np.equal, x, value, b, u, w)
        tie_parts.append(np.flatnonzero(u) + sl.start)
    ties = np.concatenate(tie_parts)
    if ties.size:  # not selected above (equal to the threshold): selected by position
        tie_codes = two.values(ties, np.empty(ties.size, dtype=np.intp))
        chosen = ties + offset <= last[tie_codes]
        out[ties] = chosen
        n1 += np.count_nonzero(chosen & (tie_codes == 1))
    selected = np.count_nonzero(out)
    return out, np.array([selected - n1, n1], dtype=np.float64)


def _against_group(compare, x, value, b, u, w):
    """``u = compare(x, value[g])`` for rows of group ``g`` (``b``: group 1), by boolean
    selects (``w``: a buffer): exact, with no row-sized float thresholds."""
    compare(x, value[0], out=u)
    compare(x, value[1], out=w)
    np.bitwise_xor(w, u, out=w)
    np.logical_and(w, b, out=w)
    np.bitwise_xor(u, w, out=u)


def _block_decide_checked(s_raw, g_raw, where, lookup, value, last):
    """The decisions of one block, released only if its selected rows per group are the
    predicted ones (``where``: the block's offset and predicted counts)."""
    offset, expected = where
    out, counts = _block_decide(s_raw, g_raw, offset, lookup, value, last)
    if not np.array_equal(counts, expected):
        raise SolverError(
            "A partition of the global parity decisions selects other counts than predicted "
            f"({counts.tolist()} instead of {expected.tolist()}): the data changed between "
            "passes, or a bug (please report it)."
        )
    return out


def _predicted_counts(window, value, last, offsets, k):
    """Per partition and group, the rows the rule selects: those above the certifying
    window, and the window's own rows the rule selects (on the driver)."""
    pred = np.zeros((offsets.size, k), dtype=np.int64)
    for index, above in window["above"]:
        pred[index] += above
    s, g, pos = window["s"], window["g"], window["pos"]
    chosen = (s > value[g]) | ((s == value[g]) & (pos <= last[g]))
    block = np.searchsorted(offsets, pos, side="right") - 1  # empty blocks share offsets
    np.add.at(pred, (block[chosen], g[chosen]), 1)
    return pred


def _sum_parts(parts):
    return np.sum(parts, axis=0)


def _check_exact_gap(counts, sizes, tolerance):
    """Raise unless the selection rates ``counts / sizes`` differ by at most ``tolerance``,
    compared exactly (the window search compares rates in floats)."""
    rates = [Fraction(int(c), int(m)) for c, m in zip(counts, sizes, strict=True) if m > 0]
    if rates and max(rates) - min(rates) > Fraction(float(tolerance)):
        raise SolverError(
            "The global parity decisions' selection rates differ by "
            f"{float(max(rates) - min(rates))!r} > tolerance={tolerance!r} in exact arithmetic; "
            "this is a bug, please report it."
        )


def _check_counts(total, counts):
    if not np.array_equal(total, counts):
        raise SolverError(
            "The global parity decisions select other counts than the solver chose "
            f"({total.tolist()} instead of {counts.tolist()}); this is a bug, please report it."
        )
    return True


def _release(pair, ok):
    return pair[0]


# ------------------------------------------------------------------ driver


class _Tables:
    """Per group, ``F`` (sum of the largest gains) at the bin edges, top bin first."""

    def __init__(self, cnt, gain, bins):
        # Column i: rows in bins above edge index (bins + 1 - i); K[:, 0] = 0.
        self.K = np.concatenate([np.zeros((cnt.shape[0], 1)), np.cumsum(cnt[:, ::-1], axis=1)],
                                axis=1)
        self.F = np.concatenate([np.zeros((cnt.shape[0], 1)), np.cumsum(gain[:, ::-1], axis=1)],
                                axis=1)
        e = bins - np.arange(bins + 1)  # bin of column interval i
        self.gmax = 2.0 * e / bins - 1.0
        self.gmin = np.maximum(2.0 * (e - 1) / bins - 1.0, -1.0)
        self.bins = bins

    def upper(self, g, c):
        """Upper bound of ``F_g(c)`` (concavity and the gain range of each bin)."""
        K, F = self.K[g], self.F[g]
        i = np.clip(np.searchsorted(K, c, side="right") - 1, 0, self.bins)
        from_top = F[i] + (c - K[i]) * self.gmax[i]
        return np.minimum(from_top, F[i + 1] - (K[i + 1] - c) * self.gmin[i])

    def lower(self, g, c):
        """Lower bound of ``F_g(c)``: the chord across the bin (concavity)."""
        K, F = self.K[g], self.F[g]
        i = np.clip(np.searchsorted(K, c, side="right") - 1, 0, self.bins)
        span = K[i + 1] - K[i]
        frac = np.where(span > 0, (c - K[i]) / np.where(span > 0, span, 1.0), 0.0)
        return F[i] + frac * (F[i + 1] - F[i])

    def bin_of_rank(self, g, r):
        """Bin index ``e`` holding the ``r``-th largest score of group ``g`` (``r >= 1``)."""
        i = np.searchsorted(self.K[g], r, side="left") - 1
        return self.bins - int(np.clip(i, 0, self.bins))


def _counts_at(t, sizes, free, tol):
    """Per group and level, the count chosen in memory, and feasibility."""
    n = sizes[:, None]
    c_lo = np.maximum(np.ceil(t * n - _RATE_SLACK * n), 0)
    c_hi = np.minimum(np.floor((t + tol) * n + _RATE_SLACK * n), n)
    feasible = (c_lo <= c_hi).all(axis=0)
    return np.clip(free[:, None], c_lo, np.maximum(c_lo, c_hi)), feasible


def _level_range(sizes, free, tol):
    rates0 = free / sizes
    if tol * sizes.min() >= 1:
        lo, hi = max(0.0, rates0.min() - tol), min(1.0, rates0.max())
        return min(lo, hi), max(lo, hi)
    return 0.0, 1.0


def _exact_f(window, tables, sizes, e_lo, e_hi):
    """Per group: the first count covered, the prefix sums of gains, and the sorted rows."""
    out = []
    for g in range(sizes.size):
        rows = window["g"] == g
        s, pos = window["s"][rows], window["pos"][rows]
        order = np.lexsort((pos, -s))
        s, pos = s[order], pos[order]
        base_i = tables.bins - e_hi[g]  # column of the edge above the window
        base_c, base_f = tables.K[g, base_i], tables.F[g, base_i]
        prefix = base_f + np.concatenate(([0.0], np.cumsum(2.0 * s - 1.0)))
        out.append((int(base_c), prefix, s, pos))
    return out


def _evaluate(ta, tb, exact, sizes, free, tol):
    """Totals and counts at the in-memory rule's candidate levels in ``[ta, tb]``, exactly.

    The levels and each group's counts there are the in-memory solver's (the lowest
    rates ``c / n_g``, their count ranges compared with the tolerance in exact
    rational arithmetic), so both choose the same counts; some optimum has its
    lowest rate at one of these levels. The windows cover the counts of ``[ta, tb]``.
    """
    num, den = _candidate_levels(sizes, tol, ta, tb)
    q = num / den
    inside = (q >= ta) & (q <= tb)
    counts, feasible = _level_counts(num[inside], den[inside], sizes, free, tol)
    total = np.zeros(counts.shape[1])
    for g, (base, prefix, _, _) in enumerate(exact):
        j = counts[g] - base
        if np.any(j < 0) or np.any(j >= prefix.size):  # pragma: no cover (see _windows)
            raise SolverError("A count left its window; this is a bug, please report it.")
        total += prefix[j]
    total[~feasible] = -np.inf
    return total, counts


def _failing(tables, sizes, free, tol, lo, hi, ta, tb, special, best, counts):
    """Level intervals of ``[lo, hi]`` outside ``[ta, tb]`` (and special levels outside it)
    where an upper bound of the objective reaches ``best``; intervals whose counts are
    ``counts`` throughout (the same decisions) are left out."""
    pieces = []
    if ta > lo:
        pieces.append(np.linspace(lo, ta, _GRID + 1))
    if tb < hi:
        pieces.append(np.linspace(tb, hi, _GRID + 1))
    fails = []
    for grid in pieces:
        a, b = grid[:-1], grid[1:]
        ca, _ = _counts_at(a, sizes, free, tol)
        cb, _ = _counts_at(b, sizes, free, tol)
        ub = sum(tables.upper(g, np.clip(free[g], ca[g], cb[g])) for g in range(sizes.size))
        same = ((ca == counts[:, None]) & (cb == counts[:, None])).all(axis=0)
        bad = (ub >= best) & ~same
        fails.extend(zip(a[bad].tolist(), b[bad].tolist(), strict=True))
    for t in special:
        if ta <= t <= tb:
            continue
        cs, ok = _counts_at(np.array([t]), sizes, free, tol)
        ub = sum(tables.upper(g, cs[g]) for g in range(sizes.size))[0]
        if ok[0] and ub >= best and not np.array_equal(cs[:, 0], counts):
            fails.append((t, t))
    return fails


def _windows(tables, sizes, free, tol, ta, tb):
    ca, _ = _counts_at(np.array([ta]), sizes, free, tol)
    cb, _ = _counts_at(np.array([tb]), sizes, free, tol)
    e_hi = np.array([tables.bin_of_rank(g, max(1, ca[g, 0])) for g in range(sizes.size)])
    e_lo = np.array([tables.bin_of_rank(g, min(sizes[g], cb[g, 0] + 1))
                     for g in range(sizes.size)])
    return np.minimum(e_lo, e_hi), e_hi


def _solve_counts(blocks, lookup, tables, sizes, free, tol, offsets, bins):
    """Exact optimal counts: windows around the estimate, certified by the upper bound."""
    lo, hi = _level_range(sizes, free, tol)
    special = [0.0, max(0.0, 1.0 - tol)]
    if tol * sizes.min() < 1:  # levels without an admissible count: every level, every row
        if sizes.sum() > _GATHER_ROWS:
            raise NotImplementedError(
                "Global parity decisions with tolerance * (smallest group size) < 1 need every "
                f"level searched, done for at most {_GATHER_ROWS} rows. Got "
                f"tolerance={tol!r} with a group of {int(sizes.min())} rows in "
                f"{int(sizes.sum())} rows instead; use a tolerance of at least "
                f"{1 / sizes.min():.3g}."
            )
        return _solve_region(blocks, lookup, tables, sizes, free, tol, offsets, bins,
                             lo, hi, special, 0.0, max(hi, special[1]))
    grid = np.linspace(lo, hi, 4 * _GRID + 1)
    c, feasible = _counts_at(grid, sizes, free, tol)
    est = sum(tables.lower(g, c[g]) for g in range(sizes.size))
    est[~feasible] = -np.inf
    j = int(np.argmax(est))
    t_hat, floor = float(grid[j]), float(est[j])  # the objective reaches floor at t_hat
    # Every level whose upper bound reaches that floor is a candidate: their hull.
    near = _failing(tables, sizes, free, tol, lo, hi, t_hat, t_hat, [],
                    floor - 1e-9 * (1.0 + abs(floor)), np.full(sizes.size, -1))
    ta = min([t_hat] + [a for a, _ in near])
    tb = max([t_hat] + [b for _, b in near])
    return _solve_region(blocks, lookup, tables, sizes, free, tol, offsets, bins,
                         lo, hi, special, ta, tb)


def _solve_region(blocks, lookup, tables, sizes, free, tol, offsets, bins, lo, hi, special,
                  ta, tb):
    """Extract the windows of the levels ``[ta, tb]``, solve there exactly, certify, widen."""
    for rounds in range(1, _ROUNDS + 1):
        e_lo, e_hi = _windows(tables, sizes, free, tol, ta, tb)
        func = partial(_block_window, lookup=lookup, e_lo=e_lo, e_hi=e_hi, bins=bins,
                       keep=offsets.size * sizes.size <= BLOCK_COUNTS)
        where = list(zip(offsets.tolist(), range(offsets.size), strict=True))
        pas = Pass(*blocks, func, "skfairlayer-window", extra=where)
        (window,) = compute(pas.delayed(pas.reduce(pas.keys, _merge_window)))
        exact = _exact_f(window, tables, sizes, e_lo, e_hi)
        totals, counts = _evaluate(ta, tb, exact, sizes, free, tol)
        if totals.size:
            best = (float(totals.max()), preferred_counts(totals, counts))  # as in memory
        else:  # no candidate level in [ta, tb]: widen to the intervals that may hold one
            best = (-np.inf, np.full(sizes.size, -1))
        margin = 1e-9 * (1.0 + abs(best[0])) if np.isfinite(best[0]) else 0.0
        fails = _failing(tables, sizes, free, tol, lo, hi, ta, tb, special,
                         best[0] - margin, best[1])
        if not fails:
            return best[1], exact, rounds, window
        ta = min(ta, min(a for a, _ in fails))
        tb = max(tb, max(b for _, b in fails))
    raise SolverError(
        f"The global parity decisions were not certified in {_ROUNDS} passes; this is a bug "
        "or a numerically hard instance, please report it."
    )


def _rule(exact, counts, sizes):
    """Per group: the score ``v`` and last position selected at it; the threshold."""
    k = sizes.size
    value, last, thresholds = np.empty(k), np.empty(k, dtype=np.int64), np.empty(k)
    for g, (base, _, s, pos) in enumerate(exact):
        c, n = int(counts[g]), int(sizes[g])
        j = c - base - 1  # the c-th largest score, in the window (see _windows)
        if c == 0:
            value[g], last[g] = np.inf, -1
            thresholds[g] = np.nextafter(s[0], np.inf)
            continue
        value[g], last[g] = s[j], pos[j]
        if c == n:
            thresholds[g] = s[j]
        else:
            thresholds[g] = _threshold_between(s[j:j + 2], 1)
    return value, last, thresholds


def parity_decisions(scores, sensitive_features, *, tolerance=0.01, bins=BINS):
    """Decisions of maximal expected accuracy with selection-rate parity over the whole collection.

    The same decisions as the in-memory rule (one threshold per group, ties
    broken by position) on the concatenated data, from a histogram pass and a
    window pass; the decisions themselves are lazy and verified when computed.

    Parameters
    ----------
    scores : dask.array.Array of shape (n_samples,) or dask Series
        Calibrated positive-class probabilities, in ``[0, 1]``.
    sensitive_features : dask.array.Array, dask Series or dask DataFrame
        Group of each row, aligned with ``scores``.
    tolerance : float, default=0.01
        Largest allowed difference of selection rates.
    bins : int, default=4096
        Bins of the score histogram (a power of 2).

    Returns
    -------
    result : DaskParityDecisions

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skfairlayer.dask import parity_decisions
    >>> scores = da.from_array(np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.6]), chunks=2)
    >>> groups = da.from_array(np.array([0, 0, 0, 1, 1, 1]), chunks=2)
    >>> result = parity_decisions(scores, groups, tolerance=0.0)
    >>> result.decisions.compute()
    array([1, 1, 0, 0, 1, 1])
    """
    score_blocks, group_blocks, _ = as_blocks(scores, sensitive_features)
    return decide_blocks(score_blocks, group_blocks, tolerance, bins)


def decide_blocks(score_blocks, group_blocks, tolerance, bins=BINS, check_labels=None):
    """:func:`parity_decisions` on aligned delayed blocks (scores, raw groups).

    ``check_labels(labels)``, if given, runs on the group labels after the first pass.
    """
    tolerance = check_tolerance(tolerance)
    if bins < 2 or bins & (bins - 1):
        raise ValueError(f"bins must be a power of 2 >= 2. Got {bins!r} instead.")
    pas = Pass(score_blocks, group_blocks, partial(_block_hist, bins=bins), "skfairlayer-hist")
    (hist,) = compute(pas.delayed(pas.reduce(pas.keys, _merge_hist)))
    labels = global_labels(hist["keys"])
    if check_labels is not None:
        check_labels(labels)
    order = [hist["keys"].index(key) for key in labels.tolist()]
    cnt, gain = hist["cnt"][order], hist["gain"][order]
    lookup = {key: j for j, key in enumerate(labels.tolist())}
    sizes = cnt.sum(axis=1)
    if sizes.size == 0:
        raise ValueError("scores is empty: at least one sample is required.")
    free = cnt[:, bins // 2 + 1 :].sum(axis=1)  # scores > 0.5
    offsets = np.concatenate(([0], np.cumsum(hist["rows"])[:-1])).astype(np.int64)
    tables = _Tables(cnt, gain, bins)
    blocks = (list(score_blocks), list(group_blocks))
    counts, exact, rounds, window = _solve_counts(blocks, lookup, tables, sizes, free,
                                                  tolerance, offsets, bins)
    _check_exact_gap(counts, sizes, tolerance)
    value, last, thresholds = _rule(exact, counts, sizes)
    if offsets.size * sizes.size <= BLOCK_COUNTS:  # each block checked against its prediction
        pred = _predicted_counts(window, value, last, offsets, sizes.size)
        _check_counts(pred.sum(axis=0), counts)
        func = partial(_block_decide_checked, lookup=lookup, value=value, last=last)
        pas = Pass(*blocks, func, "skfairlayer-decide", extra=list(zip(offsets.tolist(), pred,
                                                                        strict=True)))
        decisions = pas.array(pas.keys, hist["rows"], int)
    else:  # the blocks held until the whole collection's counts are checked
        func = partial(_block_decide, lookup=lookup, value=value, last=last)
        pas = Pass(*blocks, func, "skfairlayer-decide", extra=offsets.tolist())
        total = pas.reduce(pas.item(pas.keys, 1), _sum_parts)
        ok = pas.task(partial(_check_counts, counts=counts.astype(np.float64)), total)
        decisions = pas.array([pas.task(_release, k, ok) for k in pas.keys], hist["rows"], int)
    return DaskParityDecisions(decisions, counts, sizes, thresholds, labels, 1 + rounds)
