"""Parsing of sensitive features and scores; encoding of groups as integer codes."""

from numbers import Real

import numpy as np

from .exceptions import UnseenGroupError, format_labels

__all__ = ["encode_groups", "encode_marginal", "check_scores", "check_tolerance", "check_groups_mode"]


def _as_columns(sensitive_features):
    """Return the sensitive features as a list of 1-D object/number arrays (one per column)."""
    if hasattr(sensitive_features, "iloc"):  # pandas Series or DataFrame
        if getattr(sensitive_features, "ndim", 1) == 1:
            return [np.asarray(sensitive_features)]
        return [np.asarray(sensitive_features.iloc[:, j]) for j in range(sensitive_features.shape[1])]
    if isinstance(sensitive_features, dict):
        return [np.asarray(v) for v in sensitive_features.values()]
    arr = np.asarray(sensitive_features)
    if arr.ndim == 0:
        raise ValueError(
            "sensitive_features must be an array-like of shape (n_samples,) or "
            f"(n_samples, n_attributes). Got a scalar {sensitive_features!r} instead."
        )
    if arr.ndim == 1:
        return [arr]
    if arr.ndim == 2:
        return [arr[:, j] for j in range(arr.shape[1])]
    raise ValueError(
        "sensitive_features must have 1 or 2 dimensions. "
        f"Got an array of shape {arr.shape} instead."
    )


def _check_missing(column):
    if column.dtype.kind == "f" and np.isnan(column).any():
        raise ValueError(
            "sensitive_features contains NaN. Every row needs a group: fill or drop the "
            "missing values (e.g. with a separate 'unknown' category) first."
        )
    if column.dtype.kind == "O" and any(
        v is None or (isinstance(v, float) and v != v) for v in column
    ):
        raise ValueError(
            "sensitive_features contains missing values (None/NaN). Every row needs a "
            "group: fill them (e.g. with a separate 'unknown' category) first."
        )


def _factorize(column):
    """Integer codes and sorted unique labels of one column, fast for small integers."""
    if column.dtype.kind in "biu" and column.size:
        lo, hi = int(column.min()), int(column.max())
        if hi - lo < 1 << 16:
            if lo == 0 and column.dtype == np.intp:
                shifted = column
            else:
                shifted = (column - lo).astype(np.intp, copy=False)
            if hi - lo <= 1:  # min and max are both present: no counting needed
                return shifted, np.arange(lo, hi + 1).astype(column.dtype)
            present = np.flatnonzero(np.bincount(shifted, minlength=hi - lo + 1))
            if present.size == hi - lo + 1:
                return shifted, present + lo
            lookup = np.full(hi - lo + 1, -1, dtype=np.intp)
            lookup[present] = np.arange(present.size)
            return lookup[shifted], (present + lo).astype(column.dtype)
    if column.dtype.kind == "O":
        column = column.astype(str) if all(isinstance(v, str) for v in column[:1000]) else column
    labels, codes = np.unique(column, return_inverse=True)
    return codes.astype(np.intp, copy=False).reshape(-1), labels


def encode_groups(sensitive_features, *, groups=None, n_samples=None):
    """Encode sensitive features as integer group codes.

    Parameters
    ----------
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership. Several columns define intersectional groups (every
        combination of values present is a group).
    groups : ndarray, default=None
        Known group labels (as returned by a previous call). Rows are encoded
        against them; a label not among them raises :class:`UnseenGroupError`.
    n_samples : int, default=None
        Expected number of rows, checked when given.

    Returns
    -------
    codes : ndarray of shape (n_samples,), dtype=intp
        Index of each row's group in ``groups``.
    groups : ndarray of shape (n_groups,)
        Sorted group labels; tuples (object array) for several attributes.
    """
    columns = _as_columns(sensitive_features)
    n = columns[0].shape[0]
    if n_samples is not None and n != n_samples:
        raise ValueError(
            f"sensitive_features has {n} rows but the data has {n_samples}; they must "
            "describe the same samples, in the same order."
        )
    for col in columns:
        _check_missing(col)
    if len(columns) == 1:
        codes, labels = _factorize(columns[0])
    else:
        parts = [_factorize(col) for col in columns]
        combined = np.zeros(n, dtype=np.int64)
        for c, lab in parts:
            combined = combined * len(lab) + c
        codes, present = _factorize(combined)
        labels = np.empty(present.size, dtype=object)
        radix = [len(lab) for _, lab in parts]
        for k, key in enumerate(present.tolist()):
            idx = []
            for r in reversed(radix):
                key, rem = divmod(key, r)
                idx.append(rem)
            labels[k] = tuple(lab[i].item() if hasattr(lab[i], "item") else lab[i]
                              for (_, lab), i in zip(parts, reversed(idx), strict=True))
    if groups is None:
        return codes, labels
    return _recode(codes, labels, groups), groups


def encode_marginal(sensitive_features, *, groups=None, n_samples=None):
    """Encode each sensitive attribute separately (marginal groups).

    Parameters
    ----------
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership, one column per attribute.
    groups : list of ndarray, default=None
        Known labels per attribute (as returned by a previous call); a label
        not among them raises :class:`UnseenGroupError`.
    n_samples : int, default=None
        Expected number of rows, checked when given.

    Returns
    -------
    codes : list of ndarray of shape (n_samples,)
        Per attribute, the index of each row's value in that attribute's labels.
    groups : list of ndarray
        Per attribute, the sorted labels.
    """
    columns = _as_columns(sensitive_features)
    if groups is not None and len(groups) != len(columns):
        raise ValueError(
            f"sensitive_features has {len(columns)} attribute(s) but {len(groups)} were seen "
            "during fit; pass the same sensitive columns."
        )
    codes, labels = [], []
    for j, col in enumerate(columns):
        c, lab = encode_groups(col, groups=None if groups is None else groups[j], n_samples=n_samples)
        codes.append(c)
        labels.append(lab)
    return codes, labels


def check_groups_mode(groups):
    """Validate the ``groups`` mode: ``"intersectional"`` or ``"marginal"``."""
    if groups not in ("intersectional", "marginal"):
        raise ValueError(
            f"groups must be 'intersectional' (every combination of the sensitive attributes "
            f"is a group) or 'marginal' (parity per attribute). Got {groups!r} instead."
        )
    return groups


def _recode(codes, labels, groups):
    """Map codes over ``labels`` to codes over the known ``groups``."""
    known = {_key(g): i for i, g in enumerate(groups)}
    mapping = np.empty(len(labels), dtype=np.intp)
    unseen = []
    for j, lab in enumerate(labels):
        idx = known.get(_key(lab))
        if idx is None:
            unseen.append(lab)
        else:
            mapping[j] = idx
    if unseen:
        raise UnseenGroupError(
            f"Sensitive group(s) {format_labels(unseen)} were not seen during fit (known groups: "
            f"{format_labels(groups)}). Refit with data that contains them, or map them to a known group."
        )
    return mapping[codes]


def _key(label):
    if isinstance(label, tuple):
        return tuple(_key(v) for v in label)
    if isinstance(label, np.generic):
        return label.item()
    return label


def check_scores(scores, *, name="proba"):
    """Validate scores: float64, finite, 1-D (binary) or 2-D (multiclass), non-empty."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be of shape (n_samples,) or (n_samples, n_classes). "
            f"Got an array of shape {arr.shape} instead."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one sample is required.")
    # A finite sum means every entry is finite (NaN and inf propagate); only an overflowing
    # sum of huge values needs the elementwise check.
    if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        raise ValueError(
            f"{name} contains NaN or infinity. The base model must output finite "
            "probabilities; check its input for missing or extreme values."
        )
    return arr


def check_tolerance(tolerance):
    """Validate the parity tolerance: a real number >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real | np.number):
        raise TypeError(
            f"tolerance must be a real number >= 0. Got {tolerance!r} instead."
        )
    tolerance = float(tolerance)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a real number >= 0. Got {tolerance!r} instead.")
    return tolerance
