"""Blocked full-data passes of the exact solver for uniform weights and scalar bounds.

With uniform weights (demographic parity) the passes work on shifts
``c_g = nu_g / n_g`` and the whole solve reads the data three times, block by
block so that temporaries stay in cache: the group sums of the scores (two
groups: the total and one dot product with the indicator of group 1; more:
``bincount``), the bracket pass that lists the rows not free for every shift of
the bracket, and the output pass ``clip(s - c_g)``, which also takes the group
sums of each block it writes for the verification. Two groups read the codes as
``uint8`` (cached on the family) and convert them to floats block by block;
more groups gather by the ``intp`` codes (faster than by ``uint8``). Dot
products are :func:`skfairlayer._numeric.dot` (BLAS on the calling thread). A
:class:`GroupLayout` caches the group sizes and codes, for callers that solve
many problems over one fixed partition. The reduced problem on each bracket is
solved by :mod:`skfairlayer._solvers._reduced`.
"""

import numpy as np

from .._numeric import MIN_SCALE, clip, dot, indicator_sums
from . import Solution
from ._reduced import (
    _MIN_SAMPLE,
    _ROUNDS,
    _SAMPLE_ROWS,
    _Model,
    _row_states,
    _shrunk,
    _solve_model,
    _spread,
)

__all__ = ["GroupLayout"]

#: Rows per block of a full-data pass on large data (temporaries stay in cache).
_BLOCK = 1 << 16
_BLOCKED_FROM = 1 << 17


class GroupLayout:
    """Group structure of a fixed partition, prepared once for repeated exact solves.

    :func:`solve_exact` needs the group sizes and, for two groups, a float
    indicator of group 1 (shifting and summing by contiguous operations is
    several times faster than gathers and ``np.bincount``). ``project`` derives
    them on every call; a caller that projects many batches over the same
    partition (epochs of fine-tuning over one training set, repeated scoring of
    one population) can build a layout once and pass it as ``layout=``.

    Parameters
    ----------
    codes : array-like of int of shape (n_samples,)
        Group of each row in ``[0, n_groups)``; ``-1`` for rows outside the family.
    n_groups : int
        Number of groups.

    Attributes
    ----------
    codes : ndarray of shape (n_samples,), dtype=intp
        The group codes.
    n_groups : int
        Number of groups.
    counts : ndarray of shape (n_groups,), dtype=float64
        Number of rows of each group.
    n_outside : int
        Number of rows with code ``-1``.
    indicator : ndarray of shape (n_samples,), dtype=float64 or None
        ``1.0`` on the rows of group 1, ``0.0`` elsewhere; only for two groups
        without outside rows.
    small_codes : ndarray of shape (n_samples,), dtype=uint8 or None
        The codes as ``uint8`` (two groups, no outside rows), which the
        two-group passes read in preference to ``indicator``.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._solvers._exact import GroupLayout
    >>> layout = GroupLayout(np.array([0, 1, 1, 0, 1]), n_groups=2)
    >>> layout.counts
    array([2., 3.])
    >>> layout.indicator
    array([0., 1., 1., 0., 1.])
    """

    def __init__(self, codes, n_groups):
        codes = np.asarray(codes)
        if codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise TypeError(
                "codes must be a 1-D array of integer group codes. "
                f"Got an array of dtype {codes.dtype} and shape {codes.shape} instead."
            )
        if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 1:
            raise ValueError(f"n_groups must be a positive integer. Got {n_groups!r} instead.")
        codes = codes.astype(np.intp, copy=False)
        if codes.size and (codes.min() < -1 or codes.max() >= n_groups):
            raise ValueError(
                f"codes must lie in [-1, {n_groups}). Got values from {codes.min()} to "
                f"{codes.max()} instead."
            )
        self.codes, self.n_groups = codes, int(n_groups)
        outside = codes < 0
        self.n_outside = int(np.count_nonzero(outside))
        inside = codes if self.n_outside == 0 else codes[~outside]
        self.counts = np.bincount(inside, minlength=self.n_groups).astype(np.float64)
        self.indicator = self.small_codes = None
        if self.n_groups == 2 and self.n_outside == 0:
            self.indicator = codes.astype(np.float64)
        if self.n_groups == 2 and self.n_outside == 0:
            self.small_codes = codes.astype(np.uint8)

    @classmethod
    def from_family(cls, fam):
        """The layout of a uniform family whose groups are all present, from its own arrays.

        Reuses the family's sizes (``totals``) and its cached ``uint8`` codes.
        """
        layout = cls.__new__(cls)
        layout.codes, layout.n_groups, layout.n_outside = fam.codes, int(fam.n_groups), 0
        layout.counts = np.asarray(fam.totals, dtype=np.float64)
        layout.small_codes = fam._small_codes
        layout.indicator = None  # the passes convert the small codes block by block
        return layout

    def __repr__(self):
        return (
            f"GroupLayout(n_samples={self.codes.size}, n_groups={self.n_groups}, "
            f"n_outside={self.n_outside})"
        )


def _sample_sizes(codes, weights, stride, k):
    """Group sizes ``1 / w`` read off the rows of a uniform-weight subsample (None if inconsistent)."""
    gs, ws = codes[::stride], weights[::stride]
    if np.any(gs < 0):
        keep = gs >= 0
        gs, ws = gs[keep], ws[keep]
    if gs.size == 0 or np.any(ws <= 0) or gs.max() >= k:
        return None, None
    inv = 1.0 / ws
    ref = np.zeros(k)
    ref[gs] = inv
    if not np.array_equal(ref[gs], inv):
        return None, None
    sizes = np.round(ref)
    if np.any(np.abs(sizes - ref) > 1e-6 * np.maximum(ref, 1.0)):
        return None, None
    return sizes, np.bincount(gs, minlength=k)


def _group_sizes(fam, layout, n):
    """Group sizes, rows per group in the strided subsample, and the stride.

    Sizes come from the layout, else from the family's ``totals`` when every
    row is in a group (``dense_uniform``) or the sampled weights confirm them
    (``w = 1 / totals``), else from ``1 / w`` of the sampled rows (groups the
    subsample misses are then unknown: 0).
    """
    codes, k = fam.codes, fam.n_groups
    totals = getattr(fam, "totals", None)
    # Rows per group, not in all, set the bracket: more groups, a larger subsample (at most
    # 1/64 of the data beyond the base size, whose solve would cost more than it saves).
    budget = min(_SAMPLE_ROWS * max(1, k // 2), max(_SAMPLE_ROWS, n // 64))
    stride = max(1, n // budget)

    dense = layout is None and fam.dense_uniform  # sizes are the totals (every row in a group)

    def draw(stride):
        if dense:
            return np.asarray(totals, dtype=np.float64), np.bincount(codes[::stride], minlength=k)
        if layout is None:
            sizes, counts = _sample_sizes(codes, fam.weights, stride, k)
            if sizes is not None and totals is not None and np.shape(totals) == (k,):
                seen = counts > 0
                if np.array_equal(sizes[seen], np.asarray(totals, dtype=np.float64)[seen]):
                    sizes = np.asarray(totals, dtype=np.float64)
            return sizes, counts
        gs = codes[::stride]
        if layout.n_outside:
            gs = gs[gs >= 0]
        return layout.counts, np.bincount(gs, minlength=k)

    sizes, sub_counts = draw(stride)
    if sizes is None:
        return None, None, stride
    thin = (sub_counts < _MIN_SAMPLE) & (sizes >= _MIN_SAMPLE)
    if np.any(thin):  # a sizeable group the stride under-sampled: sample finer
        finer = max(1, int(sizes[thin].min()) // _MIN_SAMPLE)
        if finer < stride and n // finer <= 8 * budget:
            more, sub_counts = draw(finer)
            if more is None:
                return None, None, stride
            sizes = np.where(sub_counts > 0, more, sizes)
            stride = finer
    return np.asarray(sizes, dtype=np.float64).copy(), sub_counts, stride


def _solve_uniform(problem, layout, warm_start):
    """Uniform weights and scalar bounds: passes on shifts ``c_g = nu_g / n_g``.

    Returns None when this path does not apply (the caller then uses the
    general path).
    """
    fam = problem.families[0]
    s, codes = problem.scores, fam.codes
    n, k, eps = s.shape[0], fam.n_groups, float(fam.tolerance)
    lb, ub = float(problem.lower), float(problem.upper)

    sizes, sub_counts, stride = _group_sizes(fam, layout, n)
    if sizes is None:
        return None
    tiny = sub_counts < _MIN_SAMPLE  # no reliable estimate: every row is kept
    known = (sub_counts > 0) | (sizes > 0)
    if layout is not None:
        two = k == 2 and (layout.indicator is not None or layout.small_codes is not None) \
            and not tiny.any()
        if layout.n_outside:
            return None
    else:
        two = k == 2 and not tiny.any() and sizes.sum() == n
        if not two and (sizes[known].sum() != n if np.all(known) else codes.min() < 0):
            return None  # rows outside the family: general path

    small = layout.small_codes if layout is not None else fam._small_codes
    # Full-data group sums of s: control variate of the subsample and part of the aggregates.
    if two:
        f = _Indicator(small if small is not None else codes,
                       layout.indicator if layout is not None and small is None else None)
        sums = f.sums(s)
    else:
        f = None
        sums = np.bincount(codes, weights=s, minlength=k)
        if sums.size > k:
            return None
        sizes = np.where(known, sizes, 0.0)

    centre = _uniform_centre(s, codes, stride, sizes, sums, sub_counts, tiny, lb, ub, eps,
                             warm_start)
    if centre is None:
        return None
    center, h = centre
    center = np.where(tiny, np.inf, center)
    h = np.clip(h, 1e-9 * (1.0 + abs(lb) + abs(ub)), 2.0 * (ub - lb) + 1.0)

    for rounds in range(1, _ROUNDS + 1):  # noqa: B007
        s_x, g_x = _uniform_pass(s, codes, f, center, float(h.max()), lb, ub)
        red = _uniform_reduced(s_x, g_x, sizes, sums, center, h, lb, ub, eps, known)
        if red is None:
            return None
        model, lo, hi, sizes_now = red
        n_g = np.maximum(sizes_now, 1)
        start = np.where(np.isfinite(center), center, 0.0) * n_g
        res = _solve_model(model, lo, hi, 1, start)
        if res.ok:
            sizes = sizes_now
            break
        if res.est is None:
            h = 8 * h
        else:
            # The miss's estimate uses exact aggregates and extrapolates linearly past the
            # bracket: its error is of second order in the step, well within a quarter of it.
            new = res.est / n_g
            reliable = ~tiny & (sizes_now > 0)
            step = float(np.abs(new - center)[reliable].max()) if np.any(reliable) else 0.0
            h = np.maximum(2 * h, 0.25 * step)
            center = np.where(tiny, np.inf, new)
    else:
        return None

    nu = res.nu
    shifts = np.where(sizes > 0, nu / np.maximum(sizes, 1), 0.0)
    totals = fam.totals if fam.dense_uniform else None  # then the family's means are sums / totals
    out, read = _uniform_output(s, codes, f, shifts, lb, ub, totals)
    path = "uniform-2" if two else "uniform"
    info = {"path": path, "shifts": shifts, "spread": float(h.max()), "rounds": rounds}
    if read is not None:
        info["verification"] = read
    return Solution(out, [nu], np.array([res.t]), solver="exact", iterations=rounds, info=info)


def _uniform_centre(s, codes, stride, sizes, sums, sub_counts, tiny, lb, ub, eps, warm_start):
    """Centre (shifts) and half-widths of the first bracket (per group), or None.

    The warm start's shifts, else the strided subsample solved exactly with
    control variates and a few standard errors of its estimate (a group
    without a reliable estimate gets the widest of the others).
    """
    k = sizes.size
    warm = _warm_shifts(warm_start, k, sizes)
    if warm is not None:
        return warm
    sub = _uniform_sample_model(s, codes, stride, sizes, sums, sub_counts, lb, ub, eps)
    inf = np.full(k, np.inf)
    rs = _solve_model(sub, -inf, inf, 1)
    if not rs.ok:
        return None
    delta = _spread(sub, rs.nu, sizes, sub_counts)
    n_g = np.maximum(sizes, 1)
    reliable = ~tiny & (sizes > 0)
    h = delta / n_g
    widest = float(h[reliable].max()) if np.any(reliable) else 1.0
    return rs.nu / n_g, np.where(reliable, h, widest)


def _warm_shifts(warm_start, k, sizes):
    """Centre (shifts) and bracket half-width from a previous solution, or None."""
    if warm_start is None:
        return None
    info = getattr(warm_start, "info", None) or {}
    shifts = info.get("shifts")
    if shifts is None:
        duals = getattr(warm_start, "duals", None)
        if not duals:
            return None
        shifts = np.asarray(duals[0], dtype=np.float64) / np.maximum(sizes, 1)
    shifts = np.asarray(shifts, dtype=np.float64)
    if shifts.shape != (k,) or not np.all(np.isfinite(shifts)):
        return None
    spread = float(info.get("spread", 0.0) or 0.0)
    if not spread > 0:
        spread = 1e-3 + 1e-2 * float(np.abs(shifts).max())
    return shifts.copy(), np.full(k, spread)


def _uniform_sample_model(s, codes, stride, sizes, sums, sub_counts, lb, ub, eps):
    """The strided subsample as a model in multiplier space, means corrected by control variates."""
    k = sizes.size
    ss, gs = s[::stride], codes[::stride]
    if np.any(gs < 0):
        keep = gs >= 0
        ss, gs = ss[keep], gs[keep]
    m = np.maximum(sub_counts, 1).astype(np.float64)
    n_g = np.maximum(sizes, 1)
    sub_sum = np.bincount(gs, weights=ss, minlength=k)
    # Rows e = (s - ub) n_g, l = (s - lb) n_g, c = 1 / n_g^2 scaled by n_g / m_g; the group
    # mean of s replaces its subsample estimate (control variate).
    nr = n_g[gs]
    c = 1.0 / (nr * m[gs])
    A = ub + np.where(sub_counts > 0, sums / n_g - sub_sum / m, 0.0)
    return _Model((ss - ub) * nr, (ss - lb) * nr, c, gs, A, np.zeros(k), sub_counts > 0, eps)


def _blocks(n):
    """Slices of a full-data pass: whole arrays, or cache-sized blocks for large data."""
    if n < _BLOCKED_FROM:
        return [slice(0, n)]
    return [slice(a, min(a + _BLOCK, n)) for a in range(0, n, _BLOCK)]


class _Indicator:
    """Indicator of group 1 for the two-group passes, block by block.

    A float indicator when the layout has one, else the group codes (``uint8``
    from the family when it has them: an eighth of the memory traffic of
    ``intp``) converted per block into a cache-resident buffer: no ``n``-float
    array is written, whose fresh pages would cost more than the conversions.
    """

    def __init__(self, codes, f=None):
        self.codes, self.f, self._buf = codes, f, None

    def block(self, sl):
        """The indicator on the rows ``sl``, as floats."""
        if self.f is not None:
            return self.f[sl]
        m = sl.stop - sl.start
        if self._buf is None or self._buf.size < m:
            self._buf = np.empty(m)
        out = self._buf[:m]
        np.copyto(out, self.codes[sl])
        return out

    def scaled(self, sl, factor, out):
        """``factor * f`` on the rows ``sl``, into ``out`` (converted in the multiply)."""
        return np.multiply(self.f[sl] if self.f is not None else self.codes[sl], factor, out=out)

    def sums(self, s):
        """``[sum_{i in 0} s_i, sum_{i in 1} s_i]``: the total and ``f . s``, block by block."""
        ind = self.f if self.f is not None else self.codes
        total, one = indicator_sums(ind, s, np.empty(max(1, _blocks(s.shape[0])[0].stop)))
        return np.array([total - one, one])


def _uniform_pass(s, codes, f, center, h, lb, ub):
    """The scores and codes of the rows not free for every shift within ``h`` of
    ``center``, gathered while their block is in cache.

    ``h``: the widest of the groups' half-widths (the rows listed are then a superset
    of those of each group's own bracket; :func:`_uniform_reduced` classifies them).

    Two groups: ``s - (c_1 - c_0) f`` against the bracket of group 0; more
    groups: ``s - c_g`` (a gather) against ``[lb + h, ub - h]`` (a group kept
    whole has ``c_g = inf``: all its rows are listed). Block by block, in cache. (Thresholds shared by every group, on
    the scores alone, skip the gather but list several times more rows, and
    listing costs more than the gather.)
    """
    if f is not None:
        d, low, high = center[1] - center[0], lb + center[0] + h, ub + center[0] - h
    else:
        low, high = lb + h, ub - h
    blocks = _blocks(s.shape[0])
    size = blocks[0].stop
    buf, below, above = np.empty(size), np.empty(size, dtype=bool), np.empty(size, dtype=bool)
    scores, groups = [], []
    for sl in blocks:
        m = sl.stop - sl.start
        t, x1, x2 = buf[:m], below[:m], above[:m]
        if f is not None:
            f.scaled(sl, -d, t)
            np.add(t, s[sl], out=t)
        else:
            np.take(center, codes[sl], out=t, mode="clip")
            np.subtract(s[sl], t, out=t)
        np.less(t, low, out=x1)
        np.greater(t, high, out=x2)
        np.logical_or(x1, x2, out=x1)
        idx = np.flatnonzero(x1)
        scores.append(s[sl].take(idx))
        groups.append(codes[sl].take(idx))
    if len(scores) == 1:
        return scores[0], groups[0]
    return np.concatenate(scores), np.concatenate(groups)


def _uniform_reduced(s_x, g_x, sizes, sums, center, h, lb, ub, eps, known):
    """The problem on the bracket: extracted rows that stay uncertain, the rest aggregated.

    Rows not extracted are free for every shift within ``h`` of the centre; an
    extracted row is at the top, at the bottom, free, or uncertain on the
    (slightly shrunk, against rounding) bracket. The returned model, in
    multiplier space, equals the original on the bracket ``[lo, hi]``.
    """
    k = sizes.size
    if g_x.size and g_x.min() < 0:
        return None
    cnt_x = np.bincount(g_x, minlength=k).astype(np.float64)
    sizes = np.where(known, sizes, cnt_x)  # groups kept whole: every row was extracted
    if np.any(cnt_x > sizes):
        return None
    n_g = np.maximum(sizes, 1)
    finite = np.isfinite(center)
    hh = _shrunk(center, h, lb, ub)
    sure = finite[g_x]  # a group kept whole (centre inf): every row uncertain
    bottom, top, free = (x & sure for x in _row_states(s_x - center[g_x], hh[g_x], lb, ub))
    unc = ~(top | bottom | free)
    # n_g A_g = sum of s over free rows + ub (top and uncertain rows) + lb (bottom rows).
    val = np.where(bottom, lb, np.where(free, s_x, ub))
    rest = sums - np.bincount(g_x, weights=s_x, minlength=k)
    A = np.where(sizes > 0, (rest + np.bincount(g_x, weights=val, minlength=k)) / n_g, 0.0)
    Q = (sizes - cnt_x + np.bincount(g_x, weights=free, minlength=k)) / (n_g * n_g)
    return _bracket_model(s_x[unc], g_x[unc], sizes, A, Q, center, hh, lb, ub, eps)


def _bracket_model(su, gu, sizes, A, Q, center, hh, lb, ub, eps):
    """The reduced model (uncertain rows ``su`` of groups ``gu`` over the aggregates ``A``,
    ``Q``) in multiplier space, its bracket ``[lo, hi]`` and the group sizes."""
    n_g = np.maximum(sizes, 1)
    nr = n_g[gu]
    model = _Model((su - ub) * nr, (su - lb) * nr, 1.0 / (nr * nr), gu, A, Q, sizes > 0, eps)
    finite = np.isfinite(center)
    lo = np.where(finite, (center - hh) * n_g, -np.inf)
    hi = np.where(finite, (center + hh) * n_g, np.inf)
    return model, lo, hi, sizes


def _uniform_output(s, codes, f, shifts, lb, ub, totals=None):
    """``clip(s - shift_g, lb, ub)`` and what the verification reads off it.

    Every block is clipped whole: the outputs lie within the bounds by
    construction, unless one is NaN, which its group's sum then shows. While
    each block is in cache its group sums are taken: with ``totals`` (the group
    sizes of a family whose rows are all in a group), the verification's
    ``range`` and ``gaps`` of the outputs, without another pass over them for
    two groups (more groups: one ``bincount`` of the output after the pass);
    None without ``totals``. Two groups sum group 1 against the block's scaled
    indicator ``-d f`` already in cache (``d = c_1 - c_0``), divided by ``-d``.
    """
    n, k = s.shape[0], shifts.size
    out = np.empty(n)
    blocks = _blocks(n)
    sums = np.zeros(k)
    if f is not None:
        d = float(shifts[1] - shifts[0])
        scaled = abs(d) > MIN_SCALE  # else group 1's sum against the indicator itself
        buf = np.empty(blocks[0].stop)
    for sl in blocks:
        o, x = out[sl], s[sl]
        if f is not None:
            t = f.scaled(sl, -d, buf[: sl.stop - sl.start])
            np.add(t, x, out=o)
            np.subtract(o, shifts[0], out=o)
        else:
            np.take(shifts, codes[sl], out=o, mode="clip")
            np.subtract(x, o, out=o)
        clip(o, lb, ub, out=o)
        if totals is not None and f is not None:
            one = dot(t, o) / -d if scaled else dot(f.block(sl), o)
            sums += (float(o.sum()) - one, one)
    if totals is None:
        return out, None
    if f is None:  # one bincount over the whole output: faster than one per block
        sums = np.bincount(codes, weights=out, minlength=k)
    means = sums / totals
    gap = float(means.max() - means.min()) if k > 1 else 0.0
    bounds = (lb, ub) if np.isfinite(sums).all() else (np.nan, np.nan)
    return out, {"range": bounds, "gaps": [gap]}
