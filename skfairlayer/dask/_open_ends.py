"""Open ends of the bounds in the Dask passes: finite stand-ins that no output reaches.

An open end (``None`` or an infinite bound: regression outputs, logits) is
replaced by a finite stand-in beyond the scores' range, far enough that the
projection with it is the projection with the open end; the certifying pass
checks that no output reaches it, and a pass over the scores' exact range moves
it out when the start's rows underestimated that range. The in-memory solver
does the same (``skfairlayer._projection._solve_exact_unbounded``); see the user
guide, "Beyond one machine".
"""

import numpy as np

from .._validation import check_bounds
from ._blocks import Pass, as_float, compute

__all__ = ["OpenEnds", "scalar_bounds"]


def scalar_bounds(bounds):
    """Scalar bounds with ``lower < upper``; None or an infinite value is an open end."""
    lb, ub = check_bounds(bounds, scalar=True)
    if not lb < ub:
        raise ValueError(f"bounds must satisfy lower < upper. Got {bounds!r} instead.")
    return lb, ub


def stand_ins(lb, ub, sample, tolerance, widen=1.0):
    """Finite bounds for the passes: the open ends of ``(lb, ub)`` replaced by stand-ins.

    At the optimum with an open end no output moves past the range ``[lo, hi]`` of
    the scores and the finite bound by more than ``hi - lo + tolerance`` (the band
    of the group means lies within ``[lo, hi + tolerance]``), so a stand-in that
    far beyond the range binds no output of the projection with the open end, and
    the projection with the stand-in is the same. ``sample`` (rows, or the exact
    extremes) gives the range; :func:`stand_ins_bind` checks the stand-ins on the
    certifying pass.
    """
    lo = min(float(sample.min()), ub) if sample.size else (0.0 if np.isinf(ub) else ub)
    hi = max(float(sample.max()), lb) if sample.size else (0.0 if np.isinf(lb) else lb)
    span = widen * ((hi - lo) + tolerance + 1e-3 * ((hi - lo) or 1.0))
    return (lo - span if np.isinf(lb) else lb), (hi + span if np.isinf(ub) else ub)


def _block_extremes(s_raw, g_raw):
    s = as_float(s_raw)
    return np.array([s.min(), s.max()]) if s.size else np.array([np.inf, -np.inf])


def _merge_extremes(parts):
    return np.array([min(p[0] for p in parts), max(p[1] for p in parts)])


def extremes(score_blocks, group_blocks):
    """The smallest and the largest score of the collection (one pass)."""
    pas = Pass(score_blocks, group_blocks, _block_extremes, "skfairlayer-extremes")
    (both,) = compute(pas.delayed(pas.reduce(pas.keys, _merge_extremes)))
    return both


def stand_ins_bind(agg, shifts, lb, ub, work):
    """Whether an output at ``shifts`` reaches a stand-in of an open end (``work``): rows
    at that bound on the whole bracket, or an uncertain row there."""
    u = agg["s"] - shifts[agg["g"]]
    low = np.isinf(lb) and (agg["nbot"].sum() > 0 or bool(np.any(u <= work[0])))
    high = np.isinf(ub) and (agg["ntop"].sum() > 0 or bool(np.any(u >= work[1])))
    return low or high


class OpenEnds:
    """The bounds of the passes: ``(lb, ub)`` with stand-ins for their open ends.

    ``work``: the bounds the passes use; ``range_pass``: whether a pass read the
    scores' exact range.
    """

    def __init__(self, lb, ub, sample, tolerance):
        self.bounds, self.tolerance = (lb, ub), tolerance
        self.range, self.widen = None, 1.0
        self.work = stand_ins(lb, ub, sample, tolerance)

    @property
    def range_pass(self):
        return self.range is not None

    def resample(self, sample):
        """Stand-ins from a new start sample (unless the exact range is known)."""
        self.work = stand_ins(*self.bounds, sample if self.range is None else self.range,
                              self.tolerance, self.widen)

    def moved(self, agg, shifts, score_blocks, group_blocks):
        """Whether a stand-in binds at ``shifts`` (then it is moved out: from the exact
        range, read by one pass, it cannot bind; widened if it still does)."""
        if not stand_ins_bind(agg, shifts, *self.bounds, self.work):
            return False
        if self.range is None:
            self.range = extremes(score_blocks, group_blocks)
        else:
            self.widen *= 8.0
        self.work = stand_ins(*self.bounds, self.range, self.tolerance, self.widen)
        return True
