"""Tests of group encoding and input checks."""

import numpy as np
import pytest

from skfairlayer import UnseenGroupError
from skfairlayer._validation import check_scores, check_tolerance, encode_groups


@pytest.mark.parametrize(
    "values",
    [
        [3, 1, 3, 2],
        np.array([3, 1, 3, 2], dtype=np.int8),
        ["c", "a", "c", "b"],
        np.array(["c", "a", "c", "b"], dtype=object),
        [3.0, 1.0, 3.0, 2.0],
    ],
)
def test_codes_follow_sorted_labels(values):
    """Check that codes index the sorted unique labels."""
    codes, groups = encode_groups(values)
    np.testing.assert_array_equal(codes, [2, 0, 2, 1])
    assert len(groups) == 3


def test_sparse_integer_labels():
    """Check that non-contiguous integer labels get compact codes."""
    codes, groups = encode_groups([10, 500, 10, 70000])
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    np.testing.assert_array_equal(groups, [10, 500, 70000])


def test_intersectional_tuples_and_recode():
    """Check intersectional labels and recoding against fitted groups."""
    sf = np.array([["F", 1], ["M", 0], ["F", 1], ["F", 0]], dtype=object)
    codes, groups = encode_groups(sf)
    assert list(groups) == [("F", 0), ("F", 1), ("M", 0)]
    np.testing.assert_array_equal(codes, [1, 2, 1, 0])
    again, _ = encode_groups(sf[[3, 1]], groups=groups)
    np.testing.assert_array_equal(again, [0, 2])
    with pytest.raises(UnseenGroupError, match="'M', 1"):
        encode_groups(np.array([["M", 1]], dtype=object), groups=groups)


def test_pandas_inputs():
    """Check Series, categorical and DataFrame inputs."""
    pd = pytest.importorskip("pandas")
    s = pd.Series(pd.Categorical(["b", "a", "b"]))
    codes, groups = encode_groups(s)
    np.testing.assert_array_equal(codes, [1, 0, 1])
    df = pd.DataFrame({"sex": ["F", "M", "F"], "race": ["x", "x", "y"]})
    codes, groups = encode_groups(df)
    assert list(groups) == [("F", "x"), ("F", "y"), ("M", "x")]


@pytest.mark.parametrize(
    "func, arg, err, match",
    [
        (encode_groups, 3, ValueError, "scalar"),
        (encode_groups, np.zeros((2, 2, 2)), ValueError, "dimensions"),
        (encode_groups, [1.0, np.nan], ValueError, "NaN"),
        (encode_groups, ["a", None], ValueError, "missing"),
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
