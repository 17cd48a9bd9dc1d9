"""Tests of the fitted layer (skfairlayer.FittedLayer) and of 'one problem, one answer'."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier, FittedLayer, project
from skfairlayer._groups import encode
from skfairlayer._projection import VERIFY_TOL


def _data(n=1500, seed=0, n_groups=3, n_classes=2):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    X = np.c_[rng.normal(size=(n, 3)) + 0.5 * group[:, None], group]
    z = X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n)
    y = np.digitize(z, np.quantile(z, np.linspace(0, 1, n_classes + 1)[1:-1]))
    return X, y, group


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("criterion", ["demographic_parity", "equal_opportunity",
                                       "mean_residual"])
@pytest.mark.parametrize("seed", range(3))
def test_marginal_equals_intersectional_with_one_attribute(seed, criterion, n_classes):
    """Check that one sensitive attribute described two ways gives identical outputs."""
    X, y, _ = _data(seed=seed, n_classes=n_classes)
    fitted = {
        mode: FairnessLayerClassifier(
            LogisticRegression(), tolerance=0.02, sensitive_features=3, groups=mode,
            criterion=criterion, min_group_size=None,
        ).fit(X[:1000], y[:1000])
        for mode in ("intersectional", "marginal")
    }
    a, b = fitted["intersectional"], fitted["marginal"]
    Xt = X[1000:]
    np.testing.assert_allclose(a.predict_proba(Xt), b.predict_proba(Xt), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
    np.testing.assert_allclose(a.predict_proba(Xt[:1]), b.predict_proba(Xt[:1]), atol=1e-12)
    with warnings.catch_warnings():  # mean residual: a one-row batch cannot meet its rows
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(a.predict(Xt[:1]), b.predict(Xt[:1]))
    if a.stream_ is None:  # equal opportunity over every class has no stream
        assert b.stream_ is None
        return
    for i in range(0, 300, 3):
        rows = Xt[i : i + 3]
        np.testing.assert_allclose(a.partial_predict_proba(rows), b.partial_predict_proba(rows),
                                   rtol=0, atol=1e-12)
        np.testing.assert_array_equal(a.partial_predict(rows), b.partial_predict(rows))
    assert type(a.stream_.engine("proba")) is type(b.stream_.engine("proba"))


def test_marginal_equals_intersectional_on_adult():
    """Check the same identity on UCI Adult with race (5 groups): batch, one row, stream."""
    pytest.importorskip("pandas")
    from skfairlayer.datasets import load_adult

    X, y = load_adult(return_X_y=True)
    X = X[["age", "education-num", "hours-per-week", "capital-gain", "race"]].iloc[:6000]
    y = y[:6000]
    kw = {"tolerance": 0.02, "sensitive_features": "race", "sensitive_as_feature": False,
          "min_group_size": None}
    a = FairnessLayerClassifier(LogisticRegression(max_iter=500), **kw).fit(X[:4000], y[:4000])
    b = FairnessLayerClassifier(LogisticRegression(max_iter=500), groups="marginal",
                                **kw).fit(X[:4000], y[:4000])
    Xt = X[4000:]
    np.testing.assert_allclose(a.predict_proba(Xt), b.predict_proba(Xt), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.predict(Xt), b.predict(Xt))
    for i in range(200):
        row = Xt.iloc[[i]]
        np.testing.assert_allclose(a.partial_predict_proba(row), b.partial_predict_proba(row),
                                   rtol=0, atol=1e-12)
        np.testing.assert_array_equal(a.partial_predict(row), b.partial_predict(row))


@pytest.mark.parametrize("seed", range(5))
def test_fitted_layer_batches_meet_parity_and_fall_back_below_two_groups(seed):
    """Check a FittedLayer: batch outputs meet the criterion; a one-group batch uses the rule."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    scores = rng.beta(2, 3, 2000)
    groups = rng.integers(0, k, 2000)
    groupings, _ = encode(groups)
    layer = FittedLayer("demographic_parity", 0.03).fit(scores, groupings)
    out = layer.outputs(scores, groupings)
    np.testing.assert_allclose(out, project(scores, groups, tolerance=0.03).proba, atol=1e-12)
    means = np.bincount(groups, weights=out) / np.bincount(groups)
    assert means.max() - means.min() <= 0.03 + VERIFY_TOL
    decisions = layer.decisions(scores, groupings)
    rates = np.bincount(groups, weights=decisions) / np.bincount(groups)
    assert rates.max() - rates.min() <= 0.03
    # The fitted rules reproduce the fit set's parity (in-sample) ...
    fitted = layer.fitted_outputs(scores, groupings)
    fitted_means = np.bincount(groups, weights=fitted) / np.bincount(groups)
    assert fitted_means.max() - fitted_means.min() <= 0.03 + 1e-6
    # ... and serve a batch of one group.
    one = [g.__class__(g.codes[groups == 0], g.n_groups) for g in groupings]
    np.testing.assert_allclose(layer.outputs(scores[groups == 0], one),
                               layer.fitted_outputs(scores[groups == 0], one))
    assert layer.fit_gap <= 0.03 + VERIFY_TOL


def test_fitted_layer_open_bounds():
    """``None`` is an open end, as for ``project``: the same layer as infinite bounds."""
    rng = np.random.default_rng(4)
    scores, groups = rng.normal(0.3, 1.0, 800), rng.integers(0, 3, 800)
    groupings, _ = encode(groups)
    for open_, inf in [((None, None), (-np.inf, np.inf)), ((0.0, None), (0.0, np.inf))]:
        kw = {"decisions": False}
        got = FittedLayer("demographic_parity", 0.05, lower=open_[0], upper=open_[1], **kw)
        ref = FittedLayer("demographic_parity", 0.05, lower=inf[0], upper=inf[1], **kw)
        got.fit(scores, groupings)
        ref.fit(scores, groupings)
        np.testing.assert_array_equal(got.outputs(scores, groupings),
                                      ref.outputs(scores, groupings))
        np.testing.assert_array_equal(got.fitted_outputs(scores, groupings),
                                      ref.fitted_outputs(scores, groupings))
    with pytest.raises(ValueError, match="lower <= upper"):
        FittedLayer("demographic_parity", 0.05, lower=1.0, upper=0.0)


def test_fitted_layer_tolerance_override_and_thresholds_view():
    """Check the batch tolerance override and the binary shifts/thresholds views."""
    rng = np.random.default_rng(0)
    scores, groups = rng.random(500), rng.integers(0, 2, 500)
    groupings, _ = encode(groups)
    layer = FittedLayer("demographic_parity", 0.1).fit(scores, groupings)
    tight = layer.outputs(scores, groupings, tolerance=0.0)
    means = np.bincount(groups, weights=tight) / np.bincount(groups)
    assert abs(means[0] - means[1]) <= VERIFY_TOL
    assert layer.shifts.shape == (2,) and layer.thresholds.shape == (2,)
    decisions = layer.fitted_decisions(scores, groupings)
    np.testing.assert_array_equal(decisions, (scores > layer.thresholds[groups]).astype(int))
