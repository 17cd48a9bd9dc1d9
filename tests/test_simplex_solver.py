"""The exact multiclass solver on large data: full-data evaluations, exactness, projection."""

import numpy as np
import pytest

from skfairlayer._criteria import build_problem
from skfairlayer._projection import VERIFY_TOL, solve_problem
from skfairlayer._solvers import _simplex


def _michelot(Vt):
    """Michelot's fixed point on every column until all settle (the reference arithmetic)."""
    K = Vt.shape[0]
    tau = (Vt.sum(axis=0) - 1.0) / K
    for _ in range(K + 1):
        active = tau < Vt
        new = (np.where(active, Vt, 0.0).sum(axis=0) - 1.0) / active.sum(axis=0)
        if np.array_equal(new, tau):
            break
        tau = new
    return np.maximum(Vt - tau, 0.0)


@pytest.mark.parametrize("K", [2, 3, 5, 10])
def test_projection_matches_the_full_fixed_point(K):
    """Check the column projection (passes on the unsettled columns only) against Michelot's
    fixed point run on every column: equal to 1e-15 (relative), ties and zeros included."""
    rng = np.random.default_rng(K)
    Vt = rng.normal(size=(K, 5000)) * rng.choice([0.01, 1.0, 10.0], size=5000)
    Vt[:, :200] = 0.3  # ties
    Vt[0, 200:400] = 5.0  # one-hot rows
    Vt = np.ascontiguousarray(Vt)
    P = _simplex._project_columns(Vt)
    ref = _michelot(Vt)
    assert np.max(np.abs(P - ref)) <= 1e-15 * max(1.0, np.abs(Vt).max())
    assert P.min() >= 0 and np.allclose(P.sum(axis=0), 1.0, atol=1e-12)
    inplace = Vt.copy()
    assert _simplex._project_columns(inplace, out=inplace) is inplace
    assert np.array_equal(inplace, P)


def _large(n, K, k, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, k, n)
    logits = rng.normal(size=(n, K)) + 0.5 * np.eye(K)[g % K]
    S = np.exp(logits)
    S /= S.sum(axis=1, keepdims=True)
    return S, g


def test_large_solve_needs_few_full_evaluations(monkeypatch):
    """Check that 2e5 rows (3 classes, 4 groups) cost at most 5 evaluations of the full data
    (4 measured: the subsample's start, two active-pattern rounds, the certifying one)."""
    n = 200_000
    S, g = _large(n, 3, 4)
    calls = []
    primal = _simplex._Rows.primal

    def counted(self, nu):
        calls.append(self.n)
        return primal(self, nu)

    monkeypatch.setattr(_simplex._Rows, "primal", counted)
    problem = build_problem("demographic_parity", S, [(g, 4)], 0.01)
    solution = _simplex.solve_simplex(problem)
    assert solution is not None
    assert calls.count(n) <= 5
    means = np.array([solution.outputs[g == c].mean(axis=0) for c in range(4)])
    assert np.ptp(means, axis=0).max() <= 0.01 + VERIFY_TOL


def _random(seed):
    rng = np.random.default_rng(seed)
    K, k, n = int(rng.integers(2, 7)), int(rng.integers(2, 9)), int(rng.integers(30, 400))
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(k)
    S = rng.dirichlet(np.full(K, rng.uniform(0.2, 2.0)), size=n)
    S = np.exp(np.log(S + 1e-12) + rng.uniform(0, 2) * rng.normal(size=(k, K))[codes])
    S /= S.sum(axis=1, keepdims=True)
    tol = float(rng.choice([0.0, 0.001, 0.01, 0.05, 0.2]))
    return build_problem("demographic_parity", S, [(codes, k)], tol)


@pytest.mark.parametrize("seed", range(12))
def test_exact_solver_matches_osqp_on_random_instances(seed):
    """Check the exact solver against OSQP on random small instances: outputs to 1e-9, an
    objective no worse (to rounding)."""
    problem = _random(seed)
    exact = solve_problem(problem, solver="exact")
    ref = solve_problem(problem, solver="osqp")
    assert exact.solver == "simplex"
    assert np.max(np.abs(exact.outputs - ref.outputs)) <= 1e-9
    S = problem.scores
    obj, obj_ref = (0.5 * np.sum((P - S) ** 2) for P in (exact.outputs, ref.outputs))
    assert obj <= obj_ref + 1e-12 * max(1.0, obj_ref)
