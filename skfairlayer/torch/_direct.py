"""The CPU path of the layer: Newton on the cells' shifts, the per-cell arithmetic in Python floats.

On the CPU reading a tensor's values costs no device round trip, so each Newton
step reads back the few per-cell aggregates of one pass over the rows (the sums
of the clipped shifted scores and the numbers of free rows, one pair per cell)
and solves the step's small system in Python floats. A pass is a handful of
torch kernels; a typical batch needs three passes, the last of which is the
output, its certificate (a step that no longer moves the shifts) and the
verification sums. The backward pass is the projector of
:func:`skfairlayer.torch._solve.jacobian_apply` as one ``Q x Q`` matrix on the
cells' sums of the free rows' gradient. See ``docs/user_guide/torch.rst``.
"""

import math

import torch

__all__ = ["Direct", "solve", "jacobian_matrix", "jacobian_apply"]

#: Newton steps before the caller's general (bracketed) solve takes over.
_MAX_STEPS = 12


class Direct:
    """A solved problem: outputs, free-row mask (float64) and the backward matrix."""

    def __init__(self, p, free, matrix):
        self.p, self.free, self.matrix = p, free, matrix


def _unclipped_level(m0, n, eps):
    """Level ``t`` where ``sum n_q (m0_q - clamp(m0_q, t, t + eps))`` changes sign (no bounds)."""
    if max(m0) - min(m0) <= eps:
        return max(m0) - eps  # every mean in the band: nothing moves

    def phi(t):
        total = 0.0
        for m, k in zip(m0, n, strict=True):
            if m > t + eps:
                total += k * (m - t - eps)
            elif m < t:
                total += k * (m - t)
        return total

    cand = sorted(set(m0) | {m - eps for m in m0})
    i, j = 0, len(cand) - 1  # phi(cand[i]) >= 0 > phi(cand[j]) (phi is non-increasing)
    fi, fj = phi(cand[i]), phi(cand[j])
    if fj >= 0:
        return cand[j]
    while j - i > 1:
        k = (i + j) // 2
        fk = phi(cand[k])
        if fk >= 0:
            i, fi = k, fk
        else:
            j, fj = k, fk
    return cand[i] + fi * (cand[j] - cand[i]) / (fi - fj)


def _families(n_cells, n_groups, offset):
    """Slots of each family's cells (slot ``offset + f * G + g``)."""
    return [list(range(offset + f * n_groups, offset + (f + 1) * n_groups))
            for f in range(n_cells // n_groups)]


def _pass(s, idx, c, lb, ub, onehot, clip, free):
    """Shifted and clipped rows at the shifts ``c``; per slot: sums of them and free counts.

    ``free`` (float64, written in place) marks the rows strictly inside the bounds.
    """
    z = s - torch.as_tensor(c, dtype=s.dtype).index_select(0, idx)
    if not clip:
        return z, torch.mv(onehot, z).tolist(), [float(k) for k in onehot.sum(1).tolist()]
    zc = z.clamp(lb, ub)
    torch.eq(zc, z, out=free)  # a row exactly at a bound counts as free here only
    return zc, torch.mv(onehot, zc).tolist(), torch.mv(onehot, free).tolist()


def _step(fams, n, a, nf, m0, eps, bands, state):
    """One Newton step: new (shifts, levels, top, bottom) from the pattern's (a, nf); None if pinned."""
    _, t, top, bottom = state
    c, top, bottom, t = [0.0] * len(n), list(top), list(bottom), list(t)
    for f, slots in enumerate(fams):
        if bands is None:
            num = den = 0.0
            for q in slots:
                if top[q] or bottom[q]:
                    if nf[q] == 0:
                        return None
                    num += n[q] * (a[q] - n[q] * eps * top[q]) / nf[q]
                    den += n[q] * n[q] / nf[q]
            if den > 0:
                t[f] = num / den
            lo, hi = t[f], t[f] + eps
        for q in slots:
            if bands is not None:
                lo, hi = bands[q]
            top[q] = n[q] > 0 and m0[q] > hi
            bottom[q] = n[q] > 0 and m0[q] < lo
            if top[q] or bottom[q]:
                if nf[q] == 0:
                    return None
                c[q] = (a[q] - n[q] * (hi if top[q] else lo)) / nf[q]
    return c, t, top, bottom


def _start(fams, n, m0, eps, bands):
    """Levels and active cells of the solution that ignores the bounds."""
    t, top, bottom = [0.0] * len(fams), [False] * len(n), [False] * len(n)
    for f, slots in enumerate(fams):
        live = [q for q in slots if n[q] > 0]
        if bands is None:
            if not live:
                continue
            t[f] = _unclipped_level([m0[q] for q in live], [n[q] for q in live], eps)
        for q in live:
            lo, hi = (t[f], t[f] + eps) if bands is None else bands[q]
            top[q], bottom[q] = m0[q] > hi, m0[q] < lo
    return t, top, bottom


def _violation(fams, n, sums, eps, bands):
    """Largest parity (or band) violation of the outputs whose cell sums are ``sums``."""
    worst = 0.0
    for slots in fams:
        m = [(sums[q] / n[q], q) for q in slots if n[q] > 0]
        if bands is None:
            if len(m) >= 2:
                worst = max(worst, max(v for v, _ in m) - min(v for v, _ in m) - eps)
        else:
            worst = max([worst] + [max(bands[q][0] - v, v - bands[q][1]) for v, q in m])
    return worst


def solve(s, idx, n_slots, n_groups, offset, lb, ub, eps, bands, strict, tol):
    """Project ``s`` (n,) float64 on the CPU; None when the general solve must answer.

    Parameters
    ----------
    s : Tensor (n,) float64
    idx : LongTensor (n,)
        Slot of each row: ``offset + cell`` (slot 0 holds rows of no cell when ``offset`` is 1).
    n_slots, n_groups, offset : int
    lb, ub : float
        Bounds (possibly infinite).
    eps : float
    bands : list of (lo, hi) per slot, or None (a shared level per family)
    strict : bool
        Leave to the general solve (which raises) a missing or fully clamped group.
    tol : float
        Largest parity violation accepted.

    Returns
    -------
    Direct or None
    """
    clip = math.isfinite(lb) or math.isfinite(ub)
    onehot = s.new_empty(n_slots, s.numel())
    torch.eq(idx, torch.arange(n_slots).unsqueeze(1), out=onehot)  # (slots, n)
    n = onehot.sum(1).tolist()
    lo, hi = torch.aminmax(s) if s.numel() else (s.new_zeros(()), s.new_zeros(()))
    lo, hi = float(lo), float(hi)
    if sum(n) != s.numel() or not math.isfinite(lo - hi) or (strict and min(n[offset:]) == 0):
        return None  # a code out of range, a non-finite score, or a missing group
    scale = 1e-12 * (1.0 + max(-lo, hi))
    free = torch.ones_like(s)
    c = [0.0] * n_slots
    zc, sums, nf = _pass(s, idx, c, lb, ub, onehot, clip, free)
    fams = _families(n_slots - offset, n_groups, offset)
    m0 = [v / k if k else 0.0 for v, k in zip(sums, n, strict=True)]
    state = (c, *_start(fams, n, m0, eps, bands))
    for _ in range(_MAX_STEPS):
        new = _step(fams, n, [v + k * x for v, k, x in zip(sums, nf, c, strict=True)],
                    nf, m0, eps, bands, state)
        if new is None:
            return None
        moved = 0.0
        for x, y in zip(new[0] + new[1], c + state[1], strict=True):
            moved = max(moved, abs(x - y))
        if moved <= scale:  # settled (the certificate of the general path)
            if moved > 1e-4 * scale:  # more than rounding: the outputs at the new shifts
                zc, sums, nf = _pass(s, idx, new[0], lb, ub, onehot, clip, free)
            break
        state = new
        c = new[0]
        zc, sums, nf = _pass(s, idx, c, lb, ub, onehot, clip, free)
    else:
        return None
    if not math.isfinite(sum(sums)) or _violation(fams, n, sums, eps, bands) > tol:
        return None
    active = [x or y for x, y in zip(new[2], new[3], strict=True)]
    if strict and any(act and k == 0 for act, k in zip(active, nf, strict=True)):
        return None
    if clip:  # free strictly inside the bounds (a row exactly at a bound has no gradient)
        torch.gt(zc, lb, out=free)
        free.mul_(zc < ub)
        nf = torch.mv(onehot, free).tolist()
    matrix = jacobian_matrix(n, nf, active, fams, bands is None)
    return Direct(zc, free, torch.tensor(matrix, dtype=s.dtype))


def jacobian_matrix(n, nf, active, fams, shared):
    """``M`` with ``corr = M @ (cells' sums of the free rows' g)`` (see :func:`jacobian_apply`).

    An active cell's correction is its free rows' mean of ``g`` less its share of
    its family's common move (``shared``); a family with an active cell of no
    free row (pinned) has no common move, as in the general backward pass.
    """
    size = len(n)
    M = [[0.0] * size for _ in range(size)]
    for slots in fams:
        act = [q for q in slots if active[q]]
        for q in act:
            M[q][q] = 1.0 / max(nf[q], 1.0)
        if not shared or any(nf[q] == 0 for q in act):
            continue
        den = sum(n[q] * n[q] / nf[q] for q in act)
        if den <= 0:
            continue
        v = {q: n[q] / nf[q] for q in act}
        for q in act:
            for r in act:
                M[q][r] -= v[q] * v[r] / den
    return M


def jacobian_apply(g, free, idx, matrix):
    """``J g`` on the rows: ``free * (g - (M @ sums(free * g))[idx])`` (linear in ``g``)."""
    gf = g * free
    sums = g.new_zeros(matrix.shape[0]).index_add(0, idx, gf)
    return gf - free * torch.mv(matrix, sums).index_select(0, idx)
