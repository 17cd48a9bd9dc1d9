"""Tests of FairnessLayerClassifier as a scikit-learn citizen and as a fairness layer."""

import pickle

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from skfairlayer import FairnessLayerClassifier, UnseenGroupError
from skfairlayer._projection import VERIFY_TOL

TOL = 0.02


def _gap(values, groups):
    means = [values[groups == g].mean() for g in np.unique(groups)]
    return max(means) - min(means)


def _data(n=600, seed=0, n_groups=2):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    X = np.c_[rng.normal(size=(n, 3)) + group[:, None] * 0.8, group]
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n) > 0.8).astype(int)
    return X, y, group


@pytest.mark.parametrize("n_groups", [2, 3, 5])
@pytest.mark.parametrize("seed", range(3))
def test_batch_outputs_meet_parity(n_groups, seed):
    """Check that probabilities and decisions of a batch meet parity exactly."""
    X, y, group = _data(seed=seed, n_groups=n_groups)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=TOL, sensitive_features=3)
    clf.fit(X, y)
    Xt, _, gt = _data(n=400, seed=seed + 100, n_groups=n_groups)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (400, 2)
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert _gap(proba[:, 1], gt) <= TOL + VERIFY_TOL
    decisions = clf.predict(Xt)
    assert set(np.unique(decisions)) <= {0, 1}
    assert _gap(decisions.astype(float), gt) <= TOL + 1e-12


def test_rounding_breaks_parity_but_predict_does_not():
    """Check that thresholding projected probabilities can break parity while predict keeps it."""
    X, y, group = _data(n=2000, seed=3)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.0, sensitive_features=3)
    clf.fit(X, y)
    thresholded = clf.set_params(decision="threshold").predict(X)
    assert _gap(thresholded.astype(float), group) > 0.01
    decisions = clf.set_params(decision="parity").predict(X)
    assert _gap(decisions.astype(float), group) <= 1e-12


def test_parity_decisions_beat_thresholding_in_expected_accuracy_at_equal_parity():
    """Check that parity decisions are at least as accurate (expected) as any parity-feasible rule."""
    X, y, group = _data(n=1500, seed=4)
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=TOL, sensitive_features=3, sensitive_as_feature=False
    )
    clf.fit(X, y)
    s = clf.estimator_.predict_proba(X[:, :3])[:, 1]
    yhat = clf.predict(X)
    expected = np.sum(yhat * s + (1 - yhat) * (1 - s))
    # A feasible alternative: everyone rejected (selection rate 0 in both groups).
    assert expected >= np.sum(1 - s) - 1e-9
    # Random feasible selections never beat it.
    rng = np.random.default_rng(0)
    sizes = np.bincount(group)
    for _ in range(50):
        rate = rng.random()
        alt = np.zeros_like(yhat)
        for g, n_g in enumerate(sizes):
            idx = np.flatnonzero(group == g)
            top = idx[np.argsort(-s[idx])][: int(round(rate * n_g))]
            alt[top] = 1
        if _gap(alt.astype(float), group) <= TOL:
            assert expected >= np.sum(alt * s + (1 - alt) * (1 - s)) - 1e-9


def test_single_group_batch_uses_fitted_shifts():
    """Check that a one-row batch gets the training shifts and thresholds."""
    X, y, _ = _data(seed=1)
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=TOL, sensitive_features=3, sensitive_as_feature=False
    )
    clf.fit(X, y)
    row = X[:1]
    g = clf.groups_.tolist().index(row[0, 3])
    s = clf.estimator_.predict_proba(row[:, :3])[0, 1]
    assert clf.predict_proba(row)[0, 1] == pytest.approx(np.clip(s - clf.layer_.shifts[g], 0, 1))
    assert clf.predict(row)[0] == int(s > clf.layer_.thresholds[g])


def test_fitted_inference_meets_parity_on_training_set():
    """Check that inference='fitted' reproduces the training projection and decisions."""
    X, y, group = _data(n=800, seed=2)
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=TOL, sensitive_features=3, inference="fitted"
    ).fit(X, y)
    assert _gap(clf.predict_proba(X)[:, 1], group) <= TOL + 1e-9
    assert _gap(clf.predict(X).astype(float), group) <= TOL + 1e-12


def test_keyword_sensitive_features_and_strings():
    """Check that groups passed as a keyword, as strings, give the same as a column of X."""
    X, y, group = _data(seed=5)
    names = np.array(["female", "male"])[group]
    a = FairnessLayerClassifier(
        LogisticRegression(), tolerance=TOL, sensitive_features=3, sensitive_as_feature=False
    )
    b = FairnessLayerClassifier(LogisticRegression(), tolerance=TOL)
    a.fit(X, y)
    b.fit(X[:, :3], y, sensitive_features=names)
    np.testing.assert_allclose(
        a.predict_proba(X), b.predict_proba(X[:, :3], sensitive_features=names)
    )
    np.testing.assert_array_equal(a.predict(X), b.predict(X[:, :3], sensitive_features=names))
    assert list(b.groups_) == ["female", "male"]


def test_dataframe_columns_and_sensitive_as_feature():
    """Check DataFrame input with a named sensitive column, dropped or kept for the base."""
    pd = pytest.importorskip("pandas")
    X, y, group = _data(seed=6)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    df["sex"] = pd.Categorical(np.array(["F", "M"])[group])
    pre = ColumnTransformer([("num", StandardScaler(), ["a", "b", "c"])], remainder="drop")
    clf = FairnessLayerClassifier(make_pipeline(pre, LogisticRegression()), sensitive_features="sex")
    clf.fit(df, y)
    assert clf.n_features_in_ == 4
    assert list(clf.feature_names_in_) == ["a", "b", "c", "sex"]
    assert _gap(clf.predict_proba(df)[:, 1], group) <= 0.01 + VERIFY_TOL
    pre2 = ColumnTransformer(
        [("num", StandardScaler(), ["a", "b", "c"]), ("cat", OneHotEncoder(), ["sex"])]
    )
    kept = FairnessLayerClassifier(
        make_pipeline(pre2, LogisticRegression()), sensitive_features="sex", sensitive_as_feature=True
    ).fit(df, y)
    assert kept.estimator_[-1].coef_.shape[1] == 5
    assert _gap(kept.predict(df).astype(float), group) <= 0.01 + 1e-12


def test_intersectional_groups_from_two_columns():
    """Check that two sensitive columns define intersectional groups."""
    rng = np.random.default_rng(77)
    X, y, g1 = _data(n=800, seed=7)
    g2 = rng.integers(0, 2, 800)
    X = np.c_[X, g2]
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=TOL, sensitive_features=[3, 4])
    clf.fit(X, y)
    assert len(clf.groups_) == 4
    combo = g1 * 2 + g2
    assert _gap(clf.predict_proba(X)[:, 1], combo) <= TOL + VERIFY_TOL
    assert _gap(clf.predict(X).astype(float), combo) <= TOL + 1e-12


def test_string_labels_and_classes():
    """Check that string class labels are returned by predict."""
    X, y, group = _data(seed=8)
    ys = np.array(["no", "yes"])[y]
    clf = FairnessLayerClassifier(tolerance=TOL, sensitive_features=3).fit(X, ys)
    assert list(clf.classes_) == ["no", "yes"]
    assert set(clf.predict(X)) <= {"no", "yes"}


def test_frozen_estimator_is_used_as_is():
    """Check that a FrozenEstimator base is not refitted."""
    X, y, _ = _data(seed=9)
    base = LogisticRegression().fit(X[:, :3], y)
    coef = base.coef_.copy()
    clf = FairnessLayerClassifier(
        FrozenEstimator(base), sensitive_features=3, sensitive_as_feature=False
    )
    clf.fit(X[:100], 1 - y[:100])
    np.testing.assert_array_equal(clf.estimator_.estimator.coef_, coef)


def test_clone_pickle_joblib_round_trip(tmp_path):
    """Check that clone, pickle and joblib round-trips keep parameters and predictions."""
    X, y, _ = _data(seed=10)
    clf = FairnessLayerClassifier(LogisticRegression(C=0.5), tolerance=0.03, sensitive_features=3)
    cloned = clone(clf)
    assert cloned.get_params()["tolerance"] == 0.03
    clf.fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    np.testing.assert_array_equal(joblib.load(path).predict(X), clf.predict(X))


def test_grid_search_and_cross_validate_read_groups_from_x():
    """Check GridSearchCV tuning tolerance and the base's C, and cross_validate, without routing."""
    X, y, _ = _data(n=600, seed=11)
    clf = FairnessLayerClassifier(LogisticRegression(), sensitive_features=3)
    grid = GridSearchCV(
        clf, {"tolerance": [0.01, 0.05], "estimator__C": [0.1, 1.0]}, cv=3, error_score="raise"
    )
    grid.fit(X, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert set(grid.best_params_) == {"tolerance", "estimator__C"}
    res = cross_validate(clf, X, y, cv=3, error_score="raise")
    assert np.isfinite(res["test_score"]).all()


def test_metadata_routing_through_pipeline_and_grid_search():
    """Check that sensitive_features reach fit, predict and score through routing."""
    X, y, group = _data(n=600, seed=12)
    Xb = X[:, :3]
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(StandardScaler(), FairnessLayerClassifier(tolerance=TOL))
        pipe.fit(Xb, y, sensitive_features=group)
        proba = pipe.predict_proba(Xb, sensitive_features=group)[:, 1]
        assert _gap(proba, group) <= TOL + VERIFY_TOL
        assert _gap(pipe.predict(Xb, sensitive_features=group).astype(float), group) <= TOL + 1e-12
        grid = GridSearchCV(pipe, {"fairnesslayerclassifier__tolerance": [0.01, 0.1]}, cv=3,
                            error_score="raise")
        grid.fit(Xb, y, sensitive_features=group)
        assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
        res = cross_validate(pipe, Xb, y, cv=3, params={"sensitive_features": group},
                             error_score="raise")
        assert np.isfinite(res["test_score"]).all()


def test_metadata_routing_passes_sample_weight_to_base():
    """Check that sample_weight reaches the base estimator with and without routing."""
    X, y, group = _data(n=400, seed=13)
    w = np.where(y == 1, 5.0, 1.0)
    ref = LogisticRegression().fit(X, y, sample_weight=w)
    clf = FairnessLayerClassifier(LogisticRegression(), sensitive_features=3)
    clf.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(clf.estimator_.coef_, ref.coef_)
    with sklearn.config_context(enable_metadata_routing=True):
        base = LogisticRegression().set_fit_request(sample_weight=True)
        clf = FairnessLayerClassifier(base, sensitive_features=3).fit(X, y, sample_weight=w)
        np.testing.assert_allclose(clf.estimator_.coef_, ref.coef_)


def test_score_takes_sensitive_features_and_sample_weight():
    """Check that score is the accuracy of the parity decisions, weighted if asked."""
    X, y, group = _data(seed=14)
    clf = FairnessLayerClassifier(tolerance=TOL).fit(X[:, :3], y, sensitive_features=group)
    pred = clf.predict(X[:, :3], sensitive_features=group)
    w = np.linspace(0.1, 1, len(y))
    assert clf.score(X[:, :3], y, sensitive_features=group) == pytest.approx(np.mean(pred == y))
    assert clf.score(X[:, :3], y, w, sensitive_features=group) == pytest.approx(
        np.average(pred == y, weights=w)
    )


def test_does_not_mutate_user_estimator():
    """Check that fit leaves the user's base estimator unfitted."""
    X, y, _ = _data(seed=15)
    base = LogisticRegression()
    FairnessLayerClassifier(base, sensitive_features=3).fit(X, y)
    assert not hasattr(base, "coef_")


def test_calibrated_non_probabilistic_base():
    """Check that a calibrated LinearSVC works as a base."""
    X, y, group = _data(seed=16)
    clf = FairnessLayerClassifier(CalibratedClassifierCV(LinearSVC()), tolerance=TOL,
                                  sensitive_features=3).fit(X, y)
    assert _gap(clf.predict_proba(X)[:, 1], group) <= TOL + VERIFY_TOL


def test_predict_does_not_change_state():
    """Check that predict-like methods leave the fitted estimator unchanged."""
    X, y, _ = _data(seed=17)
    clf = FairnessLayerClassifier(DecisionTreeClassifier(max_depth=3, random_state=0),
                                  sensitive_features=3).fit(X, y)
    before = pickle.dumps(clf)
    clf.predict_proba(X)
    clf.predict(X[:1])
    clf.score(X, y)
    assert pickle.dumps(clf) == before


def _fitted():
    X, y, _ = _data(seed=20)
    return FairnessLayerClassifier(LogisticRegression(), sensitive_features=3).fit(X, y), X, y


class _NoProba(LinearSVC):
    pass


@pytest.mark.parametrize(
    "make_call, err_type, match",
    [
        (lambda c, X, y: c.predict_proba(X[:, :3]), ValueError, "features"),
        (lambda c, X, y: c.predict_proba(X[:0]), ValueError, "empty|0 sample"),
        (lambda c, X, y: c.predict(np.c_[X[:, :3], np.full(len(X), 7.0)]), UnseenGroupError, "7"),
        (lambda c, X, y: c.predict_proba(X, sensitive_features=X[:, 3]), ValueError, "twice"),
        (lambda c, X, y: clone(c).set_params(tolerance=-0.1).fit(X, y), ValueError, "tolerance"),
        (lambda c, X, y: clone(c).set_params(tolerance="a").fit(X, y), ValueError, "tolerance"),
        (lambda c, X, y: clone(c).set_params(tolerance=np.nan).fit(X, y), ValueError, "tolerance"),
        (lambda c, X, y: clone(c).set_params(estimator=LinearSVC()).fit(X, y), TypeError,
         "predict_proba.*CalibratedClassifierCV"),
        (lambda c, X, y: clone(c).set_params(stream_algorithm="paper").fit(
            X, np.arange(len(y)) % 3).partial_predict(X), ValueError, "binary demographic parity"),
        (lambda c, X, y: clone(c).fit(X, y[:-1]), ValueError, "samples"),
        (lambda c, X, y: clone(c).set_params(sensitive_features=9).fit(X, y), ValueError,
         "out of range"),
        (lambda c, X, y: clone(c).set_params(sensitive_features="sex").fit(X, y), ValueError,
         "without column names.*set_output"),
        (lambda c, X, y: clone(c).set_params(sensitive_features=None).fit(X, y), ValueError,
         "sensitive features"),
        (lambda c, X, y: clone(c).set_params(sensitive_features=None).fit(
            X, y, sensitive_features=X[:-1, 3]), ValueError, "rows"),
        (lambda c, X, y: clone(c).fit(np.where(X[0, 0] == X, np.nan, X), y), ValueError, "NaN"),
        (lambda c, X, y: clone(c).fit(np.where(X[0, 0] == X, np.inf, X), y), ValueError,
         "infinity|too large"),
        (lambda c, X, y: clone(c).set_params(sensitive_features=None).fit(
            X, y, sensitive_features=np.where(X[:, 3] == 0, np.nan, 1.0)), ValueError, "NaN"),
    ],
)
def test_bad_input_errors(make_call, err_type, match):
    """Check that bad input raises a clear error naming the problem."""
    clf, X, y = _fitted()
    with pytest.raises(err_type, match=match):
        make_call(clf, X, y)


def test_infeasible_bounds_raise():
    """Check that a projection with impossible bounds raises InfeasibleProblemError."""
    from skfairlayer import InfeasibleProblemError, project

    with pytest.raises(InfeasibleProblemError, match="impossible"):
        project([0.1, 0.9], [0, 1], tolerance=0.0, bounds=([0.0, 0.8], [0.1, 1.0]))


class _NaNOnNegative(LogisticRegression):
    """A base whose probabilities are NaN on rows with a negative first feature."""

    def predict_proba(self, X):
        proba = super().predict_proba(X)
        proba[np.asarray(X)[:, 0] < 0] = np.nan
        return proba


@pytest.mark.parametrize("n_classes", [2, 3])
def test_one_row_stream_rejects_nan_base_scores_and_keeps_its_state(n_classes):
    """Check the one-row serving path raises on NaN base scores and serves nothing."""
    rng = np.random.default_rng(0)
    group = rng.integers(0, 2, 600)
    X = np.c_[rng.normal(size=(600, 2)) + group[:, None], group]
    y = rng.integers(0, n_classes, 600)
    clf = FairnessLayerClassifier(_NaNOnNegative(), tolerance=0.05, sensitive_features=2)
    clf.fit(X[X[:, 0] > 0], y[X[:, 0] > 0])
    bad = np.array([[-1.0, 0.5, 1.0]])
    good = np.array([[1.0, 0.5, 1.0]])
    clf.partial_predict_proba(good)
    before = clf.stream_report().n_served
    with pytest.raises(ValueError, match="NaN or infinity"):
        clf.partial_predict_proba(bad)
    assert clf.stream_report().n_served == before
    assert np.all(np.isfinite(clf.partial_predict_proba(good)))


class _CountingLR(LogisticRegression):
    """LogisticRegression that records the rows of each ``predict_proba`` call."""

    def predict_proba(self, X):
        self.calls_ = [*getattr(self, "calls_", []), X.shape[0]]
        return super().predict_proba(X)


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_large_batch_scored_in_row_blocks_matches_one_call(monkeypatch, keep, n_classes):
    """A large dense batch is scored block by block (rows in cache): same outputs as one call."""
    import skfairlayer._base as base_module

    X, y, group = _data(n=3000, n_groups=3)
    if n_classes == 3:
        y = np.digitize(X[:, 0], [-0.3, 0.6])
    clf = FairnessLayerClassifier(
        _CountingLR(), tolerance=TOL, sensitive_features=3, sensitive_as_feature=keep
    ).fit(X, y)
    Xt, _, gt = _data(n=5000, seed=7, n_groups=3)
    whole = clf.predict_proba(Xt), clf.predict(Xt)
    clf.estimator_.calls_ = []
    monkeypatch.setattr(base_module, "_MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(base_module, "_BLOCK_BYTES", 1024 * Xt.itemsize * (4 if keep else 3))
    blocked = clf.predict_proba(Xt), clf.predict(Xt)
    assert clf.estimator_.calls_ == [1024] * 4 + [904] + [1024] * 4 + [904]
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])
    assert _gap(blocked[0][:, 1], gt) <= TOL + VERIFY_TOL
    clf.estimator_.calls_ = []
    monkeypatch.setattr(base_module, "_MIN_BLOCK_ROWS", 2048)  # X too wide for such blocks
    clf.predict_proba(Xt)
    assert clf.estimator_.calls_ == [5000]
