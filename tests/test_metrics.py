"""Tests of skfairlayer.metrics: parity metrics, group_summary and the scorers."""

import pickle
import sys

import numpy as np
import pytest
import sklearn
from scipy import sparse
from sklearn.compose import make_column_transformer
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from skfairlayer.datasets import make_parity_classification
from skfairlayer.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    group_summary,
    make_constrained_scorer,
    make_parity_scorer,
)

pd = pytest.importorskip("pandas")

METRICS = [
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
]


def _reference_rates(values, groups, weight, mask=None):
    """Weighted mean of values per group (sorted labels), by explicit loops."""
    out = []
    for g in sorted(set(groups.tolist())):
        sel = groups == g if mask is None else (groups == g) & mask
        out.append(np.sum(weight[sel] * values[sel]) / np.sum(weight[sel]))
    return np.array(out)


def _random_case(seed, n=200, proba=False, n_groups=3):
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c", "d"])[:n_groups], size=n)
    y_true = rng.integers(0, 2, n)
    y_pred = rng.random(n) if proba else rng.integers(0, 2, n)
    weight = rng.random(n) + 0.1
    return y_true, y_pred, groups, weight


@pytest.fixture(scope="module")
def frame_data():
    X, y, group = make_parity_classification(600, random_state=0)
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    X["group"] = np.where(group == 1, "g1", "g0")
    return X, y


def _pipeline(encode=False):
    """LogisticRegression on a DataFrame whose 'group' column is dropped (or one-hot encoded)."""
    step = ("drop", ["group"]) if not encode else (OneHotEncoder(), ["group"])
    return make_pipeline(
        make_column_transformer(step, remainder="passthrough"), LogisticRegression()
    )


# --------------------------------------------------------------------------- hand cases
def test_hand_computed_values():
    """Check every metric on a small case computed by hand."""
    y_true = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    y_pred = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    group = np.array(["a"] * 4 + ["b"] * 4)
    # selection: a 3/4, b 1/4; TPR: a 1, b 1/2; FPR: a 1/2, b 0
    assert demographic_parity_difference(y_true, y_pred, sensitive_features=group) == 0.5
    assert demographic_parity_ratio(y_true, y_pred, sensitive_features=group) == pytest.approx(
        1 / 3
    )
    assert equal_opportunity_difference(y_true, y_pred, sensitive_features=group) == 0.5
    assert equalized_odds_difference(y_true, y_pred, sensitive_features=group) == 0.5
    weight = np.array([1, 1, 1, 1, 3, 1, 1, 1])  # b: selection 3/6, TPR 3/4
    assert demographic_parity_difference(
        None, y_pred, sensitive_features=group, sample_weight=weight
    ) == pytest.approx(0.25)
    assert equal_opportunity_difference(
        y_true, y_pred, sensitive_features=group, sample_weight=weight
    ) == pytest.approx(0.25)


def test_probabilities_are_group_means():
    """Check that on probabilities the metrics are gaps of (conditional) group means."""
    y_true, y_pred, groups, weight = _random_case(0, proba=True)
    pos = y_true == 1
    sel = _reference_rates(y_pred, groups, weight)
    tpr = _reference_rates(y_pred, groups, weight, pos)
    fpr = _reference_rates(y_pred, groups, weight, ~pos)
    kw = {"sensitive_features": groups, "sample_weight": weight}
    assert demographic_parity_difference(y_true, y_pred, **kw) == pytest.approx(
        np.ptp(sel), abs=1e-14
    )
    assert demographic_parity_ratio(y_true, y_pred, **kw) == pytest.approx(
        sel.min() / sel.max(), abs=1e-14
    )
    assert equal_opportunity_difference(y_true, y_pred, **kw) == pytest.approx(
        np.ptp(tpr), abs=1e-14
    )
    assert equalized_odds_difference(y_true, y_pred, **kw) == pytest.approx(
        max(np.ptp(tpr), np.ptp(fpr)), abs=1e-14
    )


def test_single_group_and_nobody_selected():
    """Check a single group gives difference 0 / ratio 1, and all-zero rates ratio 1."""
    y_true, y_pred = [0, 1, 1, 0], [1, 0, 1, 1]
    one = ["x"] * 4
    for metric in (demographic_parity_difference, equalized_odds_difference):
        assert metric(y_true, y_pred, sensitive_features=one) == 0.0
    assert demographic_parity_ratio(y_true, y_pred, sensitive_features=one) == 1.0
    assert demographic_parity_ratio(None, [0, 0, 0, 0], sensitive_features=[0, 0, 1, 1]) == 1.0


def test_y_true_ignored_by_demographic_parity():
    """Check that demographic parity ignores y_true's values (even multiclass labels)."""
    y_pred, group = [1, 0, 1, 1], [0, 0, 1, 1]
    expected = demographic_parity_difference(None, y_pred, sensitive_features=group)
    assert expected == 0.5
    for y_true in ([0, 1, 2, 3], ["u", "v", "w", "x"]):
        assert demographic_parity_difference(y_true, y_pred, sensitive_features=group) == expected


@pytest.mark.parametrize("metric", METRICS)
def test_sensitive_feature_forms(metric):
    """Check lists, Series, categoricals, ints and 2-column (intersectional) inputs agree."""
    y_true, y_pred, groups, _ = _random_case(1)
    base = metric(y_true, y_pred, sensitive_features=groups)
    codes = np.searchsorted(np.unique(groups), groups)
    for form in (list(groups), pd.Series(groups, name="g"), pd.Categorical(groups), codes):
        assert metric(y_true, y_pred, sensitive_features=form) == base
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, groups.size), rng.choice(["p", "q"], groups.size)
    joint = np.char.add(a.astype(str), b)
    expected = metric(y_true, y_pred, sensitive_features=joint)
    assert metric(y_true, y_pred, sensitive_features=pd.DataFrame({"a": a, "b": b})) == expected
    assert metric(y_true, y_pred, sensitive_features=np.c_[a, b]) == expected


def test_string_labels_with_pos_label():
    """Check that y_true with string labels works with pos_label, and errors without it."""
    y_true = np.array(["no", "yes", "yes", "no", "yes", "no"])
    y_pred = np.array([0, 1, 0, 1, 1, 0])
    group = np.array([0, 0, 0, 1, 1, 1])
    assert equal_opportunity_difference(
        y_true, y_pred, sensitive_features=group, pos_label="yes"
    ) == 0.5
    with pytest.raises(ValueError, match="pos_label=1 is not a label of y_true"):
        equal_opportunity_difference(y_true, y_pred, sensitive_features=group)


# --------------------------------------------------------------------------- fairlearn
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weighted", [False, True])
def test_agree_with_fairlearn(seed, weighted):
    """Check agreement with fairlearn's metrics on random decisions (with 4 groups)."""
    # fairlearn counts a prediction as selected when it equals pos_label, so it
    # only applies to decisions; probabilities are checked in test_probabilities_are_group_means.
    fm = pytest.importorskip("fairlearn.metrics")
    y_true, y_pred, groups, weight = _random_case(seed, n_groups=4)
    kw = {"sensitive_features": groups, "sample_weight": weight if weighted else None}
    pairs = [
        (demographic_parity_difference, fm.demographic_parity_difference),
        (demographic_parity_ratio, fm.demographic_parity_ratio),
        (equal_opportunity_difference, fm.equal_opportunity_difference),
        (equalized_odds_difference, fm.equalized_odds_difference),
    ]
    for ours, theirs in pairs:
        assert ours(y_true, y_pred, **kw) == pytest.approx(theirs(y_true, y_pred, **kw), abs=1e-12)


def test_agree_with_fairlearn_intersectional():
    """Check agreement with fairlearn when several sensitive columns are given."""
    fm = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(5)
    n = 400
    sf = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "race": rng.choice(["x", "y", "z"], n)})
    y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
    for ours, theirs in [
        (demographic_parity_difference, fm.demographic_parity_difference),
        (equalized_odds_difference, fm.equalized_odds_difference),
    ]:
        assert ours(y_true, y_pred, sensitive_features=sf) == pytest.approx(
            theirs(y_true, y_pred, sensitive_features=sf), abs=1e-12
        )


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "metric, kwargs, err_type, err_msg",
    [
        (demographic_parity_difference, {"y_pred": []}, ValueError, "y_pred is empty"),
        (demographic_parity_difference, {"y_pred": None}, ValueError, "y_pred is required"),
        (demographic_parity_difference, {"y_pred": [0, 1, np.nan, 1]}, ValueError,
         "NaN or infinity"),
        (demographic_parity_difference, {"y_pred": [0, 1, 2, 1]}, ValueError,
         r"decisions \(0 or 1\) or probabilities in \[0, 1\]"),
        (demographic_parity_difference, {"y_pred": ["a", "b", "a", "b"]}, TypeError,
         "must be numeric"),
        (demographic_parity_difference, {"y_pred": np.ones((4, 2)) / 2}, ValueError,
         r"predict_proba\(X\)\[:, 1\]"),
        (demographic_parity_difference, {"sensitive_features": [0, 1, 1]}, ValueError,
         "sensitive_features has 3 rows but the data has 4"),
        (demographic_parity_difference, {"sensitive_features": [0.0, 1.0, np.nan, 1.0]},
         ValueError, "NaN"),
        (demographic_parity_difference, {"y_true": [0, 1, 0]}, ValueError,
         r"y_true must be None or of shape \(4,\)"),
        (demographic_parity_difference, {"sample_weight": [1, 1, 1]}, ValueError,
         r"sample_weight must be of shape \(4,\)"),
        (demographic_parity_difference, {"sample_weight": [1, -1, 1, 1]}, ValueError,
         "non-negative"),
        (demographic_parity_difference, {"sample_weight": [0, 0, 1, 1]}, ValueError,
         r"group\(s\) \['a'\] have no sample with positive sample_weight"),
        (demographic_parity_ratio, {"y_pred": [0, 1, 1.5, 1]}, ValueError, r"\[0, 1\]"),
        (equal_opportunity_difference, {"y_true": None}, ValueError, "y_true is required"),
        (equal_opportunity_difference, {"y_true": [1, 1, 0, 0]}, ValueError,
         r"group\(s\) \['b'\] have no .*sample with y_true == pos_label"),
        (equalized_odds_difference, {"y_true": [1, 0, 1, 1]}, ValueError,
         r"false positive rate does not exist"),
        (equalized_odds_difference, {"y_true": [0, 1, 2, 1]}, ValueError, "must be binary"),
        (equalized_odds_difference, {"y_true": [0, 1, np.nan, 1]}, ValueError,
         "y_true contains NaN"),
        (equalized_odds_difference, {"y_true": [0, 1, 1]}, ValueError,
         r"y_true must be of shape \(4,\)"),
    ],
)
def test_metric_errors(metric, kwargs, err_type, err_msg):
    """Check clear errors for invalid inputs and for rates that do not exist."""
    args = {"y_true": [0, 1, 0, 1], "y_pred": [0, 1, 1, 1], "sensitive_features": list("aabb")}
    args.update(kwargs)
    with pytest.raises(err_type, match=err_msg):
        metric(args.pop("y_true"), args.pop("y_pred"), **args)


# --------------------------------------------------------------------------- group_summary
def test_group_summary_values():
    """Check every column of group_summary against values computed by hand."""
    y_true = [1, 0, 1, 0, 1, 1]
    y_score = [0.9, 0.2, 0.4, 0.6, 0.5, 0.8]
    group = pd.Series(["a", "a", "b", "b", "b", "b"], name="sex")
    table = group_summary(y_true, y_score, sensitive_features=group)
    assert list(table.index) == ["a", "b"] and table.index.name == "sex"
    expected = {
        "size": [2, 4],
        "mean_score": [0.55, 0.575],
        "selection_rate": [0.5, 0.75],  # b: 0.6, 0.5 (>= threshold), 0.8
        "base_rate": [0.5, 0.75],
        "accuracy": [1.0, 0.5],  # b: 0.4 -> 0 for y=1, 0.6 -> 1 for y=0
        "tpr": [1.0, 2 / 3],
        "fpr": [0.0, 1.0],
    }
    assert list(table.columns) == list(expected)
    for column, values in expected.items():
        np.testing.assert_allclose(table[column].to_numpy(), values, err_msg=column)


def test_group_summary_forms():
    """Check dict output, MultiIndex for several columns, NaN without y_true or positives."""
    y_score = np.array([0.9, 0.2, 0.4, 0.6])
    sf = pd.DataFrame({"sex": ["F", "F", "M", "M"], "race": ["x", "y", "x", "x"]})
    table = group_summary([0, 0, 1, 0], y_score, sensitive_features=sf)
    assert table.index.names == ["sex", "race"]
    assert list(table.index) == [("F", "x"), ("F", "y"), ("M", "x")]
    assert np.isnan(table.loc[("F", "x"), "tpr"]) and table.loc[("M", "x"), "tpr"] == 0.0
    as_dict = group_summary(None, y_score, sensitive_features=[0, 0, 1, 1], as_frame=False)
    assert as_dict["group"].tolist() == [0, 1]
    np.testing.assert_allclose(as_dict["selection_rate"], [0.5, 0.5])
    for column in ("base_rate", "accuracy", "tpr", "fpr"):
        assert np.isnan(as_dict[column]).all()
    high = group_summary(None, y_score, sensitive_features=[0, 0, 1, 1], threshold=0.95)
    np.testing.assert_array_equal(high["selection_rate"], [0.0, 0.0])


def test_group_summary_without_pandas(monkeypatch):
    """Check the dict fallback without pandas, and the ImportError when a frame is asked."""
    monkeypatch.setitem(sys.modules, "pandas", None)
    out = group_summary([0, 1], [0.2, 0.8], sensitive_features=["a", "b"])
    assert isinstance(out, dict) and out["group"].tolist() == ["a", "b"]
    with pytest.raises(ImportError, match="pip install pandas"):
        group_summary([0, 1], [0.2, 0.8], sensitive_features=["a", "b"], as_frame=True)


@pytest.mark.parametrize(
    "kwargs, err_type, err_msg",
    [
        ({"threshold": 1.5}, ValueError, r"threshold must be a real number in \[0.0, 1.0\]"),
        ({"threshold": "half"}, TypeError, "threshold must be a finite real"),
        ({"as_frame": "yes"}, TypeError, "as_frame must be a bool or None"),
        ({"y_score": [0.1, np.nan]}, ValueError, "NaN"),
    ],
)
def test_group_summary_errors(kwargs, err_type, err_msg):
    """Check the errors of group_summary on invalid parameters."""
    args = {"y_true": [0, 1], "y_score": [0.2, 0.8], "sensitive_features": ["a", "b"]}
    args.update(kwargs)
    with pytest.raises(err_type, match=err_msg):
        group_summary(args.pop("y_true"), args.pop("y_score"), **args)


# --------------------------------------------------------------------------- scorers
def test_parity_scorer_reads_group_from_X(frame_data):
    """Check that the scorer takes the groups from X: its value follows the group column."""
    X, y = frame_data
    model = _pipeline().fit(X, y)  # the model itself never sees 'group'
    scorer = make_parity_scorer("group")
    expected = demographic_parity_difference(
        y, model.predict(X), sensitive_features=X["group"]
    )
    assert scorer(model, X, y) == -expected and expected > 0.2
    shuffled = X.assign(group=np.random.default_rng(0).permutation(X["group"].to_numpy()))
    np.testing.assert_array_equal(model.predict(shuffled), model.predict(X))
    assert scorer(model, shuffled, y) != scorer(model, X, y)
    proba_scorer = make_parity_scorer("group", response_method="predict_proba")
    assert proba_scorer(model, X, y) == -demographic_parity_difference(
        None, model.predict_proba(X)[:, 1], sensitive_features=X["group"]
    )


def test_scorers_in_grid_search(frame_data):
    """Check a dict of our scorers in GridSearchCV equals the metrics on each test fold."""
    X, y = frame_data
    scoring = {
        "accuracy": "accuracy",
        "dp": make_parity_scorer("group"),
        "dp_ratio": make_parity_scorer("group", metric="demographic_parity_ratio"),
        "eo": make_parity_scorer("group", metric="equalized_odds_difference"),
        "acc_fair": make_constrained_scorer("group", tolerance=0.05),
    }
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        _pipeline(encode=True), {"logisticregression__C": [0.01, 1.0]}, scoring=scoring,
        refit="accuracy", cv=cv,
    ).fit(X, y)
    results = search.cv_results_
    for i, C in enumerate([0.01, 1.0]):
        for k, (train, test) in enumerate(cv.split(X)):
            model = _pipeline(encode=True).set_params(logisticregression__C=C)
            model.fit(X.iloc[train], y[train])
            Xt, yt = X.iloc[test], y[test]
            pred, sf = model.predict(Xt), Xt["group"]
            dp = demographic_parity_difference(yt, pred, sensitive_features=sf)
            eo = equalized_odds_difference(yt, pred, sensitive_features=sf)
            ratio = demographic_parity_ratio(yt, pred, sensitive_features=sf)
            assert results[f"split{k}_test_dp"][i] == pytest.approx(-dp, abs=1e-12)
            assert results[f"split{k}_test_eo"][i] == pytest.approx(-eo, abs=1e-12)
            assert results[f"split{k}_test_dp_ratio"][i] == pytest.approx(ratio, abs=1e-12)
            assert results[f"split{k}_test_acc_fair"][i] == pytest.approx(-1 - (dp - 0.05))


def test_scorer_sample_weight_from_grid_search():
    """Check that GridSearchCV(fit sample_weight) reaches the scorer without routing."""
    X, y, g = make_parity_classification(300, random_state=1)
    X = np.c_[X, g]
    w = np.where(np.arange(300) % 3 == 0, 4.0, 1.0)
    cv = KFold(3)
    search = GridSearchCV(
        LogisticRegression(), {"C": [1.0]}, scoring={"dp": make_parity_scorer(5)}, refit=False,
        cv=cv,
    ).fit(X, y, sample_weight=w)
    for k, (train, test) in enumerate(cv.split(X)):
        model = LogisticRegression().fit(X[train], y[train], sample_weight=w[train])
        dp = demographic_parity_difference(
            None, model.predict(X[test]), sensitive_features=g[test], sample_weight=w[test]
        )
        assert search.cv_results_[f"split{k}_test_dp"][0] == pytest.approx(-dp, abs=1e-12)


def test_scorer_metadata_routing():
    """Check sample_weight routing with set_score_request, and the unset-request error."""
    X, y, g = make_parity_classification(300, random_state=1)
    X = np.c_[X, g]
    w = np.where(np.arange(300) % 3 == 0, 4.0, 1.0)
    with pytest.raises(RuntimeError, match="metadata routing is enabled"):
        make_parity_scorer(5).set_score_request(sample_weight=True)
    with sklearn.config_context(enable_metadata_routing=True):
        lr = LogisticRegression().set_fit_request(sample_weight=True)
        weighted = make_parity_scorer(-1).set_score_request(sample_weight=True)
        unweighted = make_parity_scorer(-1).set_score_request(sample_weight=False)
        res = cross_validate(
            lr, X, y, cv=KFold(3), params={"sample_weight": w},
            scoring={"w": weighted, "u": unweighted},
        )
        with pytest.raises(UnsetMetadataPassedError):
            cross_validate(
                lr, X, y, cv=KFold(3), params={"sample_weight": w},
                scoring={"dp": make_parity_scorer(-1)},
            )
    for k, (train, test) in enumerate(KFold(3).split(X)):
        model = LogisticRegression().fit(X[train], y[train], sample_weight=w[train])
        pred = model.predict(X[test])
        for key, sw in (("w", w[test]), ("u", None)):
            dp = demographic_parity_difference(
                None, pred, sensitive_features=g[test], sample_weight=sw
            )
            assert res[f"test_{key}"][k] == pytest.approx(-dp, abs=1e-12)


def test_scorer_column_specs():
    """Check column indices (also negative), several columns, sparse X and a callable."""
    X, y, g = make_parity_classification(300, random_state=2)
    h = np.arange(300) % 2
    Xa = np.c_[X, g, h]
    model = LogisticRegression().fit(Xa, y)
    pred = model.predict(Xa)
    single = demographic_parity_difference(None, pred, sensitive_features=g)
    joint = demographic_parity_difference(None, pred, sensitive_features=np.c_[g, h])
    assert make_parity_scorer(5)(model, Xa, y) == -single
    assert make_parity_scorer(-2)(model, Xa, y) == -single
    assert make_parity_scorer([5, 6])(model, Xa, y) == -joint
    assert make_parity_scorer(5)(model, sparse.csr_matrix(Xa), y) == -single
    assert make_parity_scorer(lambda X: X[:, 5])(model, Xa, y) == -single
    frame = pd.DataFrame(Xa, columns=[f"c{i}" for i in range(7)])
    model_f = LogisticRegression().fit(frame, y)
    assert make_parity_scorer(["c5", "c6"])(model_f, frame, y) == -joint
    assert make_parity_scorer(5)(model_f, frame, y) == -single  # positions on a DataFrame


def test_scorer_string_classes_and_pos_label():
    """Check string class labels: positive class is classes_[-1] unless pos_label says."""
    X, y, g = make_parity_classification(300, random_state=3)
    labels = np.where(y == 1, "yes", "no")
    Xa = np.c_[X, g]
    model = LogisticRegression().fit(Xa, labels)
    pred = model.predict(Xa)
    tpr_gap = equal_opportunity_difference(
        labels, (pred == "yes").astype(int), sensitive_features=g, pos_label="yes"
    )
    scorer = make_parity_scorer(5, metric="equal_opportunity_difference")
    assert scorer(model, Xa, labels) == -tpr_gap
    flipped = make_parity_scorer(5, metric="equal_opportunity_difference", pos_label="no")
    expected = equal_opportunity_difference(
        labels, (pred == "no").astype(int), sensitive_features=g, pos_label="no"
    )
    assert flipped(model, Xa, labels) == -expected
    p_no = make_parity_scorer(5, response_method="predict_proba", pos_label="no")
    assert p_no(model, Xa, labels) == -demographic_parity_difference(
        None, model.predict_proba(Xa)[:, 0], sensitive_features=g
    )


def test_constrained_scorer_values():
    """Check the score when parity holds, -1 - excess (hard) or the soft penalty otherwise."""
    X = np.array([[0, 0], [1, 0], [2, 0], [3, 1], [4, 1], [5, 1]])
    y = np.array([1, 0, 1, 0, 1, 1])
    clf = DummyClassifier(strategy="constant", constant=1).fit(X, y)
    # everyone selected: gap 0, accuracy 4/6
    assert make_constrained_scorer(1, tolerance=0.0)(clf, X, y) == pytest.approx(4 / 6)

    class Fixed(DummyClassifier):
        def predict(self, X):
            return np.array([1, 1, 0, 0, 0, 1])  # selection 2/3 vs 1/3: gap 1/3

    fixed = Fixed().fit(X, y)
    acc = 3 / 6
    assert make_constrained_scorer(1, tolerance=0.5)(fixed, X, y) == pytest.approx(acc)
    assert make_constrained_scorer(1, tolerance=1 / 3)(fixed, X, y) == pytest.approx(acc)
    assert make_constrained_scorer(1, tolerance=0.1)(fixed, X, y) == pytest.approx(
        -1 - (1 / 3 - 0.1)
    )
    soft = make_constrained_scorer(1, tolerance=0.1, penalty=2.0)
    assert soft(fixed, X, y) == pytest.approx(acc - 2 * (1 / 3 - 0.1))
    balanced = make_constrained_scorer(
        1, tolerance=0.5, score_func=balanced_accuracy_score
    )
    assert balanced(fixed, X, y) == pytest.approx(balanced_accuracy_score(y, fixed.predict(X)))


def test_constrained_scorer_tolerance_rounding():
    """Check that a gap equal to the tolerance up to float rounding counts as parity."""
    X = np.c_[np.zeros(20), np.repeat([0, 1], 10)]
    y = np.ones(20, dtype=int)

    class Fixed(DummyClassifier):
        def predict(self, X):
            return np.r_[np.ones(7), np.zeros(3), np.ones(4), np.zeros(6)].astype(int)

    clf = Fixed().fit(X, y)
    gap = demographic_parity_difference(None, clf.predict(X), sensitive_features=X[:, 1])
    assert gap != 0.3  # 0.7 - 0.4 in floating point
    assert make_constrained_scorer(1, tolerance=0.3)(clf, X, y) == pytest.approx(0.55)


def test_scorers_with_fairness_layer_classifier(frame_data):
    """Check the scorers on FairnessLayerClassifier reading the group column by name."""
    from skfairlayer import FairnessLayerClassifier

    X, y = frame_data
    search = GridSearchCV(
        FairnessLayerClassifier(sensitive_features="group", sensitive_as_feature=False),
        {"tolerance": [0.02, 0.6]},
        scoring={
            "acc_fair": make_constrained_scorer("group", tolerance=0.02),
            "dp": make_parity_scorer("group"),
            "accuracy": "accuracy",
        },
        refit="acc_fair",
        cv=3,
    ).fit(X, y)
    res = search.cv_results_
    assert (res["mean_test_dp"][0] >= -0.02 - 1e-9).all()
    np.testing.assert_allclose(res["mean_test_acc_fair"][0], res["mean_test_accuracy"][0])
    assert search.best_params_ == {"tolerance": 0.02}


def test_scorers_pickle_and_repr():
    """Check that scorers pickle (for n_jobs > 1) and have an informative repr."""
    X, y, g = make_parity_classification(200, random_state=4)
    Xa = np.c_[X, g]
    model = LogisticRegression().fit(Xa, y)
    for scorer in (make_parity_scorer(5), make_constrained_scorer(5, penalty=1.0)):
        clone = pickle.loads(pickle.dumps(scorer))
        assert clone(model, Xa, y) == scorer(model, Xa, y)
    assert "make_parity_scorer(5, metric='demographic_parity_difference'" in repr(
        make_parity_scorer(5)
    )
    assert "tolerance=0.01" in repr(make_constrained_scorer("g"))


def test_parity_scorer_custom_metric():
    """Check a callable metric receives 0/1 y_true, positive-class outputs and the groups."""
    X, y, g = make_parity_classification(200, random_state=5)
    Xa = np.c_[X, g]
    model = LogisticRegression().fit(Xa, y)
    seen = {}

    def metric(y_true, y_pred, *, sensitive_features, sample_weight=None):
        seen.update(y_true=y_true, y_pred=y_pred, groups=sensitive_features)
        return 0.25

    assert make_parity_scorer(5, metric=metric)(model, Xa, y) == -0.25
    assert make_parity_scorer(5, metric=metric, greater_is_better=True)(model, Xa, y) == 0.25
    np.testing.assert_array_equal(seen["y_true"], y)
    np.testing.assert_array_equal(seen["groups"], g)
    np.testing.assert_array_equal(seen["y_pred"], model.predict(Xa))


@pytest.mark.parametrize(
    "factory, kwargs, err_type, err_msg",
    [
        (make_parity_scorer, {"metric": "accuracy"}, ValueError, "metric must be one of"),
        (make_parity_scorer, {"response_method": "decision_function"}, ValueError,
         "response_method must be 'predict' or 'predict_proba'"),
        (make_parity_scorer, {"greater_is_better": "no"}, TypeError,
         "greater_is_better must be a bool or None"),
        (make_parity_scorer, {"sensitive_features": 1.5}, ValueError,
         r"column name\(s\) \(str\) or column index\(es\)"),
        (make_parity_scorer, {"sensitive_features": []}, ValueError, "non-empty list"),
        (make_parity_scorer, {"sensitive_features": ["group", 0]}, ValueError, "Got"),
        (make_parity_scorer, {"sensitive_features": True}, ValueError, "Got True instead"),
        (make_constrained_scorer, {"tolerance": -0.1}, ValueError, "tolerance must be"),
        (make_constrained_scorer, {"tolerance": "0.1"}, TypeError, "tolerance must be"),
        (make_constrained_scorer, {"penalty": "soft"}, ValueError, "penalty must be 'hard'"),
        (make_constrained_scorer, {"penalty": -1.0}, ValueError, "penalty must be"),
        (make_constrained_scorer, {"score_func": "accuracy"}, TypeError,
         "score_func must be a callable"),
        (make_constrained_scorer, {"metric": "demographic_parity_ratio"}, ValueError,
         "smaller is fairer"),
    ],
)
def test_scorer_construction_errors(factory, kwargs, err_type, err_msg):
    """Check the errors of the scorer factories on invalid parameters."""
    args = {"sensitive_features": "group", **kwargs}
    with pytest.raises(err_type, match=err_msg):
        factory(args.pop("sensitive_features"), **args)


@pytest.mark.parametrize(
    "spec, as_frame, err_msg",
    [
        ("sex", True, r"column 'sex' not found in X"),
        ("group", False, "without column names.*give column positions"),
        (9, True, r"position\(s\) \[9\] out of range"),
        (9, False, r"position\(s\) \[9\] out of range"),
    ],
)
def test_scorer_call_errors(frame_data, spec, as_frame, err_msg):
    """Check the errors when the sensitive column(s) cannot be read from X."""
    X, y = frame_data
    Xn = X.drop(columns="group").to_numpy()
    model = LogisticRegression().fit(Xn, y)
    data = X.drop(columns="group") if as_frame else Xn
    with pytest.raises(ValueError, match=err_msg):
        make_parity_scorer(spec)(model, data, y)


def test_scorer_rejects_multiclass():
    """Check that a multiclass estimator is rejected with a clear error."""
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(60, 2)), np.arange(60) % 2]
    model = LogisticRegression().fit(X, np.arange(60) % 3)
    with pytest.raises(ValueError, match="need a binary classifier"):
        make_parity_scorer(2)(model, X, np.arange(60) % 3)
