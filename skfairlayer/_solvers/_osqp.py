"""General solver: any :class:`~skfairlayer.ProjectionProblem`, made exact.

Two ingredients. **OSQP** finds an approximate solution, hence an approximate
active set and approximate multipliers; the QP it sees keeps every row short
(:mod:`skfairlayer._solvers._osqp_backend`). An **active-set Newton finish**
(:mod:`skfairlayer._solvers._osqp_newton`) turns multipliers into the exact KKT
point, with the bounds exact by construction; it is accepted only when every
row holds to ``1e-10`` with complementary multipliers.

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

import numpy as np

from ..exceptions import InfeasibleProblemError, SolverError
from . import Solution
from ._osqp_backend import _INFEASIBLE, OSQPBackend, _osqp_solve
from ._osqp_newton import _PRIM_TOL, _newton, _Result
from ._osqp_structure import _check_family_ranges, _Data, _Structure, _structure_key

__all__ = ["OSQPBackend", "solve_osqp"]


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
        res = _subsample_attempt(problem, st, eps, info, finish)

    if res is None and st.size > subsample_above:
        # Large problem (extra rows, or the subsample start failed): the finish
        # often converges from zero multipliers in a few passes; OSQP otherwise.
        res = finish(
            np.zeros(st.C.shape[0]), np.zeros(st.n_fam), "newton-cold", min(newton_iter, 15)
        )

    duals = None
    if res is None:
        res, duals = _osqp_attempts(st, data, backend, eps, start, info, finish)
    if res is None:
        res = _structured_finish(problem, st, data, finish, failures)
    if res is None and duals is not None:
        res = _outputs_of(problem, st, data, *duals, failures)
        info["path"].append("osqp-outputs")
    if res is None:  # the scores, if they meet every constraint already (zero multipliers)
        levels = [np.min(fam.means(problem.scores), initial=0.0) for fam in problem.families]
        res = _outputs_of(problem, st, data, np.zeros(st.C.shape[0]), np.array(levels), failures)
        info["path"].append("scores")
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


def _subsample_attempt(problem, st, eps, info, finish):
    """OSQP on a stratified subsample of the rows, its multipliers mapped back and finished."""
    sub, back = _subsample(problem, per_group=max(200, 20_000 // max(st.n_fam_rows, 1)))
    if sub is None or sub.scores.shape[0] >= 0.5 * st.n:
        return None
    sub_backend = OSQPBackend()
    sub_st, _ = sub_backend.structure("subsample", lambda: _Structure(sub))
    try:
        status, y, t, iters = _osqp_solve(sub_st, _Data(sub, sub_st), sub_backend, eps=eps)
    except InfeasibleProblemError:  # e.g. a sampled group's bounds: no conclusion
        status, iters = _INFEASIBLE[0], 0
    info["osqp_iter"] += iters
    if status in _INFEASIBLE or not np.all(np.isfinite(y)):
        return None
    y = y.copy()
    y[: st.n_fam_rows] /= back
    return finish(y, t, "subsample-osqp")


def _osqp_attempts(st, data, backend, eps, start, info, finish):
    """OSQP on the whole problem, then to a tight tolerance, each finished by Newton.

    The tight run confirms a certificate of infeasibility (a loose run can
    report one on badly scaled rows) or gives a better start. Returns the finished
    result (None if neither finish passed) and the last run's multipliers ``(y, t)``.
    """
    y0, t0 = start if start is not None else (None, None)
    status, y, t, iters = _osqp_solve(st, data, backend, eps=eps, y0=y0, t0=t0)
    info["osqp_iter"] += iters
    if status in _INFEASIBLE:
        info["retries"].append("osqp: reported primal infeasibility")
    else:
        res = finish(y, t, "osqp")
        if res is not None:
            return res, (y, t)
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
    return finish(y, t, "osqp-tight"), (y, t)


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


def _outputs_of(problem, st, data, y, t, failures):
    """Last resort where the active-set finish cycles (degenerate instances: rows that
    are all equalities, outputs all at a bound): the outputs of the multipliers ``y``
    as they are (OSQP's: optimal to its tolerance; zero: the scores themselves), if
    they pass the same checks."""
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(t))):
        return None
    x, _, _ = st.project(data.s - st.CT @ y, data.lb, data.ub)
    why = _verify(problem, st, data, x)
    if why is not None:
        failures.append(f"osqp outputs: {why}")
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
