"""Parity criteria, turned into affine constraints over a batch of outputs.

A criterion maps a batch (group codes, base scores, optionally labels) to one or
more :class:`GroupStatistics` *families*. A family holds one weighted mean per
group, ``m_g(P) = sum_{i in g} w_i P[i, column]`` (weights of a group sum to 1),
and asks that ``max_g m_g - min_g m_g <= tolerance``. With an auxiliary level
``t`` this is the set of affine rows ``t <= m_g(P) <= t + tolerance``.

Solvers only see a :class:`ProjectionProblem`: scores, bounds, families and
optional extra affine rows. Nothing here solves anything.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GroupStatistics",
    "AffineRows",
    "ProjectionProblem",
    "Criterion",
    "DemographicParity",
    "make_criterion",
]


@dataclass(frozen=True)
class GroupStatistics:
    """One family of weighted group means that must agree within ``tolerance``.

    Parameters
    ----------
    codes : ndarray of shape (n_samples,), dtype=intp
        Group of each row in ``[0, n_groups)``; ``-1`` for rows outside the family.
    weights : ndarray of shape (n_samples,)
        Non-negative weight of each row in its group's mean; the weights of
        each group sum to one (zero for rows outside the family).
    n_groups : int
        Number of groups (statistics) in the family.
    tolerance : float
        Largest allowed difference between two group statistics.
    column : int, default=0
        Output column the statistics read (class index for multiclass outputs).
    name : str, default="parity"
        Human-readable name used in messages.
    """

    codes: np.ndarray
    weights: np.ndarray
    n_groups: int
    tolerance: float
    column: int = 0
    name: str = "parity"
    uniform: bool = field(default=False, compare=False)

    def means(self, outputs):
        """Group statistics ``m_g`` of ``outputs`` (1-D, or 2-D read at ``column``)."""
        values = outputs if outputs.ndim == 1 else outputs[:, self.column]
        inside = self.codes >= 0
        if inside.all():
            return np.bincount(self.codes, weights=self.weights * values, minlength=self.n_groups)
        return np.bincount(
            self.codes[inside],
            weights=(self.weights * values)[inside],
            minlength=self.n_groups,
        )

    def gap(self, outputs):
        """Largest difference between two group statistics of ``outputs``."""
        m = self.means(outputs)
        return float(m.max() - m.min())


@dataclass(frozen=True)
class AffineRows:
    """Custom affine rows ``lower <= matrix @ P.ravel() <= upper``.

    ``matrix`` is a scipy sparse matrix of shape (n_rows, P.size) acting on the
    row-major flattening of the outputs.
    """

    matrix: object
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class ProjectionProblem:
    """``argmin ||P - S||^2`` subject to bounds, parity families and extra rows.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        Base scores ``S``; 1-D for binary outputs (probability of the positive class).
    families : tuple of GroupStatistics
        Parity families; each adds ``t_f <= m_{f,g}(P) <= t_f + tolerance_f``.
    lower, upper : float or ndarray of shape (n_samples,), default=0.0, 1.0
        Box bounds for binary outputs.
    simplex : bool, default=False
        For 2-D scores: each row of ``P`` lies on the probability simplex
        (the box is then ignored).
    rows : AffineRows or None, default=None
        Extra affine rows; only the general (OSQP) solver handles them.
    """

    scores: np.ndarray
    families: tuple
    lower: object = 0.0
    upper: object = 1.0
    simplex: bool = False
    rows: AffineRows | None = None

    @property
    def n_samples(self):
        return self.scores.shape[0]

    def box_violation(self, outputs):
        """Largest violation of the bounds (or the simplex) by ``outputs``."""
        if self.simplex:
            return float(max(-outputs.min(), np.abs(outputs.sum(axis=1) - 1).max()))
        return float(max(np.max(self.lower - outputs), np.max(outputs - self.upper), 0.0))

    def parity_violation(self, outputs):
        """Largest violation of the parity families and extra rows by ``outputs``."""
        worst = 0.0
        for fam in self.families:
            worst = max(worst, fam.gap(outputs) - fam.tolerance)
        if self.rows is not None:
            r = self.rows.matrix @ outputs.ravel()
            worst = max(worst, np.max(self.rows.lower - r), np.max(r - self.rows.upper))
        return float(worst)


class Criterion:
    """Base class of parity criteria: builds the families for one batch.

    Subclasses implement :meth:`families`. ``requires_labels`` tells whether
    the criterion needs ``y`` (it then cannot be applied at inference).
    """

    requires_labels = False

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        """Return the tuple of :class:`GroupStatistics` for this batch."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


def _uniform_weights(codes, n_groups):
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(divide="ignore"):
        inv = np.where(counts > 0, 1.0 / counts, 0.0)
    return inv[codes], counts


class DemographicParity(Criterion):
    """Demographic parity: equal mean output across groups, within the tolerance.

    For binary outputs the family reads the positive-class probability; for
    multiclass outputs there is one family per class column.
    """

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        weights, _ = _uniform_weights(codes, n_groups)
        columns = range(scores.shape[1]) if scores.ndim == 2 else [0]
        return tuple(
            GroupStatistics(
                codes=codes,
                weights=weights,
                n_groups=n_groups,
                tolerance=tolerance,
                column=c,
                name="demographic parity" + (f" (class {c})" if scores.ndim == 2 else ""),
                uniform=True,
            )
            for c in columns
        )


_CRITERIA = {"demographic_parity": DemographicParity}


def make_criterion(criterion):
    """Turn a criterion name or instance into a :class:`Criterion` instance."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in _CRITERIA:
        return _CRITERIA[criterion]()
    raise ValueError(
        f"criterion must be one of {sorted(_CRITERIA)} or a Criterion instance. "
        f"Got {criterion!r} instead."
    )
