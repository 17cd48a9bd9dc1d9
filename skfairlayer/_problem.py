"""The data a solver sees: group statistics, affine rows and the projection problem.

A family (:class:`GroupStatistics`) holds one weighted mean per group and asks
that they agree within a tolerance; :class:`AffineRows` are any further affine
rows; a :class:`ProjectionProblem` is the scores, bounds, families and rows.
Plain data, nothing solves anything here (see the user guide on criteria).
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._numeric import indicator_sums

__all__ = [
    "SMALL_GROUP_SIZE",
    "AffineRows",
    "GroupStatistics",
    "ProjectionProblem",
    "check_labels",
    "group_family",
]

#: Effective group size below which a group's statistic is mostly noise.
SMALL_GROUP_SIZE = 30
#: Rows per block of the passes over the rows that convert codes on the fly (in cache).
_BLOCK = 1 << 16


class _UniformWeights:
    """The ``weights`` field: given, or for a uniform family built without them (``None``)
    ``1 / totals[codes]``, computed on first access. The solvers of uniform families
    never read them; an ``n``-float array is not written for nothing."""

    def __set_name__(self, owner, name):
        self.key = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            raise AttributeError("weights has no default")  # a required field
        value = obj.__dict__[self.key]
        if value is None:
            inverse = np.zeros(obj.n_groups + 1)  # the last entry serves code -1
            inverse[:-1] = 1.0 / np.asarray(obj.totals, dtype=np.float64)
            value = inverse.take(obj.codes, mode="wrap")
            obj.__dict__[self.key] = value
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.key] = value


@dataclass(frozen=True)
class GroupStatistics:
    """One family of weighted group means that must agree within ``tolerance``.

    Parameters
    ----------
    codes : ndarray of shape (n_samples,), dtype=intp
        Group of each row in ``[0, n_groups)``; ``-1`` for rows outside the family.
    weights : ndarray of shape (n_samples,) or None
        Non-negative weight of each row in its group's mean; the weights of
        each group sum to one (zero for rows outside the family). ``None``
        with ``uniform=True`` and ``totals``: ``1 / totals[codes]``, computed
        when first read.
    n_groups : int
        Number of groups (statistics) in the family; every group has at least
        one row of positive weight.
    tolerance : float
        Largest allowed difference between two group statistics.
    column : int, default=0
        Output column the statistics read (class index for multiclass outputs).
    name : str, default="parity"
        Human-readable name used in messages.
    uniform : bool, default=False
        Whether every row of a group has the same weight ``1 / n_g``.
    group_ids : ndarray of shape (n_groups,) or None, default=None
        Code, in the grouping the family was built from, of each family group
        (families skip groups with no weight, e.g. no positive label). ``None``
        means the identity.
    totals : ndarray of shape (n_groups,) or None, default=None
        Sum of the raw (unnormalised) weights of each group: ``weights`` are
        the raw weights divided by ``totals[codes]`` (the group sizes for
        uniform weights). ``None`` when unknown.
    plug_in_class : int or None, default=None
        Set when the raw weights are the base posteriors of a class (the
        label-free form of a label-conditioned criterion): raw weight
        ``S[i, y]`` (binary scores: ``s_i`` for ``y = 1``, ``1 - s_i`` for
        ``y = 0``). The weights then depend on the scores, which derivatives
        with respect to the scores must take into account. ``None``: the
        weights do not depend on the scores.

    See Also
    --------
    group_family : Build a family from raw row weights (normalised per group).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import GroupStatistics
    >>> fam = GroupStatistics(
    ...     codes=np.array([0, 0, 1]), weights=np.array([0.5, 0.5, 1.0]),
    ...     n_groups=2, tolerance=0.1,
    ... )
    >>> fam.means(np.array([0.2, 0.4, 0.9]))
    array([0.3, 0.9])
    >>> round(fam.gap(np.array([0.2, 0.4, 0.9])), 3)
    0.6
    """

    codes: np.ndarray
    weights: np.ndarray = _UniformWeights()
    n_groups: int
    tolerance: float
    column: int = 0
    name: str = "parity"
    uniform: bool = field(default=False, compare=False)
    group_ids: np.ndarray | None = field(default=None, compare=False)
    totals: np.ndarray | None = field(default=None, compare=False)
    plug_in_class: int | None = field(default=None, compare=False)
    # ``codes`` as uint8 when the builder already has them (see ``_small_codes``); not an
    # init field, so a copy with other codes (``dataclasses.replace``) never inherits them.
    _small: np.ndarray | None = field(default=None, init=False, compare=False, repr=False)

    def means(self, outputs):
        """Group statistics ``m_g`` of ``outputs`` (1-D, or 2-D read at ``column``).

        Parameters
        ----------
        outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Outputs of the batch the family was built on.

        Returns
        -------
        means : ndarray of shape (n_groups,)
            ``sum_{i in g} w_i outputs[i, column]`` for each group ``g``.
        """
        values = outputs if outputs.ndim == 1 else outputs[:, self.column]
        if self.dense_uniform:
            # Every row is in a group with weight 1 / n_g: sums divided by sizes.
            return self._group_sums(values) / self.totals
        inside = self.codes >= 0
        if inside.all():
            return np.bincount(self.codes, weights=self.weights * values, minlength=self.n_groups)
        return np.bincount(
            self.codes[inside],
            weights=(self.weights * values)[inside],
            minlength=self.n_groups,
        )

    def _group_sums(self, values):
        """``sum_{i in g} values_i`` per group, for a family whose rows are all in a group.

        Two groups: the total and the sum over group 1, by one dot product per
        block with the group codes converted to floats; several times faster
        than ``bincount``, which serves more groups.
        """
        if self.n_groups != 2:
            return np.bincount(self.codes, weights=values, minlength=self.n_groups)
        total, second = indicator_sums(self._small_codes, values,
                                       np.empty(max(1, min(values.shape[0], _BLOCK))))
        return np.array([total - second, second])

    @cached_property
    def _small_codes(self):
        """The codes as ``uint8`` for a two-group family with every row in a group (else
        None): the two-group passes convert them to floats block by block, reading an eighth
        of the bytes of ``intp`` codes and writing no ``n``-float indicator."""
        if self.n_groups != 2 or not self.dense_uniform:
            return None
        return self.codes.astype(np.uint8) if self._small is None else self._small

    @cached_property
    def dense_uniform(self):
        """Whether every row is in a group and weighs ``1 / n_g`` (``totals`` are the sizes)."""
        return bool(
            self.uniform
            and self.group_ids is None
            and self.totals is not None
            and self.totals.sum() == self.codes.size
        )

    @cached_property
    def _indicator(self):
        """``1.0`` on the rows of group 1 (two-group families covering every row: sums by one
        dot product)."""
        return self.codes.astype(np.float64)  # codes are 0 or 1

    def gap(self, outputs):
        """Largest difference between two group statistics of ``outputs`` (0 below two groups).

        Parameters
        ----------
        outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Outputs of the batch the family was built on.

        Returns
        -------
        gap : float
            ``max_g m_g - min_g m_g``; parity holds when it is at most ``tolerance``.
        """
        if self.n_groups < 2:
            return 0.0
        m = self.means(outputs)
        return float(m.max() - m.min())

    def ids(self):
        """Grouping code of each family group (``group_ids``, or ``arange(n_groups)``).

        Returns
        -------
        ids : ndarray of shape (n_groups,)
            Code, in the grouping the family was built from, of each family group.
        """
        return np.arange(self.n_groups) if self.group_ids is None else self.group_ids

    def effective_sizes(self):
        """Kish effective number of rows of each group: ``1 / sum_i w_i**2``.

        Returns
        -------
        sizes : ndarray of shape (n_groups,)
            Effective size of each group (its row count for uniform weights).
        """
        inside = self.codes >= 0
        sq = np.bincount(
            self.codes[inside], weights=self.weights[inside] ** 2, minlength=self.n_groups
        )
        with np.errstate(divide="ignore"):
            return np.where(sq > 0, 1.0 / sq, 0.0)


@dataclass(frozen=True)
class AffineRows:
    """Custom affine rows ``lower <= matrix @ P.ravel() <= upper``.

    Parameters
    ----------
    matrix : scipy sparse matrix of shape (n_rows, P.size)
        Acts on the row-major flattening of the outputs ``P`` (for multiclass
        outputs entry ``i * n_classes + c`` is ``P[i, c]``).
    lower, upper : ndarray of shape (n_rows,)
        Bounds of each row (``-inf`` / ``inf`` for one-sided rows).
    name : str, default="affine rows"
        Human-readable name used in messages.
    bounds_jacobian : scipy sparse matrix of shape (n_rows, S.size) or None, default=None
        Set when both bounds are affine in the base scores ``S`` (e.g. the
        plug-in mean residual, whose bounds are group means of the scores):
        ``d lower = d upper = bounds_jacobian @ dS.ravel()``. Derivatives with
        respect to the scores include it; ``None``: the bounds are constants.

    See Also
    --------
    Criterion : Return rows from :meth:`Criterion.rows` to define a custom criterion.

    Examples
    --------
    The mean of the first two outputs at most 0.5:

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from skfairlayer import AffineRows
    >>> rows = AffineRows(sp.csr_matrix([[0.5, 0.5, 0.0]]), np.array([-np.inf]), np.array([0.5]))
    >>> round(rows.violation(np.array([0.9, 0.5, 0.1])), 3)
    0.2
    """

    matrix: object
    lower: np.ndarray
    upper: np.ndarray
    name: str = "affine rows"
    bounds_jacobian: object = field(default=None, compare=False)

    def violation(self, outputs):
        """Largest violation of the rows by ``outputs`` (0 when all hold).

        Parameters
        ----------
        outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Outputs; the rows act on their row-major flattening.

        Returns
        -------
        violation : float
            Largest amount by which a row leaves ``[lower, upper]``.
        """
        r = self.matrix @ outputs.ravel()
        return float(max(np.max(self.lower - r, initial=0.0), np.max(r - self.upper, initial=0.0)))


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

    See Also
    --------
    project : Build and solve the problem of a criterion in one call.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import DemographicParity, ProjectionProblem
    >>> scores = np.array([0.9, 0.7, 0.2, 0.4])
    >>> families = DemographicParity().families(np.array([0, 0, 1, 1]), 2, scores, 0.1)
    >>> problem = ProjectionProblem(scores, families)
    >>> round(problem.parity_violation(scores), 3)  # the base scores: gap 0.5
    0.4
    >>> problem.box_violation(scores)
    0.0
    """

    scores: np.ndarray
    families: tuple
    lower: object = 0.0
    upper: object = 1.0
    simplex: bool = False
    rows: AffineRows | None = None

    @property
    def n_samples(self):
        """Number of rows of the batch."""
        return self.scores.shape[0]

    def box_violation(self, outputs):
        """Largest violation of the bounds (or the simplex) by ``outputs``.

        Parameters
        ----------
        outputs : ndarray of the shape of ``scores``
            Candidate outputs.

        Returns
        -------
        violation : float
            Largest amount by which an output leaves its bounds (or a row the
            simplex: a negative entry or a sum other than one); 0 when all hold.
        """
        if self.simplex:
            return float(max(-outputs.min(), np.abs(outputs.sum(axis=1) - 1).max()))
        if np.ndim(self.lower) == 0 and np.ndim(self.upper) == 0:
            return float(max(self.lower - outputs.min(), outputs.max() - self.upper, 0.0))
        return float(max(np.max(self.lower - outputs), np.max(outputs - self.upper), 0.0))

    def parity_violation(self, outputs):
        """Largest violation of the parity families and extra rows by ``outputs``.

        Parameters
        ----------
        outputs : ndarray of the shape of ``scores``
            Candidate outputs.

        Returns
        -------
        violation : float
            Largest excess of a family's gap over its tolerance, or of a row
            over its bounds; 0 or less when parity holds.
        """
        worst = 0.0
        for fam in self.families:
            worst = max(worst, fam.gap(outputs) - fam.tolerance)
        if self.rows is not None:
            worst = max(worst, self.rows.violation(outputs))
        return float(worst)


def group_family(
    codes, n_groups, raw_weights, tolerance, *, column=0, name="parity", plug_in_class=None
):
    """Build a :class:`GroupStatistics` from raw non-negative row weights.

    Each group's weights are divided by their sum, so the group statistic is
    the ``raw_weights``-weighted mean of the outputs in the group. Groups
    whose raw weights sum to zero (e.g. no row with the conditioning label)
    are left out of the family.

    Parameters
    ----------
    codes : ndarray of shape (n_samples,)
        Group of each row in ``[0, n_groups)``.
    n_groups : int
        Number of groups of the grouping.
    raw_weights : float or ndarray of shape (n_samples,)
        Non-negative weight of each row (a scalar means uniform weights).
    tolerance : float
        Largest allowed difference between two group statistics.
    column : int, default=0
        Output column the statistics read.
    name : str, default="parity"
        Name used in messages.
    plug_in_class : int or None, default=None
        Class whose posteriors the raw weights are (see :class:`GroupStatistics`).

    Returns
    -------
    family : GroupStatistics

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import group_family
    >>> fam = group_family(np.array([0, 0, 1, 1]), 2, np.array([1.0, 3.0, 0.0, 2.0]), 0.1)
    >>> fam.means(np.array([1.0, 0.0, 0.5, 0.5]))
    array([0.25, 0.5 ])
    """
    codes = np.asarray(codes, dtype=np.intp)
    uniform = np.ndim(raw_weights) == 0
    if uniform and raw_weights > 0 and np.isfinite(raw_weights):
        return _uniform_family(codes, n_groups, tolerance, column, name, plug_in_class)
    raw = np.broadcast_to(np.asarray(raw_weights, dtype=np.float64), codes.shape)
    if np.any(raw < 0) or not np.all(np.isfinite(raw)):
        raise ValueError(f"raw_weights of family {name!r} must be finite and >= 0.")
    totals = np.bincount(codes, weights=raw, minlength=n_groups)
    present = np.flatnonzero(totals > 0)
    if present.size == n_groups:
        fam_codes, ids = codes, None
    else:
        lookup = np.full(n_groups, -1, dtype=np.intp)
        lookup[present] = np.arange(present.size)
        fam_codes = lookup[codes]
        ids = present
    weights = np.where(fam_codes >= 0, raw / np.where(totals > 0, totals, 1.0)[codes], 0.0)
    return GroupStatistics(
        codes=fam_codes,
        weights=weights,
        n_groups=int(present.size),
        tolerance=float(tolerance),
        column=int(column),
        name=name,
        uniform=bool(uniform),
        group_ids=ids,
        totals=totals[present],
        plug_in_class=plug_in_class,
    )


def _uniform_family(codes, n_groups, tolerance, column, name, plug_in_class):
    """:func:`group_family` for equal raw weights, in a few passes (no weighted bincount)."""
    small = None
    if n_groups == 2:  # codes are 0 or 1: counted on their uint8 copy, which the passes read
        small = codes.astype(np.uint8)
        second = np.count_nonzero(small)
        counts = np.array([codes.size - second, second], dtype=np.float64)
    else:
        counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    present = np.flatnonzero(counts > 0)
    if present.size == n_groups:
        fam_codes, ids = codes, None
    else:
        lookup = np.full(n_groups, -1, dtype=np.intp)
        lookup[present] = np.arange(present.size)
        fam_codes, ids = lookup[codes], present
    fam = GroupStatistics(
        codes=fam_codes,
        weights=None,  # 1 / n_g, computed if anything reads them
        n_groups=int(present.size),
        tolerance=float(tolerance),
        column=int(column),
        name=name,
        uniform=True,
        group_ids=ids,
        totals=counts[present],
        plug_in_class=plug_in_class,
    )
    if small is not None and present.size == 2:
        object.__setattr__(fam, "_small", small)  # the uint8 codes just counted, for the passes
    return fam


def check_labels(labels, scores):
    """Validate labels against the scores: 0/1 for binary, class indices for multiclass.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        True labels.
    scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        The base scores the labels go with.

    Returns
    -------
    labels : ndarray of shape (n_samples,), dtype=intp
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must be of shape ({scores.shape[0]},), one per row of the scores. "
            f"Got an array of shape {arr.shape} instead."
        )
    n_classes = 2 if scores.ndim == 1 else scores.shape[1]
    if arr.dtype.kind == "b":
        arr = arr.astype(np.intp)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.intp)
    if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= n_classes:
        kind = "0/1 (1 = the class whose probability the scores hold)" if scores.ndim == 1 else (
            f"class indices in [0, {n_classes}) (columns of the scores)"
        )
        raise ValueError(f"labels must be {kind}. Got {np.unique(arr)[:10]!r} instead.")
    return arr.astype(np.intp, copy=False)


def _check_targets(labels, scores):
    """Real-valued labels (regression targets): finite, one per row of the scores."""
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != scores.shape[0] or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"labels must be finite real targets of shape ({scores.shape[0]},), one per row "
            f"of the scores. Got an array of shape {arr.shape} instead."
        )
    return arr
