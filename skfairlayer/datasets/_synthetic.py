"""Synthetic classification data with group-correlated features and group-biased labels."""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_parity_classification"]

_BLOCK = 20  # features are equicorrelated within blocks of this many columns


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}. Got {value!r} instead.")
    return int(value)


def _check_real(value, name, *, low=None, high=None, closed_high=False):
    bad = isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value)
    if not bad and low is not None:
        bad = value < low
    if not bad and high is not None:
        bad = value > high if closed_high else value >= high
    if bad:
        interval = {
            (None, None): "a finite real number",
            (0, None): "a finite real number >= 0",
        }.get((low, high), f"a real number in [{low}, {high}{']' if closed_high else ')'}")
        raise ValueError(f"{name} must be {interval}. Got {value!r} instead.")
    return float(value)


def _check_proportions(group_proportions, n_groups):
    if group_proportions is None:
        return np.full(n_groups, 1.0 / n_groups)
    p = np.asarray(group_proportions, dtype=np.float64)
    if (
        p.shape != (n_groups,)
        or not np.isfinite(p).all()
        or (p < 0).any()
        or abs(p.sum() - 1.0) > 1e-8
    ):
        raise ValueError(
            f"group_proportions must be {n_groups} non-negative numbers (one per group) "
            f"summing to 1. Got {group_proportions!r} instead."
        )
    return p / p.sum()


def _correlated_features(rng, n_samples, n_features, correlation):
    """Standard normal features, equicorrelated within blocks of ``_BLOCK`` columns."""
    independent = rng.standard_normal((n_samples, n_features))
    if correlation == 0.0:
        return independent
    n_blocks = -(-n_features // _BLOCK)
    common = rng.standard_normal((n_samples, n_blocks))
    block_of = np.arange(n_features) // _BLOCK
    return np.sqrt(1.0 - correlation) * independent + np.sqrt(correlation) * common[:, block_of]


def make_parity_classification(
    n_samples=1000,
    *,
    n_features=5,
    n_groups=2,
    group_proportions=None,
    group_shift=1.0,
    bias=1.0,
    noise=0.5,
    nonlinear=False,
    feature_correlation=0.3,
    random_state=None,
):
    """Generate a binary classification problem with group disparities.

    Modelled on the synthetic design of Troxell, Montúfar and Roemer (ICML
    2026), adapted to classification: features correlated with a sensitive
    group, an outcome that depends on the features (linearly or not), a
    direct group bias in the outcome, and noise on the outcome.

    The generative process, with ``c_g = g - (n_groups - 1) / 2`` the centred
    index of group ``g``:

    1. ``groups`` is drawn i.i.d. with probabilities ``group_proportions``.
    2. ``X`` is standard normal, equicorrelated (``feature_correlation``)
       within blocks of 20 columns. The first ``ceil(n_features / 3)``
       columns are *proxies* of the group: ``group_shift * c_g`` is added to
       them, so their means differ by ``group_shift`` between consecutive
       groups.
    3. A signal ``f(X)`` of roughly unit scale: ``X @ w`` with a random unit
       vector ``w`` whose proxy entries are positive (``nonlinear=False``), or
       ``(X @ w + (Σ_j a_j (X_j² - 1) + Σ_j b_j X_j X_{j+1}) / sqrt(n_features)) / sqrt(2)``
       with standard normal ``a``, ``b`` (``nonlinear=True``; the quadratic
       terms are invisible to a linear model).
    4. ``y = 1`` when ``f(X) + bias * c_g + noise * e > 0``, with ``e``
       standard normal: ``bias`` raises the odds of higher-index groups,
       ``noise`` blurs the labels (Gaussian noise on the latent score, as in
       the paper).

    With positive ``group_shift`` and ``bias``, higher-index groups get the
    positive label more often, through two channels: the proxies (indirect,
    ``group_shift``) and the label bias (direct, ``bias``). A model that does
    not see ``groups`` still learns group-dependent outcomes through the
    proxies.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of samples.
    n_features : int, default=5
        Number of features (columns of ``X``; the groups are not among them).
    n_groups : int, default=2
        Number of sensitive groups, at least 2.
    group_proportions : array-like of shape (n_groups,), default=None
        Probability of each group; must sum to 1. ``None`` means equal shares.
        Groups are drawn at random, so a rare group may be absent from a
        small sample.
    group_shift : float, default=1.0
        Difference between the means of the proxy features of consecutive
        groups (0 makes the features independent of the group).
    bias : float, default=1.0
        Difference between the latent outcome scores of consecutive groups
        at equal features (0: no direct label bias; negative values favour
        the lower-index groups).
    noise : float, default=0.5
        Standard deviation of the Gaussian noise added to the latent score
        before thresholding (0: labels are a deterministic function of
        ``X`` and ``groups``).
    nonlinear : bool, default=False
        Whether the signal has quadratic and interaction terms.
    feature_correlation : float, default=0.3
        Correlation between two features of the same block of 20, in
        [0, 1).
    random_state : int, RandomState instance or None, default=None
        Seed of the generator; pass an int for reproducible output.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The features.
    y : ndarray of shape (n_samples,), dtype=int64
        Binary labels (0 or 1).
    groups : ndarray of shape (n_samples,), dtype=int64
        Sensitive group of each sample, in ``range(n_groups)``.

    See Also
    --------
    sklearn.datasets.make_classification : General-purpose generator.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.datasets import make_parity_classification
    >>> X, y, groups = make_parity_classification(2000, bias=1.0, random_state=0)
    >>> X.shape, y.shape, groups.shape
    ((2000, 5), (2000,), (2000,))
    >>> rates = [y[groups == g].mean() for g in (0, 1)]
    >>> bool(rates[1] > rates[0] + 0.2)
    True

    To let an estimator read the groups from ``X``, append them as a column:

    >>> X_with_group = np.c_[X, groups]
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_features = _check_int(n_features, "n_features", 1)
    n_groups = _check_int(n_groups, "n_groups", 2)
    proportions = _check_proportions(group_proportions, n_groups)
    group_shift = _check_real(group_shift, "group_shift")
    bias = _check_real(bias, "bias")
    noise = _check_real(noise, "noise", low=0)
    if not isinstance(nonlinear, bool | np.bool_):
        raise TypeError(f"nonlinear must be a bool. Got {nonlinear!r} instead.")
    feature_correlation = _check_real(
        feature_correlation, "feature_correlation", low=0, high=1
    )
    rng = check_random_state(random_state)

    groups = rng.choice(n_groups, size=n_samples, p=proportions).astype(np.int64)
    centred = groups - (n_groups - 1) / 2.0
    X = _correlated_features(rng, n_samples, n_features, feature_correlation)
    n_proxies = -(-n_features // 3)
    X[:, :n_proxies] += group_shift * centred[:, None]

    w = rng.standard_normal(n_features)
    w[:n_proxies] = np.abs(w[:n_proxies])  # proxies push outcomes the same way as bias
    w /= np.linalg.norm(w)
    signal = X @ w
    if nonlinear:
        a = rng.standard_normal(n_features)
        b = rng.standard_normal(n_features)
        quadratic = (X**2 - 1.0) @ a + (X * np.roll(X, -1, axis=1)) @ b
        signal = (signal + quadratic / np.sqrt(n_features)) / np.sqrt(2.0)

    latent = signal + bias * centred + noise * rng.standard_normal(n_samples)
    y = (latent > 0).astype(np.int64)
    return X, y, groups
