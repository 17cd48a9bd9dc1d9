"""Row structure and per-call data of the general solver.

:class:`_Structure` holds everything about a problem that does not depend on
scores, bounds or tolerances (the stacked rows ``C``, the projection on the
bounds / simplex and its Jacobian), keyed by :func:`_structure_key` so that an
:class:`~skfairlayer._solvers._osqp_backend.OSQPBackend` can reuse it;
:class:`_Data` holds the scores, bounds and row bounds of one call.
"""

import hashlib

import numpy as np
import scipy.sparse as sp

from ..exceptions import InfeasibleProblemError


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


def _checked_family(f, fam, n, k):
    """The codes and weights of family ``f``, checked against ``n`` rows and ``k`` columns."""
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
    return codes, weights


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
            codes, weights = _checked_family(f, fam, n, k)
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
