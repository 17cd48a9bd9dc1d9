"""Reduced problems of the exact solver and their certified solution.

A :class:`_Model` holds the group means ``m_g(nu)`` of a single-family problem
in multiplier space, some rows possibly folded into affine aggregates.
:func:`_solve_model` finds its KKT point in a few passes:

1. *Centre.* A strided subsample (``s[::stride]``, which also samples score-
   sorted or grouped data evenly) is solved exactly, each group's mean being
   corrected by a control variate (the full-data group mean of ``s``), so the
   estimated multipliers carry only the sampling noise of the *clamped* rows.
2. *Bracket.* Around the centre, a bracket ``[nu_g - d_g, nu_g + d_g]`` per
   group, ``d_g`` a few standard errors of the estimate. Rows free for every
   multiplier in the bracket fold into an affine term ``A_g - Q_g nu``.
3. *Reduce.* On the bracket, the reduced problem (rows that stay uncertain,
   plus the aggregates) has the same group means as the original. It is solved
   by a semismooth Newton on the multipliers, exact as soon as no row changes
   state (top / free / bottom) in a step; larger reduced problems are
   subsampled and bracketed again, and sorted tables are the fallback.
4. *Certify.* A solution of the reduced problem whose multipliers lie inside
   every bracket satisfies the KKT conditions of the original problem, so it is
   *the* optimum (the objective is strictly convex). Otherwise the bracket is
   re-centred on the reduced problem's estimate and widened, a few rounds.
"""

import numpy as np

#: Reduced problems with at most this many rows are solved from their tables.
_DIRECT_ROWS = 1024
#: Models with at most this many rows are first tried by Newton.
_NEWTON_ROWS = 65536
#: Target number of rows of a subsample.
_SAMPLE_ROWS = 2048
#: Subsample rows a group needs for its own estimate; smaller groups are kept whole.
_MIN_SAMPLE = 32
#: Half-width of a bracket, in standard errors of the centre.
_Z = 6.0
#: Re-centred attempts per level before falling back.
_ROUNDS = 4
_MAX_DEPTH = 16


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


def _shrunk(center, half, lb, ub):
    """Bracket half-widths in shift space less a margin far above rounding: a row classified
    on the shrunk bracket (:func:`_row_states`) is in that state for every shift within
    ``half`` of the centre."""
    finite = np.isfinite(center)
    scale = 1.0 + abs(lb) + abs(ub) + float(np.abs(center[finite]).max(initial=0.0))
    margin = 1e-12 * (scale + half)
    return np.where(half > 2 * margin, half - margin, 0.5 * half)


def _row_states(u, half, lb, ub):
    """Rows ``u = s - c_g`` at the bottom, at the top and free for every shift within
    ``half`` (per row) of the centre; the others are uncertain. The three are exclusive,
    even where ``half`` is below the rounding of a bound (``ub - half == ub + half``)."""
    bottom, top = u <= lb - half, u >= ub + half
    free = (u >= lb + half) & (u <= ub - half) & ~(bottom | top)
    return bottom, top, free


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
