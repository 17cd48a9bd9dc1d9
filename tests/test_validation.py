"""Tests of the input checks of scores and tolerances (group encoding: test_groups.py)."""

import numpy as np
import pytest

from skfairlayer._validation import check_bounds, check_scores, check_tolerance


@pytest.mark.parametrize(
    "func, arg, err, match",
    [
        (check_scores, [[0.1, 0.2, 0.3]] * 2 + [[np.nan, 0, 1]], ValueError, "NaN"),
        (check_scores, np.zeros((0,)), ValueError, "empty"),
        (check_tolerance, -0.5, ValueError, "tolerance"),
        (check_tolerance, True, TypeError, "tolerance"),
        (check_tolerance, float("inf"), ValueError, "tolerance"),
        (check_bounds, (1.0, 0.0), ValueError, "lower <= upper"),
        (check_bounds, (np.nan, 1.0), ValueError, "NaN"),
        (check_bounds, (0.0, [1.0, np.nan]), ValueError, "NaN"),
        (check_bounds, (0.0,), ValueError, "a pair"),
        (check_bounds, 1.0, ValueError, "a pair"),
        (check_bounds, ("a", 1.0), ValueError, "a pair"),
    ],
)
def test_errors(func, arg, err, match):
    """Check that invalid input raises a message naming the problem."""
    with pytest.raises(err, match=match):
        func(arg)


def test_bounds_open_ends_and_arrays():
    """None is an open end; arrays are kept; ``scalar`` asks for a pair of numbers."""
    lower, upper = check_bounds((None, 2))
    assert lower == -np.inf and upper == 2.0 and lower.dtype == np.float64
    assert check_bounds((None, None), scalar=True) == (-np.inf, np.inf)
    lower, upper = check_bounds(([0.0, 1.0], None))
    np.testing.assert_array_equal(lower, [0.0, 1.0])
    with pytest.raises(ValueError, match="pair .* of numbers,"):
        check_bounds(([0.0, 1.0], None), scalar=True)
