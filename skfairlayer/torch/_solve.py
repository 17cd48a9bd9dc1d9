"""The exact projection on tensors: one shift per cell, found without host synchronisation.

A *cell* is one group of one family (a family is a set of groups whose means
must agree within the tolerance, e.g. the positives of every group for equal
opportunity) or one group with a fixed band (mean residual). Every row belongs
to at most one cell; rows of no cell are only clipped. With uniform weights the
KKT conditions give ``p_i = clip(s_i - c_q, lb_i, ub_i)`` for the cell ``q`` of
row ``i``, and the problem splits into independent families.

For each family the level ``t`` solves the monotone equation
``F(t) = sum_q n_q c_q(t) = 0`` where ``c_q(t)`` is the shift that moves cell
``q``'s mean to ``clamp(m0_q, t, t + eps)``. Each cell's map ``shift -> mean``
is piecewise linear and tabulated once from its sorted breakpoints (one flat
table, searched with ``torch.searchsorted``); a fixed number of ``B``-ary
rounds brackets ``t``, and a fixed number of semismooth Newton steps (the
closed form on the bracketed piece) polishes ``t`` and the shifts to rounding
accuracy. Everything is batched over leading problems and runs on the input's
device; see ``docs/user_guide/torch.rst`` for the mathematics.
"""

import math

import torch

__all__ = ["Layout", "solve", "jacobian_apply", "violation"]

#: Points per bracketing round and number of rounds: the bracket shrinks by 1025**3.
_POINTS = 1024
_ROUNDS = 3
#: Semismooth Newton steps after bracketing (each exact once the active pieces are known).
_POLISH = 3
#: Newton steps of the fast path (from the solution that ignores the bounds).
_FAST_STEPS = 5
#: Slope of the shift beyond a cell's reachable means (keeps F strictly monotone there).
_STEEP = 1e12


class Layout:
    """Cells of a batch of problems: ``B`` problems of ``n`` rows, ``F`` families of ``G`` groups.

    Parameters
    ----------
    cell : LongTensor of shape (B, n)
        ``f * G + g`` for a row of group ``g`` in family ``f``; ``-1`` for a row in no cell.
    n_families, n_groups : int
        ``F`` and ``G``.
    fixed_bands : Tensor of shape (B, F * G, 2) or None
        Per cell, a fixed band ``[lo, hi]`` for its mean (mean residual) instead of a
        level shared by its family.
    """

    def __init__(self, cell, n_families, n_groups, fixed_bands=None):
        self.B, self.n = cell.shape
        self.cell = cell
        self.F, self.G = n_families, n_groups
        self.C = n_families * n_groups
        self.Q = self.B * self.C
        offsets = torch.arange(self.B, device=cell.device).unsqueeze(1) * self.C
        # Flat cell index of each row; rows of no cell go to a dummy slot Q.
        self.q = torch.where(cell >= 0, cell + offsets, torch.full_like(cell, self.Q)).reshape(-1)
        self.fixed_bands = fixed_bands

    def sums(self, values):
        """Per-cell sums (float64) of ``values`` of shape (B, n); shape (B * C,)."""
        out = torch.zeros(self.Q + 1, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.q, values.reshape(-1))[: self.Q]

    def per_row(self, cell_values):
        """Broadcast per-cell values (B * C,) to the rows (B, n); 0 for rows of no cell."""
        padded = torch.cat([cell_values, cell_values.new_zeros(1)])
        return padded[self.q].reshape(self.B, self.n)

    def family_sum(self, cell_values):
        """Sum over the groups of each family: (B * C,) -> (B * F, 1)."""
        return cell_values.reshape(self.B * self.F, self.G).sum(1, keepdim=True)


def _effective_bounds(s, lb, ub, eps):
    """Finite stand-ins for infinite bounds that no shift of the solution can reach."""
    span = (s.amax(-1, keepdim=True) - s.amin(-1, keepdim=True)) + eps + 1.0
    lo_far = s.amin(-1, keepdim=True) - 4 * span
    hi_far = s.amax(-1, keepdim=True) + 4 * span
    lb = torch.where(torch.isfinite(lb), lb, lo_far)
    ub = torch.where(torch.isfinite(ub), ub, hi_far)
    return lb, ub  # (B, n) or (B, 1): broadcast against the rows


class _Tables:
    """Per cell, the sorted breakpoints ``x_j`` of ``c -> mean`` and the means ``M_j`` there."""

    def __init__(self, s, lb, ub, lay, counts, low, high):
        n_safe = torch.cat([counts, counts.new_ones(1)]).clamp_min(1.0)
        q2 = torch.cat([lay.q, lay.q])
        x = torch.cat([(s - ub).reshape(-1), (s - lb).reshape(-1)])
        inv_n = 1.0 / n_safe[q2]
        d = torch.cat([-inv_n[: lay.q.numel()], inv_n[lay.q.numel():]])
        # One sort on (cell, x): x offset by the cell index times the span of x. Rounding
        # may swap breakpoints closer than ~1e-12; the tables only need to be close (the
        # Newton polish is exact).
        xmin = x.amin()
        span = x.amax() - xmin + 1.0
        order = torch.sort(q2.to(x.dtype) * span + (x - xmin)).indices
        x, q2, d = x[order], q2[order], d[order]
        per = torch.cat([2 * counts, counts.new_zeros(1)])
        start = (torch.cumsum(per, 0) - per).long()
        self.start, self.stop = start[:-1], (start + per.long())[:-1]
        slope = _segment_cumsum(d, q2, start)
        nxt = torch.cat([x[1:], x[-1:]])
        same = torch.cat([q2[1:] == q2[:-1], q2.new_zeros(1, dtype=torch.bool)])
        inc = torch.where(same, slope * (nxt - x), torch.zeros_like(x))
        high_row = torch.cat([high, high.new_zeros(1)])[q2]
        m = high_row + _segment_cumsum(inc, q2, start) - inc
        self.x, self.m, self.low, self.high = x, m, low, high
        rng = (high - low).amax() + 1.0
        self.scale = 2 * rng
        self.keys = q2.to(x.dtype) * self.scale + (high_row - m)

    def shift(self, q, mu):
        """Shift of cell ``q`` (any shape of indices) that moves its mean to ``mu``."""
        low, high = self.low[q], self.high[q]
        query = q.to(mu.dtype) * self.scale + (high - mu)
        j = torch.searchsorted(self.keys, query.reshape(-1)).reshape(q.shape)
        first, last = self.start[q], self.stop[q] - 1
        j = torch.minimum(torch.maximum(j, first + 1), last.clamp_min(first + 1))
        # An empty cell has no breakpoints (its value is never used): keep its indices
        # inside the table.
        top = self.x.numel() - 1
        j, first, last = j.clamp(1, top), first.clamp(0, top), torch.maximum(last, first).clamp(0, top)
        x0, x1 = self.x[j - 1], self.x[j]
        m0, m1 = self.m[j - 1], self.m[j]
        den = m0 - m1
        frac = torch.where(den > 0, (m0 - mu) / torch.where(den > 0, den, 1.0), 0.0)
        c = x0 + frac * (x1 - x0)
        c = torch.where(mu > high, self.x[first] - (mu - high) * _STEEP, c)
        return torch.where(mu < low, self.x[last] + (low - mu) * _STEEP, c)


def _segment_cumsum(v, seg, start):
    """Inclusive cumulative sum of ``v`` restarted at each segment (rows sorted by ``seg``)."""
    cs = torch.cumsum(v, 0)
    before = torch.cat([cs.new_zeros(1), cs])[start]  # cs just before each segment
    return cs - before[seg]


def solve(s, lb, ub, lay, eps, fast=False):
    """Project the batch ``s`` (B, n) float64 onto its cells' bands.

    ``fast=False`` brackets each family's level on the breakpoint tables (exact, fixed
    cost, one sort). ``fast=True`` starts Newton from the solution that ignores the
    bounds and takes ``_FAST_STEPS`` steps without sorting; ``state["moved"]`` is then
    the size of the last step, zero (to rounding) exactly when Newton has reached the
    optimum, which the caller checks before trusting the answer.

    Returns
    -------
    p : Tensor (B, n)
    state : dict of tensors used by the backward pass and the verification.
    """
    lb, ub = _effective_bounds(s, lb, ub, eps)
    counts = lay.sums(torch.ones_like(s))
    present = counts > 0
    n_safe = counts.clamp_min(1.0)
    m0 = lay.sums(s.clamp(lb, ub)) / n_safe
    low, high = lay.sums(lb.expand_as(s)) / n_safe, lay.sums(ub.expand_as(s)) / n_safe
    tab = None if fast else _Tables(s, lb, ub, lay, counts, low, high)
    bracket = None
    if lay.fixed_bands is None:
        if fast:
            t = _unclipped_level(lay, m0, counts, present, eps)
        else:
            bracket = _bracket_level(tab, lay, m0, counts, present, eps)
            t = 0.5 * (bracket[0] + bracket[1])
        band_lo = _cells_of(t, lay)
        band_hi = band_lo + eps
    else:
        t = None
        band_lo = lay.fixed_bands[..., 0].reshape(-1)
        band_hi = lay.fixed_bands[..., 1].reshape(-1)
    top, bottom = present & (m0 > band_hi), present & (m0 < band_lo)
    target = torch.where(top, band_hi, torch.where(bottom, band_lo, m0))
    if fast:
        c = m0 - target
        steps = _FAST_STEPS
    else:
        qs = torch.arange(lay.Q, device=s.device)
        c = torch.where(top | bottom, tab.shift(qs, target), torch.zeros_like(m0))
        steps = _POLISH
    moved = None
    # On the CPU reading a flag costs no device round trip: stop once a step moves the
    # shifts and levels by rounding only, which is the certificate the caller checks.
    early = fast and s.device.type == "cpu" and not torch.compiler.is_compiling()
    settled = 1e-12 * (1.0 + float(s.abs().amax())) if early and s.numel() else 0.0
    for _ in range(steps):
        c_old, t_old = c, t
        c, t, top, bottom = _newton(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom, bracket)
        if fast:
            moved = (c - c_old).abs().amax()
            if t is not None:
                moved = torch.maximum(moved, (t - t_old).abs().amax())
            if early and moved <= settled:
                break
    if bracket is not None:
        c, t, top, bottom = _pinned_level(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom,
                                          bracket)
    bottom = bottom | (present & ~top & _zero_width(lay, eps))
    p = (s - lay.per_row(c)).clamp(lb, ub)
    state = {
        "lb": lb, "ub": ub, "counts": counts, "top": top, "bottom": bottom,
        "low": low, "high": high, "level": t, "shift": c, "moved": moved,
    }
    return p, state


def _unclipped_level(lay, m0, counts, present, eps):
    """Each family's level when no bound binds: the root of a k-point piecewise-linear map."""
    fm = m0.reshape(lay.B * lay.F, lay.G)
    fp = present.reshape(lay.B * lay.F, lay.G)
    cnt = counts.reshape(lay.B * lay.F, lay.G, 1)
    anchor = torch.where(fp, fm, -torch.inf).amax(1, keepdim=True)
    anchor = torch.where(torch.isfinite(anchor), anchor, 0.0)
    fm = torch.where(fp, fm, anchor)
    cand = torch.sort(torch.cat([fm, fm - eps], 1)).values  # (BF, 2G)
    t = cand.unsqueeze(1)
    move = fm.unsqueeze(2) - torch.minimum(torch.maximum(fm.unsqueeze(2), t), t + eps)
    f = (cnt * move).sum(1)  # (BF, 2G), non-increasing along the sorted candidates
    k = (f >= 0).sum(1, keepdim=True).clamp(1, cand.shape[1] - 1)
    ta, tb = cand.gather(1, k - 1), cand.gather(1, k)
    fa, fb = f.gather(1, k - 1), f.gather(1, k)
    den = fa - fb
    return torch.where(den > 0, ta + fa * (tb - ta) / torch.where(den > 0, den, 1.0), ta)


def solve_guarded(s, lb, ub, lay, eps):
    """The Newton path, with the bracketed path as a ``torch.cond`` branch (compiled graphs).

    Returns ``(p, top, bottom, level)``; the bracketed solve runs only when Newton has
    not settled, without a graph break or a host synchronisation.
    """
    p, st = solve(s, lb, ub, lay, eps, fast=True)
    settled = st["moved"] <= 1e-12 * (1.0 + s.abs().amax())
    shared = lay.fixed_bands is None

    def newton(s, lb, ub):
        return p.clone(), st["top"].clone(), st["bottom"].clone(), _level(st, p, lay)

    def bracketed(s, lb, ub):
        q, st2 = solve(s, lb, ub, lay, eps)
        return q, st2["top"], st2["bottom"], _level(st2, q, lay)

    out = torch.cond(settled, newton, bracketed, (s, lb, ub))
    return out if shared else (*out[:3], None)


def _level(st, p, lay):
    if st["level"] is None:
        return p.new_zeros(lay.B * lay.F, 1)
    return st["level"].clone()


def _cells_of(t, lay):
    """Family values (B * F, 1) -> cell values (B * C,)."""
    return t.expand(lay.B * lay.F, lay.G).reshape(-1)


def _bracket_level(tab, lay, m0, counts, present, eps):
    """Fixed ``B``-ary rounds on each family's level ``t``; returns the bracket ``(lo, hi)``."""
    big = torch.finfo(m0.dtype).max
    fam_m0 = m0.reshape(lay.B * lay.F, lay.G)
    fam_present = present.reshape(lay.B * lay.F, lay.G)
    lo = torch.where(fam_present, fam_m0, big).amin(1, keepdim=True) - eps
    hi = torch.where(fam_present, fam_m0, -big).amax(1, keepdim=True)
    lo = torch.minimum(lo, hi)  # families with no present group: any level
    steps = torch.arange(_POINTS + 2, device=m0.device, dtype=m0.dtype) / (_POINTS + 1)
    qs = torch.arange(lay.Q, device=m0.device)
    qg = qs.reshape(lay.B * lay.F, lay.G, 1).expand(-1, -1, _POINTS)
    cnt = counts.reshape(lay.B * lay.F, lay.G, 1)
    for _ in range(_ROUNDS):
        grid = lo + (hi - lo) * steps  # (BF, POINTS + 2)
        t = grid[:, 1:-1].unsqueeze(1)  # (BF, 1, POINTS)
        m0_q = fam_m0.unsqueeze(2)
        mu = torch.minimum(torch.maximum(m0_q, t), t + eps)
        # A cell whose mean is in the band does not move: shift 0, even where its mean
        # is flat in the shift (every row at a bound) and the table holds another point.
        c = torch.where(mu == m0_q, 0.0, tab.shift(qg, mu))
        f = (cnt * torch.where(cnt > 0, c, 0.0)).sum(1)  # (BF, POINTS), non-increasing in t
        k = (f >= 0).sum(1, keepdim=True)
        lo, hi = grid.gather(1, k), grid.gather(1, k + 1)
    return lo, hi


def _newton(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom, bracket=None):
    """One semismooth Newton step on (level, shifts) from the pieces at the shifts ``c``.

    ``bracket``: the levels' bracket ``(lo, hi)``; a step that leaves it keeps the level
    (at a kink the step's linear model can belong to the wrong piece, e.g. a cell whose
    every row reaches a bound there).
    """
    z = s - lay.per_row(c)
    free = (z > lb) & (z < ub)
    nf = lay.sums(free.to(s.dtype))
    # a: the sum at shift c' is a - nf c' (free rows s - c', clamped rows their bound)
    a = lay.sums(z.clamp(lb, ub)) + nf * c
    active = top | bottom
    nf_safe = nf.clamp_min(1.0)
    if t is not None:
        w = torch.where(active, counts * counts / nf_safe, 0.0)
        rhs = torch.where(active, counts * (a - counts * eps * top.to(s.dtype)) / nf_safe, 0.0)
        den, num = lay.family_sum(w), lay.family_sum(rhs)
        pinned = lay.family_sum((active & (nf == 0)).to(s.dtype)) > 0
        new_t = num / torch.where(den > 0, den, 1.0)
        keep = (den <= 0) | pinned
        if bracket is not None:
            keep = keep | (new_t < bracket[0]) | (new_t > bracket[1])
        t = torch.where(keep, t, new_t)
        band_lo = _cells_of(t, lay)
        band_hi = band_lo + eps
        top, bottom = (counts > 0) & (m0 > band_hi), (counts > 0) & (m0 < band_lo)
        active = top | bottom
    else:
        band_lo = lay.fixed_bands[..., 0].reshape(-1)
        band_hi = lay.fixed_bands[..., 1].reshape(-1)
    target = torch.where(top, band_hi, band_lo)
    newc = (a - counts * target) / nf_safe
    c = torch.where(active & (nf > 0), newc, torch.where(active, c, torch.zeros_like(c)))
    return c, t, top, bottom


def _zero_width(lay, eps):
    """Cells whose band has no width (``eps = 0``, or a fixed band ``lo = hi``): their mean
    is held on both sides, so they are active even where it needs no move (the Jacobian
    then keeps them on the band)."""
    if lay.fixed_bands is None:
        return torch.full((lay.Q,), eps == 0, dtype=torch.bool, device=lay.cell.device)
    bands = lay.fixed_bands.reshape(-1, 2)
    return bands[:, 0] == bands[:, 1]


def _pinned_level(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom, bracket):
    """The level of a family that a *pinned* cell sets, exactly, and that cell marked active.

    A cell whose every row is at a bound has a fixed mean ``M`` over a range of its
    shift; when ``M`` (or ``M - eps``) lies in the family's bracket, the level is ``M``
    (or ``M - eps``). The Newton steps cannot find it (a step there belongs to the
    wrong piece and is refused: the level stays at the bracket's midpoint, and the
    cell's rows within rounding of their bounds but not on them), and the strict
    comparisons with the unshifted means may leave the cell inactive: the Jacobian
    would then move the level with the other cells. Here such a cell's shift is put
    inside its range (every row on its bound), the level set to ``M`` (or ``M - eps``)
    and the other active cells moved to it.
    """
    z = s - lay.per_row(c)
    tol = 1e-8 * (1.0 + s.abs().amax())
    near_lo, near_hi = z <= lb + tol, z >= ub - tol
    loose = lay.sums((~(near_lo | near_hi)).to(s.dtype))  # rows clearly inside the bounds
    inf = torch.full((lay.Q + 1,), torch.inf, dtype=s.dtype, device=s.device)
    # the shifts that put every near row on its bound: c >= s - lb (bottom), c <= s - ub (top)
    lowest = (-inf).scatter_reduce(0, lay.q, torch.where(near_lo, s - lb, -torch.inf).reshape(-1),
                                   "amax")[: lay.Q]
    highest = inf.scatter_reduce(0, lay.q, torch.where(near_hi & ~near_lo, s - ub,
                                                        torch.inf).reshape(-1), "amin")[: lay.Q]
    flat = (counts > 0) & (loose == 0) & (lowest <= highest)
    # inside the range by a margin where it has room (s - (s - lb) may round above lb)
    margin = torch.minimum(tol, 0.5 * (highest - lowest))
    c_flat = torch.minimum(torch.maximum(c, lowest + margin), highest - margin)
    c = torch.where(flat, c_flat, c)
    z = s - lay.per_row(c)
    nf = lay.sums(((z > lb) & (z < ub)).to(s.dtype))
    sums = lay.sums(z.clamp(lb, ub))
    pinned = (flat & (nf == 0)).reshape(lay.B * lay.F, lay.G)
    mean = (sums / counts.clamp_min(1.0)).reshape(lay.B * lay.F, lay.G)
    lo, hi = bracket
    lo, hi = lo - (hi - lo), hi + (hi - lo)  # a mean computed on the bracket's edge may round out
    at_lo = pinned & (mean >= lo) & (mean <= hi)
    at_hi = pinned & ~at_lo & (mean - eps >= lo) & (mean - eps <= hi)
    edge = at_lo | at_hi
    found = edge.any(1, keepdim=True)
    level = torch.where(at_lo, mean, mean - eps)
    t = torch.where(found, torch.where(edge, level, -torch.inf).amax(1, keepdim=True), t)
    band_lo = _cells_of(t, lay)
    band_hi = band_lo + eps
    present = counts > 0
    top = (present & (m0 > band_hi)) | at_hi.reshape(-1)
    bottom = (present & (m0 < band_lo) & ~top) | at_lo.reshape(-1)
    active = top | bottom
    target = torch.where(top, band_hi, band_lo)
    newc = (sums + nf * c - counts * target) / nf.clamp_min(1.0)
    c = torch.where(active & (nf > 0), newc, torch.where(active, c, torch.zeros_like(c)))
    return c, t, top, bottom


def jacobian_apply(g, p, state, lay):
    """``J g``: the projector onto the free, non-active directions (differentiable in ``g``).

    Rows at a bound get 0; on the free rows of an active cell the cell's mean of ``g``
    is removed, except for the common move ``dt`` of its family's level.
    """
    free = (p > state["lb"]) & (p < state["ub"])
    gf = torch.where(free, g, torch.zeros_like(g))
    nf = lay.sums(free.to(g.dtype))
    nf_safe = nf.clamp_min(1.0)
    active = state["top"] | state["bottom"]
    u = lay.sums(gf) / nf_safe
    corr = u
    if state["level"] is not None:
        n = state["counts"]
        w = torch.where(active, n * n / nf_safe, 0.0)
        num = lay.family_sum(torch.where(active, n * u, 0.0))
        den = lay.family_sum(w)
        pinned = lay.family_sum((active & (nf == 0)).to(g.dtype)) > 0
        dt = torch.where((den > 0) & ~pinned, num / torch.where(den > 0, den, 1.0), 0.0)
        corr = u - n * _cells_of(dt, lay) / nf_safe
    corr = torch.where(active, corr, torch.zeros_like(corr))
    return torch.where(free, g - lay.per_row(corr), torch.zeros_like(g))


def violation(p, state, lay, eps):
    """Per problem: largest parity or band violation of ``p`` (float64), and bound violation."""
    counts = state["counts"]
    present = counts > 0
    m = lay.sums(p.to(torch.float64)) / counts.clamp_min(1.0)
    if lay.fixed_bands is None:
        fm = m.reshape(lay.B * lay.F, lay.G)
        fp = present.reshape(lay.B * lay.F, lay.G)
        big = math.inf
        gap = (torch.where(fp, fm, -big).amax(1) - torch.where(fp, fm, big).amin(1))
        gap = torch.where(fp.sum(1) >= 2, gap - eps, torch.zeros_like(gap))
        worst = gap.reshape(lay.B, lay.F).amax(1)
    else:
        lo = lay.fixed_bands[..., 0].reshape(-1)
        hi = lay.fixed_bands[..., 1].reshape(-1)
        v = torch.where(present, torch.maximum(lo - m, m - hi), torch.zeros_like(m))
        worst = v.reshape(lay.B, lay.C).amax(1)
    return worst
