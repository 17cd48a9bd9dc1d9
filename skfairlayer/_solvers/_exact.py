"""Exact solver for one parity family over binary outputs.

KKT conditions of ``min 1/2 ||p - s||^2`` s.t. ``lb <= p <= ub`` and
``t <= m_g(p) <= t + eps`` (``m_g(p) = sum_{i in g} w_i p_i``) give
``p_i = clip(s_i - nu_g w_i, lb_i, ub_i)``: one multiplier per group. Each group
mean ``m_g(nu)`` is a decreasing piecewise-linear function of its multiplier;
the level ``t`` is fixed by ``sum_g nu_g(t) = 0``, a monotone scalar equation.

:func:`solve_sorted` tabulates every group's breakpoints (``O(n log n)``) and
solves the scalar equation exactly; it is the reference and the fallback.
"""

import numpy as np

from ..exceptions import InfeasibleProblemError
from . import Solution

__all__ = ["solve_exact", "solve_sorted", "supports"]


def supports(problem):
    """Whether the exact solver handles ``problem``."""
    return (
        problem.scores.ndim == 1
        and len(problem.families) == 1
        and problem.rows is None
        and not problem.simplex
    )


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


def _level_bracket(low, high, base, eps):
    """Feasible range of the level ``t`` and a check of feasibility."""
    t_min, t_max = low.max() - eps, high.min()
    if t_min > t_max + 1e-12:
        g_low, g_high = int(low.argmax()), int(high.argmin())
        raise InfeasibleProblemError(
            f"Parity within {eps!r} is impossible within the bounds: group {g_low} cannot go "
            f"below a mean of {low[g_low]:.6g} while group {g_high} cannot go above "
            f"{high[g_high]:.6g}. Increase the tolerance or widen the bounds."
        )
    # The optimal level lies between the extreme unconstrained means, clipped to the range.
    lo = min(max(base.min() - eps, t_min), t_max)
    hi = max(min(base.max(), t_max), t_min)
    return min(lo, hi), max(lo, hi)


def solve_sorted(problem):
    """Exact solution by per-group breakpoint tables and bisection on the level."""
    fam = problem.families[0]
    s = problem.scores
    n, k, eps = s.shape[0], fam.n_groups, fam.tolerance
    lb, ub = _as_rows(problem.lower, n), _as_rows(problem.upper, n)
    if eps < 0:
        raise InfeasibleProblemError(f"tolerance must be >= 0. Got {eps!r} instead.")
    order = np.argsort(fam.codes, kind="stable")
    bounds = np.searchsorted(fam.codes[order], np.arange(k + 1))
    tables = []
    for g in range(k):
        idx = order[bounds[g] : bounds[g + 1]]
        tables.append(_GroupTable(s[idx], fam.weights[idx], lb[idx], ub[idx]))
    low = np.array([tb.low for tb in tables])
    high = np.array([tb.high for tb in tables])
    base = np.array([tb.value(0.0) for tb in tables])

    def multipliers(t):
        nu = np.zeros(k)
        for g, tb in enumerate(tables):
            if base[g] > t + eps:
                nu[g] = tb.inverse(t + eps)
            elif base[g] < t:
                nu[g] = tb.inverse(t)
        return nu

    lo, hi = _level_bracket(low, high, base, eps)
    it = 0
    for it in range(1, 200):  # phi(t) = sum(nu(t)) is non-increasing in t
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if multipliers(mid).sum() > 0:
            lo = mid
        else:
            hi = mid
    t = _best_level(lo, hi, multipliers)
    nu = multipliers(t)
    outputs = np.clip(s - nu[fam.codes] * fam.weights, lb, ub)
    if np.any(fam.codes < 0):
        outside = fam.codes < 0
        outputs[outside] = np.clip(s[outside], lb[outside], ub[outside])
    return Solution(outputs, [nu], np.array([t]), solver="exact", iterations=it)


def _best_level(lo, hi, multipliers):
    """Of the two ends of the final bracket, the one whose multipliers sum closest to 0."""
    return lo if abs(multipliers(lo).sum()) <= abs(multipliers(hi).sum()) else hi


def solve_exact(problem, warm_start=None):
    """Solve a single-family binary problem exactly."""
    return solve_sorted(problem)
