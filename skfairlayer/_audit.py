"""Audit of a labelled batch: project predictions onto mean residual parity, report who moved."""

import numpy as np

from ._projection import project
from ._validation import check_bounds, check_scores, check_tolerance

__all__ = ["ResidualAudit", "audit_residuals"]


class ResidualAudit:
    """Result of :func:`audit_residuals`.

    Attributes
    ----------
    adjusted : ndarray of shape (n_samples,)
        The projected predictions: closest to ``y_pred`` in squared distance
        with every group's mean residual within ``tolerance`` (and within the
        bounds).
    table : list of dict
        One entry per group (per attribute value for ``groups="marginal"``):
        ``attribute``, ``group``, ``n``, ``residual_before`` and
        ``residual_after`` (mean of ``y_true - prediction``), ``n_moved``
        (rows whose prediction changed), ``mean_change`` and
        ``max_abs_change`` (of ``adjusted - y_pred``).
    tolerance : float
        The tolerance of the audit.
    n_moved : int
        Rows whose prediction changed.
    distortion : float
        Root mean squared change ``sqrt(mean((adjusted - y_pred)**2))``.
    """

    def __init__(self, adjusted, table, tolerance, n_moved, distortion):
        self.adjusted = adjusted
        self.table = table
        self.tolerance = tolerance
        self.n_moved = n_moved
        self.distortion = distortion

    def to_frame(self):
        """The table as a pandas DataFrame (pandas is imported here, lazily).

        Returns
        -------
        frame : pandas.DataFrame
        """
        import pandas as pd

        return pd.DataFrame(self.table)

    def __repr__(self):
        head = ("attribute", "group", "n", "resid before", "resid after", "moved",
                "mean change", "max |change|")
        rows = [
            (str(r["attribute"]), str(r["group"]), str(r["n"]), f"{r['residual_before']:.4g}",
             f"{r['residual_after']:.4g}", str(r["n_moved"]), f"{r['mean_change']:.4g}",
             f"{r['max_abs_change']:.4g}")
            for r in self.table
        ]
        widths = [max(len(c[j]) for c in [head, *rows]) for j in range(len(head))]
        lines = ["  ".join(c[j].rjust(widths[j]) for j in range(len(head))) for c in [head, *rows]]
        summary = (
            f"ResidualAudit(tolerance={self.tolerance:.4g}, n_moved={self.n_moved}, "
            f"rms change={self.distortion:.4g})"
        )
        return "\n".join([summary, *lines])


def audit_residuals(
    y_true, y_pred, *, sensitive_features, tolerance, groups="intersectional", bounds=None
):
    """Project a labelled batch onto mean residual parity and report who moved, by how much.

    The employee-pay audit: given the true values (e.g. pay) and a model's
    predictions, find the smallest change of the predictions (in squared
    distance) after which every group's mean residual ``mean(y_true -
    prediction)`` is within ``tolerance`` of zero, and report per group how
    many predictions moved and by how much. The projection is exact and
    verified (rows within ``1e-9`` times the standard deviation of
    ``y_true``, bounds exactly).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True targets.
    y_pred : array-like of shape (n_samples,)
        Predictions to audit.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership, one column per attribute.
    tolerance : float
        Largest allowed mean residual of a group, in the target's units.
    groups : {"intersectional", "marginal"}, default="intersectional"
        With several attributes: every combination of values is a group, or
        each attribute's groups separately (the table then has a row per
        attribute value).
    bounds : None or tuple of (float or None, float or None), default=None
        Range of the adjusted predictions; ``None`` (or a ``None`` end) is unbounded.

    Returns
    -------
    audit : ResidualAudit
        The adjusted predictions and the per-group table (readable repr).

    Raises
    ------
    InfeasibleProblemError
        If the bounds cannot hold every group's mean residual within tolerance.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import audit_residuals
    >>> y = np.array([50.0, 60.0, 40.0, 45.0])
    >>> pred = np.array([55.0, 60.0, 50.0, 52.0])
    >>> audit = audit_residuals(y, pred, sensitive_features=["a", "a", "b", "b"], tolerance=1.0)
    >>> np.round(audit.adjusted, 3)
    array([53.5, 58.5, 42.5, 44.5])
    >>> [r["n_moved"] for r in audit.table]
    [2, 2]
    """
    tolerance = check_tolerance(tolerance)
    y_pred = check_scores(y_pred, name="y_pred")
    y_true = check_scores(y_true, name="y_true")
    if y_pred.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            "y_true and y_pred must be 1-D of the same length. "
            f"Got shapes {y_true.shape} and {y_pred.shape} instead."
        )
    center = float(np.mean(y_true))
    scale = float(np.std(y_true))
    scale = scale if scale > 1e-12 * (1.0 + abs(center)) else 1.0
    lower, upper = check_bounds((None, None) if bounds is None else bounds, scalar=True)
    result = project(
        (y_pred - center) / scale, sensitive_features, tolerance=tolerance / scale,
        criterion="mean_residual", labels=(y_true - center) / scale, groups=groups,
        bounds=((lower - center) / scale, (upper - center) / scale),
    )
    adjusted = np.clip(center + scale * result.proba, lower, upper)
    change = adjusted - y_pred
    moved = np.abs(change) > 1e-12 * scale * (1.0 + np.abs(y_pred - center) / scale)
    codes = result.codes if result.codes.ndim == 2 else result.codes[:, None]
    labels = result.groups if groups == "marginal" else [result.groups]
    table = []
    for j, names in enumerate(labels):
        for g, name in enumerate(names):
            rows = codes[:, j] == g
            if not rows.any():
                continue
            table.append({
                "attribute": j if groups == "marginal" else "all",
                "group": name.item() if hasattr(name, "item") else name,
                "n": int(rows.sum()),
                "residual_before": float(np.mean(y_true[rows] - y_pred[rows])),
                "residual_after": float(np.mean(y_true[rows] - adjusted[rows])),
                "n_moved": int(moved[rows].sum()),
                "mean_change": float(np.mean(change[rows])),
                "max_abs_change": float(np.max(np.abs(change[rows]))),
            })
    return ResidualAudit(
        adjusted, table, tolerance, int(moved.sum()), float(np.sqrt(np.mean(change**2)))
    )
