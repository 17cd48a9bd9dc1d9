"""Multiclass outputs: simplex projection, exact demographic-parity solver, decisions, estimator."""

import itertools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier, FineTuning, project
from skfairlayer._criteria import build_problem
from skfairlayer._multiclass_decisions import affine_decisions, violation
from skfairlayer._projection import VERIFY_TOL, solve_problem
from skfairlayer._solvers._simplex import project_simplex_rows, solve_simplex, supports


def _batch(seed, n=None, K=None, k=None):
    rng = np.random.default_rng(seed)
    K = K or int(rng.integers(3, 6))
    k = k or int(rng.integers(2, 7))
    n = n or int(rng.integers(40, 250))
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(k)
    S = rng.dirichlet(np.full(K, 0.7), size=n)
    S = np.exp(np.log(S + 1e-12) + rng.normal(size=(k, K))[codes])
    S /= S.sum(axis=1, keepdims=True)
    return S, codes, k


def _cvxpy_reference(problem):
    cp = pytest.importorskip("cvxpy")
    S = problem.scores
    n, K = S.shape
    P = cp.Variable((n, K))
    cons = [P >= 0, cp.sum(P, axis=1) == 1]
    for fam in problem.families:
        t = cp.Variable()
        for g in range(fam.n_groups):
            idx = np.flatnonzero(fam.codes == g)
            m = fam.weights[idx] @ P[idx, fam.column]
            cons += [m >= t, m <= t + fam.tolerance]
    cp.Problem(cp.Minimize(cp.sum_squares(P - S)), cons).solve(solver=cp.CLARABEL)
    return np.asarray(P.value)


def test_project_simplex_rows_matches_sorting_algorithm():
    """Check the vectorised simplex projection against the sort-based algorithm."""
    rng = np.random.default_rng(0)
    V = rng.normal(size=(500, 6)) * rng.choice([0.01, 1.0, 10.0], size=(500, 1))
    P = project_simplex_rows(V)
    U = -np.sort(-V, axis=1)
    css = np.cumsum(U, axis=1) - 1
    rho = np.array([np.flatnonzero(U[i] * np.arange(1, 7) > css[i]).max() for i in range(500)])
    tau = css[np.arange(500), rho] / (rho + 1)
    assert np.allclose(P, np.maximum(V - tau[:, None], 0.0), atol=1e-12)
    assert P.min() >= 0 and np.allclose(P.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.1])
def test_exact_simplex_solver_is_optimal(seed, tolerance):
    """Check the exact solver: parity to 1e-9, rows on the simplex, optimal against cvxpy."""
    S, codes, k = _batch(seed)
    problem = build_problem("demographic_parity", S, [(codes, k)], tolerance)
    assert supports(problem)
    solution = solve_simplex(problem)
    assert solution is not None
    P = solution.outputs
    assert problem.parity_violation(P) <= 1e-12
    assert P.min() >= 0.0 and np.abs(P.sum(axis=1) - 1).max() <= 1e-12
    ref = _cvxpy_reference(problem)
    assert np.sum((P - S) ** 2) <= np.sum((ref - S) ** 2) + 1e-8
    assert np.max(np.abs(P - ref)) <= 1e-4
    # Multipliers: zero sum per column and P = proj(S - nu_g / n_g).
    sizes = np.bincount(codes, minlength=k)
    nu = np.column_stack(solution.duals)
    assert np.allclose(nu.sum(axis=0), 0.0, atol=1e-9)
    assert np.allclose(project_simplex_rows(S - (nu / sizes[:, None])[codes]), P, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_exact_and_osqp_agree(seed):
    """Check that the exact simplex solver and OSQP agree to 1e-6."""
    S, codes, k = _batch(100 + seed, n=300)
    problem = build_problem("demographic_parity", S, [(codes, k)], 0.02)
    a = solve_problem(problem, solver="exact")
    b = solve_problem(problem, solver="osqp")
    assert a.solver == "simplex" and b.solver != "simplex"
    assert np.max(np.abs(a.outputs - b.outputs)) <= 1e-6


def test_two_classes_reduce_to_the_binary_projection():
    """Check that with two columns the projection is the binary one of (s1 - s0 + 1) / 2."""
    S, codes, k = _batch(7, K=2)
    multi = project(S, codes, tolerance=0.03).proba
    binary = project((S[:, 1] - S[:, 0] + 1) / 2, codes, tolerance=0.03).proba
    assert np.allclose(multi[:, 1], binary, atol=1e-9)


@pytest.mark.parametrize("k", [2, 20, 55])
def test_many_groups_and_warm_start(k):
    """Check parity for 2 to 55 groups, and that a warm start reproduces the solution."""
    S, codes, _ = _batch(8, n=30 * k, K=4, k=k)
    problem = build_problem("demographic_parity", S, [(codes, k)], 0.02)
    first = solve_problem(problem)
    assert problem.parity_violation(first.outputs) <= VERIFY_TOL
    again = solve_simplex(problem, warm_start=first)
    assert again is not None and again.iterations <= first.iterations
    assert np.max(np.abs(again.outputs - first.outputs)) <= 1e-9


def test_large_problem_starts_from_a_subsample():
    """Check the subsample warm start on 80,000 rows: parity, agreement with OSQP."""
    S, codes, k = _batch(11, n=80_000, K=3, k=4)
    problem = build_problem("demographic_parity", S, [(codes, k)], 0.01)
    a = solve_simplex(problem)
    assert a is not None and a.iterations <= 3
    assert problem.parity_violation(a.outputs) <= 1e-12
    b = solve_problem(problem, solver="osqp")
    assert np.max(np.abs(a.outputs - b.outputs)) <= 1e-6


@pytest.mark.parametrize("criterion", ["equal_opportunity", "equalized_odds"])
def test_label_criteria_on_the_simplex(criterion):
    """Check multiclass equal opportunity / equalized odds with labels and plug-in weights."""
    S, codes, k = _batch(9, n=200, K=3, k=3)
    labels = np.argmax(S + np.random.default_rng(9).normal(scale=0.3, size=S.shape), axis=1)
    for lab in (labels, None):
        result = project(S, codes, tolerance=0.03, criterion=criterion, labels=lab)
        P = result.proba
        assert result.problem.parity_violation(P) <= VERIFY_TOL
        assert P.min() >= 0 and np.abs(P.sum(axis=1) - 1).max() <= 1e-12
        ref = _cvxpy_reference(result.problem)
        assert np.max(np.abs(P - ref)) <= 1e-4
    # With labels, equal opportunity is per-class recall parity in expectation.
    P = project(S, codes, tolerance=0.03, criterion="equal_opportunity", labels=labels).proba
    for c in range(3):
        recall = [P[(codes == g) & (labels == c), c].mean() for g in range(3)]
        assert max(recall) - min(recall) <= 0.03 + VERIFY_TOL


# --------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("seed", range(4))
def test_multiclass_decisions_meet_parity(seed):
    """Check per-class selection-rate parity of the decisions, one class per row."""
    S, codes, k = _batch(200 + seed, n=600)
    problem = build_problem("demographic_parity", S, [(codes, k)], 0.02)
    result = affine_decisions(problem)
    d = result.decisions
    assert d.dtype.kind == "i" and d.min() >= 0 and d.max() < S.shape[1]
    for c in range(S.shape[1]):
        rates = [np.mean(d[codes == g] == c) for g in range(k)]
        assert max(rates) - min(rates) <= 0.02 + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_decisions_near_integer_optimum(seed):
    """Check decisions against brute force: within one row per group and class of the optimum."""
    rng = np.random.default_rng(seed)
    S = rng.dirichlet(np.ones(3), size=7)
    codes = np.array([0, 0, 0, 1, 1, 1, 1])
    problem = build_problem("demographic_parity", S, [(codes, 2)], 0.3)
    best = max(
        S[np.arange(7), d].sum()
        for d in map(np.array, itertools.product(range(3), repeat=7))
        if violation(problem, d) <= 1e-12
    )
    d = affine_decisions(problem).decisions
    assert violation(problem, d) <= 1e-12
    # Documented bound: rounding the relaxation's counts costs at most ~1 row per group and class.
    assert S[np.arange(7), d].sum() >= best - 2 * 3 / 2


def test_multiclass_decisions_exact_parity_zero_tolerance():
    """Check that tolerance 0 gives identical class rates (a constant decision if need be)."""
    S, codes, k = _batch(300, n=60, K=3, k=2)
    problem = build_problem("demographic_parity", S, [(codes, k)], 0.0)
    d = affine_decisions(problem).decisions
    assert violation(problem, d) <= 1e-12


# --------------------------------------------------------------------------- estimator
def _data(seed=0, n=900):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    X = np.c_[rng.normal(size=(n, 3)) + 0.6 * group[:, None], group]
    y = np.array(["cat", "dog", "eel"])[np.argmax(X[:, :3] + rng.normal(size=(n, 3)), axis=1)]
    return X, y, group


def test_estimator_multiclass_probabilities_and_decisions():
    """Check predict_proba on the simplex with per-class parity, and parity decisions."""
    X, y, group = _data()
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02, sensitive_features=3, sensitive_as_feature=False)
    clf.fit(X[:600], y[:600])
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    P = clf.predict_proba(X[600:])
    assert P.shape == (300, 3) and P.min() >= 0 and np.abs(P.sum(axis=1) - 1).max() <= 1e-12
    g = group[600:]
    for c in range(3):
        means = [P[g == h, c].mean() for h in range(3)]
        assert max(means) - min(means) <= 0.02 + VERIFY_TOL
    pred = clf.predict(X[600:])
    assert set(pred) <= set(clf.classes_)
    for c in clf.classes_:
        rates = [np.mean(pred[g == h] == c) for h in range(3)]
        assert max(rates) - min(rates) <= 0.02 + 1e-12
    assert 0.0 <= clf.score(X[600:], y[600:]) <= 1.0
    # Batches of one row and the fitted rules.
    assert clf.predict_proba(X[:1]).shape == (1, 3)
    assert clf.predict(X[:1])[0] in clf.classes_
    clf.set_params(inference="fitted")
    assert np.abs(clf.predict_proba(X[600:]).sum(axis=1) - 1).max() <= 1e-12
    assert clf.predict(X[600:]).shape == (300,)
    clf.set_params(inference="batch", decision="threshold")
    assert np.array_equal(clf.predict(X[600:]), clf.classes_[np.argmax(P, axis=1)])


def test_estimator_multiclass_streams_and_fine_tunes():
    """Check that multiclass streaming serves simplex rows within its certificate
    (tests/test_streaming.py checks it in depth), and that multiclass fine-tuning runs
    (tests/test_fine_tune.py checks it in depth)."""
    X, y, _ = _data(1, n=300)
    clf = FairnessLayerClassifier(LogisticRegression(), sensitive_features=3, sensitive_as_feature=False).fit(X, y)
    P = clf.partial_predict_proba(X[:3])
    assert P.min() >= 0 and np.abs(P.sum(axis=1) - 1).max() <= 1e-15
    assert set(clf.partial_predict(X[:3])) <= set(clf.classes_) and clf.stream_report().holds
    tuned = FairnessLayerClassifier(
        LogisticRegression(), sensitive_features=3, random_state=0,
        fine_tune=FineTuning(**{"max_epochs": 2}),
    sensitive_as_feature=False, cv=None).fit(X, y)
    assert tuned.fine_tune_history_["epoch"][-1] >= 1


def test_label_criteria_decisions_print_nothing(capfd):
    """Check the decision LP's HiGHS MIP solver does not print to stdout (it does from C)."""
    rng = np.random.default_rng(3)
    n = 2000
    g = rng.integers(0, 2, n)
    X = np.c_[rng.normal(size=(n, 3)) + g[:, None], g]
    y = (X[:, 0] + rng.normal(size=n) > 0.5).astype(int)
    clf = FairnessLayerClassifier(
        LogisticRegression(), criterion="equal_opportunity", tolerance=0.05, sensitive_features=3
    )
    clf.fit(X, y).predict(X)
    captured = capfd.readouterr()
    assert captured.out == ""


@pytest.mark.parametrize("seed", [2, 5])
def test_small_group_next_to_large_ones_converges_fast(seed):
    """Check that a 10-row group next to groups of ~3e4 rows costs the simplex solver a few
    iterations (each group takes its own step n_g / 2; a uniform step took 13 and 45)."""
    rng = np.random.default_rng(seed)
    n = 100_000
    g = rng.integers(0, 3, n)
    g[1000:1010] = 3
    S = rng.dirichlet(np.full(3, 0.7), n)
    S[:, 0] += 0.6 * (g == 0) - 0.2 * (g == 1)
    S /= S.sum(axis=1, keepdims=True)
    problem = build_problem("demographic_parity", S, [(g, 4)], 0.02)
    solution = solve_simplex(problem)
    assert solution is not None and solution.iterations <= 3
    means = np.array([solution.outputs[g == c].mean(axis=0) for c in range(4)])
    assert np.ptp(means, axis=0).max() <= 0.02 + VERIFY_TOL
