"""Active-set Newton on cell shifts, shared by the multiclass and marginal layers.

A *cell* is one group of one family (a class column of a group on the simplex;
one group of one attribute for marginal parity); each family has a level ``t``
and its cells' means must lie in ``[t, t + eps]``. The primal is a function of
the cells' shifts ``c`` (clip or simplex projection of the shifted scores). On a
fixed pattern (each row's free coordinates) the means are affine in ``c``,
``dm = -(M dc) / n``, with ``M`` a small symmetric matrix of free counts; the
KKT conditions are then one linear system, and a point where the pattern and
the active cells no longer change solves them exactly. The backward pass is
the orthogonal projector onto the directions that keep every active cell at
its family's (moving) level, from the same matrix. See
``docs/user_guide/torch.rst``.
"""

import torch

__all__ = ["Cells", "newton", "project_tangent", "residual", "state", "step"]

#: KKT residual accepted as exact (units of the outputs, relative to their scale).
KKT_TOL = 1e-13
#: Prox-rule residuals within this (relative to the means' scale) are ties.
_TIE = 1e-13
#: Relative cut-off of tiny singular values in the dense solves.
_RCOND = 1e-10


class Cells:
    """``Q`` cells in ``F`` families: family of each cell (LongTensor) and cell sizes (float64)."""

    def __init__(self, fam, n, n_families):
        self.fam, self.n, self.F = fam, n, n_families
        self.Q = fam.numel()
        self.present = n > 0
        self.onehot = torch.nn.functional.one_hot(fam, n_families).to(n.dtype)  # (Q, F)
        self.total = (self.onehot * n.unsqueeze(1)).sum(0).clamp_min(1.0)  # (F,)

    def family_sums(self, c):
        """``sum_q n_q c_q`` per family, relative to the family's size."""
        return (self.onehot * (self.n * c).unsqueeze(1)).sum(0) / self.total


def state(c, t, m, cells, eps):
    """Active cells from the prox rule: top if ``c + m - t - eps > 0``, bottom if ``c + m - t < 0``.

    With ``eps = 0`` the band has no width: every present cell is held on the level
    (bottom unless top), also one that needs no move.
    """
    tq = t[cells.fam]
    tie = _TIE * (1.0 + m.abs().amax())  # a residual of rounding size is a tie: no side
    top = cells.present & (c + (m - tq - eps) > tie)
    bottom = cells.present & ~top & ((c + (m - tq) < -tie) | (eps == 0))
    return top, bottom


def _solve_dense(J, r):
    """Least-squares solution of ``J x = r`` (tiny singular values cut), on J's device."""
    return torch.linalg.pinv(J, rtol=_RCOND) @ r


def step(c, t, m, M, cells, eps, top, bottom):
    """The KKT system of the pattern of ``M`` and the cells ``top``/``bottom``, solved for (c, t)."""
    Q, F = cells.Q, cells.F
    active = top | bottom
    n_safe = cells.n.clamp_min(1.0)
    eye = torch.eye(Q, dtype=c.dtype, device=c.device)
    J = c.new_zeros(Q + F, Q + F)
    J[:Q, :Q] = torch.where(active.unsqueeze(1), -M / n_safe.unsqueeze(1), eye)
    J[:Q, Q:] = torch.where(active.unsqueeze(1), -cells.onehot, 0.0)
    J[Q:, :Q] = (cells.onehot * cells.n.unsqueeze(1)).T / cells.total.unsqueeze(1)
    tq = t[cells.fam]
    r = torch.cat([torch.where(active, tq + eps * top.to(c.dtype) - m, -c), -cells.family_sums(c)])
    x = _solve_dense(J, r)
    e = r - J @ x
    # An inconsistent pattern (a cell whose mean the pattern cannot move, e.g. a class
    # column outside every row's support): a gradient step on the unresolved residual
    # moves the shifts toward a new pattern.
    c = torch.where(active, c + x[:Q] - e[:Q], torch.zeros_like(c))
    return c, t + x[Q:]


def residual(c, t, m, cells, eps, top, bottom):
    """Largest violation of the KKT conditions at (c, t) for the active cells ``top``/``bottom``."""
    tq = t[cells.fam]
    z = torch.zeros_like(m)
    at_top = torch.where(top, (m - tq - eps).abs(), z)
    at_bottom = torch.where(bottom, (m - tq).abs(), z)
    band = torch.where(cells.present, torch.maximum(tq - m, m - tq - eps).clamp_min(0.0), z)
    sign = torch.where(top, (-c).clamp_min(0.0), z) + torch.where(bottom, c.clamp_min(0.0), z)
    parts = [at_top.amax(), at_bottom.amax(), band.amax(), sign.amax(), cells.family_sums(c).abs().amax()]
    return torch.stack(parts).amax()


def _repair_levels(t, m, cells, eps, active):
    """Families without an active cell: a level whose band holds every mean, if any."""
    big = torch.finfo(m.dtype).max
    pres = cells.present.unsqueeze(1) & cells.onehot.bool()  # (Q, F)
    hi = torch.where(pres, m.unsqueeze(1), -big).amax(0) - eps
    lo = torch.where(pres, m.unsqueeze(1), big).amin(0)
    none = (active.unsqueeze(1) & cells.onehot.bool()).sum(0) == 0
    fixed = torch.minimum(torch.maximum(t, hi), lo)
    return torch.where(none & (hi <= lo), fixed, t)


def newton(c, t, primal, cells, eps, steps, scale):
    """Active-set Newton from (c, t); returns ``(c, t, top, bottom, out)`` or None if not certified.

    ``primal(c)`` returns ``(out, m, M)``: the outputs, the cells' means and the
    pattern's matrix. One host synchronisation per step (the certificate).
    """
    top = bottom = None
    for _ in range(steps + 1):
        out, m, M = primal(c)
        if top is not None:
            t = _repair_levels(t, m, cells, eps, top | bottom)
            if float(residual(c, t, m, cells, eps, top, bottom)) <= KKT_TOL * scale:
                return c, t, top, bottom, out
        top, bottom = state(c, t, m, cells, eps)
        c, t = step(c, t, m, M, cells, eps, top, bottom)
    return None


def project_tangent(h, M, cells, active, sums, spread):
    """``h - spread(y)``: remove from ``h`` (already on the free pattern) its component off the tangent space.

    Solves ``[M_AA, N; N^T, 0] [y; dt] = [U h; 0]`` with ``U h = sums(h)`` the cells'
    sums over free coordinates and ``N`` the cells' sizes per family; the matrix is
    a constant, so the map is linear in ``h`` (differentiable, double backward).
    """
    Q, F = cells.Q, cells.F
    with torch.no_grad():
        K = h.new_zeros(Q + F, Q + F)
        act = active.to(h.dtype)
        both = (act.unsqueeze(1) * act.unsqueeze(0)).bool()
        K[:Q, :Q] = torch.where(both, M, torch.diag(1.0 - act))
        nn = (cells.onehot * cells.n.unsqueeze(1)) * act.unsqueeze(1) / cells.total
        K[:Q, Q:] = nn
        K[Q:, :Q] = nn.T
        Kinv = torch.linalg.pinv(K, rtol=_RCOND, hermitian=True)[:Q, :Q]
    b = sums(h) * act.detach()
    y = (Kinv.to(h.dtype) @ b) * act
    return h - spread(y)
