"""Multiclass demographic parity on the simplex and marginal parity over several attributes.

Both are projections whose cells overlap or couple (a row's class columns share
one simplex constraint; a row belongs to one group of every attribute), solved
by the active-set Newton of :mod:`skfairlayer.torch._active` in float64 on the
input's device, one problem of a batch at a time, and verified. Marginal parity
starts Newton from exact block ascent (each attribute's family solved exactly by
:mod:`skfairlayer.torch._solve` given the others' shifts); the multiclass layer
starts from zero shifts and, should Newton not settle, from the multipliers of
the numpy core. Degenerate problems where Newton does not settle take the core's
verified solution. See ``docs/user_guide/torch.rst``.
"""

import math

import numpy as np
import torch

from ..exceptions import InfeasibleProblemError, SolverError
from . import _active, _solve

__all__ = ["StructuredProject"]

#: Newton steps per attempt; block-ascent sweeps before each marginal attempt; attempts.
_STEPS = 12
_SWEEPS = 2
_ATTEMPTS = 8
#: Largest parity violation tolerated in a float64 answer.
VERIFY_TOL = 1e-9


def simplex_rows(V):
    """Euclidean projection of each row (last dimension) of ``V`` onto the probability simplex."""
    u = torch.sort(V, -1, descending=True).values
    css = torch.cumsum(u, -1) - 1.0
    ks = torch.arange(1, V.shape[-1] + 1, dtype=V.dtype, device=V.device)
    r = (u - css / ks > 0).sum(-1, keepdim=True).clamp_min(1)
    tau = css.gather(-1, r - 1) / r.to(V.dtype)
    return (V - tau).clamp_min(0.0)


class _Simplex:
    """One multiclass problem: scores ``S`` (n, K), codes ``g`` (n,) in ``[0, k)``."""

    def __init__(self, S, g, k):
        self.S, self.g, self.k = S, g, k
        self.n, self.K = S.shape
        self.counts = torch.zeros(k, dtype=S.dtype, device=S.device).index_add(0, g, torch.ones_like(S[:, 0]))
        fam = torch.arange(k * self.K, device=S.device) % self.K
        self.cells = _active.Cells(fam, self.counts.repeat_interleave(self.K), self.K)

    def sums(self, h):
        return torch.zeros(self.k, self.K, dtype=h.dtype, device=h.device).index_add(0, self.g, h).reshape(-1)

    def spread(self, y):
        return y.reshape(self.k, self.K)[self.g]

    def matrix(self, P):
        """Block-diagonal ``M``: per group ``sum_i diag(a_i) - a_i a_i^T / |a_i|`` (``a_i`` the support)."""
        A = (P > 0).to(P.dtype)
        r = A.sum(1).clamp_min(1.0)
        diag = torch.zeros(self.k, self.K, dtype=P.dtype, device=P.device).index_add(0, self.g, A)
        outer = torch.zeros(self.k, self.K, self.K, dtype=P.dtype, device=P.device).index_add(
            0, self.g, A.unsqueeze(2) * A.unsqueeze(1) / r[:, None, None]
        )
        return torch.block_diag(*(torch.diag_embed(diag) - outer))

    def primal(self, c):
        P = simplex_rows(self.S - self.spread(c))
        m = self.sums(P) / self.cells.n.clamp_min(1.0)
        return P, m, self.matrix(P)

    def tangent(self, P, h):
        """``Pi h``: per row, ``h`` on the support minus its mean there."""
        A = (P > 0).to(P.dtype)
        r = A.sum(1, keepdim=True).clamp_min(1.0)
        return A * (h - (A * h).sum(1, keepdim=True) / r)

    def solve(self, eps):
        cells = self.cells
        c = self.S.new_zeros(cells.Q)
        m0 = self.sums(self.S) / cells.n.clamp_min(1.0)
        pres = cells.present.reshape(self.k, self.K)
        mean = (torch.where(pres, m0.reshape(self.k, self.K), 0.0).sum(0)
                / pres.sum(0).clamp_min(1).to(c.dtype))
        t = mean - eps / 2
        out = _active.newton(c, t, self.primal, cells, eps, 3 * _STEPS, 1.0)
        if out is None:  # start from the numpy core's multipliers
            res, c, t = self._core(eps)
            out = _active.newton(c, t, self.primal, cells, eps, _STEPS, 1.0)
            if out is None:  # degenerate (e.g. rows at vertices): the core's verified answer
                out = _from_core(res, c, t, self.sums, cells, eps)
        return out

    def _core(self, eps):
        """The numpy core's solution, and its multipliers as cell shifts and levels."""
        from .._projection import project

        g = self.g.cpu().numpy()
        res = project(self.S.detach().cpu().numpy(), g, tolerance=eps)
        nu = self.S.new_zeros(self.k, self.K)
        t = self.S.new_zeros(self.K)
        if len(res.duals) == self.K:  # else fewer than two groups: no family, nothing moves
            nu[_present(g)] = torch.stack([torch.as_tensor(d, dtype=self.S.dtype)
                                           for d in res.duals], 1).to(self.S.device)
            t = torch.as_tensor(res.levels, dtype=self.S.dtype, device=self.S.device)
        c = (nu / self.counts.clamp_min(1.0).unsqueeze(1)).reshape(-1)
        return res, c, t

    def jacobian(self, P, active, h):
        h = self.tangent(P, h)
        h = _active.project_tangent(h, self.matrix(P), self.cells, active, self.sums, self.spread)
        return self.tangent(P, h)

    def violation(self, P, eps):
        m = (self.sums(P) / self.cells.n.clamp_min(1.0)).reshape(self.k, self.K)
        pres = (self.counts > 0).unsqueeze(1)
        gap = torch.where(pres, m, -math.inf).amax(0) - torch.where(pres, m, math.inf).amin(0)
        viol = (gap - eps).clamp_min(0.0).amax() if int(pres.sum()) >= 2 else P.new_zeros(())
        rows = torch.maximum((P.sum(1) - 1.0).abs().amax(), (-P).clamp_min(0.0).amax())
        return viol, rows


class _Marginal:
    """One marginal problem: scores ``s`` (n,), codes ``G`` (n, A), ``sizes[a]`` groups of attribute ``a``."""

    def __init__(self, s, G, sizes, lb, ub):
        self.s, self.G, self.sizes, self.lb, self.ub = s, G, sizes, lb, ub
        self.n, self.A = G.shape
        off = torch.tensor([0, *sizes[:-1]], device=s.device).cumsum(0)
        self.offsets = off.tolist()
        self.qidx = G + off  # (n, A) global cell index
        self.Q = sum(sizes)
        fam = torch.repeat_interleave(torch.arange(self.A, device=s.device),
                                      torch.tensor(sizes, device=s.device))
        counts = self.sums(torch.ones_like(s))
        self.cells = _active.Cells(fam, counts, self.A)

    def sums(self, h):
        src = h.unsqueeze(1).expand(self.n, self.A).reshape(-1)
        return torch.zeros(self.Q, dtype=h.dtype, device=h.device).index_add(0, self.qidx.reshape(-1), src)

    def spread(self, y):
        return y[self.qidx].sum(1)

    def free(self, z):
        return (z > self.lb) & (z < self.ub)

    def matrix(self, free):
        """``M[q, q']``: free rows in both cells ``q`` and ``q'``."""
        pair = (self.qidx.unsqueeze(2) * self.Q + self.qidx.unsqueeze(1)).reshape(-1)
        w = free.to(self.s.dtype).reshape(-1, 1, 1).expand(self.n, self.A, self.A).reshape(-1)
        M = torch.zeros(self.Q * self.Q, dtype=self.s.dtype, device=self.s.device)
        return M.index_add(0, pair, w).reshape(self.Q, self.Q)

    def primal(self, c):
        z = self.s - self.spread(c)
        p = torch.clamp(z, self.lb, self.ub)
        m = self.sums(p) / self.cells.n.clamp_min(1.0)
        return p, m, self.matrix(self.free(z))

    def sweep(self, c, t, eps):
        """One round of exact block ascent: each attribute's family given the others' shifts."""
        lb, ub = (b.reshape(1, -1) if b.dim() else b.reshape(1, 1) for b in (self.lb, self.ub))
        for a in range(self.A):
            lo, hi = self.offsets[a], self.offsets[a] + self.sizes[a]
            others = self.spread(c) - c[self.qidx[:, a]]
            lay = _solve.Layout(self.G[:, a].reshape(1, -1), 1, self.sizes[a])
            _, st = _solve.solve((self.s - others).reshape(1, -1), lb, ub, lay, eps, fast=True)
            c = torch.cat([c[:lo], st["shift"], c[hi:]])
            t = torch.cat([t[:a], st["level"].reshape(1), t[a + 1:]])
        return c, t

    def solve(self, eps):
        c = self.s.new_zeros(self.Q)
        t = self.s.new_zeros(self.A)
        scale = 1.0 + float(self.s.abs().amax())
        for _ in range(_ATTEMPTS):
            for _ in range(_SWEEPS):
                c, t = self.sweep(c, t, eps)
            out = _active.newton(c, t, self.primal, self.cells, eps, _STEPS, scale)
            if out is not None:
                return out
        if self.lb.dim() == 0 and self.ub.dim() == 0:  # degenerate: the core's verified answer
            try:
                return self._core(eps)
            except SolverError:
                pass
        if self._infeasible(eps):
            raise InfeasibleProblemError(
                "No outputs within the bounds meet the tolerance: some attribute's group bounds "
                "keep its mean out of reach of the others. Widen the bounds or the tolerance."
            )
        raise SolverError(
            "The torch marginal fairness layer did not converge to an exact solution; the "
            "bounds may leave no outputs meeting every attribute's tolerance. Widen the "
            "bounds or the tolerance, or use skfairlayer.project(..., groups='marginal')."
        )

    def _core(self, eps):
        """The numpy core's solution (scalar bounds), with its multipliers as cell shifts."""
        from .._projection import project

        G = self.G.cpu().numpy()
        res = project(self.s.detach().cpu().numpy(), G, tolerance=eps, groups="marginal",
                      bounds=(float(self.lb), float(self.ub)))
        nu, levels = self.s.new_zeros(self.Q), [0.0] * self.A
        # the core's families: the attributes with two groups or more in the batch, in order
        present = [_present(G[:, a]) for a in range(self.A)]
        families = [a for a in range(self.A) if present[a].size >= 2]
        for a, duals, level in zip(families, res.duals, res.levels, strict=True):
            cells = self.offsets[a] + torch.as_tensor(present[a], device=nu.device)
            nu[cells] = torch.as_tensor(duals, dtype=nu.dtype, device=nu.device)
            levels[a] = float(level)
        c = nu / self.cells.n.clamp_min(1.0)
        t = torch.as_tensor(levels, dtype=nu.dtype, device=nu.device)
        return _from_core(res, c, t, self.sums, self.cells, eps)

    def _infeasible(self, eps):
        """Whether one attribute alone cannot meet the tolerance within the bounds."""
        n = self.cells.n.clamp_min(1.0)
        low = self.sums(torch.broadcast_to(self.lb, self.s.shape).to(self.s.dtype)) / n
        high = self.sums(torch.broadcast_to(self.ub, self.s.shape).to(self.s.dtype)) / n
        for a in range(self.A):
            lo, hi = self.offsets[a], self.offsets[a] + self.sizes[a]
            pres = self.cells.present[lo:hi]
            if float(low[lo:hi][pres].amax() - high[lo:hi][pres].amin()) > eps + 1e-12:
                return True
        return False

    def jacobian(self, p, active, h):
        free = self.free(p)
        h = torch.where(free, h, torch.zeros_like(h))
        h = _active.project_tangent(h, self.matrix(free), self.cells, active, self.sums, self.spread)
        return torch.where(free, h, torch.zeros_like(h))

    def violation(self, p, eps):
        m = self.sums(p) / self.cells.n.clamp_min(1.0)
        worst = p.new_zeros(())
        for a in range(self.A):
            lo, hi = self.offsets[a], self.offsets[a] + self.sizes[a]
            mm, pres = m[lo:hi], self.cells.present[lo:hi]
            if int(pres.sum()) >= 2:
                gap = mm[pres].amax() - mm[pres].amin() - eps
                worst = torch.maximum(worst, gap)
        box = torch.maximum(self.lb - p, p - self.ub).clamp_min(0.0).amax()
        return worst, box


def _present(codes):
    """The codes present, in the core's order of groups (sorted)."""
    return np.unique(codes)


def _from_core(res, c, t, sums, cells, eps):
    """``newton``'s answer from the core's: its outputs, and the active cells of its
    multipliers (the prox rule at its means)."""
    out = torch.as_tensor(res.proba, dtype=c.dtype, device=c.device)
    m = sums(out) / cells.n.clamp_min(1.0)
    top, bottom = _active.state(c, t, m, cells, eps)
    return c, t, top, bottom, out


def _problems(s, groups, lb, ub, kind, sizes):
    """One solver object per problem of the batch."""
    if kind == "simplex":
        n, K = s.shape[-2:]
        S = s.reshape(-1, n, K)
        g = groups.expand(*s.shape[:-1]).reshape(-1, n)
        return [_Simplex(S[b], g[b], sizes[0]) for b in range(S.shape[0])]
    n, A = s.shape[-1], groups.shape[-1]
    s2 = s.reshape(-1, n)
    G = groups.expand(*s.shape, A).reshape(-1, n, A)

    def bound(x, b):
        return x if x.dim() == 0 else x.expand(s.shape).reshape(-1, n)[b]

    return [_Marginal(s2[b], G[b], list(sizes), bound(lb, b), bound(ub, b)) for b in range(s2.shape[0])]


class StructuredProject(torch.autograd.Function):
    """Multiclass (``kind="simplex"``) or marginal (``kind="marginal"``) projection of a batch."""

    @staticmethod
    def forward(s, groups, lb, ub, eps, kind, sizes, strict):
        outs, actives = [], []
        for pb in _problems(s, groups, lb, ub, kind, sizes):
            if strict and not bool(pb.cells.present.all()):
                raise ValueError(
                    "A group has no row in this batch; strict=True forbids it. Use a stratified "
                    "sampler (skfairlayer.torch.GroupStratifiedBatchSampler) or strict=False."
                )
            _, _, top, bottom, out = pb.solve(eps)
            _verify(pb, out, eps)
            outs.append(out)
            actives.append(top | bottom)
        p = torch.stack(outs).reshape(s.shape)
        return p, torch.stack(actives).reshape(*s.shape[: -2 if kind == "simplex" else -1], -1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, groups, lb, ub, _, kind, sizes, _ = inputs
        p, active = output
        ctx.mark_non_differentiable(active)
        ctx.save_for_backward(p, groups, lb, ub, active)
        ctx.save_for_forward(p, groups, lb, ub, active)
        ctx.spec = (kind, sizes)

    @staticmethod
    def backward(ctx, grad, _):
        return _jacobian(ctx, grad), None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent, *_):
        return _jacobian(ctx, tangent), None

    @staticmethod
    def vmap(info, in_dims, s, groups, lb, ub, eps, kind, sizes, strict):
        """Solve the mapped problems as a leading batch dimension (groups broadcast)."""
        size = info.batch_size

        def front(x, d):
            return x.unsqueeze(0).expand(size, *x.shape) if d is None else x.movedim(d, 0)

        s = front(s, in_dims[0])
        groups = front(groups, in_dims[1])
        lb, ub = (x if d is None else front(x, d) for x, d in zip((lb, ub), in_dims[2:4], strict=True))
        return StructuredProject.apply(s, groups, lb, ub, eps, kind, sizes, strict), (0, 0)


def _jacobian(ctx, g):
    p, groups, lb, ub, active = ctx.saved_tensors
    kind, sizes = ctx.spec
    p = p.detach()
    pbs = _problems(p, groups, lb, ub, kind, sizes)
    rows = g.shape[-2:] if kind == "simplex" else g.shape[-1:]
    g2, p2 = g.reshape(-1, *rows), p.reshape(-1, *rows)
    act = active.reshape(len(pbs), -1)
    out = [pb.jacobian(p2[b], act[b], g2[b]) for b, pb in enumerate(pbs)]
    return torch.stack(out).reshape(g.shape)


def _verify(pb, out, eps):
    viol, box = (float(x) for x in pb.violation(out, eps))
    if not bool(torch.isfinite(out).all()):
        raise SolverError("The torch fairness layer produced non-finite outputs; are the scores finite?")
    if viol > VERIFY_TOL or box > 1e-12:
        raise SolverError(
            f"The torch fairness layer's answer violates parity by {viol:.3g} (> {VERIFY_TOL:g}) "
            f"or the bounds (or the simplex) by {box:.3g}. This is a bug; please report it."
        )
