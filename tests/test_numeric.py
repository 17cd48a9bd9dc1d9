"""Tests of the single-thread dot product."""

import math

import numpy as np
import pytest

from skfairlayer._numeric import _ROW, dot


@pytest.mark.parametrize("n", [0, 1, _ROW - 1, _ROW, _ROW + 1, 3 * _ROW + 5, 70_001])
def test_dot_agrees_with_an_exact_sum(n):
    """Check that ``dot`` equals the correctly rounded sum of products to a few ulps."""
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.random(n)
    exact = math.fsum((a * b).tolist())  # the products are exact enough at these magnitudes
    assert isinstance(dot(a, b), float)
    assert abs(dot(a, b) - exact) <= 1e-13 * max(1.0, float(np.abs(a) @ b))


def test_dot_of_an_indicator_is_a_group_sum():
    """Check that a 0/1 indicator's dot product is the sum over its rows, as the passes use it."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, 50_000)
    x = rng.random(50_000)
    np.testing.assert_allclose(dot(codes.astype(float), x), x[codes == 1].sum(), rtol=1e-13)
