"""Validation of scores, tolerances, bounds and the groups mode (group input: :mod:`._groups`)."""

from numbers import Real

import numpy as np

__all__ = ["check_bounds", "check_groups_mode", "check_scores", "check_tolerance"]


def check_groups_mode(groups):
    """Validate the ``groups`` mode: ``"intersectional"`` or ``"marginal"``."""
    if groups not in ("intersectional", "marginal"):
        raise ValueError(
            f"groups must be 'intersectional' (every combination of the sensitive attributes "
            f"is a group) or 'marginal' (parity per attribute). Got {groups!r} instead."
        )
    return groups


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


def check_bounds(bounds, *, scalar=False):
    """Validate ``(lower, upper)`` output bounds: numbers or arrays, None for an open end.

    Returns both as float64 arrays, or floats with ``scalar`` (``-inf`` / ``inf`` for
    None); raises ``ValueError`` unless they are a pair (of numbers with ``scalar``),
    free of NaN, with ``lower <= upper`` everywhere.
    """
    kind = "numbers" if scalar else "numbers or arrays"
    try:
        lower, upper = (
            np.asarray(default if b is None else b, dtype=np.float64)
            for b, default in zip(bounds, (-np.inf, np.inf), strict=True)
        )
    except (TypeError, ValueError):
        lower = None
    if lower is None or (scalar and (lower.ndim or upper.ndim)):
        raise ValueError(
            f"bounds must be a pair (lower, upper) of {kind}, None for an open end. "
            f"Got {bounds!r} instead."
        )
    if np.isnan(lower).any() or np.isnan(upper).any() or np.any(lower > upper):
        raise ValueError(
            "bounds must satisfy lower <= upper, without NaN (None or an infinite value for "
            f"an open end). Got {bounds!r} instead."
        )
    return (float(lower), float(upper)) if scalar else (lower, upper)
