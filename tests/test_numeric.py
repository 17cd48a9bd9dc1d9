"""Tests of the single-thread dot product."""

import math

import numpy as np
import pytest

from skfairlayer._numeric import _ROW, dot, indicator_sums


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


@pytest.mark.parametrize("dtype", [np.uint8, bool, np.float64, np.int16])
@pytest.mark.parametrize("n", [0, 5, 1000, 3 * 4096 + 1])
def test_indicator_sums_are_the_total_and_group_one_sum(dtype, n):
    """Check the two-group sums for every indicator dtype the passes hand in, with blocks
    that do not divide the rows."""
    rng = np.random.default_rng(n)
    ind, x = rng.integers(0, 2, n).astype(dtype), rng.random(n)
    total, one = indicator_sums(ind, x, np.empty(4096))
    assert total == pytest.approx(x.sum(), rel=1e-13, abs=1e-13)
    assert one == pytest.approx(x[ind.astype(bool)].sum(), rel=1e-13, abs=1e-13)
