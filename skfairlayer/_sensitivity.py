"""Closed-form sensitivities (Jacobian products) of the fairness projection.

At its solution ``P*`` the projection ``S -> P*`` is locally affine (user guide, "The
layer and its Jacobian"). When the constraints do not depend on the scores (demographic parity,
criteria with labels, custom rows with constant bounds) its Jacobian is the
orthogonal projector ``J`` onto the directions that keep every active
constraint active: outputs at a bound stay put, and on the free outputs the
component along the active parity rows is removed. ``J`` is then symmetric, so
the vector-Jacobian and Jacobian-vector products are the same map
(:meth:`Linearization.apply`).

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
``v`` onto ``{x in range(Q) : a_g' x = mu_f + r_g, C x = e}`` (``Q`` the
projector onto outputs free of the bounds and, on the simplex, with zero row
sums; ``C`` the active extra affine rows) is

    x = Q v - sum_{f,g} lambda_{f,g} Q a_{f,g} - sum_j eta_j Q c_j

where ``z = (lambda, mu, eta)`` solve a small symmetric system
``K z = [a' Q v - r; 0; c' Q v - e]`` of size
``sum_f |active groups of f| + n_families + n_active_rows``; its Gram blocks
``a' Q a`` are group-pair sums computed with one ``bincount`` per pair of
families, so a product costs ``O(n_samples * n_classes)`` time and memory.
``J v`` is ``x`` with ``r = 0, e = 0``.

Constraints that depend on the scores (plug-in criteria)
--------------------------------------------------------
Label-free equal opportunity / equalized odds weight each row by a base
posterior: raw weight ``r_i = S[i, y]`` (binary: ``s_i`` or ``1 - s_i``),
``w_i = r_i / T_g`` with ``T_g = sum_{j in g} r_j`` (families with
``plug_in_class`` set). The plug-in mean residual bounds each group mean around
the group mean of the scores (rows whose ``bounds_jacobian`` is set). The
constraints then move with ``S``; differentiating the KKT system with the
active set fixed,

    P = S - sum lambda_{f,g} a_{f,g}(S) - sum eta_j c_j   (on the free outputs)
    a_{f,g}(S)' P = t_f + kappa_{f,g},   c_j' P = b_j(S),   P_B = bounds,

gives, for a tangent ``dS``,

    dP = x(v, r, e)  with  v = dS - sum lambda_{f,g} da_{f,g},
                           r_{f,g} = -da_{f,g}' P,   e_j = db_j,

where ``da_{f,g, i} = (dr_i - w_i dT_g) / T_g`` on the rows of ``g`` (read in
the family's column), so ``da_{f,g}' P = sum_{i in g} (P_i - m_g) dr_i / T_g``.
The multipliers ``lambda`` of the solution are recovered from the residual
``S - P*`` with the same small system (``Q (S - P*)`` lies in the span of the
active rows). The map ``dS -> dP`` is no longer symmetric: with
``z = K^+ G' g`` the solve of :meth:`apply` for a gradient ``g`` and
``u = J g``, the VJP is

    (I - D)' u + R' z_lambda + E' z_eta

(``D dS = sum lambda da``, ``R dS = r``, ``E dS = e``), still a few passes
over the outputs. :meth:`Linearization.jvp` and :meth:`Linearization.vjp`
include these terms; :meth:`Linearization.apply` is the projector alone.

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
generalized Jacobian. A plug-in family whose group has no posterior mass
(every ``r_i = 0``, so the group is left out) stays left out: the derivative is
the one-sided one in directions that keep it out.

Constraints that depend on the scores in a way the problem does not declare
(a custom criterion building weights or bounds from the scores without
``plug_in_class`` / ``bounds_jacobian``) cannot be differentiated from the
problem alone: :class:`Linearization` given a ``rebuild`` function detects
this and raises ``NotImplementedError`` rather than return a wrong product.
"""

import numpy as np

__all__ = ["Linearization", "check_declared_dependence", "projection_vjp", "projection_jvp"]

#: Outputs within this distance of a bound count as held at the bound.
BOUND_ATOL = 1e-12
#: Group statistics within this distance of the band's edge count as on it
#: (the verified solution meets the parity rows to ``VERIFY_TOL = 1e-9``).
LEVEL_ATOL = 1e-9


class Linearization:
    """The local linear structure of a projection at its solution.

    Built once per solution in ``O(n_samples * n_classes)``; each product
    costs a few passes over the outputs. Binary outputs with scalar bounds
    under one family of uniform weights covering every row (demographic
    parity) take a shortcut (:class:`_DenseUniformPasses`): two passes to
    build, about three per product.

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
    rebuild : callable or None, default=None
        ``rebuild(scores) -> ProjectionProblem``: the problem the same
        criterion builds from other scores. When given, the constraints are
        checked to depend on the scores only as the problem declares
        (``plug_in_class``, ``bounds_jacobian``); ``NotImplementedError``
        otherwise.
    weight_scale : float, default=1.0
        Plug-in posteriors are read from ``offset + weight_scale * scores``
        (an affine image of the problem's scores, e.g. the shrunk simplex of
        fine-tuning) rather than from the scores themselves: their derivative
        with respect to the scores is scaled by it.

    Attributes
    ----------
    free : ndarray of bool, same shape as ``outputs``
        Outputs not held at a bound (``lower + bound_atol < P < upper -
        bound_atol``).
    active : list of ndarray of bool of shape (n_groups,)
        Per family, the groups whose statistic is on an edge of the band
        (all ``False`` when the family's gap is below its tolerance).
    active_rows : ndarray of int
        Indices of the extra affine rows that are at one of their limits.
    depends_on_scores : bool
        Whether an active constraint moves with the scores (plug-in weights or
        bounds); the Jacobian is then not symmetric and :meth:`vjp`,
        :meth:`jvp` differ from :meth:`apply`.
    """

    def __init__(
        self, problem, outputs, *, bound_atol=BOUND_ATOL, level_atol=LEVEL_ATOL, rebuild=None,
        weight_scale=1.0,
    ):
        p = np.asarray(outputs, dtype=np.float64)
        if p.shape != problem.scores.shape:
            raise ValueError(
                f"outputs must have the shape of the problem's scores {problem.scores.shape}. "
                f"Got shape {p.shape} instead."
            )
        if rebuild is not None:
            check_declared_dependence(problem, rebuild, weight_scale=weight_scale)
        self._weight_scale = float(weight_scale)
        self.shape = p.shape
        self.simplex = bool(problem.simplex)
        self.families = tuple(problem.families)
        self._fast = None
        fam = _dense_uniform_family(problem, p)
        if fam is not None:
            self._init_fast(fam, p, problem, bound_atol, level_atol)
            return
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
        self._free = free
        if self.simplex:
            n_free = free.sum(axis=1)
            self._inv_free = np.where(n_free > 0, 1.0 / np.maximum(n_free, 1), 0.0)

        # Active groups of each family, decided on P alone (see the module docstring); then,
        # per active family, u_i = w_i where row i is in the family and its output (in the
        # family's column) is free, else 0.
        self.active, self._sums, means = [], {}, {}
        for f, fam in enumerate(self.families):
            sums = _GroupSums(fam)
            col = p if p.ndim == 1 else p[:, fam.column]
            if fam.uniform and sums.inside is None and fam.totals is not None:
                m = sums(col) / fam.totals  # weights 1 / n_g: group sums over sizes
            else:
                wp = np.multiply(fam.weights, col, out=np.empty(self.shape[0]))
                m = sums(wp if sums.inside is None else sums.mask(wp))
            present = np.ones(fam.n_groups, dtype=bool)
            if np.any(m == 0.0):  # an empty group has a zero mean: check presence only then
                present = _group_present(fam)
            act = _active_groups(m, present, fam.tolerance, level_atol)
            self.active.append(act)
            if act.any():
                self._sums[f] = sums
                means[f] = m

        # Extra affine rows at one of their limits, as dense Q-projected vectors.
        self.active_rows = np.zeros(0, dtype=np.intp)
        self._row_vectors = np.zeros((0, p.size))
        self._bounds_jacobian = None
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
                jac = getattr(rows, "bounds_jacobian", None)
                if jac is not None:
                    jac = jac.tocsr()[self.active_rows]
                    if jac.nnz:
                        self._bounds_jacobian = jac

        # Active families whose weights are base posteriors (plug-in criteria).
        self._plug = [f for f in self._sums if self.families[f].plug_in_class is not None]
        self.depends_on_scores = bool(self._plug) or self._bounds_jacobian is not None
        self._plug_terms = []
        self._build_system()
        if self._plug:
            self._build_plug_in(problem.scores, p, means)

    def _init_fast(self, fam, p, problem, bound_atol, level_atol):
        """The state of the fast path (:class:`_DenseUniformPasses`): two passes."""
        fast = _DenseUniformPasses(
            fam, p, float(problem.lower) + bound_atol, float(problem.upper) - bound_atol
        )
        act = _active_groups(fam.means(p), np.ones(fam.n_groups, dtype=bool),
                             fam.tolerance, level_atol)
        fast.set_active(act)
        self._fast = fast
        self._free = None  # computed on first access (the products use the float mask)
        self.active = [act]
        self.active_rows = np.zeros(0, dtype=np.intp)
        self._row_vectors = np.zeros((0, p.size))
        self._bounds_jacobian = None
        self.depends_on_scores = False
        # The numpy passes' state, unused: _project hands every product to the fast path.
        self._sums, self._blocks, self._plug, self._plug_terms = {}, [], [], []
        self._dim, self._single, self._solve = 0, None, None

    @property
    def free(self):
        """Outputs not held at a bound (bool array of the outputs' shape)."""
        if self._free is None:
            self._free = self._fast.free()
        return self._free

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
            # One active family: a diagonal Gram c_g, solved in closed form (no pinv). With
            # plug-in weights the least-squares multiplier of a group without free outputs
            # (c_g = 0) matters: the dense solve below then; otherwise the system is regular
            # and both give the same answer.
            f, idx, _ = blocks[0]
            fam = self.families[f]
            weight = self._times_u(f, fam.weights, np.empty(self.shape[0]))  # u * w = u^2
            if self.simplex:
                weight *= 1.0 - self._inv_free
            gram = self._sums[f](weight)[idx]
            if not self.depends_on_scores or np.all(gram > 0.0):
                self._single = gram
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
                weight = self._times_u(f2, u, np.empty(self.shape[0]))
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

    def _build_plug_in(self, scores, p, means):
        """Per active plug-in family, the row coefficients of ``D`` and ``R`` (module docstring).

        ``alpha_i = lambda_{g_i} / T_{g_i}`` (``D``) and
        ``beta_i = (P_i - m_{g_i}) / T_{g_i}`` on active groups (``R``), with the
        multipliers ``lambda`` of the solution recovered from ``S - P*``.
        """
        z = self._solve_rhs(self._rhs(self._q(np.asarray(scores, dtype=np.float64) - p)))
        offsets = {f: (idx, off) for f, idx, off in self._blocks}
        self._plug_terms = []
        for f in self._plug:
            fam = self.families[f]
            if fam.totals is None:
                raise NotImplementedError(
                    f"Family {fam.name!r} has plug-in weights (plug_in_class="
                    f"{fam.plug_in_class!r}) but no totals: its derivative with respect to the "
                    "scores needs the raw weight sums. Build it with group_family."
                )
            y = int(fam.plug_in_class)
            if p.ndim == 1:
                src_col, sign = None, (1.0 if y == 1 else -1.0)
            else:
                src_col, sign = y, 1.0
            sign *= self._weight_scale  # dr = sign * dS[:, src]
            idx, off = offsets[f]
            sums = self._sums[f]
            inv_total = 1.0 / np.asarray(fam.totals, dtype=np.float64)
            lam = np.zeros(fam.n_groups)
            lam[idx] = z[off : off + idx.size]
            act = self.active[f].astype(np.float64)
            inside = sums.inside
            col = p if p.ndim == 1 else p[:, fam.column]
            alpha = sums.expand(lam * inv_total)
            beta = (col - sums.expand(means[f])) * sums.expand(act * inv_total)
            if inside is not None:
                alpha = np.where(inside, alpha, 0.0)
                beta = np.where(inside, beta, 0.0)
            self._plug_terms.append((f, idx, off, src_col, sign, alpha, beta))

    def _family_dot(self, f, x):
        """``a_{f,g}' x`` for every group ``g`` of family ``f``, for ``x`` zero off the free set."""
        col = x if x.ndim == 1 else x[:, self.families[f].column]
        return self._sums[f](self._times_u(f, col, np.empty(self.shape[0])))

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
        k = self._single.size
        out = np.empty(k + 1)
        out[:k], out[k] = _single_family_multipliers(self._single, r[:k])
        return out

    def _rhs(self, qv):
        """``G' Q v``: the family dots and row dots of a Q-projected vector."""
        rhs = np.zeros(self._dim)
        for f, idx, off in self._blocks:
            rhs[off : off + idx.size] = self._family_dot(f, qv)[idx]
        n_rows = self.active_rows.size
        if n_rows:
            rhs[self._dim - n_rows :] = self._row_vectors @ qv.ravel()
        return rhs

    def _solve_rhs(self, rhs):
        return self._solve @ rhs if self._single is None else self._solve_single(rhs)

    def _assemble(self, out, z):
        """``out - sum lambda Q a - sum eta Q c`` (``out`` is ``Q v``, modified in place)."""
        if out.ndim == 1 and not self.simplex:
            for f, idx, off in self._blocks:
                lam = np.zeros(self.families[f].n_groups)
                lam[idx] = z[off : off + idx.size]
                term = self._sums[f].expand(lam, out=np.empty(self.shape[0]))
                out -= self._times_u(f, term, term)  # u = w * free: already Q-projected
        else:
            correction = np.zeros(self.shape)
            for f, idx, off in self._blocks:
                fam = self.families[f]
                lam = np.zeros(fam.n_groups)
                lam[idx] = z[off : off + idx.size]
                term = self._sums[f].expand(lam, out=np.empty(self.shape[0]))
                correction[:, fam.column] += self._times_u(f, term, term)
            out -= self._q(correction) if self.simplex else correction
        n_rows = self.active_rows.size
        if n_rows:
            out -= (z[self._dim - n_rows :] @ self._row_vectors).reshape(self.shape)
        return out

    def _check(self, vector):
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != self.shape:
            raise ValueError(
                f"The vector must have the outputs' shape {self.shape}. "
                f"Got shape {v.shape} instead."
            )
        return v

    def _project(self, v, extra=None):
        """``x`` of the module docstring for ``v`` (``r = e = 0`` unless ``extra`` is given,
        which is added to the right-hand side); returns ``(x, z)``."""
        if self._fast is not None:  # constant constraints: extra is never given
            return self._fast.project(v), None
        if self._solve is None:
            return self._q(v), None
        qv = self._q(v)
        rhs = self._rhs(qv)
        if extra is not None:
            rhs += extra
        z = self._solve_rhs(rhs)
        return self._assemble(qv, z), z

    # ------------------------------------------------------------------ products
    def apply(self, vector):
        """``J @ vector`` with the constraints held fixed (the orthogonal projector).

        This is the Jacobian of the projection when no active constraint
        depends on the scores (``depends_on_scores`` is ``False``); it is
        symmetric, so it is then the VJP and the JVP. Use :meth:`vjp` and
        :meth:`jvp` for the full derivative in every case.

        Parameters
        ----------
        vector : array-like of the outputs' shape
            A gradient with respect to the outputs (VJP) or a tangent of the
            scores (JVP).

        Returns
        -------
        product : ndarray of the outputs' shape
        """
        return self._project(self._check(vector))[0]

    def jvp(self, tangent):
        """Jacobian-vector product: first-order change of ``P*`` along ``tangent`` of the scores.

        Parameters
        ----------
        tangent : array-like of the outputs' shape
            Direction of change of the scores.

        Returns
        -------
        product : ndarray of the outputs' shape
        """
        ds = self._check(tangent)
        if not self.depends_on_scores or self._solve is None:
            return self._project(ds)[0]
        v = ds
        extra = np.zeros(self._dim)
        if self._plug:
            v = ds.copy()
            for f, idx, off, src, sign, alpha, beta in self._plug_terms:
                fam, sums = self.families[f], self._sums[f]
                dr = ds if src is None else ds[:, src]
                if sign < 0:
                    dr = -dr
                d_total = sums(dr if sums.inside is None else sums.mask(dr))
                # v -= sum_g lambda_g da_g = alpha * (dr - w dT_g), in the family's column.
                term = alpha * (dr - fam.weights * sums.expand(d_total))
                if v.ndim == 1:
                    v -= term
                else:
                    v[:, fam.column] -= term
                # r_g = -da_g' P = -sum_{i in g} beta_i dr_i; rhs = G'Qv - r.
                extra[off : off + idx.size] += sums(beta * dr)[idx]
        if self._bounds_jacobian is not None:
            extra[self._dim - self.active_rows.size :] -= self._bounds_jacobian @ ds.ravel()
        return self._project(v, extra)[0]

    def vjp(self, grad):
        """Vector-Jacobian product: the gradient ``grad`` of the outputs pulled back to the scores.

        Parameters
        ----------
        grad : array-like of the outputs' shape
            Gradient of a loss with respect to the projected outputs.

        Returns
        -------
        product : ndarray of the outputs' shape
        """
        g = self._check(grad)
        u, z = self._project(g)
        if not self.depends_on_scores or z is None:
            return u
        out = u.copy()
        for f, idx, off, src, sign, alpha, beta in self._plug_terms:
            fam, sums = self.families[f], self._sums[f]
            uc = u if u.ndim == 1 else u[:, fam.column]
            wu = fam.weights * uc
            au = sums(wu if sums.inside is None else sums.mask(wu))  # a_g' u
            lam_z = np.zeros(fam.n_groups)
            lam_z[idx] = z[off : off + idx.size]
            # -D' u + R' z_lambda, both acting through dr = sign * dS[:, src].
            back = alpha * (uc - sums.expand(au)) + beta * sums.expand(lam_z)
            if out.ndim == 1:
                out -= sign * back
            else:
                out[:, src] -= sign * back
        if self._bounds_jacobian is not None:
            eta = z[self._dim - self.active_rows.size :]
            out += (self._bounds_jacobian.T @ eta).reshape(self.shape)  # + E' z_eta
        return out


def _active_groups(means, present, tolerance, level_atol):
    """Groups on an edge of the band: all ``False`` when the gap is below the tolerance."""
    act = np.zeros(means.size, dtype=bool)
    if np.count_nonzero(present) >= 2:
        on = means if present.all() else means[present]
        hi, lo = on.max(), on.min()
        if hi - lo >= tolerance - level_atol:
            act = present & ((means >= hi - level_atol) | (means <= lo + level_atol))
    return act


def _single_family_multipliers(c, r):
    """``(lambda, mu)`` solving ``c_g lambda_g + mu = r_g``, ``sum_g lambda_g = 0``."""
    pinned = c <= 0.0  # a group without free outputs: its mean is fixed, so mu = 0
    if not pinned.any():
        inv = 1.0 / c
        mu = float(r @ inv / inv.sum())
        return (r - mu) * inv, mu
    return np.where(pinned, 0.0, r / np.where(pinned, 1.0, c)), 0.0


def _dense_uniform_family(problem, p):
    """The family of the fast path (:class:`_DenseUniformPasses`), or None.

    Binary outputs with scalar bounds, no extra rows, and one family of score-free
    weights ``1 / n_g`` covering every row.
    """
    if p.ndim != 1 or problem.simplex or problem.rows is not None or len(problem.families) != 1:
        return None
    fam = problem.families[0]
    if fam.plug_in_class is not None or not fam.dense_uniform:
        return None
    if np.ndim(problem.lower) != 0 or np.ndim(problem.upper) != 0:
        return None
    return fam if np.all(fam.totals > 0) else None


class _DenseUniformPasses:
    """Jacobian products for one dense uniform family of binary outputs.

    With every row in a group of weight ``1 / n_g``, scalar bounds and no other
    constraint, ``J v = M (v - shift_{g_i})``: ``M`` keeps the free outputs
    (``lo < P_i < hi``) and ``shift_g = lambda_g / n_g`` on the active groups
    (zero elsewhere), the multipliers of the diagonal system of
    ``Linearization._solve_single`` with ``c_g = n_gF / n_g**2`` (``n_gF`` free
    outputs in ``g``) and ``r_g = (1 / n_g) * sum_{free i in g} v_i``.

    Building keeps ``M`` as booleans and counts the free outputs per group (no
    ``n``-float array: fresh pages cost more than a pass). A product makes
    two passes, block by block, over its output: ``M v`` and its group sums
    (two groups: the total and a dot product with the ``uint8`` codes of the
    family converted per block; more: ``bincount``), then the shifts of the
    active groups, masked, subtracted.
    """

    def __init__(self, fam, p, lo, hi):
        self.codes, self.small = fam.codes, fam._small_codes  # uint8 for two groups
        self.k, self.n = fam.n_groups, p.shape[0]
        self.mask = (p > lo) & (p < hi)
        self.totals = np.asarray(fam.totals, dtype=np.float64)
        self.inv_totals = 1.0 / self.totals
        self.idx, self.counts = None, None

    def free(self):
        """The bound mask (``Linearization.free``)."""
        return self.mask

    def _blocks(self):
        step = max(1, min(self.n, 1 << 16))
        return [slice(a, min(a + step, self.n)) for a in range(0, self.n, step)]

    def set_active(self, act):
        """Fix the active groups (and count the free outputs of each group)."""
        if not act.any():
            return
        self.idx = np.flatnonzero(act)
        if self.k == 2:
            one = np.count_nonzero(self.mask & self.small.view(bool))
            self.counts = np.array([np.count_nonzero(self.mask) - one, one], dtype=np.float64)
            return
        self.counts = np.zeros(self.k)
        for sl in self._blocks():
            self.counts += np.bincount(self.codes[sl][self.mask[sl]], minlength=self.k)

    def project(self, v):
        """``J v`` for a vector of the outputs' shape (a new array)."""
        v = np.asarray(v, dtype=np.float64)
        out = np.empty(self.n)
        blocks = self._blocks()
        if self.idx is None:
            return np.multiply(v, self.mask, out=out)
        buf = np.empty(blocks[0].stop)
        sums = np.zeros(self.k)
        for sl in blocks:  # M v and its group sums
            o, f = out[sl], buf[: sl.stop - sl.start]
            np.multiply(v[sl], self.mask[sl], out=o)
            if self.k == 2:
                np.copyto(f, self.small[sl])
                one = float(np.einsum("i,i->", f, o))
                sums += (float(o.sum()) - one, one)
            else:
                sums += np.bincount(self.codes[sl], weights=o, minlength=self.k)
        idx, inv = self.idx, self.inv_totals[self.idx]
        lam, _ = _single_family_multipliers(self.counts[idx] * inv * inv, sums[idx] * inv)
        shifts = np.zeros(self.k)
        shifts[idx] = lam * inv
        for sl in blocks:  # minus M shift_g
            o, f = out[sl], buf[: sl.stop - sl.start]
            if self.k == 2:
                np.multiply(self.small[sl], shifts[1] - shifts[0], out=f)
                f += shifts[0]
            else:
                np.take(shifts, self.codes[sl], out=f, mode="clip")
            f *= self.mask[sl]
            o -= f
        return out


class _GroupSums:
    """Per-group sums ``sum_{i in g} x_i`` of one family, and the inverse gather.

    ``bincount`` and ``take``; with two groups covering every row, a float
    indicator and dot products, several times faster.
    """

    def __init__(self, fam):
        self.k = fam.n_groups
        inside = fam.codes >= 0
        self.inside = None if inside.all() else inside
        self.codes = fam.codes if self.inside is None else np.where(inside, fam.codes, 0)
        self.indicator = None
        if self.k == 2 and self.inside is None:
            # The family's shared 0/1 indicator (cached on it by the solver and verification).
            self.indicator = fam._indicator if fam.group_ids is None else None
            if self.indicator is None:
                self.indicator = self.codes.astype(np.float64)

    def mask(self, x):
        """``x`` with rows outside the family set to zero."""
        return np.where(self.inside, x, 0.0)

    def __call__(self, x):
        if self.indicator is not None:
            one = float(np.einsum("i,i->", self.indicator, x))
            return np.array([float(x.sum()) - one, one])
        return np.bincount(self.codes, weights=x, minlength=self.k)

    def expand(self, values, out=None):
        """``values[g_i]`` for every row (rows outside the family get ``values[0]``)."""
        if self.indicator is not None:
            out = np.multiply(self.indicator, values[1] - values[0], out=out)
            out += values[0]
            return out
        return np.take(values, self.codes, out=out, mode="clip")


def _group_present(fam):
    """Groups of a family with at least one row (in the family)."""
    codes = fam.codes
    if codes.size and codes.min() < 0:
        codes = codes[codes >= 0]
    return np.bincount(codes, minlength=fam.n_groups) > 0


def projection_vjp(problem, outputs, grad):
    """Vector-Jacobian product ``J' grad`` of the projection at its solution ``outputs``."""
    return Linearization(problem, outputs).vjp(grad)


def projection_jvp(problem, outputs, tangent):
    """Jacobian-vector product ``J tangent`` of the projection at its solution ``outputs``."""
    return Linearization(problem, outputs).jvp(tangent)


def _posterior_weight(scores, y):
    """Raw plug-in weight ``S[:, y]`` (binary: ``s`` for ``y = 1``, ``1 - s`` for ``y = 0``)."""
    if scores.ndim == 1:
        return scores if y == 1 else 1.0 - scores
    return scores[:, y]


def check_declared_dependence(problem, rebuild, *, step=1e-4, weight_scale=1.0):
    """Raise ``NotImplementedError`` if the constraints move with the scores undeclared.

    Rebuilds the problem at scores moved by ``step`` towards the centre of the
    bounds (a row-dependent amount; the simplex and ``[0, 1]`` are kept) and
    checks that the group codes, the weights of families without
    ``plug_in_class`` and the row matrix are unchanged, that plug-in weights
    are the normalised posteriors, and that row bounds move only by their
    ``bounds_jacobian``. Costs one problem build.

    Parameters
    ----------
    problem : ProjectionProblem
        The solved problem.
    rebuild : callable
        ``rebuild(scores) -> ProjectionProblem`` with the same criterion, groups
        and labels.
    step : float, default=1e-4
        Size of the perturbation.
    weight_scale : float, default=1.0
        Plug-in posteriors are read from an affine image of the scores with
        this slope (see :class:`Linearization`); only their normalisation is
        checked then.
    """
    s = np.asarray(problem.scores, dtype=np.float64)
    n = s.shape[0]
    factor = step * (1.0 + 0.5 * np.sin(np.arange(n) * 1.7))
    centre = 0.5 if s.ndim == 1 else 1.0 / s.shape[1]
    moved = s + (factor if s.ndim == 1 else factor[:, None]) * (centre - s)

    def fail(what):
        raise NotImplementedError(
            f"Cannot differentiate this projection: {what} with the scores, which the problem "
            "does not declare. Sensitivities cover constraints that are constant in the scores, "
            "families of posterior weights (GroupStatistics.plug_in_class, built with "
            "group_family) and row bounds affine in the scores (AffineRows.bounds_jacobian)."
        )

    try:
        other = rebuild(moved)
    except (ValueError, TypeError) as exc:
        raise NotImplementedError(
            "Cannot differentiate this projection: rebuilding its constraints from slightly "
            f"moved scores failed ({exc}), so their dependence on the scores is unknown."
        ) from exc
    if len(other.families) != len(problem.families):
        fail("the number of parity families changes")
    for fam, fam2 in zip(problem.families, other.families, strict=True):
        if not np.array_equal(fam.codes, fam2.codes) or fam.column != fam2.column:
            fail(f"the groups of family {fam.name!r} change")
        if fam.plug_in_class is None:
            if not np.allclose(fam.weights, fam2.weights, rtol=1e-12, atol=1e-15):
                fail(f"the weights of family {fam.name!r} change")
            continue
        inside = fam.codes >= 0
        totals = np.asarray(fam.totals if fam.totals is not None else [], dtype=np.float64)
        if totals.size != fam.n_groups:
            fail(f"family {fam.name!r} declares plug-in weights without totals; its weights change")
        if weight_scale != 1.0:
            sums = np.bincount(fam.codes[inside], weights=fam.weights[inside],
                               minlength=fam.n_groups)
            if not np.allclose(sums, 1.0, rtol=1e-9):
                fail(f"the weights of family {fam.name!r} are not normalised, and change")
            continue
        raw = _posterior_weight(s, int(fam.plug_in_class))
        expected = np.where(inside, raw / totals[np.where(inside, fam.codes, 0)], 0.0)
        if not np.allclose(fam.weights, expected, rtol=1e-9, atol=1e-15):
            fail(
                f"the weights of family {fam.name!r} are not the normalised posteriors of class "
                f"{fam.plug_in_class!r} it declares, and change"
            )
    rows, rows2 = problem.rows, other.rows
    if (rows is None) != (rows2 is None):
        fail("the extra affine rows appear or disappear")
    if rows is not None:
        if rows.matrix.shape != rows2.matrix.shape or abs(rows.matrix - rows2.matrix).max() > 0:
            fail(f"the matrix of {rows.name!r} changes")
        jac = getattr(rows, "bounds_jacobian", None)
        shift = np.zeros(rows.matrix.shape[0]) if jac is None else jac @ (moved - s).ravel()
        for old, new in ((rows.lower, rows2.lower), (rows.upper, rows2.upper)):
            old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
            finite = np.isfinite(old)
            if not np.array_equal(finite, np.isfinite(new)) or not np.allclose(
                new[finite], old[finite] + shift[finite], rtol=1e-9, atol=1e-12
            ):
                fail(f"the bounds of {rows.name!r} change")
