"""Group-parity metrics of real-valued predictions (re-exported by :mod:`skfairlayer.metrics`)."""

import numpy as np

from .._groups import encode

__all__ = [
    "group_error_ratio",
    "ks_distance",
    "mean_difference",
    "residual_difference",
    "wasserstein_distance",
]


def _check_real(values, name, n=None):
    if values is None:
        raise ValueError(f"{name} is required. Got None instead.")
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.shape[0] != n):
        want = "(n_samples,)" if n is None else f"({n},), like y_pred"
        raise ValueError(f"{name} must be a non-empty 1-D array of shape {want}. "
                         f"Got an array of shape {arr.shape} instead.")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric. Got an array of dtype {arr.dtype} instead.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; every sample needs a finite value.")
    return arr


def _defined_rates(*args, **kwargs):
    from ._classification import _defined_rates

    return _defined_rates(*args, **kwargs)


def _spread(values):
    return float(values.max() - values.min())


def _prepare(y_true, y_pred, sensitive_features, sample_weight, *, need_true):
    from ._classification import _check_sample_weight

    y_pred = _check_real(y_pred, "y_pred")
    n = y_pred.shape[0]
    if need_true:
        y_true = _check_real(y_true, "y_true", n)
    elif y_true is not None and np.shape(y_true)[:1] != (n,):
        raise ValueError(f"y_true must be None or of shape ({n},), like y_pred. "
                         f"Got an array of shape {np.shape(y_true)} instead.")
    (grouping,), groups = encode(sensitive_features, n_samples=n)
    codes = grouping.codes
    return y_true, y_pred, codes, groups, _check_sample_weight(sample_weight, n)


def mean_difference(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Largest difference between the groups' mean predictions (regression parity).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        Ignored; checked for shape when given.
    y_pred : array-like of shape (n_samples,)
        Real-valued predictions.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    difference : float
        ``max_g m_g - min_g m_g`` in the units of ``y_pred``; 0 for one group.

    Examples
    --------
    >>> from skfairlayer.metrics import mean_difference
    >>> mean_difference(None, [10.0, 12.0, 20.0, 22.0], sensitive_features=[0, 0, 1, 1])
    10.0
    """
    _, y_pred, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, need_true=False
    )
    return _spread(_defined_rates(y_pred, codes, groups, weight, metric="mean_difference",
                                  rate="mean prediction"))


def residual_difference(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Largest difference between the groups' mean residuals ``mean(y_true - y_pred)``.

    0 when every group is over- or under-predicted by the same amount on
    average. (The mean residual criterion bounds each group's mean residual
    by the tolerance, which bounds this difference by twice the tolerance.)

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True targets.
    y_pred : array-like of shape (n_samples,)
        Predictions.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    difference : float
        ``max_g r_g - min_g r_g`` with ``r_g`` the group's mean residual.

    Examples
    --------
    >>> from skfairlayer.metrics import residual_difference
    >>> residual_difference([10, 10, 20, 20], [9, 11, 24, 24], sensitive_features=[0, 0, 1, 1])
    4.0
    """
    y_true, y_pred, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, need_true=True
    )
    return _spread(_defined_rates(y_true - y_pred, codes, groups, weight,
                                  metric="residual_difference", rate="mean residual"))


def group_error_ratio(y_true, y_pred, *, sensitive_features, sample_weight=None, error="mse"):
    """Ratio of the largest to the smallest group error (1 means equal errors).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True targets.
    y_pred : array-like of shape (n_samples,)
        Predictions.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.
    error : {"mse", "mae"}, default="mse"
        The group error: mean squared or mean absolute error.

    Returns
    -------
    ratio : float
        ``max_g e_g / min_g e_g`` (``inf`` when some group's error is 0 and
        another's is not; 1 when all are 0).

    Examples
    --------
    >>> from skfairlayer.metrics import group_error_ratio
    >>> group_error_ratio([0, 0, 0, 0], [1, -1, 2, -2], sensitive_features=[0, 0, 1, 1])
    4.0
    """
    if error not in ("mse", "mae"):
        raise ValueError(f"error must be 'mse' or 'mae'. Got {error!r} instead.")
    y_true, y_pred, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, need_true=True
    )
    r = y_true - y_pred
    values = r * r if error == "mse" else np.abs(r)
    errors = _defined_rates(values, codes, groups, weight, metric="group_error_ratio",
                            rate="error")
    high, low = float(errors.max()), float(errors.min())
    if high == 0.0:
        return 1.0
    return high / low if low > 0 else float("inf")


def _pairwise_cdf_distance(y_pred, codes, groups, weight, reduce, metric):
    """Max over pairs of groups of ``reduce(|F_g - F_h|, widths)`` on the pooled grid."""
    _defined_rates(y_pred, codes, groups, weight, metric=metric, rate="distribution")
    order = np.argsort(y_pred, kind="stable")
    x, c, w = y_pred[order], codes[order], weight[order]
    k = len(groups)
    step = np.zeros((x.size, k))
    step[np.arange(x.size), c] = w
    cdf = np.cumsum(step, axis=0) / step.sum(axis=0)  # F_g at each sorted point (right limit)
    last = np.r_[x[1:] != x[:-1], True]  # keep the last row of each tied value
    cdf, x = cdf[last], x[last]
    widths = np.diff(x)
    worst = 0.0
    for g in range(k):
        diff = np.abs(cdf - cdf[:, [g]])[:, g + 1:]
        if diff.size:
            worst = max(worst, float(reduce(diff, widths).max()))
    return worst


def ks_distance(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Largest two-sample Kolmogorov–Smirnov distance between two groups' predictions.

    ``max_{g, h} sup_x |F_g(x) - F_h(x)|`` with ``F_g`` the (weighted)
    empirical distribution of ``y_pred`` in group ``g``: 0 for identical
    distributions, 1 for separated ones. Distributional parity (the
    barycenter) drives it to 0; mean parity only equalises means.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        Ignored; checked for shape when given.
    y_pred : array-like of shape (n_samples,)
        Predictions.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    distance : float
        In [0, 1].

    Examples
    --------
    >>> from skfairlayer.metrics import ks_distance
    >>> ks_distance(None, [1, 2, 3, 4], sensitive_features=[0, 0, 1, 1])
    1.0
    """
    _, y_pred, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, need_true=False
    )
    return _pairwise_cdf_distance(
        y_pred, codes, groups, weight, lambda d, widths: d.max(axis=0), "ks_distance"
    )


def wasserstein_distance(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Largest 1-Wasserstein distance between two groups' prediction distributions.

    ``max_{g, h} int |F_g(x) - F_h(x)| dx``, in the units of ``y_pred``: the
    least average move that turns one group's predictions into the other's.
    It is at least the mean difference of the pair.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        Ignored; checked for shape when given.
    y_pred : array-like of shape (n_samples,)
        Predictions.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    distance : float
        ``>= 0``; 0 for identical distributions.

    Examples
    --------
    >>> from skfairlayer.metrics import wasserstein_distance
    >>> wasserstein_distance(None, [1, 2, 3, 4], sensitive_features=[0, 0, 1, 1])
    2.0
    """
    _, y_pred, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, need_true=False
    )
    return _pairwise_cdf_distance(
        y_pred, codes, groups, weight, lambda d, widths: widths @ d[:-1], "wasserstein_distance"
    )
