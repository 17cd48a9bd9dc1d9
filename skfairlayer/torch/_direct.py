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

from .._numeric import clip as _clip

__all__ = ["Direct", "solve", "jacobian_matrix", "jacobian_apply", "jacobian_apply_numpy"]

#: Newton steps before the caller's general (bracketed) solve takes over.
_MAX_STEPS = 12


class Direct:
    """A solved problem: the outputs, and what the Jacobian needs (computed when first asked for).

    The free rows (strictly inside the bounds) and the backward matrix come from the
    outputs, the cells' sizes ``n`` and the active cells; the direct solve computes
    them at once when asked, the general fallback gives them directly (``parts``:
    its free rows and matrix).
    """

    def __init__(self, p, n, active, fams, shared, lb, ub, parts=None):
        self.p, self.n, self.active, self.fams, self.shared = p, n, active, fams, shared
        self.lb, self.ub = lb, ub
        self.parts = parts
        self.onehot = None  # the slots' one-hot matrix of the solve, while the parts are to build

    def backward_parts(self, p, idx):
        """``(free, O, M)`` (numpy float64) for the outputs ``p`` and the slots ``idx`` (arrays or CPU tensors).

        ``free`` marks the rows strictly inside the bounds, ``O`` is the slots' one-hot
        matrix and ``M`` the backward matrix: ``J g = f - free (M O f) O`` with
        ``f = free g`` (see :func:`jacobian_apply`).
        """
        if self.parts is None:
            p = np.asarray(p)
            onehot = self.onehot if self.onehot is not None else _onehot(np.asarray(idx), len(self.n), p.dtype)
            self.parts = _parts(p, onehot, self)[0]
            self.onehot = None
        elif len(self.parts) == 2:  # the general solve's free rows and matrix
            free, matrix = (a.numpy() for a in self.parts)
            self.parts = free, _onehot(np.asarray(idx), matrix.shape[0], free.dtype), matrix
        return self.parts

    def jacobian(self, p, idx):
        """``(free, U, M)``: :meth:`backward_parts` with ``U = O free``, ``J g = free g - (M U g) U``."""
        free, onehot, matrix = self.backward_parts(p, idx)
        return free, onehot * free, matrix


def _parts(p, onehot, res, free=None, nf=None):
    """The Jacobian's ``(free, O, M)`` (see :meth:`Direct.backward_parts`) and the free counts.

    ``free`` and ``nf``: the free rows and counts of the pass that gave ``p``, if known.
    """
    if math.isinf(res.lb) and math.isinf(res.ub):  # no bounds: every (finite) row is free
        free, nf = np.ones(p.size), res.n
    elif free is None:
        free = _inside(p, res.lb, res.ub, np.empty(p.size))
        nf = np.dot(onehot, free).tolist()
    return (free, onehot, jacobian_matrix(res.n, nf, res.active, res.fams, res.shared)), nf


def _onehot(idx, n_slots, dtype):
    return np.equal(idx, np.arange(n_slots)[:, None]).astype(dtype)


def _unclipped_level(m0, n, eps):
    """Level ``t`` where ``sum n_q (m0_q - clamp(m0_q, t, t + eps))`` changes sign (no bounds)."""
    if max(m0) - min(m0) <= eps:
        return max(m0) - eps  # every mean in the band: nothing moves
    if len(m0) == 2:  # the root between the lower mean and the upper one less eps
        (m_lo, n_lo), (m_hi, n_hi) = sorted(zip(m0, n, strict=True))
        return m_lo + n_hi * (m_hi - eps - m_lo) / (n_lo + n_hi)

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
        self.s, self.lb, self.ub = s, lb, ub
        self.clip = math.isfinite(lb) or math.isfinite(ub)
        self.onehot = _onehot(idx, n_slots, s.dtype)  # (slots, n)
        self.n = None  # the slots' sizes, from the first pass

    def first(self, inside):
        """The rows at zero shifts; per slot: their sums, free counts and sizes.

        ``inside``: no score is out of the bounds (each row is its own clipped value).
        A row exactly at a bound counts as free here (the first Newton pattern).
        """
        w = np.empty((2 if inside else 3, self.s.size))
        if inside:
            w[0] = self.s
            w[1] = 1.0
            sums, n = np.dot(self.onehot, w.T).T.tolist()
            return self.s, sums, n, n
        _clip(self.s, self.lb, self.ub, out=w[0])
        np.equal(w[0], self.s, out=w[1])
        w[2] = 1.0
        sums, nf, n = np.dot(self.onehot, w.T).T.tolist()
        return w[0], sums, nf, n

    def pass_(self, c):
        """The rows at the shifts ``c``: ``(outputs, sums, free counts, free rows)`` (per slot sums).

        ``free`` (1.0 or 0.0; None with no bounds, where every row is free) marks the
        rows strictly inside the bounds: the Jacobian's, should this pass be the last.
        """
        z = np.dot(c, self.onehot)
        np.subtract(self.s, z, out=z)
        if not self.clip:
            return z, np.dot(self.onehot, z).tolist(), self.n, None
        w = np.empty((2, z.size))
        _clip(z, self.lb, self.ub, out=w[0])
        _inside(z, self.lb, self.ub, out=w[1])
        sums, nf = np.dot(self.onehot, w.T).T.tolist()
        return w[0], sums, nf, w[1]


def _inside(z, lb, ub, out):
    """Write 1.0 in ``out`` where ``lb < z < ub`` (one bound at least finite), else 0.0."""
    if math.isinf(ub):
        return np.less(lb, z, out=out)
    if math.isinf(lb):
        return np.less(z, ub, out=out)
    return np.logical_and(np.less(lb, z), np.less(z, ub), out=out)


def _step(fams, n, sums, nf, c, m0, eps, bands, t, top, bottom):
    """One Newton step from the pass at the shifts ``c`` (its ``sums``, ``nf``; None: zero shifts).

    Returns the new (shifts, levels, top, bottom) and how far the shifts and levels
    moved; None if a family is pinned (an active cell of no free row).
    """
    a = sums if c is None else [v + k * x for v, k, x in zip(sums, nf, c, strict=True)]
    new_c, new_t, new_top, new_bottom = [0.0] * len(n), list(t), list(top), list(bottom)
    moved = 0.0
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
                new_t[f] = num / den
                moved = max(moved, abs(new_t[f] - t[f]))
            lo, hi = new_t[f], new_t[f] + eps
        for q in slots:
            if bands is not None:
                lo, hi = bands[q]
            up = new_top[q] = n[q] > 0 and m0[q] > hi
            down = new_bottom[q] = n[q] > 0 and m0[q] < lo
            if up or down:
                if nf[q] == 0:
                    return None
                new_c[q] = x = (a[q] - n[q] * (hi if up else lo)) / nf[q]
                moved = max(moved, abs(x if c is None else x - c[q]))
            elif c is not None and c[q]:
                moved = max(moved, abs(c[q]))
    return new_c, new_t, new_top, new_bottom, moved


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


def solve(s, idx, n_slots, n_groups, offset, lb, ub, eps, bands, strict, tol, parts=False):
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
    parts : bool, default=False
        Compute the Jacobian's parts now (``Direct.parts``; a backward pass will need them).

    Returns
    -------
    Direct or None
    """
    scores = s.detach().resolve_neg().numpy()
    rows = _Rows(scores, idx.numpy(), n_slots, lb, ub)
    lo, hi = (np.minimum.reduce(scores), np.maximum.reduce(scores)) if scores.size else (0.0, 0.0)
    if not math.isfinite(lo - hi):
        return None  # a non-finite score
    zc, sums, nf, n = rows.first(not rows.clip or (lb <= lo and hi <= ub))
    if sum(n) != scores.size or (strict and min(n[offset:]) == 0):
        return None  # a code out of range, or a missing group
    rows.n = n
    scale = 1e-12 * (1.0 + max(-lo, hi))
    fams = _families(n_slots - offset, n_groups, offset)
    m0 = [v / k if k else 0.0 for v, k in zip(sums, n, strict=True)]
    out = _newton(rows, fams, n, m0, eps, bands, sums, nf, scale)
    if out is None:
        return None
    last, sums, top, bottom, nf, free = out
    zc = zc if last is None else last
    if not math.isfinite(sum(sums)) or _violation(fams, n, sums, eps, bands) > tol:
        return None
    # a band of no width holds its cells on both sides: active even where they did not move
    width = [eps] * len(n) if bands is None else [hi - lo for lo, hi in bands]
    active = [x or y or (q >= offset and k > 0 and w == 0)
              for q, (x, y, k, w) in enumerate(zip(top, bottom, n, width, strict=True))]
    res = Direct(torch.from_numpy(zc if zc is not scores else zc.copy()), n, active, fams,
                 bands is None, lb, ub)
    if not (parts or strict):
        res.onehot = rows.onehot
        return res
    res.parts, nf = _parts(zc, rows.onehot, res, free, nf)
    if strict and any(act and k == 0 for act, k in zip(active, nf, strict=True)):
        return None  # a fully clamped active group: the general solve raises
    return res


def _newton(rows, fams, n, m0, eps, bands, sums, nf, scale):
    """Newton from the pass at zero shifts (its ``sums``, ``nf``).

    Returns ``(outputs, sums, top, bottom, free counts, free rows)`` of the last pass
    (outputs, counts and rows None while no step has moved the shifts: those of the
    first pass), or None when the general solve must answer (a pinned family, or
    not settled).
    """
    c, (t, top, bottom) = None, _start(fams, n, m0, eps, bands)
    zc = free = strict_nf = None
    for _ in range(_MAX_STEPS):
        new = _step(fams, n, sums, nf, c, m0, eps, bands, t, top, bottom)
        if new is None:
            return None
        if new[4] <= scale:  # settled (the certificate of the general path)
            if new[4] > 1e-4 * scale:  # more than rounding: the outputs at the new shifts
                zc, sums, strict_nf, free = rows.pass_(new[0])
            return zc, sums, new[2], new[3], strict_nf, free
        c, t, top, bottom, _ = new
        zc, sums, nf, free = rows.pass_(c)
        strict_nf = nf
    return None


def jacobian_matrix(n, nf, active, fams, shared):
    """``M`` (numpy) with ``corr = M @ (cells' sums of the free rows' g)`` (see :func:`jacobian_apply`).

    An active cell's correction is its free rows' mean of ``g`` less its share of
    its family's common move (``shared``); a family with an active cell of no
    free row (pinned) has no common move, as in the general backward pass.
    """
    size = len(n)
    M = [0.0] * (size * size)  # row-major
    for slots in fams:
        act = [q for q in slots if active[q]]
        pinned = False
        for q in act:
            M[q * size + q] = 1.0 / max(nf[q], 1.0)
            pinned = pinned or nf[q] == 0
        if not shared or pinned or not act:
            continue
        v = [n[q] / nf[q] for q in act]
        den = 0
        for q in act:
            den += n[q] * n[q] / nf[q]
        if den <= 0:
            continue
        for q, vq in zip(act, v, strict=True):
            row = q * size
            for r, vr in zip(act, v, strict=True):
                M[row + r] -= vq * vr / den
    return np.array(M).reshape(size, size)


def jacobian_apply(g, free, onehot, matrix):
    """``J g = f - free (M @ (O @ f)) @ O`` with ``f = free g`` (torch; linear in ``g``, differentiable).

    ``O`` is the slots' one-hot matrix (:meth:`Direct.backward_parts`).
    """
    f = g * free
    return f - torch.mv(onehot.T, torch.mv(matrix, torch.mv(onehot, f))) * free


def jacobian_apply_numpy(g, free, onehot, matrix):
    """:func:`jacobian_apply` on numpy arrays (a backward pass that is not differentiated)."""
    out = g * free
    corr = np.dot(np.dot(matrix, np.dot(onehot, out)), onehot)
    corr *= free
    out -= corr
    return out
