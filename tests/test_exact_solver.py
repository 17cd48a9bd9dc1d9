"""Tests of the exact single-family solver: agreement with the sorted reference, KKT, speed paths."""

import doctest

import numpy as np
import pytest

from skfairlayer import project
from skfairlayer._criteria import GroupStatistics, ProjectionProblem
from skfairlayer._solvers import Solution, _exact, _reduced, _uniform
from skfairlayer._solvers._exact import GroupLayout, solve_exact, solve_sorted
from skfairlayer.exceptions import InfeasibleProblemError

TOLERANCES = [0.0, 1e-4, 0.01, 0.2]


def _uniform_path(k):
    """The ``info["path"]`` of a uniform-weight solve."""
    return "uniform-2" if k == 2 else "uniform"


KINDS = ["uniform", "beta", "binary", "ties", "shifted", "wide", "logistic"]


def _scores(rng, kind, codes, k):
    n = codes.size
    if kind == "uniform":
        return rng.random(n)
    if kind == "beta":
        return rng.beta(0.5, 0.5, n)
    if kind == "binary":  # every score at a bound
        return rng.integers(0, 2, n).astype(np.float64)
    if kind == "ties":
        return rng.integers(0, 5, n) / 4.0
    if kind == "shifted":  # groups far apart
        return np.clip(0.6 * rng.random(n) + 0.4 * codes / max(k - 1, 1), 0.0, 1.0)
    if kind == "wide":  # scores outside the bounds too
        return rng.normal(0.5, 0.6, n)
    return 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.5, n) + 0.4 * codes)))


def _problem(rng, n, k, tol, kind="uniform", *, weights="uniform", bounds="scalar",
             outside=0.0, order=None, tiny=()):
    """A random single-family problem; ``tiny`` lists sizes of extra small groups."""
    codes = rng.integers(0, k, n).astype(np.intp)
    for j, size in enumerate(tiny):  # the last groups get exactly `size` rows each
        if size > n // 4 or k - 1 - j <= 0:
            continue
        codes[codes == k - 1 - j] = 0
        codes[rng.choice(n, size, replace=False)] = k - 1 - j
    s = _scores(rng, kind, codes, k)
    if outside:
        codes[rng.random(n) < outside] = -1
    if order == "sorted":
        idx = np.argsort(s, kind="stable")
        s, codes = s[idx], codes[idx]
    elif order == "grouped":
        idx = np.argsort(codes, kind="stable")
        s, codes = s[idx], codes[idx]
    inside = codes >= 0
    if weights == "uniform":
        counts = np.bincount(codes[inside], minlength=k).astype(np.float64)
        w = np.where(inside, 1.0 / np.maximum(counts, 1)[np.maximum(codes, 0)], 0.0)
    else:  # random positive weights (a few zero), normalised per group
        w = rng.random(n) + 0.01
        w[rng.random(n) < 0.05] = 0.0
        w[~inside] = 0.0
        total = np.bincount(codes[inside], weights=w[inside], minlength=k)
        w = np.where(inside, w / np.where(total > 0, total, 1.0)[np.maximum(codes, 0)], 0.0)
    if bounds == "rows":
        lower, upper = 0.2 * rng.random(n), 1.0 - 0.2 * rng.random(n)
    else:
        lower, upper = np.asarray(0.0), np.asarray(1.0)
    fam = GroupStatistics(codes=codes, weights=w, n_groups=k, tolerance=tol,
                          uniform=weights == "uniform")
    return ProjectionProblem(s, (fam,), lower=lower, upper=upper)


def _check(problem, sol, reference=None):
    """Assert bounds, parity, the KKT conditions and (optionally) agreement with a reference."""
    fam = problem.families[0]
    s, p, nu, t = problem.scores, sol.outputs, sol.duals[0], float(sol.levels[0])
    n = s.size
    lb, ub = np.broadcast_to(problem.lower, (n,)), np.broadcast_to(problem.upper, (n,))
    assert np.all(p >= lb) and np.all(p <= ub)  # bounds exactly
    inside = fam.codes >= 0
    means = np.bincount(fam.codes[inside], weights=(fam.weights * p)[inside], minlength=fam.n_groups)
    present = np.bincount(fam.codes[inside], weights=fam.weights[inside], minlength=fam.n_groups) > 0
    if present.any():
        assert means[present].max() - means[present].min() <= fam.tolerance + 1e-9
    # KKT: one shift per group, multipliers summing to 0, signs matching the band side.
    shift = np.where(inside, nu[np.maximum(fam.codes, 0)] * fam.weights, 0.0)
    np.testing.assert_allclose(p, np.clip(s - shift, lb, ub), rtol=0, atol=1e-9)
    scale = 1.0 + np.abs(nu).sum()
    assert abs(nu.sum()) <= 1e-8 * scale
    assert np.all(nu[~present] == 0)
    top = nu > 1e-9 * scale
    bottom = nu < -1e-9 * scale
    assert np.all(np.abs(means[top] - (t + fam.tolerance)) <= 1e-9)
    assert np.all(np.abs(means[bottom] - t) <= 1e-9)
    assert np.all(means[present] >= t - 1e-9) and np.all(means[present] <= t + fam.tolerance + 1e-9)
    if reference is not None:
        np.testing.assert_allclose(p, reference.outputs, rtol=0, atol=1e-9)


def _solve_and_check(problem, **kwargs):
    ref = solve_sorted(problem)
    sol = solve_exact(problem, **kwargs)
    _check(problem, sol, ref)
    return sol


@pytest.mark.parametrize("seed", range(80))
def test_matches_sorted_on_random_small_problems(seed):
    """Check that the exact solver matches the sorted reference on small mixed problems."""
    rng = np.random.default_rng(seed)
    problem = _problem(
        rng,
        n=int(rng.choice([1, 2, 3, 7, 50, 300, 2000])),
        k=int(rng.integers(2, 11)),
        tol=float(rng.choice(TOLERANCES)),
        kind=str(rng.choice(KINDS)),
        weights=str(rng.choice(["uniform", "random"])),
        bounds=str(rng.choice(["scalar", "scalar", "rows"])),
        outside=float(rng.choice([0.0, 0.0, 0.1])),
        order=rng.choice([None, "sorted", "grouped"]),
    )
    _solve_and_check(problem)


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("order", [None, "sorted", "grouped"])
@pytest.mark.parametrize("kind", ["logistic", "binary", "ties", "shifted"])
def test_fast_paths_match_sorted(k, order, kind):
    """Check that the uniform-weight passes (two groups and many) match the sorted reference."""
    rng = np.random.default_rng(1000 * k + 7 * len(kind) + (order == "sorted"))
    tol = float(rng.choice(TOLERANCES))
    problem = _problem(rng, 20000, k, tol, kind, order=order)
    sol = _solve_and_check(problem)
    assert sol.info["path"] == _uniform_path(k)


@pytest.mark.parametrize("tol", TOLERANCES)
def test_groups_of_one_row_are_kept_whole(tol):
    """Check that groups too small to sample (one row, five rows) are solved exactly."""
    rng = np.random.default_rng(3)
    problem = _problem(rng, 20000, 4, tol, "logistic", tiny=(1, 5))
    sol = _solve_and_check(problem)
    assert sol.info["path"] == _uniform_path(4)


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("tol", [0.0, 0.01])
def test_all_scores_at_the_bounds(k, tol):
    """Check that scores all at 0 or 1 (every row clamped) give the reference answer."""
    rng = np.random.default_rng(k)
    _solve_and_check(_problem(rng, 20000, k, tol, "binary"))


@pytest.mark.parametrize("tol", TOLERANCES)
def test_rows_outside_the_family_and_zero_weights(tol):
    """Check that rows with code -1 or weight 0 are clipped scores and do not move the means."""
    rng = np.random.default_rng(11)
    problem = _problem(rng, 20000, 3, tol, "logistic", weights="random", outside=0.1)
    sol = _solve_and_check(problem)
    fam = problem.families[0]
    out = (fam.codes < 0) | (fam.weights == 0)
    np.testing.assert_array_equal(sol.outputs[out], np.clip(problem.scores[out], 0.0, 1.0))


@pytest.mark.parametrize("weights", ["uniform", "random"])
def test_per_row_bounds(weights):
    """Check that per-row bounds are met exactly and the answer matches the reference."""
    rng = np.random.default_rng(5)
    _solve_and_check(_problem(rng, 20000, 3, 0.01, "wide", weights=weights, bounds="rows"))


def test_empty_group_carries_no_constraint():
    """Check that a group without rows gets multiplier 0 and does not constrain the others."""
    rng = np.random.default_rng(2)
    codes = rng.choice([0, 2], 500).astype(np.intp)
    counts = np.bincount(codes, minlength=3).astype(np.float64)
    w = 1.0 / counts[codes]
    fam = GroupStatistics(codes=codes, weights=w, n_groups=3, tolerance=0.01, uniform=True)
    problem = ProjectionProblem(rng.random(500) * 0.5 + 0.5 * (codes == 2), (fam,))
    sol = _solve_and_check(problem)
    assert sol.duals[0][1] == 0.0


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_group_totals_are_used_only_when_they_are_the_sizes(scale):
    """Check that family totals are trusted as group sizes only when the weights confirm it."""
    rng = np.random.default_rng(17)
    problem = _problem(rng, 20000, 3, 0.01, "logistic", tiny=(1,))
    fam = problem.families[0]
    totals = scale * np.bincount(fam.codes, minlength=3).astype(np.float64)
    fam = GroupStatistics(codes=fam.codes, weights=fam.weights, n_groups=3, tolerance=0.01,
                          uniform=True, totals=totals)
    problem = ProjectionProblem(problem.scores, (fam,), lower=problem.lower, upper=problem.upper)
    _solve_and_check(problem)


def test_infeasible_problems_raise():
    """Check that a negative tolerance and unreachable bounds raise InfeasibleProblemError."""
    rng = np.random.default_rng(0)
    problem = _problem(rng, 100, 2, -0.1)
    for solver in (solve_exact, solve_sorted):
        with pytest.raises(InfeasibleProblemError, match="tolerance must be >= 0"):
            solver(problem)
    codes = np.repeat([0, 1], 50).astype(np.intp)
    fam = GroupStatistics(codes=codes, weights=np.full(100, 0.02), n_groups=2, tolerance=0.1)
    lower = np.where(codes == 0, 0.8, 0.0)
    upper = np.where(codes == 0, 1.0, 0.2)
    problem = ProjectionProblem(rng.random(100), (fam,), lower=lower, upper=upper)
    for solver in (solve_exact, solve_sorted):
        with pytest.raises(InfeasibleProblemError, match="impossible within the bounds"):
            solver(problem)


def test_warm_start_from_the_previous_batch():
    """Check that a warm start from a similar batch gives the same answer as a cold solve."""
    rng = np.random.default_rng(8)
    first = solve_exact(_problem(rng, 30000, 2, 0.01, "logistic"))
    problem = _problem(rng, 30000, 2, 0.01, "logistic")
    warm = solve_exact(problem, warm_start=first)
    _check(problem, warm, solve_sorted(problem))
    assert warm.info["rounds"] >= 1
    # Multipliers alone (no recorded shifts) also work as a warm start.
    bare = Solution(first.outputs, first.duals, first.levels, solver="exact")
    _check(problem, solve_exact(problem, warm_start=bare), solve_sorted(problem))


@pytest.mark.parametrize("k", [2, 4])
def test_wrong_warm_start_is_recentred(k):
    """Check that a warm start far from the answer is re-centred and still exact."""
    rng = np.random.default_rng(9)
    problem = _problem(rng, 30000, k, 0.0, "logistic")
    bad = Solution(problem.scores, [np.zeros(k)], np.zeros(1), solver="exact",
                   info={"shifts": np.linspace(-0.3, 0.3, k), "spread": 1e-6})
    sol = solve_exact(problem, warm_start=bad)
    _check(problem, sol, solve_sorted(problem))
    assert sol.info.get("rounds", 0) >= 2 or sol.info["path"] in ("general", "sorted")


@pytest.mark.parametrize("k", [2, 5])
def test_group_layout_gives_the_same_answer(k):
    """Check that a prepared GroupLayout gives the same outputs as solving without it."""
    rng = np.random.default_rng(4)
    problem = _problem(rng, 20000, k, 0.01, "logistic")
    fam = problem.families[0]
    layout = GroupLayout(fam.codes, k)
    np.testing.assert_array_equal(layout.counts, np.bincount(fam.codes, minlength=k))
    assert (layout.indicator is not None) == (k == 2)
    sol = solve_exact(problem, layout=layout)
    _check(problem, sol, solve_sorted(problem))
    np.testing.assert_allclose(sol.outputs, solve_exact(problem).outputs, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "codes, n_groups, err, match",
    [
        (np.array([0.0, 1.0]), 2, TypeError, "1-D array of integer"),
        (np.array([[0, 1]]), 2, TypeError, "1-D array of integer"),
        (np.array([0, 3]), 2, ValueError, "codes must lie in"),
        (np.array([0, -2]), 2, ValueError, "codes must lie in"),
        (np.array([0, 1]), 0, ValueError, "n_groups must be a positive integer"),
        (np.array([0, 1]), 2.5, ValueError, "n_groups must be a positive integer"),
    ],
)
def test_group_layout_validation(codes, n_groups, err, match):
    """Check that GroupLayout rejects malformed codes and group counts."""
    with pytest.raises(err, match=match):
        GroupLayout(codes, n_groups)


def test_layout_of_other_codes_is_rejected():
    """Check that a layout built from different codes is refused."""
    rng = np.random.default_rng(1)
    problem = _problem(rng, 20000, 2, 0.01)
    other = GroupLayout(1 - problem.families[0].codes, 2)
    with pytest.raises(ValueError, match="layout must be built from the codes"):
        solve_exact(problem, layout=other)


def test_layout_with_outside_rows():
    """Check that a layout records rows outside the family and the solve stays exact."""
    rng = np.random.default_rng(6)
    problem = _problem(rng, 20000, 2, 0.01, "logistic", outside=0.05)
    layout = GroupLayout(problem.families[0].codes, 2)
    assert layout.n_outside > 0 and layout.indicator is None
    _check(problem, solve_exact(problem, layout=layout), solve_sorted(problem))


@pytest.mark.parametrize("k", [2, 3])
def test_blocked_passes(monkeypatch, k):
    """Check that the block-by-block passes used on large data give the same answer."""
    monkeypatch.setattr(_uniform, "_BLOCKED_FROM", 5000)
    monkeypatch.setattr(_uniform, "_BLOCK", 777)
    rng = np.random.default_rng(12)
    _solve_and_check(_problem(rng, 20000, k, 0.01, "logistic", order="sorted"))


def test_falls_back_to_sorted_when_nothing_certifies(monkeypatch):
    """Check that the sorted reference answers when no reduction certifies."""
    def fail(*args, **kwargs):
        return _reduced._Result(False)

    monkeypatch.setattr(_exact, "_solve_model", fail)
    monkeypatch.setattr(_uniform, "_solve_model", fail)
    rng = np.random.default_rng(13)
    problem = _problem(rng, 20000, 2, 0.01, "logistic")
    sol = solve_exact(problem)
    assert sol.info["path"] == "sorted"
    _check(problem, sol, solve_sorted(problem))


def test_shifts_reproduce_the_outputs():
    """Check that the recorded per-group shifts give the outputs by one clip."""
    rng = np.random.default_rng(14)
    problem = _problem(rng, 20000, 3, 0.01, "logistic")
    sol = solve_exact(problem)
    codes = problem.families[0].codes
    np.testing.assert_allclose(sol.outputs, np.clip(problem.scores - sol.info["shifts"][codes], 0, 1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 6])
def test_project_agrees_with_the_reference(k):
    """Check that the public project() returns the sorted reference's outputs."""
    rng = np.random.default_rng(15)
    groups = rng.integers(0, k, 30000)
    proba = 1.0 / (1.0 + np.exp(-(rng.normal(size=30000) + 0.5 * groups)))
    result = project(proba, groups, tolerance=0.02)
    ref = solve_sorted(result.problem)
    np.testing.assert_allclose(result.proba, ref.outputs, rtol=0, atol=1e-9)
    assert result.solver == "exact" and result.gap <= 0.02 + 1e-9


def test_module_docstring_examples():
    """Check that the examples in the solver modules' docstrings run."""
    for module in (_exact, _uniform):
        assert doctest.testmod(module, raise_on_error=False).failed == 0


def _cvxpy_reference(problem):
    cp = pytest.importorskip("cvxpy")
    pytest.importorskip("clarabel")
    fam = problem.families[0]
    n = problem.scores.size
    lb, ub = np.broadcast_to(problem.lower, (n,)), np.broadcast_to(problem.upper, (n,))
    p, t = cp.Variable(n), cp.Variable()
    constraints = [p >= lb, p <= ub]
    for g in range(fam.n_groups):
        idx = np.flatnonzero((fam.codes == g) & (fam.weights > 0))
        if idx.size:
            mean = fam.weights[idx] @ p[idx]
            constraints += [mean >= t, mean <= t + fam.tolerance]
    # Tight tolerances: Clarabel's defaults leave errors of order 1e-5 in the outputs.
    tight = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
    cp.Problem(cp.Minimize(cp.sum_squares(p - problem.scores)), constraints).solve(
        solver=cp.CLARABEL, max_iter=500, **tight)
    return p.value


@pytest.mark.parametrize(
    "k, tol, kind, weights, bounds",
    [
        (2, 0.01, "logistic", "uniform", "scalar"),
        (3, 0.0, "wide", "uniform", "scalar"),
        (4, 0.05, "uniform", "random", "scalar"),
        (3, 0.01, "beta", "random", "rows"),
    ],
)
def test_agrees_with_cvxpy_clarabel(k, tol, kind, weights, bounds):
    """Check that the exact solver agrees with an interior-point solve (cvxpy + Clarabel)."""
    rng = np.random.default_rng(21)
    problem = _problem(rng, 400, k, tol, kind, weights=weights, bounds=bounds)
    expected = _cvxpy_reference(problem)
    sol = solve_exact(problem)
    _check(problem, sol)
    np.testing.assert_allclose(sol.outputs, expected, rtol=0, atol=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(400))
def test_matches_sorted_long_sweep(seed):
    """Check agreement with the sorted reference over many random problems, large and small."""
    rng = np.random.default_rng(10_000 + seed)
    problem = _problem(
        rng,
        n=int(rng.choice([2, 40, 1000, 9000, 30000, 120000])),
        k=int(rng.integers(2, 11)),
        tol=float(rng.choice(TOLERANCES)),
        kind=str(rng.choice(KINDS)),
        weights=str(rng.choice(["uniform", "uniform", "random"])),
        bounds=str(rng.choice(["scalar", "scalar", "scalar", "rows"])),
        outside=float(rng.choice([0.0, 0.0, 0.0, 0.05])),
        order=rng.choice([None, "sorted", "grouped"]),
        tiny=[(), (), (1,), (1, 3)][int(rng.integers(4))],
    )
    _solve_and_check(problem)


def test_runs_without_compiled_code():
    """Check that the exact solver runs on the package's Python modules alone: every loaded
    ``skfairlayer`` module is a ``.py`` file, none of them the former compiled passes."""
    import sys

    rng = np.random.default_rng(0)
    result = project(rng.random(60000), rng.integers(0, 2, 60000), tolerance=0.01)
    assert result.solver == "exact" and result.gap <= 0.01 + 1e-9
    loaded = {name: getattr(mod, "__file__", None) for name, mod in list(sys.modules.items())
              if name == "skfairlayer" or name.startswith("skfairlayer.")}
    assert all(path is None or path.endswith(".py") for path in loaded.values()), loaded
    assert not {"skfairlayer._compiled", "skfairlayer._kernels"} & loaded.keys()


def test_show_versions_names_the_dependencies(capsys):
    """Check that show_versions prints the dependency versions."""
    from skfairlayer import show_versions

    show_versions()
    out = capsys.readouterr().out
    assert "numpy:" in out and "scikit-learn:" in out and "osqp:" in out


@pytest.mark.parametrize("k", [2, 7])
def test_uniform_family_weights_and_codes(k):
    """Check that a uniform family's weights are 1 / n_g and its cached uint8 codes (two
    groups) equal the codes."""
    from skfairlayer._criteria import build_problem

    rng = np.random.default_rng(k)
    codes = np.r_[np.arange(k), rng.integers(0, k, 5000)]
    fam = build_problem("demographic_parity", rng.random(codes.size), [(codes, k)], 0.01).families[0]
    np.testing.assert_array_equal(fam.weights, 1.0 / np.bincount(codes)[codes])
    if k == 2:
        assert fam._small_codes.dtype == np.uint8
        np.testing.assert_array_equal(fam._small_codes, codes)
    else:
        assert fam._small_codes is None


def test_estimator_and_column_scores_take_the_uniform_passes(monkeypatch):
    """Check that scores given as a column of a 2-D array (proba[:, 1], as the estimator
    projects them) run the uniform-weight passes."""
    from sklearn.linear_model import LogisticRegression

    from skfairlayer import FairnessLayerClassifier

    rng = np.random.default_rng(0)
    n = 20000
    X = rng.normal(size=(n, 3))
    g = rng.integers(0, 2, n)
    y = (X[:, 0] + 0.5 * g + rng.normal(size=n) > 0).astype(int)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.01).fit(
        X, y, sensitive_features=g)
    paths = []
    solve = _exact.solve_exact

    def spy(problem, *args, **kwargs):
        solution = solve(problem, *args, **kwargs)
        paths.append(solution.info["path"])
        return solution

    monkeypatch.setattr(_exact, "solve_exact", spy)
    clf.predict_proba(X, sensitive_features=g)
    project(clf.estimator_.predict_proba(X)[:, 1], g)
    assert paths == ["uniform-2", "uniform-2"]


def test_concurrent_solves_match_serial():
    """Check that exact solves running in several threads at once (no state shared between
    calls) give the serial answers."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    batches = []
    for j in range(8):
        n = 60000 + 1000 * j
        codes = rng.integers(0, 2 + j % 3, n)
        scores = 1.0 / (1.0 + np.exp(-(rng.normal(0, 1.5, n) + 0.4 * codes)))
        batches.append((scores, codes))
    serial = [project(s, c, tolerance=0.01).proba for s, c in batches]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda b: project(b[0], b[1], tolerance=0.01).proba, batches * 3))
    for j, out in enumerate(threaded):
        np.testing.assert_array_equal(out, serial[j % len(batches)])


@pytest.mark.parametrize("shifts", [[-0.05, 0.04], [0.02, 0.02]], ids=["apart", "equal"])
def test_output_pass_reads_group_sums_and_flags_nan(monkeypatch, shifts):
    """Check the output pass's verification read: group sums of the clipped outputs (against
    the scaled indicator, or the indicator itself when the shifts are equal), and a NaN range
    when an output is NaN (the verification then raises)."""
    monkeypatch.setattr(_uniform, "_BLOCKED_FROM", 5000)
    monkeypatch.setattr(_uniform, "_BLOCK", 4096)
    rng = np.random.default_rng(21)
    codes = rng.integers(0, 2, 20000)
    s = rng.random(20000)
    shifts = np.array(shifts)
    totals = np.bincount(codes).astype(float)
    f = _uniform._Indicator(codes.astype(np.uint8))
    out, read = _uniform._uniform_output(s, codes, f, shifts, 0.0, 1.0, totals)
    np.testing.assert_allclose(out, np.clip(s - shifts[codes], 0.0, 1.0), rtol=0, atol=1e-15)
    means = np.bincount(codes, weights=out) / totals
    assert read["range"] == (0.0, 1.0)
    assert read["gaps"][0] == pytest.approx(abs(means[1] - means[0]), abs=1e-13)
    s[123] = np.nan
    out, read = _uniform._uniform_output(s, codes, f, shifts, 0.0, 1.0, totals)
    assert np.isnan(out[123]) and all(np.isnan(read["range"]))


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("k", [3, 10])
def test_groups_far_apart_get_their_own_brackets(monkeypatch, k, blocked):
    """Check the uniform passes when the groups' shifts differ widely: each group is
    classified on its own bracket half-width (the widest lists the rows), and the answer
    matches the sorted reference."""
    if blocked:
        monkeypatch.setattr(_uniform, "_BLOCKED_FROM", 5000)
        monkeypatch.setattr(_uniform, "_BLOCK", 997)
    rng = np.random.default_rng(k)
    n = 60_000
    codes = rng.integers(0, k, n).astype(np.intp)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.5, n) + 1.0 * (codes - k / 2))))
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    fam = GroupStatistics(codes=codes, weights=(1.0 / counts)[codes], n_groups=k,
                          tolerance=0.01, uniform=True)
    problem = ProjectionProblem(scores, (fam,), lower=np.asarray(0.0), upper=np.asarray(1.0))
    sol = _solve_and_check(problem)
    assert sol.info["path"] == "uniform"
    assert np.ptp(sol.info["shifts"]) > 0.2
