"""Decisions that meet selection-rate parity exactly (user guide: decisions).

Rounding projected probabilities does not keep parity. Instead solve, on the
batch, ``max sum_i yhat_i (2 s_i - 1)`` (expected accuracy under calibrated
scores ``s``) over integer decisions whose group selection rates differ by at
most ``tolerance``. Within a group the best ``c_g`` selections are its ``c_g``
highest scores, so the problem is over the counts ``c_g`` alone. Some optimum
has its lowest rate ``t = c / n_g`` at a breakpoint; given ``t``, each group
takes the count closest to its unconstrained one inside
``[ceil(t n_g), max {c : c / n_g - t <= tolerance}]`` (its objective is
concave in ``c_g``). Every comparison of rates with the tolerance is made in
exact rational arithmetic (integer counts, the float tolerance as the dyadic
rational it is), so the selected rates differ by at most ``tolerance``
literally, not up to round-off.
"""

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .exceptions import SolverError

__all__ = [
    "ParityDecisions",
    "parity_decisions",
    "apply_thresholds",
    "smallest_nontrivial_tolerance",
]

_CHUNK = 1 << 16
#: Relative distance below which a float comparison of a ratio with the
#: tolerance is re-done exactly (float ratios of int64 counts err by ~1e-16).
_NEAR = 1e-12
#: Relative distance to an integer below which a count is recomputed in integers (the
#: float products are within a few 1e-16 of the exact ones).
_NEAR_COUNT = 1e-12


@dataclass
class ParityDecisions:
    """Exact integer solution of the decision problem on one batch.

    Attributes
    ----------
    decisions : ndarray of shape (n_samples,), dtype=int
        0/1 decisions.
    counts : ndarray of shape (n_groups,)
        Number of selected rows per group.
    sizes : ndarray of shape (n_groups,)
        Number of rows per group.
    thresholds : ndarray of shape (n_groups,)
        A score threshold per group reproducing the selection on this batch
        (midway between the last selected and the first rejected score).
    tolerance : float or None, default=None
        The tolerance the decisions were computed for.
    """

    decisions: np.ndarray
    counts: np.ndarray
    sizes: np.ndarray
    thresholds: np.ndarray
    tolerance: float | None = None

    @property
    def rates(self):
        """Selection rate of each group."""
        return self.counts / self.sizes

    @property
    def exact_gap(self):
        """Largest difference of two groups' selection rates, as an exact fraction."""
        rates = [Fraction(int(c), int(m)) for c, m in zip(self.counts, self.sizes, strict=True)]
        return max(rates) - min(rates)

    @property
    def gap(self):
        """Largest difference of two groups' selection rates (the exact one, rounded).

        At most ``tolerance``: the exact gap is, and rounding to the nearest
        float keeps that order.
        """
        return float(self.exact_gap)

    @property
    def trivial(self):
        """Whether nobody or everybody is selected."""
        return bool(np.all(self.counts == 0) or np.all(self.counts == self.sizes))

    @property
    def smallest_nontrivial_tolerance(self):
        """Smallest tolerance admitting decisions other than nobody / everybody selected.

        See :func:`smallest_nontrivial_tolerance`. When :attr:`trivial` is true
        and :attr:`tolerance` is below this value, the trivial answer is forced by
        the group sizes, not chosen by the scores.
        """
        return smallest_nontrivial_tolerance(self.sizes)

    @property
    def forced_trivial(self):
        """Whether the decisions are trivial because the tolerance admits nothing else."""
        return (
            self.trivial
            and self.tolerance is not None
            and self.tolerance < self.smallest_nontrivial_tolerance
        )


def _ratio_le(num, den, tolerance):
    """Exactly ``num / den <= tolerance`` (int64 arrays, ``den > 0``; float tolerance).

    Float division decides the clear cases; near ties are settled in Python
    integers as ``num * b <= a * den`` with ``tolerance = a / b`` exactly (a
    float is a dyadic rational).
    """
    num, den = np.broadcast_arrays(np.asarray(num, np.int64), np.asarray(den, np.int64))
    if tolerance == 0:
        return num <= 0
    q = num / den
    out = q <= tolerance
    near = np.abs(q - tolerance) <= _NEAR * abs(tolerance)
    if np.any(near):
        a, b = tolerance.as_integer_ratio()
        lhs = num[near].astype(object) * b
        rhs = den[near].astype(object) * a
        out[near] = (lhs <= rhs).astype(bool)
    return out


def tie_floor(best):
    """The smallest objective tied with ``best`` (rounding of the sums; -inf: infeasible)."""
    return best - 1e-12 * (1.0 + abs(best)) if np.isfinite(best) else best


def preferred_counts(totals, counts):
    """The optimal selection counts: among the count vectors (columns of ``counts``) whose
    objective ``totals`` ties the best, the one selecting the fewest rows, then the
    lexicographically smallest. A choice independent of the order the levels were
    searched in, so every front end that reaches the optimum returns the same one."""
    tied = counts[:, totals >= tie_floor(totals.max())]
    keys = [tied[g] for g in range(tied.shape[0] - 1, -1, -1)] + [tied.sum(axis=0)]
    return tied[:, np.lexsort(keys)[0]].copy()


def warn_trivial_decisions(layer, tolerance):
    """Warn when ``tolerance`` admits only all-or-nothing parity decisions on the fit set of
    the fitted ``layer``."""
    sizes = layer.uniform_group_sizes
    if sizes is None or not layer.constant_decisions:
        return
    smallest = smallest_nontrivial_tolerance(sizes)
    if float(tolerance) < smallest:
        warnings.warn(
            f"tolerance={tolerance!r} admits only trivial parity decisions on the fit "
            "set (with these group sizes, equal selection rates within the tolerance "
            "exist only for nobody or everybody selected). Use a tolerance of at least "
            f"about {smallest:.3g} (set by the group sizes) for useful decisions.",
            UserWarning,
            stacklevel=4,
        )


def smallest_nontrivial_tolerance(group_sizes):
    """Smallest tolerance at which integer selection rates can differ from all-0 / all-1.

    With groups of sizes ``n_g``, selection rates ``c_g / n_g`` that are all
    equal exist only at 0 and 1 when the sizes are coprime, so ``tolerance=0``
    forces selecting nobody (or everybody). This is the smallest spread
    ``max_g c_g / n_g - min_g c_g / n_g`` over count vectors other than those
    two, computed exactly and rounded up to a float (so that it is itself an
    admissible tolerance); at most ``1 / max_g n_g``.

    Parameters
    ----------
    group_sizes : array-like of int
        Number of rows of each group (positive).

    Returns
    -------
    tolerance : float
        ``0.0`` with one group or equal-rate non-trivial counts (e.g. sizes 2 and 4).

    Examples
    --------
    >>> smallest_nontrivial_tolerance([2, 4])
    0.0
    >>> smallest_nontrivial_tolerance([2, 3])  # 1/2 - 1/3
    0.16666666666666669
    """
    sizes = np.asarray(group_sizes, dtype=np.int64).ravel()
    if sizes.size == 0 or np.any(sizes <= 0):
        raise ValueError(f"group_sizes must be positive integers. Got {group_sizes!r} instead.")
    if sizes.size == 1:
        return 0.0
    # zeros everywhere but one row of the largest group selected: spread 1 / max n
    best = Fraction(1, int(sizes.max()))
    # Lowest rate t = c / n_g strictly inside (0, 1): every group takes its
    # smallest count at or above t; the spread is the largest rate minus t.
    for n_g in np.unique(sizes):
        c = np.arange(1, n_g, dtype=np.int64)
        if c.size == 0:
            continue
        # spread of group h: (ceil(c n_h / n_g) n_g - c n_h) / (n_g n_h), an exact
        # integer ratio; its float value errs by ~1e-16 relative
        worst = np.zeros(c.size)
        for n_h in np.unique(sizes):
            num = -((-c * n_h) // n_g) * n_g - c * n_h
            worst = np.maximum(worst, num / float(n_g * n_h))
        j = int(np.argmin(worst))
        # the exact value, among the float near-ties of the minimum
        near = np.flatnonzero(worst <= worst[j] * (1 + _NEAR) + 1e-300)
        for i in near:
            best = min(best, _exact_spread(int(c[i]), int(n_g), sizes))
    return _round_up(best)


def _exact_spread(c, n_g, sizes):
    t = Fraction(c, n_g)
    return max(Fraction(-((-c * int(n_h)) // n_g), int(n_h)) for n_h in sizes) - t


def _round_up(value):
    """The smallest float ``>= value`` (a Fraction)."""
    f = float(value)
    if Fraction(f) < value:
        f = math.nextafter(f, math.inf)
    return f


def _candidate_levels(sizes, tolerance, lo, hi):
    """Candidate lowest rates ``t = c / n_g`` in ``[lo, hi]``, as (numerator, denominator).

    Some optimum has its lowest rate at one of them (given the counts, moving
    the level up to the lowest rate keeps them feasible). ``lo`` and ``hi``
    only prune, with a margin, so float bounds are safe.
    """
    nums, dens = [], []  # the level 0 is c = 0 of any group when lo allows it
    for n_g in np.unique(sizes):
        c = np.arange(max(int(np.floor(lo * n_g)) - 1, 0), min(int(np.ceil(hi * n_g)) + 1, n_g) + 1)
        nums.append(c.astype(np.int64))
        dens.append(np.full(c.size, n_g, dtype=np.int64))
    return np.concatenate(nums), np.concatenate(dens)  # duplicates are harmless


def _count_ranges(num, den, n_h, tolerance, q=None):
    """Per level ``t = num / den``: smallest and largest count of a group of size ``n_h``.

    ``c_lo = ceil(t n_h)`` and ``c_hi = max {c <= n_h : c / n_h - t <= tolerance}``,
    both exact: in floats where ``t n_h`` and ``(t + tolerance) n_h`` are far (relative
    to their rounding) from an integer, in integer arithmetic at the few near ties.
    ``q`` is ``num / den`` when the caller has it.
    """
    q = num / den if q is None else q
    x, y = q * n_h, (q + tolerance) * n_h
    c_lo = np.ceil(x).astype(np.int64)
    c_hi = np.floor(np.clip(y, -1.0, n_h)).astype(np.int64)
    near = np.flatnonzero(np.abs(x - np.rint(x)) <= _NEAR_COUNT * np.maximum(x, 1.0))
    if near.size:
        c_lo[near] = -((-num[near] * n_h) // den[near])
    near = np.flatnonzero(np.abs(y - np.rint(y)) <= _NEAR_COUNT * np.maximum(np.abs(y), 1.0))
    if near.size:
        c_hi[near] = _exact_count_hi(num[near], den[near], n_h, tolerance)
    return c_lo, c_hi


def _exact_count_hi(num, den, n_h, tolerance):
    """``c_hi`` of :func:`_count_ranges` in integer arithmetic (near ties)."""
    guess = np.floor((num / den + tolerance) * n_h)
    c_hi = np.minimum(np.clip(guess, -1, n_h).astype(np.int64) + 1, n_h)
    # (c_hi / n_h - t) <= tol  <=>  (c_hi den - num n_h) / (den n_h) <= tol; the
    # float guess is off by at most one, so a few steps down settle it.
    for _ in range(4):
        ok = _ratio_le(c_hi * den - num * n_h, den * n_h, tolerance) | (c_hi < 0)
        if ok.all():
            break
        c_hi = np.where(ok, c_hi, c_hi - 1)
    return c_hi


def parity_decisions(scores, codes, n_groups, tolerance):
    """Integer decisions maximising expected accuracy subject to selection-rate parity.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Calibrated positive-class probabilities.
    codes : ndarray of shape (n_samples,)
        Group code of each row in ``[0, n_groups)``; every group present.
    n_groups : int
        Number of groups.
    tolerance : float
        Largest allowed difference of selection rates (compared exactly).

    Returns
    -------
    ParityDecisions
        Its ``exact_gap`` is at most ``tolerance``; ``forced_trivial`` tells
        when the tolerance is below :func:`smallest_nontrivial_tolerance` and
        nobody (or everybody) is selected for that reason.
    """
    tolerance = float(tolerance)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number. Got {tolerance!r} instead.")
    tables = _histogram(scores, codes, n_groups)
    if tables is not None:  # sizes and unconstrained counts (scores above 1/2) read off it
        rows = tables[0]
        sizes = rows[:, -1].astype(np.int64)
        free = rows[:, _BINS // 2].astype(np.int64)  # scores >= 1/2, less those at 1/2
        half = scores == 0.5
        if half.any():
            free -= np.bincount(codes[half], minlength=n_groups)
    else:  # one integer bincount
        cells = np.bincount(2 * codes.astype(np.intp, copy=False) + (scores > 0.5),
                            minlength=2 * n_groups).reshape(-1, 2)
        free, sizes = cells[:, 1], cells.sum(axis=1)
    if np.any(sizes == 0):
        raise ValueError("parity_decisions needs every group to be present in the batch.")
    rates0 = free / sizes
    if tolerance * sizes.min() >= 1:
        # Every level admits an integer count in every group, so the objective rises
        # towards the unconstrained rates: the optimal level lies between them.
        lo = max(0.0, rates0.min() - tolerance)
        hi = min(1.0, rates0.max())
        lo, hi = min(lo, hi), max(lo, hi)
    else:  # some levels admit no count in a small group: search them all
        lo, hi = 0.0, 1.0
    ranges = [(lo, hi)] if tables is None else _level_ranges(tables, sizes, free, tolerance, lo, hi)
    parts = [_candidate_levels(sizes, tolerance, a, b) for a, b in ranges]
    level_num = np.concatenate([num for num, _ in parts])
    level_den = np.concatenate([den for _, den in parts])
    # Counts each group can take at a candidate level: only their window is sorted.
    levels = [_level_counts(level_num[i : i + _CHUNK], level_den[i : i + _CHUNK], sizes, free,
                            tolerance) for i in range(0, level_num.size, _CHUNK)]
    low = np.min([chosen.min(axis=1) for chosen, _ in levels], axis=0)
    high = np.max([chosen.max(axis=1) for chosen, _ in levels], axis=0)
    if tables is None:
        ranked = [_RankedWindow(scores, rows, int(a), int(b)) for rows, a, b in
                  zip(_group_rows(codes, n_groups, sizes), low, high, strict=True)]
    else:
        ranked = _binned_windows(scores, codes, tables, low, high)

    totals, counts = [], []
    for chosen, feasible in levels:
        total = np.zeros(chosen.shape[1])
        for g in range(n_groups):
            total += ranked[g].prefix(chosen[g])
        total[~feasible] = -np.inf
        near = np.flatnonzero(total >= tie_floor(total.max()))
        totals.append(total[near])
        counts.append(chosen[:, near])
    best_counts = preferred_counts(np.concatenate(totals), np.concatenate(counts, axis=1))

    # Selected: scores above the group's cut, and of the rows tied with the lowest
    # selected score, the first ones by position (all of them in the group's window).
    cuts = np.array([ranked[g].cut(best_counts[g]) for g in range(n_groups)])
    selected = scores > cuts[codes]
    for g in range(n_groups):
        selected[ranked[g].tied(best_counts[g])] = True
    decisions = selected.view(np.int8).astype(int)
    thresholds = np.array([ranked[g].threshold(best_counts[g]) for g in range(n_groups)])
    return ParityDecisions(decisions, best_counts, sizes, thresholds, tolerance)


#: Score bins of the bounds on each group's best sums (a power of 2: exact bin edges), and
#: intervals of levels bounded at once.
_BINS = 1 << 12
_INTERVALS = 1 << 12
_GRID_DEN = 1 << 30


def _histogram(scores, codes, k):
    """Per group, rows and sums of gains ``2 s - 1`` above each score bin (descending), or None.

    ``rows[g, i]`` rows of group ``g`` have their score in the ``i`` highest bins, whose
    gains sum to ``gains[g, i]`` (``i = 0 .. B``). None for a small batch or scores outside
    ``[0, 1]`` (the bounds then stay unused).
    """
    if scores.size < 4 * _BINS or not (scores.min() >= 0.0 and scores.max() <= 1.0):
        return None
    key = np.multiply(scores, _BINS).astype(np.intp)  # exact: B is a power of 2
    np.minimum(key, _BINS - 1, out=key)
    key += codes * _BINS
    count = np.bincount(key, minlength=k * _BINS).reshape(k, _BINS)[:, ::-1]
    total = np.bincount(key, weights=scores, minlength=k * _BINS).reshape(k, _BINS)[:, ::-1]
    zero = np.zeros((k, 1))
    rows = np.hstack([zero, np.cumsum(count, axis=1)])
    gains = np.hstack([zero, np.cumsum(2.0 * total - count, axis=1)])
    return rows, gains, key


def _binned_windows(scores, codes, tables, low, high):
    """:class:`_BinnedWindow` of every group, the windows' rows found in one pass over ``key``."""
    rows, gains, key = tables
    k = rows.shape[0]
    spans = []
    member = np.zeros(k * _BINS, dtype=bool)
    for g in range(k):
        m = int(rows[g, -1])
        # Descending bins holding ranks low[g] and high[g] - 1 (rows[g, i] <= rank < rows[g, i + 1]).
        first, last = (int(np.searchsorted(rows[g], r, side="right")) - 1
                       for r in (min(low[g], m - 1), max(high[g] - 1, 0)))
        first = max(min(first, _BINS - 1), 0)
        last = max(min(last, _BINS - 1), first)
        spans.append((first, last))
        member[g * _BINS + _BINS - 1 - last : g * _BINS + _BINS - first] = True  # ascending
    win = np.flatnonzero(member[key])
    win_codes = codes[win]
    return [_BinnedWindow(scores, codes, g, rows[g], gains[g], *spans[g], win[win_codes == g])
            for g in range(k)]


def _level_ranges(tables, sizes, free, tolerance, lo, hi):
    """Ranges of levels in ``[lo, hi]`` that can hold an optimum: ``[(a, b), ...]``.

    Per group, the sum of the ``c`` largest gains ``2 s - 1`` is bounded above
    and below from the histogram (:func:`_histogram`: exact counts per bin,
    scores within the bin's edges). The levels are cut into intervals; an
    interval whose upper bound is below the lower bound of a feasible grid
    level holds no optimum and is dropped. Bounds only prune: the survivors are
    searched exactly.
    """
    rows, gains, _ = tables
    k = sizes.size
    top_edge = 1.0 - np.arange(_BINS) / _BINS  # descending bins: edges of bin i
    low_edge = top_edge - 1.0 / _BINS

    def bound(c, edge):  # per group and column of counts c (k, m)
        i = np.empty(c.shape, dtype=np.intp)
        for g in range(k):
            i[g] = np.searchsorted(rows[g], c[g], side="right") - 1
        i = np.clip(i, 0, _BINS - 1)
        g = np.arange(k)[:, None]
        return (gains[g, i] + (c - rows[g, i]) * (2.0 * edge[i] - 1.0)).sum(axis=0)

    start = int(np.floor(lo * _GRID_DEN))
    step = max(1, -(-int(np.ceil(hi * _GRID_DEN) - start) // _INTERVALS))
    num = start + step * np.arange(_INTERVALS + 1, dtype=np.int64)
    chosen, feasible = _level_counts(num, np.full(num.size, _GRID_DEN, np.int64), sizes, free,
                                     tolerance)
    if not feasible.any():
        return [(lo, hi)]
    best_low = float(bound(chosen[:, feasible], low_edge).max())  # a feasible objective's floor
    peak = rows[:, _BINS // 2][:, None]  # the upper bound rises while the bin's top is > 1/2
    upper = bound(np.clip(peak, chosen[:, :-1], chosen[:, 1:]), top_edge)
    keep = upper >= best_low - 1e-9 * (1.0 + float(sizes.sum()))
    # Merge kept neighbours into ranges of levels (the grid's rationals, as floats).
    edges = np.diff(np.concatenate([[0], keep.view(np.int8), [0]]))
    first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(num[a] / _GRID_DEN, num[b] / _GRID_DEN) for a, b in zip(first, last, strict=True)]


def _level_counts(num, den, sizes, free, tolerance):
    """Per group and level ``num / den``: the count closest to ``free`` in its range."""
    chosen = np.empty((sizes.size, num.size), dtype=np.int64)
    feasible = np.ones(num.size, dtype=bool)
    q = num / den
    for g, n_g in enumerate(sizes.tolist()):
        c_lo, c_hi = _count_ranges(num, den, n_g, tolerance, q)
        c_lo, c_hi = np.maximum(c_lo, 0), np.minimum(c_hi, n_g)
        feasible &= c_lo <= c_hi
        chosen[g] = np.clip(free[g], c_lo, np.maximum(c_lo, c_hi))
    return chosen, feasible


def _group_rows(codes, n_groups, sizes):
    """Row indices of each group, in increasing position."""
    if n_groups <= 4:
        return [np.flatnonzero(codes == g) for g in range(n_groups)]
    small = codes.astype(np.uint16 if n_groups < 1 << 16 else np.int64)
    order = np.argsort(small, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [order[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


class _Window:
    """One group's rows ranked by decreasing score (ties by position), sorted only where needed.

    Counts in a window of ranks are the only ones asked for: the ``p`` rows
    above it are selected by any of them, rows below by none, and the rows
    whose rank can fall inside (``win``: positions in the batch, increasing;
    with every row tied with them) are sorted. Subclasses find the window and
    the group's extreme scores outside it.
    """

    def _rank(self, top_gain, win, values):
        """Set the window from the ``p`` rows above it (gains ``top_gain``) and its rows."""
        self.win, self.win_values = win, values  # by position
        self.win_scores = np.sort(values)[::-1]  # positions matter only among ties
        gains = 2.0 * self.win_scores - 1.0
        self.prefix_win = top_gain + np.concatenate([[0.0], np.cumsum(gains)])

    def prefix(self, c):
        """Sum of the ``c`` largest gains ``2 s - 1`` (``c`` within the window)."""
        return self.prefix_win[c - self.p]

    def cut(self, c):
        """Scores above it are among the ``c`` highest; so are the rows :meth:`tied` adds."""
        if c == 0:
            return np.inf
        if c <= self.p:  # all of the top: every row from its lowest score up
            return np.nextafter(self._desc(c - 1), -np.inf)
        return self._desc(c - 1)

    def tied(self, c):
        """Positions of the rows tied with the lowest selected score and among the ``c``
        highest (the first by position)."""
        if c <= self.p:  # the window's scores are all below the top's
            return self.win[:0]
        head = self.win_scores[: c - self.p]
        wanted = int(np.count_nonzero(head == head[-1]))
        return self.win[self.win_values == head[-1]][:wanted]

    def _desc(self, r):
        """The ``r``-th largest score (0-based), for ``r`` next to the window."""
        if r < self.p:
            return self._top_min() if r == self.p - 1 else self._max()
        if r < self.p + self.win_scores.size:
            return self.win_scores[r - self.p]
        return self._below_max()

    def threshold(self, c):
        """A threshold selecting (``score >= threshold``) the ``c`` highest scores."""
        if c == 0:
            return np.nextafter(self._max(), np.inf)
        if c == self.m:
            return self._min()
        last, first_out = self._desc(c - 1), self._desc(c)
        return last if last == first_out else 0.5 * (last + first_out)


class _RankedWindow(_Window):
    """:class:`_Window` of the rows ``rows`` whose counts lie in ``[a, b]``.

    The window's score bounds come from a strided subsample and are checked by
    counting; only when a check fails is the exact order statistic found by a
    partition.
    """

    def __init__(self, scores, rows, a, b):
        v = scores[rows]
        hi_val, self.lo_val = _window_bounds(v, a, b)
        self.v, self.m, self.top = v, v.size, v > hi_val
        self.p = int(np.count_nonzero(self.top))
        win = np.flatnonzero((v >= self.lo_val) & ~self.top)
        self._rank(2.0 * float(np.dot(v, self.top)) - self.p, rows[win], v[win])

    def _top_min(self):
        return float(self.v[self.top].min())

    def _below_max(self):
        return float(np.max(self.v[self.v < self.lo_val], initial=-np.inf))

    def _max(self):
        return self.v.max()

    def _min(self):
        return self.v.min()


class _BinnedWindow(_Window):
    """:class:`_Window` of group ``g`` from the score histogram: the window is whole bins.

    Rows in the descending bins before ``first`` rank above the window (their
    number and gains are the histogram's), rows after ``last`` below it; the
    window's rows are ``win``. The extremes outside the window (for
    thresholds, rarely needed) are computed when asked.
    """

    def __init__(self, scores, codes, g, rows, gains, first, last, win):
        self.scores, self.codes, self.g = scores, codes, g
        self.m = int(rows[-1])
        self.p = int(rows[first])
        self.top_edge = 1.0 - first / _BINS if first > 0 else np.inf  # the top bin holds s = 1
        self.lo_val = 1.0 - (last + 1) / _BINS
        if self.p + win.size != int(rows[last + 1]):
            raise SolverError("The window of the parity decisions lost rows; this is a bug, "
                              "please report it.")
        self._rank(float(gains[first]), win, scores[win])

    def _group(self, where):
        return self.scores[(self.codes == self.g) & where(self.scores)]

    def _top_min(self):
        return float(self._group(lambda s: s >= self.top_edge).min())

    def _below_max(self):
        return float(np.max(self._group(lambda s: s < self.lo_val), initial=-np.inf))

    def _max(self):
        return float(self._group(lambda s: s == s).max())

    def _min(self):
        return float(self._group(lambda s: s == s).min())


#: Subsample size for the window's score bounds, and their margin in standard errors.
_SUBSAMPLE = 1 << 14
_MARGIN_SE = 4.0


def _window_bounds(v, a, b):
    """Scores ``hi >= v_(a)`` and ``lo <= v_(b-1)`` (0-based ranks, decreasing) close to them.

    Rows above ``hi`` rank below ``a``, rows from ``lo`` up include rank
    ``b - 1``: checked by counting, so the bounds are exact whatever the sample.
    """
    m = v.size
    if m <= 4 * _SUBSAMPLE:
        return _exact_bounds(v, a, b)
    step = m // _SUBSAMPLE
    desc = -np.sort(-v[::step])
    size = desc.size
    q = np.clip(np.array([a, b - 1]) / m, 0.0, 1.0)
    spread = _MARGIN_SE * np.sqrt(size * q * (1.0 - q)) + 2.0  # sampled ranks' std. errors
    i_hi = int(np.floor(q[0] * size - spread[0]))
    i_lo = int(np.ceil(q[1] * size + spread[1]))
    hi = desc[i_hi] if a < m and i_hi >= 0 else np.inf
    lo = desc[i_lo] if b >= 1 and i_lo < size else -np.inf
    if np.count_nonzero(v > hi) <= a and (b < 1 or np.count_nonzero(v >= lo) >= b):
        return hi, lo
    return _exact_bounds(v, a, b)


def _exact_bounds(v, a, b):
    """The scores of ranks ``a`` and ``b - 1`` (decreasing), by one partition."""
    m = v.size
    neg = np.partition(-v, sorted({min(a, m - 1), max(b - 1, 0)}))
    return (-neg[a] if a < m else -np.inf), (-neg[b - 1] if b >= 1 else np.inf)


def _threshold_between(desc_scores, c):
    """A threshold selecting (``score >= threshold``) the ``c`` highest of ``desc_scores``."""
    if c == 0:
        return np.nextafter(desc_scores[0], np.inf)
    if c == desc_scores.size:
        return desc_scores[-1]
    last, first_out = desc_scores[c - 1], desc_scores[c]
    return last if last == first_out else 0.5 * (last + first_out)


def apply_thresholds(scores, codes, thresholds):
    """0/1 decisions ``scores >= thresholds[codes]``."""
    return (scores >= thresholds[codes]).astype(int)
