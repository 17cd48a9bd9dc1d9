"""The CPU path of the layer: Newton on the cells' shifts, the per-cell arithmetic in Python floats.

On the CPU reading a tensor's values costs no device round trip, so each Newton
step reads back the few per-cell aggregates of one pass over the rows (the sums
of the clipped shifted scores and the numbers of free rows, one pair per cell)
and solves the step's small system in Python floats. A pass is a handful of
numpy operations on views of the tensors; a typical batch needs three passes,
the last of which is the output, its certificate (a step that no longer moves
the shifts) and the verification sums. The backward pass is the projector of
:func:`skfairlayer.torch._solve.jacobian_apply` as one ``Q x Q`` matrix on the
cells' sums of the free rows' gradient. See ``docs/user_guide/torch.rst``.
"""

import math

import numpy as np
import torch

__all__ = ["Direct", "solve", "jacobian_matrix", "jacobian_apply", "jacobian_apply_numpy"]

#: Newton steps before the caller's general (bracketed) solve takes over.
_MAX_STEPS = 12


class Direct:
    """A solved problem: the outputs, and what the Jacobian needs (computed when first asked for).

    The free rows (strictly inside the bounds) and the backward matrix come from the
    outputs, the cells' sizes ``n`` and the active cells; the general fallback gives
    them directly (``parts``).
    """

    def __init__(self, p, n, active, fams, shared, lb, ub, parts=None):
        self.p, self.n, self.active, self.fams, self.shared = p, n, active, fams, shared
        self.lb, self.ub = lb, ub
        self.parts = parts
        self.onehot = None  # the slots' one-hot matrix of the solve, while the parts are to build

    def jacobian(self, p, idx):
        """``(free, U, M)`` (numpy float64) for the outputs ``p`` and the slots ``idx`` (numpy).

        ``free`` marks the rows strictly inside the bounds, ``U`` is the slots' one-hot
        matrix on the free rows and ``M`` the backward matrix: ``J g = free g - (M U g) U``.
        """
        if self.parts is None:
            free = np.greater(p, self.lb)
            free &= p < self.ub
            free = free.astype(p.dtype)
            onehot = _onehot(idx, len(self.n), p.dtype) if self.onehot is None else self.onehot
            U = onehot * free
            nf = U.sum(1).tolist()
            self.parts = free, U, np.array(jacobian_matrix(self.n, nf, self.active, self.fams, self.shared))
            self.onehot = None
        elif len(self.parts) == 2:  # the general solve's free rows and matrix
            free, matrix = (a.numpy() for a in self.parts)
            self.parts = free, _onehot(idx, matrix.shape[0], p.dtype) * free, matrix
        return self.parts


def _onehot(idx, n_slots, dtype):
    return np.equal(idx, np.arange(n_slots)[:, None]).astype(dtype)


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


class _Rows:
    """The rows (numpy views of the tensors) and their slots' one-hot matrix."""

    def __init__(self, s, idx, n_slots, lb, ub):
        self.s, self.idx, self.lb, self.ub = s, idx, lb, ub
        self.clip = math.isfinite(lb) or math.isfinite(ub)
        self.onehot = _onehot(idx, n_slots, s.dtype)  # (slots, n)

    def pass_(self, c):
        """Shifted and clipped rows at the shifts ``c``; per slot: their sums and free counts.

        A row exactly at a bound counts as free here only (the Newton pattern).
        """
        z = self.s if c is None else np.subtract(self.s, np.dot(c, self.onehot))
        if not self.clip:
            return z, np.dot(self.onehot, z).tolist(), None
        w = np.empty((2, z.size))
        np.clip(z, self.lb, self.ub, out=w[0])
        np.equal(w[0], z, out=w[1])
        sums, nf = np.dot(self.onehot, w.T).T.tolist()
        return w[0], sums, nf


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
    scores = s.detach().resolve_neg().numpy()
    rows = _Rows(scores, idx.numpy(), n_slots, lb, ub)
    n = rows.onehot.sum(1).tolist()
    lo, hi = (float(scores.min()), float(scores.max())) if scores.size else (0.0, 0.0)
    if sum(n) != scores.size or not math.isfinite(lo - hi) or (strict and min(n[offset:]) == 0):
        return None  # a code out of range, a non-finite score, or a missing group
    scale = 1e-12 * (1.0 + max(-lo, hi))
    zc, sums, nf = rows.pass_(None)
    nf = nf or n
    fams = _families(n_slots - offset, n_groups, offset)
    m0 = [v / k if k else 0.0 for v, k in zip(sums, n, strict=True)]
    state = ([0.0] * n_slots, *_start(fams, n, m0, eps, bands))
    c = None
    for _ in range(_MAX_STEPS):
        a = sums if c is None else [v + k * x for v, k, x in zip(sums, nf, c, strict=True)]
        new = _step(fams, n, a, nf, m0, eps, bands, state)
        if new is None:
            return None
        moved = 0.0
        for x, y in zip(new[0] + new[1], state[0] + state[1], strict=True):
            moved = max(moved, abs(x - y))
        if moved <= scale:  # settled (the certificate of the general path)
            if moved > 1e-4 * scale:  # more than rounding: the outputs at the new shifts
                zc, sums, nf = rows.pass_(new[0])
            break
        state = new
        c = new[0]
        zc, sums, nf = rows.pass_(c)
        nf = nf or n
    else:
        return None
    if not math.isfinite(sum(sums)) or _violation(fams, n, sums, eps, bands) > tol:
        return None
    active = [x or y for x, y in zip(new[2], new[3], strict=True)]
    res = Direct(torch.from_numpy(zc if zc is not scores else zc.copy()), n, active, fams,
                 bands is None, lb, ub)
    res.onehot = rows.onehot
    if strict:  # a fully clamped active group: the general solve raises
        nf = res.jacobian(zc, rows.idx)[1].sum(1).tolist()
        if any(act and k == 0 for act, k in zip(active, nf, strict=True)):
            return None
    return res


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


def jacobian_apply(g, free, U, matrix):
    """``J g = free * g - (M @ (U @ g)) @ U`` on the rows (torch; linear in ``g``, differentiable)."""
    return g * free - torch.mv(U.T, torch.mv(matrix, torch.mv(U, g)))


def jacobian_apply_numpy(g, free, U, matrix):
    """:func:`jacobian_apply` on numpy arrays (a backward pass that is not differentiated)."""
    out = g * free
    out -= (matrix @ (U @ g)) @ U
    return out
