"""FairnessLayerRegressor and audit_residuals: the guarantee, references, API."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.tree import DecisionTreeRegressor

from skfairlayer import FairnessLayerRegressor, audit_residuals, project
from skfairlayer.exceptions import InfeasibleProblemError


def _data(rng, n, k, n_attributes=1, scale=1.0):
    attrs = rng.integers(0, k, size=(n, n_attributes))
    X = np.c_[rng.normal(size=(n, 3)), attrs]
    y = scale * (X[:, 0] - 0.5 * X[:, 1] + attrs.sum(axis=1) / k + 0.3 * rng.normal(size=n))
    return X, y, attrs


def _gaps(pred, attrs, groups):
    if groups == "intersectional":
        _, codes = np.unique(attrs, axis=0, return_inverse=True)
        columns = [codes.ravel()]
    else:
        columns = list(attrs.T)
    return [np.ptp([pred[c == g].mean() for g in np.unique(c)]) for c in columns]


def _reference_unbounded_dp(s, codes, eps):
    """Closed form: each group's mean moves to its nearest point of the best band [t, t + eps]."""
    labels, codes = np.unique(codes, return_inverse=True)
    n_g = np.bincount(codes).astype(float)
    m = np.bincount(codes, weights=s) / n_g
    # f(t) = sum n_g dist(m_g, [t, t + eps])^2 is convex piecewise quadratic in t.
    points = np.sort(np.r_[m, m - eps])
    best, best_t = np.inf, None
    edges = np.r_[-np.inf, points, np.inf]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mid = lo + 1.0 if np.isinf(hi) else (hi - 1.0 if np.isinf(lo) else (lo + hi) / 2)
        below = m < mid  # groups below the band pull t down: (t - m)^2
        above = m > mid + eps
        a = n_g[below].sum() + n_g[above].sum()
        b = (n_g * m)[below].sum() + (n_g * (m - eps))[above].sum()
        t = np.clip(b / a, lo, hi) if a > 0 else mid
        f = (n_g * np.maximum(0, t - m) ** 2).sum() + (n_g * np.maximum(0, m - t - eps) ** 2).sum()
        if f < best:
            best, best_t = f, t
    target = np.clip(m, best_t, best_t + eps)
    return s - (m - target)[codes]


@pytest.mark.parametrize("seed", range(6))
def test_guarantee_random_bounds_tolerances_groups(seed):
    """Parity within tolerance (to 1e-9 relative) and bounds exactly, whatever the setting."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 11))
    n_attributes = int(rng.integers(1, 3))
    groups = ["intersectional", "marginal"][seed % 2]
    scale = float(10 ** rng.uniform(-2, 5))
    X, y, attrs = _data(rng, 600, k, n_attributes, scale)
    tol = float(rng.uniform(0, 0.2)) * scale
    lo, hi = np.quantile(y, [rng.uniform(0, 0.3), rng.uniform(0.7, 1)])
    for bounds in [None, "target", (float(lo), float(hi)), (float(lo), np.inf), (None, float(hi))]:
        for inference in ["batch", "fitted"]:
            reg = FairnessLayerRegressor(
                tolerance=tol, bounds=bounds, sensitive_features=list(range(3, 3 + n_attributes)),
                groups=groups, inference=inference, min_group_size=None, cv=3,
            ).fit(X, y)
            pred = reg.predict(X[:400])
            low, high = reg.bounds_
            if isinstance(bounds, tuple):  # None: an open end
                assert (low, high) == tuple(
                    end if b is None else b
                    for b, end in zip(bounds, (-np.inf, np.inf), strict=True))
            assert pred.min() >= low and pred.max() <= high
            if inference == "batch":
                for gap in _gaps(pred, attrs[:400], groups):
                    assert gap <= tol + 1e-9 * np.std(y)


def test_unbounded_dp_matches_closed_form():
    """Without bounds the layer is one shift per group: agrees with the closed form to 1e-12."""
    rng = np.random.default_rng(1)
    for k in range(2, 11):
        X, y, attrs = _data(rng, 800, k)
        eps = float(rng.uniform(0, 0.3))
        reg = FairnessLayerRegressor(tolerance=eps, sensitive_features=3, cv=None).fit(X, y)
        base = reg.estimator_.predict(X)
        ref = _reference_unbounded_dp(base, attrs[:, 0], eps)
        np.testing.assert_allclose(reg.predict(X), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_bounded_dp_matches_general_solver():
    """With bounds, the exact solver and OSQP agree (reference to 1e-7 of the scale)."""
    rng = np.random.default_rng(2)
    X, y, attrs = _data(rng, 500, 4, scale=1000.0)
    kw = {"tolerance": 20.0, "bounds": (-500.0, 800.0), "sensitive_features": 3, "cv": None}
    exact = FairnessLayerRegressor(solver="exact", **kw).fit(X, y).predict(X)
    general = FairnessLayerRegressor(solver="osqp", **kw).fit(X, y).predict(X)
    np.testing.assert_allclose(exact, general, atol=1e-7 * np.std(y))


def test_project_infinite_bounds_exact():
    """project() with infinite (or huge) bounds uses the exact solver; same answer as OSQP."""
    rng = np.random.default_rng(3)
    s = rng.normal(size=300) * 5 + 3 * rng.integers(0, 3, 300)
    g = rng.integers(0, 3, 300)
    ref = _reference_unbounded_dp(s, g, 0.2)
    for bounds in [(-np.inf, np.inf), (-1e300, 1e300)]:
        result = project(s, g, tolerance=0.2, bounds=bounds)
        assert result.solver == "exact"
        np.testing.assert_allclose(result.proba, ref, atol=1e-12 * np.abs(ref).max())


def test_mean_residual_fit_and_plug_in():
    """Mean residual: labels at fit; at inference the plug-in keeps the base predictions."""
    rng = np.random.default_rng(4)
    X, y, attrs = _data(rng, 600, 3, n_attributes=2)
    for groups in ["intersectional", "marginal"]:
        reg = FairnessLayerRegressor(
            tolerance=0.01, criterion="mean_residual", sensitive_features=[3, 4], groups=groups,
        ).fit(X, y)
        np.testing.assert_allclose(reg.predict(X), reg.estimator_.predict(X), atol=1e-9)
        assert reg.layer_.fit_rows >= 3  # the labelled rows of the fit problem


def test_mean_residual_infeasible_bounds_raise():
    rng = np.random.default_rng(5)
    X, y, _ = _data(rng, 300, 2)
    reg = FairnessLayerRegressor(
        tolerance=0.0, criterion="mean_residual", bounds=(y.max() + 1, y.max() + 2),
        sensitive_features=3,
    )
    with pytest.raises(InfeasibleProblemError):
        reg.fit(X, y)


@pytest.mark.parametrize("groups", ["intersectional", "marginal"])
def test_audit_residuals_guarantee(groups):
    rng = np.random.default_rng(6)
    n = 900
    attrs = np.c_[rng.choice(["F", "M"], n), rng.choice(["a", "b", "c"], n)]
    y = 50_000 + 10_000 * rng.normal(size=n)
    pred = y + 2_000 * (attrs[:, 0] == "F") + 3_000 * rng.normal(size=n)
    for bounds in [None, (0.0, 120_000.0)]:
        audit = audit_residuals(
            y, pred, sensitive_features=attrs, tolerance=100.0, groups=groups, bounds=bounds
        )
        for row in audit.table:
            assert abs(row["residual_after"]) <= 100.0 + 1e-9 * np.std(y)
        if bounds is not None:
            assert audit.adjusted.min() >= 0 and audit.adjusted.max() <= 120_000
        assert "resid before" in repr(audit)
        assert audit.n_moved == sum(r["n_moved"] for r in audit.table[: 6 if groups == "intersectional" else 2])


def test_audit_unbounded_intersectional_is_a_clipped_shift():
    rng = np.random.default_rng(7)
    y = rng.normal(size=400) * 10
    g = rng.integers(0, 4, 400)
    pred = y + g + rng.normal(size=400)
    audit = audit_residuals(y, pred, sensitive_features=g, tolerance=0.25)
    for k in range(4):
        r = (y - pred)[g == k].mean()
        shift = r - np.clip(r, -0.25, 0.25)  # residual moves onto the band
        np.testing.assert_allclose(audit.adjusted[g == k] - pred[g == k], shift, atol=1e-11)


def test_score_is_r2_of_predict_and_search_works():
    rng = np.random.default_rng(8)
    X, y, _ = _data(rng, 400, 3)
    reg = FairnessLayerRegressor(Ridge(), tolerance=0.05, sensitive_features=3).fit(X, y)
    assert reg.score(X, y) == pytest.approx(r2_score(y, reg.predict(X)))
    search = GridSearchCV(reg, {"estimator__alpha": [0.1, 10.0]}, cv=3).fit(X, y)
    assert np.isfinite(search.best_score_)


def test_bases_frozen_tree_and_dataframe():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(9)
    X, y, attrs = _data(rng, 300, 2)
    frame = pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(sex=attrs[:, 0].astype(str))
    reg = FairnessLayerRegressor(
        DecisionTreeRegressor(max_depth=3), tolerance=0.02, sensitive_features="sex",
        sensitive_as_feature=False,
    ).fit(frame, y)
    pred = reg.predict(frame)
    assert _gaps(pred, attrs, "intersectional")[0] <= 0.02 + 1e-9
    base = LinearRegression().fit(X[:, :3], y)
    frozen = FairnessLayerRegressor(
        FrozenEstimator(base), tolerance=0.0, sensitive_features=3, sensitive_as_feature=False
    ).fit(X, y)
    assert frozen.estimator_ is not None
    assert _gaps(frozen.predict(X), attrs, "intersectional")[0] <= 1e-9 * np.std(y)


def test_parameter_errors():
    rng = np.random.default_rng(10)
    X, y, _ = _data(rng, 100, 2)
    with pytest.raises(ValueError, match="lower <= upper"):
        FairnessLayerRegressor(bounds=(1.0, 0.0), sensitive_features=3).fit(X, y)
    with pytest.raises(ValueError, match="bounds must be"):
        FairnessLayerRegressor(bounds=("a", "b"), sensitive_features=3).fit(X, y)
    with pytest.raises(ValueError, match="criterion"):
        FairnessLayerRegressor(criterion="equalized_odds", sensitive_features=3).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        FairnessLayerRegressor(sensitive_features=3).fit(X, np.array(["a"] * 100, dtype=object))
    reg = FairnessLayerRegressor(Ridge(), sensitive_features=3).fit(X, y)
    assert reg.bounds_ == (-np.inf, np.inf)


@pytest.mark.parametrize("groups", ["intersectional", "marginal"])
def test_stream_certificate_holds_at_every_row(groups):
    """Pooled gap of everything served within the certificate, bounds exact, any batch size."""
    rng = np.random.default_rng(11)
    X, y, attrs = _data(rng, 2200, 3, n_attributes=2, scale=1000.0)
    reg = FairnessLayerRegressor(
        tolerance=20.0, bounds="target", groups=groups, sensitive_features=[3, 4],
    ).fit(X[:800], y[:800])
    served = []
    i = 800
    for size in [1] * 200 + [7] * 100 + [50] * 10:
        served.append(reg.partial_predict(X[i : i + size]))
        i += size
        report = reg.stream_report()
        assert report.gap <= report.certificate + 1e-9 * np.std(y)
    out = np.concatenate(served)
    assert out.min() >= reg.bounds_[0] and out.max() <= reg.bounds_[1]
    pooled = max(_gaps(out, attrs[800:i], groups))
    assert pooled == pytest.approx(reg.stream_report().gap, rel=1e-9, abs=1e-9)
    reg.reset_stream()
    assert reg.stream_report().n_served == 0


def test_stream_unbounded_raises_with_reason():
    rng = np.random.default_rng(12)
    X, y, _ = _data(rng, 200, 2)
    reg = FairnessLayerRegressor(tolerance=0.1, sensitive_features=3).fit(X, y)
    assert reg.stream_ is None
    with pytest.raises(ValueError, match="finite bounds"):
        reg.partial_predict(X[:2])


def test_regression_metrics_against_scipy_and_definitions():
    from scipy import stats

    from skfairlayer.metrics import (
        group_error_ratio,
        ks_distance,
        mean_difference,
        residual_difference,
        wasserstein_distance,
    )

    rng = np.random.default_rng(13)
    parts = [rng.normal(size=300), rng.normal(size=200) + 0.5, rng.exponential(size=100)]
    pred = np.concatenate(parts)
    g = np.repeat([0, 1, 2], [300, 200, 100])
    y = pred + rng.normal(size=600) + 0.3 * g
    w = rng.uniform(size=600)
    pairs = [(0, 1), (0, 2), (1, 2)]
    ks = max(stats.ks_2samp(parts[i], parts[j]).statistic for i, j in pairs)
    assert ks_distance(None, pred, sensitive_features=g) == pytest.approx(ks, abs=1e-12)
    w1 = max(
        stats.wasserstein_distance(pred[g == i], pred[g == j], w[g == i], w[g == j])
        for i, j in pairs
    )
    value = wasserstein_distance(None, pred, sensitive_features=g, sample_weight=w)
    assert value == pytest.approx(w1, rel=1e-10)
    means = [np.average(pred[g == k], weights=w[g == k]) for k in range(3)]
    assert mean_difference(y, pred, sensitive_features=g, sample_weight=w) == pytest.approx(
        np.ptp(means)
    )
    resid = [np.mean((y - pred)[g == k]) for k in range(3)]
    assert residual_difference(y, pred, sensitive_features=g) == pytest.approx(np.ptp(resid))
    mse = [np.mean(((y - pred) ** 2)[g == k]) for k in range(3)]
    assert group_error_ratio(y, pred, sensitive_features=g) == pytest.approx(max(mse) / min(mse))
    with pytest.raises(ValueError, match="error must be"):
        group_error_ratio(y, pred, sensitive_features=g, error="rmse")


def test_parity_scorer_on_the_regressor():
    from sklearn.model_selection import cross_validate

    from skfairlayer.metrics import make_parity_scorer

    rng = np.random.default_rng(14)
    X, y, _ = _data(rng, 600, 3)
    reg = FairnessLayerRegressor(Ridge(), tolerance=0.05, sensitive_features=3)
    scores = cross_validate(
        reg, X, y, cv=3,
        scoring={"r2": "r2", "gap": make_parity_scorer(3, metric="mean_difference"),
                 "resid": make_parity_scorer(3, metric="residual_difference")},
    )
    assert np.all(-scores["test_gap"] <= 0.05 + 1e-9)
    assert np.all(np.isfinite(scores["test_resid"]))


def test_barycenter_projection_properties():
    from skfairlayer import barycenter_projection
    from skfairlayer.metrics import ks_distance, mean_difference

    rng = np.random.default_rng(15)
    for k in [2, 5]:
        g = np.repeat(np.arange(k), 400)  # equal sizes: the barycenter map is exact
        s = rng.normal(size=g.size) * (1 + g) + g
        full = barycenter_projection(s, g)
        assert ks_distance(None, full, sensitive_features=g) == 0.0
        assert mean_difference(None, full, sensitive_features=g) <= 1e-12 * np.abs(s).max()
        for kk in range(k):  # order within a group is kept
            rows = g == kk
            assert np.all(np.diff(full[rows][np.argsort(s[rows])]) >= 0)
        half = barycenter_projection(s, g, alpha=0.5)
        np.testing.assert_allclose(half, 0.5 * s + 0.5 * full, atol=1e-12)
        np.testing.assert_array_equal(barycenter_projection(s, g, alpha=0.0), s)
    # At the barycenter's mean gap, the layer moves the outputs no more (MATH.md section 5).
    g = rng.integers(0, 3, 3000)
    s = rng.normal(size=3000) * (1 + g) + g
    bary = barycenter_projection(s, g, alpha=0.6)
    gap = mean_difference(None, bary, sensitive_features=g)
    layer = project(s, g, tolerance=gap, bounds=(-np.inf, np.inf)).proba
    assert np.sum((layer - s) ** 2) <= np.sum((bary - s) ** 2)
    with pytest.raises(ValueError, match="alpha"):
        barycenter_projection(s, g, alpha=1.5)


def test_make_paper_regression_factors():
    from skfairlayer.datasets import make_paper_regression

    X, y, g = make_paper_regression(2000, 4, n_groups=4, group_proportions=[0.1, 0.2, 0.3, 0.4],
                                    predictive_power=0.9, random_state=0)
    assert X.shape == (2000, 4) and set(np.unique(g)) == {0, 1, 2, 3}
    assert r2_score(y, LinearRegression().fit(np.c_[X, g], y).predict(np.c_[X, g])) > 0.8
    _, yb, _ = make_paper_regression(500, 3, output_box=(0.0, 1.0), linear=False, noise="heavy",
                                     random_state=1)
    assert yb.min() >= 0.0 and yb.max() <= 1.0
    with pytest.raises(ValueError, match="predictive_power"):
        make_paper_regression(10, predictive_power=0.0)


@pytest.mark.parametrize("bounds", [(-np.inf, np.inf), (-0.5, 0.8)])
@pytest.mark.parametrize("criterion", ["demographic_parity", "mean_residual"])
def test_fine_tune_gradient_matches_finite_differences(bounds, criterion):
    """The regression loss gradient through the layer and the base vs central differences."""
    from sklearn.neural_network import MLPRegressor

    from skfairlayer._differentiable import make_adapter
    from skfairlayer._fine_tune_regression import regression_batch_loss

    rng = np.random.default_rng(16)
    X, y, attrs = _data(rng, 120, 3)
    for model in [Ridge(alpha=0.1), MLPRegressor(hidden_layer_sizes=(5,), max_iter=30,
                                                  random_state=0)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations suffice
            model.fit(X[:, :3], y)
        adapter = make_adapter(model)
        center, scale = float(y.mean()), float(y.std())
        units = (center, scale, *bounds)
        ys = (y - center) / scale
        kw = {"criterion": criterion, "tolerance": 0.05, "solver": "auto", "units": units}
        w = np.ones(y.size)
        params = adapter.parameters()
        _, _, grads = regression_batch_loss(adapter, X[:, :3], params, attrs[:, 0], ys, w,
                                            gradient=True, **kw)
        for j in range(len(params)):
            direction = [np.zeros_like(p) for p in params]
            direction[j] = rng.normal(size=params[j].shape)
            h = 1e-6
            plus = [p + h * d for p, d in zip(params, direction, strict=True)]
            minus = [p - h * d for p, d in zip(params, direction, strict=True)]
            fd = (regression_batch_loss(adapter, X[:, :3], plus, attrs[:, 0], ys, w, **kw)[0]
                  - regression_batch_loss(adapter, X[:, :3], minus, attrs[:, 0], ys, w, **kw)[0])
            analytic = float(np.sum(grads[j] * direction[j]))
            assert analytic == pytest.approx(fd / (2 * h), rel=1e-4, abs=1e-7)


def test_fine_tune_regressor_lowers_projected_loss():
    from sklearn.linear_model import SGDRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skfairlayer import FineTuning
    from skfairlayer.datasets import make_paper_regression

    X, y, g = make_paper_regression(1500, 5, n_groups=3, group_shift=2.0, predictive_power=0.9,
                                    random_state=0)
    X = np.c_[X, g]
    for base in [Ridge(), make_pipeline(StandardScaler(), SGDRegressor(random_state=0))]:
        reg = FairnessLayerRegressor(
            base, tolerance=0.05, sensitive_features=5, sensitive_as_feature=False, cv=None,
            fine_tune=FineTuning(max_epochs=10), random_state=0,
        ).fit(X, 100 * y)
        history = reg.fine_tune_history_
        assert min(history["val_loss"][1:]) < history["val_loss"][0]
        assert type(reg.estimator_) is type(base)
        pred = reg.predict(X)
        assert mean_gap(pred, g) <= 0.05 + 1e-9 * np.std(100 * y)
    with pytest.raises(TypeError, match="differentiable"):
        FairnessLayerRegressor(DecisionTreeRegressor(), sensitive_features=5,
                               fine_tune=True).fit(X, y)


def mean_gap(pred, g):
    return np.ptp([pred[g == k].mean() for k in np.unique(g)])


def test_large_batch_scored_in_row_blocks_matches_one_call(monkeypatch):
    """A large dense batch is predicted block by block: same projected outputs as one call."""
    import skfairlayer._base as base_module

    rng = np.random.default_rng(3)
    X, y, _ = _data(rng, 2000, 3)
    reg = FairnessLayerRegressor(Ridge(), tolerance=0.05, sensitive_features=3).fit(X, y)
    Xt, _, attrs = _data(rng, 3000, 3)
    whole = reg.predict(Xt)
    monkeypatch.setattr(base_module, "_MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(base_module, "_BLOCK_BYTES", 700 * Xt.itemsize * 4)
    blocked = reg.predict(Xt)
    np.testing.assert_array_equal(blocked, whole)
    means = [blocked[attrs[:, 0] == g].mean() for g in range(3)]
    assert max(means) - min(means) <= 0.05 + 1e-9
