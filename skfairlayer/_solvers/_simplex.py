"""Exact solver for multiclass demographic parity on the probability simplex.

Problem: ``min 1/2 ||P - S||^2`` over rows of ``P`` on the simplex, subject to
``t_c <= m_{g,c}(P) <= t_c + eps_c`` for every group ``g`` and constrained
class column ``c``, with ``m_{g,c}(P) = mean_{i in g} P[i, c]``.

KKT: ``P_i = proj_simplex(S_i - nu_{g_i} / n_{g_i})`` with one multiplier vector
``nu_g`` per group. The multipliers solve the dual, a ``k x K`` concave problem

    max  sum_i psi_i(nu_{g_i} / n_{g_i}) - sum_{g,c} eps_c max(nu_{g,c}, 0)
    s.t. sum_g nu_{g,c} = 0  for every constrained column c,

with ``psi_i(l) = min_{p in simplex} 1/2 ||p - S_i||^2 + l . p`` (gradient: the
projected row). Written as ``min f + h`` (``f = -sum psi``, smooth with
``grad f = -m``; ``h`` the kink plus the zero-sum constraint), the proximal map
of ``h`` splits by column into a one-dimensional monotone equation solved
exactly by sorting ``2k`` breakpoints; its root is the level ``t_c``.

The method is PANOC-style: a semismooth Newton direction on the fixed-point
residual ``R = nu - prox(nu + gam m(nu))`` blended with the plain
forward-backward step, accepted when the forward-backward envelope (a smooth,
exact merit for convex composite problems) decreases enough. The
forward-backward step always qualifies, so the method converges globally; near
the solution the Newton step identifies the active pattern and solves the
piecewise-linear KKT system in one step, so the residual drops to rounding
level. The caller verifies the answer and uses OSQP when this solver gives up.
``f`` is a sum over groups, ``(1 / n_g)``-smooth in group ``g``'s block, so
each group takes its own step ``gam_g = n_g / 2`` (the forward-backward
splitting in the metric ``diag(1 / gam)``): a uniform step ``min_g n_g / 2``
made a small group next to large ones cost hundreds of evaluations.

The method reads the rows only through per-group aggregates (a *rows* object:
``primal(nu)`` gives the group means and the dual value, ``curvatures`` the
per-group support matrices), so the same driver :func:`solve_rows` runs on
in-memory rows (:class:`_Rows`) and on a distributed collection
(:mod:`skfairlayer.dask._simplex`, one pass per ``primal``).
"""

import dataclasses

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from . import Solution

__all__ = ["supports", "solve_simplex", "solve_rows", "project_simplex_rows"]

_MAX_UNKNOWNS = 4000  # dense Newton systems above this size go to OSQP
_RESIDUAL_TOL = 1e-13  # on the band residual R / gam (units of a group mean)
_MAX_ITER = 200
_MODEL_ITER = _MAX_ITER  # iterations on the linearised means when active-set rounds cycle
_POLISH_FROM = 3e-2  # try the exact active-pattern solve below this residual
_SUBSAMPLE_ROWS = 20000  # larger problems start from the solution of a subsample
PATTERN_CLASSES = 8  # up to this many classes, curvatures count rows per support pattern


def supports(problem):
    """Whether the simplex solver handles ``problem``.

    Demographic-parity-like families only: uniform weights, one shared
    grouping, at most one family per class column, no extra rows.
    """
    if not problem.simplex or problem.scores.ndim != 2 or problem.rows is not None:
        return False
    fams = problem.families
    if not fams:
        return False
    first = fams[0]
    if any(f.codes.min(initial=0) < 0 for f in fams[:1]):
        return False
    cols = [f.column for f in fams]
    if len(set(cols)) != len(cols):
        return False
    for f in fams:
        if not f.uniform or f.n_groups != first.n_groups:
            return False
        if f.codes is not first.codes and not np.array_equal(f.codes, first.codes):
            return False
    return first.n_groups * (len(fams) + 1) <= _MAX_UNKNOWNS


def project_simplex_rows(V):
    """Euclidean projection of each row of ``V`` onto the probability simplex.

    Parameters
    ----------
    V : ndarray of shape (n_samples, n_classes)

    Returns
    -------
    P : ndarray of shape (n_samples, n_classes)
        Rows ``>= 0`` summing to one.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._solvers._simplex import project_simplex_rows
    >>> project_simplex_rows(np.array([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0]]))
    array([[0.33333333, 0.33333333, 0.33333333],
           [1.        , 0.        , 0.        ]])
    """
    V = np.asarray(V, dtype=np.float64)
    return _project_columns(np.ascontiguousarray(V.T)).T


def _project_columns(Vt, out=None):
    """Projection of each *column* of ``Vt`` (shape (n_classes, n_samples)) onto the simplex.

    ``out`` may be ``Vt`` itself (projection in place); a new array by default.
    """
    tau = _thresholds(Vt)
    out = np.subtract(Vt, tau, out=np.empty_like(Vt) if out is None else out)
    return np.maximum(out, 0.0, out=out)


def _thresholds(Vt):
    """The threshold ``tau`` of each column's projection ``max(v - tau, 0)`` onto the simplex.

    Michelot's fixed point, vectorised: ``tau`` rises monotonically to its
    value in at most ``n_classes`` passes. Class-major layout keeps the sums
    over classes fast. A column whose first ``tau`` is below all its entries
    is done (full support); the later passes run on the others only.
    """
    K = Vt.shape[0]
    tau = Vt.sum(axis=0)
    tau -= 1.0
    tau /= K
    # Columns with an entry at or below tau: the fixed point moves them (same arithmetic).
    idx = np.flatnonzero(Vt.min(axis=0) <= tau)
    if idx.size:
        sub, t = Vt[:, idx], tau[idx]
        for _ in range(K + 1):
            active = t < sub
            new = (np.where(active, sub, 0.0).sum(axis=0) - 1.0) / active.sum(axis=0)
            moved = new != t
            tau[idx] = new
            if not moved.any():
                break
            if 2 * np.count_nonzero(moved) < moved.size:  # drop the settled columns
                idx, sub, new = idx[moved], sub[:, moved], new[moved]
            t = new
    return tau


class _Rows:
    """The rows of an in-memory problem, sorted by group: the aggregates the method reads.

    A rows object has ``k`` (groups), ``sizes`` (rows per group, floats, all
    positive), ``cols`` (the constrained class columns), ``eps`` (their
    tolerances), and two methods: ``primal(nu) -> (state, m, f)`` (the
    projected outputs as an opaque ``state``, the constrained group means
    ``m`` of shape ``(k, C)`` and the smooth part ``f`` of the dual objective)
    and ``curvatures(state)`` (per group, ``H_g``, see :meth:`_curvature_sums`),
    both from one pass over the rows.
    """

    def __init__(self, problem):
        fams = problem.families
        codes = fams[0].codes
        self.k = fams[0].n_groups
        self.n, self.K = problem.scores.shape
        # a stable sort of small integers is a radix sort: much faster than on intp
        small = np.int16 if self.k <= np.iinfo(np.int16).max else codes.dtype
        self.order = np.argsort(codes.astype(small, copy=False), kind="stable")
        self.counts = np.bincount(codes, minlength=self.k)
        self.sizes = self.counts.astype(np.float64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.intp)
        self.St = np.empty((self.K, self.n))  # class-major, rows sorted by group
        for j in range(self.K):
            np.take(problem.scores[:, j], self.order, out=self.St[j])
        self.cols = np.array([f.column for f in fams], dtype=np.intp)
        self.eps = np.array([f.tolerance for f in fams], dtype=np.float64)
        self._work = None  # scratch (K, n), reused between evaluations

    def _shifted(self, Lt):
        """``S - L[g]`` (class-major, sorted rows) in the scratch array."""
        if self._work is None:
            self._work = np.empty_like(self.St)
        V = self._work
        if self.k <= 256:  # by group (rows sorted): no (K, n) temporary
            for g, (a, b) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True)):
                np.subtract(self.St[:, a:b], Lt[:, g : g + 1], out=V[:, a:b])
        else:
            np.subtract(self.St, np.repeat(Lt, self.counts, axis=1), out=V)
        return V

    def primal(self, nu):
        """The outputs' state (shifts, thresholds, curvatures), group means (k, C), and f.

        The outputs are formed in a scratch array (a fresh ``(K, n)`` array per
        evaluation costs more in page faults than the projection itself); the
        state keeps what rebuilds them exactly (:meth:`outputs`).
        """
        Lt = np.zeros((self.K, self.k))
        Lt[self.cols] = (nu / self.sizes[:, None]).T
        V = self._shifted(Lt)
        tau = _thresholds(V)
        Pt = np.maximum(np.subtract(V, tau, out=V), 0.0, out=V)
        sums = np.add.reduceat(Pt, self.starts[:-1], axis=1)[self.cols].T  # (k, C)
        m = sums / self.sizes[:, None]
        H = self._curvature_sums(Pt)
        diff = np.subtract(Pt, self.St, out=V)
        # f = -(1/2 ||P - S||^2 + sum_i <L_{g_i}, P_i>), the second sum per group is <nu_g, m_g>
        f = -(0.5 * float(np.vdot(diff, diff)) + float(np.sum(nu * m)))
        return {"Lt": Lt, "tau": tau, "H": H}, m, f

    def outputs(self, state):
        """The projected outputs of ``state``, class-major, rows sorted by group (a new array)."""
        V = np.subtract(self._shifted(state["Lt"]), state["tau"], out=np.empty_like(self.St))
        return np.maximum(V, 0.0, out=V)

    def curvatures(self, state):
        """Per group, ``H_g`` at the outputs ``state`` (see :meth:`_curvature_sums`)."""
        return state["H"]

    def _curvature_sums(self, Pt):
        """Per group, ``H_g = sum_{i in g} (diag(a_i) - a_i a_i^T / |a_i|)`` on the constrained columns.

        ``a_i`` is the support of row ``i``; ``-H_g / n_g^2`` is ``d m_g / d nu_g``.
        Up to ``PATTERN_CLASSES`` classes the rows are counted per support
        pattern and group; beyond, the sums are formed row by row.
        """
        if self.K <= PATTERN_CLASSES:
            pattern = support_patterns(Pt)
            n_pat = 1 << self.K
            counts = np.stack([
                np.bincount(pattern[self.starts[g] : self.starts[g + 1]], minlength=n_pat)
                for g in range(self.k)
            ])
            return list(pattern_curvatures(counts, self.cols, self.K))
        return list(sorted_curvatures(Pt, self.starts, self.cols))


def support_patterns(Pt, out=None):
    """Each row's support as a bit pattern (bit ``j`` set when class ``j`` is in it), ``uint8``.

    ``Pt`` is class-major (its columns are the rows), with at most ``PATTERN_CLASSES``
    classes. ``out``: a ``uint8`` array to write the patterns into.
    """
    out = np.empty(Pt.shape[1], dtype=np.uint8) if out is None else out
    np.greater(Pt[0], 0.0, out=out.view(bool))
    for j in range(1, Pt.shape[0]):
        out |= np.greater(Pt[j], 0.0).view(np.uint8) << j
    return out


def sorted_curvatures(Pt, starts, cols):
    """Curvature sums ``H`` of shape ``(k, C, C)`` formed row by row.

    ``Pt`` is class-major, its columns (the rows) sorted by group: group ``g``
    holds the columns ``starts[g]:starts[g + 1]``.
    """
    A = (Pt[cols] > 0).astype(np.float64)  # (C, n)
    inv_supp = 1.0 / (Pt > 0).sum(axis=0)
    out = np.zeros((starts.size - 1, cols.size, cols.size))
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        Ag = A[:, a:b]
        out[g] = np.diag(Ag.sum(axis=1)) - (Ag * inv_supp[a:b]) @ Ag.T
    return out


def pattern_curvatures(counts, cols, n_classes):
    """Curvature sums ``H`` of shape ``(k, C, C)`` from per (group, support pattern) row counts.

    Bit ``j`` of a pattern is set when class ``j`` is in the support.
    """
    C = cols.size
    n_pat = 1 << n_classes
    bits = (np.arange(n_pat)[:, None] >> np.arange(n_classes)) & 1
    size = np.maximum(bits.sum(axis=1), 1).astype(np.float64)
    a = bits[:, cols].astype(np.float64)
    unit = np.einsum("pc,cd->pcd", a, np.eye(C)) - np.einsum("pc,pd->pcd", a, a / size[:, None])
    return np.einsum("gp,pcd->gcd", np.asarray(counts, dtype=np.float64), unit)


class _Dual:
    """The dual method on a rows object: proximal map, envelope, Newton steps, polish."""

    def __init__(self, rows):
        self.rows = rows
        self.k = rows.k
        self.sizes = rows.sizes
        self.cols = rows.cols
        self.eps = rows.eps
        # f is a sum over groups, (1 / n_g)-smooth in group g's block: each group takes its
        # own step gam_g = 0.5 n_g (the metric diag(1 / gam)): unequal sizes do not slow it.
        self.gam = 0.5 * self.sizes

    def primal(self, nu):
        """The rows' projected outputs (opaque), constrained group means (k, C), and f."""
        return self.rows.primal(nu)

    def curvatures(self, state):
        """Per group, ``H_g`` at the outputs ``state`` (see :meth:`_Rows.curvatures`)."""
        return self.rows.curvatures(state)

    def prox(self, z):
        """Proximal map of ``h`` (kink + zero column sums) in the metric ``diag(1 / gam)``.

        Column by column: ``x_g = shrink(z_g - gam_g mu)`` (dead zone
        ``[0, gam_g eps]``) with the root ``mu`` of ``sum_g x_g = 0``, found
        exactly among the ``2k`` breakpoints. Returns the image, the
        free-coordinate mask (outside the dead zone) and the per-column root
        ``mu``, which is the level ``t``.
        """
        gam = self.gam
        out = np.empty_like(z)
        free = np.empty(z.shape, dtype=bool)
        mu = np.empty(z.shape[1])
        for j in range(z.shape[1]):
            e = self.eps[j]
            ge = gam * e
            r = z[:, j] / gam
            bps = np.unique(np.concatenate([r, r - e]))
            y = gam[None, :] * (r[None, :] - bps[:, None])
            vals = np.where(y > ge, y - ge, np.where(y < 0, y, 0.0)).sum(axis=1)
            # vals is non-increasing in mu, >= 0 at bps[0] and <= 0 at bps[-1].
            i = int(np.searchsorted(-vals, 0.0, side="left"))
            if i < vals.size and vals[i] == 0.0:
                hi = int(np.searchsorted(-vals, 0.0, side="right")) - 1
                mu[j] = 0.5 * (bps[i] + bps[hi])
            else:
                a, b = bps[i - 1], bps[i]
                mu[j] = a + vals[i - 1] * (b - a) / (vals[i - 1] - vals[i])
            yj = gam * (r - mu[j])
            out[:, j] = np.where(yj > ge, yj - ge, np.where(yj < 0, yj, 0.0))
            free[:, j] = (yj > ge) | (yj < 0)
        return out, free, mu

    def h(self, nu):
        return float(np.sum(self.eps[None, :] * np.maximum(nu, 0.0)))

    def evaluate(self, nu):
        """Everything one iterate needs: primal, forward-backward step and envelope."""
        P, m, f = self.primal(nu)
        bar, free, mu = self.prox(nu + self.gam[:, None] * m)
        R = nu - bar
        # FBE: f + <grad f, bar - nu> + ||bar - nu||^2_{1/gam} / 2 + h(bar), grad f = -m.
        fbe = (f + float(np.sum(m * R)) + 0.5 * float(np.sum(R * R / self.gam[:, None]))
               + self.h(bar))
        return {"nu": nu, "P": P, "m": m, "bar": bar, "free": free, "mu": mu, "R": R, "fbe": fbe}

    def extrapolate(self, it, new):
        """Follow the forward-backward step ``new - it`` further while the envelope keeps falling.

        Where the dual is flat but for the kink (a shift of one group's
        multipliers along the all-ones vector leaves the outputs unchanged),
        plain forward-backward steps crawl along a ray; doubling the step along
        it reaches the next kink in ``O(log)`` evaluations.
        """
        step = new["nu"] - it["nu"]
        best = new
        for j in range(1, 60):
            cand = self.evaluate(it["nu"] + (2.0**j) * step)
            if not cand["fbe"] < best["fbe"]:
                break
            best = cand
        return best

    def newton_direction(self, it):
        """Solve ``dR d = -R`` (least squares) with the generalized Jacobian of ``R``."""
        k, C = self.k, self.cols.size
        size = k * C
        # M = I + gam * d m / d nu = I - blockdiag(gam_g H_g / n_g^2).
        M = np.eye(size)
        for g, H in enumerate(self.curvatures(it["P"])):
            blk = slice(g * C, (g + 1) * C)
            M[blk, blk] -= self.gam[g] * H / self.sizes[g] ** 2
        # Pi: per column, the prox's Jacobian: identity less the gam-weighted mean over the
        # free coordinates (a projector onto zero-sum vectors), zero on the others.
        D = it["free"].astype(np.float64)  # (k, C)
        Pi = np.zeros((size, size))
        idx = np.arange(k) * C
        for j in range(C):
            dj = D[:, j]
            wj = dj * self.gam
            tot = wj.sum()
            block = np.diag(dj)
            if tot > 0:
                block -= np.outer(wj, dj) / tot
            Pi[np.ix_(idx + j, idx + j)] = block
        J = np.eye(size) - Pi @ M
        d = _lstsq(J, -it["R"].ravel())
        return d.reshape(k, C)

    def polish(self, it, rounds=8):
        """Solve the KKT system on the active pattern of ``it`` exactly; ``None`` if it fails.

        The pattern: each row's support, and per group and column whether
        the band is active at the top (``nu > 0``), the bottom (``nu < 0``) or
        not at all (``nu = 0``), first read off the forward-backward point. On
        a pattern the group means are affine in the multipliers, so the KKT
        conditions are one linear system, solved for the smallest change of
        the multipliers (directions that leave the outputs unchanged stay put).
        Each round linearises the means at the current multipliers (one
        evaluation) and settles the band pattern on that model without
        touching the rows (:meth:`_model_pattern`); the rows' supports then
        move less and less, and the answer is accepted only when the bands,
        the signs and the zero column sums hold for the outputs of an actual
        projection.
        """
        t = it["mu"]
        state = np.where(it["free"], np.sign(it["bar"]), 0.0).astype(int)
        # the first model is linearised at the iterate, already evaluated
        nu, P, m = it["nu"], it["P"], it["m"]
        if isinstance(self.rows, _ModelRows):
            rounds = 1  # its means are exact: a second round would repeat the first
        for _ in range(rounds):
            found = self._model_pattern(nu, t, state, self.curvatures(P), m)
            if found is None:
                return None
            nu, t, state = found
            P, m, _ = self.primal(nu)
            if self._kkt_holds(nu, t, state, m):
                if np.all(np.abs(nu.sum(axis=0)) <= 1e-9 * max(1.0, np.abs(nu).max())):
                    return P, nu, t
                return None
        return None

    def _violations(self, nu, gap, state, tol=1e-13):
        """Pattern violations: signs of the multipliers, means outside or off their bands."""
        sign_tol = 1e-10 * max(1.0, float(np.abs(nu).max()))
        wrong = ((state > 0) & (nu < -sign_tol)) | ((state < 0) & (nu > sign_tol))
        above = (state == 0) & (gap - self.eps > tol)
        below = (state == 0) & (gap < -tol)
        off_band = ((state > 0) & (np.abs(gap - self.eps) > tol)) | (
            (state < 0) & (np.abs(gap) > tol)
        )
        return wrong, above, below, off_band

    def _kkt_holds(self, nu, t, state, m):
        """Whether the means ``m`` of an actual projection meet the pattern's KKT conditions."""
        return not any(v.any() for v in self._violations(nu, m - t, state))

    def _model_pattern(self, nu0, t0, state, curv, m0, rounds=20):
        """Primal-dual active-set rounds on the means linearised at ``nu0`` (no evaluation).

        A multiplier of the wrong sign leaves its band, a mean outside its
        band joins it; a group with every class at an edge of its band must
        have edges summing to one, and when the pattern's system has no
        solution its weakest class is released. Returns the multipliers,
        levels and pattern the rounds settle on (or reach within ``rounds``;
        each is one dense solve of size ``k (C + 1)``), ``None`` when a system
        is not finite.
        """
        k, C = self.k, self.cols.size
        seen = set()
        slope = self._slope(curv)
        for _ in range(rounds):
            nu, t, resid = self._pattern_solve(nu0, t0, state, slope, m0)
            if nu is None:
                return None
            d = nu - nu0
            pred = m0 + (slope @ d.ravel()).reshape(k, C)
            wrong, above, below, _ = self._violations(nu, pred - t, state)
            stuck = np.flatnonzero(np.all(state != 0, axis=1) & (resid > 0).any(axis=1))
            if not (wrong.any() or above.any() or below.any() or stuck.size):
                return nu, t, state
            key = state.tobytes()
            if key in seen:  # the rounds cycle: solve the model by the dual method
                return self._model_solve(nu0, curv, m0)
            seen.add(key)
            state = state.copy()
            state[wrong] = 0
            state[above] = 1
            state[below] = -1
            if stuck.size and not (wrong.any() or above.any() or below.any()):
                state[stuck, np.argmin(np.abs(nu[stuck]), axis=1)] = 0
        return nu, t, state

    def _model_solve(self, nu0, curv, m0):
        """The model's exact solution by the dual method itself (no evaluation), or ``None``."""
        if isinstance(self.rows, _ModelRows):
            return None  # the model of a model: the driver's steps take over
        model = _ModelRows(self, nu0, curv, m0)
        found = solve_rows(model, nu0, max_iter=_MODEL_ITER)
        if found is None:
            return None
        _, nu, t, _ = found
        state = np.sign(nu).astype(int)
        nu, t, unmet = self._pattern_solve(nu, np.asarray(t, dtype=np.float64), state,
                                           model.slope, model.means(nu))
        return None if nu is None or unmet.any() else (nu, t, state)

    def _slope(self, curv):
        """``d m / d nu`` on the supports of ``curv``: block diagonal ``-H_g / n_g^2``, (kC, kC)."""
        C = self.cols.size
        return -scipy.linalg.block_diag(*curv) / np.repeat(self.sizes**2, C)[:, None]

    def _pattern_solve(self, nu0, t0, state, slope, m0):
        """Multipliers and levels solving the KKT system linearised at ``nu0`` on ``state``.

        Also, per group and column, whether that equation is left unmet (the
        system has no exact solution), a ``(k, C)`` boolean array.
        """
        k, C = self.k, self.cols.size
        kC = k * C
        J = np.zeros((kC + C, kC + C))
        rhs = np.zeros(kC + C)
        act = (state != 0).ravel()
        col = np.tile(np.arange(C), k)
        # active: m_gc(nu0 + d) = m0_gc - H_g[c] d_g / n_g^2 = t0_c + dt_c (+ eps_c at the top)
        J[:kC, :kC] = np.where(act[:, None], slope, np.eye(kC))  # inactive: nu_gc = 0
        J[np.flatnonzero(act), kC + col[act]] = -1.0
        level = t0[None, :] + np.where(state > 0, self.eps[None, :], 0.0) - m0
        rhs[:kC] = np.where(act, level.ravel(), -nu0.ravel())
        J[kC + col, np.arange(kC)] = 1.0  # sum_g nu_gc = 0
        rhs[kC:] = -nu0.sum(axis=0)
        step = _lstsq(J, rhs)
        if not np.all(np.isfinite(step)):
            return None, None, None
        # An equation is unmet when the least-squares step misses it beyond rounding.
        miss = np.abs(J @ step - rhs)[: k * C].reshape(k, C)
        unmet = miss > 1e-9 * max(1.0, float(np.max(np.abs(rhs), initial=0.0)))
        nu = nu0 + step[: k * C].reshape(k, C)
        nu[state == 0] = 0.0
        return nu, t0 + step[k * C :], unmet


class _ModelRows:
    """The rows' means linearised at ``nu0`` (supports held fixed): a rows object that
    reads no data, for :meth:`_Dual._model_pattern` when its active-set rounds cycle."""

    def __init__(self, dual, nu0, curv, m0):
        self.k, self.sizes, self.cols, self.eps = dual.k, dual.sizes, dual.cols, dual.eps
        self.nu0, self.curv, self.m0 = nu0, curv, m0
        self.slope = dual._slope(curv)

    def means(self, nu):
        return self.m0 + (self.slope @ (nu - self.nu0).ravel()).reshape(self.m0.shape)

    def primal(self, nu):
        # f with gradient -m: f = -<m0, d> + 1/2 sum_g d_g H_g d_g / n_g^2
        m = self.means(nu)
        d = nu - self.nu0
        return None, m, float(np.sum(-0.5 * (self.m0 + m) * d))

    def curvatures(self, state):
        return self.curv


def _lstsq(J, r):
    """Least-squares solution of ``J x = r``, treating tiny singular values as zero."""
    return scipy.linalg.lstsq(J, r, cond=1e-10, lapack_driver="gelsy", check_finite=False)[0]


def solve_simplex(problem, warm_start=None):
    """Solve a multiclass demographic-parity problem by a globalized semismooth Newton method.

    Parameters
    ----------
    problem : ProjectionProblem
        A problem for which :func:`supports` is true.
    warm_start : Solution or None, default=None
        A previous solution of a problem with the same groups and columns;
        its multipliers start the iteration.

    Returns
    -------
    solution : Solution or None
        ``None`` when the method did not reach a band residual of ``1e-13``
        within its iteration budget (the caller then uses the general solver).
    """
    # The dense systems are small: threaded BLAS only adds contention (100x slower measured).
    with threadpool_limits(limits=1, user_api="blas"):
        return _solve(problem, warm_start)


def _subsample_start(problem, rows):
    """Multipliers of a stratified subsample, rescaled to the full groups (a warm start).

    The shifts ``L_g = nu_g / n_g`` (not the multipliers) carry over between
    sample sizes; a subsample of ``_SUBSAMPLE_ROWS`` rows pins them down to a
    few digits, so the full problem starts next to its active pattern.
    """
    codes = problem.families[0].codes
    rng = np.random.default_rng(0)
    share = _SUBSAMPLE_ROWS / rows.n
    keep = []
    for g in range(rows.k):
        members = rows.order[rows.starts[g] : rows.starts[g + 1]]
        m = min(members.size, max(int(np.ceil(share * members.size)), 200))
        keep.append(members if m >= members.size else rng.choice(members, m, replace=False))
    keep = np.sort(np.concatenate(keep))
    sub_codes = codes[keep]
    sub_counts = np.bincount(sub_codes, minlength=rows.k).astype(np.float64)
    fams = tuple(
        dataclasses.replace(
            f, codes=sub_codes, weights=1.0 / sub_counts[sub_codes], totals=None
        )
        for f in problem.families
    )
    sub = dataclasses.replace(problem, scores=problem.scores[keep], families=fams)
    solution = _solve(sub, None)
    if solution is None:
        return None
    return np.column_stack(solution.duals) / sub_counts[:, None] * rows.sizes[:, None]


def _solve(problem, warm_start):
    rows = _Rows(problem)
    k, C = rows.k, rows.cols.size
    start = None
    if warm_start is not None and len(warm_start.duals) == C:
        nu = np.column_stack([np.asarray(d, dtype=np.float64) for d in warm_start.duals])
        if nu.shape == (k, C) and np.all(np.isfinite(nu)):
            start = nu
    elif rows.n > 3 * _SUBSAMPLE_ROWS:
        start = _subsample_start(problem, rows)
    found = solve_rows(rows, start)
    if found is None:
        return None
    state, nu, levels, n_iter = found
    Pt = rows.outputs(state)
    outputs = np.empty((rows.n, rows.K))
    outputs[rows.order] = Pt.T
    duals = [nu[:, j].copy() for j in range(nu.shape[1])]
    return Solution(outputs, duals, np.asarray(levels, dtype=np.float64).copy(), solver="simplex",
                    iterations=n_iter)


def solve_rows(rows, start=None, max_iter=_MAX_ITER):
    """The globalized semismooth Newton method on a rows object (the driver loop).

    Parameters
    ----------
    rows : object
        The aggregates of the rows: ``k``, ``sizes``, ``cols``, ``eps``,
        ``primal(nu)`` and ``curvatures(state)`` (see :class:`_Rows`).
    start : ndarray of shape (k, C) or None, default=None
        Starting multipliers (zero when None).
    max_iter : int, default=200
        Iteration budget.

    Returns
    -------
    found : tuple or None
        ``(state, nu, levels, n_iter)``: the rows' outputs at the optimal
        multipliers ``nu`` (state as returned by ``rows.primal(nu)``), the
        levels ``t`` of the bands and the iterations; ``None`` when the method
        did not reach a band residual of ``1e-13`` within its budget.
    """
    pb = _Dual(rows)
    nu = np.zeros((pb.k, pb.cols.size))
    if start is not None and np.shape(start) == nu.shape and np.all(np.isfinite(start)):
        nu = np.asarray(start, dtype=np.float64)
    it = pb.evaluate(nu)
    # sufficient decrease of the envelope: (1 - step * lipschitz) / 4 in the metric, with
    # step 0.5 and lipschitz 1 relative to it
    decrease = 0.125 / pb.gam[:, None]
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        res = _residual(pb, it)
        if res <= _RESIDUAL_TOL:
            break
        if res <= _POLISH_FROM:
            polished = pb.polish(it)
            if polished is not None:
                return (*polished, n_iter)
        try:
            d = pb.newton_direction(it)
        except (np.linalg.LinAlgError, ValueError):
            d = -it["R"]
        target = it["fbe"] - float(np.sum(decrease * it["R"] ** 2))
        tau = 1.0
        while True:
            cand = it["nu"] - (1.0 - tau) * it["R"] + tau * d
            new = pb.evaluate(cand)
            if new["fbe"] <= target or tau == 0.0:
                break
            tau = tau * 0.5 if tau > 1e-3 else 0.0
        if tau < 1.0:
            new = pb.extrapolate(it, new)
        it = new
    else:
        return None
    if _residual(pb, it) > _RESIDUAL_TOL:
        return None
    # The forward-backward point is dual feasible (zero column sums) and complementary.
    nu = it["bar"]
    state, _, _ = pb.primal(nu)
    return state, nu, it["mu"], n_iter


def _residual(pb, it):
    """The band residual ``R_g / gam_g`` (units of a group mean), largest entry."""
    return float(np.max(np.abs(it["R"]) / pb.gam[:, None]))
