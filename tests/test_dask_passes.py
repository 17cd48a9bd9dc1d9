"""Tests of the passes of the Dask projection: the sampled start, label discovery, bracket
misses and the per-partition verification of the output."""

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from skfairlayer import SolverError, project  # noqa: E402
from skfairlayer._projection import VERIFY_TOL  # noqa: E402


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _data(seed, n_blocks=20, rows=500, k=2):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, k, n_blocks * rows)
    s = np.clip(rng.random(g.size) + 0.2 * (g == 0), 0, 1)
    return rng, s, g


def _unsampled(n_blocks=20):
    """A partition the sampled start does not read."""
    from skfairlayer.dask._project import _picks

    picks, _ = _picks((1,) * n_blocks)
    return min(set(range(n_blocks)) - set(picks))


def _check(res, s, g, tol, bounds=(0.0, 1.0)):
    ref = project(s, g, tolerance=tol, bounds=bounds)
    out = res.proba.compute()
    np.testing.assert_allclose(out, ref.proba, rtol=0, atol=1e-12)
    assert list(res.groups) == list(ref.groups)
    means = np.array([out[g == c].mean() for c in np.unique(g)])
    assert means.max() - means.min() <= tol + VERIFY_TOL
    assert res.gap <= tol + VERIFY_TOL


@pytest.mark.parametrize("labels", ["int", "str", "series"])
def test_group_missing_from_the_start(labels):
    """Check that a group only present in a partition the start does not read is found by
    the bracket pass, and that a second round gives the in-memory projection."""
    from skfairlayer.dask import project as dproject

    rng, s, g = _data(0)
    rare = _unsampled()
    rows = np.arange(rare * 500, rare * 500 + 7)
    g[rows] = 2  # a third group, 7 rows, in one unsampled partition
    s[rows] = rng.random(7)
    groups = np.array(["b", "c", "a"])[g] if labels == "str" else g
    if labels == "series":
        pd = pytest.importorskip("pandas")
        dd = pytest.importorskip("dask.dataframe")
        frame = dd.from_pandas(pd.DataFrame({"s": s, "g": groups}), npartitions=20,
                               sort=False)
        res = dproject(frame["s"], frame["g"], tolerance=0.01)
    else:
        res = dproject(da.from_array(s, chunks=500), da.from_array(groups, chunks=500),
                       tolerance=0.01)
    _check(res, s, groups, 0.01)
    assert res.info["sampled_blocks"] == 8 and not res.info["statistics_pass"]
    assert res.info["relabel_passes"] == 1
    assert res.passes == 1 + len(res.info["uncertain_rows"])


def test_start_seeing_one_group_reads_everything():
    """Check that a start seeing a single group falls back to the statistics pass."""
    from skfairlayer.dask import project as dproject

    _, s, g = _data(1)
    g[:] = 0
    rare = _unsampled()
    g[rare * 500 : rare * 500 + 40] = 1
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.0)
    _check(res, s, g, 0.0)
    assert res.info["statistics_pass"] and res.passes == 2


def test_biased_start_costs_a_bracket_pass():
    """Check that a start read from unrepresentative partitions misses the first bracket and
    that the next bracket pass certifies the exact optimum."""
    from skfairlayer.dask import project as dproject
    from skfairlayer.dask._project import _picks

    _, s, g = _data(2)
    picks, _ = _picks((500,) * 20)
    for b in picks:  # the read partitions score group 0 much higher
        sl = slice(b * 500, b * 500 + 500)
        s[sl] = np.clip(s[sl] + 0.4 * (g[sl] == 0), 0, 1)
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.02)
    _check(res, s, g, 0.02)
    assert res.passes >= 2 and res.passes == len(res.info["uncertain_rows"])


def test_one_pass_on_representative_data():
    """Check the pass count: a start from 8 of 40 partitions, then one bracket pass."""
    from skfairlayer.dask import project as dproject

    _, s, g = _data(3, n_blocks=40, k=3)
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.01,
                   bounds=(0.1, 0.9))
    _check(res, s, g, 0.01, bounds=(0.1, 0.9))
    assert res.passes == 1 and res.info["sampled_blocks"] == 8
    assert res.info["verify"] == "blocks"


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("corrupt", ["shift", "bounds", "nan"])
def test_corrupted_output_raises(monkeypatch, k, corrupt):
    """Check that an output kernel that breaks parity or the bounds raises when the output is
    computed, whichever partitions are asked for, and returns nothing."""
    from skfairlayer.dask import _passes
    from skfairlayer.dask import project as dproject

    _, s, g = _data(4, k=k)
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.01)
    kernel = _passes.block_output

    def broken(s_raw, g_raw, lookup, shifts, lb, ub):
        out, stats = kernel(s_raw, g_raw, lookup, shifts, lb, ub)
        bad = out.copy()
        if corrupt == "shift":  # a biased output: the group sums move, the bounds hold
            bad = np.clip(bad + 1e-6, lb, ub)
        elif corrupt == "bounds":
            bad[:3] = ub + 0.5
        else:
            bad[0] = np.nan
        sums = np.bincount(np.searchsorted(sorted(lookup), np.asarray(g_raw)), weights=bad,
                           minlength=len(lookup))
        return bad, {"sums": sums, "lo": float(np.min(bad)), "hi": float(np.max(bad))}

    monkeypatch.setattr(_passes, "block_output", broken)
    match = "does not match" if corrupt == "shift" else "outside the bounds"
    with pytest.raises(SolverError, match=match):
        res.proba.compute()
    with pytest.raises(SolverError, match=match):
        res.proba.blocks[7].compute()


def test_predicted_sums_must_meet_parity():
    """Check the driver's check of the certified sums refuses a parity violation."""
    from skfairlayer.dask._project import _check_predicted

    pred = np.array([[[1.0, 3.0], [2.0, 4.0]], [[1.0, 0.0], [2.0, 0.0]]])
    assert _check_predicted(pred, np.array([4.0, 4.0]), 0.5) == pytest.approx(0.25)
    with pytest.raises(SolverError, match="violate parity"):
        _check_predicted(pred, np.array([4.0, 4.0]), 0.2)
    with pytest.raises(SolverError, match="do not add up"):
        _check_predicted(pred, np.array([4.0, 5.0]), 0.5)


def test_too_many_partition_sums_verify_in_a_pass(monkeypatch):
    """Check that past BLOCK_SUMS the verification is a separate pass (verify='eager')."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    monkeypatch.setattr(_project, "BLOCK_SUMS", 10)
    _, s, g = _data(5)
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.01)
    assert res.info["verify"] == "eager"
    _check(res, s, g, 0.01)


@pytest.mark.parametrize("verify", ["blocks", "fused", "eager"])
def test_verify_modes_agree(verify):
    """Check the three verification modes give the same output, and the recomputed gap."""
    from skfairlayer.dask import project as dproject

    _, s, g = _data(6, k=3)
    res = dproject(da.from_array(s, chunks=500), da.from_array(g, chunks=500), tolerance=0.01,
                   verify=verify)
    if verify != "fused":  # the gap is known before the output is computed
        _check(res, s, g, 0.01)
    out, gap = dask.compute(res.proba, res.verification)
    assert gap <= 0.01 + VERIFY_TOL
    np.testing.assert_allclose(out, project(s, g, tolerance=0.01).proba, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_corrupted_decisions_raise(monkeypatch, k):
    """Check that a decision kernel selecting other rows raises when the decisions are
    computed, and that the global check is used past BLOCK_COUNTS."""
    from skfairlayer._decisions import parity_decisions as memory_decisions
    from skfairlayer.dask import _decisions, parity_decisions

    _, s, g = _data(7, k=k)
    ref = memory_decisions(s, g, k, 0.02).decisions
    ds, dg = da.from_array(s, chunks=500), da.from_array(g, chunks=500)
    kernel = _decisions._block_decide

    def broken(s_raw, g_raw, offset, lookup, value, last):
        out, counts = kernel(s_raw, g_raw, offset, lookup, value, last)
        out[:1] = 1 - out[:1]  # a row flipped: its group's count moves
        codes = np.asarray(g_raw)[:1]
        return out, counts + np.bincount(codes, weights=2 * out[:1] - 1, minlength=k)

    for limit, match in [(1 << 20, "selects other counts than predicted"),
                         (10, "other counts than the solver chose")]:
        monkeypatch.setattr(_decisions, "BLOCK_COUNTS", limit)
        monkeypatch.setattr(_decisions, "_block_decide", kernel)
        res = parity_decisions(ds, dg, tolerance=0.02)
        np.testing.assert_array_equal(res.decisions.compute(), ref)
        monkeypatch.setattr(_decisions, "_block_decide", broken)
        res = parity_decisions(ds, dg, tolerance=0.02)
        with pytest.raises(SolverError, match=match):
            res.decisions.compute()


@pytest.mark.parametrize("labels, dtype", [((0, 1), np.uint8), ((5, 6), np.int16),
                                           ((-1, 0), np.int64)])
def test_two_integer_groups_read_straight_from_the_block(labels, dtype):
    """Check the two-group passes that convert consecutive integer labels straight from the
    block (no boolean indicator): the in-memory projection and decisions (with ties), parity,
    and a label missing from the fitted pair raising in the output pass."""
    from skfairlayer.dask import project as dproject
    from skfairlayer.exceptions import UnseenGroupError

    rng, s, g = _data(11)
    groups = np.asarray(labels, dtype=dtype)[g]
    res = dproject(da.from_array(s, chunks=700), da.from_array(groups, chunks=700),
                   tolerance=0.02)
    _check(res, s, groups, 0.02)
    from skfairlayer._decisions import parity_decisions as memory_decisions
    from skfairlayer.dask import parity_decisions
    from skfairlayer.dask._passes import block_output

    dg = da.from_array(groups, chunks=700)
    dec = parity_decisions(da.from_array(s, chunks=700), dg, tolerance=0.02)
    np.testing.assert_array_equal(dec.decisions.compute(),
                                  memory_decisions(s, g, 2, 0.02).decisions)
    # Many ties at the thresholds (decided by position), and count vectors of equal
    # expected accuracy (one more row in each group, gains -0.18 and +0.18): both front
    # ends prefer the same optimum.
    tied = np.round(s, 2)
    got = parity_decisions(da.from_array(tied, chunks=700), dg, tolerance=0.02).decisions.compute()
    np.testing.assert_array_equal(got, memory_decisions(tied, g, 2, 0.02).decisions)
    lookup = {labels[0]: 0, labels[1]: 1}
    bad = groups[:50].copy()
    bad[7] = labels[1] + 1
    with pytest.raises(UnseenGroupError):
        block_output(s[:50], bad, lookup, np.array([0.01, -0.01]), 0.0, 1.0)


@pytest.mark.parametrize("offset", [0, 5])
@pytest.mark.parametrize("shifts", [[0.3, -0.2], [0.1, 0.1]], ids=["apart", "equal"])
def test_two_group_output_kernel_reports_bounds_or_nan(shifts, offset):
    """Check the two-group output kernel: clipped outputs with their group sums (against the
    scaled indicator, or the indicator itself when the shifts are equal), the bounds as the
    range, NaN as the range when an output is NaN, and an empty block's empty range."""
    from skfairlayer.dask._passes import block_output

    rng = np.random.default_rng(2)
    s, g = rng.random(3000), rng.integers(0, 2, 3000)
    shifts = np.array(shifts)
    lookup = {offset: 0, offset + 1: 1}
    out, stats = block_output(s, (g + offset).astype(np.int16), lookup, shifts, 0.0, 1.0)
    np.testing.assert_allclose(out, np.clip(s - shifts[g], 0.0, 1.0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(stats["sums"], np.bincount(g, weights=out), rtol=1e-13)
    assert (stats["lo"], stats["hi"]) == (0.0, 1.0)
    s[17] = np.nan
    _, stats = block_output(s, g + offset, lookup, shifts, 0.0, 1.0)
    assert np.isnan(stats["lo"]) and np.isnan(stats["hi"])
    out, stats = block_output(s[:0], g[:0] + offset, lookup, shifts, 0.0, 1.0)
    assert out.size == 0 and (stats["lo"], stats["hi"]) == (np.inf, -np.inf)


@pytest.mark.parametrize("offset", [0, 5])
@pytest.mark.parametrize("center", [[0.05, -0.04], [0.02, 0.02]], ids=["apart", "equal"])
def test_two_group_bracket_kernel_matches_the_general_one(monkeypatch, center, offset):
    """Check that the two-group bracket kernel (group 1's sum against the scaled indicator, or
    the indicator itself when the centre's shifts are equal) classifies and sums as the
    general kernel does."""
    from skfairlayer.dask import _passes

    rng = np.random.default_rng(4)
    s = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 2.0, 5000)))
    g = (rng.integers(0, 2, 5000) + offset).astype(np.int16)
    args = (s, g, {offset: 0, offset + 1: 1}, np.array(center), np.array([0.003, 0.002]), 0.0, 1.0)
    two = _passes._classified(*args)
    monkeypatch.setattr(_passes.TwoGroups, "of", classmethod(lambda cls, raw, lookup: None))
    general = _passes._classified(*args)
    for a, b in zip(two[:4], general[:4], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    order_a, order_b = np.lexsort((two[4], two[5])), np.lexsort((general[4], general[5]))
    np.testing.assert_array_equal(two[4][order_a], general[4][order_b])
    np.testing.assert_array_equal(two[5][order_a], general[5][order_b])
    assert two[4].size > 0


@pytest.mark.parametrize("offset", [0, 5, -1])
def test_two_groups_count_rows_of_group_one(offset):
    """Check that a block's rows of group 1 are counted for labels starting anywhere, over
    several sub-blocks and on an empty block."""
    from skfairlayer.dask._blocks import SUB, TwoGroups

    raw = (np.random.default_rng(1).integers(0, 2, 2 * SUB + 17) + offset).astype(np.int16)
    lookup = {offset: 0, offset + 1: 1}
    assert TwoGroups.of(raw, lookup).count() == np.count_nonzero(raw == offset + 1)
    assert TwoGroups.of(raw[:0], lookup).count() == 0


@pytest.mark.parametrize("kind", ["binary", "decisions", "multiclass"])
def test_output_blocks_held_elsewhere_are_never_reused(kind):
    """Check that the output passes reuse a block's array only once nothing else holds it:
    blocks kept from one result (projection, decisions, multiclass projection) are unchanged
    by the next results on other data with the same chunks, and a released block's memory
    is reused."""
    from skfairlayer._decisions import parity_decisions as memory_decisions
    from skfairlayer.dask import parity_decisions
    from skfairlayer.dask import project as dproject
    from skfairlayer.dask._passes import block_output

    def instance(seed):
        _, s, g = _data(seed)
        if kind == "multiclass":
            rng = np.random.default_rng(seed)
            s = rng.dirichlet(np.ones(3), s.size)
        return s, g

    def result(s, g):
        S = da.from_array(s, chunks=(500,) + s.shape[1:])
        G = da.from_array(g, chunks=500)
        if kind == "decisions":
            return parity_decisions(S, G, tolerance=0.01).decisions
        return dproject(S, G, tolerance=0.01).proba

    def expected(s, g):
        if kind == "decisions":
            return memory_decisions(s, g, 2, 0.01).decisions
        return project(s, g, tolerance=0.01).proba

    s, g = instance(0)
    held = dask.compute(*result(s, g).to_delayed().ravel())  # the blocks' own arrays
    copies = [b.copy() for b in held]
    for seed in (1, 2):
        s2, g2 = instance(seed)
        np.testing.assert_allclose(result(s2, g2).compute(), expected(s2, g2), rtol=0,
                                   atol=1e-12)
        for block, copy in zip(held, copies, strict=True):
            np.testing.assert_array_equal(block, copy)
    np.testing.assert_allclose(np.concatenate(held), expected(s, g), rtol=0, atol=1e-12)
    if kind == "binary":
        lookup, shifts = {0: 0, 1: 1}, np.array([0.01, -0.01])
        out, _ = block_output(s[:500], g[:500], lookup, shifts, 0.0, 1.0)
        address = out.ctypes.data
        del out
        again, _ = block_output(s[500:1000], g[500:1000], lookup, shifts, 0.0, 1.0)
        assert again.ctypes.data == address
        kept, _ = block_output(s[:500], g[:500], lookup, shifts, 0.0, 1.0)
        assert kept.ctypes.data != again.ctypes.data
