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
        last_i = torch.maximum(last, first)
        x0, x1 = self.x[j - 1], self.x[j]
        m0, m1 = self.m[j - 1], self.m[j]
        den = m0 - m1
        frac = torch.where(den > 0, (m0 - mu) / torch.where(den > 0, den, 1.0), 0.0)
        c = x0 + frac * (x1 - x0)
        c = torch.where(mu > high, self.x[first] - (mu - high) * _STEEP, c)
        return torch.where(mu < low, self.x[last_i] + (low - mu) * _STEEP, c)


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
    if lay.fixed_bands is None:
        t = (_unclipped_level(lay, m0, counts, present, eps) if fast
             else _bracket_level(tab, lay, m0, counts, present, eps))
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
        c, t, top, bottom = _newton(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom)
        if fast:
            moved = (c - c_old).abs().amax()
            if t is not None:
                moved = torch.maximum(moved, (t - t_old).abs().amax())
            if early and moved <= settled:
                break
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
    """Fixed ``B``-ary rounds on each family's level ``t``; returns the bracket's midpoint."""
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
        mu = torch.minimum(torch.maximum(fam_m0.unsqueeze(2), t), t + eps)
        c = tab.shift(qg, mu)
        f = (cnt * torch.where(cnt > 0, c, 0.0)).sum(1)  # (BF, POINTS), non-increasing in t
        k = (f >= 0).sum(1, keepdim=True)
        lo, hi = grid.gather(1, k), grid.gather(1, k + 1)
    return 0.5 * (lo + hi)


def _newton(s, lb, ub, lay, c, t, m0, counts, eps, top, bottom):
    """One semismooth Newton step on (level, shifts) from the pieces at the shifts ``c``."""
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
        t = torch.where((den > 0) & ~pinned, num / torch.where(den > 0, den, 1.0), t)
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
