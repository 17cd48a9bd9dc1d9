"""General solver: any :class:`~skfairlayer.ProjectionProblem`, made exact.

Two ingredients.

**OSQP** finds an approximate solution, hence an approximate active set and
approximate multipliers. The QP it sees keeps every row short (each output
appears in O(families) rows): with ``x`` the flattened outputs, one auxiliary
*sum* ``z_{f,g}`` per family and group, one level ``t_f`` per family, one value
``v_j`` per extra row and partial sums ``b_k`` of at most ``_BLOCK`` entries,

* box rows ``lb <= x <= ub`` (simplex: ``0 <= x <= 1`` and ``sum_j x_ij = 1``),
* partial sums ``b_k - sum_{i in block k} (w_i / wbar_g) x_{i, c_f} = 0``
  (``wbar_g`` the mean weight of the group: coefficients ~1),
* ``z_{f,g} - sum_{k in g} b_k = 0`` and bands
  ``0 <= z_{f,g} - t_f / wbar_g <= tol_f / wbar_g``,
* extra rows, scaled, as ``nnz_j v_j - sum_k b_k = 0`` with bounds on ``v_j``.

The choices are measured (see :func:`_osqp_matrices`): group means as aux
variables took ~1500 ADMM iterations at n = 1e5, sums ~50; long rows made the
KKT factorization fill in quadratically.

**Active-set Newton finish** (a primal-dual active-set method on the KKT
system). The outputs are always formed as ``x = Pi(s - C^T y)`` (``Pi`` the
exact clip / simplex projection, ``C`` the rows with entries ``w_i``, ``y`` their
multipliers, i.e. the ``nu`` of :class:`~skfairlayer._solvers.Solution`), so the
bounds hold exactly by construction. Given the active rows and the free
outputs, "active rows at their targets, multipliers of each family summing to
zero" is a small dense linear system in ``(y, t)``. Solving it and updating the
active set ends on the exact KKT point in a few passes over the data; it is
accepted only when every row holds to ``1e-10`` with complementary multipliers.
Dependent rows (class columns summing to one on the simplex) can make the
statuses inconsistent; the statuses are then read off the exact dual of the
problem linearised at the current free set, a tiny QP (:func:`_local_statuses`).

Order of attempts, each ending with the Newton finish:

1. the multipliers of ``warm_start``, if given;
2. above ``subsample_above`` outputs without extra rows: OSQP on a stratified
   subsample of rows (reweighted), its multipliers mapped back;
3. above ``subsample_above`` outputs: zero multipliers;
4. OSQP on the whole problem (warm-started from the multipliers above, if any);
5. OSQP to a tight tolerance; a certificate of primal infeasibility here raises
   :class:`~skfairlayer.exceptions.InfeasibleProblemError`.

If all fail, :class:`~skfairlayer.exceptions.SolverError` is raised: nothing
unverified is returned.

Building the row matrices and setting up OSQP are the expensive parts. Nothing
is kept between calls unless the caller passes an :class:`OSQPBackend`: it owns
the structure of the last problem it saw and its OSQP solver (updated, not set
up again, when the next problem has the same structure). A backend is dropped
on pickling (an OSQP object cannot be pickled) and rebuilt on first use.
"""

import hashlib

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse as sp

from ..exceptions import InfeasibleProblemError, SolverError
from . import Solution
from ._osqp_backend import _INFEASIBLE, _OSQP_INFTY, OSQPBackend, _osqp_solve, _quiet_stdout

__all__ = ["OSQPBackend", "solve_osqp"]

#: Row violation accepted by the Newton finish (the verification allows 1e-9).
_PRIM_TOL = 1e-10
#: Margin (in score units) of the active-set rule, against flips from round-off.
_MARGIN = 1e-13


# --------------------------------------------------------------------------- structure


def _digest(*arrays):
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _structure_key(problem):
    parts = [problem.scores.shape, bool(problem.simplex)]
    for fam in problem.families:
        parts.append(
            (_digest(fam.codes, fam.weights), int(fam.n_groups), int(fam.column))
        )
    if problem.rows is not None:
        mat = sp.csr_matrix(problem.rows.matrix)
        parts.append((mat.shape, _digest(mat.indptr, mat.indices, mat.data)))
    return tuple(parts)


class _Structure:
    """Everything about a problem that does not depend on scores, bounds or tolerances.

    ``C`` stacks the family rows (entry ``w_i`` at output ``(i, column)``, so
    ``C @ x`` are the group statistics and ``y`` are the ``nu`` of
    :class:`~skfairlayer._solvers.Solution`) and the extra rows.
    """

    def __init__(self, problem):
        scores = problem.scores
        if scores.ndim not in (1, 2) or (problem.simplex and scores.ndim != 2):
            raise ValueError(
                "scores must be 1-D (binary) or 2-D (n_samples, n_classes), and 2-D when "
                f"simplex=True. Got shape {scores.shape} with simplex={problem.simplex!r} "
                "instead."
            )
        n = scores.shape[0]
        k = 1 if scores.ndim == 1 else scores.shape[1]
        self.shape = scores.shape
        self.n, self.k, self.size = n, k, n * k
        self.simplex = bool(problem.simplex)
        rows, cols, vals, wbar, row_fam = [], [], [], [], []
        self.fam_slices = []
        offset = 0
        for f, fam in enumerate(problem.families):
            codes = np.asarray(fam.codes)
            weights = np.asarray(fam.weights, dtype=np.float64)
            if codes.shape != (n,) or weights.shape != (n,):
                raise ValueError(
                    f"families[{f}].codes and .weights must have shape ({n},). "
                    f"Got {codes.shape} and {weights.shape} instead."
                )
            if not 0 <= fam.column < k:
                raise ValueError(
                    f"families[{f}].column must be in [0, {k}). Got {fam.column!r} instead."
                )
            if codes.size and (codes.max() >= fam.n_groups or codes.min() < -1):
                raise ValueError(
                    f"families[{f}].codes must lie in [-1, {fam.n_groups}). "
                    f"Got values in [{codes.min()}, {codes.max()}] instead."
                )
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError(
                    f"families[{f}].weights must be finite and non-negative. "
                    f"Got {weights!r} instead."
                )
            inside = np.flatnonzero((codes >= 0) & (weights > 0))
            g = codes[inside].astype(np.intp)
            counts = np.bincount(codes[codes >= 0], minlength=fam.n_groups)
            totals = np.bincount(g, weights=weights[inside], minlength=fam.n_groups)
            wbar.append(np.where(totals > 0, totals / np.maximum(counts, 1), 1.0))
            rows.append(offset + g)
            cols.append(inside * k + fam.column)
            vals.append(weights[inside])
            row_fam.append(np.full(fam.n_groups, f))
            self.fam_slices.append(slice(offset, offset + fam.n_groups))
            offset += fam.n_groups
        self.n_fam = len(problem.families)
        self.n_fam_rows = offset

        def cat(parts, dt):
            return np.concatenate(parts) if parts else np.zeros(0, dt)

        rows, cols, vals = cat(rows, np.intp), cat(cols, np.intp), cat(vals, np.float64)
        self.wbar = cat(wbar, np.float64)
        row_fam = [cat(row_fam, np.intp)]
        self.n_extra = 0
        if problem.rows is not None:
            extra = sp.coo_matrix(problem.rows.matrix, dtype=np.float64)
            if extra.shape[1] != self.size:
                raise ValueError(
                    f"rows.matrix must have {self.size} columns (one per output). "
                    f"Got shape {extra.shape} instead."
                )
            self.n_extra = extra.shape[0]
            rows = np.concatenate([rows, offset + extra.row.astype(np.intp)])
            cols = np.concatenate([cols, extra.col.astype(np.intp)])
            vals = np.concatenate([vals, extra.data])
            row_fam.append(np.full(self.n_extra, -1))
        d = offset + self.n_extra
        self.C = sp.csr_matrix((vals, (rows, cols)), shape=(d, self.size))
        self.C.sum_duplicates()
        self.CT = sp.csr_matrix((vals, (cols, rows)), shape=(self.size, d))
        self.CT.sum_duplicates()
        # row (output index) of each stored entry of CT, to mask it by free outputs
        self.ct_rows = np.repeat(np.arange(self.size), np.diff(self.CT.indptr))
        if self.simplex:  # sums each row of outputs: (n, n * k)
            self.row_sum = sp.csr_matrix(
                (np.ones(self.size), np.arange(self.size), np.arange(0, self.size + 1, k)),
                shape=(n, self.size),
            )
        self.row_fam = np.concatenate(row_fam)
        norm2 = np.bincount(
            np.repeat(np.arange(d), np.diff(self.C.indptr)), weights=self.C.data ** 2,
            minlength=d,
        )
        self.norm2 = np.where(norm2 > 0, norm2, 1.0)

    # -- projection on the bounds / simplex and its Jacobian

    def project(self, z, lb, ub):
        """``Pi(z)``, the free mask and (simplex) the free count of each row."""
        if not self.simplex:
            x = np.clip(z, lb, ub)
            return x, (z > lb) & (z < ub), None
        z2 = z.reshape(self.n, self.k)
        u = np.sort(z2, axis=1)[:, ::-1]  # descending
        css = np.cumsum(u, axis=1)
        css -= 1.0
        # The support is a prefix of the sorted row: u_j > (css_j) / (j + 1).
        nfree = np.count_nonzero(u * np.arange(1, self.k + 1) > css, axis=1)
        theta = np.take_along_axis(css, (nfree - 1)[:, None], axis=1)
        theta /= nfree[:, None]
        free = z2 > theta
        x2 = np.maximum(z2 - theta, 0.0)
        return x2.ravel(), free.ravel(), (nfree, theta.ravel())

    def apply_jacobian(self, v, free, aux):
        """Jacobian of ``Pi`` (at the point that gave ``free``) times ``v``."""
        if not self.simplex:
            return np.where(free, v, 0.0)
        nfree = aux[0]
        v2 = np.where(free, v, 0.0).reshape(self.n, self.k)
        mean = v2.sum(axis=1) / np.maximum(nfree, 1)
        return (np.where(free.reshape(self.n, self.k), v2 - mean[:, None], 0.0)).ravel()

    def reduced_hessian(self, active, free, aux):
        """``C_A J C_A^T`` for the active rows ``active`` (dense)."""
        ct = self.CT
        ctf = sp.csr_matrix((ct.data * free[self.ct_rows], ct.indices, ct.indptr), shape=ct.shape)
        m = (self.C @ ctf).toarray()
        if self.simplex:
            # J = diag(free) - per row 1_F 1_F^T / |F|: subtract W^T diag(1/|F|) W.
            wt = self.row_sum @ ctf
            wt.data *= np.repeat(1.0 / np.sqrt(np.maximum(aux[0], 1)), np.diff(wt.indptr))
            m -= (wt.T @ wt).toarray()
        return m[np.ix_(active, active)]


# --------------------------------------------------------------------------- per-call data


class _Data:
    """Scores, bounds and row bounds of one call (flattened)."""

    def __init__(self, problem, st):
        s = np.asarray(problem.scores, dtype=np.float64)
        if not np.all(np.isfinite(s)):
            raise ValueError("scores must be finite. Got non-finite values instead.")
        self.s = s.ravel()
        if st.simplex:
            self.lb, self.ub = 0.0, np.inf
        else:
            self.lb = self._bound(problem.lower, st, "lower")
            self.ub = self._bound(problem.upper, st, "upper")
            bad = np.flatnonzero(np.broadcast_to(self.lb > self.ub, (st.size,)))
            if bad.size:
                raise InfeasibleProblemError(
                    f"The bounds are empty at output {bad[0]}: lower > upper. "
                    "Widen the bounds."
                )
        lo, hi = [], []
        for f, fam in enumerate(problem.families):
            tol = float(fam.tolerance)
            if not tol >= 0:
                raise InfeasibleProblemError(
                    f"families[{f}].tolerance must be >= 0. Got {fam.tolerance!r} instead."
                )
            lo.append(np.zeros(fam.n_groups))
            hi.append(np.full(fam.n_groups, tol))
        self.tol = np.array([float(fam.tolerance) for fam in problem.families])
        if problem.rows is not None:
            rl = np.broadcast_to(np.asarray(problem.rows.lower, dtype=np.float64), (st.n_extra,))
            ru = np.broadcast_to(np.asarray(problem.rows.upper, dtype=np.float64), (st.n_extra,))
            if np.any(rl > ru) or np.any(np.isnan(rl)) or np.any(np.isnan(ru)):
                raise InfeasibleProblemError(
                    "rows.lower must not exceed rows.upper. "
                    f"Got lower={rl!r}, upper={ru!r} instead."
                )
            lo.append(rl)
            hi.append(ru)
        self.row_lo = np.concatenate(lo) if lo else np.zeros(0)
        self.row_hi = np.concatenate(hi) if hi else np.zeros(0)

    @staticmethod
    def _bound(value, st, name):
        b = np.asarray(value, dtype=np.float64)
        if b.ndim == 0:
            if np.isnan(b):
                raise ValueError(f"{name} must not be NaN. Got {value!r} instead.")
            return float(b)
        if b.ndim == 1 and b.shape[0] == st.n and st.k > 1:
            b = b[:, None]
        try:
            b = np.broadcast_to(b, st.shape).ravel()
        except ValueError:
            raise ValueError(
                f"{name} must be a scalar or an array of shape ({st.n},). "
                f"Got shape {b.shape} instead."
            ) from None
        if np.any(np.isnan(b)):
            raise ValueError(f"{name} must not contain NaN. Got {value!r} instead.")
        return b


def _check_family_ranges(problem, st, data):
    """Each family alone must be able to meet its band within the box (binary only)."""
    if st.simplex:
        return
    lb = np.broadcast_to(data.lb, (st.size,))
    ub = np.broadcast_to(data.ub, (st.size,))
    c_fam = st.C[: st.n_fam_rows]
    low, high = c_fam @ lb, c_fam @ ub
    for f, fam in enumerate(problem.families):
        sl = st.fam_slices[f]
        lo_f, hi_f = low[sl], high[sl]
        if lo_f.max() - fam.tolerance > hi_f.min() + 1e-12:
            g_lo, g_hi = int(lo_f.argmax()), int(hi_f.argmin())
            raise InfeasibleProblemError(
                f"Parity of {fam.name!r} within {fam.tolerance!r} is impossible within the "
                f"bounds: group {g_lo} cannot go below a statistic of {lo_f[g_lo]:.6g} while "
                f"group {g_hi} cannot go above {hi_f[g_hi]:.6g}. Increase the tolerance or "
                "widen the bounds."
            )


# --------------------------------------------------------------------------- Newton finish


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
    with _quiet_stdout():
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


# --------------------------------------------------------------------------- subsample


def _subsample(problem, per_group, seed=0):
    """A smaller problem with the same families (reweighted), for a starting point.

    Returns the subproblem and, per family row, the sampled weight ``S_g`` that
    maps its multipliers back: ``nu_g = nu_sub_g / S_g``.
    """
    n = problem.scores.shape[0]
    rng = np.random.default_rng(seed)
    prob = np.zeros(n)
    for fam in problem.families:
        inside = fam.codes >= 0
        counts = np.bincount(fam.codes[inside], minlength=fam.n_groups)
        p_f = np.zeros(n)
        p_f[inside] = per_group / np.maximum(counts[fam.codes[inside]], 1)
        prob = np.maximum(prob, p_f)
    idx = np.flatnonzero(rng.random(n) < np.minimum(prob, 1.0))
    fams, back = [], []
    for fam in problem.families:
        codes = fam.codes[idx]
        w = fam.weights[idx]
        inside = codes >= 0
        total = np.bincount(codes[inside], weights=w[inside], minlength=fam.n_groups)
        full = np.bincount(fam.codes[fam.codes >= 0], weights=fam.weights[fam.codes >= 0],
                           minlength=fam.n_groups)
        if np.any((total <= 0) & (full > 0)):
            return None, None
        scale = np.where(total > 0, total, 1.0)
        w_sub = np.where(inside, w / scale[np.maximum(codes, 0)], 0.0)
        fams.append(type(fam)(codes=codes, weights=w_sub, n_groups=fam.n_groups,
                              tolerance=fam.tolerance, column=fam.column, name=fam.name))
        back.append(scale)

    def rows_of(b):
        b = np.asarray(b, dtype=np.float64)
        return b if b.ndim == 0 else b[idx]

    sub = type(problem)(
        scores=problem.scores[idx], families=tuple(fams), lower=rows_of(problem.lower),
        upper=rows_of(problem.upper), simplex=problem.simplex,
    )
    return sub, np.concatenate(back) if back else np.zeros(0)


# --------------------------------------------------------------------------- entry point


def _from_solution(st, solution):
    """Multipliers and levels of a previous :class:`Solution`, checked for shape."""
    if not isinstance(solution, Solution):
        raise TypeError(
            f"warm_start must be a Solution or None. Got {type(solution).__name__} instead."
        )
    duals = [np.asarray(d, dtype=np.float64).ravel() for d in solution.duals]
    sizes = [sl.stop - sl.start for sl in st.fam_slices]
    if [d.size for d in duals] != sizes or np.size(solution.levels) != st.n_fam:
        raise ValueError(
            f"warm_start must come from a problem with families of sizes {sizes}. "
            f"Got duals of sizes {[d.size for d in duals]} instead."
        )
    extra = np.zeros(st.n_extra)
    if st.n_extra and solution.row_duals is not None:
        extra = np.asarray(solution.row_duals, dtype=np.float64).ravel()
        if extra.size != st.n_extra:
            raise ValueError(
                f"warm_start.row_duals must have {st.n_extra} entries. "
                f"Got {extra.size} instead."
            )
    y = np.concatenate(duals + [extra])
    return y, np.asarray(solution.levels, dtype=np.float64).ravel().copy()


def solve_osqp(
    problem, warm_start=None, *, backend=None, eps=1e-5, subsample_above=50_000,
    newton_iter=50,
):
    """Solve any :class:`~skfairlayer.ProjectionProblem` exactly.

    Starting points (previous multipliers, OSQP on a subsample or on the whole
    problem) are made exact by an active-set Newton finish; see the module
    docstring for the order of attempts. The answer is checked before it is
    returned: every parity row and extra row within ``1e-10`` (the verification
    of :mod:`skfairlayer._projection` allows ``1e-9``), bounds exactly (simplex:
    non-negative, rows summing to one within round-off).

    Parameters
    ----------
    problem : ProjectionProblem
        Scores (1-D with box bounds, or 2-D with ``simplex=True`` or box bounds),
        parity families and optional extra affine rows.
    warm_start : Solution or None, default=None
        A previous solution (of a problem with the same family sizes); its
        multipliers start the Newton finish and warm-start OSQP.
    backend : OSQPBackend or None, default=None
        Solver state owned by the caller: reused (updated, not set up again)
        when ``problem`` has the structure of its previous problem. ``None``
        uses a fresh one, dropped on return.
    eps : float, default=1e-5
        Absolute and relative tolerance of the first OSQP run.
    subsample_above : int, default=50_000
        Above this many outputs, OSQP first runs on a stratified subsample of the
        rows (without extra rows only), then the finish is tried from zero
        multipliers, before OSQP runs on the whole problem.
    newton_iter : int, default=50
        Largest number of active-set iterations per Newton finish (at most 15
        from a warm or cold start, which are cheap to abandon).

    Returns
    -------
    solution : Solution
        Outputs, per-family multipliers ``nu`` (``P = Pi(S - sum_f nu_{f,g_i}
        w_{f,i} e_{column_f} - R^T row_duals)``, ``R`` the extra rows), levels
        and ``row_duals``. ``info`` tells which path produced it.

    Raises
    ------
    InfeasibleProblemError
        If no outputs meet the rows within the bounds.
    SolverError
        If no answer passing the checks was found.
    ValueError, TypeError
        If the problem or ``warm_start`` is malformed.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import DemographicParity, ProjectionProblem
    >>> from skfairlayer._solvers._osqp import solve_osqp
    >>> scores = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.4])
    >>> codes = np.array([0, 0, 0, 1, 1, 1])
    >>> families = DemographicParity().families(codes, 2, scores, 0.1)
    >>> sol = solve_osqp(ProjectionProblem(scores, families))
    >>> np.round(sol.outputs, 6)
    array([0.7, 0.6, 0.5, 0.4, 0.5, 0.6])
    >>> np.round(sol.duals[0], 6)
    array([ 0.6, -0.6])
    """
    if backend is None:
        backend = OSQPBackend()
    elif not isinstance(backend, OSQPBackend):
        raise TypeError(
            f"backend must be an OSQPBackend or None. Got {type(backend).__name__} instead."
        )
    st, reused = backend.structure(_structure_key(problem), lambda: _Structure(problem))
    data = _Data(problem, st)
    _check_family_ranges(problem, st, data)
    failures = []
    info = {
        "reused_structure": reused, "osqp_iter": 0, "newton_iter": 0, "path": [],
        "retries": failures,
    }

    def finish(y0, t0, label, max_iter=newton_iter):
        res = _newton(st, data, y0, t0, max_iter)
        info["newton_iter"] += res.iterations
        info["path"].append(label)
        if res.ok:
            problem_viol = _verify(problem, st, data, res.x)
            if problem_viol is None:
                return res
            res.reason = problem_viol
        failures.append(f"{label}: {res.reason}")
        return None

    res = None
    start = None
    if warm_start is not None:
        start = _from_solution(st, warm_start)
    if start is not None:
        res = finish(*start, "warm", min(newton_iter, 15))

    if res is None and problem.rows is None and st.size > subsample_above:
        sub, back = _subsample(problem, per_group=max(200, 20_000 // max(st.n_fam_rows, 1)))
        if sub is not None and sub.scores.shape[0] < 0.5 * st.n:
            sub_backend = OSQPBackend()
            sub_st, _ = sub_backend.structure("subsample", lambda: _Structure(sub))
            try:
                status, y, t, iters = _osqp_solve(
                    sub_st, _Data(sub, sub_st), sub_backend, eps=eps
                )
            except InfeasibleProblemError:  # e.g. a sampled group's bounds: no conclusion
                status, iters = _INFEASIBLE[0], 0
            info["osqp_iter"] += iters
            if status not in _INFEASIBLE and np.all(np.isfinite(y)):
                y = y.copy()
                y[: st.n_fam_rows] /= back
                res = finish(y, t, "subsample-osqp")

    if res is None and st.size > subsample_above:
        # Large problem (extra rows, or the subsample start failed): the finish
        # often converges from zero multipliers in a few passes; OSQP otherwise.
        res = finish(
            np.zeros(st.C.shape[0]), np.zeros(st.n_fam), "newton-cold", min(newton_iter, 15)
        )

    if res is None:
        y0, t0 = start if start is not None else (None, None)
        status, y, t, iters = _osqp_solve(st, data, backend, eps=eps, y0=y0, t0=t0)
        info["osqp_iter"] += iters
        if status in _INFEASIBLE:
            failures.append("osqp: reported primal infeasibility")
        else:
            res = finish(y, t, "osqp")
        if res is None:
            # Tight re-solve: confirms a certificate of infeasibility (a loose run
            # can report one on badly scaled rows) or gives a better start.
            status, y, t, iters = _osqp_solve(
                st, data, backend, eps=1e-9, y0=None if status in _INFEASIBLE else y, t0=t,
                polishing=True, max_iter=100_000, eps_prim_inf=1e-9,
            )
            info["osqp_iter"] += iters
            if status in _INFEASIBLE:
                raise InfeasibleProblemError(
                    "The parity rows cannot be met within the bounds: OSQP found a "
                    "certificate of primal infeasibility (the families, extra rows and "
                    "bounds together admit no outputs). Increase the tolerances, widen "
                    "the bounds or relax the rows."
                )
            res = finish(y, t, "osqp-tight")
    if res is None:
        res = _structured_finish(problem, st, data, finish, failures)
    if res is None:
        raise SolverError(
            "The OSQP solver could not produce a verified projection: "
            + "; ".join(failures)
            + ". This is a numerically hard or degenerate instance; please report it."
        )
    g = st.n_fam_rows
    duals = [res.y[sl].copy() for sl in st.fam_slices]
    return Solution(
        outputs=res.x.reshape(st.shape),
        duals=duals,
        levels=res.t.copy(),
        solver="osqp",
        iterations=info["osqp_iter"] + info["newton_iter"],
        row_duals=res.y[g:].copy() if st.n_extra else None,
        info=info,
    )


def _structured_finish(problem, st, data, finish, failures):
    """Last resort where the problem has a specialised solver's structure.

    One family over binary outputs (:mod:`._exact`) or one uniform family per
    class column on the simplex (:mod:`._simplex`): their exact multipliers
    start the Newton finish; if it still fails, their outputs are taken as
    they are, after the same checks. On tiny boxes (widths ~1e-9) and tiny
    tolerances OSQP's multipliers can be too rough for the active-set finish
    to converge from. ``None`` elsewhere, or if nothing passes the checks.
    """
    from . import _exact, _simplex

    if _exact.supports(problem):
        sol = _exact.solve_exact(problem)  # raises InfeasibleProblemError if infeasible
    elif _simplex.supports(problem):
        sol = _simplex.solve_simplex(problem)
    else:
        return None
    if sol is None:
        failures.append("structured: no solution")
        return None
    y = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in sol.duals])
    t = np.asarray(sol.levels, dtype=np.float64).ravel()
    if y.size != st.C.shape[0] or t.size != st.n_fam:
        failures.append("structured: multipliers of another shape")
        return None
    res = finish(y, t, "structured")
    if res is not None:
        return res
    x = np.asarray(sol.outputs, dtype=np.float64).ravel()
    why = _verify(problem, st, data, x)
    if why is not None:
        failures.append(f"structured outputs: {why}")
        return None
    return _Result(True, x, y, t, 0)


def _verify(problem, st, data, x):
    """``None`` if ``x`` passes the checks of :mod:`skfairlayer._projection`, else why not."""
    out = x.reshape(st.shape)
    if not np.all(np.isfinite(out)):
        return "non-finite outputs"
    if st.simplex:
        box = problem.box_violation(out)
    else:
        box = max(np.max(data.lb - x), np.max(x - data.ub), 0.0)
    if box > (1e-12 if st.simplex else 0.0):
        return f"outputs outside the bounds by {box:.3g}"
    viol = problem.parity_violation(out)
    if viol > _PRIM_TOL * 5:
        return f"rows violated by {viol:.3g}"
    return None
