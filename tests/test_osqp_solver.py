"""Tests of the general solver (OSQP start + exact active-set finish)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from skfairlayer._criteria import (
    AffineRows,
    DemographicParity,
    GroupStatistics,
    ProjectionProblem,
)
from skfairlayer._projection import VERIFY_TOL, solve_problem
from skfairlayer._quiet import quiet_stdout
from skfairlayer._solvers import Solution, _osqp
from skfairlayer._solvers._exact import solve_sorted
from skfairlayer._solvers._osqp import OSQPBackend, solve_osqp
from skfairlayer.exceptions import InfeasibleProblemError, SolverError

# --------------------------------------------------------------------------- helpers


def _codes(rng, n, k):
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    rng.shuffle(codes)
    return codes


def _weighted_family(rng, n, n_groups, tolerance, name="weighted"):
    """A family with random positive weights, some rows outside (-1)."""
    codes = rng.integers(-1, n_groups, n)
    codes[:n_groups] = np.arange(n_groups)
    w = np.where(codes >= 0, rng.random(n) + 0.1, 0.0)
    totals = np.bincount(codes[codes >= 0], weights=w[codes >= 0], minlength=n_groups)
    w = np.where(codes >= 0, w / totals[np.maximum(codes, 0)], 0.0)
    return GroupStatistics(codes, w, n_groups, tolerance, name=name)


def _binary_problem(seed, n=None, per_row_bounds=None, tolerance=None):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(k + 10, 300)) if n is None else n
    codes = _codes(rng, n, k)
    scores = np.clip(rng.beta(2, 5, n) + 0.3 * (codes == 0) - 0.1 * (codes == 1), 0, 1)
    tol = float(rng.choice([0.0, 1e-4, 0.01, 0.1])) if tolerance is None else tolerance
    lower, upper = 0.0, 1.0
    if per_row_bounds if per_row_bounds is not None else rng.random() < 0.5:
        lower, upper = rng.uniform(0, 0.2, n), rng.uniform(0.8, 1, n)
    families = DemographicParity().families(codes, k, scores, tol)
    return ProjectionProblem(scores, families, lower=lower, upper=upper)


def _multiclass_problem(seed, n=60, n_classes=3, k=3, tolerance=0.02, rows=None):
    rng = np.random.default_rng(seed)
    codes = _codes(rng, n, k)
    logits = rng.normal(size=(n, n_classes))
    logits[:, 0] += codes
    scores = np.exp(logits)
    scores /= scores.sum(axis=1, keepdims=True)
    families = DemographicParity().families(codes, k, scores, tolerance)
    return ProjectionProblem(scores, families, simplex=True, rows=rows)


def _simplex_projection(z):
    u = -np.sort(-z, axis=1)
    css = np.cumsum(u, axis=1) - 1
    rho = np.count_nonzero(u * np.arange(1, z.shape[1] + 1) > css, axis=1)
    theta = css[np.arange(z.shape[0]), rho - 1] / rho
    return np.maximum(z - theta[:, None], 0)


def _reconstruct(problem, sol):
    """``Pi(S - sum_f nu_f w_f e_{c_f} - R^T row_duals)``, the dual convention of Solution."""
    s = problem.scores
    z = np.array(s, dtype=float, copy=True)
    for fam, nu in zip(problem.families, sol.duals, strict=True):
        shift = np.where(fam.codes >= 0, nu[np.maximum(fam.codes, 0)] * fam.weights, 0.0)
        if s.ndim == 1:
            z -= shift
        else:
            z[:, fam.column] -= shift
    if problem.rows is not None:
        z -= (sp.csr_matrix(problem.rows.matrix).T @ sol.row_duals).reshape(s.shape)
    if problem.simplex:
        return _simplex_projection(z)
    return np.clip(z, problem.lower, problem.upper)


def _assert_verified(problem, sol):
    out = sol.outputs
    assert out.shape == problem.scores.shape
    assert np.all(np.isfinite(out))
    if problem.simplex:
        assert out.min() >= 0.0
        assert np.abs(out.sum(axis=1) - 1).max() <= 1e-12
    else:
        assert np.all(out >= problem.lower) and np.all(out <= problem.upper)
    for fam in problem.families:
        assert fam.gap(out) <= fam.tolerance + VERIFY_TOL
    if problem.rows is not None:
        r = problem.rows.matrix @ out.ravel()
        assert np.all(r >= problem.rows.lower - VERIFY_TOL)
        assert np.all(r <= problem.rows.upper + VERIFY_TOL)


def _cvx_reference(problem):
    """High-accuracy interior-point solution (cvxpy + Clarabel)."""
    cp = pytest.importorskip("cvxpy")
    s = problem.scores
    p = cp.Variable(s.shape)
    cons = []
    if problem.simplex:
        cons += [p >= 0, cp.sum(p, axis=1) == 1]
    else:
        cons += [p >= problem.lower, p <= problem.upper]
    for fam in problem.families:
        col = p if s.ndim == 1 else p[:, fam.column]
        t = cp.Variable()
        for g in range(fam.n_groups):
            idx = np.flatnonzero(fam.codes == g)
            mean = fam.weights[idx] @ col[idx]
            cons += [mean >= t, mean <= t + fam.tolerance]
    if problem.rows is not None:
        flat = cp.reshape(p, (s.size,), order="C") if s.ndim == 2 else p
        r = sp.csr_matrix(problem.rows.matrix) @ flat
        lo, hi = problem.rows.lower, problem.rows.upper
        cons += [r[j] >= lo[j] for j in range(len(lo)) if np.isfinite(lo[j])]
        cons += [r[j] <= hi[j] for j in range(len(hi)) if np.isfinite(hi[j])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp.Problem(cp.Minimize(0.5 * cp.sum_squares(p - s)), cons).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
        )
    return p.value


def _objective(problem, out):
    return 0.5 * float(np.sum((out - problem.scores) ** 2))


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("seed", range(30))
def test_binary_matches_exact_solver(seed):
    """Check outputs, multipliers and level agree with the exact sorted solver."""
    problem = _binary_problem(seed)
    sol = solve_osqp(problem)
    ref = solve_sorted(problem)
    _assert_verified(problem, sol)
    assert sol.solver == "osqp"
    np.testing.assert_allclose(sol.outputs, ref.outputs, atol=1e-9)
    np.testing.assert_allclose(sol.duals[0], ref.duals[0], rtol=1e-6, atol=1e-6)
    if np.any(ref.duals[0] != 0):  # the level is unique once a row is active
        np.testing.assert_allclose(sol.levels, ref.levels, atol=1e-9)
    np.testing.assert_allclose(sol.outputs, _reconstruct(problem, sol), atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_weighted_family_matches_exact_solver(seed):
    """Check a weighted family with rows outside every group against the exact solver."""
    rng = np.random.default_rng(seed)
    n = 200
    fam = _weighted_family(rng, n, 3, float(rng.choice([0.0, 0.02])))
    scores = rng.beta(2, 3, n)
    problem = ProjectionProblem(scores, (fam,))
    sol, ref = solve_osqp(problem), solve_sorted(problem)
    _assert_verified(problem, sol)
    np.testing.assert_allclose(sol.outputs, ref.outputs, atol=1e-9)
    np.testing.assert_allclose(sol.duals[0], ref.duals[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_binary_matches_cvxpy(seed):
    """Check agreement with a high-accuracy interior-point reference (cvxpy + Clarabel)."""
    problem = _binary_problem(seed, n=150)
    ref = _cvx_reference(problem)
    np.testing.assert_allclose(solve_osqp(problem).outputs, ref, atol=1e-6)


@pytest.mark.parametrize("tolerance", [0.0, 1e-6, 0.02, 0.2])
@pytest.mark.parametrize("seed", range(3))
def test_multiclass_simplex_matches_cvxpy(seed, tolerance):
    """Check one family per class column on the simplex against cvxpy."""
    problem = _multiclass_problem(seed, n_classes=3 + seed % 2, tolerance=tolerance)
    sol = solve_osqp(problem)
    _assert_verified(problem, sol)
    ref = _cvx_reference(problem)
    # Dependent rows (class columns sum to one) leave the multipliers non-unique,
    # the outputs are unique: compare them, and the objective.
    np.testing.assert_allclose(sol.outputs, ref, atol=1e-6)
    assert _objective(problem, sol.outputs) <= _objective(problem, ref) + 1e-9
    np.testing.assert_allclose(sol.outputs, _reconstruct(problem, sol), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_several_families_match_cvxpy(seed):
    """Check two families with different groups and weights on binary outputs."""
    rng = np.random.default_rng(seed)
    n = 150
    codes = _codes(rng, n, 3)
    scores = np.clip(rng.beta(2, 5, n) + 0.3 * (codes == 0), 0, 1)
    families = DemographicParity().families(codes, 3, scores, 0.01) + (
        _weighted_family(rng, n, 4, [0.0, 0.03][seed % 2]),
    )
    problem = ProjectionProblem(scores, families)
    sol = solve_osqp(problem)
    _assert_verified(problem, sol)
    np.testing.assert_allclose(sol.outputs, _cvx_reference(problem), atol=1e-6)
    np.testing.assert_allclose(sol.outputs, _reconstruct(problem, sol), atol=1e-12)


@pytest.mark.parametrize("multiclass", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_extra_rows_match_cvxpy(seed, multiclass):
    """Check extra affine rows (one-sided, two-sided) with parity against cvxpy."""
    if multiclass:
        base = _multiclass_problem(seed, n=50)
    else:
        base = _binary_problem(seed, n=120, per_row_bounds=False, tolerance=0.02)
    size, n = base.scores.size, base.scores.shape[0]
    matrix = sp.random(3, size, density=0.3, random_state=seed, format="csr")
    mean_row = np.zeros((1, size))
    mean_row[0, :: size // n] = 1.0 / n  # mean output (of class 0 if multiclass)
    matrix = sp.vstack([matrix, sp.csr_matrix(mean_row)], format="csr")
    value = matrix @ base.scores.ravel()
    lower = np.array([-np.inf, value[1] - 0.2, value[2] - 0.3, value[3] + 0.01])
    upper = np.array([value[0] - 0.1, value[1] - 0.05, np.inf, np.inf])
    problem = ProjectionProblem(
        base.scores, base.families, lower=base.lower, upper=base.upper,
        simplex=base.simplex, rows=AffineRows(matrix, lower, upper),
    )
    sol = solve_osqp(problem)
    _assert_verified(problem, sol)
    assert sol.row_duals.shape == (4,)
    np.testing.assert_allclose(sol.outputs, _cvx_reference(problem), atol=1e-6)
    np.testing.assert_allclose(sol.outputs, _reconstruct(problem, sol), atol=1e-12)
    # Sign convention: a row at its upper end has a positive multiplier.
    r = matrix @ sol.outputs.ravel()
    assert np.all(sol.row_duals[r < upper - 1e-9] <= 1e-12)
    assert np.all(sol.row_duals[r > lower + 1e-9] >= -1e-12)


def test_degenerate_instances_match_exact_solver():
    """Check ties, scores at the bounds, fixed outputs and tolerance 0 against the exact solver."""
    rng = np.random.default_rng(0)
    n, k = 120, 3
    codes = _codes(rng, n, k)
    scores = np.round(rng.beta(2, 5, n) + 0.4 * (codes == 0), 1).clip(0, 1)
    lower, upper = np.zeros(n), np.ones(n)
    fixed = np.flatnonzero(codes == 2)[:5]  # a few outputs pinned by lower == upper
    lower[fixed] = upper[fixed] = 0.3
    for tol in [0.0, 0.05]:
        problem = ProjectionProblem(
            scores, DemographicParity().families(codes, k, scores, tol), lower=lower, upper=upper
        )
        sol = solve_osqp(problem)
        _assert_verified(problem, sol)
        np.testing.assert_allclose(sol.outputs, solve_sorted(problem).outputs, atol=1e-9)


# --------------------------------------------------------------------------- guarantee


def _random_instance(seed):
    """Small random problem of one of four kinds (single/multi family, rows, simplex)."""
    rng = np.random.default_rng(seed)
    kind = seed % 4
    n, k = int(rng.integers(5, 100)), int(rng.integers(2, 5))
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(min(k, n))
    tol = float(rng.choice([0.0, 1e-6, 1e-3, 0.02, 0.2]))
    if kind == 2:
        problem = _multiclass_problem(
            seed, n=n, n_classes=int(rng.integers(2, 5)), k=k, tolerance=tol
        )
        if rng.random() < 0.5:
            scores = problem.scores
            matrix = sp.random(2, scores.size, density=0.2, random_state=seed, format="csr")
            value = matrix @ scores.ravel()
            problem = ProjectionProblem(
                scores, problem.families, simplex=True,
                rows=AffineRows(matrix, value - 0.1, value - 0.02),
            )
        return problem
    scores = np.clip(rng.beta(2, 5, n) + 0.3 * (codes == 0), 0, 1)
    if rng.random() < 0.2:
        scores = np.round(scores, 1)
    families = DemographicParity().families(codes, k, scores, tol)
    if kind == 1:
        families += (_weighted_family(rng, n, 3, float(rng.choice([0.0, 0.05]))),)
    lower, upper = 0.0, 1.0
    if rng.random() < 0.5:
        lower, upper = rng.uniform(0, 0.2, n), rng.uniform(0.8, 1, n)
    rows = None
    if kind == 3:
        matrix = sp.random(2, n, density=0.3, random_state=seed, format="csr")
        value = matrix @ scores
        rows = AffineRows(matrix, value - 0.25, value - 0.05)
    return ProjectionProblem(scores, families, lower=lower, upper=upper, rows=rows)


def test_random_instances_are_verified():
    """Check parity <= tolerance + 1e-9 and exact bounds on hundreds of random instances."""
    solved = 0
    for seed in range(300):
        problem = _random_instance(seed)
        try:
            sol = solve_osqp(problem)
        except InfeasibleProblemError:
            continue
        _assert_verified(problem, sol)
        solved += 1
    assert solved >= 250


@pytest.mark.parametrize("seed", [110, 206, 238])
def test_dependent_rows_with_tiny_tolerance(seed):
    """Check multiclass parity at tolerance 1e-6 (dependent, nearly degenerate rows)."""
    rng = np.random.default_rng(seed)
    problem = _multiclass_problem(seed, n=80, n_classes=4, k=int(rng.integers(2, 5)),
                                  tolerance=1e-6)
    sol = solve_osqp(problem)
    _assert_verified(problem, sol)
    ref = _cvx_reference(problem)
    assert _objective(problem, sol.outputs) <= _objective(problem, ref) + 1e-9


def test_solve_problem_with_osqp_is_verified():
    """Check the dispatcher's ``solver='osqp'`` path returns a verified, exact answer."""
    problem = _binary_problem(3, n=200)
    sol = solve_problem(problem, solver="osqp")
    assert sol.solver == "osqp"
    np.testing.assert_allclose(sol.outputs, solve_sorted(problem).outputs, atol=1e-9)


# --------------------------------------------------------------------------- infeasible


def test_infeasible_bounds_raise():
    """Check bounds that keep two group means apart raise InfeasibleProblemError."""
    n = 40
    codes = np.repeat([0, 1], n // 2)
    scores = np.full(n, 0.5)
    lower = np.where(codes == 0, 0.8, 0.0)
    upper = np.where(codes == 0, 1.0, 0.2)
    problem = ProjectionProblem(
        scores, DemographicParity().families(codes, 2, scores, 0.1), lower=lower, upper=upper
    )
    with pytest.raises(InfeasibleProblemError, match="impossible within the bounds"):
        solve_osqp(problem)


def test_infeasible_rows_raise():
    """Check rows that conflict with parity (each feasible alone) raise InfeasibleProblemError."""
    n = 40
    codes = np.repeat([0, 1], n // 2)
    scores = np.full(n, 0.5)
    upper = np.where(codes == 1, 0.2, 1.0)
    # Group 0's mean must exceed 0.9, group 1 cannot exceed 0.2: parity 0.1 is impossible.
    matrix = sp.csr_matrix(np.where(codes == 0, 1.0 / (n // 2), 0.0)[None, :])
    problem = ProjectionProblem(
        scores, DemographicParity().families(codes, 2, scores, 0.1), upper=upper,
        rows=AffineRows(matrix, np.array([0.9]), np.array([np.inf])),
    )
    with pytest.raises(InfeasibleProblemError, match="primal infeasibility"):
        solve_osqp(problem)


def test_negative_tolerance_raises():
    """Check a negative tolerance raises InfeasibleProblemError naming the tolerance."""
    problem = _binary_problem(0, tolerance=-0.01)
    with pytest.raises(InfeasibleProblemError, match="tolerance must be >= 0"):
        solve_osqp(problem)


# --------------------------------------------------------------------------- reuse


def _rescored(problem, seed):
    rng = np.random.default_rng(seed)
    scores = np.clip(problem.scores + rng.normal(scale=0.05, size=problem.scores.shape), 0, 1)
    return ProjectionProblem(scores, problem.families, lower=problem.lower, upper=problem.upper)


def test_backend_resolve_matches_fresh_solve():
    """Check a re-solve on a caller-owned backend equals a solve from scratch."""
    backend = OSQPBackend()
    first = _binary_problem(5, n=400, tolerance=0.01)
    assert not solve_osqp(first, backend=backend).info["reused_structure"]
    second = _rescored(first, 1)
    reused = solve_osqp(second, backend=backend)
    assert reused.info["reused_structure"]
    fresh = solve_osqp(second)
    assert not fresh.info["reused_structure"]
    np.testing.assert_allclose(reused.outputs, fresh.outputs, atol=1e-12)
    np.testing.assert_allclose(reused.duals[0], fresh.duals[0], rtol=1e-9, atol=1e-9)


def test_backend_osqp_object_is_updated_not_rebuilt(monkeypatch):
    """Check a backend reuses its OSQP solver (update + warm start) for the same structure."""
    backend = OSQPBackend()
    first = _binary_problem(6, n=300, tolerance=0.0)
    solve_osqp(first, backend=backend)
    solver = backend._solver
    assert solver is not None
    sol = solve_osqp(_rescored(first, 2), backend=backend)
    assert sol.info["path"] == ["osqp"]
    assert backend._solver is solver
    _assert_verified(_rescored(first, 2), sol)
    # Another structure replaces it.
    solve_osqp(_binary_problem(7, n=100), backend=backend)
    assert backend._solver is not solver


def test_no_state_is_kept_between_calls():
    """Check a solve without a backend or warm start never starts from an earlier call."""
    first = _binary_problem(5, n=400, tolerance=0.01)
    solve_osqp(first)
    again = solve_osqp(_rescored(first, 1))
    assert not again.info["reused_structure"]
    assert "warm" not in again.info["path"]
    assert not hasattr(_osqp, "clear_cache") and not hasattr(_osqp, "_CACHE")


def test_backend_results_do_not_depend_on_history():
    """Check the same problem gives the same answer through a used and a fresh backend."""
    problem = _multiclass_problem(2, n=70, tolerance=0.01)
    used = OSQPBackend()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        scores = rng.dirichlet(np.ones(3), 70)
        solve_osqp(ProjectionProblem(scores, problem.families, simplex=True), backend=used)
    a = solve_osqp(problem, backend=used)
    b = solve_osqp(problem, backend=OSQPBackend())
    np.testing.assert_allclose(a.outputs, b.outputs, atol=1e-12)


def test_backend_is_dropped_on_pickle_and_copy():
    """Check a used backend pickles and copies to an empty one that still solves."""
    import copy
    import pickle

    backend = OSQPBackend()
    problem = _binary_problem(6, n=300, tolerance=0.0)
    ref = solve_osqp(problem, backend=backend)
    for clone in (pickle.loads(pickle.dumps(backend)), copy.deepcopy(backend)):
        assert clone._solver is None and clone._structure is None
        sol = solve_osqp(problem, backend=clone)
        assert not sol.info["reused_structure"]
        np.testing.assert_allclose(sol.outputs, ref.outputs, atol=1e-12)


def test_backend_of_wrong_type_raises():
    """Check a backend that is not an OSQPBackend raises a clear TypeError."""
    with pytest.raises(TypeError, match="backend must be an OSQPBackend"):
        solve_osqp(_binary_problem(0, n=50), backend="osqp")


def test_warm_start_solution_is_used():
    """Check a previous Solution passed as warm_start starts the Newton finish."""
    problem = _multiclass_problem(1, n=80)
    sol = solve_osqp(problem)
    again = solve_osqp(problem, warm_start=sol)
    assert again.info["path"] == ["warm"]
    assert again.info["osqp_iter"] == 0
    np.testing.assert_allclose(again.outputs, sol.outputs, atol=1e-12)


def test_bad_warm_start_still_gives_the_projection():
    """Check multipliers far from the solution do not change the answer."""
    problem = _binary_problem(2, n=200, tolerance=0.0)
    ref = solve_sorted(problem)
    bad = Solution(problem.scores, [np.full(ref.duals[0].size, 1e3)], np.array([7.0]), "x")
    np.testing.assert_allclose(solve_osqp(problem, warm_start=bad).outputs, ref.outputs,
                               atol=1e-9)


def test_warm_start_of_wrong_shape_raises():
    """Check a warm start from a problem of another shape raises a clear error."""
    problem = _binary_problem(0, n=100)
    other = Solution(problem.scores, [np.zeros(99)], np.zeros(1), "x")
    with pytest.raises(ValueError, match="families of sizes"):
        solve_osqp(problem, warm_start=other)
    with pytest.raises(TypeError, match="warm_start must be a Solution"):
        solve_osqp(problem, warm_start={"duals": 0})


def test_subsample_start_on_larger_problem():
    """Check the subsample start (large n) gives the exact projection."""
    rng = np.random.default_rng(0)
    n, k = 60_000, 5
    codes = rng.integers(0, k, n)
    scores = np.clip(rng.beta(2, 5, n) + 0.05 * codes, 0, 1)
    problem = ProjectionProblem(scores, DemographicParity().families(codes, k, scores, 0.01))
    sol = solve_osqp(problem, subsample_above=10_000)
    assert sol.info["path"] == ["subsample-osqp"]
    ref = solve_sorted(problem)
    np.testing.assert_allclose(sol.outputs, ref.outputs, atol=1e-9)
    np.testing.assert_allclose(sol.duals[0], ref.duals[0], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- quiet


def _fail_first_finish(monkeypatch):
    """Make the first Newton finish fail, so the tight (polished) OSQP run is reached."""
    newton, calls = _osqp._newton, []

    def fail_first(st, data, y, t, max_iter):
        calls.append(1)
        return newton(st, data, y, t, 0 if len(calls) == 1 else max_iter)

    monkeypatch.setattr(_osqp, "_newton", fail_first)


def test_polished_solve_prints_nothing(capfd, monkeypatch):
    """Check OSQP's polishing message ("Polishing not needed") never reaches stdout."""
    rng = np.random.default_rng(0)
    n = 60
    codes = _codes(rng, n, 2)
    scores = rng.uniform(0.4, 0.6, n)  # wide tolerance: no active row, nothing to polish
    problem = ProjectionProblem(scores, DemographicParity().families(codes, 2, scores, 0.5))
    _fail_first_finish(monkeypatch)
    sol = solve_osqp(problem)
    assert sol.info["path"] == ["osqp", "osqp-tight"]
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("criterion", ["equalized_odds", "equal_opportunity"])
def test_general_criterion_solve_prints_nothing(capfd, criterion):
    """Check a general-criterion projection (the OSQP path) writes nothing to stdout/stderr."""
    from skfairlayer._projection import project

    rng = np.random.default_rng(1)
    n = 300
    groups = rng.integers(0, 3, n)
    labels = rng.integers(0, 2, n)
    proba = np.clip(rng.beta(2, 4, n) + 0.2 * groups * labels, 0, 1)
    for tol in (0.0, 0.01, 0.9):
        out = project(proba, groups, tolerance=tol, criterion=criterion, labels=labels,
                      solver="osqp")
        assert out.proba.shape == proba.shape
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_quiet_stdout_silences_osqp_polishing_message(capfd):
    """Check the guard around polished solves silences OSQP's C-level print."""
    osqp = pytest.importorskip("osqp")

    solver = osqp.OSQP()
    eye = sp.csc_matrix(np.eye(2))
    solver.setup(eye, -np.ones(2), eye, np.zeros(2), np.full(2, 10.0), verbose=False,
                 polishing=True)
    with quiet_stdout():
        res = solver.solve(raise_error=False)
    assert res.info.status_val == 1
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    with quiet_stdout(False):
        solver.solve(raise_error=False)  # unguarded: OSQP prints (the reason for the guard)
    assert "Polishing" in capfd.readouterr().out


# --------------------------------------------------------------------------- feasible sweep


def _sweep_instance(seed):
    """A random binary problem with tiny boxes, tiny tolerances or per-row bounds."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    big = rng.random() < 0.05
    n = int(rng.integers(5000, 30000)) if big else int(rng.integers(k, 300))
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(k)
    scores = rng.random(n)
    if rng.random() < 0.3:
        scores = np.round(scores, 1)
    tol = float(rng.choice([0.0, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3, 0.05]))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        lower, upper = 0.0, 1.0
    elif kind == 1:  # tiny boxes around a common value
        width = float(rng.choice([0.0, 1e-12, 1e-9, 1e-6]))
        c = rng.uniform(0, 1 - 1e-5)
        lower = c + width * rng.uniform(0, 0.5, n)
        upper = np.maximum(lower, c + width * rng.uniform(0.5, 1, n))
    elif kind == 2:  # per-row bounds, some rows pinned to tiny boxes
        lower, upper = rng.uniform(0, 0.4, n), rng.uniform(0.6, 1, n)
        tiny = rng.random(n) < 0.3
        upper = np.where(tiny, lower + float(rng.choice([0.0, 1e-9])), upper)
    else:  # scattered tiny boxes
        lower = rng.uniform(0.45, 0.55, n)
        upper = lower + float(rng.choice([1e-9, 1e-6]))
    families = DemographicParity().families(codes, k, scores, tol)
    return ProjectionProblem(scores, families, lower=lower, upper=upper)


def _check_sweep(seeds):
    """OSQP path: verified and exact on every feasible instance, InfeasibleProblemError on
    exactly the infeasible ones (the exact solver decides feasibility)."""
    feasible = 0
    for seed in seeds:
        problem = _sweep_instance(seed)
        try:
            ref = solve_sorted(problem)
        except InfeasibleProblemError:
            with pytest.raises(InfeasibleProblemError):
                solve_problem(problem, solver="osqp")
            continue
        sol = solve_problem(problem, solver="osqp")  # verified by the dispatcher too
        _assert_verified(problem, sol)
        np.testing.assert_allclose(sol.outputs, ref.outputs, atol=1e-9, err_msg=f"seed {seed}")
        feasible += 1
    return feasible


# Seeds on which the OSQP path used to raise SolverError (tiny boxes / tolerances).
_HARD_SEEDS = [211, 439, 476, 1145, 1343, 1369, 1478]


@pytest.mark.parametrize("seed", _HARD_SEEDS)
def test_hard_feasible_instances_are_solved(seed):
    """Check the instances where the active-set finish from OSQP stalled are solved exactly."""
    assert _check_sweep([seed]) == 1


def test_feasible_sweep_fast_subset():
    """Check 300 random instances of the sweep (tiny boxes, tolerances, per-row bounds)."""
    assert _check_sweep(range(300)) >= 200


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(10))
def test_feasible_sweep(chunk):
    """Check the full sweep of 3,000 instances (about a minute in all)."""
    _check_sweep(range(chunk * 300, (chunk + 1) * 300))


def test_structured_finish_is_verified(monkeypatch):
    """Check the last resort never returns outputs that fail the checks."""
    problem = _sweep_instance(476)

    def stall(st, data, y, t, max_iter):
        x = st.project(data.s, data.lb, data.ub)[0]
        return _osqp._Result(False, x, y, t, 0, "forced failure")

    monkeypatch.setattr(_osqp, "_newton", stall)
    sol = solve_osqp(problem)  # the exact outputs pass the checks as they are
    assert sol.info["path"][-1] == "structured"
    _assert_verified(problem, sol)
    monkeypatch.setattr(_osqp, "_verify", lambda *args: "forced rejection")
    with pytest.raises(SolverError, match="structured outputs: forced rejection"):
        solve_osqp(problem)


@pytest.mark.parametrize(
    ("scores", "groups", "labels", "criterion", "expected"),
    [
        ([-5.243, -1.68, -2.075, 1.297, 1.391], [0, 1, 2, 3, 3], [0, 1, 1, 1, 0],
         "equalized_odds", 0.0),
        ([0.0, 1.0, 1.0, 0.0, 0.5], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1], "mean_residual", 1.0),
    ],
)
def test_degenerate_equalities_take_osqp_outputs(scores, groups, labels, criterion, expected):
    """Check tolerance-0 label criteria whose optimum has every output at a bound: the
    active-set finish cycles on the dependent equality rows (SolverError before); the
    outputs of OSQP's multipliers pass the checks and are returned (the torch layer's
    exact cell solver gives the same)."""
    from skfairlayer import project

    res = project(np.array(scores), np.array(groups), tolerance=0.0, criterion=criterion,
                  labels=np.array(labels))
    np.testing.assert_array_equal(res.proba, np.full(len(scores), expected))
    assert res.solver == "osqp" and res.gap <= VERIFY_TOL


def test_degenerate_scores_already_feasible_are_their_own_projection(well_separated_classes):
    """Check a fit whose label-free mean residual problem (tolerance 0, marginal groups,
    the near-vertex probabilities of a well-separated base) makes the active-set finish
    cycle and OSQP's multipliers give outputs off the rows: the scores meet every row
    already (each group's class means are their own) and are returned; the fit raised
    SolverError before."""
    from sklearn.linear_model import LogisticRegression

    from skfairlayer import FairnessLayerClassifier

    rng, X, g, y = well_separated_classes(5)
    Xg = np.c_[X, g, rng.integers(0, 2, g.size)][:300]
    clf = FairnessLayerClassifier(LogisticRegression(C=100.0), tolerance=0.0,
                                  sensitive_features=[2, 3], criterion="mean_residual",
                                  groups="marginal", cv=None).fit(Xg, y[:300])
    assert clf.fit_gap_ <= VERIFY_TOL
