"""Tests of the functional projection API and its guarantee."""

import numpy as np
import pytest

from skfairlayer import InfeasibleProblemError, ProjectionResult, SolverError, project
from skfairlayer._criteria import DemographicParity, ProjectionProblem, build_problem
from skfairlayer._projection import VERIFY_TOL, solve_problem


def _instance(seed, n=300, k=3):
    rng = np.random.default_rng(seed)
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    scores = np.clip(rng.beta(2, 5, n) + 0.3 * (codes == 0), 0, 1)
    return scores, codes


def _group_means(p, codes):
    return np.array([p[codes == g].mean() for g in np.unique(codes)])


def _objective(p, s):
    return 0.5 * np.sum((p - s) ** 2)


@pytest.mark.parametrize("seed", range(40))
def test_projection_is_feasible_and_optimal(seed):
    """Check parity, bounds and optimality (KKT + no better feasible point) on random instances."""
    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(2, 6))
    tol = float(rng.choice([0.0, 1e-4, 0.01, 0.1]))
    s, codes = _instance(seed, n=int(rng.integers(k, 400)), k=k)
    res = project(s, codes, tolerance=tol)
    p = res.proba
    m = _group_means(p, codes)
    assert m.max() - m.min() <= tol + VERIFY_TOL
    assert p.min() >= 0 and p.max() <= 1
    # KKT: p = clip(s - shift_g), shifts sum to zero when weighted by group sizes.
    shift = res.shifts[0]
    np.testing.assert_allclose(p, np.clip(s - shift[codes], 0, 1), atol=1e-12)
    np.testing.assert_allclose(res.duals[0].sum(), 0.0, atol=1e-8)
    # No feasible perturbation improves the objective: compare with random feasible points
    # obtained by projecting perturbed scores.
    base = _objective(p, s)
    for _ in range(5):
        q = project(np.clip(s + rng.normal(scale=0.05, size=s.size), 0, 1), codes,
                    tolerance=tol).proba
        assert _objective(q, s) >= base - 1e-9


def test_matches_cvxpy_reference():
    """Check agreement with a high-accuracy interior-point reference (cvxpy + Clarabel)."""
    cp = pytest.importorskip("cvxpy")
    for seed in range(5):
        s, codes = _instance(seed, n=200, k=3)
        tol = 0.02
        p = cp.Variable(s.size)
        t = cp.Variable()
        cons = [p >= 0, p <= 1]
        for g in range(3):
            mask = codes == g
            mean = cp.sum(p[mask]) / mask.sum()
            cons += [mean >= t, mean <= t + tol]
        cp.Problem(cp.Minimize(cp.sum_squares(p - s)), cons).solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
        )
        np.testing.assert_allclose(project(s, codes, tolerance=tol).proba, p.value, atol=1e-6)


def test_already_fair_scores_are_unchanged():
    """Check that scores meeting parity come back unchanged (idempotence)."""
    s, codes = _instance(3)
    first = project(s, codes, tolerance=0.01).proba
    again = project(first, codes, tolerance=0.01).proba
    np.testing.assert_allclose(again, first, atol=1e-12)


def test_single_group_is_unchanged():
    """Check that a batch of one group is returned as is (clipped to the bounds)."""
    s = np.array([0.2, 0.5, 0.9])
    res = project(s, ["a", "a", "a"], tolerance=0.0)
    np.testing.assert_array_equal(res.proba, s)
    assert res.gap == 0.0


def test_zero_tolerance_equalises_means():
    """Check that tolerance=0 makes all group means equal."""
    s, codes = _instance(5, k=4)
    m = _group_means(project(s, codes, tolerance=0.0).proba, codes)
    assert np.ptp(m) <= VERIFY_TOL


def test_groups_of_any_type():
    """Check strings, floats, booleans, pandas categoricals and two columns as groups."""
    pd = pytest.importorskip("pandas")
    s, codes = _instance(6, k=2)
    ref = project(s, codes, tolerance=0.01).proba
    for groups in (
        np.array(["x", "y"])[codes],
        codes.astype(float),
        codes.astype(bool),
        pd.Series(pd.Categorical(np.array(["x", "y"])[codes])),
        pd.DataFrame({"a": codes}),
    ):
        np.testing.assert_allclose(project(s, groups, tolerance=0.01).proba, ref)
    two = np.c_[codes, np.zeros_like(codes)]
    np.testing.assert_allclose(project(s, two, tolerance=0.01).proba, ref)


def test_active_set_reports_bounds_and_band_edges():
    """Check that the active set names clamped outputs and the groups at the band's edges."""
    s = np.array([1.0, 0.9, 0.0, 0.05, 0.1, 0.2])
    codes = np.array([0, 0, 0, 1, 1, 1])
    res = project(s, codes, tolerance=0.1)
    at_bound, active = res.active_set()
    # Group 0 moves down: its row at 0 stays clamped, its row at 1 comes free; group 1 moves up.
    assert list(at_bound) == [False, False, True, False, False, False]
    assert list(active[0]) == [1, -1]
    assert isinstance(res, ProjectionResult)
    assert "gap" in repr(res)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"proba": [0.1, np.nan], "sensitive_features": [0, 1]}, ValueError, "NaN"),
        ({"proba": [0.1, np.inf], "sensitive_features": [0, 1]}, ValueError, "infinity"),
        ({"proba": [], "sensitive_features": []}, ValueError, "empty"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0]}, ValueError, "rows"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0, None]}, ValueError, "missing"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0, 1], "tolerance": -1}, ValueError,
         "tolerance"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0, 1], "tolerance": "x"}, TypeError,
         "tolerance"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0, 1], "solver": "cvx"}, ValueError,
         "solver"),
        ({"proba": [0.1, 0.2], "sensitive_features": [0, 1], "criterion": "nope"}, ValueError,
         "criterion"),
        ({"proba": np.zeros((2, 2, 2)), "sensitive_features": [0, 1]}, ValueError, "shape"),
        ({"proba": [0.1, 0.9], "sensitive_features": [0, 1], "tolerance": 0.0,
          "bounds": ([0.0, 0.8], [0.1, 1.0])}, InfeasibleProblemError, "impossible"),
        ({"proba": [0.1, 0.9], "sensitive_features": [0, 1], "bounds": (1.0, 0.0)}, ValueError,
         "lower <= upper"),
        ({"proba": [0.1, 0.9], "sensitive_features": [0, 1], "bounds": (np.nan, 1.0)},
         ValueError, "NaN"),
        ({"proba": [0.1, 0.9], "sensitive_features": [0, 1], "bounds": (0.0,)}, ValueError,
         "pair"),
        ({"proba": [0.1, 0.9], "sensitive_features": [0, 1], "criterion": "mean_residual",
          "labels": [0.5, np.inf], "bounds": (None, None)}, ValueError, "finite real targets"),
    ],
)
def test_bad_input(kwargs, err, match):
    """Check that bad input to project raises a clear error."""
    with pytest.raises(err, match=match):
        project(**kwargs)


def _break_solvers(monkeypatch, change, general=True):
    """Make the exact solver's answers (and the general solver's, its fallback) ``change(sol)``."""
    from skfairlayer._solvers import _exact, _osqp

    for module, name in [(_exact, "solve_exact")] + [(_osqp, "solve_osqp")] * general:
        real = getattr(module, name)

        def broken(problem, warm_start=None, _real=real, **kwargs):
            sol = _real(problem, warm_start=warm_start, **kwargs)
            sol.outputs = change(problem, sol)
            return sol

        monkeypatch.setattr(module, name, broken)


def test_unverified_answer_raises(monkeypatch):
    """Check that a solver answer violating parity is never returned: the exact path's
    falls back to the general solver (verified), and raises when that one fails too."""
    s, codes = _instance(7)
    _break_solvers(monkeypatch, lambda problem, sol: problem.scores.copy(), general=False)
    res = project(s, codes, tolerance=0.0)  # unprojected exact answer: the general solver's
    assert res.solver == "osqp" and res.gap <= VERIFY_TOL
    _break_solvers(monkeypatch, lambda problem, sol: problem.scores.copy())
    with pytest.raises(SolverError, match="violate"):
        project(s, codes, tolerance=0.0)


def test_out_of_bounds_answer_raises(monkeypatch):
    """Check that an answer outside the bounds is never returned."""
    s, codes = _instance(8)
    s[0] = 1.0
    _break_solvers(monkeypatch, lambda problem, sol: sol.outputs + 1e-13)
    with pytest.raises(SolverError, match="bounds"):
        project(s, codes, tolerance=0.5)


def test_exact_solver_rejects_unsupported_problem():
    """Check that solver='exact' on a problem without exact structure names the alternative."""
    s = np.random.default_rng(0).random(10)
    codes = np.arange(10) % 2
    # Two families over binary outputs (marginal parity of two attributes): no exact path.
    fams = DemographicParity().families(codes, 2, s, 0.1) + DemographicParity().families(
        np.arange(10) // 5, 2, s, 0.1
    )
    problem = ProjectionProblem(s, fams)
    with pytest.raises(ValueError, match="osqp"):
        solve_problem(problem, solver="exact")


def test_hand_built_family_with_outside_rows_is_verified_correctly():
    """Check that a uniform family whose rows are not all in a group is measured by its weights."""
    from skfairlayer._criteria import GroupStatistics

    codes = np.array([0, 0, 1, 1, -1, -1])
    weights = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.0])
    fam = GroupStatistics(codes, weights, 2, 0.1, uniform=True, totals=np.array([2.0, 2.0]))
    outputs = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    assert not fam.dense_uniform
    np.testing.assert_allclose(fam.means(outputs), [1.0, 0.0])


def _verification_problem(simplex=False):
    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1], 50)
    scores = rng.dirichlet(np.ones(3), 100) if simplex else rng.random(100)
    problem = build_problem("demographic_parity", scores, [(codes, 2)], 0.01)
    return problem, solve_problem(problem)


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda p: p.__setitem__(3, np.nan), "non-finite"),
        (lambda p: p.__setitem__(5, np.inf), "non-finite"),
        (lambda p: p.__setitem__(7, -1e-9), "outside the bounds"),
        (lambda p: p.__setitem__(slice(0, 50), 0.0), "violate the parity"),
    ],
)
def test_verification_rejects_a_corrupted_answer(simplex, corrupt, match):
    """Check that verification raises SolverError on NaN/inf, bound and parity violations."""
    from skfairlayer._projection import _verify

    problem, solution = _verification_problem(simplex)
    _verify(problem, solution)  # the genuine answer passes
    out = solution.outputs
    view = out.reshape(-1) if simplex else out
    if simplex and match == "outside the bounds":
        view[7] = -1e-6  # the simplex allows 1e-12 of rounding
    elif simplex and match == "violate the parity":
        out[:50] = [0.0, 0.0, 1.0]  # still on the simplex, far from parity on column 0
    else:
        corrupt(view)
    with pytest.raises(SolverError, match=match):
        _verify(problem, solution)


@pytest.mark.parametrize("bound", [10.0, 1e3, 1e6, 1e12])
def test_far_bounds_keep_full_precision(bound):
    """Check inactive far bounds give the same optimum as near ones: the gap at the tolerance.

    The breakpoints of a far bound used to cost relative precision (a gap 3e-8 short of
    the tolerance with bounds of 1e6: suboptimal, though feasible).
    """
    rng = np.random.default_rng(0)
    n = 2000
    g = rng.integers(0, 2, n)
    s = rng.normal(0, 1, n) + 0.5 * g
    near = project(s, g, tolerance=0.05, bounds=(-10.0, 10.0))
    far = project(s, g, tolerance=0.05, bounds=(-bound, bound))
    assert abs(far.gap - 0.05) <= 1e-11
    np.testing.assert_allclose(far.proba, near.proba, atol=1e-11)


@pytest.mark.parametrize("solver", ["auto", "exact"])
def test_group_of_near_zero_weight_falls_back_to_the_general_solver(solver):
    """Check label-free equal opportunity where one group's plug-in weight (its scores'
    sum) is about 1e-21 (a well-separated base): the breakpoint sweep's answer failed the
    verification (SolverError); the general solver now answers, and the weighted parity
    holds."""
    rng = np.random.default_rng(0)
    s = np.r_[10.0 ** -rng.uniform(21, 36, 59), 1 - 10.0 ** -rng.uniform(3, 17, 82),
              np.where(rng.random(79) < 0.85, 1 - 10.0 ** -rng.uniform(0, 16, 79),
                       10.0 ** -rng.uniform(1, 4, 79)),
              10.0 ** -rng.uniform(2, 22, 80)]
    g = np.repeat(np.arange(4), [59, 82, 79, 80])
    res = project(s, g, tolerance=0.001, criterion="equal_opportunity", solver=solver)
    assert res.solver == "osqp"
    p = res.proba
    assert p.min() >= 0.0 and p.max() <= 1.0
    means = [np.dot(s[g == j], p[g == j]) / s[g == j].sum() for j in range(4)]
    assert max(means) - min(means) <= 0.001 + VERIFY_TOL


def test_degenerate_instance_already_feasible_returns_the_scores(well_separated_classes):
    """Check label-free mean residual at tolerance 0 on the near-vertex probabilities of a
    well-separated base: its rows (each group's mean of each class, equal to the scores'
    own) are met by the scores and dependent on the simplex, which stalled the general
    solver's active-set steps (SolverError); the scores are their own projection."""
    from sklearn.linear_model import LogisticRegression

    _, X, g, y = well_separated_classes(8)
    P = LogisticRegression(C=100.0).fit(X[:300], y[:300]).predict_proba(X[:300])
    res = project(P, g[:300], tolerance=0.0, criterion="mean_residual")
    np.testing.assert_allclose(res.proba, P, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_open_bounds_are_infinite_bounds(seed):
    """A None end of ``bounds`` is an open end: the same answer as an infinite bound."""
    rng = np.random.default_rng(seed)
    scores, groups = rng.normal(0.5, 0.6, 200), rng.integers(0, 3, 200)
    for open_, inf in [((0.0, None), (0.0, np.inf)), ((None, 1.0), (-np.inf, 1.0)),
                       ((None, None), (-np.inf, np.inf))]:
        got = project(scores, groups, tolerance=0.02, bounds=open_)
        ref = project(scores, groups, tolerance=0.02, bounds=inf)
        np.testing.assert_array_equal(got.proba, ref.proba)
        assert got.gap <= 0.02 + 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_mean_residual_reads_real_targets(seed):
    """One output per row: the mean residual's labels are real targets (regression).

    Without bounds the projection moves each group's outputs by one shift, onto the
    nearest mean within ``tolerance`` of the group's target mean (closed form); with
    0/1 labels it is the binary classifier's criterion, unchanged.
    """
    rng = np.random.default_rng(seed)
    n, tol = 300, 0.1
    groups = rng.integers(0, 3, n)
    y = rng.normal(2.0 * groups, 1.0)
    scores = y + rng.normal(0.5 * (groups - 1), 0.5)
    res = project(scores, groups, tolerance=tol, criterion="mean_residual", labels=y,
                  bounds=(None, None))
    means = np.bincount(groups, scores) / np.bincount(groups)
    targets = np.bincount(groups, y) / np.bincount(groups)
    moved = means - np.clip(means, targets - tol, targets + tol)
    np.testing.assert_allclose(res.proba, scores - moved[groups], rtol=0, atol=1e-12)
    out = np.bincount(groups, res.proba) / np.bincount(groups)
    assert np.all(np.abs(out - targets) <= tol + 1e-9)
    binary = (rng.random(n) < 0.4).astype(int)
    proba = rng.random(n)
    a = project(proba, groups, tolerance=tol, criterion="mean_residual", labels=binary)
    b = project(proba, groups, tolerance=tol, criterion="mean_residual",
                labels=binary.astype(float))
    np.testing.assert_array_equal(a.proba, b.proba)
