"""The OSQP side of the general solver: the caller-owned :class:`OSQPBackend` and the
sparse QP handed to OSQP (see :mod:`._osqp` for the method and the Newton finish).

The QP keeps every row short (each output appears in O(families) rows): with
``x`` the flattened outputs, one auxiliary *sum* ``z_{f,g}`` per family and
group, one level ``t_f`` per family, one value ``v_j`` per extra row and
partial sums ``b_k`` of at most ``_BLOCK`` entries,

* box rows ``lb <= x <= ub`` (simplex: ``0 <= x <= 1`` and ``sum_j x_ij = 1``),
* partial sums ``b_k - sum_{i in block k} (w_i / wbar_g) x_{i, c_f} = 0``
  (``wbar_g`` the mean weight of the group: coefficients ~1),
* ``z_{f,g} - sum_{k in g} b_k = 0`` and bands
  ``0 <= z_{f,g} - t_f / wbar_g <= tol_f / wbar_g``,
* extra rows, scaled, as ``nnz_j v_j - sum_k b_k = 0`` with bounds on ``v_j``.

The choices are measured (see :func:`_osqp_matrices`): group means as aux
variables took ~1500 ADMM iterations at n = 1e5, sums ~50; long rows made the
KKT factorization fill in quadratically.

Nothing here is module-level state: an :class:`OSQPBackend` holds the structure of the
last problem solved with it and its OSQP object, and is dropped on pickling.
"""

import threading

import numpy as np
import scipy.sparse as sp

from .._quiet import quiet_stdout

__all__ = ["OSQPBackend"]

_OSQP_INFTY = 1e30


class OSQPBackend:
    """Solver state of :func:`solve_osqp`, owned by the caller and passed in.

    Holds the structure of the last problem solved with it (row matrices,
    everything that does not depend on scores, bounds or tolerances) and its
    OSQP solver, so that a re-solve of a problem with the same structure
    updates the vectors instead of setting OSQP up again. It keeps no
    multipliers: warm starts are explicit (``warm_start`` of
    :func:`solve_osqp`). Solves sharing one backend run one at a time.

    The state is dropped on pickling and copying (an OSQP object cannot be
    pickled) and rebuilt on first use.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import DemographicParity, ProjectionProblem
    >>> from skfairlayer._solvers._osqp import OSQPBackend, solve_osqp
    >>> codes = np.array([0, 0, 0, 1, 1, 1])
    >>> backend = OSQPBackend()
    >>> for scores in (np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.4]), np.linspace(0, 1, 6)):
    ...     families = DemographicParity().families(codes, 2, scores, 0.1)
    ...     sol = solve_osqp(ProjectionProblem(scores, families), backend=backend)
    >>> sol.info["reused_structure"]
    True
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._structure = None
        self._solver = None

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def __deepcopy__(self, memo):
        return type(self)()

    def structure(self, key, build):
        """The backend's structure if its key is ``key``, else ``build()`` (kept); and
        whether it was reused."""
        with self._lock:
            if self._key == key:
                return self._structure, True
        st = build()
        with self._lock:
            self._key, self._structure, self._solver = key, st, None
        return st, False

    def solve(self, st, q, lo, hi, settings, warm=None):
        """Set up (or update) OSQP for ``st``, warm start at ``warm = (x, y)``, solve.

        Without ``warm`` the iterates start at zero, so the answer does not
        depend on earlier solves.
        """
        import osqp

        with self._lock:
            solver = self._solver if self._structure is st else None
            if solver is None:
                p, a = _osqp_matrices(st)
                solver = osqp.OSQP()
                solver.setup(p, q, a, lo, hi, verbose=False, rho=1.0, warm_starting=True,
                             **settings)
                if self._structure is st:
                    self._solver = solver
            else:
                solver.update(q=q, l=lo, u=hi)
                solver.update_settings(verbose=False, **settings)
            if warm is None:
                n_var, n_con = q.size, lo.size
                warm = (np.zeros(n_var), np.zeros(n_con))
            solver.warm_start(x=warm[0], y=warm[1])
            with quiet_stdout(settings.get("polishing", False)):
                res = solver.solve(raise_error=False)
            return int(res.info.status_val), np.array(res.x), np.array(res.y), int(res.info.iter)


# --------------------------------------------------------------------------- formulation


#: Entries per partial sum in the OSQP formulation (keeps every row short).
_BLOCK = 64


def _extra_scale(st):
    """Largest absolute coefficient and number of entries of each extra row (>= 1)."""
    if st.n_extra == 0:
        return np.ones(0), np.ones(0)
    extra = abs(st.C[st.n_fam_rows:])
    big = extra.max(axis=1).toarray().ravel()
    return np.where(big > 0, big, 1.0), np.maximum(np.diff(extra.indptr), 1).astype(np.float64)


def _definition_rows(st):
    """Rows defining the aux values, scaled to coefficients ~1, and their blocks.

    Returns the scaled matrix ``D`` (family rows divided by ``wbar``, extra rows
    by ``max|A_j|``), the block of each of its entries and the row of each block.
    """
    big, _ = _extra_scale(st)
    scale = np.concatenate([1.0 / st.wbar, 1.0 / big])
    d = sp.csr_matrix(sp.diags(scale) @ st.C)
    counts = np.diff(d.indptr)
    n_blocks = np.maximum(-(-counts // _BLOCK), 1)  # at least one block per row
    first = np.concatenate([[0], np.cumsum(n_blocks)])
    row_of_entry = np.repeat(np.arange(d.shape[0]), counts)
    rank = np.arange(d.nnz) - d.indptr[row_of_entry]
    block_of_entry = first[row_of_entry] + rank // _BLOCK
    block_row = np.repeat(np.arange(d.shape[0]), n_blocks)
    return d, block_of_entry, block_row


def _osqp_matrices(st):
    """``P`` and ``A`` of the sparse formulation; variables ``[x, z, t, v, b]``.

    ``z`` are the family sums (``z_g = m_g / wbar_g``), ``t`` the levels, ``v``
    the extra rows' values as means, ``v_j = A_j x / (max|A_j| nnz_j)``, and
    ``b`` partial sums of at most ``_BLOCK`` entries each:

    * ``b_k - sum_{i in block k} D_i x_i = 0`` (``D`` the scaled rows),
    * ``z_g - sum_{k in g} b_k = 0`` and ``nnz_j v_j - sum_{k in j} b_k = 0``,
    * bands ``0 <= z_g - t / wbar_g <= tol / wbar_g`` and bounds on ``v``.

    Why: with the family aux as *means* (``n_g m_g - sum x = 0``) ADMM needed
    ~1500 iterations at n = 1e5, with sums ~50; an extra mean row needed ~3000
    iterations at n = 1e4 unscaled or as a sum, ~50 as written. The partial
    sums keep every row short: long rows made the KKT factorization fill in
    quadratically (multiclass, n = 2e4: 2.5 s setup, 0.2 s with blocks).
    """
    n_x, g, nf, ne = st.size, st.n_fam_rows, st.n_fam, st.n_extra
    d, block_of_entry, block_row = _definition_rows(st)
    nb = block_row.size
    nv = n_x + g + nf + ne + nb
    p = sp.csc_matrix(
        (np.ones(n_x), np.arange(n_x), np.r_[np.arange(n_x + 1), np.full(nv - n_x, n_x)]),
        shape=(nv, nv),
    )
    widths = {"x": n_x, "z": g, "t": nf, "v": ne, "b": nb}

    def row_block(nrows, **parts):
        """Horizontal block over the variable groups; missing groups are zero."""
        mats = [parts.get(name, sp.csr_matrix((nrows, w))) for name, w in widths.items()]
        return sp.hstack(mats, format="csr")

    blocks = [sp.eye(n_x, nv, format="csr")]
    if st.simplex:
        ind = sp.csr_matrix(
            (np.ones(n_x), np.arange(n_x), np.arange(0, n_x + 1, st.k)), shape=(st.n, n_x)
        )
        blocks.append(row_block(st.n, x=ind))
    # top rows: (z or nnz v) - sum of the row's blocks = 0
    sum_blocks = sp.csr_matrix((-np.ones(nb), (block_row, np.arange(nb))), shape=(g + ne, nb))
    if g:
        lev = sp.csr_matrix((-1.0 / st.wbar, (np.arange(g), st.row_fam[:g])), shape=(g, nf))
        blocks.append(row_block(g, z=sp.eye(g, format="csr"), b=sum_blocks[:g]))
        blocks.append(row_block(g, z=sp.eye(g, format="csr"), t=lev))
    if ne:
        _, count = _extra_scale(st)
        blocks.append(row_block(ne, v=sp.diags(count, format="csr"), b=sum_blocks[g:]))
        blocks.append(row_block(ne, v=sp.eye(ne, format="csr")))
    block_x = sp.csr_matrix((-d.data, (block_of_entry, d.indices)), shape=(nb, n_x))
    blocks.append(row_block(nb, x=block_x, b=sp.eye(nb, format="csr")))
    st.osqp_blocks = (block_of_entry, block_row)
    return p, sp.vstack(blocks, format="csc")


def _osqp_vectors(st, data):
    if not hasattr(st, "osqp_blocks"):
        st.osqp_blocks = _definition_rows(st)[1:]
    g, ne, nb = st.n_fam_rows, st.n_extra, st.osqp_blocks[1].size
    q = np.concatenate([-data.s, np.zeros(g + st.n_fam + ne + nb)])
    if st.simplex:
        lb, ub = np.zeros(st.size), np.ones(st.size)
    else:
        lb = np.broadcast_to(data.lb, (st.size,))
        ub = np.broadcast_to(data.ub, (st.size,))
    lo, hi = [lb], [ub]
    if st.simplex:
        lo.append(np.ones(st.n))
        hi.append(np.ones(st.n))
    if g:
        lo += [np.zeros(g), np.zeros(g)]
        hi += [np.zeros(g), data.row_hi[:g] / st.wbar]
    if ne:
        big, count = _extra_scale(st)
        lo += [np.zeros(ne), data.row_lo[g:] / (big * count)]
        hi += [np.zeros(ne), data.row_hi[g:] / (big * count)]
    lo.append(np.zeros(nb))
    hi.append(np.zeros(nb))
    lo = np.clip(np.concatenate(lo), -_OSQP_INFTY, _OSQP_INFTY)
    hi = np.clip(np.concatenate(hi), -_OSQP_INFTY, _OSQP_INFTY)
    return q, lo, hi


def _osqp_warm_point(st, data, y, t):
    """OSQP primal-dual point matching multipliers ``(y, t)`` of our formulation."""
    g = st.n_fam_rows
    z = data.s - st.CT @ y
    x, _, aux = st.project(z, data.lb, data.ub)
    big, count = _extra_scale(st)
    d, block_of_entry, block_row = _definition_rows(st)
    partial = np.bincount(
        block_of_entry, weights=d.data * x[d.indices], minlength=block_row.size
    )
    values = st.C @ x
    xv = np.concatenate([x, values[:g] / st.wbar, t, values[g:] / (big * count), partial])
    if st.simplex:
        theta = aux[1]
        parts = [z - np.repeat(theta, st.k) - x, theta]
    else:
        parts = [z - x]
    # multipliers of the top rows (the blocks share their row's)
    top = np.concatenate([-y[:g] * st.wbar, -y[g:] * big])
    parts += [top[:g], -top[:g], top[g:], -top[g:] * count, top[block_row]]
    return xv, np.concatenate(parts)


def _osqp_solve(
    st, data, backend, *, eps, y0=None, t0=None, polishing=False, max_iter=20000,
    eps_prim_inf=1e-6,
):
    """Run OSQP (through ``backend``) on ``st``; return (status_val, y, t, iterations)."""
    settings = {
        "eps_abs": eps, "eps_rel": eps, "max_iter": max_iter, "polishing": polishing,
        "polish_refine_iter": 10, "eps_prim_inf": eps_prim_inf,
    }
    q, lo, hi = _osqp_vectors(st, data)
    warm = None if y0 is None else _osqp_warm_point(st, data, y0, t0)
    status, rx, ry, iters = backend.solve(st, q, lo, hi, settings, warm)
    g, ne, nx = st.n_fam_rows, st.n_extra, st.size
    off = nx + (st.n if st.simplex else 0)
    y = np.concatenate([
        -ry[off: off + g] / st.wbar,
        -ry[off + 2 * g: off + 2 * g + ne] / _extra_scale(st)[0],
    ])
    t = rx[nx + g: nx + g + st.n_fam]
    return status, y, t, iters


_INFEASIBLE = (3, 4)  # OSQP_PRIMAL_INFEASIBLE(_INACCURATE)
