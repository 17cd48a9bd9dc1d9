"""Tests of the Dask estimator front end: every criterion with the fitted rule, batch limits."""

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402

from skfairlayer import FairnessLayerClassifier, FairnessLayerRegressor  # noqa: E402
from skfairlayer.exceptions import UnseenGroupError  # noqa: E402


@pytest.fixture(autouse=True)
def _synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def _no_compute(*args, **kwargs):
    raise AssertionError("the graph was computed while it was built")


def _chunks(rng, n):
    """A random chunking of n rows with an empty chunk and one-row chunks."""
    cuts = np.sort(rng.integers(2, n - 1, size=int(rng.integers(2, 7))))
    sizes = np.diff(np.concatenate([[0], [1, 2], cuts, [n - 1, n]]))
    sizes = np.insert(sizes, int(rng.integers(0, sizes.size + 1)), 0)
    return (tuple(int(x) for x in sizes),)


def _data(seed, n=900, n_classes=2):
    """Features, a 3-valued and a 2-valued attribute, a target; sorted by the first attribute
    (so that partitions miss groups)."""
    rng = np.random.default_rng(seed)
    g = np.sort(rng.integers(0, 3, n))
    h = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 3))
    X[:, 0] += 0.7 * g - 0.4 * h
    latent = X[:, 0] + X[:, 1] + rng.normal(size=n)
    if n_classes == 2:
        y = (latent > 0.5).astype(int)
    elif n_classes == 0:  # regression
        y = latent
    else:
        y = np.digitize(latent, [0.0, 1.2])
    return rng, X, g, h, y


_CASES = {
    "dp": ("demographic_parity", 2, "intersectional", 1),
    "eo": ("equal_opportunity", 2, "intersectional", 1),
    "eodds": ("equalized_odds", 2, "intersectional", 1),
    "mean_residual": ("mean_residual", 2, "intersectional", 1),
    "dp_multiclass": ("demographic_parity", 3, "intersectional", 1),
    "eodds_multiclass_marginal": ("equalized_odds", 3, "marginal", 2),
    "dp_marginal_two": ("demographic_parity", 2, "marginal", 2),
    "eo_intersectional_two": ("equal_opportunity", 2, "intersectional", 2),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_fitted_classifier_equals_in_memory(case):
    """Check that the fitted rule on random chunkings (empty and one-row chunks, chunks missing
    a group) gives the in-memory probabilities to 1e-12 and the same labels."""
    from skfairlayer.dask import predict, predict_proba

    criterion, n_classes, groups, n_attr = _CASES[case]
    rng, X, g, h, y = _data(len(case), n_classes=n_classes)
    sf = g if n_attr == 1 else np.column_stack([g, h])
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05, criterion=criterion,
                                  groups=groups, inference="fitted").fit(X, y, sensitive_features=sf)
    expected = est.predict_proba(X, sensitive_features=sf), est.predict(X, sensitive_features=sf)
    for _ in range(2):
        chunks = _chunks(rng, X.shape[0])
        dX = da.from_array(X, chunks=(chunks[0], -1))
        dsf = da.from_array(sf, chunks=chunks if sf.ndim == 1 else (chunks[0], 1))
        with dask.config.set(scheduler=_no_compute):  # outputs stay lazy
            proba, labels = predict_proba(est, dX, sensitive_features=dsf), predict(
                est, dX, sensitive_features=dsf)
        assert proba.shape == (X.shape[0], n_classes)
        assert proba.chunks[0] == tuple(c for c in chunks[0] if c)  # dask drops empty blocks
        np.testing.assert_allclose(proba.compute(), expected[0], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(labels.compute(), expected[1])


@pytest.mark.parametrize("criterion", ["demographic_parity", "mean_residual"])
@pytest.mark.parametrize("groups", ["intersectional", "marginal"])
def test_fitted_regressor_equals_in_memory(criterion, groups):
    """Check the regressor's fitted rule on a chunking with empty and one-row chunks, the
    groups read from columns of X."""
    from skfairlayer.dask import predict

    rng, X, g, h, y = _data(7, n_classes=0)
    Xg = np.column_stack([X, g, h])
    est = FairnessLayerRegressor(Ridge(), tolerance=0.05, criterion=criterion, groups=groups,
                                 sensitive_features=[3, 4], sensitive_as_feature=False,
                                 inference="fitted").fit(Xg, y)
    dX = da.from_array(Xg, chunks=(_chunks(rng, Xg.shape[0])[0], 2))  # column chunks: merged
    np.testing.assert_allclose(predict(est, dX).compute(), est.predict(Xg), rtol=0, atol=1e-12)


def test_fitted_on_dask_dataframe_marginal_categorical():
    """Check a Dask DataFrame, two named sensitive columns (one categorical with unknown
    categories and a category absent from the data), marginal equalized odds."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from skfairlayer.dask import predict, predict_proba

    _, X, g, h, y = _data(3)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["sex"] = pd.Categorical(np.array(["f", "m"])[h], categories=["f", "m", "x"])
    frame["band"] = g
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.03, criterion="equalized_odds",
                                  groups="marginal", sensitive_features=["sex", "band"],
                                  sensitive_as_feature=False, inference="fitted").fit(frame, y)
    ddf = dd.from_pandas(frame, npartitions=7)
    ddf["sex"] = ddf["sex"].cat.as_unknown()
    ddf, frame = ddf[ddf["band"] != 1], frame[frame["band"] != 1]  # empty partitions
    assert 0 in ddf.map_partitions(len).compute().tolist()
    np.testing.assert_allclose(predict_proba(est, ddf).compute(), est.predict_proba(frame),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predict(est, ddf).compute(), est.predict(frame))


@pytest.mark.parametrize("inference", ["fitted", "batch"])
def test_unseen_group_same_error(inference):
    """Check that a group label unseen at fit raises the estimator's own error."""
    from skfairlayer.dask import predict_proba

    rng, X, g, _, y = _data(1)
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02,
                                  inference=inference).fit(X, y, sensitive_features=g)
    g2 = g.copy()
    g2[5] = 9
    with pytest.raises(UnseenGroupError) as expected:
        est.predict_proba(X, sensitive_features=g2)
    dX, dg = da.from_array(X, chunks=100), da.from_array(g2, chunks=100)
    with pytest.raises(UnseenGroupError) as got:
        predict_proba(est, dX, sensitive_features=dg).compute()
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("decision", ["parity", "threshold"])
def test_batch_marginal_one_attribute(decision):
    """Check that groups='marginal' with one attribute runs the global solve (the same
    problem as intersectional) and equals the in-memory answer on the whole collection."""
    from skfairlayer.dask import predict, predict_proba

    rng, X, g, _, y = _data(5, n=2000)
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.03, groups="marginal",
                                  decision=decision).fit(X, y, sensitive_features=g)
    chunks = _chunks(rng, X.shape[0])
    dX, dg = da.from_array(X, chunks=(chunks[0], 3)), da.from_array(g, chunks=chunks)
    p = predict_proba(est, dX, sensitive_features=dg).compute()
    np.testing.assert_allclose(p, est.predict_proba(X, sensitive_features=g), rtol=0, atol=1e-12)
    means = np.array([p[g == j, 1].mean() for j in range(3)])
    assert np.ptp(means) <= 0.03 + 1e-9
    np.testing.assert_array_equal(predict(est, dX, sensitive_features=dg).compute(),
                                  est.predict(X, sensitive_features=g))


@pytest.mark.parametrize("bounds", ["target", None, (0.0, None), (None, 2.0)])
def test_batch_regressor(bounds):
    """Check the regressor's global demographic parity against the in-memory answer, with
    finite bounds, none (the default) and one open end."""
    from skfairlayer.dask import predict

    rng, X, g, _, y = _data(8, n=2000, n_classes=0)
    est = FairnessLayerRegressor(Ridge(), tolerance=0.05, bounds=bounds).fit(
        X, y, sensitive_features=g)
    chunks = _chunks(rng, X.shape[0])
    dX, dg = da.from_array(X, chunks=(chunks[0], 3)), da.from_array(g, chunks=chunks)
    out = predict(est, dX, sensitive_features=dg).compute()
    np.testing.assert_allclose(out, est.predict(X, sensitive_features=g), rtol=0, atol=1e-11)
    means = np.array([out[g == j].mean() for j in range(3)])
    assert np.ptp(means) <= 0.05 + 1e-9
    assert out.min() >= est.bounds_[0] and out.max() <= est.bounds_[1]


@pytest.mark.parametrize("case", ["eo", "eodds", "mean_residual", "dp_multiclass",
                                  "dp_marginal_two"])
def test_batch_unsupported_names_criterion_and_remedy(case):
    """Check that a batch problem not solved from per-group sums raises, naming why and the
    remedy, before any pass over the data."""
    from skfairlayer.dask import predict, predict_proba

    criterion, n_classes, groups, n_attr = _CASES[case]
    _, X, g, h, y = _data(2, n_classes=n_classes)
    sf = g if n_attr == 1 else np.column_stack([g, h])
    est = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02, criterion=criterion,
                                  groups=groups).fit(X, y, sensitive_features=sf)
    dX, dsf = da.from_array(X, chunks=300), da.from_array(sf, chunks=300)
    what = {"eo": "equal_opportunity", "eodds": "equalized_odds",
            "mean_residual": "mean_residual", "dp_multiclass": "3 classes",
            "dp_marginal_two": "marginal' over 2 attributes"}[case]
    # multiclass demographic parity is solved globally; only its parity decisions are not
    methods = (predict,) if case == "dp_multiclass" else (predict_proba, predict)
    with dask.config.set(scheduler=_no_compute):
        for method in methods:
            with pytest.raises(NotImplementedError, match="inference='fitted'") as info:
                method(est, dX, sensitive_features=dsf)
            assert what in str(info.value)


def test_sensitive_columns_errors_from_the_core_selector():
    """Check that the column selection gives the core's errors, on the driver, for Dask arrays
    and DataFrames."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from skfairlayer.dask import predict

    _, X, g, _, y = _data(4)
    Xg = np.column_stack([X, g])
    dX = da.from_array(Xg, chunks=300)
    est = FairnessLayerClassifier(LogisticRegression(), sensitive_features=-1,
                                  inference="fitted").fit(Xg, y)
    np.testing.assert_array_equal(predict(est, dX).compute(), est.predict(Xg))
    with dask.config.set(scheduler=_no_compute):
        for params, match in [({"sensitive_features": 9}, "out of range"),
                              ({"sensitive_features": "g"}, "without column names")]:
            with pytest.raises(ValueError, match=match):
                predict(est.set_params(**params), dX)
        with pytest.raises(ValueError, match="twice"):
            predict(est.set_params(sensitive_features=3), dX, sensitive_features=dX[:, 3])
        est.set_params(sensitive_features=None)
        with pytest.raises(ValueError, match="needs the sensitive features"):
            predict(est, dX)
    frame = pd.DataFrame(Xg, columns=["a", "b", "c", "g"])
    est = FairnessLayerClassifier(LogisticRegression(), sensitive_features="g",
                                  inference="fitted").fit(frame, y)
    ddf = dd.from_pandas(frame, npartitions=3)
    np.testing.assert_array_equal(predict(est, ddf).compute(), est.predict(frame))
    with dask.config.set(scheduler=_no_compute), pytest.raises(ValueError, match="not found"):
        predict(est.set_params(sensitive_features="group"), ddf)


def test_input_errors():
    """Check the errors for in-memory X, a regressor's predict_proba and a callable
    sensitive_features."""
    from skfairlayer.dask import predict, predict_proba

    _, X, g, _, y = _data(6, n=300, n_classes=0)
    reg = FairnessLayerRegressor(Ridge(), inference="fitted").fit(X, y, sensitive_features=g)
    dX, dg = da.from_array(X, chunks=100), da.from_array(g, chunks=100)
    with pytest.raises(TypeError, match="Dask array or a Dask DataFrame"):
        predict(reg, X, sensitive_features=dg)
    with pytest.raises(TypeError, match="FairnessLayerClassifier"):
        predict_proba(reg, dX, sensitive_features=dg)
    with pytest.raises(ValueError, match="300 rows but X has 299"):
        predict(reg, dX[:-1], sensitive_features=dg)
    clf = FairnessLayerClassifier(LogisticRegression(), inference="fitted",
                                  sensitive_features=lambda Z: Z[:, 0] > 0).fit(X, y > 0)
    with pytest.raises(NotImplementedError, match="callable"):
        predict(clf, dX)


class _CountingLogistic(LogisticRegression):
    """A logistic regression that records the rows of every predict_proba call."""

    calls = []  # noqa: RUF012 (shared by the clones the layer makes)

    def predict_proba(self, X):
        type(self).calls.append(X.shape[0])
        return super().predict_proba(X)


@pytest.mark.parametrize("method", ["predict_proba", "parity", "threshold"])
def test_batch_scores_each_partition_once(method):
    """Check that inference='batch' runs the base's predict_proba once per non-empty partition
    (persist_scores=True) and every pass (False), with the same answer either way."""
    import skfairlayer.dask as sd

    rng, X, g, _, y = _data(4, n=1500)
    decision = "threshold" if method == "threshold" else "parity"
    est = FairnessLayerClassifier(_CountingLogistic(), tolerance=0.03,
                                  decision=decision).fit(X, y, sensitive_features=g)
    chunks = _chunks(rng, X.shape[0])
    dX, dg = da.from_array(X, chunks=(chunks[0], 3)), da.from_array(g, chunks=chunks)
    fn = sd.predict_proba if method == "predict_proba" else sd.predict
    ref = getattr(est, "predict_proba" if method == "predict_proba" else "predict")(
        X, sensitive_features=g)
    outs = {}
    for persist in (True, False):
        _CountingLogistic.calls.clear()
        outs[persist] = fn(est, dX, sensitive_features=dg, persist_scores=persist).compute()
        calls = [c for c in _CountingLogistic.calls if c]
        if persist:
            assert sorted(calls) == sorted(c for c in chunks[0] if c)
        else:  # the start's partitions, then at least a bracket pass and the output pass
            assert len(calls) >= 2 * sum(1 for c in chunks[0] if c)
    np.testing.assert_array_equal(outs[True], outs[False])
    if method == "predict_proba":
        np.testing.assert_allclose(outs[True], ref, rtol=0, atol=1e-12)
    else:
        np.testing.assert_array_equal(outs[True], ref)
    with pytest.raises(TypeError, match="persist_scores must be True or False"):
        fn(est, dX, sensitive_features=dg, persist_scores="yes")
