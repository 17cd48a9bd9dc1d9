"""Tests of the exact parity decisions (MATH.md §3)."""

import itertools

import numpy as np
import pytest

from skfairlayer._decisions import apply_thresholds, parity_decisions


def _brute_force(scores, codes, sizes, tol):
    best = -np.inf
    for counts in itertools.product(*[range(m + 1) for m in sizes]):
        rates = np.array(counts) / sizes
        if rates.max() - rates.min() <= tol + 1e-12:
            val = sum(
                np.sort(2 * scores[codes == g] - 1)[::-1][:c].sum() for g, c in enumerate(counts)
            )
            best = max(best, val)
    return best


@pytest.mark.parametrize("seed", range(150))
def test_decisions_are_the_integer_optimum(seed):
    """Check parity and optimality against enumeration of every feasible selection."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    n = int(rng.integers(k, 11))
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    scores = rng.random(n)
    if seed % 5 == 0:
        scores = np.round(scores, 1)  # ties
    tol = float(rng.choice([0.0, 0.05, 0.1, 0.3, 0.5]))
    res = parity_decisions(scores, codes, k, tol)
    sizes = np.bincount(codes, minlength=k)
    assert res.gap <= tol + 1e-12
    assert np.sum(res.decisions * (2 * scores - 1)) == pytest.approx(
        _brute_force(scores, codes, sizes, tol), abs=1e-9
    )
    np.testing.assert_array_equal(res.counts, np.bincount(codes, weights=res.decisions,
                                                          minlength=k))


def test_thresholds_reproduce_the_selection():
    """Check that the per-group thresholds give back the batch decisions (no ties)."""
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    codes = rng.integers(0, 3, 500)
    res = parity_decisions(scores, codes, 3, 0.02)
    np.testing.assert_array_equal(apply_thresholds(scores, codes, res.thresholds), res.decisions)


def test_deterministic_and_order_of_ties():
    """Check that equal scores are broken by position, deterministically."""
    scores = np.full(6, 0.7)
    codes = np.array([0, 0, 0, 1, 1, 1])
    a = parity_decisions(scores, codes, 2, 0.0)
    b = parity_decisions(scores, codes, 2, 0.0)
    np.testing.assert_array_equal(a.decisions, b.decisions)
    assert a.gap == 0.0


def test_large_batch_is_fast_and_exact():
    """Check parity on a large batch with many groups and coprime sizes at zero tolerance."""
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(3), [997, 1009, 1013])
    scores = rng.random(codes.size)
    res = parity_decisions(scores, codes, 3, 0.0)
    assert res.gap == 0.0
    res = parity_decisions(scores, codes, 3, 0.01)
    assert res.gap <= 0.01
