"""Active-set Newton finish of the general solver: the exact KKT point from multipliers.

A primal-dual active-set method on the KKT system. The outputs are always
formed as ``x = Pi(s - C^T y)`` (``Pi`` the exact clip / simplex projection,
``C`` the rows with entries ``w_i``, ``y`` their multipliers, i.e. the ``nu`` of
:class:`~skfairlayer._solvers.Solution`), so the bounds hold exactly by
construction. Given the active rows and the free outputs, "active rows at their
targets, multipliers of each family summing to zero" is a small dense linear
system in ``(y, t)``. Solving it and updating the active set ends on the exact
KKT point in a few passes over the data; it is accepted only when every row
holds to ``1e-10`` with complementary multipliers. Dependent rows (class
columns summing to one on the simplex) can make the statuses inconsistent; the
statuses are then read off the exact dual of the problem linearised at the
current free set, a tiny QP (:func:`_local_statuses`).
"""

import hashlib

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse as sp

from .._quiet import quiet_stdout
from ._osqp_backend import _OSQP_INFTY

#: Row violation accepted by the Newton finish (the verification allows 1e-9).
_PRIM_TOL = 1e-10
#: Margin (in score units) of the active-set rule, against flips from round-off.
_MARGIN = 1e-13


class _Result:
    def __init__(self, ok, x, y, t, iterations, reason=""):
        self.ok, self.x, self.y, self.t = ok, x, y, t
        self.iterations, self.reason = iterations, reason


def _kkt_residuals(st, data, x, y, t, r):
    """Largest row violation, complementarity error and family-sum error."""
    fam = st.row_fam
    shift = np.where(fam >= 0, t[np.maximum(fam, 0)] if st.n_fam else 0.0, 0.0)
    lo, hi = data.row_lo + shift, data.row_hi + shift
    with np.errstate(invalid="ignore"):
        viol = np.max(np.maximum(lo - r, r - hi), initial=0.0)
        comp = np.max(
            np.where(y > 0, hi - r, np.where(y < 0, r - lo, 0.0)), initial=0.0
        )
    sums = 0.0  # relative error of sum_g y_g = 0, with a floor of 1e-12 shift per row
    for sl in st.fam_slices:
        yf = y[sl]
        scale = np.abs(yf).sum() + 1e-4 * np.sum(1.0 / np.sqrt(st.norm2[sl]))
        sums = max(sums, abs(yf.sum()) / scale)
    return viol, comp, sums, lo, hi


def _free_levels(st, data, y, t, r):
    """Place the level of each family without multipliers inside its band, if possible."""
    for f, sl in enumerate(st.fam_slices):
        if sl.stop > sl.start and not np.any(y[sl]):
            rf = r[sl]
            t_lo, t_hi = rf.max() - data.tol[f], rf.min()
            t[f] = min(max(t[f], t_lo), t_hi) if t_lo <= t_hi else 0.5 * (t_lo + t_hi)


def eq_rows(data, idx):
    """Rows (among ``idx``) whose band is a single value."""
    return data.row_lo[idx] == data.row_hi[idx]


def _solve_active(st, data, active, up, x, u, free, aux, t):
    """Solve the linear KKT system on the active set; return new ``y`` and ``t``."""
    idx = np.flatnonzero(active)
    y = np.zeros(st.C.shape[0])
    t = t.copy()
    if idx.size == 0:
        return y, t, True
    xt = x + st.apply_jacobian(u, free, aux)
    rel = np.where(up[idx], data.row_hi[idx], data.row_lo[idx])
    rhs = st.C[idx] @ xt - rel
    m = st.reduced_hessian(idx, free, aux)
    fam = st.row_fam[idx]
    fams = np.unique(fam[fam >= 0])
    e = (fam[:, None] == fams[None, :]).astype(np.float64)
    na, nf = idx.size, fams.size
    d = 1.0 / np.sqrt(st.norm2[idx])
    ed = e * d[:, None]
    dt = 1.0 / np.sqrt(np.maximum((ed * ed).sum(axis=0), 1e-300))
    kmat = np.zeros((na + nf, na + nf))
    kmat[:na, :na] = m * d[:, None] * d[None, :]
    kmat[:na, na:] = ed * dt[None, :]
    kmat[na:, :na] = kmat[:na, na:].T
    b = np.concatenate([rhs * d, np.zeros(nf)])
    sol, _, rank, _ = scipy.linalg.lstsq(kmat, b, cond=1e-13, lapack_driver="gelsd")
    if rank < na + nf:
        # Dependent rows (e.g. class columns summing to one on the simplex): the
        # multipliers are not unique; prefer a solution whose signs agree with
        # the sides the rows sit on, if there is one.
        is_up, is_down = up[idx] & ~eq_rows(data, idx), ~up[idx] & ~eq_rows(data, idx)
        ys = sol[:na]
        if np.any(is_up & (ys < 0)) or np.any(is_down & (ys > 0)):
            lo_b = np.concatenate([np.where(is_up, 0.0, -np.inf), np.full(nf, -np.inf)])
            hi_b = np.concatenate([np.where(is_down, 0.0, np.inf), np.full(nf, np.inf)])
            signed = scipy.optimize.lsq_linear(
                kmat, b, bounds=(lo_b, hi_b), method="bvls", tol=1e-14
            )
            if np.linalg.norm(kmat @ signed.x - b) <= 1e-12 * max(np.linalg.norm(b), 1e-300):
                sol = signed.x
    ys = sol[:na]  # multipliers in shift units (scaled by the row norms)
    # round-off of zero multipliers (relative, and absolute: 1e-15 of a score shift)
    ys[np.abs(ys) <= max(1e-12 * np.max(np.abs(ys), initial=0.0), 1e-15)] = 0.0
    y[idx] = ys * d
    t[fams] = sol[na:] * dt
    consistent = np.linalg.norm(kmat @ sol - b) <= 1e-9 * max(np.linalg.norm(b), 1e-300)
    return y, t, consistent


def _local_statuses(st, data, x, u, free, aux):
    """Row statuses from the exact dual of the problem linearised at the current free set.

    Used when the active-set iterations stall on dependent rows: with the free
    outputs fixed, the KKT system is the small QP
    ``min 1/2 y^T M y - b^T y + sum_j (hi_j y_j^+ - lo_j y_j^-)`` s.t. the
    multipliers of each family sum to zero, of one variable per row, which OSQP
    solves accurately (it is tiny); the signs of its ``y`` give the statuses.
    """
    import osqp

    d = st.C.shape[0]
    if d == 0 or d > 2000:
        return None
    idx = np.arange(d)
    xt = x + st.apply_jacobian(u, free, aux)
    scale = 1.0 / np.sqrt(st.norm2)
    m = st.reduced_hessian(idx, free, aux) * scale[:, None] * scale[None, :]
    b = (st.C @ xt) * scale
    lo, hi = data.row_lo * scale, data.row_hi * scale
    eq = lo == hi
    # y = T v: one free variable per equality row, else y+ and/or y- >= 0.
    cols, rows, signs, cost = [], [], [], []
    for j in range(d):
        if eq[j]:
            rows.append(j), signs.append(1.0), cost.append(hi[j])
            continue
        if np.isfinite(hi[j]):
            rows.append(j), signs.append(1.0), cost.append(hi[j])
        if np.isfinite(lo[j]):
            rows.append(j), signs.append(-1.0), cost.append(-lo[j])
    nv = len(rows)
    cols = np.arange(nv)
    tmat = sp.csr_matrix((signs, (rows, cols)), shape=(d, nv))
    is_free = np.array([eq[j] for j in rows], dtype=bool)
    ptri = sp.triu(sp.csc_matrix(tmat.T @ (m @ tmat.toarray())), format="csc")
    q = -(tmat.T @ b) + np.asarray(cost)
    fam = st.row_fam
    e = sp.csr_matrix(
        (np.ones(st.n_fam_rows), (fam[: st.n_fam_rows], np.arange(st.n_fam_rows))),
        shape=(st.n_fam, d),
    ) @ sp.diags(scale)
    a = sp.vstack([sp.eye(nv), e @ tmat], format="csc")
    lo_c = np.concatenate([np.where(is_free, -_OSQP_INFTY, 0.0), np.zeros(st.n_fam)])
    hi_c = np.concatenate([np.full(nv, _OSQP_INFTY), np.zeros(st.n_fam)])
    solver = osqp.OSQP()
    solver.setup(
        ptri, q, a, lo_c, hi_c, verbose=False, eps_abs=1e-11, eps_rel=1e-11,
        polishing=True, max_iter=100_000,
    )
    with quiet_stdout():
        res = solver.solve(raise_error=False)
    if res.info.status_val not in (1, 2):
        return None
    yhat = tmat @ res.x
    cut = 1e-8 * np.max(np.abs(yhat), initial=0.0)
    return (yhat > cut) & ~eq, (yhat < -cut) & ~eq


def _newton(st, data, y, t, max_iter):
    """Primal-dual active-set iterations from ``(y, t)``; exact KKT point or failure.

    A row is taken active at its top when ``y_j + (r_j - hi_j) / |C_j|^2 > 0``
    (and at its bottom symmetrically): the semismooth-Newton rule for the
    complementarity conditions, with a margin of round-off size so that rows
    sitting exactly at an edge with a zero multiplier stay inactive.
    """
    y = np.array(y, dtype=np.float64)
    t = np.array(t, dtype=np.float64)
    norm = np.sqrt(st.norm2)
    eq = data.row_lo == data.row_hi
    seen = set()
    rescues = 0
    for it in range(max_iter + 1):
        u = st.CT @ y
        x, free, aux = st.project(data.s - u, data.lb, data.ub)
        r = st.C @ x
        _free_levels(st, data, y, t, r)
        viol, comp, sums, lo, hi = _kkt_residuals(st, data, x, y, t, r)
        if it >= 1 and viol <= _PRIM_TOL and comp <= _PRIM_TOL and sums <= 1e-8:
            return _Result(True, x, y, t, it)
        if it == max_iter:
            break
        with np.errstate(invalid="ignore"):
            up = (y * norm + (r - hi) / norm > _MARGIN) & ~eq
            down = (y * norm + (r - lo) / norm < -_MARGIN) & ~eq
        key = hashlib.blake2b(np.packbits(np.concatenate([up, down, free])).tobytes()).digest()
        stalled = key in seen
        seen.add(key)
        if not stalled:
            y_new, t_new, consistent = _solve_active(st, data, up | down | eq, up, x, u, free,
                                                     aux, t)
        if stalled or not consistent:
            # Dependent rows made the statuses inconsistent: take them from the
            # exact local dual instead.
            statuses = _local_statuses(st, data, x, u, free, aux) if rescues < 5 else None
            if statuses is None:
                return _Result(False, x, y, t, it, "the active-set iterations stalled")
            rescues += 1
            up, down = statuses
            y_new, t_new, _ = _solve_active(st, data, up | down | eq, up, x, u, free, aux, t)
        y, t = y_new, t_new
    return _Result(
        False, x, y, t, max_iter,
        f"no convergence in {max_iter} active-set iterations "
        f"(row violation {viol:.3g}, complementarity {comp:.3g})",
    )
