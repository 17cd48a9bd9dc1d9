"""Streaming through FairnessLayerClassifier: partial_predict(_proba), reset_stream, stream_report."""

import pickle
from copy import deepcopy

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier
from skfairlayer._stream import PAPER_B_TAU
from skfairlayer.exceptions import UnseenGroupError


def _data(n=2400, k=2, seed=0):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, k, n)
    x = rng.normal(size=n) + 0.8 * group
    X = np.c_[x, rng.normal(size=n), group]
    y = (x + rng.normal(size=n) > 0.6).astype(int)
    return X, y, group


@pytest.fixture(scope="module")
def data():
    return _data()


def _fit(X, y, **params):
    params = {"tolerance": 0.03, "sensitive_features": 2, "sensitive_as_feature": False, **params}
    return FairnessLayerClassifier(LogisticRegression(), **params).fit(X[:800], y[:800])


def _running_gap(values, group):
    counts, sums, gaps = {}, {}, []
    for v, g in zip(values, group, strict=True):
        counts[g] = counts.get(g, 0) + 1
        sums[g] = sums.get(g, 0.0) + v
        means = [sums[h] / counts[h] for h in counts]
        gaps.append(max(means) - min(means))
    return np.array(gaps)


def _snapshot(clf):
    """Everything a report says, for equality checks."""
    out = []
    for output in ("proba", "decisions"):
        r = clf.stream_report(output)
        out.append((r.counts.tobytes(), r.means.tobytes(), r.duals.tobytes(), r.gap, r.n_served))
    return out


def test_partial_predict_proba_certificate_at_every_row(data):
    """Check that the pooled gap of served probabilities is within the certificate at every row."""
    X, y, group = data
    clf = _fit(X, y)
    served, certs = [], []
    for i in range(800, 2000):
        proba = clf.partial_predict_proba(X[i : i + 1])
        assert proba.shape == (1, 2) and proba.sum() == pytest.approx(1.0)
        served.append(proba[0, 1])
        certs.append(clf.stream_report().certificate)
    gaps = _running_gap(served, group[800:2000])
    assert np.all(gaps <= np.array(certs) + 1e-12)
    report = clf.stream_report()
    assert report.certificate == 0.03 and report.n_served == 1200
    assert report.gap == pytest.approx(gaps[-1], abs=1e-12)
    np.testing.assert_array_equal(report.groups, clf.groups_)
    np.testing.assert_array_equal(report.counts, np.bincount(group[800:2000]))


def test_partial_predict_decisions_certificate(data):
    """Check that the pooled selection-rate gap of served decisions is within the certificate."""
    X, y, group = data
    clf = _fit(X, y)
    labels, certs = [], []
    for i in range(800, 2000, 3):
        labels.append(clf.partial_predict(X[i : i + 3]))
        certs.append(clf.stream_report("decisions").certificate)
    labels = np.concatenate(labels)
    assert set(np.unique(labels)) <= set(clf.classes_)
    gaps = _running_gap(labels.astype(float), group[800:2000])[2::3]
    assert np.all(gaps <= np.array(certs) + 1e-12)
    assert clf.stream_report("decisions").certificate == 0.03
    assert clf.stream_report("proba").n_served == 0  # separate streams


def test_first_rows_are_corrected_by_the_fit(data):
    """Check that the stream starts from the fitted shifts: the first row moves by shifts_."""
    X, y, group = data
    clf = _fit(X, y)
    base = clf.estimator_.predict_proba(X[800:801, :2])[0, 1]
    expected = np.clip(base - clf.layer_.shifts[group[800]], 0, 1)
    assert clf.partial_predict_proba(X[800:801])[0, 1] == pytest.approx(expected, abs=1e-12)


def test_fit_and_reset_stream_start_a_new_stream(data):
    """Check that fit and reset_stream forget served rows and replay the same outputs."""
    X, y, _ = data
    clf = _fit(X, y)
    first = [clf.partial_predict_proba(X[i : i + 2]) for i in range(800, 1000, 2)]
    assert clf.stream_report().n_served == 200
    assert clf.reset_stream() is clf
    assert clf.stream_report().n_served == 0
    again = [clf.partial_predict_proba(X[i : i + 2]) for i in range(800, 1000, 2)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    clf.fit(X[:800], y[:800])
    assert clf.stream_report().n_served == 0
    assert not hasattr(clone(clf), "stream_")


def test_changed_stream_parameters_need_a_reset(data):
    """Check that changing a streaming parameter is refused until reset_stream()."""
    X, y, _ = data
    clf = _fit(X, y)
    clf.partial_predict_proba(X[800:810])
    clf.set_params(stream_algorithm="paper")
    with pytest.raises(ValueError, match="reset_stream"):
        clf.partial_predict_proba(X[810:811])
    assert clf.stream_report().n_served == 10  # still readable
    clf.reset_stream()
    assert clf.stream_report().algorithm == "paper"
    clf.partial_predict_proba(X[810:811])
    with pytest.raises(ValueError, match="stream_step"):
        FairnessLayerClassifier(stream_step=-1.0, sensitive_features=2, sensitive_as_feature=False).fit(X[:800], y[:800])


class _NaNForLargeX(LogisticRegression):
    """LogisticRegression whose probabilities are NaN for rows with a huge first feature."""

    def predict_proba(self, X):
        proba = super().predict_proba(X)
        proba[np.asarray(X)[:, 0] > 1e6] = np.nan
        return proba


def test_errors_leave_the_stream_unchanged(data):
    """Check that NaN scores, empty or malformed batches and unseen groups raise and change nothing."""
    X, y, _ = data
    clf = FairnessLayerClassifier(_NaNForLargeX(), tolerance=0.03, sensitive_features=2, sensitive_as_feature=False)
    clf.fit(X[:800], y[:800])
    ref = clone(clf).fit(X[:800], y[:800])
    nan_row = X[800:803].copy()
    nan_row[1, 0] = 1e9
    unseen = X[800:802].copy()
    unseen[0, 2] = 7
    missing = X[800:802].copy()
    missing[1, 2] = np.nan
    bad = [
        (nan_row, ValueError, "NaN or infinity"),
        (X[800:800], ValueError, "empty|0 sample"),
        (X[800:802, :2], ValueError, "features"),
        (unseen, UnseenGroupError, "not seen during fit"),
        (missing, ValueError, "NaN"),
    ]
    for i in range(800, 1000, 4):
        expected = [ref.partial_predict_proba(X[i : i + 4]), ref.partial_predict(X[i : i + 4])]
        rows, err, match = bad[(i // 4) % len(bad)]
        before = _snapshot(clf)
        for method in (clf.partial_predict_proba, clf.partial_predict):
            with pytest.raises(err, match=match):
                method(rows)
        assert _snapshot(clf) == before
        np.testing.assert_array_equal(clf.partial_predict_proba(X[i : i + 4]), expected[0])
        np.testing.assert_array_equal(clf.partial_predict(X[i : i + 4]), expected[1])


def _skops_roundtrip(clf):
    sio = pytest.importorskip("skops.io")
    payload = sio.dumps(clf)
    trusted = sio.get_untrusted_types(data=payload)
    assert set(trusted) <= {
        "skfairlayer._classifier.FairnessLayerClassifier",
        "skfairlayer._layer.FittedLayer",
        "skfairlayer._groups.GroupEncoder",
        "skfairlayer._groups._ColumnLookup",
        "skfairlayer._groups.Grouping",
        "skfairlayer._stream._stream.Stream",
        "skfairlayer._stream._stream.StreamStart",
        "skfairlayer._stream._pooled.PooledPrimalDual",
        "skfairlayer._stream._paper.PaperPrimalDual",
        "skfairlayer._stream._families.PooledFamilies",
        "skfairlayer._stream._residual.PooledResidual",
        "skfairlayer._criteria.ProjectionProblem",
        "skfairlayer._criteria.GroupStatistics",
        "skfairlayer._criteria.AffineRows",
    }
    return sio.loads(payload, trusted=trusted)


def _roundtrip(clf, how, tmp_path):
    """A copy of ``clf`` made by pickle, joblib, deepcopy or skops."""
    if how == "pickle":
        return pickle.loads(pickle.dumps(clf))
    if how == "joblib":
        return _joblib_roundtrip(clf, tmp_path)
    if how == "deepcopy":
        return deepcopy(clf)
    return _skops_roundtrip(clf)


def _joblib_roundtrip(clf, tmp_path):
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    return joblib.load(path)


@pytest.mark.parametrize("how", ["pickle", "joblib", "skops", "deepcopy"])
@pytest.mark.parametrize("algorithm", ["pooled", "paper"])
def test_persistence_mid_stream_is_bit_identical(data, tmp_path, how, algorithm):
    """Check that a model saved mid-stream continues exactly like the uninterrupted one."""
    X, y, _ = data
    clf = _fit(X, y, stream_algorithm=algorithm)
    for i in range(800, 1100, 5):
        clf.partial_predict_proba(X[i : i + 5])
        clf.partial_predict(X[i : i + 5])
    copy = _roundtrip(clf, how, tmp_path)
    assert _snapshot(copy) == _snapshot(clf)
    for i in range(1100, 1400, 5):
        for method in ("partial_predict_proba", "partial_predict"):
            a = getattr(clf, method)(X[i : i + 5])
            b = getattr(copy, method)(X[i : i + 5])
            assert a.tobytes() == b.tobytes()
    assert _snapshot(copy) == _snapshot(clf)


def test_concurrent_partial_predict(data, serve_rows_in_threads):
    """Check that 8 threads calling partial_predict lose no row and keep the certificate."""
    X, y, group = data
    clf = _fit(X, y)
    rows = np.arange(800, 2400)
    served = serve_rows_in_threads(lambda i: clf.partial_predict(X[i : i + 1])[0],
                                   np.array_split(rows, 8))
    report = clf.stream_report("decisions")
    assert report.n_served == rows.size
    np.testing.assert_array_equal(report.counts, np.bincount(group[rows]))
    positives = np.zeros(2)
    for i, label in served:
        positives[group[i]] += label == clf.classes_[1]
    np.testing.assert_allclose(report.means, positives / report.counts)
    assert report.gap <= report.certificate + 1e-12


def test_fast_path_matches_the_full_path(data):
    """Check that small numpy batches (fast path) and DataFrames (full path) give the same stream."""
    pd = pytest.importorskip("pandas")
    X, y, group = data
    frame = pd.DataFrame(X, columns=["a", "b", "g"])
    fast = _fit(X, y)
    full = FairnessLayerClassifier(LogisticRegression(), tolerance=0.03, sensitive_features="g", sensitive_as_feature=False)
    full.fit(frame.iloc[:800], y[:800])
    for i in range(800, 1100, 3):
        np.testing.assert_allclose(
            fast.partial_predict_proba(X[i : i + 3]),
            full.partial_predict_proba(frame.iloc[i : i + 3]),
            rtol=0, atol=1e-12,
        )
    # keyword groups: ndarray (fast) vs list of lists (full)
    kw_fast = FairnessLayerClassifier(tolerance=0.03).fit(X[:800, :2], y[:800], sensitive_features=group[:800])
    kw_full = clone(kw_fast).fit(X[:800, :2], y[:800], sensitive_features=group[:800])
    for i in range(800, 1000, 2):
        a = kw_fast.partial_predict(X[i : i + 2, :2], sensitive_features=group[i : i + 2])
        b = kw_full.partial_predict(X[i : i + 2, :2].tolist(), sensitive_features=list(group[i : i + 2]))
        np.testing.assert_array_equal(a, b)


def test_string_groups_several_attributes_and_three_groups():
    """Check streams with string labels in a DataFrame, intersectional groups and k = 3."""
    pd = pytest.importorskip("pandas")
    X, y, group = _data(n=1800, k=3, seed=3)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "g": np.array(["x", "y", "z"])[group],
                          "h": group % 2})
    labels = np.where(y == 1, "yes", "no")
    for spec in ("g", ["g", "h"]):
        clf = FairnessLayerClassifier(tolerance=0.05, sensitive_features=spec, sensitive_as_feature=False)
        clf.fit(frame.iloc[:600], labels[:600])
        out = np.concatenate([clf.partial_predict(frame.iloc[i : i + 2]) for i in range(600, 1800, 2)])
        assert set(out) <= {"no", "yes"}
        report = clf.stream_report("decisions")
        assert report.n_served == 1200 and report.gap <= report.certificate + 1e-12
        assert report.certificate == 0.05
        assert len(report.groups) == 3


def test_paper_algorithm_reproduction(data):
    """Check the paper's algorithm: one row per batch corrects nothing; b_tau batches are exact."""
    X, y, group = data
    clf = _fit(X, y, stream_algorithm="paper", stream_step=0.5)
    base = clf.estimator_.predict_proba(X[800:1000, :2])[:, 1]
    served = np.array([clf.partial_predict_proba(X[i : i + 1])[0, 1] for i in range(800, 1000)])
    np.testing.assert_allclose(served, base, atol=1e-15)
    assert clf.stream_report().duals[0] == 0.0
    assert clf.stream_report().certificate == np.inf
    clf.reset_stream()
    for i in range(800, 800 + 4 * PAPER_B_TAU, PAPER_B_TAU):
        p = clf.partial_predict_proba(X[i : i + PAPER_B_TAU])[:, 1]
        g = group[i : i + PAPER_B_TAU]
        assert abs(p[g == 0].mean() - p[g == 1].mean()) <= 0.03 + 1e-9


def test_metadata_requests_are_declared(data):
    """Check that partial_predict(_proba) declare sensitive_features like the other methods."""
    # scikit-learn's router only knows its own method names, so these are declarative;
    # the routing of the known methods must be unaffected.
    for method in ("partial_predict", "partial_predict_proba"):
        name = f"_FairnessLayerClassifier__metadata_request__{method}"  # mangled
        assert getattr(FairnessLayerClassifier, name) == {
            "sensitive_features": True
        }
    routing = FairnessLayerClassifier().get_metadata_routing()
    assert routing.consumes("predict", ["sensitive_features"]) == {"sensitive_features"}


def test_unfitted_stream_methods_raise():
    """Check that the streaming methods need a fitted estimator."""
    from sklearn.exceptions import NotFittedError

    clf = FairnessLayerClassifier(sensitive_features=2, sensitive_as_feature=False)
    for call in (
        lambda: clf.partial_predict_proba(np.zeros((1, 3))),
        lambda: clf.partial_predict(np.zeros((1, 3))),
        clf.reset_stream,
        clf.stream_report,
    ):
        with pytest.raises(NotFittedError):
            call()


# ------------------------------------------------ multiclass, plug-in criteria, marginal groups
from skfairlayer._criteria import Criterion, EqualOpportunity  # noqa: E402
from skfairlayer._stream import PooledFamilies, Stream  # noqa: E402


def _data_multi(n=2400, seed=0):
    """Features, two sensitive columns (3 and 2 values, last), 3-class and binary targets."""
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 3, n), rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)) + 0.6 * g[:, None] + 0.4 * h[:, None]
    y3 = np.digitize(x[:, 0] + rng.normal(size=n), [0.4, 1.4])
    return np.c_[x, g, h], y3, (y3 > 0).astype(int), g, h


@pytest.fixture(scope="module")
def multi():
    return _data_multi()


CASES = {  # name -> (target, estimator parameters)
    "multiclass DP": ("y3", {}),
    "binary EO": ("y2", {"criterion": "equal_opportunity"}),
    "multiclass EO class 2": ("y3", {"criterion": EqualOpportunity(positive_class=2)}),
    "marginal binary DP": ("y2", {"groups": "marginal", "sensitive_features": [2, 3]}),
    "marginal multiclass DP": ("y3", {"groups": "marginal", "sensitive_features": [2, 3]}),
    "marginal binary EO": ("y2", {"groups": "marginal", "sensitive_features": [2, 3],
                                  "criterion": "equal_opportunity"}),
}


_FITTED = {}


def _fit_case(multi, name, **extra):
    """A fitted estimator of the case, with a fresh stream (fits are cached: the decision
    rule of marginal groups can take seconds to fit)."""
    key = (name, tuple(sorted(extra.items())))
    if key not in _FITTED:
        X, y3, y2, _, _ = multi
        target, params = CASES[name]
        y = y3 if target == "y3" else y2
        params = {"tolerance": 0.03, "sensitive_features": 2, "sensitive_as_feature": False,
                  **params, **extra}
        _FITTED[key] = FairnessLayerClassifier(LogisticRegression(), **params).fit(X[:900], y[:900])
    return deepcopy(_FITTED[key]).reset_stream()


def _stats(values, weights, codes):
    """Pooled weighted means of the served values (rows x columns) per group of each block."""
    out = []
    for c in codes:
        k = c.max() + 1
        W = np.bincount(c, weights=weights, minlength=k)
        sums = np.stack([np.bincount(c, weights=weights * v, minlength=k) for v in values.T], 1)
        served = W > 0
        out.append(sums[served] / W[served, None])
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_criterion_streams_meet_their_certificate(multi, name):
    """Check partial_predict(_proba) of other criteria: rows on the simplex, gap <= certificate."""
    X, _, _, g, h = multi
    clf = _fit_case(multi, name)
    crit = clf.criterion if not isinstance(clf.criterion, str) else None
    marginal = clf.groups == "marginal"
    codes = [g[1000:2200], h[1000:2200]] if marginal else [g[1000:2200]]
    for output in ("proba", "decisions"):
        served, holds = [], []
        for i in range(1000, 2200, 2):
            if output == "proba":
                served.append(clf.partial_predict_proba(X[i : i + 2]))
            else:
                served.append(clf.partial_predict(X[i : i + 2]))
            report = clf.stream_report(output)
            holds.append(report.gap <= report.certificate + 1e-12)
        assert all(holds)
        served = np.concatenate(served)
        K = len(clf.classes_)
        if output == "proba":
            assert served.shape == (1200, K) and served.min() >= 0
            assert np.abs(served.sum(axis=1) - 1).max() <= 1e-15
            values = served
        else:
            assert set(np.unique(served)) <= set(clf.classes_)
            values = np.eye(K)[np.searchsorted(clf.classes_, served)]
        # the report's pooled statistics are those of the served outputs
        base = clf.estimator_.predict_proba(np.delete(X[1000:2200], [2, 3] if marginal else [2], 1))
        weight_class = None
        if clf.criterion == "equal_opportunity":
            weight_class = 1
        elif crit is not None:
            weight_class = crit.positive_class
        weights = np.ones(1200) if weight_class is None else base[:, weight_class]
        columns = [1] if K == 2 else ([weight_class] if weight_class is not None else range(K))
        stats = _stats(values[:, list(columns)], weights, codes)
        gap = max(float((s.max(axis=0) - s.min(axis=0)).max()) for s in stats)
        report = clf.stream_report(output)
        assert report.gap == pytest.approx(gap, abs=1e-12)
        assert report.n_served == 1200
        if weight_class is not None:
            total = report.weights if not marginal else report.weights[0]
            np.testing.assert_allclose(total, np.bincount(g[1000:2200], weights=weights))


def test_multiclass_stream_starts_from_the_fit(multi):
    """Check that the first multiclass row is the fitted rule's output (fitted plug-in shifts)."""
    X, *_ = multi
    clf = _fit_case(multi, "multiclass DP", inference="fitted")
    expected = clf.predict_proba(X[1000:1001])
    np.testing.assert_allclose(clf.partial_predict_proba(X[1000:1001]), expected, atol=1e-14)
    assert clf.partial_predict(X[1000:1001])[0] == clf.predict(X[1000:1001])[0]


def test_mean_residual_stream_passes_scores_through(multi):
    """Check that plug-in mean residual serves the base probabilities (residual exactly 0)."""
    X, y3, *_ = multi
    clf = FairnessLayerClassifier(tolerance=0.02, sensitive_features=2,
                                  criterion="mean_residual", sensitive_as_feature=False).fit(X[:900], y3[:900])
    served = np.vstack([clf.partial_predict_proba(X[i : i + 3]) for i in range(1000, 1600, 3)])
    np.testing.assert_array_equal(served, clf.estimator_.predict_proba(X[1000:1600, [0, 1, 3]]))
    labels = np.concatenate([clf.partial_predict(X[i : i + 3]) for i in range(1000, 1600, 3)])
    report = clf.stream_report("decisions")
    assert report.criterion == "mean_residual" and report.holds and labels.shape == (600,)
    assert clf.stream_report().gap == 0.0


class _Cap(Criterion):
    """A custom criterion (no streaming form)."""


@pytest.mark.parametrize(
    "params, target, match",
    [
        ({"criterion": "equalized_odds"}, "y2", "several statistics"),
        ({"criterion": "equal_opportunity"}, "y3", "several statistics"),
        ({"criterion": _Cap()}, "y2", "custom Criterion"),
        ({"stream_algorithm": "paper"}, "y3", "paper's online algorithm"),
        ({"stream_algorithm": "paper", "groups": "marginal", "sensitive_features": [2, 3]},
         "y2", "paper's online algorithm"),
    ],
)
def test_unsupported_streams_raise(multi, params, target, match):
    """Check that a criterion without a certified stream raises, naming what is supported."""
    X, y3, y2, _, _ = multi
    params = {"sensitive_features": 2, "min_group_size": None, **params}
    clf = FairnessLayerClassifier(**params).fit(X[:700], y3[:700] if target == "y3" else y2[:700])
    for call in (lambda: clf.partial_predict_proba(X[1000:1002]),
                 lambda: clf.partial_predict(X[1000:1002])):
        with pytest.raises(ValueError, match=match):
            call()
    if "stream_algorithm" not in params:
        with pytest.raises(ValueError, match="supports criterion='demographic_parity'"):
            clf.stream_report()


@pytest.mark.parametrize("how", ["pickle", "joblib", "skops", "deepcopy"])
@pytest.mark.parametrize("name", ["multiclass DP", "marginal binary EO"])
def test_criterion_persistence_mid_stream_is_bit_identical(multi, tmp_path, how, name):
    """Check that multiclass / marginal streams saved mid-stream continue exactly."""
    X, *_ = multi
    clf = _fit_case(multi, name)
    for i in range(1000, 1200, 5):
        clf.partial_predict_proba(X[i : i + 5])
        clf.partial_predict(X[i : i + 5])
    copy = _roundtrip(clf, how, tmp_path)
    for i in range(1200, 1400, 5):
        for method in ("partial_predict_proba", "partial_predict"):
            assert getattr(clf, method)(X[i : i + 5]).tobytes() == getattr(copy, method)(
                X[i : i + 5]).tobytes()
    for output in ("proba", "decisions"):
        a, b = clf.stream_report(output), copy.stream_report(output)
        assert (a.gap, a.certificate, a.n_served) == (b.gap, b.certificate, b.n_served)


def test_criterion_concurrent_partial_predict(multi, serve_rows_in_threads):
    """Check that 8 threads serving a multiclass stream lose no row and keep the certificate."""
    X, _, _, g, _ = multi
    clf = _fit_case(multi, "multiclass DP")
    served = serve_rows_in_threads(lambda i: clf.partial_predict(X[i : i + 1])[0],
                                   np.array_split(np.arange(1000, 2200), 8))
    report = clf.stream_report("decisions")
    assert report.n_served == 1200
    np.testing.assert_array_equal(report.counts, np.bincount(g[1000:2200]))
    chosen = np.zeros((3, 3))
    for i, label in served:
        chosen[g[i], np.searchsorted(clf.classes_, label)] += 1
    np.testing.assert_allclose(report.means, chosen / report.counts[:, None])
    assert report.holds


def test_criterion_stream_errors_reset_and_fast_path(multi):
    """Check errors leave a marginal stream unchanged, reset_stream, and fast vs full path."""
    pd = pytest.importorskip("pandas")
    X, y3, *_ = multi
    clf = _fit_case(multi, "marginal multiclass DP")
    frame = pd.DataFrame(X, columns=["a", "b", "g", "h"])
    full = FairnessLayerClassifier(LogisticRegression(), tolerance=0.03, groups="marginal",
                                   sensitive_features=["g", "h"], sensitive_as_feature=False).fit(frame.iloc[:900], y3[:900])
    for i in range(1000, 1150, 3):
        np.testing.assert_allclose(clf.partial_predict_proba(X[i : i + 3]),
                                   full.partial_predict_proba(frame.iloc[i : i + 3]), atol=1e-12)
    unseen = X[1150:1152].copy()
    unseen[0, 3] = 5
    nan_group = X[1150:1152].copy()
    nan_group[1, 2] = np.nan
    before = pickle.dumps(clf.stream_)
    for rows, err, match in [(unseen, UnseenGroupError, "not seen during fit"),
                             (nan_group, ValueError, "NaN"), (X[1150:1150], ValueError, "empty"),
                             (X[1150:1152, :3], ValueError, "features")]:
        for method in (clf.partial_predict_proba, clf.partial_predict):
            with pytest.raises(err, match=match):
                method(rows)
    assert pickle.dumps(clf.stream_) == before
    first = clf.stream_report().n_served
    clf.set_params(tolerance=0.05)
    with pytest.raises(ValueError, match="reset_stream"):
        clf.partial_predict(X[:2])
    clf.reset_stream()
    assert isinstance(clf.stream_, Stream) and first == 150
    assert isinstance(clf.stream_.engine("proba"), PooledFamilies)
    report = clf.stream_report()
    assert report.n_served == 0 and report.tolerance == 0.05 and len(report.groups) == 2


ONE_ROW_CASES = {  # name -> (target, estimator parameters): every engine with a one-row step
    "binary DP": ("y2", {}),
    "multiclass DP": ("y3", {}),
    "binary EO": ("y2", {"criterion": "equal_opportunity"}),
    "multiclass EO class 2": ("y3", {"criterion": EqualOpportunity(positive_class=2)}),
    "binary mean residual": ("y2", {"criterion": "mean_residual"}),
    "multiclass mean residual": ("y3", {"criterion": "mean_residual"}),
}


@pytest.mark.parametrize("name", list(ONE_ROW_CASES))
def test_one_row_path_matches_the_batch_path(multi, name):
    """Check that one numpy row, served as Python numbers from the base's scores to the
    engine's output, gives exactly what the batch path gives for the same row (outputs,
    dtypes, shapes and both stream reports), and that a NaN base score raises the batch
    path's error with the stream unchanged."""
    X, y3, y2, _, _ = multi
    target, params = ONE_ROW_CASES[name]
    y = y3 if target == "y3" else y2
    one = FairnessLayerClassifier(LogisticRegression(), tolerance=0.03, sensitive_features=2,
                                  **params).fit(X[:900], y[:900])
    batch = deepcopy(one)
    assert one.stream_.serves_rows("proba") and one.stream_.serves_rows("decisions")
    for i in range(900, 1150):
        for method in ("partial_predict_proba", "partial_predict"):
            a = getattr(one, method)(X[i : i + 1])
            b = getattr(batch, method)(X[i : i + 1].tolist())  # a list: the batch path
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    for output in ("proba", "decisions"):
        assert repr(one.stream_report(output)) == repr(batch.stream_report(output))
    before = pickle.dumps(one.stream_)
    nan = float("nan") if target == "y2" else [float("nan")] * 3
    for output in ("proba", "decisions"):
        with pytest.raises(ValueError, match="NaN"):
            one.stream_.serve_one(output, nan, 0)
    assert pickle.dumps(one.stream_) == before
