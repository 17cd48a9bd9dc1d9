"""Synthetic regression data modelled on the paper's regression factorial."""

import numpy as np
from sklearn.utils import check_random_state

from ._synthetic import _check_int, _check_proportions, _check_real

__all__ = ["make_paper_regression"]


def make_paper_regression(
    n_samples=1000,
    n_features=10,
    *,
    n_groups=2,
    group_proportions=None,
    group_shift=1.0,
    predictive_power=0.7,
    noise="gaussian",
    linear=True,
    output_box=None,
    random_state=None,
):
    """Generate regression data whose target and features depend on a group.

    The factors of the paper's regression experiments: the group split
    (``n_groups``, ``group_proportions``), how strongly the target depends on
    the group (``group_shift``), the predictive power of the features (the
    share of the target's variance they explain), the noise distribution,
    a linear or non-linear signal, and an optional output box.

    The features are standard normal, the first one shifted by the group
    (so a model can infer the group from ``X``). The target is
    ``signal(X) + group_shift * g / max(1, n_groups - 1) + noise``, with the
    noise scaled so that the signal explains ``predictive_power`` of the
    variance of ``signal + noise``. With ``output_box=(lower, upper)`` the
    target is mapped into the box by a logistic squashing of its
    standardised value.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of rows.
    n_features : int, default=10
        Number of features (at least 1).
    n_groups : int, default=2
        Number of sensitive groups (at least 2).
    group_proportions : array-like of shape (n_groups,), default=None
        Share of each group; ``None`` means equal shares.
    group_shift : float, default=1.0
        Difference in mean target between the first and the last group (before
        the noise and the box), in units of the signal's standard deviation.
    predictive_power : float, default=0.7
        Share in ``(0, 1]`` of the variance of ``signal + noise`` explained by
        the signal.
    noise : {"gaussian", "heavy"}, default="gaussian"
        Gaussian noise, or Student t noise with 3 degrees of freedom (heavy
        tails), scaled to the same variance.
    linear : bool, default=True
        Linear signal ``X @ beta``, or a non-linear one (sines and a product of
        features) of the same variance.
    output_box : tuple of (float, float) or None, default=None
        Range of the target; ``None`` leaves it unbounded.
    random_state : int, RandomState instance or None, default=None
        Seed of the generator.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        Features.
    y : ndarray of shape (n_samples,)
        Target.
    group : ndarray of shape (n_samples,)
        Group of each row, in ``[0, n_groups)``.

    Examples
    --------
    >>> from skfairlayer.datasets import make_paper_regression
    >>> X, y, group = make_paper_regression(500, 5, n_groups=3, random_state=0)
    >>> X.shape, y.shape, sorted(set(group.tolist()))
    ((500, 5), (500,), [0, 1, 2])
    >>> bool(y[group == 2].mean() > y[group == 0].mean())
    True
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_features = _check_int(n_features, "n_features", 1)
    n_groups = _check_int(n_groups, "n_groups", 2)
    proportions = _check_proportions(group_proportions, n_groups)
    group_shift = _check_real(group_shift, "group_shift")
    power = _check_real(predictive_power, "predictive_power", low=0, high=1, closed_high=True)
    if power <= 0:
        raise ValueError(f"predictive_power must be in (0, 1]. Got {predictive_power!r} instead.")
    if noise not in ("gaussian", "heavy"):
        raise ValueError(f"noise must be 'gaussian' or 'heavy'. Got {noise!r} instead.")
    if output_box is not None:
        lower, upper = (_check_real(b, "output_box") for b in output_box)
        if not lower < upper:
            raise ValueError(f"output_box must be (lower, upper) with lower < upper. "
                             f"Got {output_box!r} instead.")
    rng = check_random_state(random_state)
    group = rng.choice(n_groups, size=n_samples, p=proportions)
    level = group / max(1, n_groups - 1)
    X = rng.standard_normal((n_samples, n_features))
    X[:, 0] += level
    beta = rng.standard_normal(n_features) / np.sqrt(n_features)
    if linear:
        signal = X @ beta
    else:
        signal = np.sin(2.0 * X) @ beta + (X[:, 0] * X[:, -1] if n_features > 1 else X[:, 0] ** 2)
    signal = (signal - signal.mean()) / max(float(signal.std()), 1e-12)
    if noise == "gaussian":
        eps = rng.standard_normal(n_samples)
    else:
        eps = rng.standard_t(3, size=n_samples) / np.sqrt(3.0)  # unit variance
    y = signal + group_shift * level + np.sqrt((1.0 - power) / power) * eps
    if output_box is not None:
        z = (y - y.mean()) / max(float(y.std()), 1e-12)
        y = lower + (upper - lower) / (1.0 + np.exp(-z))
    return X, y, group
