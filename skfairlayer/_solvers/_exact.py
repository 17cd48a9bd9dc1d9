"""Exact solver for one parity family over binary outputs.

KKT conditions of ``min 1/2 ||p - s||^2`` s.t. ``lb <= p <= ub`` and
``t <= m_g(p) <= t + eps`` (``m_g(p) = sum_{i in g} w_i p_i``) give
``p_i = clip(s_i - nu_g w_i, lb_i, ub_i)``: one multiplier per group. Each group
mean ``m_g(nu)`` is a decreasing piecewise-linear function of its multiplier;
the level ``t`` is fixed by ``sum_g nu_g(t) = 0``, a monotone scalar equation.

:func:`solve_sorted` tabulates every group's breakpoints (``O(n log n)``) and
solves the scalar equation by bisection; it is the reference and the fallback.

:func:`solve_exact` reaches the same optimum in a few passes over the data:

1. *Centre.* A strided subsample (``s[::stride]``, which also samples score-
   sorted or grouped data evenly) is solved exactly, each group's mean being
   corrected by a control variate (the full-data group mean of ``s``), so the
   estimated multipliers carry only the sampling noise of the *clamped* rows.
   A previous solution (``warm_start``) can replace the subsample solve.
2. *Bracket.* Around the centre, a bracket ``[nu_g - d_g, nu_g + d_g]`` per
   group, ``d_g`` a few standard errors of the estimate. One pass over the
   data finds the rows that are free for every multiplier in the bracket
   (most rows; aggregated into an affine term ``A_g - Q_g nu``) and extracts
   the others.
3. *Reduce.* On the bracket, the reduced problem (extracted rows that stay
   uncertain, plus the aggregates) has the same group means as the original.
   It is solved by a semismooth Newton on the multipliers, exact as soon as no
   row changes state (top / free / bottom) in a step; larger reduced problems
   are subsampled and bracketed again, and sorted tables are the fallback.
4. *Certify.* A solution of the reduced problem whose multipliers lie inside
   every bracket satisfies the KKT conditions of the original problem, so it is
   *the* optimum (the objective is strictly convex). Otherwise the bracket is
   re-centred on the reduced problem's estimate and widened; after a few
   rounds the general path, then :func:`solve_sorted`, answers.

The outputs then cost one pass. With uniform weights (demographic parity) and
scalar bounds the passes work on shifts ``c_g = nu_g / n_g`` and the whole solve
reads the data three times, block by block so that temporaries stay in cache:
the group sums of the scores (two groups: the total and one dot product with
the indicator of group 1; more: ``bincount``), the bracket pass that lists the
rows not free for every shift of the bracket, and the output pass
``s - c_g`` (the listed rows then clipped), which also takes the minimum,
maximum and group sums of each block it writes for the verification. Two
groups read the codes as ``uint8`` (cached on the family) and convert them to
floats block by block rather than writing a float indicator on every call;
more groups gather by the ``intp`` codes (faster than by ``uint8``). Dot products use
``einsum``, not BLAS, whose threads stall on a busy machine. A
:class:`GroupLayout` caches the group sizes and codes, for callers that solve
many problems over one fixed partition.
"""

import numpy as np

from ..exceptions import InfeasibleProblemError
from . import Solution

__all__ = ["GroupLayout", "solve_exact", "solve_sorted", "supports"]

#: Reduced problems with at most this many rows are solved from their tables.
_DIRECT_ROWS = 1024
#: Models with at most this many rows are first tried by Newton.
_NEWTON_ROWS = 65536
#: Target number of rows of a subsample.
_SAMPLE_ROWS = 2048
#: Subsample rows a group needs for its own estimate; smaller groups are kept whole.
_MIN_SAMPLE = 32
#: Rows per block of a full-data pass on large data (temporaries stay in cache).
_BLOCK = 1 << 16
_BLOCKED_FROM = 1 << 17
#: Half-width of a bracket, in standard errors of the centre.
_Z = 6.0
#: Re-centred attempts per level before falling back.
_ROUNDS = 4
_MAX_DEPTH = 16


def supports(problem):
    """Whether the exact solver handles ``problem``."""
    return (
        problem.scores.ndim == 1
        and len(problem.families) == 1
        and problem.rows is None
        and not problem.simplex
    )


# --------------------------------------------------------------------------------------
# Reference solver
# --------------------------------------------------------------------------------------


class _GroupTable:
    """Piecewise-linear map ``nu -> m_g(nu)`` of one group, from its sorted breakpoints."""

    def __init__(self, s, w, lb, ub):
        keep = w > 0
        s, w, lb, ub = s[keep], w[keep], lb[keep], ub[keep]
        self.low = float(np.dot(w, lb))   # m_g(+inf)
        self.high = float(np.dot(w, ub))  # m_g(-inf)
        enter = (s - ub) / w  # below this nu the row sits at ub
        leave = (s - lb) / w  # above this nu the row sits at lb
        x = np.concatenate([enter, leave])
        dslope = np.concatenate([-(w * w), w * w])
        order = np.argsort(x, kind="stable")
        x, dslope = x[order], dslope[order]
        slope = np.cumsum(dslope)  # slope of m on [x_j, x_{j+1}]
        m = np.empty_like(x)
        m[0] = self.high
        if x.size > 1:
            m[1:] = self.high + np.cumsum(slope[:-1] * np.diff(x))
        self.x, self.m, self.slope = x, m, slope

    def value(self, nu):
        """``m_g(nu)`` for a scalar ``nu``."""
        j = np.searchsorted(self.x, nu, side="right") - 1
        if j < 0:
            return self.high
        return self.m[j] + self.slope[j] * (nu - self.x[j])

    def inverse(self, target):
        """A multiplier ``nu`` with ``m_g(nu) = target`` (``low <= target <= high``)."""
        if target >= self.high:
            return self.x[0]
        if target <= self.low:
            return self.x[-1]
        # m is non-increasing along x: search on -m.
        j = np.searchsorted(-self.m, -target, side="right") - 1
        if self.slope[j] == 0.0:
            return self.x[j]
        return self.x[j] + (target - self.m[j]) / self.slope[j]


def _as_rows(bound, n):
    return np.broadcast_to(np.asarray(bound, dtype=np.float64), (n,))


def _check_tolerance(eps):
    if eps < 0:
        raise InfeasibleProblemError(f"tolerance must be >= 0. Got {eps!r} instead.")


def _check_feasible(low, high, eps, groups):
    """Raise unless a level ``t`` exists with ``low_g - eps <= t <= high_g`` for all groups."""
    t_min, t_max = low.max() - eps, high.min()
    if t_min > t_max + 1e-12:
        i, j = int(low.argmax()), int(high.argmin())
        raise InfeasibleProblemError(
            f"Parity within {eps!r} is impossible within the bounds: group {groups[i]} cannot go "
            f"below a mean of {low[i]:.6g} while group {groups[j]} cannot go above "
            f"{high[j]:.6g}. Increase the tolerance or widen the bounds."
        )
    return t_min, t_max


def _level_bracket(low, high, base, eps, groups):
    """Feasible range of the level ``t`` and a check of feasibility."""
    t_min, t_max = _check_feasible(low, high, eps, groups)
    # The optimal level lies between the extreme unconstrained means, clipped to the range.
    lo = min(max(base.min() - eps, t_min), t_max)
    hi = max(min(base.max(), t_max), t_min)
    return min(lo, hi), max(lo, hi)


def solve_sorted(problem):
    """Exact solution by per-group breakpoint tables and bisection on the level.

    The reference implementation: ``O(n log n)``, one table per group. Groups
    without a row of positive weight carry no constraint (multiplier 0).

    Parameters
    ----------
    problem : ProjectionProblem
        A problem :func:`supports` accepts.

    Returns
    -------
    solution : Solution
        Outputs, multipliers (one per group) and level.

    Raises
    ------
    InfeasibleProblemError
        If the tolerance is negative or the bounds make parity impossible.
    """
    fam = problem.families[0]
    s = problem.scores
    n, k, eps = s.shape[0], fam.n_groups, fam.tolerance
    lb, ub = _as_rows(problem.lower, n), _as_rows(problem.upper, n)
    _check_tolerance(eps)
    codes = fam.codes
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    groups, tables = [], []
    for g in range(k):
        idx = order[bounds[g] : bounds[g + 1]]
        if np.any(fam.weights[idx] > 0):
            groups.append(g)
            tables.append(_GroupTable(s[idx], fam.weights[idx], lb[idx], ub[idx]))
    nu = np.zeros(k)
    t = 0.0
    it = 0
    if tables:
        low = np.array([tb.low for tb in tables])
        high = np.array([tb.high for tb in tables])
        base = np.array([tb.value(0.0) for tb in tables])

        def multipliers(t):
            out = np.zeros(len(tables))
            for j, tb in enumerate(tables):
                if base[j] > t + eps:
                    out[j] = tb.inverse(t + eps)
                elif base[j] < t:
                    out[j] = tb.inverse(t)
            return out

        lo, hi = _level_bracket(low, high, base, eps, groups)
        for it in range(1, 200):  # noqa: B007 (phi(t) = sum(nu(t)) is non-increasing in t)
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if multipliers(mid).sum() > 0:
                lo = mid
            else:
                hi = mid
        t = _best_level(lo, hi, multipliers)
        nu[groups] = multipliers(t)
    outputs = np.clip(s - nu[np.maximum(codes, 0)] * fam.weights, lb, ub)
    if np.any(codes < 0):
        outside = codes < 0
        outputs[outside] = np.clip(s[outside], lb[outside], ub[outside])
    return Solution(outputs, [nu], np.array([t]), solver="exact", iterations=it,
                    info={"path": "sorted"})


def _best_level(lo, hi, multipliers):
    """Of the two ends of the final bracket, the one whose multipliers sum closest to 0."""
    return lo if abs(multipliers(lo).sum()) <= abs(multipliers(hi).sum()) else hi


# --------------------------------------------------------------------------------------
# Reduced problems and their exact solution from tables
# --------------------------------------------------------------------------------------


class _Model:
    """Group means ``m_g(nu) = A_g - Q_g nu + sum_{i in g} c_i clip(e_i - nu, e_i - l_i, 0)``.

    A row of the original problem has ``e = (s - ub) / w`` (below it, the row
    sits at ``ub``), ``l = (s - lb) / w`` (above it, at ``lb``) and
    ``c = w^2``; its value at the top, ``w ub``, is part of ``A``. Rows that
    are at a bound or free for every multiplier of a bracket fold into
    ``A``/``Q``; the model then equals the original on that bracket only.
    """

    __slots__ = ("e", "l", "c", "g", "A", "Q", "present", "eps")

    def __init__(self, e, l, c, g, A, Q, present, eps):  # noqa: E741
        self.e, self.l, self.c, self.g = e, l, c, g
        self.A, self.Q, self.present, self.eps = A, Q, present, eps

    @property
    def size(self):
        return self.e.size


class _Result:
    """Outcome of a reduced solve: ``ok`` when ``nu`` lies inside the brackets."""

    __slots__ = ("ok", "t", "nu", "est")

    def __init__(self, ok, t=None, nu=None, est=None):
        self.ok, self.t, self.nu, self.est = ok, t, nu, est


class _Stack:
    """Tables of every group's ``m(nu)``, stacked: breakpoints ``x``, values ``m``, slopes.

    Group ``g`` owns entries ``starts[g]:starts[g + 1]`` (sorted by ``x``, ``m``
    non-increasing); ``slope[j]`` is the slope on ``[x_j, x_{j+1}]`` (``-Q_g``
    after the last). Searches run on ``key = off_g - m``, increasing across the
    whole stack; a query ``T`` of group ``g`` uses the same expression
    ``off_g - T``, so a level equal to a tabulated value finds it exactly.
    """

    __slots__ = ("x", "m", "slope", "key", "starts", "cnt", "off", "A", "Q", "base")

    def __init__(self, model):
        k = model.A.size
        e, l, c, g = model.e, model.l, model.c, model.g  # noqa: E741
        A, Q = model.A, model.Q
        if e.size == 0:  # a dummy entry of a group that does not exist keeps indexing valid
            e = l = np.zeros(1)  # noqa: E741
            c = np.ones(1)
            g = np.array([k], dtype=np.intp)
        x = np.concatenate((e, l))
        gg = np.concatenate((g, g))
        ds = np.concatenate((-c, c))
        order = np.lexsort((x, gg))
        x, gg, ds = x[order], gg[order], ds[order]
        starts = np.searchsorted(gg, np.arange(k + 1))
        cnt = np.diff(starts)
        has = cnt > 0
        Qe = np.append(Q, 0.0)[gg]
        # Segmented cumulative sum of the slope changes, normalised per group.
        scale = np.append(np.bincount(g, weights=c, minlength=k)[:k], 1.0)
        scale = np.where(scale > 0, scale, 1.0)[gg]
        cs = np.cumsum(ds / scale)
        before = np.concatenate(([0.0], cs))[np.append(starts[:-1], starts[-1])]
        part = cs - before[gg]
        # Rounding leaves ~eps * count where every row has entered and left: snap to 0.
        noise = 4 * np.finfo(np.float64).eps * np.append(cnt, 1)[gg]
        part[np.abs(part) <= noise] = 0.0
        slope = part * scale - Qe
        np.minimum(slope, 0.0, out=slope)
        slope[starts[1:][has] - 1] = -Q[has]
        first = np.append(starts[:-1], starts[-1])[gg]  # first entry of each entry's group
        inc = np.empty_like(x)
        inc[0] = 0.0
        np.multiply(slope[:-1], np.diff(x), out=inc[1:])
        inc[starts[:-1][has]] = 0.0
        cm = np.cumsum(inc)
        Ae = np.append(A, 0.0)[gg]
        m = (cm - cm[first]) + (Ae - Qe * x[first])  # non-increasing within a group
        width = float(m.max() - m.min()) + 1.0 if m.size else 1.0
        self.off = np.arange(k + 1) * width
        self.key = self.off[gg] - m
        self.x, self.m, self.slope, self.starts, self.cnt = x, m, slope, starts, cnt
        self.A, self.Q = A, Q
        # m(0) per group, read off the table (consistent with it to the last bit).
        at_or_below = np.bincount(gg[x <= 0], minlength=k + 1)[:k]
        st = np.where(cnt[:k] > 0, starts[:k], 0)
        j = st + at_or_below - 1
        jc = np.maximum(j, st)
        base = np.where(j < st, m[st] + Q * x[st], m[jc] - slope[jc] * x[jc])
        self.base = np.where(cnt[:k] > 0, base, A)

    def ends(self):
        """Per group: reachable range ``(low, high)`` of ``m``."""
        k = self.A.size
        has = self.cnt[:k] > 0
        st = np.where(has, self.starts[:k], 0)
        en = np.where(has, self.starts[1:] - 1, 0)
        flat = self.Q == 0
        high = np.where(flat, np.where(has, self.m[st], self.A), np.inf)
        low = np.where(flat, np.where(has, self.m[en], self.A), -np.inf)
        return low, high

    def preimage(self, G, target, side):
        """Largest (``side="hi"``) or smallest (``"lo"``) ``nu`` with ``m_G(nu) = target``.

        ``+inf``/``-inf`` on a flat end, NaN when ``T`` is out of reach.
        """
        x, m, sl = self.x, self.m, self.slope
        has = self.cnt[G] > 0
        st = np.where(has, self.starts[G], 0)
        en = np.where(has, self.starts[G + 1] - 1, 0)
        Q, A = self.Q[G], self.A[G]
        # A level past a flat end by rounding only (e.g. (m - eps) + eps) is that end.
        top = np.where(has, m[st], A)
        end = np.where(has, m[en], A)
        # Keys round at the ulp of the group offset: ties within that are resolved here.
        near = 1e-14 * (1.0 + np.abs(target)) + 8 * np.finfo(np.float64).eps * self.off[G]
        target = np.where((Q == 0) & (target > top) & (target <= top + near), top, target)
        target = np.where((Q == 0) & (target < end) & (target >= end - near), end, target)
        at_top = np.abs(target - top) <= near
        at_end = np.abs(target - end) <= near
        q = self.off[G] - target
        with np.errstate(divide="ignore", invalid="ignore"):
            if side == "hi":
                j = np.searchsorted(self.key, q, side="right") - 1  # last j with m_j >= target
                jc = np.clip(j, st, np.maximum(en - 1, st))
                s = sl[jc]
                inner = np.where(s < 0, x[jc] + (target - m[jc]) / s, x[jc + 1])
                inner = np.minimum(np.maximum(inner, x[jc]), x[jc + 1])
                outer_left = j < st
                outer_right = j >= en
                flat_left = np.full_like(target, np.nan)
                flat_right = np.where(at_end, np.inf, np.nan)
                none = np.where(at_top, np.inf, np.nan)
            else:
                j = np.searchsorted(self.key, q, side="left")  # first j with m_j <= target
                jc = np.clip(j, st + 1, np.maximum(en, st + 1))
                s = sl[jc - 1]
                inner = np.where(s < 0, x[jc - 1] + (target - m[jc - 1]) / s, x[jc - 1])
                inner = np.minimum(np.maximum(inner, x[jc - 1]), x[jc])
                outer_left = j <= st
                outer_right = j > en
                flat_left = np.where(at_top, -np.inf, np.nan)
                flat_right = np.full_like(target, np.nan)
                none = np.where(at_top, -np.inf, np.nan)
            steep = Q > 0
            left = np.where(steep, x[st] - (target - m[st]) / Q, flat_left)
            right = np.where(steep, x[en] + (m[en] - target) / Q, flat_right)
            out = np.where(outer_left, left, np.where(outer_right, right, inner))
            return np.where(has, out, np.where(steep, (A - target) / Q, none))


def _phi_hi(stack, groups, base, t, eps):
    """``sum_g nu_g(t)``, each group at its largest admissible multiplier, for levels ``t``."""
    b = base[:, None]
    up = b >= t + eps
    act = up | (b < t)
    T = np.where(up, t + eps, t)
    G = np.broadcast_to(groups[:, None], T.shape)
    nu = stack.preimage(G, T, "hi")
    nu = np.where(up, np.maximum(nu, 0.0), np.minimum(nu, 0.0))  # signs, against rounding
    return np.where(act, nu, 0.0).sum(axis=0)


def _admissible(stack, groups, base, t, eps):
    """Per group, the interval of multipliers meeting its KKT conditions at level ``t``.

    A group whose ``m(0)`` is within rounding of an edge of the band may also be
    inactive, and the sign conditions hold up to rounding.
    """
    if eps == 0:
        T = np.full(groups.size, t)
        return stack.preimage(groups, T, "lo"), stack.preimage(groups, T, "hi")
    edge = 1e-14 * (1.0 + np.abs(base) + abs(t) + eps)
    top = base >= t + eps - edge
    bottom = ~top & (base <= t + edge)
    T = np.where(top, t + eps, t)
    lo = stack.preimage(groups, T, "lo")
    hi = stack.preimage(groups, T, "hi")
    with np.errstate(invalid="ignore"):
        slack_lo = -1e-12 * (1.0 + np.where(np.isfinite(hi), np.abs(hi), 0.0))
        slack_hi = 1e-12 * (1.0 + np.where(np.isfinite(lo), np.abs(lo), 0.0))
        lo = np.where(top, np.maximum(lo, slack_lo), lo)
        hi = np.where(bottom, np.minimum(hi, slack_hi), hi)
        at_edge = (top & (base <= t + eps + edge)) | (bottom & (base >= t - edge))
        lo = np.where(at_edge, np.minimum(lo, 0.0), lo)
        hi = np.where(at_edge, np.maximum(hi, 0.0), hi)
    inside = ~(top | bottom)
    return np.where(inside, 0.0, lo), np.where(inside, 0.0, hi)


def _balance(lo, hi, tol):
    """A point of the box ``[lo, hi]`` whose coordinates sum to 0 (within ``tol``), or None."""
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(lo > hi):
        return None
    nu = np.clip(0.0, lo, hi)
    r = float(nu.sum())
    if r > 0:
        room = nu - lo
        for j in np.argsort(-room):
            d = min(r, room[j])
            nu[j] -= d
            r -= d
            if r <= 0:
                break
    elif r < 0:
        room = hi - nu
        for j in np.argsort(-room):
            d = min(-r, room[j])
            nu[j] += d
            r += d
            if r >= 0:
                break
    if not np.all(np.isfinite(nu)) or abs(r) > tol:
        return None
    return nu


def _solve_tables(model, lo, hi):
    """Exact solution of ``model`` from sorted tables; ``ok`` if it lies in ``[lo, hi]``."""
    k, eps = model.A.size, model.eps
    groups = np.flatnonzero(model.present)
    if groups.size == 0:
        return _Result(bool(np.all(lo <= 0) and np.all(hi >= 0)), 0.0, np.zeros(k), np.zeros(k))
    stack = _Stack(model)
    base = stack.base[groups]
    low, high = stack.ends()
    t_min, t_max = low[groups].max() - eps, high[groups].min()
    if not t_min <= t_max:
        return _Result(False)
    # Phi(t) = sum_g nu_g(t) is non-increasing and linear between these levels.
    m_rows = stack.m
    cand = np.concatenate((base, base - eps, m_rows, m_rows - eps, [t_min, t_max]))
    cand = np.sort(cand[(cand >= t_min) & (cand <= t_max) & np.isfinite(cand)])
    first = _first_nonpositive(stack, groups, base, cand, eps)
    span = 1.0 + (cand[-1] - cand[0] if cand.size else 0.0)
    if first == cand.size:  # root right of every candidate
        ends = (cand[-1], t_max)
        root = (t_max, 0.0) if np.isfinite(t_max) else _linear_root(
            stack, groups, base, eps, cand[-1] + span, cand[-1] + 2 * span, cand[-1], np.inf)
    elif first == 0:  # root left of every candidate
        ends = (t_min, cand[0])
        root = (t_min, 0.0) if np.isfinite(t_min) else _linear_root(
            stack, groups, base, eps, cand[0] - 2 * span, cand[0] - span, -np.inf, cand[0])
    else:
        a, b = cand[first - 1], cand[first]
        ends = (a, b)
        root = (a, 0.0) if a == b else _linear_root(
            stack, groups, base, eps, a + (b - a) / 3, a + 2 * (b - a) / 3, a, b)
    if root is None or not np.isfinite(root[0]):
        return _Result(False)
    t, slope = root
    # Balance the admissible multipliers at t; if rounding put t a hair off a level where
    # Phi jumps or ends, at the neighbouring candidate levels.
    est = None
    for level in (t, *ends):
        if not np.isfinite(level):
            continue
        level = float(min(max(level, t_min), t_max))
        r = _settle(stack, groups, base, level, eps, lo, hi, k, slope)
        if r.ok:
            return r
        est = r.est if est is None else est
    return _Result(False, t, None, est)


def _settle(stack, groups, base, t, eps, lo, hi, k, slope):
    """Multipliers at level ``t``: admissible per group, summing to 0, inside ``[lo, hi]``.

    ``slope`` is the slope of ``Phi`` around ``t``: an error of a few ulps in ``t``
    moves the sum of the multipliers by about ``slope`` times that.
    """
    ilo, ihi = _admissible(stack, groups, base, t, eps)
    with np.errstate(invalid="ignore"):
        size = np.where(np.isfinite(ilo), np.abs(ilo), 0.0) + np.where(np.isfinite(ihi), np.abs(ihi), 0.0)
    tol = 1e-11 * (1.0 + abs(t)) * abs(slope) + 1e-12 * (1.0 + size.sum())
    est = None
    free = _balance(ilo, ihi, tol)
    if free is not None:
        est = np.zeros(k)
        est[groups] = free
    nu = _balance(np.maximum(ilo, lo[groups]), np.minimum(ihi, hi[groups]), tol)
    if nu is None:
        return _Result(False, t, None, est)
    out = np.zeros(k)
    out[groups] = nu
    return _Result(True, t, out, out)


def _first_nonpositive(stack, groups, base, cand, eps, block=64):
    """Index of the first sorted level where ``Phi <= 0`` (``cand.size`` if none), coarse to fine."""
    lo, hi = 0, cand.size  # answer in [lo, hi]
    with np.errstate(invalid="ignore"):
        while hi - lo > block:
            probe = np.unique(np.linspace(lo, hi - 1, block).astype(np.intp))
            neg = _phi_hi(stack, groups, base, cand[probe], eps) <= 0
            j = int(np.argmax(neg)) if neg.any() else probe.size
            lo = int(probe[j - 1]) + 1 if j > 0 else lo
            hi = int(probe[j]) if j < probe.size else hi
        if hi == lo:
            return lo
        neg = _phi_hi(stack, groups, base, cand[lo:hi], eps) <= 0
    return lo + int(np.argmax(neg)) if neg.any() else hi


def _linear_root(stack, groups, base, eps, a, b, left, right):
    """Root of ``Phi`` on ``(left, right)``, where it is linear, and its slope there.

    ``Phi`` is evaluated at ``a < b`` inside the interval; a root beyond an end
    (``Phi`` jumps there) is that end.
    """
    with np.errstate(invalid="ignore"):
        ya, yb = _phi_hi(stack, groups, base, np.array([a, b]), eps)
    if not (np.isfinite(ya) and np.isfinite(yb)):
        return None
    if ya == yb or not b > a:
        return (right if ya > 0 else left if ya < 0 else a), 0.0
    r = a + ya * (b - a) / (ya - yb)
    return min(max(r, left), right), (yb - ya) / (b - a)


def _band_linear(a, b, eps):
    """KKT point of the band problem for linear means ``m_g(nu) = a_g - b_g nu`` (``b > 0``).

    ``nu_g(t) = (a_g - t - eps) / b_g`` above the band, ``(a_g - t) / b_g`` below it,
    0 inside; ``sum_g nu_g(t) = 0`` is solved exactly (piecewise linear in ``t``).
    """
    inv = 1.0 / b
    cand = np.sort(np.concatenate((a - eps, a)))

    def phi(t):
        t = np.asarray(t)[None, :] if np.ndim(t) else np.array([[t]])
        above = np.maximum(a[:, None] - eps - t, 0.0)
        below = np.minimum(a[:, None] - t, 0.0)
        return ((above + below) * inv[:, None]).sum(axis=0)

    vals = phi(cand)
    if vals[0] <= 0:  # every group above the band
        t = float(((a - eps) * inv).sum() / inv.sum())
    elif vals[-1] > 0:  # every group below the band
        t = float((a * inv).sum() / inv.sum())
    else:
        j = int(np.argmax(vals <= 0))
        t0, t1, y0, y1 = cand[j - 1], cand[j], vals[j - 1], vals[j]
        t = float(t1 if y0 == y1 else min(max(t0 + y0 * (t1 - t0) / (y0 - y1), t0), t1))
    nu = (np.maximum(a - eps - t, 0.0) + np.minimum(a - t, 0.0)) * inv
    return t, nu


def _newton(model, lo, hi, start, max_iter=12):
    """Semismooth Newton on the multipliers; exact once the row states stop changing.

    Each step solves the band problem for the means linearised at the current
    multipliers. When the states (top / free / bottom) of all rows are the same
    before and after a step, every mean is linear between the two points, so the
    new point meets the KKT conditions of ``model`` exactly. Returns None when
    that does not happen within ``max_iter`` steps (or a linearisation is flat).
    """
    k = model.A.size
    groups = np.flatnonzero(model.present)
    if groups.size == 0:
        return None
    e, l, c, g = model.e, model.l, model.c, model.g  # noqa: E741
    A, Q = model.A[groups], model.Q[groups]
    width = e - l
    nu = np.zeros(k) if start is None else np.where(model.present, start, 0.0)
    prev_top = prev_free = None
    t = 0.0
    for _ in range(max_iter):
        d = e - nu[g]
        top = d >= 0
        bottom = d <= width
        free = ~(top | bottom)
        if prev_top is not None and not ((top ^ prev_top).any() or (free ^ prev_free).any()):
            v = nu[groups]
            ok = bool((v >= lo[groups]).all() and (v <= hi[groups]).all())
            return _Result(ok, t, nu, nu)
        contrib = c * np.where(free, d, np.where(bottom, width, 0.0))
        v = nu[groups]
        m = A - Q * v + np.bincount(g, weights=contrib, minlength=k)[groups]
        b = Q + np.bincount(g, weights=c * free, minlength=k)[groups]
        if not (b > 0).all():
            return None
        t, step = _band_linear(m + b * v, b, model.eps)
        if not np.isfinite(step).all():
            return None
        prev_top, prev_free = top, free
        nu = np.zeros(k)
        nu[groups] = step
    return None


def _reduce(model, lo, hi):
    """Fold the rows that are at a bound or free on the whole bracket ``[lo, hi]``."""
    g, e, l, c = model.g, model.e, model.l, model.c  # noqa: E741
    k = model.A.size
    bl, bh = lo[g], hi[g]
    top = e >= bh
    bottom = l <= bl
    free = (e <= bl) & (l >= bh)
    keep = ~(top | bottom | free)
    add = np.where(bottom, c * (e - l), 0.0)
    add += np.where(free, c * e, 0.0)
    A = model.A + np.bincount(g, weights=add, minlength=k)
    Q = model.Q + np.bincount(g, weights=np.where(free, c, 0.0), minlength=k)
    return _Model(e[keep], l[keep], c[keep], g[keep], A, Q, model.present, model.eps)


def _sample(model):
    """Strided subsample with control variates, and the group sizes it was drawn from."""
    g, e, c = model.g, model.e, model.c
    k, M = model.A.size, model.size
    counts = np.bincount(g, minlength=k)
    stride = max(1, M // _SAMPLE_ROWS)
    pick = np.zeros(M, dtype=bool)
    pick[::stride] = True
    pick |= (counts < _MIN_SAMPLE * stride)[g]  # small groups are kept whole
    idx = np.flatnonzero(pick)
    gs, cs, es = g[idx], c[idx], e[idx]
    sum_c = np.bincount(g, weights=c, minlength=k)
    sum_ce = np.bincount(g, weights=c * e, minlength=k)
    sub_c = np.bincount(gs, weights=cs, minlength=k)
    sub_ce = np.bincount(gs, weights=cs * es, minlength=k)
    missing = (sub_c == 0) & (sum_c > 0)
    if np.any(missing):  # a group the stride missed: keep it whole
        pick |= missing[g]
        idx = np.flatnonzero(pick)
        gs, cs, es = g[idx], c[idx], e[idx]
        sub_c = np.bincount(gs, weights=cs, minlength=k)
        sub_ce = np.bincount(gs, weights=cs * es, minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(sub_c > 0, sum_c / sub_c, 1.0)
    # sum c clip(e - nu) = sum c (e - nu) + sum c [clip(..) - (e - nu)]: the first term
    # exactly, the second (non-zero on clamped rows only) from the subsample.
    A = model.A + sum_ce - beta * sub_ce
    sub = _Model(es, model.l[idx], cs * beta[gs], gs, A, model.Q, model.present, model.eps)
    return sub, counts, np.bincount(gs, minlength=k)


def _spread(sub, nu, full_counts, sub_counts):
    """Bracket half-widths: a few standard errors of the subsample's multipliers."""
    k = sub.A.size
    g, c = sub.g, sub.c
    m = np.maximum(sub_counts, 1)
    d = sub.e - nu[g]
    width = sub.l - sub.e
    # Deviation of a row from the all-free control variate: non-zero on clamped rows only.
    z = c * (np.minimum(np.maximum(d, -width), 0.0) - d)
    free = (d < 0) & (d > -width)
    slope = sub.Q + np.bincount(g, weights=c * free, minlength=k)
    mean = np.bincount(g, weights=z, minlength=k) / m
    z -= mean[g]
    var = np.bincount(g, weights=z * z, minlength=k) / m
    width_sum = np.bincount(g, weights=width, minlength=k)
    fpc = np.maximum(1.0 - sub_counts / np.maximum(full_counts, 1), 0.0)
    se = np.sqrt(sub_counts * var * fpc)
    # Resolution of the subsample when it saw no clamped row.
    floor = 0.05 * width_sum / (m * m)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(slope > 0, _Z * (se + se.max()) / slope, np.inf)
    return np.maximum(delta, np.where(sub_counts > 0, floor, np.inf))


def _solve_model(model, lo, hi, depth=0, start=None):
    """Exact solution of ``model`` within ``[lo, hi]``.

    Newton from ``start`` for models of moderate size; otherwise (or if Newton
    does not settle) subsample, bracket, reduce and recurse, down to tables.
    """
    if model.size <= _NEWTON_ROWS:
        r = _newton(model, lo, hi, start)
        if r is not None:
            return r
    if model.size <= _DIRECT_ROWS or depth >= _MAX_DEPTH:
        return _solve_tables(model, lo, hi)
    sub, full_counts, sub_counts = _sample(model)
    if sub.size > model.size // 2:
        return _solve_tables(model, lo, hi)
    inf = np.full(model.A.size, np.inf)
    rs = _solve_model(sub, -inf, inf, depth + 1, start)
    if not rs.ok:
        return _solve_tables(model, lo, hi)
    delta = _spread(sub, rs.nu, full_counts, sub_counts)
    return _bracket_rounds(model, lo, hi, rs.nu, delta, depth)


def _bracket_rounds(model, lo, hi, center, delta, depth):
    """Solve ``model`` on brackets around ``center``, re-centring and widening on a miss."""
    for _ in range(_ROUNDS):
        center = np.clip(center, lo, hi)
        blo, bhi = np.maximum(lo, center - delta), np.minimum(hi, center + delta)
        child = _reduce(model, blo, bhi)
        if child.size >= model.size:
            break
        r = _solve_model(child, blo, bhi, depth + 1, center)
        if r.ok:
            return r
        if r.est is None:
            delta = 8 * delta
        else:
            step = np.abs(r.est - center)
            delta = np.maximum(4 * delta, 2 * step)
            center = r.est
    return _solve_tables(model, lo, hi)


# --------------------------------------------------------------------------------------
# Fast full-data passes
# --------------------------------------------------------------------------------------


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
    codes, weights, k = fam.codes, fam.weights, fam.n_groups
    totals = getattr(fam, "totals", None)
    stride = max(1, n // _SAMPLE_ROWS)

    dense = layout is None and fam.dense_uniform  # sizes are the totals (every row in a group)

    def draw(stride):
        if dense:
            return np.asarray(totals, dtype=np.float64), np.bincount(codes[::stride], minlength=k)
        if layout is None:
            sizes, counts = _sample_sizes(codes, weights, stride, k)
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
        if finer < stride and n // finer <= 8 * _SAMPLE_ROWS:
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

    # Centre: warm start, else the subsample solved exactly with control variates.
    warm = _warm_shifts(warm_start, k, sizes)
    if warm is not None:
        center, h = warm
    else:
        sub = _uniform_sample_model(s, codes, stride, sizes, sums, sub_counts, lb, ub, eps)
        inf = np.full(k, np.inf)
        rs = _solve_model(sub, -inf, inf, 1)
        if not rs.ok:
            return None
        delta = _spread(sub, rs.nu, sizes, sub_counts)
        n_g = np.maximum(sizes, 1)
        center = rs.nu / n_g
        reliable = ~tiny & (sizes > 0)
        h = float((delta / n_g)[reliable].max()) if np.any(reliable) else 1.0
    center = np.where(tiny, np.inf, center)
    h = min(max(h, 1e-9 * (1.0 + abs(lb) + abs(ub))), 2.0 * (ub - lb) + 1.0)

    for rounds in range(1, _ROUNDS + 1):  # noqa: B007
        idx = _uniform_pass(s, codes, f, center, h, lb, ub)
        red = _uniform_reduced(s, codes, idx, sizes, sums, center, h, lb, ub, eps, tiny, known)
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
            h *= 8
        else:
            # The miss's estimate uses exact aggregates and extrapolates linearly past the
            # bracket: its error is of second order in the step, well within a quarter of it.
            new = res.est / n_g
            reliable = ~tiny & (sizes_now > 0)
            step = float(np.abs(new - center)[reliable].max()) if np.any(reliable) else 0.0
            h = max(2 * h, 0.25 * step)
            center = np.where(tiny, np.inf, new)
    else:
        return None

    nu = res.nu
    shifts = np.where(sizes > 0, nu / np.maximum(sizes, 1), 0.0)
    totals = fam.totals if fam.dense_uniform else None  # then the family's means are sums / totals
    out, read = _uniform_output(s, codes, f, shifts, idx, lb, ub, totals)
    path = "uniform-2" if two else "uniform"
    info = {"path": path, "shifts": shifts, "spread": h, "rounds": rounds}
    if read is not None:
        info["verification"] = read
    return Solution(out, [nu], np.array([res.t]), solver="exact", iterations=rounds, info=info)


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
    return shifts.copy(), spread


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
        """``[sum_{i in 0} s_i, sum_{i in 1} s_i]``: the total and ``f . s``, block by block
        (``einsum``, not BLAS, whose threads stall on a busy machine)."""
        total = one = 0.0
        for sl in _blocks(s.shape[0]):
            x = s[sl]
            total += float(x.sum())
            one += float(np.einsum("i,i->", self.block(sl), x))
        return np.array([total - one, one])


def _uniform_pass(s, codes, f, center, h, lb, ub):
    """Indices of the rows not free for every shift within ``h`` of ``center``.

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
    parts = []
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
        parts.append(idx + sl.start if sl.start else idx)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _uniform_reduced(s, codes, idx, sizes, sums, center, h, lb, ub, eps, tiny, known):
    """The problem on the bracket: extracted rows that stay uncertain, the rest aggregated.

    Rows not extracted are free for every shift within ``h`` of the centre; an
    extracted row is at the top, at the bottom, free, or uncertain on the
    (slightly shrunk, against rounding) bracket. The returned model, in
    multiplier space, equals the original on the bracket ``[lo, hi]``.
    """
    k = sizes.size
    s_x, g_x = s[idx], codes[idx]
    if g_x.size and g_x.min() < 0:
        return None
    cnt_x = np.bincount(g_x, minlength=k).astype(np.float64)
    sizes = np.where(known, sizes, cnt_x)  # groups kept whole: every row was extracted
    if np.any(cnt_x > sizes):
        return None
    n_g = np.maximum(sizes, 1)
    finite = np.isfinite(center)
    hh = _shrunk(center, h, lb, ub)
    u = s_x - center[g_x]
    sure = finite[g_x]
    top = sure & (u >= ub + hh)
    bottom = sure & (u <= lb - hh)
    free = sure & (u >= lb + hh) & (u <= ub - hh)
    unc = ~(top | bottom | free)
    # n_g A_g = sum of s over free rows + ub (top and uncertain rows) + lb (bottom rows).
    val = np.where(bottom, lb, np.where(free, s_x, ub))
    rest = sums - np.bincount(g_x, weights=s_x, minlength=k)
    A = np.where(sizes > 0, (rest + np.bincount(g_x, weights=val, minlength=k)) / n_g, 0.0)
    Q = (sizes - cnt_x + np.bincount(g_x, weights=free, minlength=k)) / (n_g * n_g)
    return _bracket_model(s_x[unc], g_x[unc], sizes, A, Q, center, hh, lb, ub, eps)


def _shrunk(center, h, lb, ub):
    """The bracket half-width ``h`` less a margin far above rounding: a row classified on the
    shrunk bracket is in that state for every shift within ``h`` of the centre."""
    finite = np.isfinite(center)
    margin = 1e-12 * (1.0 + abs(lb) + abs(ub) + h + float(np.abs(center[finite]).max(initial=0)))
    return h - margin if h > 2 * margin else 0.5 * h


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


def _uniform_output(s, codes, f, shifts, idx, lb, ub, totals=None):
    """``clip(s - shift_g, lb, ub)`` and what the verification reads off it.

    Rows free on the bracket need no clip; the listed rows ``idx`` (sorted)
    are clipped. While each block is in cache, its minimum, maximum and group
    sums are taken: with ``totals`` (the group sizes of a family whose rows
    are all in a group), the verification's ``range`` and ``gaps`` of the
    outputs, without another pass over them for two groups (more groups: one
    ``bincount`` of the output after the pass); None without ``totals``.
    """
    n, k = s.shape[0], shifts.size
    out = np.empty(n)
    sums, lo, hi = np.zeros(k), np.inf, -np.inf
    cuts = np.searchsorted(idx, [sl.start for sl in _blocks(n)] + [n])
    for j, sl in enumerate(_blocks(n)):
        o, x = out[sl], s[sl]
        if f is not None:
            f.scaled(sl, -(shifts[1] - shifts[0]), o)
            np.add(o, x, out=o)
            np.subtract(o, shifts[0], out=o)
        else:
            np.take(shifts, codes[sl], out=o, mode="clip")
            np.subtract(x, o, out=o)
        rows = idx[cuts[j] : cuts[j + 1]]
        if rows.size:
            rows = rows - sl.start if sl.start else rows
            o[rows] = np.clip(o[rows], lb, ub)
        if totals is None:
            continue
        lo, hi = np.minimum(lo, o.min()), np.maximum(hi, o.max())  # NaN propagates
        if f is not None:
            one = float(np.einsum("i,i->", f.block(sl), o))
            sums += (float(o.sum()) - one, one)
    if totals is None:
        return out, None
    if f is None:  # one bincount over the whole output: faster than one per block
        sums = np.bincount(codes, weights=out, minlength=k)
    means = sums / totals
    gap = float(means.max() - means.min()) if k > 1 else 0.0
    return out, {"range": (float(lo), float(hi)), "gaps": [gap]}


def _solve_general(problem, warm_start):
    """Any weights and bounds: the rows as a model, solved by the recursive reduction."""
    fam = problem.families[0]
    s, codes, w = problem.scores, fam.codes, fam.weights
    n, k, eps = s.shape[0], fam.n_groups, float(fam.tolerance)
    lb, ub = _as_rows(problem.lower, n), _as_rows(problem.upper, n)
    keep = (codes >= 0) & (w > 0)
    if keep.all():
        sr, wr, lr, ur, gr = s, w, lb, ub, codes
    else:
        idx = np.flatnonzero(keep)
        sr, wr, lr, ur, gr = s[idx], w[idx], lb[idx], ub[idx], codes[idx]
    if np.any(lr > ur):
        return None
    high = np.bincount(gr, weights=wr * ur, minlength=k)
    low = np.bincount(gr, weights=wr * lr, minlength=k)
    present = np.bincount(gr, minlength=k) > 0
    if high.size > k:
        return None
    groups = np.flatnonzero(present)
    if groups.size:
        _check_feasible(low[groups], high[groups], eps, groups)
    model = _Model((sr - ur) / wr, (sr - lr) / wr, wr * wr, gr, high, np.zeros(k), present, eps)
    inf = np.full(k, np.inf)
    warm = _general_warm(warm_start, k)
    if warm is not None and model.size > _DIRECT_ROWS:
        res = _bracket_rounds(model, -inf, inf, warm[0], warm[1], 0)
    else:
        res = _solve_model(model, -inf, inf, 0)
    if not res.ok:
        return None
    nu = res.nu
    ext = np.append(nu, 0.0)  # code -1 (weight 0) picks the trailing 0
    out = np.clip(s - ext[codes] * w, lb, ub)
    return Solution(out, [nu], np.array([res.t]), solver="exact", iterations=1,
                    info={"path": "general"})


def _general_warm(warm_start, k):
    if warm_start is None or not getattr(warm_start, "duals", None):
        return None
    nu = np.asarray(warm_start.duals[0], dtype=np.float64)
    if nu.shape != (k,) or not np.all(np.isfinite(nu)):
        return None
    return nu.copy(), 1e-2 * (1.0 + np.abs(nu))


def solve_exact(problem, warm_start=None, *, layout=None):
    """Solve a single-family binary problem exactly, in a few passes over the data.

    Same optimum as :func:`solve_sorted` (see the module docstring for the
    method and its certificate); falls back to it when a reduction does not
    certify within a few rounds.

    Parameters
    ----------
    problem : ProjectionProblem
        A problem :func:`supports` accepts.
    warm_start : Solution or None, default=None
        A previous solution of a similar problem (e.g. the previous batch):
        its shifts (or multipliers) replace the subsample estimate of the centre.
    layout : GroupLayout or None, default=None
        The prepared group structure of ``problem``'s family (same codes).

    Returns
    -------
    solution : Solution
        Outputs, multipliers (one per group), level and, in ``info``, the
        per-group shifts and the bracket half-width used (reusable as a warm start).

    Raises
    ------
    InfeasibleProblemError
        If the tolerance is negative or the bounds make parity impossible.
    """
    fam = problem.families[0]
    s = problem.scores
    n, k = s.shape[0], fam.n_groups
    eps = float(fam.tolerance)
    _check_tolerance(eps)
    if layout is not None and (layout.codes.shape != (n,) or layout.n_groups != k
                               or (layout.codes is not fam.codes
                                   and not np.array_equal(layout.codes, fam.codes))):
        raise ValueError(
            "layout must be built from the codes of the problem's family. "
            f"Got {layout!r} instead."
        )
    lower, upper = np.asarray(problem.lower), np.asarray(problem.upper)
    if (
        fam.uniform
        and lower.ndim == 0
        and upper.ndim == 0
        and float(lower) < float(upper)
        and n > 4 * _SAMPLE_ROWS
    ):
        solution = _solve_uniform(problem, layout, warm_start)
        if solution is not None:
            return solution
    solution = _solve_general(problem, warm_start)
    if solution is not None:
        return solution
    return solve_sorted(problem)
