"""Tests of the compiled passes (``skfairlayer/_kernels.c``) against numpy references."""

import os

import numpy as np
import pytest

from skfairlayer import _compiled
from skfairlayer._solvers import _exact

kernels = _compiled.kernels
needs_kernels = pytest.mark.skipif(kernels is None, reason="compiled passes not built")
SIZES = [0, 1, 7, 8, 9, 17, 1000, 4099]
GROUPS = [1, 2, 3, 10, 16, 17, 255]


def test_kernels_are_built():
    """Check that the compiled passes were built (set SKFAIRLAYER_PURE_NUMPY=1 to run without)."""
    if os.environ.get("SKFAIRLAYER_PURE_NUMPY", "") not in ("", "0"):
        pytest.skip("numpy passes requested by SKFAIRLAYER_PURE_NUMPY")
    assert kernels is not None, (
        "skfairlayer._kernels was not built: install with a C compiler available "
        "(python -m pip install -e .), or set SKFAIRLAYER_PURE_NUMPY=1 to test the numpy passes."
    )


@pytest.fixture(params=[False, True], ids=["portable", "simd"])
def simd(request):
    """Run the kernels with their portable loops, then with the AVX-512 loops (if the CPU has them)."""
    if kernels is None:
        pytest.skip("compiled passes not built")
    with _compiled.numpy_passes(simd=request.param):
        yield kernels.simd()


def _data(n, k, seed=0):
    rng = np.random.default_rng(seed + 31 * n + k)
    codes = rng.integers(0, k, n)
    s = rng.normal(0.5, 0.4, n)
    s[rng.random(n) < 0.05] = 0.0  # ties at a bound
    return s, codes, codes.astype(np.uint8), rng


@pytest.mark.parametrize("k", GROUPS)
@pytest.mark.parametrize("n", SIZES)
def test_group_sums(simd, n, k):
    """Check that group_sums equals np.bincount (to rounding of the order of additions)."""
    s, codes, small, _ = _data(n, k)
    sums = np.full(k, np.nan)
    kernels.group_sums(s, small, sums)
    ref = np.bincount(codes, weights=s, minlength=k)
    np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-12 * max(n, 1))


@pytest.mark.parametrize("k", GROUPS)
@pytest.mark.parametrize("n", SIZES)
def test_outside_and_classify(simd, n, k):
    """Check that outside flags exactly the rows outside [lo_g, hi_g], in order, and classify
    sorts them into top, bottom and the rest with per-group sums and counts."""
    s, codes, small, rng = _data(n, k)
    lo = rng.uniform(0.0, 0.3, k)
    hi = rng.uniform(0.7, 1.0, k)
    lo[0], hi[0] = np.inf, -np.inf  # a group kept whole: every row flagged
    idx = np.full(n + 8, -7, dtype=np.intp)
    m = kernels.outside(s, small, lo, hi, idx)
    ref = np.flatnonzero((s < lo[codes]) | (s > hi[codes]))
    np.testing.assert_array_equal(idx[:m], ref)

    bot, top = lo - 0.1, hi + 0.1
    bot[0], top[0] = -np.inf, np.inf
    sx, nx, nt, nb = (np.full(k, np.nan) for _ in range(4))
    kept = kernels.classify(s, small, idx[:m], bot, top, sx, nx, nt, nb)
    g = codes[ref]
    is_top = s[ref] >= top[g]
    is_bot = ~is_top & (s[ref] <= bot[g])
    np.testing.assert_allclose(sx, np.bincount(g, weights=s[ref], minlength=k), atol=1e-9)
    np.testing.assert_array_equal(nx, np.bincount(g, minlength=k))
    np.testing.assert_array_equal(nt, np.bincount(g[is_top], minlength=k))
    np.testing.assert_array_equal(nb, np.bincount(g[is_bot], minlength=k))
    np.testing.assert_array_equal(idx[:kept], ref[~(is_top | is_bot)])


@pytest.mark.parametrize("k", GROUPS)
@pytest.mark.parametrize("n", SIZES)
def test_shift_clip(simd, n, k):
    """Check that shift_clip is clip(s - shifts[g], lb, ub) bit for bit."""
    s, codes, small, rng = _data(n, k)
    shifts = rng.normal(0.0, 0.2, k)
    out = np.full(n, np.nan)
    kernels.shift_clip(s, small, shifts, 0.0, 1.0, out)
    np.testing.assert_array_equal(out, np.clip(s - shifts[codes], 0.0, 1.0))


@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("k", [2, 10])
def test_output_passes_on_large_unaligned_outputs(simd, offset, k):
    """Check the output passes above the streaming-store size, at every 8-byte alignment of
    the output (a head before the first 64-byte boundary, a tail after the last block)."""
    n = (1 << 18) + 13
    s, codes, small, rng = _data(n, k)
    shifts = rng.normal(0.0, 0.2, k)
    buf = np.full(n + 8, np.nan)
    out = buf[offset : offset + n]
    kernels.shift_clip(s, small, shifts, 0.0, 1.0, out)
    np.testing.assert_array_equal(out, np.clip(s - shifts[codes], 0.0, 1.0))
    assert np.isnan(buf[:offset]).all() and np.isnan(buf[offset + n :]).all()  # nothing outside
    p = np.clip(s, 0.0, 1.0)
    buf[:] = np.nan
    kernels.free_shift(s, p, small, 0.0, 1.0, shifts, out)
    free = (p > 0.0) & (p < 1.0)
    np.testing.assert_array_equal(out, np.where(free, s - shifts[codes], 0.0))
    assert np.isnan(buf[:offset]).all() and np.isnan(buf[offset + n :]).all()


@pytest.mark.parametrize("k", GROUPS)
@pytest.mark.parametrize("n", SIZES)
def test_lookup(simd, n, k):
    """Check that lookup is table[codes] bit for bit."""
    _, codes, small, rng = _data(n, k)
    table = rng.normal(size=k)
    out = np.full(n, np.nan)
    kernels.lookup(small, table, out)
    np.testing.assert_array_equal(out, table[codes])


@pytest.mark.parametrize("k", GROUPS)
@pytest.mark.parametrize("n", SIZES)
def test_free_sums_and_shift(simd, n, k):
    """Check the per-group sums and counts over free rows, and the centring of free rows."""
    s, codes, small, rng = _data(n, k)
    p = np.clip(s, 0.0, 1.0)
    v = rng.normal(size=n)
    lo, hi = 1e-12, 1.0 - 1e-12
    free = (p > lo) & (p < hi)
    out = np.full(2 * k, np.nan)
    kernels.free_sums(v, p, small, lo, hi, out)
    np.testing.assert_allclose(out[:k], np.bincount(codes, weights=v * free, minlength=k),
                               atol=1e-9)
    np.testing.assert_array_equal(out[k:], np.bincount(codes, weights=free, minlength=k))
    if n:  # a non-finite value at a held row never reaches the sums
        held = np.flatnonzero(~free)
        if held.size:
            v[held[0]] = np.inf
            again = np.full(2 * k, np.nan)
            kernels.free_sums(v, p, small, lo, hi, again)
            np.testing.assert_array_equal(again, out)
    shifts = rng.normal(size=k)
    res = np.full(n, np.nan)
    kernels.free_shift(v, p, small, lo, hi, shifts, res)
    np.testing.assert_array_equal(res, np.where(free, v - shifts[codes], 0.0))


@pytest.mark.parametrize("seed", range(40))
def test_newton_matches_numpy(seed):
    """Check that the compiled Newton iteration gives the numpy iteration's answer."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 2, 3, 7, 20]))
    m = int(rng.integers(1, 3000))
    g = rng.integers(0, k, m).astype(np.intp)
    n_g = np.maximum(np.bincount(g, minlength=k), 1).astype(np.float64) * rng.uniform(1, 50)
    s = rng.uniform(-0.2, 1.2, m)
    nr = n_g[g]
    A = rng.uniform(0.2, 0.8, k)
    Q = rng.uniform(0.0, 1.0, k) / n_g
    present = np.bincount(g, minlength=k) > 0
    model = _exact._Model((s - 1.0) * nr, s * nr, 1.0 / (nr * nr), g, A, Q, present,
                          float(rng.choice([0.0, 1e-3, 0.05])))
    lo, hi = np.full(k, -np.inf), np.full(k, np.inf)
    if rng.random() < 0.3:
        lo, hi = -rng.uniform(0, 1, k) * n_g, rng.uniform(0, 1, k) * n_g
    start = rng.normal(0, 0.01, k) * n_g if rng.random() < 0.5 else None
    results = []
    for simd in (None, False):
        with _compiled.numpy_passes(simd=simd):
            results.append(_exact._newton(model, lo, hi, start))
    numpy_result, compiled = results
    assert (numpy_result is None) == (compiled is None)
    if compiled is not None:
        assert numpy_result.ok == compiled.ok
        scale = 1.0 + np.abs(numpy_result.nu).max()
        np.testing.assert_allclose(compiled.nu, numpy_result.nu, rtol=0, atol=1e-9 * scale)


@needs_kernels
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, g: kernels.group_sums(s.astype(np.float32), g, np.zeros(2)), "float64"),
        (lambda s, g: kernels.group_sums(s, g.astype(np.int64), np.zeros(2)), "uint8"),
        (lambda s, g: kernels.group_sums(s, g, np.zeros(1)), "smaller than the number"),
        (lambda s, g: kernels.group_sums(s[:-1], g, np.zeros(2)), "lengths"),
        (lambda s, g: kernels.group_sums(s[::2], g[::2], np.zeros(2)), "contiguous"),
        (lambda s, g: kernels.shift_clip(s, g, np.zeros(2), 0.0, 1.0, np.empty(3)), "lengths"),
        (lambda s, g: kernels.outside(s, g, np.zeros(2), np.ones(2), np.empty(2, np.intp)),
         "lengths"),
        (lambda s, g: kernels.classify(s, g, np.array([0, 99]), *[np.zeros(2)] * 6), "idx"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Check that wrong dtypes, shapes, codes and indices raise instead of reading wild memory."""
    s = np.linspace(0, 1, 10)
    g = (np.arange(10) % 2).astype(np.uint8)
    with pytest.raises((TypeError, ValueError), match=match):
        call(s, g)


@needs_kernels
def test_read_only_output_raises():
    """Check that a read-only output buffer is refused."""
    s = np.linspace(0, 1, 10)
    g = np.zeros(10, dtype=np.uint8)
    out = np.zeros(1)
    out.flags.writeable = False
    with pytest.raises((TypeError, BufferError, ValueError)):
        kernels.group_sums(s, g, out)


def test_small_codes():
    """Check that small_codes copies codes to uint8 only when the kernels can take them."""
    codes = np.array([0, 2, 1, 2])
    with _compiled.numpy_passes(simd=None):
        assert _compiled.small_codes(codes, 3) is None
    if kernels is None:
        return
    np.testing.assert_array_equal(_compiled.small_codes(codes, 3), codes)
    assert _compiled.small_codes(codes, 3).dtype == np.uint8
    assert _compiled.small_codes(np.array([0, -1]), 2) is None  # a row outside the groups
    assert _compiled.small_codes(np.zeros(3, dtype=np.intp), 256) is None  # too many groups


def test_scratch_is_reused_up_to_its_cap():
    """Check that scratch buffers are reused per thread up to SCRATCH_KEEP items, fresh beyond."""
    a = _compiled.scratch(100)
    b = _compiled.scratch(50)
    assert np.shares_memory(a, b) and a.shape == (100,) and b.shape == (50,)
    big = _compiled.SCRATCH_KEEP + 1
    assert not np.shares_memory(_compiled.scratch(big, np.uint8), _compiled.scratch(big, np.uint8))


@pytest.mark.parametrize("seed", range(20))
def test_spread_matches_numpy(seed):
    """Check that the compiled spread statistics give the numpy bracket half-widths."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 2, 5, 20]))
    m = int(rng.integers(1, 3000))
    g = rng.integers(0, k, m).astype(np.intp)
    sub_counts = np.bincount(g, minlength=k)
    full = sub_counts * rng.integers(1, 100, k)
    nr = np.maximum(full, 1)[g].astype(np.float64)
    s = rng.uniform(-0.3, 1.3, m)
    model = _exact._Model((s - 1.0) * nr, s * nr, 1.0 / (nr * nr), g, rng.uniform(0, 1, k),
                          rng.uniform(0, 1e-3, k), sub_counts > 0, 0.01)
    nu = rng.normal(0, 0.05, k) * np.maximum(full, 1)
    results = []
    for simd in (None, False):
        with _compiled.numpy_passes(simd=simd):
            results.append(_exact._spread(model, nu, full, sub_counts))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_show_versions_names_the_passes(capsys):
    """Check that show_versions prints the dependencies and which passes the solver runs."""
    from skfairlayer import show_versions

    show_versions()
    out = capsys.readouterr().out
    assert "numpy:" in out and "scikit-learn:" in out and "osqp:" in out
    expected = "numpy (compiled passes not built" if kernels is None else "compiled, "
    assert expected in out


@pytest.mark.parametrize("k", [2, 7])
def test_uniform_family_weights_and_codes_on_both_passes(k):
    """Check that a uniform family's weights (1 / n_g) and cached uint8 codes are the same
    whether the compiled passes build them or numpy does."""
    from skfairlayer.constraints import build_problem

    rng = np.random.default_rng(k)
    codes = np.r_[np.arange(k), rng.integers(0, k, 5000)]
    scores = rng.random(codes.size)
    with _compiled.numpy_passes(simd=None):
        ref = build_problem("demographic_parity", scores, [(codes, k)], 0.01).families[0]
    fam = build_problem("demographic_parity", scores, [(codes, k)], 0.01).families[0]
    np.testing.assert_array_equal(fam.weights, ref.weights)
    np.testing.assert_array_equal(fam.weights, 1.0 / np.bincount(codes)[codes])
    if kernels is not None:
        assert "_small_codes" in fam.__dict__  # made with the weights, not on first use
        np.testing.assert_array_equal(fam._small_codes, codes)


@needs_kernels
def test_estimator_and_column_scores_take_the_compiled_passes(monkeypatch):
    """Check that scores given as a column of a 2-D array (proba[:, 1], as the estimator
    projects them) still run the compiled passes, not the numpy fallback."""
    from sklearn.linear_model import LogisticRegression

    from skfairlayer import FairnessLayerClassifier, project

    rng = np.random.default_rng(0)
    n = 20000
    X = rng.normal(size=(n, 3))
    g = rng.integers(0, 2, n)
    y = (X[:, 0] + 0.5 * g + rng.normal(size=n) > 0).astype(int)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.01).fit(
        X, y, sensitive_features=g)
    paths = []
    solve = _exact.solve_exact

    def spy(problem, *args, **kwargs):
        solution = solve(problem, *args, **kwargs)
        paths.append(solution.info["path"])
        return solution

    monkeypatch.setattr(_exact, "solve_exact", spy)
    clf.predict_proba(X, sensitive_features=g)
    project(clf.estimator_.predict_proba(X)[:, 1], g)
    assert paths == ["uniform-compiled", "uniform-compiled"]


def test_concurrent_solves_match_serial():
    """Check that exact solves running in several threads at once (the passes release the GIL
    and each thread has its own scratch buffer) give the serial answers."""
    from concurrent.futures import ThreadPoolExecutor

    from skfairlayer import project

    rng = np.random.default_rng(7)
    batches = []
    for j in range(8):
        n = 60000 + 1000 * j
        codes = rng.integers(0, 2 + j % 3, n)
        scores = 1.0 / (1.0 + np.exp(-(rng.normal(0, 1.5, n) + 0.4 * codes)))
        batches.append((scores, codes))
    serial = [project(s, c, tolerance=0.01).proba for s, c in batches]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda b: project(b[0], b[1], tolerance=0.01).proba, batches * 3))
    for j, out in enumerate(threaded):
        np.testing.assert_array_equal(out, serial[j % len(batches)])
