"""Tests of the global multiclass projection on Dask: equal to the in-memory one, verified."""

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from skfairlayer import FairnessLayerClassifier, SolverError, project  # noqa: E402
from skfairlayer._projection import VERIFY_TOL  # noqa: E402
from skfairlayer.exceptions import UnseenGroupError  # noqa: E402


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _chunks(rng, n, parts):
    """A random chunking of n rows into about ``parts`` chunks, with an empty chunk and
    one-row chunks."""
    cuts = np.sort(rng.integers(2, n - 1, size=parts))
    sizes = np.diff(np.concatenate([[0, 1, 2], cuts, [n - 1, n]]))
    sizes = np.insert(sizes, int(rng.integers(0, sizes.size + 1)), 0)
    return tuple(int(x) for x in sizes)


def _instance(seed, n, n_classes, k):
    """Class scores biased by group; sorted by group for every third seed (partitions then
    miss whole groups)."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    S = rng.dirichlet(np.full(n_classes, 0.7), n)
    S[:, 0] += 0.6 * (g == 0) - 0.2 * (g == 1)
    S = np.clip(S, 0, None)
    S /= S.sum(axis=1, keepdims=True)
    if seed % 3 == 0:
        order = np.argsort(g, kind="stable")
        S, g = S[order], g[order]
    return rng, S, g


def _check_output(P, g, tolerance):
    """Parity of every class column on the computed output, rows on the simplex."""
    assert np.all(np.isfinite(P)) and P.min() >= 0
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    means = np.array([P[g == c].mean(axis=0) for c in np.unique(g)])
    assert np.max(np.ptp(means, axis=0)) <= tolerance + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_project_equals_in_memory(seed):
    """Check that random chunkings (empty and one-row chunks, partitions missing a group) give
    the in-memory projection and gap to 1e-12, with parity on the computed output."""
    from skfairlayer.dask import DaskMulticlassResult
    from skfairlayer.dask import project as dproject

    n_classes, k = 2 + seed % 4, 2 + seed % 3
    n = 30_000 if seed % 2 else 500 + 37 * seed
    tol = [0.0, 0.01, 0.1][seed % 3]
    rng, S, g = _instance(seed, n, n_classes, k)
    labels = np.array(["u", "a", "k", "b"])[g] if seed % 4 == 1 else g
    ref = project(S, labels, tolerance=tol)
    chunks = _chunks(rng, n, int(rng.integers(3, 24)))
    column_chunks = (1,) * n_classes if seed % 5 == 0 else (n_classes,)  # rechunked
    res = dproject(da.from_array(S, chunks=(chunks, column_chunks)),
                   da.from_array(labels, chunks=chunks), tolerance=tol)
    assert isinstance(res, DaskMulticlassResult)
    P = res.proba.compute()
    assert P.shape == S.shape and res.proba.chunks == (chunks, (n_classes,))
    np.testing.assert_allclose(P, ref.proba, rtol=0, atol=1e-12)
    assert abs(res.gap - ref.gap) <= 1e-12
    assert list(res.groups) == list(ref.groups)
    np.testing.assert_array_equal(res.sizes, np.bincount(ref.codes))
    _check_output(P, g, tol)
    # the shifts reproduce the output; the multipliers sum to zero per class
    from skfairlayer._solvers._simplex import project_simplex_rows

    np.testing.assert_allclose(project_simplex_rows(S - res.shifts[ref.codes]), P, rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(res.duals.sum(axis=0), 0.0, atol=1e-9 * max(1, n))
    assert res.passes >= 2 and res.info["verify"] == "blocks"
    assert res.verification.compute() == pytest.approx(res.gap, abs=1e-12)


def test_sampled_start_and_unseen_label():
    """Check a start read from a few partitions, a label only in a partition it did not read
    (the evaluation is repeated with every label), and the number of passes."""
    from skfairlayer.dask import project as dproject

    rng, S, g = _instance(4, 30_000, 3, 3)
    g = g.astype(object)
    g[1000:1010] = "rare"  # partition 1 of 30: the start reads 0, 4, 8, ...
    labels = np.array([str(x) for x in g])
    ref = project(S, labels, tolerance=0.02)
    res = dproject(da.from_array(S, chunks=(1000, 3)), da.from_array(labels, chunks=1000),
                   tolerance=0.02)
    np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
    assert res.info["sampled_blocks"] == 8 and res.info["relabel_passes"] == 1
    assert "rare" in list(res.groups)
    assert res.passes <= 10  # a 10-row group among ~1e4-row ones: a few passes
    plain = dproject(da.from_array(S, chunks=(1000, 3)),
                     da.from_array(np.where(labels == "rare", "0", labels), chunks=1000),
                     tolerance=0.02)
    assert plain.info["relabel_passes"] == 0 and 2 <= plain.passes <= 6


@pytest.mark.parametrize("verify", ["eager", "fused"])
def test_verify_modes(verify):
    """Check that the eager and fused verifications give the same output and its gap."""
    from skfairlayer.dask import project as dproject

    rng, S, g = _instance(7, 4000, 4, 3)
    ref = project(S, g, tolerance=0.01)
    chunks = _chunks(rng, S.shape[0], 6)
    res = dproject(da.from_array(S, chunks=(chunks, 4)), da.from_array(g, chunks=chunks),
                   tolerance=0.01, verify=verify)
    np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
    if verify == "eager":
        assert abs(res.gap - ref.gap) <= 1e-12
    else:
        assert res.gap is None
    assert res.verification.compute() <= 0.01 + VERIFY_TOL


def test_dataframe_groups():
    """Check a dask Series and a two-column dask DataFrame (intersectional) of groups."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from skfairlayer.dask import project as dproject

    rng, S, g = _instance(2, 3000, 3, 3)
    h = rng.integers(0, 2, g.size)
    frame = pd.DataFrame({"g": np.array(["x", "y", "z"])[g], "h": h})
    ddf = dd.from_pandas(frame, npartitions=5)
    sizes = tuple(int(x) for x in ddf.map_partitions(len).compute())
    dS = da.from_array(S, chunks=(sizes, 3))
    for groups, mem in [(ddf["g"], frame["g"]), (ddf, frame)]:
        ref = project(S, mem, tolerance=0.01)
        res = dproject(dS, groups, tolerance=0.01)
        np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
        assert len(res.groups) == len(ref.groups)


def test_one_group_and_one_column():
    """Check one group (the rows projected onto the simplex, nothing to equalise) and 2-D
    scores of one column (binary)."""
    from skfairlayer.dask import project as dproject

    _, S, _ = _instance(1, 500, 3, 2)
    S = S + 0.01  # off the simplex: projected
    res = dproject(da.from_array(S, chunks=(100, 3)), da.zeros(500, chunks=100, dtype=int),
                   tolerance=0.0)
    P = res.proba.compute()
    np.testing.assert_allclose(P, project(S, np.zeros(500), tolerance=0.0).proba, atol=1e-12)
    assert res.gap == 0.0
    one = dproject(da.from_array(S[:, :1] / 2, chunks=(100, 1)),
                   da.from_array(np.arange(500) % 2, chunks=100), tolerance=0.0)
    assert one.proba.ndim == 1


def test_errors():
    """Check the errors: criterion, verify mode, column count, non-finite scores."""
    from skfairlayer.dask import project as dproject

    S = da.from_array(np.full((4, 3), 1 / 3), chunks=2)
    g = da.from_array(np.array([0, 0, 1, 1]), chunks=2)
    with pytest.raises(NotImplementedError, match="skfairlayer.project"):
        dproject(S, g, criterion="equalized_odds")
    with pytest.raises(ValueError, match="verify must be"):
        dproject(S, g, verify="never")
    bad = np.full((4, 3), 1 / 3)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        dproject(da.from_array(bad, chunks=2), g)
    with pytest.raises(ValueError, match="same number of partitions|rows"):
        dproject(S, da.from_array(np.array([0, 1, 0]), chunks=2))


def _corrupt(monkeypatch, how):
    """Make the output pass's block kernel compute a corrupted block (and honest statistics
    of it); the solve's passes are untouched."""
    from skfairlayer.dask import _simplex_passes

    original, projected = _simplex_passes.block_output, _simplex_passes._projected

    def bad_projected(S, codes, Lt):
        Pt, St, shift = projected(S, codes, Lt)  # class-major: column 0 is the first row
        if Pt.shape[1] >= 2:
            Pt = Pt.copy()
            if how == "sums":  # stays on the simplex, moves its group's class sums
                Pt[:, 0] = np.roll(Pt[:, 0], 1) if np.ptp(Pt[:, 0]) > 1e-3 else [1, 0, 0]
            elif how == "negative":  # sums to one, an entry below zero
                Pt[:, 0] = [-1e-3, 1 + 1e-3, 0]
            else:
                Pt[0, 0] = np.nan
        return Pt, St, shift

    def corrupted(*args, **kwargs):
        monkeypatch.setattr(_simplex_passes, "_projected", bad_projected)
        try:
            return original(*args, **kwargs)
        finally:
            monkeypatch.setattr(_simplex_passes, "_projected", projected)

    monkeypatch.setattr(_simplex_passes, "block_output", corrupted)


@pytest.mark.parametrize("how", ["sums", "negative", "nan"])
@pytest.mark.parametrize("verify", ["blocks", "fused", "eager"])
def test_corrupted_block_raises(monkeypatch, how, verify):
    """Check that a corrupted output block makes the output raise SolverError (``blocks``,
    ``fused``: when computed; ``eager``: before ``project`` returns)."""
    from skfairlayer.dask import project as dproject

    _, S, g = _instance(5, 600, 3, 2)
    args = (da.from_array(S, chunks=(100, 3)), da.from_array(g, chunks=100))
    _corrupt(monkeypatch, how)
    match = {"sums": "does not match|violate parity", "negative": "simplex",
             "nan": "non-finite"}[how]
    with pytest.raises(SolverError, match=match):
        dproject(*args, tolerance=0.01, verify=verify).proba.compute()


def test_driver_checks(monkeypatch):
    """Check that certified sums violating parity, and a solve that does not converge, raise
    SolverError on the driver."""
    from skfairlayer.dask import _simplex
    from skfairlayer.dask import project as dproject

    sums = np.array([[[10.0, 0.0], [0.0, 10.0]]])  # one partition, two groups of 10 rows
    with pytest.raises(SolverError, match="violate parity"):
        _simplex._check_predicted((sums, np.array([[10.0, 10.0]])), np.array([10.0, 10.0]),
                                  0.5)
    with pytest.raises(SolverError, match="add up"):
        _simplex._check_predicted((sums, np.array([[10.0, 9.0]])), np.array([10.0, 10.0]),
                                  0.5)
    _, S, g = _instance(5, 300, 3, 2)
    args = da.from_array(S, chunks=(100, 3)), da.from_array(g, chunks=100)
    monkeypatch.setattr(_simplex, "MAX_PASSES", 0)  # the first evaluation is the counting pass
    with pytest.raises(SolverError, match="1 passes|0 passes|Merge the smallest"):
        dproject(*args, tolerance=0.0)
    monkeypatch.setattr(_simplex._simplex, "solve_rows", lambda rows, start: None)
    with pytest.raises(SolverError, match="OSQP"):
        dproject(*args)


def _estimator(seed=3, n=1500, classes=("low", "mid", "high"), **params):
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, 3, n))
    X = rng.normal(size=(n, 3))
    X[:, 0] += 0.7 * g
    y = np.asarray(classes)[np.digitize(X[:, 0] + X[:, 1] + rng.normal(size=n), [0.0, 1.2])]
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02, **params).fit(
        np.column_stack([X, g]), y)
    return rng, np.column_stack([X, g]), g, est


@pytest.mark.parametrize("persist", [True, False])
def test_estimator_batch_equals_in_memory(persist):
    """Check the estimator front end (groups read from a column of X): predict_proba equals the
    in-memory batch answer, predict with decision='threshold' too, parity on the output."""
    from skfairlayer.dask import predict, predict_proba

    rng, Xg, g, est = _estimator(sensitive_features=3, decision="threshold")
    chunks = _chunks(rng, Xg.shape[0], 6)
    dX = da.from_array(Xg, chunks=(chunks, 4))
    p = predict_proba(est, dX, persist_scores=persist).compute()
    np.testing.assert_allclose(p, est.predict_proba(Xg), rtol=0, atol=1e-12)
    _check_output(p, g, 0.02)
    np.testing.assert_array_equal(predict(est, dX, persist_scores=persist).compute(),
                                  est.predict(Xg))


def test_estimator_parity_decisions_and_one_group():
    """Check the error for multiclass parity decisions (before any pass) and the fitted rule
    on a collection of one group."""
    from skfairlayer.dask import predict, predict_proba

    rng, Xg, g, est = _estimator(sensitive_features=3)
    dX = da.from_array(Xg, chunks=(500, 4))
    with pytest.raises(NotImplementedError, match="decision='threshold'.*inference='fitted'"):
        predict(est, dX)
    one = Xg[g == 0]
    p = predict_proba(est, da.from_array(one, chunks=(100, 4))).compute()
    np.testing.assert_allclose(p, est.predict_proba(one), rtol=0, atol=1e-12)
    unseen = Xg.copy()
    unseen[-5:, 3] = 7.0  # a group the estimator did not see at fit
    with pytest.raises(UnseenGroupError, match="7"):
        predict_proba(est, da.from_array(unseen, chunks=(500, 4)))


def test_local_cluster_with_processes():
    """Check the multiclass projection and the estimator front end through one worker process
    (pickling of the block kernels and the rows' state)."""
    distributed = pytest.importorskip("distributed")
    from skfairlayer.dask import predict_proba
    from skfairlayer.dask import project as dproject

    _, S, g = _instance(6, 6000, 3, 3)
    _, Xg, _, est = _estimator(sensitive_features=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster), dask.config.set(scheduler=None):
        out = dproject(da.from_array(S, chunks=(1000, 3)), da.from_array(g, chunks=1000),
                       tolerance=0.01).proba.compute()
        proba = predict_proba(est, da.from_array(Xg, chunks=(500, 4))).compute()
    np.testing.assert_allclose(out, project(S, g, tolerance=0.01).proba, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba, est.predict_proba(Xg), rtol=0, atol=1e-12)


@pytest.mark.parametrize("verify", ["fused", "eager"])
def test_binary_nan_block_raises(monkeypatch, verify):
    """Check that a NaN in an output block after the first raises in the binary path's
    whole-output verification (the merged minimum must not drop it)."""
    from skfairlayer.dask import _passes
    from skfairlayer.dask import project as dproject

    original = _passes.block_output
    rng = np.random.default_rng(0)
    s, g = rng.random(400), rng.integers(0, 2, 400)

    def corrupted(*args, **kwargs):
        out, stats = original(*args, **kwargs)
        if out.size and np.asarray(args[0])[0] == s[100]:  # the second partition
            out = out.copy()
            out[0] = np.nan
            stats = dict(stats, lo=np.nan, hi=np.nan, sums=stats["sums"] * np.nan)
        return out, stats

    monkeypatch.setattr(_passes, "block_output", corrupted)
    with pytest.raises(SolverError, match="non-finite"):
        dproject(da.from_array(s, chunks=100), da.from_array(g, chunks=100), tolerance=0.05,
                 verify=verify).proba.compute()
