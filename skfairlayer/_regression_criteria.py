"""Criteria over real-valued outputs: the mean residual of a regression target."""

import numpy as np
import scipy.sparse as sp

from ._criteria import AffineRows, Criterion

__all__ = ["TargetMeanResidual"]


class TargetMeanResidual(Criterion):
    """Mean residual of a real target per group: ``|mean(y - p | A = g)| <= tolerance``.

    The regression form of :class:`~skfairlayer.MeanResidual`:
    one two-sided row per group, ``m_g(y) - tolerance <= m_g(p) <= m_g(y) +
    tolerance``. With labels (real targets: fitting, audits of a labelled
    batch) the centres are the groups' label means; without labels the
    plug-in replaces ``y`` by the base predictions, which then meet the rows
    (the projection only enforces the bounds).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import project
    >>> from skfairlayer._regression_criteria import TargetMeanResidual
    >>> scores = np.array([10.0, 12.0, 20.0, 22.0])
    >>> y = np.array([10.0, 10.0, 25.0, 25.0])
    >>> result = project(scores, [0, 0, 1, 1], tolerance=0.5, criterion=TargetMeanResidual(),
    ...                  labels=y, bounds=(-np.inf, np.inf))
    >>> np.round(result.proba, 3)
    array([ 9.5, 11.5, 23.5, 25.5])
    """

    continuous_labels = True

    def rows(self, codes, n_groups, scores, tolerance, labels=None):
        """One two-sided row per present group around its label (or score) mean.

        Parameters
        ----------
        codes : ndarray of shape (n_samples,), dtype=intp
            Group of each row in ``[0, n_groups)``.
        n_groups : int
            Number of groups of the grouping.
        scores : ndarray of shape (n_samples,)
            Base predictions of the batch.
        tolerance : float
            Largest allowed mean residual of a group.
        labels : ndarray of shape (n_samples,) or None, default=None
            Real targets; ``None`` for the plug-in form.

        Returns
        -------
        rows : AffineRows
        """
        if scores.ndim != 1:
            raise ValueError(
                "TargetMeanResidual reads one real output per row. "
                f"Got scores of shape {scores.shape} instead."
            )
        n = codes.shape[0]
        sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
        present = np.flatnonzero(sizes > 0)
        lookup = np.full(n_groups, -1, dtype=np.intp)
        lookup[present] = np.arange(present.size)
        raw = scores if labels is None else labels
        target = np.bincount(codes, weights=raw, minlength=n_groups)[present] / sizes[present]
        matrix = sp.csr_matrix(
            (1.0 / sizes[codes], (lookup[codes], np.arange(n))), shape=(present.size, n)
        )
        return AffineRows(
            matrix, target - tolerance, target + tolerance, name="mean residual",
            bounds_jacobian=matrix if labels is None else None,
        )
