"""Closed-form sensitivities (Jacobian products) of the fairness projection.

At its solution ``P*`` the projection ``S -> P*`` is locally affine. When the
constraints do not depend on the scores (demographic parity, criteria with
labels, custom rows with constant bounds) its Jacobian is the orthogonal
projector ``J`` onto the directions that keep every active constraint active:
outputs at a bound stay put, and on the free outputs the component along the
active parity rows is removed. ``J`` is then symmetric, so the vector-Jacobian
and Jacobian-vector products are the same map (:meth:`Linearization.apply`).
Each product solves a small symmetric system, one unknown per active group,
family and extra row, built from group sums: ``O(n_samples * n_classes)``.

Label-free plug-in criteria weight rows by base posteriors, so the constraints
move with the scores: :meth:`Linearization.jvp` and :meth:`Linearization.vjp`
then add the derivative of the weights (and of row bounds declared through
``bounds_jacobian``). At degenerate points (weakly active rows, dependent rows)
the projector onto the null space of every primally active row is returned, an
element of the Clarke generalized Jacobian. Constraints that move with the
scores in a way the problem does not declare are detected
(:func:`check_declared_dependence`) and raise ``NotImplementedError``.

The derivation is in the user guide (:ref:`sensitivities`); the fast path for
one dense uniform family is in :mod:`skfairlayer._sensitivity_passes`.
"""

import numpy as np

from ._declared_dependence import check_declared_dependence
from ._sensitivity_passes import (
    _dense_uniform_family,
    _DenseUniformPasses,
    _group_present,
    _GroupSums,
    _single_family_multipliers,
)

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
        free = self._free = _free_mask(problem, p, bound_atol)
        if self.simplex:
            n_free = free.sum(axis=1)
            self._inv_free = np.where(n_free > 0, 1.0 / np.maximum(n_free, 1), 0.0)

        # Active groups of each family, decided on P alone (user guide, "Sensitivities"); then,
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

        self._init_rows(problem.rows, p, level_atol)

        # Active families whose weights are base posteriors (plug-in criteria).
        self._plug = [f for f in self._sums if self.families[f].plug_in_class is not None]
        self.depends_on_scores = bool(self._plug) or self._bounds_jacobian is not None
        self._plug_terms = []
        self._build_system()
        if self._plug:
            self._build_plug_in(problem.scores, p, means)

    def _init_rows(self, rows, p, level_atol):
        """The extra affine rows at one of their limits, as dense Q-projected vectors."""
        self.active_rows = np.zeros(0, dtype=np.intp)
        self._row_vectors = np.zeros((0, p.size))
        self._bounds_jacobian = None
        if rows is None:
            return
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
        """Per active plug-in family, the row coefficients of ``D`` and ``R`` (user guide).

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
        """``x`` of the user guide (Sensitivities) for ``v`` (``r = e = 0`` unless ``extra``
        is given, which is added to the right-hand side); returns ``(x, z)``."""
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


def _free_mask(problem, p, bound_atol):
    """Outputs not held at a bound (simplex: not at zero)."""
    if problem.simplex:
        return p > bound_atol
    lower, upper = problem.lower, problem.upper
    if np.ndim(lower) == 0 and np.ndim(upper) == 0:  # scalar bounds: no broadcast copies
        return (p > float(lower) + bound_atol) & (p < float(upper) - bound_atol)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), p.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), p.shape)
    return (p > lower + bound_atol) & (p < upper - bound_atol)


def _active_groups(means, present, tolerance, level_atol):
    """Groups on an edge of the band: all ``False`` when the gap is below the tolerance."""
    act = np.zeros(means.size, dtype=bool)
    if np.count_nonzero(present) >= 2:
        on = means if present.all() else means[present]
        hi, lo = on.max(), on.min()
        if hi - lo >= tolerance - level_atol:
            act = present & ((means >= hi - level_atol) | (means <= lo + level_atol))
    return act



def projection_vjp(problem, outputs, grad):
    """Vector-Jacobian product ``J' grad`` of the projection at its solution ``outputs``."""
    return Linearization(problem, outputs).vjp(grad)


def projection_jvp(problem, outputs, tangent):
    """Jacobian-vector product ``J tangent`` of the projection at its solution ``outputs``."""
    return Linearization(problem, outputs).jvp(tangent)
