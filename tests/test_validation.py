"""Tests of the input checks of scores and tolerances (group encoding: test_groups.py)."""

import numpy as np
import pytest

from skfairlayer._validation import check_scores, check_tolerance


@pytest.mark.parametrize(
    "func, arg, err, match",
    [
        (check_scores, [[0.1, 0.2, 0.3]] * 2 + [[np.nan, 0, 1]], ValueError, "NaN"),
        (check_scores, np.zeros((0,)), ValueError, "empty"),
        (check_tolerance, -0.5, ValueError, "tolerance"),
        (check_tolerance, True, TypeError, "tolerance"),
        (check_tolerance, float("inf"), ValueError, "tolerance"),
    ],
)
def test_errors(func, arg, err, match):
    """Check that invalid input raises a message naming the problem."""
    with pytest.raises(err, match=match):
        func(arg)
