"""Group-parity metrics of decisions and probabilities (fairlearn's signatures)."""

from numbers import Real

import numpy as np

from .._groups import encode


# --------------------------------------------------------------------------- validation
def _check_y_pred(y_pred, name="y_pred"):
    """1-D float array of decisions or probabilities in [0, 1]."""
    if y_pred is None:
        raise ValueError(f"{name} is required. Got {y_pred!r} instead.")
    arr = np.asarray(y_pred)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, of shape (n_samples,): decisions or probabilities of the "
            "positive class (e.g. predict_proba(X)[:, 1]). "
            f"Got an array of shape {arr.shape} instead."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty: at least one sample is required.")
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric: decisions (0 or 1, or bool) or probabilities in [0, 1]. "
            f"Convert class labels first, e.g. (y_pred == positive_label). "
            f"Got an array of dtype {arr.dtype} instead."
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} contains NaN or infinity; every sample needs a finite prediction. "
            f"Got {int((~np.isfinite(arr)).sum())} non-finite value(s) instead."
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must hold decisions (0 or 1) or probabilities in [0, 1]. "
            f"Got values in [{lo!r}, {hi!r}] instead."
        )
    return arr


def _check_y_true(y_true, n_samples, pos_label):
    """Boolean array: True where y_true equals pos_label."""
    arr = np.asarray(y_true)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            f"y_true must be of shape ({n_samples},), like y_pred. "
            f"Got an array of shape {arr.shape} instead."
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError("y_true contains NaN; every sample needs a label.")
    labels = np.unique(arr)
    if labels.size > 2:
        raise ValueError(
            "y_true must be binary (at most two labels). "
            f"Got {labels.size} labels {labels.tolist()!r} instead."
        )
    positive = arr == pos_label
    if not positive.any() and not set(labels.tolist()) <= {0, 1}:
        raise ValueError(
            f"pos_label={pos_label!r} is not a label of y_true (labels: {labels.tolist()!r}). "
            f"Pass the label of the positive class as pos_label. Got {pos_label!r} instead."
        )
    return positive


def _check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return np.ones(n_samples)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must be of shape ({n_samples},), like y_pred. "
            f"Got an array of shape {w.shape} instead."
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    return w


def _check_real(value, name, *, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite real number. Got {value!r} instead.")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a real number {span}. Got {value!r} instead.")
    return float(value)


def _prepare(y_true, y_pred, sensitive_features, sample_weight, *, pos_label, y_true_use):
    """Validated inputs; ``y_true_use`` is "ignored" (shape checked), "optional" or "required"."""
    y_pred = _check_y_pred(y_pred)
    n = y_pred.shape[0]
    positive = None
    if y_true is None:
        if y_true_use == "required":
            raise ValueError(
                "y_true is required by this metric (its rates are conditional on the true "
                "label). Got None instead."
            )
    elif y_true_use == "ignored":
        if np.shape(y_true)[:1] != (n,):
            raise ValueError(
                f"y_true must be None or of shape ({n},), like y_pred. "
                f"Got an array of shape {np.shape(y_true)} instead."
            )
    else:
        positive = _check_y_true(y_true, n, pos_label)
    (grouping,), groups = encode(sensitive_features, n_samples=n)
    codes = grouping.codes
    weight = _check_sample_weight(sample_weight, n)
    return y_pred, positive, codes, groups, weight


def _group_means(values, codes, n_groups, weight):
    """Weighted mean of ``values`` per group and the total weight of each group."""
    total = np.bincount(codes, weights=weight, minlength=n_groups)
    sums = np.bincount(codes, weights=weight * values, minlength=n_groups)
    means = np.full(n_groups, np.nan)
    np.divide(sums, total, out=means, where=total > 0)
    return means, total


def _defined_rates(values, codes, groups, weight, *, metric, rate, subset=None):
    """Per-group means, raising ValueError when a group has nothing to average.

    ``subset`` (a boolean mask and its description) restricts the mean to some rows.
    """
    if subset is not None:
        mask, description = subset
        weight = weight * mask
    means, total = _group_means(values, codes, len(groups), weight)
    empty = np.flatnonzero(total <= 0)
    if empty.size:
        names = [_label(groups[g]) for g in empty]
        why = (
            "no sample with positive sample_weight" if subset is None
            else f"no (positively weighted) sample with {description}"
        )
        raise ValueError(
            f"{metric} is undefined: group(s) {names!r} have {why}, so their {rate} does not "
            "exist. Evaluate on data where every group has such samples (e.g. a split "
            "stratified by group and label), or merge the group(s) with others. "
            f"Got groups {[_label(g) for g in groups]!r} instead."
        )
    return means


def _label(label):
    if isinstance(label, tuple):
        return tuple(_label(v) for v in label)
    return label.item() if isinstance(label, np.generic) else label


def _spread(rates):
    return float(rates.max() - rates.min())


# --------------------------------------------------------------------------- metrics
def demographic_parity_difference(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Largest difference between the groups' mean predictions.

    ``max_g m_g - min_g m_g`` with ``m_g`` the (weighted) mean of ``y_pred``
    over group ``g``: the selection-rate gap for decisions, the gap of mean
    probabilities for probabilities. 0 means parity.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        Ignored; accepted for signature compatibility with the other metrics
        and with fairlearn. Checked for shape when given.
    y_pred : array-like of shape (n_samples,)
        Decisions (0/1 or bool) or probabilities of the positive class.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    difference : float
        In [0, 1]; 0 when there is a single group.

    Raises
    ------
    ValueError
        If the inputs are empty, have different lengths, contain NaN, if
        ``y_pred`` leaves [0, 1], or if a group has zero total weight.

    See Also
    --------
    demographic_parity_ratio : The ratio of the smallest to the largest mean.

    Examples
    --------
    >>> from skfairlayer.metrics import demographic_parity_difference
    >>> y_pred = [1, 1, 0, 1, 0, 0]
    >>> group = ["a", "a", "a", "b", "b", "b"]
    >>> round(demographic_parity_difference(None, y_pred, sensitive_features=group), 4)
    0.3333
    """
    y_pred, _, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, pos_label=1, y_true_use="ignored"
    )
    rates = _defined_rates(
        y_pred, codes, groups, weight, metric="demographic_parity_difference",
        rate="mean prediction",
    )
    return _spread(rates)


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features, sample_weight=None):
    """Ratio of the smallest to the largest group mean prediction.

    ``min_g m_g / max_g m_g`` with ``m_g`` the (weighted) mean of ``y_pred``
    over group ``g``. 1 means parity; the "four-fifths rule" asks for at
    least 0.8. When every group's mean is 0 (nobody selected), the groups are
    equal and the ratio is 1.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        Ignored; accepted for signature compatibility.
    y_pred : array-like of shape (n_samples,)
        Decisions (0/1 or bool) or probabilities of the positive class.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.

    Returns
    -------
    ratio : float
        In [0, 1]; 1 when there is a single group.

    See Also
    --------
    demographic_parity_difference : The difference of the extreme means.

    Examples
    --------
    >>> from skfairlayer.metrics import demographic_parity_ratio
    >>> y_pred = [1, 1, 0, 1, 0, 0]
    >>> group = ["a", "a", "a", "b", "b", "b"]
    >>> demographic_parity_ratio(None, y_pred, sensitive_features=group)
    0.5
    """
    y_pred, _, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, pos_label=1, y_true_use="ignored"
    )
    rates = _defined_rates(
        y_pred, codes, groups, weight, metric="demographic_parity_ratio",
        rate="mean prediction",
    )
    top = float(rates.max())
    return 1.0 if top == 0.0 else float(rates.min()) / top


def equal_opportunity_difference(
    y_true, y_pred, *, sensitive_features, sample_weight=None, pos_label=1
):
    """Largest difference between the groups' true positive rates.

    The true positive rate of group ``g`` is the (weighted) mean of
    ``y_pred`` over the samples of ``g`` with ``y_true == pos_label``: the
    share of positives selected for decisions, the mean probability given to
    positives for probabilities.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True binary labels.
    y_pred : array-like of shape (n_samples,)
        Decisions (0/1 or bool) or probabilities of the positive class.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.
    pos_label : int, str or bool, default=1
        Label of the positive class in ``y_true``.

    Returns
    -------
    difference : float
        In [0, 1].

    Raises
    ------
    ValueError
        If a group has no positive sample (its true positive rate does not
        exist; fairlearn would silently count it as 0), besides the input
        errors of :func:`demographic_parity_difference`.

    See Also
    --------
    equalized_odds_difference : True and false positive rates together.

    Examples
    --------
    >>> from skfairlayer.metrics import equal_opportunity_difference
    >>> y_true = [1, 1, 0, 1, 1, 0]
    >>> y_pred = [1, 1, 0, 1, 0, 0]
    >>> group = ["a", "a", "a", "b", "b", "b"]
    >>> equal_opportunity_difference(y_true, y_pred, sensitive_features=group)
    0.5
    """
    y_pred, positive, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, pos_label=pos_label, y_true_use="required"
    )
    tpr = _defined_rates(
        y_pred, codes, groups, weight, metric="equal_opportunity_difference",
        rate="true positive rate", subset=(positive, "y_true == pos_label"),
    )
    return _spread(tpr)


def equalized_odds_difference(
    y_true, y_pred, *, sensitive_features, sample_weight=None, pos_label=1
):
    """Larger of the true positive rate gap and the false positive rate gap.

    ``max(max_g TPR_g - min_g TPR_g, max_g FPR_g - min_g FPR_g)``, with the
    rates the (weighted) mean of ``y_pred`` over the positive, respectively
    negative, samples of each group (fairlearn's ``agg="worst_case"``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True binary labels.
    y_pred : array-like of shape (n_samples,)
        Decisions (0/1 or bool) or probabilities of the positive class.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights.
    pos_label : int, str or bool, default=1
        Label of the positive class in ``y_true``.

    Returns
    -------
    difference : float
        In [0, 1].

    Raises
    ------
    ValueError
        If a group has no positive or no negative sample, besides the input
        errors of :func:`demographic_parity_difference`.

    Examples
    --------
    >>> from skfairlayer.metrics import equalized_odds_difference
    >>> y_true = [1, 1, 0, 1, 1, 0]
    >>> y_pred = [1, 1, 1, 1, 0, 0]
    >>> group = ["a", "a", "a", "b", "b", "b"]
    >>> equalized_odds_difference(y_true, y_pred, sensitive_features=group)
    1.0
    """
    y_pred, positive, codes, groups, weight = _prepare(
        y_true, y_pred, sensitive_features, sample_weight, pos_label=pos_label, y_true_use="required"
    )
    tpr = _defined_rates(
        y_pred, codes, groups, weight, metric="equalized_odds_difference",
        rate="true positive rate", subset=(positive, "y_true == pos_label"),
    )
    fpr = _defined_rates(
        y_pred, codes, groups, weight, metric="equalized_odds_difference",
        rate="false positive rate", subset=(~positive, "y_true != pos_label"),
    )
    return max(_spread(tpr), _spread(fpr))


def group_summary(
    y_true,
    y_score,
    *,
    sensitive_features,
    threshold=0.5,
    sample_weight=None,
    pos_label=1,
    as_frame=None,
):
    """Per-group table of sizes, scores, rates and errors.

    Unlike the ``*_difference`` metrics, a rate that does not exist for a
    group (a true positive rate without positives) is reported as NaN: the
    table describes, it does not rank.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or None
        True binary labels; ``None`` leaves the columns that need them NaN.
    y_score : array-like of shape (n_samples,)
        Probabilities of the positive class, or decisions (0/1).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each sample; several columns define intersectional groups.
    threshold : float, default=0.5
        A sample is selected when ``y_score >= threshold``.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative sample weights for the means and rates (``size`` counts
        rows).
    pos_label : int, str or bool, default=1
        Label of the positive class in ``y_true``.
    as_frame : bool, default=None
        Return a pandas DataFrame (True) or a dict of arrays (False).
        ``None``: a DataFrame when pandas is installed.

    Returns
    -------
    summary : DataFrame or dict of ndarray
        One row per group (index: the group labels, named after the
        sensitive feature(s) when they have names) with columns ``size``
        (rows), ``mean_score``, ``selection_rate`` (share with
        ``y_score >= threshold``), ``base_rate`` (share with
        ``y_true == pos_label``), ``accuracy`` (of the thresholded
        decisions), ``tpr`` and ``fpr`` (of the thresholded decisions). As a
        dict, the same columns plus ``"group"``, the group labels.

    Examples
    --------
    >>> from skfairlayer.metrics import group_summary
    >>> table = group_summary(
    ...     [1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], sensitive_features=["a", "a", "b", "b"],
    ...     as_frame=False,
    ... )
    >>> table["group"].tolist(), table["selection_rate"].tolist(), table["tpr"].tolist()
    (['a', 'b'], [0.5, 0.5], [1.0, 0.0])
    """
    threshold = _check_real(threshold, "threshold", low=0.0, high=1.0)
    if as_frame is None:
        try:
            import pandas  # noqa: F401

            as_frame = True
        except ImportError:  # pragma: no cover - exercised without pandas
            as_frame = False
    elif not isinstance(as_frame, bool | np.bool_):
        raise TypeError(f"as_frame must be a bool or None. Got {as_frame!r} instead.")
    y_score, positive, codes, groups, weight = _prepare(
        y_true, y_score, sensitive_features, sample_weight, pos_label=pos_label,
        y_true_use="optional",
    )
    k = len(groups)
    selected = (y_score >= threshold).astype(np.float64)
    nan = np.full(k, np.nan)
    columns = {
        "size": np.bincount(codes, minlength=k),
        "mean_score": _group_means(y_score, codes, k, weight)[0],
        "selection_rate": _group_means(selected, codes, k, weight)[0],
        "base_rate": nan,
        "accuracy": nan,
        "tpr": nan,
        "fpr": nan,
    }
    if positive is not None:
        pos = positive.astype(np.float64)
        columns["base_rate"] = _group_means(pos, codes, k, weight)[0]
        columns["accuracy"] = _group_means(
            (selected == pos).astype(np.float64), codes, k, weight
        )[0]
        columns["tpr"] = _group_means(selected, codes, k, weight * pos)[0]
        columns["fpr"] = _group_means(selected, codes, k, weight * (1.0 - pos))[0]
    labels = [_label(g) for g in groups]
    if not as_frame:
        group_array = np.empty(k, dtype=object)
        group_array[:] = labels
        return {"group": group_array, **columns}
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - exercised without pandas
        raise ImportError(
            "group_summary(as_frame=True) requires pandas. You can install it with "
            "`pip install pandas`, or pass as_frame=False to get a dict of arrays."
        ) from exc
    names = _feature_names(sensitive_features)
    if labels and isinstance(labels[0], tuple):
        index = pd.MultiIndex.from_tuples(labels, names=names)
    else:
        index = pd.Index(labels, name=names[0] if names else None)
    return pd.DataFrame(columns, index=index)


def _feature_names(sensitive_features):
    if hasattr(sensitive_features, "columns"):
        return [str(c) for c in sensitive_features.columns]
    name = getattr(sensitive_features, "name", None)
    if name is not None and getattr(sensitive_features, "ndim", 1) == 1:
        return [str(name)]
    if isinstance(sensitive_features, dict):
        return [str(c) for c in sensitive_features]
    return None


