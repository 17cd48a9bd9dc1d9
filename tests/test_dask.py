"""Tests of the Dask front end: the global projection and decisions equal the in-memory ones."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from skfairlayer import FairnessLayerClassifier, SolverError, project  # noqa: E402
from skfairlayer._decisions import parity_decisions as memory_decisions  # noqa: E402
from skfairlayer._projection import VERIFY_TOL  # noqa: E402


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _chunks(rng, n, empty=True):
    """A random chunking of n rows, with empty chunks."""
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(1, 10))))
    sizes = np.diff(np.concatenate([[0], cuts, [n]]))
    if empty:
        sizes = np.insert(sizes, int(rng.integers(0, sizes.size + 1)), 0)
    return (tuple(int(x) for x in sizes),)


def _instance(seed, n, k):
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    s = np.clip(rng.random(n) + 0.25 * (g == 0) - 0.1 * (g == 1), 0, 1)
    if seed % 3 == 0:  # sorted data: partitions missing whole groups
        order = np.lexsort((s, g))
        s, g = s[order], g[order]
    return rng, s, g


def _means(p, g):
    return np.array([p[g == c].mean() for c in np.unique(g)])


def test_import_skfairlayer_does_not_import_dask():
    """Check that `import skfairlayer` leaves dask unimported."""
    code = "import sys, skfairlayer; sys.exit('dask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("seed", range(12))
def test_project_equals_in_memory(seed):
    """Check that random chunkings (with empty chunks) give the in-memory projection to 1e-12."""
    from skfairlayer.dask import project as dproject

    k = 2 + seed % 3
    n = 40_000 if seed % 2 else int(np.random.default_rng(seed).integers(k, 400))
    rng, s, g = _instance(seed, n, k)
    tol = [0.0, 0.01, 0.1][seed % 3]
    ref = project(s, g, tolerance=tol)
    chunks = _chunks(rng, n)
    res = dproject(da.from_array(s, chunks=chunks), da.from_array(g, chunks=chunks),
                   tolerance=tol)
    out, gap = dask.compute(res.proba, res.verification)
    np.testing.assert_allclose(out, ref.proba, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.shifts, ref.shifts[0], rtol=0, atol=1e-12)
    m = _means(out, g)
    assert m.max() - m.min() <= tol + VERIFY_TOL
    assert gap <= tol + VERIFY_TOL
    assert out.min() >= 0 and out.max() <= 1
    # a statistics pass when the start reads every partition (few of them), one bracket
    # pass, one more when the start missed a label; sorted data may also miss a bracket
    info = res.info
    assert res.passes == info["statistics_pass"] + info["relabel_passes"] + len(
        info["uncertain_rows"])
    if seed % 3:  # shuffled data: a representative start
        assert res.passes == info["statistics_pass"] + 1


def test_project_sampled_bracket_passes(monkeypatch):
    """Check that a driver row budget too small for the uncertain rows still gives the optimum."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    monkeypatch.setattr(_project, "MAX_ROWS", 50)
    monkeypatch.setattr(_project, "SAMPLE_ROWS", 64)
    monkeypatch.setattr(_project, "_MIN_TARGET", 8)
    rng, s, g = _instance(1, 60_000, 3)
    ref = project(s, g, tolerance=0.01)
    res = dproject(da.from_array(s, chunks=3000), da.from_array(g, chunks=3000),
                   tolerance=0.01, verify="eager")
    np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
    assert res.passes > 2
    assert res.gap <= 0.01 + VERIFY_TOL


@pytest.mark.parametrize("labels", ["str", "one_row", "bounds", "two_columns"])
def test_project_edge_cases(labels):
    """Check string labels, one-row partitions, other bounds and intersectional columns."""
    from skfairlayer.dask import project as dproject

    rng, s, g = _instance(5, 300, 3)
    bounds, chunks, groups = (0.0, 1.0), 37, g
    if labels == "str":
        groups = np.array(["b", "a", "c"])[g]
    elif labels == "one_row":
        chunks = 1
    elif labels == "bounds":
        bounds = (0.2, 0.7)
    else:
        groups = np.column_stack([g, rng.integers(0, 2, g.size)])
    ref = project(s, groups, tolerance=0.02, bounds=bounds)
    dg = da.from_array(groups, chunks=(chunks,) + ((groups.shape[1],) if groups.ndim == 2 else ()))
    res = dproject(da.from_array(s, chunks=chunks), dg, tolerance=0.02, bounds=bounds)
    np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
    assert list(res.groups) == list(ref.groups)


def test_project_categorical_series_unknown_categories():
    """Check dask Series with categorical groups of unknown categories."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from skfairlayer.dask import project as dproject

    _, s, g = _instance(2, 2000, 3)
    labels = np.array(["x", "y", "z"])[g]
    frame = pd.DataFrame({"s": s, "g": pd.Categorical(labels)})
    ddf = dd.from_pandas(frame, npartitions=6)
    groups = ddf["g"].cat.as_unknown()
    res = dproject(ddf["s"], groups, tolerance=0.01)
    np.testing.assert_allclose(res.proba.compute(), project(s, labels, tolerance=0.01).proba,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(9))
def test_project_open_bounds_equal_in_memory(monkeypatch, seed):
    """Open ends (regression outputs, logits): random chunkings with empty chunks give the
    in-memory projection to 1e-12 (relative to the scores' scale), parity and the bounds
    verified. Odd seeds put outliers in a partition the start does not read: the stand-in
    for an open end then binds and a range pass moves it out."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    monkeypatch.setattr(_project, "SAMPLE_BLOCKS", 2)
    rng = np.random.default_rng(seed)
    k, n = 2 + seed % 3, int(rng.integers(300, 3000))
    g = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    s = rng.normal(0.3 * g, 1.0)
    if seed % 2:
        s[n // 2 : n // 2 + 3] = [40.0, -35.0, 25.0]
    bounds = [(None, None), (0.0, None), (None, 1.0)][seed % 3]
    tol = [0.0, 0.02, 0.3][(seed // 3) % 3]
    chunks = ((n // 10,) * 10 + (n - 10 * (n // 10),),) if seed % 2 else _chunks(rng, n)
    ref = project(s, g, tolerance=tol, bounds=bounds)
    res = dproject(da.from_array(s, chunks=chunks), da.from_array(g, chunks=chunks),
                   tolerance=tol, bounds=bounds, verify=["blocks", "eager", "fused"][seed % 3])
    out, gap = dask.compute(res.proba, res.verification)
    scale = 1.0 + np.abs(s).max()
    np.testing.assert_allclose(out, ref.proba, rtol=0, atol=1e-12 * scale)
    m = _means(out, g)
    assert m.max() - m.min() <= tol + VERIFY_TOL and gap <= tol + VERIFY_TOL
    lo, hi = (-np.inf if bounds[0] is None else bounds[0]), (np.inf if bounds[1] is None
                                                             else bounds[1])
    assert out.min() >= lo and out.max() <= hi
    info = res.info
    assert res.passes == info["statistics_pass"] + info["relabel_passes"] + len(
        info["uncertain_rows"]) + info["range_pass"]
    if seed % 2:
        assert info["range_pass"]


def test_project_bracket_without_free_rows_warns_nothing(monkeypatch):
    """A sampled bracket where a group has no free row and no spread (71 rows in 25 small
    partitions, one open end, tolerance 0) divided 0 by 0: no RuntimeWarning reaches the
    user, and the answer is the in-memory one."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    monkeypatch.setattr(_project, "SAMPLE_BLOCKS", 2)
    rng = np.random.default_rng(488)  # the instance a fuzz found
    k, n = int(rng.integers(2, 6)), int(rng.integers(5, 5000))
    g = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    s = rng.normal(g * 0.3, 1.0)
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 30)) - 1))
    chunks = (tuple(int(x) for x in np.diff(np.concatenate([[0], cuts, [n]]))),)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = dproject(da.from_array(s, chunks=chunks), da.from_array(g, chunks=chunks),
                       tolerance=0.0, bounds=(-0.5, None))
        out = res.proba.compute()
    np.testing.assert_allclose(out, project(s, g, tolerance=0.0, bounds=(-0.5, None)).proba,
                               rtol=0, atol=1e-12 * (1 + np.abs(s).max()))


def test_project_errors():
    """Check the errors for unsupported criteria, bad arguments and in-memory input."""
    from skfairlayer.dask import project as dproject

    s, g = da.from_array(np.array([0.2, 0.8])), da.from_array(np.array([0, 1]))
    with pytest.raises(NotImplementedError, match="demographic_parity"):
        dproject(s, g, criterion="equal_opportunity")
    with pytest.raises(ValueError, match="verify must be"):
        dproject(s, g, verify="never")
    with pytest.raises(TypeError, match="Dask array"):
        dproject(np.array([0.2, 0.8]), g)
    with pytest.raises(ValueError, match="1-D"):
        dproject(da.ones((2, 2, 2)), g)
    with pytest.raises(ValueError, match="finite"):
        dproject(da.from_array(np.array([0.2, np.nan])), g)
    with pytest.raises(ValueError, match="lower < upper"):
        dproject(s, g, bounds=(1.0, 1.0))
    with pytest.raises(ValueError, match="lower <= upper"):
        dproject(s, g, bounds=(1.0, 0.0))


def test_verification_failure_raises():
    """Check that an output violating parity raises when it is computed."""
    from skfairlayer.dask import _project
    from skfairlayer.dask._blocks import as_blocks

    s = np.array([0.9, 0.8, 0.1, 0.2])
    g = np.array([0, 0, 1, 1])
    sb, gb, chunks = as_blocks(da.from_array(s, chunks=2), da.from_array(g, chunks=2))
    proba, check, _ = _project.outputs(sb, gb, chunks, {0: 0, 1: 1}, np.zeros(2),
                                       np.array([2.0, 2.0]), 0.01, 0.0, 1.0, "fused")
    with pytest.raises(SolverError, match="violate parity"):
        proba.compute()
    with pytest.raises(SolverError, match="violate parity"):
        _project.outputs(sb, gb, chunks, {0: 0, 1: 1}, np.zeros(2), np.array([2.0, 2.0]),
                         0.01, 0.0, 1.0, "eager")


def _decision_instance(seed, n, k, ties):
    rng = np.random.default_rng(100 + seed)
    g = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    s = np.clip(rng.random(n) + 0.2 * (g == 0), 0, 1)
    if ties:  # duplicated scores: ties within a group, broken by position
        s[rng.integers(0, n, n // 3)] = s[rng.integers(0, n, n // 3)]
    return rng, s, g


@pytest.mark.parametrize("seed", range(10))
def test_decisions_equal_in_memory(seed):
    """Check that random chunkings give exactly the in-memory parity decisions."""
    from skfairlayer.dask import parity_decisions

    k = 2 + seed % 2
    n = 30_000 if seed % 2 else 500
    rng, s, g = _decision_instance(seed, n, k, ties=seed % 3 == 0)
    tol = [0.01, 0.05, 0.002, 0.2, 0.0][seed % 5]
    ref = memory_decisions(s, g, k, tol)
    chunks = _chunks(rng, n)
    res = parity_decisions(da.from_array(s, chunks=chunks), da.from_array(g, chunks=chunks),
                           tolerance=tol, bins=256 if seed % 4 == 0 else 4096)
    d = res.decisions.compute()
    np.testing.assert_array_equal(d, ref.decisions)
    np.testing.assert_array_equal(res.counts, ref.counts)
    np.testing.assert_array_equal(res.thresholds, ref.thresholds)
    rates = np.array([d[g == c].mean() for c in range(k)])
    assert rates.max() - rates.min() <= tol + 1e-12


def test_decisions_small_tolerance_limit(monkeypatch):
    """Check that a tolerance below one row of the smallest group is refused on large data."""
    from skfairlayer.dask import _decisions, parity_decisions

    monkeypatch.setattr(_decisions, "_GATHER_ROWS", 100)
    _, s, g = _decision_instance(0, 1000, 2, ties=False)
    with pytest.raises(NotImplementedError, match="tolerance"):
        parity_decisions(da.from_array(s, chunks=100), da.from_array(g, chunks=100),
                         tolerance=0.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        parity_decisions(da.from_array(s + 1, chunks=100), da.from_array(g, chunks=100))


def _fitted(seed=0, n=3000, **params):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    g = rng.integers(0, 3, n)
    X[:, 0] += 0.6 * g
    y = (X[:, 0] + rng.normal(size=n) > 0.6).astype(int)
    Xg = np.column_stack([X, g])
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02, sensitive_features=3,
                                  **params).fit(Xg, y)
    return est, Xg


@pytest.mark.parametrize("params", [{}, {"inference": "fitted"}, {"decision": "threshold"}])
def test_estimator_on_dask_array(params):
    """Check predict_proba / predict on a Dask array against the estimator's own methods."""
    from skfairlayer.dask import predict, predict_proba

    est, Xg = _fitted(**params)
    dX = da.from_array(Xg, chunks=(400, 4))
    np.testing.assert_allclose(predict_proba(est, dX).compute(), est.predict_proba(Xg),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predict(est, dX).compute(), est.predict(Xg))


def test_estimator_on_dask_dataframe():
    """Check a DataFrame with a categorical sensitive column (unknown categories)."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from sklearn.linear_model import LogisticRegression

    from skfairlayer.dask import predict, predict_proba

    _, Xg = _fitted()
    y = (Xg[:, 0] > 0.6).astype(int)
    frame = pd.DataFrame(Xg[:, :3], columns=["a", "b", "c"])
    frame["sex"] = pd.Categorical(np.array(["f", "m", "x"])[Xg[:, 3].astype(int)])
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02,
                                  sensitive_features="sex", sensitive_as_feature=False).fit(frame, y)
    ddf = dd.from_pandas(frame, npartitions=5)
    ddf["sex"] = ddf["sex"].cat.as_unknown()
    np.testing.assert_allclose(predict_proba(est, ddf).compute(), est.predict_proba(frame),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predict(est, ddf).compute(), est.predict(frame))


def test_estimator_unsupported():
    """Check the errors for multiclass parity decisions and sensitive features given twice."""
    from sklearn.linear_model import LogisticRegression

    from skfairlayer.dask import predict, predict_proba

    rng = np.random.default_rng(0)
    X, g = rng.normal(size=(300, 2)), rng.integers(0, 2, 300)
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05).fit(
        X, rng.integers(0, 3, 300), sensitive_features=g)
    dX, dg = da.from_array(X, chunks=100), da.from_array(g, chunks=100)
    with pytest.raises(NotImplementedError, match="decision='threshold'"):
        predict(est, dX, sensitive_features=dg)
    est, Xg = _fitted()
    with pytest.raises(ValueError, match="twice"):
        predict_proba(est, da.from_array(Xg, chunks=500), sensitive_features=dg)


def test_local_cluster_with_processes():
    """Check the projection and decisions on a LocalCluster with worker processes (pickling),
    on persisted arrays."""
    distributed = pytest.importorskip("distributed")
    from skfairlayer.dask import parity_decisions, predict, predict_proba
    from skfairlayer.dask import project as dproject

    rng, s, g = _instance(4, 20_000, 3)
    est, Xg = _fitted(n=1000)
    fitted, _ = _fitted(n=1000, criterion="equal_opportunity", inference="fitted")
    dX = da.from_array(Xg, chunks=250)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client, dask.config.set(scheduler=None):
        # persisted on the workers: the passes refer to the blocks' keys, held as futures
        ds, dg = client.persist([da.from_array(s, chunks=2500), da.from_array(g, chunks=2500)])
        res = dproject(ds, dg, tolerance=0.01)
        out = res.proba.compute()
        dec = parity_decisions(ds, dg, tolerance=0.01).decisions.compute()
        batch_proba = predict_proba(est, dX).compute()
        fitted_labels = predict(fitted, dX).compute()
    np.testing.assert_allclose(batch_proba, est.predict_proba(Xg), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fitted_labels, fitted.predict(Xg))
    np.testing.assert_allclose(out, project(s, g, tolerance=0.01).proba, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(dec, memory_decisions(s, g, 3, 0.01).decisions)


def test_docstring_examples_run():
    """Check that the Examples of the public functions of skfairlayer.dask run."""
    import doctest

    from skfairlayer.dask import _decisions, _project

    for module in (_project, _decisions):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0


def test_solve_aggregates_spark_recipe():
    """Check the driver step of the Spark recipe against the in-memory projection."""
    from skfairlayer.dask import solve_aggregates

    rng = np.random.default_rng(3)
    n, eps = 50_000, 0.01
    g = rng.integers(0, 3, n)
    s = np.clip(rng.random(n) + 0.2 * (g == 0), 0, 1)
    ref = project(s, g, tolerance=eps).shifts[0]
    sample = np.concatenate([np.flatnonzero(g == j)[::10] for j in range(3)])
    center = project(s[sample], g[sample], tolerance=eps).shifts[0]

    def aggregates(half):
        u, h = s - center[g], half[g]
        top, bot = u >= 1 + h, u <= -h
        free = (u >= h) & (u <= 1 - h)
        near = ~(top | bot | free)
        cnt = [np.bincount(g[m], minlength=3) for m in (free, top, bot)]
        return (center, half, np.bincount(g), cnt[0], np.bincount(g[free], weights=s[free],
                minlength=3), cnt[1], cnt[2], s[near], g[near])

    shifts = solve_aggregates(*aggregates(np.full(3, 0.02)), tolerance=eps)
    np.testing.assert_allclose(shifts, ref, rtol=0, atol=1e-12)
    assert solve_aggregates(*aggregates(np.full(3, 1e-7)), tolerance=eps) is None


@pytest.mark.parametrize("labels", [(0.0, 1.0), (-1.5, 2.25), (0.0, 0.5, 1.0)])
def test_float_group_labels(labels):
    """Check that float group labels (the two-group fast path, or a third value: the general
    path) give the in-memory projection and decisions, with 2-D one-column groups too."""
    from skfairlayer.dask import parity_decisions
    from skfairlayer.dask import project as dproject

    rng = np.random.default_rng(7)
    n = 30_000
    g = np.asarray(labels)[rng.integers(0, len(labels), n)]
    s = np.clip(rng.random(n) + 0.2 * (g == labels[0]), 0, 1)
    ref = project(s, g, tolerance=0.02)
    chunks = _chunks(rng, n)
    ds = da.from_array(s, chunks=chunks)
    for dg in (da.from_array(g, chunks=chunks), da.from_array(g[:, None], chunks=(chunks[0], 1))):
        res = dproject(ds, dg, tolerance=0.02)
        np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)
        assert res.groups.tolist() == sorted(labels)
    dec = parity_decisions(ds, da.from_array(g, chunks=chunks), tolerance=0.02)
    expected = memory_decisions(s, np.searchsorted(np.sort(labels), g), len(labels), 0.02)
    np.testing.assert_array_equal(dec.decisions.compute(), expected.decisions)


def test_global_decisions_check_their_rates_exactly():
    """Check the driver's exact check of the chosen selection rates refuses a gap over the
    tolerance by any amount (the window search compares rates in floats)."""
    from skfairlayer.dask._decisions import _check_exact_gap

    _check_exact_gap(np.array([1, 2]), np.array([10, 10]), 0.1)  # exactly at the tolerance
    with pytest.raises(SolverError, match="exact arithmetic"):
        _check_exact_gap(np.array([1, 2]), np.array([10, 10]), 0.09999999999999999)


@pytest.mark.parametrize(("seed", "tol"), [(1, 0.1), (6, 0.001), (6, 0.01)])
def test_project_sampled_bracket_with_scores_at_the_bounds(monkeypatch, seed, tol):
    """Check sampled bracket passes when many scores lie exactly on a bound: a group's
    bracket can then shrink below the rounding of the bound, and its rows must still be
    classified once (free, or at the bound)."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    monkeypatch.setattr(_project, "MAX_ROWS", 50)
    rng = np.random.default_rng(seed)
    n = 30_000
    g = rng.integers(0, 2, n).astype(np.int8)
    s = rng.random(n)
    s = np.where(rng.random(n) < 0.2, np.round(s), s) + 0.3 * (g == 0) * rng.random()
    s = np.clip(s, 0.0, 1.0)
    chunks = (106, 8166, 8871, 3368, 9146, n - 29657)
    ref = project(s, g, tolerance=tol)
    res = dproject(da.from_array(s, chunks=(chunks,)), da.from_array(g, chunks=(chunks,)),
                   tolerance=tol)
    out = res.proba.compute()
    np.testing.assert_allclose(out, ref.proba, rtol=0, atol=1e-12)
    assert abs(out[g == 0].mean() - out[g == 1].mean()) <= tol + VERIFY_TOL


@pytest.mark.parametrize("budget", [None, 8])
def test_project_start_whose_sample_has_no_solution(monkeypatch, budget):
    """Check a start read from a few one-row partitions whose sampled model has no
    solution (its rows of each group all at a bound, the means further apart than the
    tolerance): the next pass brackets every shift, and the answer is the in-memory one
    (with the driver's row budget forced tiny, through sampled bracket passes)."""
    from skfairlayer.dask import _project
    from skfairlayer.dask import project as dproject

    if budget is not None:
        monkeypatch.setattr(_project, "MAX_ROWS", budget)
    s = np.array([-3.24, 6.56, -1.73, -0.85, -3.9, 4.45, 5.56, 3.45, 0.79, 4.37, -0.35, 3.27,
                  2.19, -3.16, -1.53, -6.89, -0.2, 5.13, 1.8, -3.22])
    g = np.array([0, 0, 2, 1, 0, 2, 0, 1, 0, 3, 0, 2, 0, 2, 0, 2, 1, 2, 2, 2])
    ref = project(s, g, tolerance=0.05, bounds=(-0.5, 2.0))
    res = dproject(da.from_array(s, chunks=1), da.from_array(g, chunks=1), tolerance=0.05,
                   bounds=(-0.5, 2.0))
    np.testing.assert_allclose(res.proba.compute(), ref.proba, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunks", [1, 5, 20])
def test_decisions_at_a_decimal_tolerance_equal_in_memory(chunks):
    """Check decisions whose best candidate has rates exactly ``0.3`` apart: the float 0.3
    is below 3/10, so the in-memory rule (exact rational comparisons) rejects that gap,
    and so must the global search (it compared rates in floats with a slack, chose it,
    and its exact check raised)."""
    from skfairlayer.dask import parity_decisions

    s = np.array([0.2, 0.9, 0.8, 1.0, 0.3, 0.4, 0.6, 0.1, 0.8, 0.6, 0.4, 0.2, 0.2, 0.1, 0.9,
                  0.9, 0.2, 0.3, 0.3, 0.1])
    g = np.array([0, 1, 2, 2, 0, 1, 0, 1, 2, 1, 2, 1, 1, 2, 1, 1, 2, 0, 2, 0])
    ref = memory_decisions(s, g, 3, 0.3)
    res = parity_decisions(da.from_array(s, chunks=chunks), da.from_array(g, chunks=chunks),
                           tolerance=0.3)
    np.testing.assert_array_equal(res.decisions.compute(), ref.decisions)
    np.testing.assert_array_equal(res.counts, ref.counts)
