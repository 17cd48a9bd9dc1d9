"""Tests of the exact parity decisions (user guide: decisions)."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from skfairlayer import _decisions
from skfairlayer._decisions import (
    apply_thresholds,
    parity_decisions,
    smallest_nontrivial_tolerance,
)


def _brute_force(scores, codes, sizes, tol):
    """Best objective over every count vector whose rates differ by <= tol, exactly."""
    best = -np.inf
    for counts in itertools.product(*[range(m + 1) for m in sizes]):
        rates = [Fraction(int(c), int(m)) for c, m in zip(counts, sizes, strict=True)]
        if max(rates) - min(rates) <= Fraction(tol):
            val = sum(
                np.sort(2 * scores[codes == g] - 1)[::-1][:c].sum() for g, c in enumerate(counts)
            )
            best = max(best, val)
    return best


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("seed", range(150))
def test_decisions_are_the_integer_optimum(seed, pruned, monkeypatch):
    """Check parity and optimality against enumeration of every feasible selection (also with
    the histogram bounds pruning levels: 2 bins, 4 intervals, from 8 rows)."""
    if pruned:
        monkeypatch.setattr(_decisions, "_BINS", 2)
        monkeypatch.setattr(_decisions, "_INTERVALS", 4)
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


# --------------------------------------------------------------------------- exact rates


@pytest.mark.parametrize(
    ("tol", "group_scores"),
    [
        (0.4999999999999, ([0.9, 0.1], [0.1, 0.1])),  # rates 1/2 and 0: gap just above tol
        (0.999999999999999, ([0.9], [0.1])),  # rates 1 and 0
        (0.3, ([0.9] * 3 + [0.1] * 7, [0.1] * 10)),  # float 0.3 is below 3/10
    ],
)
def test_tolerance_just_below_a_rational_gap_is_met_exactly(tol, group_scores):
    """Check decisions never exceed a tolerance sitting just below a rational rate gap."""
    scores = np.concatenate([np.asarray(s) for s in group_scores])
    codes = np.repeat(np.arange(len(group_scores)), [len(s) for s in group_scores])
    res = parity_decisions(scores, codes, len(group_scores), tol)
    assert res.exact_gap <= Fraction(tol)
    assert res.gap <= tol
    sizes = np.bincount(codes)
    assert np.sum(res.decisions * (2 * scores - 1)) == pytest.approx(
        _brute_force(scores, codes, sizes, tol), abs=1e-9
    )


def _tolerance_below_a_gap(rng, sizes):
    """A float tolerance just below (or at) a rational gap of selection rates."""
    a, b = rng.integers(0, sizes[0] + 1), rng.integers(0, sizes[1] + 1)
    gap = abs(Fraction(int(a), int(sizes[0])) - Fraction(int(b), int(sizes[1])))
    return max(float(gap) - float(rng.choice([0.0, 1e-16, 1e-15, 1e-13])), 0.0)


@pytest.mark.parametrize("seed", range(200))
def test_near_rational_tolerances_are_exact(seed):
    """Check exact parity and optimality with tolerances a hair below rational gaps."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    n = int(rng.integers(k, 10))
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    sizes = np.bincount(codes, minlength=k)
    tol = _tolerance_below_a_gap(rng, sizes)
    scores = rng.random(n)
    res = parity_decisions(scores, codes, k, tol)
    assert res.exact_gap <= Fraction(tol)
    assert res.gap <= tol
    assert np.sum(res.decisions * (2 * scores - 1)) == pytest.approx(
        _brute_force(scores, codes, sizes, tol), abs=1e-9
    )


# --------------------------------------------------------------------------- trivial answers


def _brute_smallest(sizes):
    best = None
    for counts in itertools.product(*[range(m + 1) for m in sizes]):
        if all(c == 0 for c in counts) or all(c == m for c, m in zip(counts, sizes, strict=True)):
            continue
        rates = [Fraction(c, m) for c, m in zip(counts, sizes, strict=True)]
        spread = max(rates) - min(rates)
        best = spread if best is None else min(best, spread)
    return best


@pytest.mark.parametrize(
    "sizes", [(2, 3), (2, 4), (3, 5, 7), (1, 1), (4, 6), (5,), (7, 11), (2, 2, 9), (6, 10, 15)]
)
def test_smallest_nontrivial_tolerance_matches_enumeration(sizes):
    """Check the smallest tolerance admitting a non-trivial selection against enumeration."""
    value = smallest_nontrivial_tolerance(sizes)
    exact = Fraction(0) if len(sizes) == 1 else _brute_smallest(sizes)
    assert Fraction(value) >= exact
    assert value == float(exact) or Fraction(np.nextafter(value, 0)) < exact


def test_zero_tolerance_with_coprime_sizes_is_reported_as_forced():
    """Check tolerance 0 with coprime group sizes flags its nobody-selected answer."""
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(3), [97, 101, 103])
    scores = rng.random(codes.size)
    res = parity_decisions(scores, codes, 3, 0.0)
    assert res.trivial and res.forced_trivial
    tol = res.smallest_nontrivial_tolerance
    assert 0 < tol <= 1 / 103 + 1e-15
    res = parity_decisions(scores, codes, 3, tol)
    assert not res.trivial and not res.forced_trivial
    assert res.gap <= tol
    # sizes with a common divisor: tolerance 0 admits equal non-zero rates
    codes = np.repeat(np.arange(2), [50, 100])
    res = parity_decisions(rng.random(150), codes, 2, 0.0)
    assert res.smallest_nontrivial_tolerance == 0.0 and not res.forced_trivial


def test_smallest_nontrivial_tolerance_rejects_empty_groups():
    """Check non-positive group sizes raise a ValueError naming them."""
    with pytest.raises(ValueError, match="group_sizes must be positive"):
        smallest_nontrivial_tolerance([3, 0])


@pytest.mark.parametrize("subsample", [None, (4, 5.0), (4, 0.0), "binned"])
@pytest.mark.parametrize("seed", range(60))
def test_windowed_ranking_matches_a_full_sort(seed, subsample, monkeypatch):
    """Check that sorting only the count window gives the full sort's decisions, ties included.

    With a tiny subsample the window's bounds come from it (margin 5 standard errors) or
    fail their count check and fall back to the partition (margin 0); "binned": the
    windows are whole bins of the score histogram (4 bins, from 16 rows).
    """
    if subsample == "binned":
        monkeypatch.setattr(_decisions, "_BINS", 4)
        monkeypatch.setattr(_decisions, "_INTERVALS", 8)
    elif subsample is not None:
        monkeypatch.setattr(_decisions, "_SUBSAMPLE", subsample[0])
        monkeypatch.setattr(_decisions, "_MARGIN_SE", subsample[1])
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 400)), int(rng.integers(1, 8))
    k = min(k, n)
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    rng.shuffle(codes)
    scores = np.round(rng.random(n), int(rng.integers(1, 3))) if seed % 2 else rng.beta(2, 3, n)
    tol = float(rng.choice([0.0, 0.01, 0.05, 0.2, 1 / 3]))
    res = parity_decisions(scores, codes, k, tol)
    order = np.lexsort((np.arange(n), -scores, codes))  # the full sort: group, score, position
    expected = np.zeros(n, dtype=int)
    start = 0
    for g in range(k):
        size = int(np.sum(codes == g))
        expected[order[start : start + res.counts[g]]] = 1
        start += size
    np.testing.assert_array_equal(res.decisions, expected)
    if np.unique(scores).size == n:  # without ties the thresholds reproduce the decisions
        np.testing.assert_array_equal(
            res.decisions, (scores >= res.thresholds[codes]).astype(int)
        )


@pytest.mark.parametrize("seed", range(20))
def test_count_ranges_are_exact(seed):
    """Check both count bounds against exact rational arithmetic, near ties included."""
    rng = np.random.default_rng(seed)
    n_h = int(rng.integers(1, 5000))
    den = rng.integers(1, 5000, 400).astype(np.int64)
    num = (rng.random(400) * (den + 1)).astype(np.int64)
    tol = float(rng.choice([0.0, 0.1, 1 / 3, 0.05, 1 / n_h, 0.25]))
    # levels whose (t + tol) n_h or t n_h is an integer: the near ties
    num[:100] = den[:100] * (np.arange(100) % (n_h + 1)) // n_h
    c_lo, c_hi = _decisions._count_ranges(num, den, n_h, tol)
    ftol = Fraction(tol)
    for a, b, lo, hi in zip(num.tolist(), den.tolist(), c_lo.tolist(), c_hi.tolist(),
                            strict=True):
        t = Fraction(a, b)
        assert lo == -((-a * n_h) // b)  # ceil(t n_h)
        assert hi == min(n_h, math.floor((t + ftol) * n_h))  # largest c: c / n_h - t <= tol


@pytest.mark.parametrize("seed", range(40))
def test_pruned_levels_keep_the_optimum(seed, monkeypatch):
    """Check the histogram-bounded search reaches the full search's optimum (objective and
    parity), on larger batches with ties, close and distant group rates."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    n = int(rng.integers(200, 3000))
    codes = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    shift = rng.normal(0, 1.5, k)[codes] * rng.choice([0.05, 0.5, 2.0])
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + shift)))
    if seed % 3 == 0:
        scores = np.round(scores, 2)  # ties, and scores exactly at 1/2
    tol = float(rng.choice([0.0, 0.01, 0.05, 0.2]))
    full = parity_decisions(scores, codes, k, tol)  # n < 4 * bins: no pruning
    monkeypatch.setattr(_decisions, "_BINS", int(rng.choice([4, 16, 64])))
    monkeypatch.setattr(_decisions, "_INTERVALS", int(rng.choice([2, 16, 256])))
    pruned = parity_decisions(scores, codes, k, tol)
    assert pruned.exact_gap <= Fraction(tol)
    gain = 2 * scores - 1
    assert np.sum(pruned.decisions * gain) == pytest.approx(np.sum(full.decisions * gain),
                                                            abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_tied_optima_prefer_the_fewest_selected(seed):
    """Check that among count vectors of equal expected accuracy (scores on a coarse grid:
    e.g. one more row of gain -0.18 and one of +0.18) the decisions select the fewest rows,
    whatever order the levels were searched in (the Dask front end makes the same choice)."""
    from itertools import product

    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, 60)
    s = np.round(np.clip(rng.random(60) + 0.2 * (g == 0), 0, 1), 1)
    res = parity_decisions(s, g, 2, 0.05)
    sizes = np.bincount(g)
    gains = [np.sort(2 * s[g == c] - 1)[::-1] for c in (0, 1)]
    best, fewest = -np.inf, None
    for c0, c1 in product(range(sizes[0] + 1), range(sizes[1] + 1)):
        if abs(c0 / sizes[0] - c1 / sizes[1]) > 0.05:
            continue
        value = gains[0][:c0].sum() + gains[1][:c1].sum()
        if value > best + 1e-9 or (abs(value - best) <= 1e-9 and c0 + c1 < sum(fewest)):
            best, fewest = max(best, value), (c0, c1)
    assert tuple(res.counts) == fewest
