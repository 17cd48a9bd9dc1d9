"""The CPU path of a batch of problems (leading dimensions, ``vmap``): one Newton on all their shifts.

The batched form of :mod:`skfairlayer.torch._direct`. Each pass over the rows is a
handful of torch kernels on the whole ``(B, n)`` batch (the shifts reach the rows
and the clipped rows reach the cells through one matrix product with the cells'
one-hot matrix, shared when every problem has the same cells); the per-cell
arithmetic of a Newton step runs in numpy on the ``(B, cells)`` aggregates. The
last pass is the output, its certificate (a step that no longer moves any
problem's shifts) and the verification sums. Anything else (Newton not settled,
a pinned family, an invalid code, a non-finite score) returns None and the
general solve of :mod:`skfairlayer.torch._solve` answers. See
``docs/user_guide/torch.rst``.
"""

import math

import numpy as np
import torch

__all__ = ["solve"]

#: Newton steps before the general (bracketed) solve takes over.
_MAX_STEPS = 12


class _Rows:
    """The rows of a batch and their cells (numpy views); :meth:`pass_` evaluates one set of shifts."""

    def __init__(self, s, cell, n_cells, lb, ub):
        self.s, self.lb, self.ub = s, lb, ub
        self.clip = math.isfinite(lb) or math.isfinite(ub)
        B, n = s.shape
        self.shared = B == 1 or cell.stride(0) == 0
        slots = np.arange(n_cells)[:, None]
        if self.shared:  # one (C, n) one-hot matrix for every problem
            self.cell = cell[0].numpy()
            self.onehot = np.equal(self.cell, slots).astype(s.dtype)
        else:
            self.cell = cell.numpy()
            self.onehot = np.equal(self.cell[:, None, :], slots).astype(s.dtype)
        self.counts = self.onehot.sum(-1)  # (C,) or (B, C)

    def pass_(self, c):
        """Clipped rows at the shifts ``c`` (B, C); per cell: their sums and free counts."""
        s = self.s
        if c is None:
            z = s
        elif self.shared:
            z = c @ self.onehot
            np.subtract(s, z, out=z)
        else:
            z = np.matmul(c[:, None, :], self.onehot)[:, 0]
            np.subtract(s, z, out=z)
        if not self.clip:
            return z, self._sums(z), None
        w = np.empty((2, *s.shape))
        np.clip(z, self.lb, self.ub, out=w[0])
        np.equal(w[0], z, out=w[1])  # a row exactly at a bound counts as free here only
        if self.shared:
            agg = (w.reshape(-1, s.shape[1]) @ self.onehot.T).reshape(2, s.shape[0], -1)
        else:
            agg = np.matmul(self.onehot, w.transpose(1, 2, 0)).transpose(2, 0, 1)
        return w[0], agg[0], agg[1]

    def _sums(self, z):
        if self.shared:
            return z @ self.onehot.T
        return np.matmul(self.onehot, z[..., None])[..., 0]

    def strict_free(self, p):
        """Per cell, the rows strictly inside the bounds."""
        return self._sums(((p > self.lb) & (p < self.ub)).astype(p.dtype))


def _unclipped_level(m0, n, eps):
    """Each family's level when no bound binds (cells (B, F, G)): the root of a piecewise-linear map.

    ``phi(t) = sum_q n_q (m0_q - clamp(m0_q, t, t + eps))`` is non-increasing, with
    breakpoints ``m0_q`` and ``m0_q - eps``; the root lies on the piece right of the
    largest breakpoint ``ta`` where ``phi >= 0``, of slope minus the size of the
    cells outside ``[t, t + eps]`` there.
    """
    present = n > 0
    cand = np.concatenate([m0, m0 - eps], -1)  # (B, F, 2G); absent cells weigh 0
    d = m0[..., None] - cand[..., None, :]  # m0_q - t, (B, F, G, 2G)
    move = np.maximum(d - eps, 0.0)
    move += np.minimum(d, 0.0)
    f = np.einsum("...g,...gk->...k", n, move)
    pos = (f >= 0) & np.concatenate([present, present], -1)
    ta = np.max(cand, -1, where=pos, initial=-np.inf)
    fa = np.min(f, -1, where=pos, initial=np.inf)
    outside = (m0 - eps > ta[..., None]) | (m0 <= ta[..., None])
    slope = np.einsum("...g,...g->...", n, outside)
    ta = np.where(np.isfinite(ta), ta, 0.0)  # a family with no present cell: any level
    return np.where(slope > 0, ta + np.where(slope > 0, fa, 0.0) / np.maximum(slope, 1.0), ta)


class _Newton:
    """Newton on the cells' shifts of ``B`` problems; per-cell arrays of shape (B, F, G) (numpy)."""

    def __init__(self, n, m0, eps, bands):
        self.n, self.m0, self.eps = n, m0, eps
        self.present = n > 0
        self.neps = n * eps
        if bands is None:
            self.t = _unclipped_level(m0, n, eps)[..., None]  # (B, F, 1)
            self.lo, self.hi = self.t, self.t + eps
            self.pairs = self.present.sum(-1) >= 2  # families with a gap to measure
        else:
            self.t = None
            self.lo, self.hi = bands[..., 0], bands[..., 1]
        self._active()

    def _active(self):
        self.top = self.present & (self.m0 > self.hi)
        self.bottom = self.present & (self.m0 < self.lo)

    def step(self, c, sums, nf):
        """New shifts from the pattern (sums, free counts) at ``c``; None if a family is pinned."""
        a = sums if c is None else sums + nf * c  # the sum at shift c' is a - nf c'
        act = self.top | self.bottom
        if np.any(nf == 0, where=act):
            return None
        inv = 1.0 / np.maximum(nf, 1.0)
        if self.t is not None:  # the family's level from the active cells
            w = self.n * inv
            w *= act
            den = (w * self.n).sum(-1, keepdims=True)
            num = (w * (a - self.neps * self.top)).sum(-1, keepdims=True)
            self.t = np.divide(num, den, out=self.t.copy(), where=den > 0)
            self.lo, self.hi = self.t, self.t + self.eps
            self._active()
            act = self.top | self.bottom
            if np.any(nf == 0, where=act):
                return None
        new = a - self.n * np.where(self.top, self.hi, self.lo)
        new *= inv
        new *= act
        return new

    def violation(self, sums):
        """Largest parity (or band) violation of the outputs whose cell sums are ``sums``."""
        m = sums / np.maximum(self.n, 1.0)
        if self.t is None:
            return float(np.max(np.maximum(self.lo - m, m - self.hi), where=self.present, initial=0.0))
        gap = np.max(m, -1, where=self.present, initial=-np.inf)
        gap -= np.min(m, -1, where=self.present, initial=np.inf)
        gap -= self.eps
        return float(np.max(gap, where=self.pairs, initial=0.0))


def solve(s, cell, bands, lb, ub, eps, n_families, n_groups, strict, tol):
    """Project the rows of ``s`` (B, n) float64 on the CPU; None when the general solve must answer.

    Parameters
    ----------
    s : Tensor (B, n) float64
    cell : LongTensor (B, n)
        ``f * G + g`` per row, ``-1`` for a row of no cell (a stride-0 batch dimension
        when every problem has the same cells).
    bands : Tensor (B, F * G, 2) or None
        Fixed bands per cell (mean residual), or None (a shared level per family).
    lb, ub : float
        Bounds (possibly infinite).
    eps : float
    n_families, n_groups : int
    strict : bool
        Leave to the general solve (which raises) a missing or fully clamped group.
    tol : float
        Largest parity violation accepted.

    Returns
    -------
    (p, top, bottom, level) or None
        Outputs (B, n), active cells (B, F * G) and levels (B, F), as the general solve.
    """
    B, n = s.shape
    C = n_families * n_groups
    rows = _Rows(s.detach().resolve_neg().numpy(), cell, C, lb, ub)
    s = rows.s
    if not lb <= ub or (n and rows.cell.min() < -1):
        return None  # an invalid code: the general solve raises
    big = max(-float(s.min()), float(s.max())) if n else 0.0
    if not math.isfinite(big):
        return None
    shape = (B, n_families, n_groups)
    counts = np.broadcast_to(rows.counts, (B, C)).reshape(shape)
    if strict and not counts.all():
        return None
    zc, sums, nf = rows.pass_(None)
    sums = sums.reshape(shape)
    nf = counts if nf is None else nf.reshape(shape)
    bands_np = None if bands is None else bands.detach().numpy().reshape(*shape, 2)
    newton = _Newton(counts, sums / np.maximum(counts, 1.0), eps, bands_np)
    scale = 1e-12 * (1.0 + big)
    c, t = None, newton.t
    for _ in range(_MAX_STEPS):
        new = newton.step(c, sums, nf)
        if new is None:
            return None
        moved = np.abs(new if c is None else new - c).max(initial=0.0)
        if t is not None:
            moved = max(moved, np.abs(newton.t - t).max(initial=0.0))
        c, t = new, newton.t
        if moved <= scale:  # settled (the certificate of the general path)
            if moved > 1e-4 * scale:  # more than rounding: the outputs at the new shifts
                zc, sums, nf = rows.pass_(c.reshape(B, C))
            break
        zc, sums, nf = rows.pass_(c.reshape(B, C))
        sums = sums.reshape(shape)
        nf = counts if nf is None else nf.reshape(shape)
    else:
        return None
    sums = sums.reshape(shape)
    if not np.isfinite(sums).all() or newton.violation(sums) > tol:
        return None
    # a band of no width holds its cells on both sides: active even where they did not move
    held = newton.present & ~newton.top & (newton.hi == newton.lo)
    top, bottom = newton.top.reshape(B, C), (newton.bottom | held).reshape(B, C)
    if strict and ((top | bottom) & (rows.strict_free(zc) == 0)).any():
        return None
    level = t.reshape(B, n_families) if t is not None else np.zeros((B, n_families))
    return (torch.from_numpy(zc.copy() if zc is s else zc), torch.from_numpy(top),
            torch.from_numpy(bottom), torch.from_numpy(np.ascontiguousarray(level)))
