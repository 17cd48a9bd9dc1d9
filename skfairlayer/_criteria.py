"""Parity criteria, turned into affine constraints over a batch of outputs.

A criterion maps a batch (group codes, base scores, optionally labels) to one or
more :class:`GroupStatistics` *families* and, optionally, extra
:class:`AffineRows`. A family holds one weighted mean per group,
``m_g(P) = sum_{i in g} w_i P[i, column]`` (weights of a group sum to 1),
and asks that ``max_g m_g - min_g m_g <= tolerance``. With an auxiliary level
``t`` this is the set of affine rows ``t <= m_g(P) <= t + tolerance``.

Solvers only see a :class:`ProjectionProblem`: scores, bounds, families and
optional extra affine rows. Nothing here solves anything.

Criteria shipped here
---------------------
- :class:`DemographicParity`: equal mean output per group (per class column
  for multiclass outputs).
- :class:`EqualOpportunity`: equal mean output among rows whose true class is
  the positive one ("true-positive rate in expectation").
- :class:`EqualizedOdds`: equal opportunity for every true class (binary: true-
  and false-positive rates in expectation).
- :class:`MeanResidual`: ``|mean(y - p | A = g)| <= tolerance`` per group, a
  custom affine criterion written with :class:`AffineRows`.

Labels and the plug-in (label-free) form
----------------------------------------
Criteria conditioned on the true label need ``y``, which a deployed model never
has. Without labels they use the base model's posteriors as plug-in weights:
``E[p | Y = 1, A = g] ~ sum_{i in g} s_i p_i / sum_{i in g} s_i`` (and
``1 - s_i`` for ``Y = 0``), still linear in ``p``. This is exact in
expectation when the base scores are *calibrated within each group*
(``P(Y = 1 | s, A = g) = s``); calibrate the base (e.g.
:class:`~sklearn.calibration.CalibratedClassifierCV`) when unsure.

Several sensitive attributes
----------------------------
:func:`build_problem` takes one or more *groupings* (codes over groups). One
grouping of intersectional codes (every combination of values is a group) is
the default; *marginal* parity passes one grouping per attribute and gets one
set of families per attribute.
"""

import dataclasses
from numbers import Integral

import numpy as np
import scipy.sparse as sp

from ._problem import (  # the data types criteria build, re-exported
    SMALL_GROUP_SIZE,
    AffineRows,
    GroupStatistics,
    ProjectionProblem,
    _check_targets,
    check_labels,
    group_family,
)

__all__ = [
    "GroupStatistics",
    "AffineRows",
    "ProjectionProblem",
    "Criterion",
    "DemographicParity",
    "EqualOpportunity",
    "EqualizedOdds",
    "MeanResidual",
    "group_family",
    "check_labels",
    "build_problem",
    "small_groups",
    "make_criterion",
    "CRITERIA",
    "SMALL_GROUP_SIZE",
]



class Criterion:
    """Base class of criteria: turns a batch into parity families and affine rows.

    To define a custom criterion, subclass and implement :meth:`families`
    and/or :meth:`rows`; pass an instance as ``criterion=`` to
    :func:`~skfairlayer.project` or
    :class:`~skfairlayer.FairnessLayerClassifier`.

    **Contract.** Both methods receive the batch:

    - ``codes`` : ndarray of shape (n_samples,), dtype=intp — group of each
      row in ``[0, n_groups)`` (one grouping: the intersectional groups, or one
      attribute's groups for marginal parity, where the methods are called once
      per attribute);
    - ``n_groups`` : int;
    - ``scores`` : ndarray of shape (n_samples,) (binary: positive-class
      probability) or (n_samples, n_classes) (multiclass);
    - ``tolerance`` : float >= 0;
    - ``labels`` : ndarray of shape (n_samples,) of int or None — binary: 0/1;
      multiclass: class index in ``[0, n_classes)``. ``None`` at inference.

    :meth:`families` returns a tuple of :class:`GroupStatistics` (use
    :func:`group_family` to build one from raw row weights); :meth:`rows`
    returns :class:`AffineRows` over ``P.ravel()`` or ``None``. Everything
    must be *linear in the outputs* and may depend on the scores and labels
    (which are constants of the batch). A criterion that cannot be evaluated
    without labels sets ``requires_labels = True``; otherwise, with
    ``labels=None`` it must build its label-free (plug-in) form. Families and
    rows must come in the same number and order for every batch with the
    same output shape (the estimator matches fitted families by position).

    The exact solvers handle demographic-parity-like families; anything else
    is solved by the general OSQP backend and verified like every projection.

    Examples
    --------
    A cap on each group's mean score (one row per group), as a custom criterion:

    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from skfairlayer import project
    >>> from skfairlayer import AffineRows, Criterion
    >>> class MeanCap(Criterion):
    ...     def rows(self, codes, n_groups, scores, tolerance, labels=None):
    ...         sizes = np.bincount(codes, minlength=n_groups)
    ...         matrix = sp.csr_matrix(
    ...             (1.0 / sizes[codes], (codes, np.arange(codes.size))),
    ...             shape=(n_groups, codes.size),
    ...         )
    ...         upper = np.full(n_groups, 0.5)
    ...         return AffineRows(matrix, np.full(n_groups, -np.inf), upper, name="mean cap")
    >>> result = project([0.9, 0.7, 0.2, 0.4], [0, 0, 1, 1], criterion=MeanCap())
    >>> np.round(result.proba, 3)
    array([0.6, 0.4, 0.2, 0.4])
    """

    #: Whether the criterion needs labels (it has no plug-in, label-free form).
    requires_labels = False
    #: Whether the labels of one output per row are real values (e.g. regression targets)
    #: rather than 0/1; the labels of multiclass scores are always class indices.
    continuous_labels = False

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        """Return the parity families of this batch (default: none).

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Labels (0/1, or class indices); ``None`` for the plug-in form.

        Returns
        -------
        families : tuple of GroupStatistics
            Each asks its group statistics to agree within its tolerance.
        """
        return ()

    def rows(self, codes, n_groups, scores, tolerance, labels=None):
        """Return extra affine rows of this batch, or ``None`` (default).

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Labels (0/1, or class indices); ``None`` for the plug-in form.

        Returns
        -------
        rows : AffineRows or None
            Rows over the flattened outputs, or ``None`` for no extra rows.
        """
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


def _columns(scores):
    return range(scores.shape[1]) if scores.ndim == 2 else [0]


def _class_weight(scores, labels, y):
    """Raw weight of each row in the statistics conditioned on ``Y = y``.

    The indicator ``1{labels = y}`` with labels, else the plug-in posterior
    ``P(Y = y | x)`` from the scores.
    """
    if labels is not None:
        return (labels == y).astype(np.float64)
    if scores.ndim == 1:
        return scores if y == 1 else 1.0 - scores
    return scores[:, y]


class DemographicParity(Criterion):
    """Demographic parity: equal mean output across groups, within the tolerance.

    For binary outputs the family reads the positive-class probability; for
    multiclass outputs there is one family per class column. Needs no labels.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import DemographicParity
    >>> (fam,) = DemographicParity().families(np.array([0, 0, 1]), 2, np.zeros(3), 0.05)
    >>> fam.means(np.array([0.2, 0.4, 0.9]))
    array([0.3, 0.9])
    >>> round(fam.gap(np.array([0.2, 0.4, 0.9])), 3)
    0.6
    """

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        """Return one uniform-weight family (per class column for multiclass scores).

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Ignored: demographic parity does not depend on the labels.

        Returns
        -------
        families : tuple of GroupStatistics
            The group means of the outputs (of each class column).
        """
        multi = scores.ndim == 2
        return tuple(
            group_family(
                codes, n_groups, 1.0, tolerance, column=c,
                name="demographic parity" + (f" (class {c})" if multi else ""),
            )
            for c in _columns(scores)
        )


class EqualOpportunity(Criterion):
    """Equal opportunity in expectation: equal mean output among the positives.

    Binary outputs: ``E[p | Y = 1, A = g]`` agree across groups within the
    tolerance (the true-positive rate in expectation). Multiclass outputs: for
    each class ``c`` (or only ``positive_class``), ``E[P_c | Y = c, A = g]``
    agree (per-class recall in expectation).

    With labels the statistics are means over the rows of each label. Without
    labels (inference) they use the base posteriors as plug-in weights,
    ``sum_{i in g} s_i p_i / sum_{i in g} s_i``: exact in expectation when the
    base scores are calibrated within each group.

    Parameters
    ----------
    positive_class : int or None, default=None
        Multiclass only: the single class whose recall must agree; ``None``
        means every class. Ignored for binary (1-D) scores.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import project
    >>> scores = np.array([0.9, 0.6, 0.2, 0.5, 0.4, 0.1])
    >>> groups = np.array([0, 0, 0, 1, 1, 1])
    >>> y = np.array([1, 1, 0, 1, 0, 0])
    >>> p = project(scores, groups, tolerance=0.0, criterion="equal_opportunity", labels=y).proba
    >>> float(p[:2].mean()), float(p[3])  # mean output among the positives of each group
    (0.6666..., 0.6666...)
    """

    def __init__(self, positive_class=None):
        self.positive_class = positive_class

    def _classes(self, scores):
        if scores.ndim == 1:
            return [1]
        if self.positive_class is None:
            return list(range(scores.shape[1]))
        pc = self.positive_class
        if not isinstance(pc, Integral) or not 0 <= pc < scores.shape[1]:
            raise ValueError(
                f"positive_class must be a column index in [0, {scores.shape[1]}). "
                f"Got {pc!r} instead."
            )
        return [int(pc)]

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        """Return one family per conditioning class: the group means among its rows.

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch (the plug-in weights without labels).
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Labels (0/1, or class indices); ``None`` for the plug-in form.

        Returns
        -------
        families : tuple of GroupStatistics
            Binary scores: one family (``Y = 1``); multiclass: one per class
            (or only ``positive_class``).
        """
        out = []
        for y in self._classes(scores):
            col = 0 if scores.ndim == 1 else y
            out.append(group_family(
                codes, n_groups, _class_weight(scores, labels, y), tolerance, column=col,
                name="equal opportunity" + (f" (class {y})" if scores.ndim == 2 else ""),
                plug_in_class=None if labels is not None else y,
            ))
        return tuple(out)

    def __repr__(self):
        if self.positive_class is None:
            return "EqualOpportunity()"
        return f"EqualOpportunity(positive_class={self.positive_class!r})"


class EqualizedOdds(Criterion):
    """Equalized odds in expectation: equal mean output within every true class.

    Binary outputs: ``E[p | Y = y, A = g]`` agree across groups for ``y = 1``
    and ``y = 0`` (true- and false-positive rates in expectation). Multiclass
    outputs: ``E[P_c | Y = y, A = g]`` agree for every true class ``y`` and
    output column ``c``.

    Without labels the base posteriors are plug-in weights (``s_i`` for
    ``Y = 1``, ``1 - s_i`` for ``Y = 0``; ``S[i, y]`` for multiclass); see
    :class:`EqualOpportunity` for the calibration assumption.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import EqualizedOdds
    >>> s = np.array([0.9, 0.5, 0.2, 0.6])
    >>> tpr, fpr = EqualizedOdds().families(np.array([0, 0, 1, 1]), 2, s, 0.05)
    >>> tpr.name, np.round(tpr.weights, 3)  # plug-in weights s_i / sum_g s
    ('equalized odds (Y=1)', array([0.643, 0.357, 0.25 , 0.75 ]))
    """

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        """Return one family per true class (and output column for multiclass scores).

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch (the plug-in weights without labels).
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Labels (0/1, or class indices); ``None`` for the plug-in form.

        Returns
        -------
        families : tuple of GroupStatistics
            Binary scores: ``Y = 1`` then ``Y = 0``; multiclass: one family per
            (true class, output column) pair.
        """
        if scores.ndim == 1:
            return tuple(
                group_family(
                    codes, n_groups, _class_weight(scores, labels, y), tolerance,
                    name=f"equalized odds (Y={y})",
                    plug_in_class=None if labels is not None else y,
                )
                for y in (1, 0)
            )
        out = []
        for y in range(scores.shape[1]):
            raw = _class_weight(scores, labels, y)
            for c in range(scores.shape[1]):
                out.append(group_family(
                    codes, n_groups, raw, tolerance, column=c,
                    name=f"equalized odds (Y={y}, class {c})",
                    plug_in_class=None if labels is not None else y,
                ))
        return tuple(out)


class MeanResidual(Criterion):
    """Mean residual per group: ``|mean(y - p | A = g)| <= tolerance`` for every group.

    The paper's residual criterion, written as custom :class:`AffineRows`
    (one two-sided row per group, per class column for multiclass outputs,
    with ``y`` the one-hot label). Unlike a parity family it bounds each
    group's mean output around the group's own label mean rather than
    comparing groups.

    With labels (fitting, audits of labelled batches) the row bounds are the
    group label means. For one output per row the labels are real values:
    0/1 for a binary classifier's probabilities, any real target for
    regression outputs (the criterion of
    :class:`~skfairlayer.FairnessLayerRegressor`); for multiclass scores they
    are class indices. Without labels the plug-in replaces ``y`` by the base
    scores, so the base scores themselves meet the rows: the projection then
    only clips, and :meth:`~skfairlayer.FairnessLayerClassifier.predict`
    keeps each group's selection rate within ``tolerance`` of its mean score.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import project
    >>> scores = np.array([0.9, 0.8, 0.3, 0.2])
    >>> y = np.array([1, 0, 0, 0])
    >>> result = project(scores, [0, 0, 1, 1], tolerance=0.1, criterion="mean_residual", labels=y)
    >>> np.round(result.proba, 3)  # group 0: mean 0.85 -> 0.6; group 1: 0.25 -> 0.1
    array([0.65, 0.55, 0.15, 0.05])

    Regression outputs against real targets, without bounds:

    >>> scores = np.array([10.0, 12.0, 20.0, 22.0])
    >>> y = np.array([10.0, 10.0, 25.0, 25.0])
    >>> result = project(scores, [0, 0, 1, 1], tolerance=0.5, criterion="mean_residual",
    ...                  labels=y, bounds=(None, None))
    >>> np.round(result.proba, 3)
    array([ 9.5, 11.5, 23.5, 25.5])
    """

    continuous_labels = True

    def rows(self, codes, n_groups, scores, tolerance, labels=None):
        """Return one two-sided row per group (and class column): the mean residual.

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch (the plug-in labels without labels).
        tolerance : float
            The criterion's tolerance.
        labels : ndarray of shape (n_samples,) or None, default=None
            Real labels (one output per row) or class indices (multiclass);
            ``None`` for the plug-in form.

        Returns
        -------
        rows : AffineRows
            ``mean_g(y) - tolerance <= mean_g(p) <= mean_g(y) + tolerance``,
            class-major (all groups of class 0, then class 1, ...).
        """
        n = codes.shape[0]
        sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
        present = np.flatnonzero(sizes > 0)
        lookup = np.full(n_groups, -1, dtype=np.intp)
        lookup[present] = np.arange(present.size)
        n_cols = 1 if scores.ndim == 1 else scores.shape[1]
        target = []
        mats = []
        for c in range(n_cols):
            if scores.ndim == 1:  # the labels' own values (0/1, or real targets)
                raw = scores if labels is None else labels
            else:
                raw = _class_weight(scores, labels, c)
            mean = np.bincount(codes, weights=raw, minlength=n_groups)[present] / sizes[present]
            target.append(mean)
            mats.append(sp.csr_matrix(
                (1.0 / sizes[codes], (lookup[codes], np.arange(n) * n_cols + c)),
                shape=(present.size, n * n_cols),
            ))
        # Row order: class-major (all groups of class 0, then class 1, ...).
        target = np.concatenate(target)
        matrix = sp.vstack(mats).tocsr()
        return AffineRows(
            matrix, target - tolerance, target + tolerance, name="mean residual",
            # Plug-in bounds are the group means of the scores: matrix @ S.ravel() +- tolerance.
            bounds_jacobian=matrix if labels is None else None,
        )


CRITERIA = {
    "demographic_parity": DemographicParity,
    "equal_opportunity": EqualOpportunity,
    "equalized_odds": EqualizedOdds,
    "mean_residual": MeanResidual,
}


def make_criterion(criterion):
    """Turn a criterion name or instance into a :class:`Criterion` instance."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion]()
    raise ValueError(
        f"criterion must be one of {sorted(CRITERIA)} or a Criterion instance. "
        f"Got {criterion!r} instead."
    )


def _stack_rows(parts):
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    jacobian = None
    if any(r.bounds_jacobian is not None for r in parts):
        jacobian = sp.vstack([
            r.bounds_jacobian if r.bounds_jacobian is not None
            else sp.csr_matrix(r.matrix.shape)  # same width: outputs and scores share a shape
            for r in parts
        ]).tocsr()
    return AffineRows(
        sp.vstack([r.matrix for r in parts]).tocsr(),
        np.concatenate([r.lower for r in parts]),
        np.concatenate([r.upper for r in parts]),
        name=" + ".join(dict.fromkeys(r.name for r in parts)),
        bounds_jacobian=jacobian,
    )


def build_problem(
    criterion,
    scores,
    groupings,
    tolerance,
    *,
    labels=None,
    lower=0.0,
    upper=1.0,
    names=None,
    keep_trivial=False,
):
    """Build the :class:`ProjectionProblem` of a criterion over one or more groupings.

    Parameters
    ----------
    criterion : str or Criterion
        The criterion.
    scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        Base scores; 2-D scores are projected onto the simplex row by row.
    groupings : list of (codes, n_groups)
        One pair for intersectional groups; one per attribute for marginal
        parity (the criterion is applied to each grouping separately).
    tolerance : float
        The criterion's tolerance.
    labels : ndarray of shape (n_samples,) or None, default=None
        Labels (see :func:`check_labels`; real values for one output per row when the
        criterion's ``continuous_labels`` is set); ``None`` for the plug-in form.
    lower, upper : float or ndarray, default=0.0, 1.0
        Box bounds for binary outputs (ignored on the simplex).
    names : list of str or None, default=None
        A name per grouping, prefixed to family names in messages.
    keep_trivial : bool, default=False
        Keep families with fewer than two groups (always met, e.g. a batch
        with one group). By default they are dropped; keep them to match
        families by position across batches.

    Returns
    -------
    problem : ProjectionProblem
    """
    crit = make_criterion(criterion)
    if crit.requires_labels and labels is None:
        raise ValueError(
            f"criterion {crit!r} requires labels (it has no label-free form); pass labels=y."
        )
    if labels is not None:
        labels = (
            _check_targets(labels, scores) if crit.continuous_labels and scores.ndim == 1
            else check_labels(labels, scores)
        )
    families, rows = [], []
    for j, (codes, n_groups) in enumerate(groupings):
        prefix = f"{names[j]}: " if names is not None else ""
        for fam in crit.families(codes, n_groups, scores, tolerance, labels=labels):
            if not isinstance(fam, GroupStatistics):
                raise TypeError(
                    f"{crit!r}.families must return GroupStatistics. Got {fam!r} instead."
                )
            if fam.n_groups < 2 and not keep_trivial:
                continue
            families.append(fam if not prefix else _renamed(fam, prefix + fam.name))
        r = crit.rows(codes, n_groups, scores, tolerance, labels=labels)
        if r is not None:
            if not isinstance(r, AffineRows):
                raise TypeError(f"{crit!r}.rows must return AffineRows or None. Got {r!r} instead.")
            size = scores.size
            if r.matrix.shape[1] != size:
                raise ValueError(
                    f"{crit!r}.rows returned a matrix with {r.matrix.shape[1]} columns; it acts "
                    f"on the flattened outputs and must have {size}."
                )
            rows.append(r)
    return ProjectionProblem(
        scores,
        tuple(families),
        lower=lower,
        upper=upper,
        simplex=scores.ndim == 2,
        rows=_stack_rows(rows),
    )


def _renamed(fam, name):
    return dataclasses.replace(fam, name=name)


def small_groups(families, min_size=SMALL_GROUP_SIZE):
    """Groups whose effective size in some family is below ``min_size``.

    Parameters
    ----------
    families : iterable of GroupStatistics
        The families to inspect.
    min_size : float, default=SMALL_GROUP_SIZE
        Effective size (Kish: ``1 / sum_i w_i**2``; the row count for uniform
        weights) below which a group's statistic is mostly noise.

    Returns
    -------
    small : list of (str, int, float)
        ``(family name, group code in the family's grouping, effective size)``.
    """
    out = []
    for fam in families:
        sizes = fam.effective_sizes()
        for j in np.flatnonzero(sizes < min_size):
            out.append((fam.name, int(fam.ids()[j]), float(sizes[j])))
    return out
