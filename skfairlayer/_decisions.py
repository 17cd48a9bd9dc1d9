"""Decisions that meet selection-rate parity (MATH.md §3).

Rounding projected probabilities does not keep parity. Instead solve, on the
batch, ``max sum_i yhat_i (2 s_i - 1)`` (expected accuracy under calibrated
scores ``s``) over integer decisions whose group selection rates differ by at
most ``tolerance``. Within a group the best ``c_g`` selections are its ``c_g``
highest scores, so the problem is over the counts ``c_g`` alone; with a level
``t`` the rates lie in ``[t, t + tolerance]`` and each group takes the count
closest to its unconstrained one inside ``[ceil(t n_g), floor((t + tol) n_g)]``
(its objective is concave in ``c_g``). The objective is piecewise constant in
``t`` with breakpoints ``c / n_g`` and ``c / n_g - tol``; evaluating every piece
gives the exact integer optimum — no fractional row, no rounding slack.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ParityDecisions", "parity_decisions", "apply_thresholds"]

_RATE_SLACK = 1e-12  # float slack on rate comparisons (rates are ratios of integers)
_CHUNK = 1 << 16


@dataclass
class ParityDecisions:
    """Exact integer solution of the decision problem on one batch.

    Attributes
    ----------
    decisions : ndarray of shape (n_samples,), dtype=int
        0/1 decisions.
    counts : ndarray of shape (n_groups,)
        Number of selected rows per group.
    sizes : ndarray of shape (n_groups,)
        Number of rows per group.
    thresholds : ndarray of shape (n_groups,)
        A score threshold per group reproducing the selection on this batch
        (midway between the last selected and the first rejected score).
    """

    decisions: np.ndarray
    counts: np.ndarray
    sizes: np.ndarray
    thresholds: np.ndarray

    @property
    def rates(self):
        """Selection rate of each group."""
        return self.counts / self.sizes

    @property
    def gap(self):
        """Largest difference of two groups' selection rates."""
        r = self.rates
        return float(r.max() - r.min())


def _candidate_levels(sizes, tolerance, lo, hi):
    """Every breakpoint c/n_g and c/n_g - tol within [lo, hi], plus midpoints between them."""
    points = [np.array([0.0, lo, hi])]
    for n_g in sizes:
        c = np.arange(int(np.floor(lo * n_g)), int(np.ceil((hi + tolerance) * n_g)) + 1)
        points.append(c / n_g)
        points.append(c / n_g - tolerance)
    pts = np.unique(np.concatenate(points))
    pts = pts[(pts >= lo - 1e-15) & (pts <= hi + 1e-15)]
    mids = 0.5 * (pts[1:] + pts[:-1])
    return np.concatenate([pts, mids])


def parity_decisions(scores, codes, n_groups, tolerance):
    """Integer decisions maximising expected accuracy subject to selection-rate parity.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Calibrated positive-class probabilities.
    codes : ndarray of shape (n_samples,)
        Group code of each row in ``[0, n_groups)``; every group present.
    n_groups : int
        Number of groups.
    tolerance : float
        Largest allowed difference of selection rates.

    Returns
    -------
    ParityDecisions
    """
    n = scores.shape[0]
    # Rows sorted by group, then by decreasing score (stable: ties by position).
    order = np.lexsort((np.arange(n), -scores, codes))
    sizes = np.bincount(codes, minlength=n_groups)
    if np.any(sizes == 0):
        raise ValueError("parity_decisions needs every group to be present in the batch.")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    gain = 2.0 * scores[order] - 1.0
    # prefix[g][c] = sum of the c largest gains of group g (concave in c).
    prefix = [np.concatenate([[0.0], np.cumsum(gain[starts[g] : starts[g + 1]])]) for g in range(n_groups)]
    free = np.array([np.count_nonzero(scores[codes == g] > 0.5) for g in range(n_groups)])

    rates0 = free / sizes
    if tolerance * sizes.min() >= 1:
        # Every level admits an integer count in every group, so the objective rises
        # towards the unconstrained rates: the optimal level lies between them.
        lo = max(0.0, rates0.min() - tolerance)
        hi = min(1.0, rates0.max())
        lo, hi = min(lo, hi), max(lo, hi)
    else:  # some levels admit no count in a small group: search them all
        lo, hi = 0.0, 1.0
    levels = _candidate_levels(sizes, tolerance, lo, hi)
    # Always include the trivially feasible all-zero / all-one solutions.
    levels = np.concatenate([levels, [0.0, max(0.0, 1.0 - tolerance)]])

    best_val, best_counts = -np.inf, None
    for start in range(0, levels.size, _CHUNK):
        t = levels[start : start + _CHUNK]
        total = np.zeros(t.size)
        feasible = np.ones(t.size, dtype=bool)
        chosen = np.empty((n_groups, t.size), dtype=np.intp)
        for g in range(n_groups):
            n_g = sizes[g]
            c_lo = np.ceil(t * n_g - _RATE_SLACK * n_g).astype(np.intp)
            c_hi = np.floor((t + tolerance) * n_g + _RATE_SLACK * n_g).astype(np.intp)
            c_lo, c_hi = np.maximum(c_lo, 0), np.minimum(c_hi, n_g)
            feasible &= c_lo <= c_hi
            c = np.clip(free[g], c_lo, np.maximum(c_lo, c_hi))
            chosen[g] = c
            total += prefix[g][c]
        total[~feasible] = -np.inf
        j = int(np.argmax(total))
        if total[j] > best_val:
            best_val, best_counts = total[j], chosen[:, j].copy()

    decisions = np.zeros(n, dtype=int)
    thresholds = np.empty(n_groups)
    sorted_scores = scores[order]
    for g in range(n_groups):
        a, c = starts[g], best_counts[g]
        decisions[order[a : a + c]] = 1
        group_scores = sorted_scores[a : starts[g + 1]]
        thresholds[g] = _threshold_between(group_scores, c)
    return ParityDecisions(decisions, best_counts, sizes, thresholds)


def _threshold_between(desc_scores, c):
    """A threshold selecting (``score >= threshold``) the ``c`` highest of ``desc_scores``."""
    if c == 0:
        return np.nextafter(desc_scores[0], np.inf)
    if c == desc_scores.size:
        return desc_scores[-1]
    last, first_out = desc_scores[c - 1], desc_scores[c]
    return last if last == first_out else 0.5 * (last + first_out)


def apply_thresholds(scores, codes, thresholds):
    """0/1 decisions ``scores >= thresholds[codes]``."""
    return (scores >= thresholds[codes]).astype(int)
