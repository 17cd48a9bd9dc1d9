"""Exact solver for one parity family over binary outputs.

KKT conditions of ``min 1/2 ||p - s||^2`` s.t. ``lb <= p <= ub`` and
``t <= m_g(p) <= t + eps`` (``m_g(p) = sum_{i in g} w_i p_i``) give
``p_i = clip(s_i - nu_g w_i, lb_i, ub_i)``: one multiplier per group. Each group
mean ``m_g(nu)`` is a decreasing piecewise-linear function of its multiplier;
the level ``t`` is fixed by ``sum_g nu_g(t) = 0``, a monotone scalar equation.

:func:`solve_sorted` tabulates every group's breakpoints (``O(n log n)``) and
solves the scalar equation by bisection; it is the reference and the fallback.

:func:`solve_exact` reaches the same optimum in a few passes over the data:
uniform weights and scalar bounds (demographic parity) take the blocked passes
on per-group shifts of :mod:`skfairlayer._solvers._uniform`; any other weights
and bounds turn the rows into a model solved by the certified
subsample-bracket-reduce recursion of :mod:`skfairlayer._solvers._reduced`.
When neither certifies, :func:`solve_sorted` answers.
"""

import numpy as np

from ..exceptions import InfeasibleProblemError
from . import Solution
from ._reduced import _DIRECT_ROWS, _SAMPLE_ROWS, _bracket_rounds, _Model, _solve_model
from ._uniform import GroupLayout, _solve_uniform

__all__ = ["GroupLayout", "solve_exact", "solve_sorted", "supports"]


def supports(problem):
    """Whether the exact solver handles ``problem``."""
    return (
        problem.scores.ndim == 1
        and len(problem.families) == 1
        and problem.rows is None
        and not problem.simplex
    )


# --------------------------------------------------------------------------------------
# Reference solver
# --------------------------------------------------------------------------------------


class _GroupTable:
    """Piecewise-linear map ``nu -> m_g(nu)`` of one group, from its sorted breakpoints."""

    def __init__(self, s, w, lb, ub):
        keep = w > 0
        s, w, lb, ub = s[keep], w[keep], lb[keep], ub[keep]
        self.low = float(np.dot(w, lb))   # m_g(+inf)
        self.high = float(np.dot(w, ub))  # m_g(-inf)
        enter = (s - ub) / w  # below this nu the row sits at ub
        leave = (s - lb) / w  # above this nu the row sits at lb
        x = np.concatenate([enter, leave])
        dslope = np.concatenate([-(w * w), w * w])
        order = np.argsort(x, kind="stable")
        x, dslope = x[order], dslope[order]
        slope = np.cumsum(dslope)  # slope of m on [x_j, x_{j+1}]
        m = np.empty_like(x)
        m[0] = self.high
        if x.size > 1:
            m[1:] = self.high + np.cumsum(slope[:-1] * np.diff(x))
        self.x, self.m, self.slope = x, m, slope

    def value(self, nu):
        """``m_g(nu)`` for a scalar ``nu``."""
        j = np.searchsorted(self.x, nu, side="right") - 1
        if j < 0:
            return self.high
        return self.m[j] + self.slope[j] * (nu - self.x[j])

    def inverse(self, target):
        """A multiplier ``nu`` with ``m_g(nu) = target`` (``low <= target <= high``)."""
        if target >= self.high:
            return self.x[0]
        if target <= self.low:
            return self.x[-1]
        # m is non-increasing along x: search on -m.
        j = np.searchsorted(-self.m, -target, side="right") - 1
        if self.slope[j] == 0.0:
            return self.x[j]
        return self.x[j] + (target - self.m[j]) / self.slope[j]


def _as_rows(bound, n):
    return np.broadcast_to(np.asarray(bound, dtype=np.float64), (n,))


def _check_tolerance(eps):
    if eps < 0:
        raise InfeasibleProblemError(f"tolerance must be >= 0. Got {eps!r} instead.")


def _check_feasible(low, high, eps, groups):
    """Raise unless a level ``t`` exists with ``low_g - eps <= t <= high_g`` for all groups."""
    t_min, t_max = low.max() - eps, high.min()
    if t_min > t_max + 1e-12:
        i, j = int(low.argmax()), int(high.argmin())
        raise InfeasibleProblemError(
            f"Parity within {eps!r} is impossible within the bounds: group {groups[i]} cannot go "
            f"below a mean of {low[i]:.6g} while group {groups[j]} cannot go above "
            f"{high[j]:.6g}. Increase the tolerance or widen the bounds."
        )
    return t_min, t_max


def _level_bracket(low, high, base, eps, groups):
    """Feasible range of the level ``t`` and a check of feasibility."""
    t_min, t_max = _check_feasible(low, high, eps, groups)
    # The optimal level lies between the extreme unconstrained means, clipped to the range.
    lo = min(max(base.min() - eps, t_min), t_max)
    hi = max(min(base.max(), t_max), t_min)
    return min(lo, hi), max(lo, hi)


def solve_sorted(problem):
    """Exact solution by per-group breakpoint tables and bisection on the level.

    The reference implementation: ``O(n log n)``, one table per group. Groups
    without a row of positive weight carry no constraint (multiplier 0).

    Parameters
    ----------
    problem : ProjectionProblem
        A problem :func:`supports` accepts.

    Returns
    -------
    solution : Solution
        Outputs, multipliers (one per group) and level.

    Raises
    ------
    InfeasibleProblemError
        If the tolerance is negative or the bounds make parity impossible.
    """
    fam = problem.families[0]
    s = problem.scores
    n, k, eps = s.shape[0], fam.n_groups, fam.tolerance
    lb, ub = _as_rows(problem.lower, n), _as_rows(problem.upper, n)
    _check_tolerance(eps)
    codes = fam.codes
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    groups, tables = [], []
    for g in range(k):
        idx = order[bounds[g] : bounds[g + 1]]
        if np.any(fam.weights[idx] > 0):
            groups.append(g)
            tables.append(_GroupTable(s[idx], fam.weights[idx], lb[idx], ub[idx]))
    nu = np.zeros(k)
    t = 0.0
    it = 0
    if tables:
        low = np.array([tb.low for tb in tables])
        high = np.array([tb.high for tb in tables])
        base = np.array([tb.value(0.0) for tb in tables])

        def multipliers(t):
            out = np.zeros(len(tables))
            for j, tb in enumerate(tables):
                if base[j] > t + eps:
                    out[j] = tb.inverse(t + eps)
                elif base[j] < t:
                    out[j] = tb.inverse(t)
            return out

        lo, hi = _level_bracket(low, high, base, eps, groups)
        for it in range(1, 200):  # noqa: B007 (phi(t) = sum(nu(t)) is non-increasing in t)
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if multipliers(mid).sum() > 0:
                lo = mid
            else:
                hi = mid
        t = _best_level(lo, hi, multipliers)
        nu[groups] = multipliers(t)
    outputs = np.clip(s - nu[np.maximum(codes, 0)] * fam.weights, lb, ub)
    if np.any(codes < 0):
        outside = codes < 0
        outputs[outside] = np.clip(s[outside], lb[outside], ub[outside])
    return Solution(outputs, [nu], np.array([t]), solver="exact", iterations=it,
                    info={"path": "sorted"})


def _best_level(lo, hi, multipliers):
    """Of the two ends of the final bracket, the one whose multipliers sum closest to 0."""
    return lo if abs(multipliers(lo).sum()) <= abs(multipliers(hi).sum()) else hi


def _solve_general(problem, warm_start):
    """Any weights and bounds: the rows as a model, solved by the recursive reduction."""
    fam = problem.families[0]
    s, codes, w = problem.scores, fam.codes, fam.weights
    n, k, eps = s.shape[0], fam.n_groups, float(fam.tolerance)
    lb, ub = _as_rows(problem.lower, n), _as_rows(problem.upper, n)
    keep = (codes >= 0) & (w > 0)
    if keep.all():
        sr, wr, lr, ur, gr = s, w, lb, ub, codes
    else:
        idx = np.flatnonzero(keep)
        sr, wr, lr, ur, gr = s[idx], w[idx], lb[idx], ub[idx], codes[idx]
    if np.any(lr > ur):
        return None
    high = np.bincount(gr, weights=wr * ur, minlength=k)
    low = np.bincount(gr, weights=wr * lr, minlength=k)
    present = np.bincount(gr, minlength=k) > 0
    if high.size > k:
        return None
    groups = np.flatnonzero(present)
    if groups.size:
        _check_feasible(low[groups], high[groups], eps, groups)
    model = _Model((sr - ur) / wr, (sr - lr) / wr, wr * wr, gr, high, np.zeros(k), present, eps)
    inf = np.full(k, np.inf)
    warm = _general_warm(warm_start, k)
    if warm is not None and model.size > _DIRECT_ROWS:
        res = _bracket_rounds(model, -inf, inf, warm[0], warm[1], 0)
    else:
        res = _solve_model(model, -inf, inf, 0)
    if not res.ok:
        return None
    nu = res.nu
    ext = np.append(nu, 0.0)  # code -1 (weight 0) picks the trailing 0
    out = np.clip(s - ext[codes] * w, lb, ub)
    return Solution(out, [nu], np.array([res.t]), solver="exact", iterations=1,
                    info={"path": "general"})


def _general_warm(warm_start, k):
    if warm_start is None or not getattr(warm_start, "duals", None):
        return None
    nu = np.asarray(warm_start.duals[0], dtype=np.float64)
    if nu.shape != (k,) or not np.all(np.isfinite(nu)):
        return None
    return nu.copy(), 1e-2 * (1.0 + np.abs(nu))


def solve_exact(problem, warm_start=None, *, layout=None):
    """Solve a single-family binary problem exactly, in a few passes over the data.

    Same optimum as :func:`solve_sorted` (see :mod:`skfairlayer._solvers._reduced`
    for the method and its certificate); falls back to it when a reduction does not
    certify within a few rounds.

    Parameters
    ----------
    problem : ProjectionProblem
        A problem :func:`supports` accepts.
    warm_start : Solution or None, default=None
        A previous solution of a similar problem (e.g. the previous batch):
        its shifts (or multipliers) replace the subsample estimate of the centre.
    layout : GroupLayout or None, default=None
        The prepared group structure of ``problem``'s family (same codes).

    Returns
    -------
    solution : Solution
        Outputs, multipliers (one per group), level and, in ``info``, the
        per-group shifts and the bracket half-width used (reusable as a warm start).

    Raises
    ------
    InfeasibleProblemError
        If the tolerance is negative or the bounds make parity impossible.
    """
    fam = problem.families[0]
    s = problem.scores
    n, k = s.shape[0], fam.n_groups
    eps = float(fam.tolerance)
    _check_tolerance(eps)
    if layout is not None and (layout.codes.shape != (n,) or layout.n_groups != k
                               or (layout.codes is not fam.codes
                                   and not np.array_equal(layout.codes, fam.codes))):
        raise ValueError(
            "layout must be built from the codes of the problem's family. "
            f"Got {layout!r} instead."
        )
    lower, upper = np.asarray(problem.lower), np.asarray(problem.upper)
    if (
        fam.uniform
        and lower.ndim == 0
        and upper.ndim == 0
        and float(lower) < float(upper)
        and n > 4 * _SAMPLE_ROWS
    ):
        solution = _solve_uniform(problem, layout, warm_start)
        if solution is not None:
            return solution
    solution = _solve_general(problem, warm_start)
    if solution is not None:
        return solution
    return solve_sorted(problem)
