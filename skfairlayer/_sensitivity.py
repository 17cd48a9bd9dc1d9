"""Closed-form sensitivities (Jacobian products) of the fairness projection.

At its solution ``P*`` the projection ``S -> P*`` is locally the orthogonal
projector ``J`` onto the directions that keep every active constraint active
(``MATH.md`` §2): outputs at a bound stay put, and on the free outputs the
component along the active parity rows is removed. ``J`` is symmetric, so the
vector-Jacobian and Jacobian-vector products are the same map.

Parity rows and the auxiliary level
-----------------------------------
A family asks ``t <= m_g(P) <= t + tol`` with a free level ``t``. In terms of
``P`` alone this is ``max_g m_g - min_g m_g <= tol``. When the gap equals
``tol`` the active groups are those at the top (``m_g = max``) and at the
bottom (``m_g = min``); eliminating ``t``, a feasible direction keeps the
*differences* of the active group means fixed: ``dm_g = mu`` for every active
``g``, with one free common value ``mu`` per family. (With ``tol = 0`` every
group is active; when the gap is below ``tol`` no row is active, whatever
level the solver reported.)

For the family rows ``a_g`` (weights ``w_i`` on group ``g``) the projection of
``v`` onto ``{x in range(Q) : a_g' x = mu_f, C x = 0}`` (``Q`` the projector
onto outputs free of the bounds and, on the simplex, with zero row sums; ``C``
the active extra affine rows) is

    x = Q v - sum_{f,g} lambda_{f,g} Q a_{f,g} - sum_j eta_j Q c_j

where ``(lambda, mu, eta)`` solve a small symmetric system of size
``sum_f |active groups of f| + n_families + n_active_rows``; its Gram blocks
``a' Q a`` are group-pair sums computed with one ``bincount`` per pair of
families, so a product costs ``O(n_samples * n_classes)`` time and memory.

Degenerate points
-----------------
Where strict complementarity or independence of the active rows fails (a
weakly active row, a group whose outputs are all at a bound, ``tol = 0`` in
the ``(P, t)`` form, dependent rows) the projection is not differentiable.
We then return the projector onto the null space of *every* primally active
row (and every output at a bound); the small system is solved by least
squares, which handles dependent rows. This projector is the Jacobian at
nearby points that make every such row strongly active (move ``S`` into the
interior of the normal cone at ``P*``), hence an element of the Clarke
generalized Jacobian.
"""

import threading

import numpy as np

__all__ = ["Linearization", "projection_vjp", "projection_jvp"]

#: Outputs within this distance of a bound count as held at the bound.
BOUND_ATOL = 1e-12
#: Group statistics within this distance of the band's edge count as on it
#: (the verified solution meets the parity rows to ``VERIFY_TOL = 1e-9``).
LEVEL_ATOL = 1e-9


class Linearization:
    """The local linear structure of a projection at its solution.

    Built once per solution in ``O(n_samples * n_classes)``; each call to
    :meth:`apply` costs a few passes over the outputs.

    Parameters
    ----------
    problem : ProjectionProblem
        The problem that was solved.
    outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
        Its verified solution ``P*``.
    bound_atol : float, default=1e-12
        Outputs this close to a bound (to zero on the simplex) are held fixed.
    level_atol : float, default=1e-9
        Group statistics this close to the top or bottom of the band are on it.

    Attributes
    ----------
    free : ndarray of bool, same shape as ``outputs``
        Outputs not held at a bound.
    active : list of ndarray of bool of shape (n_groups,)
        Per family, the groups whose statistic is on an edge of the band
        (all ``False`` when the family's gap is below its tolerance).
    active_rows : ndarray of int
        Indices of the extra affine rows that are at one of their limits.
    """

    def __init__(self, problem, outputs, *, bound_atol=BOUND_ATOL, level_atol=LEVEL_ATOL):
        p = np.asarray(outputs, dtype=np.float64)
        if p.shape != problem.scores.shape:
            raise ValueError(
                f"outputs must have the shape of the problem's scores {problem.scores.shape}. "
                f"Got shape {p.shape} instead."
            )
        self.shape = p.shape
        self.simplex = bool(problem.simplex)
        self.families = tuple(problem.families)
        if self.simplex:
            free = p > bound_atol
        else:
            lower, upper = problem.lower, problem.upper
            if np.ndim(lower) == 0 and np.ndim(upper) == 0:  # scalar bounds: no broadcast copies
                free = (p > float(lower) + bound_atol) & (p < float(upper) - bound_atol)
            else:
                lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), p.shape)
                upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), p.shape)
                free = (p > lower + bound_atol) & (p < upper - bound_atol)
        self.free = free
        if self.simplex:
            n_free = free.sum(axis=1)
            self._inv_free = np.where(n_free > 0, 1.0 / np.maximum(n_free, 1), 0.0)

        # Active groups of each family, decided on P alone (see the module docstring); then,
        # per active family, u_i = w_i where row i is in the family and its output (in the
        # family's column) is free, else 0.
        self.active, self._sums = [], {}
        for f, fam in enumerate(self.families):
            sums = _GroupSums(fam)
            col = p if p.ndim == 1 else p[:, fam.column]
            wp = np.multiply(fam.weights, col, out=_scratch(self.shape[0]))
            m = sums(wp if sums.inside is None else sums.mask(wp))
            present = np.ones(fam.n_groups, dtype=bool)
            if np.any(m == 0.0):  # an empty group has a zero mean: check presence only then
                present = _group_present(fam)
            act = np.zeros(fam.n_groups, dtype=bool)
            if present.sum() >= 2:
                hi, lo = m[present].max(), m[present].min()
                if hi - lo >= fam.tolerance - level_atol:
                    act = present & ((m >= hi - level_atol) | (m <= lo + level_atol))
            self.active.append(act)
            if act.any():
                self._sums[f] = sums

        # Extra affine rows at one of their limits, as dense Q-projected vectors.
        self.active_rows = np.zeros(0, dtype=np.intp)
        self._row_vectors = np.zeros((0, p.size))
        if problem.rows is not None:
            rows = problem.rows
            r = rows.matrix @ p.ravel()
            lo = np.asarray(rows.lower, dtype=np.float64)
            hi = np.asarray(rows.upper, dtype=np.float64)
            at = (np.abs(r - lo) <= level_atol) | (np.abs(r - hi) <= level_atol)
            self.active_rows = np.flatnonzero(at)
            if self.active_rows.size:
                dense = rows.matrix[self.active_rows].toarray()
                self._row_vectors = np.stack([self._q(c.reshape(p.shape)).ravel() for c in dense])

        self._build_system()

    # ------------------------------------------------------------------ operators
    def _q(self, v):
        """Projector onto outputs free of the bounds (zero row sums on the simplex)."""
        out = v * self.free
        if self.simplex:
            out -= self.free * (out.sum(axis=1) * self._inv_free)[:, None]
        return out

    def _build_system(self):
        blocks = []  # (family index, active group indices, offset)
        size = 0
        for f in self._sums:
            idx = np.flatnonzero(self.active[f])
            blocks.append((f, idx, size))
            size += idx.size
        n_lam, n_mu, n_eta = size, len(blocks), self.active_rows.size
        dim = n_lam + n_mu + n_eta
        self._blocks, self._dim = blocks, dim
        self._single = None
        if dim == 0:
            self._solve = None
            return
        if n_mu == 1 and n_eta == 0:
            # One active family: a diagonal Gram c_g, solved in closed form (no pinv).
            f, idx, _ = blocks[0]
            fam = self.families[f]
            weight = self._times_u(f, fam.weights, _scratch(self.shape[0]))  # u * w = u^2
            if self.simplex:
                weight *= 1.0 - self._inv_free
            self._single = self._sums[f](weight)[idx]
            self._solve = True
            return
        K = np.zeros((dim, dim))
        # Gram blocks a_{f,g}' Q a_{f',g'}: disjoint supports within a family make each a
        # group-pair sum (diagonal within a family); the simplex adds the row-centring term.
        for bi, (f, idx, off) in enumerate(blocks):
            fam, codes = self.families[f], self._sums[f].codes
            u = self._times_u(f, 1.0, np.empty(self.shape[0]))
            for f2, idx2, off2 in blocks[bi:]:
                fam2, codes2 = self.families[f2], self._sums[f2].codes
                weight = self._times_u(f2, u, _scratch(self.shape[0]))
                if self.simplex:
                    same = 1.0 if fam.column == fam2.column else 0.0
                    weight *= same - self._inv_free
                elif fam.column != fam2.column:
                    weight *= 0.0
                if f == f2:
                    gram = np.diag(self._sums[f](weight))
                else:
                    pair = codes * fam2.n_groups + codes2
                    gram = np.bincount(
                        pair, weights=weight, minlength=fam.n_groups * fam2.n_groups
                    ).reshape(fam.n_groups, fam2.n_groups)
                block = gram[np.ix_(idx, idx2)]
                K[off : off + idx.size, off2 : off2 + idx2.size] = block
                K[off2 : off2 + idx2.size, off : off + idx.size] = block.T
        for j, (_, idx, off) in enumerate(blocks):
            K[off : off + idx.size, n_lam + j] = 1.0  # + mu_f in each group's equation
            K[n_lam + j, off : off + idx.size] = 1.0  # sum_g lambda_{f,g} = 0
        if n_eta:
            C = self._row_vectors  # already Q-projected
            K[n_lam + n_mu :, n_lam + n_mu :] = C @ C.T
            for f, idx, off in blocks:
                cross = np.stack([self._family_dot(f, c.reshape(self.shape)) for c in C])
                K[off : off + idx.size, n_lam + n_mu :] = cross[:, idx].T
                K[n_lam + n_mu :, off : off + idx.size] = cross[:, idx]
        # Jacobi scaling, then a least-squares pseudo-inverse (dependent rows, clamped groups).
        diag = np.abs(np.diag(K))
        scale = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
        Ks = K * scale[:, None] * scale[None, :]
        pinv = np.linalg.pinv(Ks, rcond=1e-13, hermitian=True)
        self._solve = scale[:, None] * pinv * scale[None, :]

    def _family_dot(self, f, x):
        """``a_{f,g}' x`` for every group ``g`` of family ``f``, for ``x`` zero off the free set."""
        col = x if x.ndim == 1 else x[:, self.families[f].column]
        return self._sums[f](self._times_u(f, col, _scratch(self.shape[0])))

    def _times_u(self, f, x, out):
        """``x * u`` into ``out``, with ``u_i = w_i`` where row ``i`` is in family ``f`` and its
        output (in the family's column) is free, else 0 (u is never stored: one pass less
        to allocate)."""
        fam = self.families[f]
        np.multiply(x, fam.weights, out=out)
        out *= self.free if self.free.ndim == 1 else self.free[:, fam.column]
        inside = self._sums[f].inside
        if inside is not None:
            out *= inside
        return out

    def _solve_single(self, r):
        """``c_g lambda_g + mu = r_g``, ``sum_g lambda_g = 0`` for one family (diagonal Gram)."""
        c, r = self._single, r[: self._single.size]
        pinned = c <= 0.0  # a group without free outputs: its mean is fixed, so mu = 0
        mu = 0.0 if pinned.any() else float(np.sum(r / c) / np.sum(1.0 / c))
        lam = np.where(pinned, 0.0, (r - mu) / np.where(pinned, 1.0, c))
        return np.append(lam, mu)

    # ------------------------------------------------------------------ products
    def apply(self, vector):
        """``J @ vector`` (equal to ``J.T @ vector``: ``J`` is symmetric).

        Parameters
        ----------
        vector : array-like of the outputs' shape
            A gradient with respect to the outputs (VJP) or a tangent of the
            scores (JVP).

        Returns
        -------
        product : ndarray of the outputs' shape
        """
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != self.shape:
            raise ValueError(
                f"The vector must have the outputs' shape {self.shape}. "
                f"Got shape {v.shape} instead."
            )
        if self._solve is None:
            return self._q(v)
        # a' Q v = sum of u * v on the box (u carries the free mask); Q v on the simplex.
        qv = self._q(v) if self.simplex else v
        rhs = np.zeros(self._dim)
        for f, idx, off in self._blocks:
            rhs[off : off + idx.size] = self._family_dot(f, qv)[idx]
        n_rows = self.active_rows.size
        if n_rows:
            rhs[self._dim - n_rows :] = self._row_vectors @ qv.ravel()
        z = self._solve @ rhs if self._single is None else self._solve_single(rhs)
        # J v = Q v - Q sum_{f,g} lambda_{f,g} a_{f,g} - sum_j eta_j Q c_j.
        out = self._q(v) if not self.simplex else qv
        if out.ndim == 1 and not self.simplex:
            for f, idx, off in self._blocks:
                lam = np.zeros(self.families[f].n_groups)
                lam[idx] = z[off : off + idx.size]
                term = self._sums[f].expand(lam, out=_scratch(self.shape[0]))
                out -= self._times_u(f, term, term)  # u = w * free: already Q-projected
        else:
            correction = np.zeros(self.shape)
            for f, idx, off in self._blocks:
                fam = self.families[f]
                lam = np.zeros(fam.n_groups)
                lam[idx] = z[off : off + idx.size]
                term = self._sums[f].expand(lam, out=_scratch(self.shape[0]))
                correction[:, fam.column] += self._times_u(f, term, term)
            out -= self._q(correction) if self.simplex else correction
        if n_rows:
            out -= (z[self._dim - n_rows :] @ self._row_vectors).reshape(self.shape)
        return out


class _GroupSums:
    """Per-group sums ``sum_{i in g} x_i`` of one family, and the inverse gather.

    ``bincount`` in general; with two groups covering every row, a float
    indicator and dot products (``einsum``: BLAS thread start-up costs more than
    the product on mid-sized batches), several times faster.
    """

    def __init__(self, fam):
        self.k = fam.n_groups
        inside = fam.codes >= 0
        self.inside = None if inside.all() else inside
        self.codes = fam.codes if self.inside is None else np.where(inside, fam.codes, 0)
        self.indicator = None
        if self.k == 2 and self.inside is None:
            self.indicator = self.codes.astype(np.float64)

    def mask(self, x):
        """``x`` with rows outside the family set to zero."""
        return np.where(self.inside, x, 0.0)

    def __call__(self, x):
        if self.indicator is not None:
            one = float(np.einsum("i,i->", self.indicator, x))  # no BLAS threads: cheap
            return np.array([float(x.sum()) - one, one])
        return np.bincount(self.codes, weights=x, minlength=self.k)

    def expand(self, values, out=None):
        """``values[g_i]`` for every row (rows outside the family get ``values[0]``)."""
        if self.indicator is not None:
            out = np.multiply(self.indicator, values[1] - values[0], out=out)
            out += values[0]
            return out
        return np.take(values, self.codes, out=out)


_SCRATCH = threading.local()


def _scratch(n):
    """A per-thread scratch row buffer of length ``n``, reused across calls.

    Fresh large temporaries cost page faults that can exceed the arithmetic of
    a pass; callers use the buffer only within one method call.
    """
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = _SCRATCH.buf = np.empty(max(n, 1024))
    return buf[:n]


def _group_present(fam):
    """Groups of a family with at least one row (in the family)."""
    codes = fam.codes
    if codes.size and codes.min() < 0:
        codes = codes[codes >= 0]
    return np.bincount(codes, minlength=fam.n_groups) > 0


def projection_vjp(problem, outputs, grad):
    """Vector-Jacobian product ``J' grad`` of the projection at its solution ``outputs``."""
    return Linearization(problem, outputs).apply(grad)


def projection_jvp(problem, outputs, tangent):
    """Jacobian-vector product ``J tangent`` (the same map: ``J`` is symmetric)."""
    return Linearization(problem, outputs).apply(tangent)
