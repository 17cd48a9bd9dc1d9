"""What a new user meets in the first hour: each scenario works, or raises naming the remedy."""

import warnings

import numpy as np
import pytest
import sklearn
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfairlayer import FairnessLayerClassifier
from skfairlayer.datasets import load_adult
from skfairlayer.metrics import demographic_parity_difference

pd = pytest.importorskip("pandas")

NUMERIC = ["age", "education-num", "hours-per-week"]


@pytest.fixture(scope="module")
def adult():
    X, y = load_adult(return_X_y=True)
    rows = np.random.default_rng(0).choice(len(y), 3000, replace=False)
    return X.iloc[rows][NUMERIC + ["sex", "race"]].reset_index(drop=True), y[rows]


def _encoder():
    return make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["sex", "race"]), remainder="passthrough"
    )


def test_sensitive_column_used_as_a_feature_just_works(adult):
    """Check the common pipeline that one-hot encodes the sensitive column itself."""
    X, y = adult
    clf = FairnessLayerClassifier(
        make_pipeline(_encoder(), LogisticRegression(max_iter=1000)), sensitive_features="sex"
    ).fit(X, y)
    gap = demographic_parity_difference(None, clf.predict(X), sensitive_features=X["sex"])
    assert gap <= 0.01


def test_dropped_sensitive_column_names_the_option(adult):
    """Check that a base needing the dropped column gets an error naming sensitive_as_feature."""
    X, y = adult
    clf = FairnessLayerClassifier(
        make_pipeline(_encoder(), LogisticRegression(max_iter=1000)),
        sensitive_features="sex", sensitive_as_feature=False,
    )
    with pytest.raises(ValueError, match="sensitive_as_feature=True"):
        clf.fit(X, y)


def test_string_sensitive_column_names_both_remedies(adult):
    """Check that a base that cannot read the string column is told how to encode or drop it."""
    X, y = adult
    with pytest.raises(ValueError, match="OneHotEncoder.*sensitive_as_feature=False"):
        FairnessLayerClassifier(LogisticRegression(), sensitive_features="sex").fit(
            X[NUMERIC + ["sex"]], y
        )


def test_search_with_keyword_groups_fails_loudly_instead_of_nan(adult):
    """Check that a search cannot rank NaN scores when groups are a keyword and routing is off."""
    X, y = adult
    Xn, sex = X[NUMERIC], X["sex"]
    search = GridSearchCV(FairnessLayerClassifier(LogisticRegression()),
                          {"tolerance": [0.01, 0.05]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn's per-fit failure report
        with pytest.raises(ValueError, match="column of X.*enable_metadata_routing"):
            search.fit(Xn, y, sensitive_features=sex)
        with pytest.raises(ValueError, match="column of X.*enable_metadata_routing"):
            cross_val_score(FairnessLayerClassifier(LogisticRegression()), Xn, y, cv=3,
                            params={"sensitive_features": sex})
    # Both remedies the message names work.
    by_column = GridSearchCV(
        FairnessLayerClassifier(LogisticRegression(), sensitive_features="sex",
                                sensitive_as_feature=False),
        {"tolerance": [0.01, 0.05]}, cv=3, error_score="raise",
    ).fit(X[NUMERIC + ["sex"]], y)
    assert np.isfinite(by_column.cv_results_["mean_test_score"]).all()
    with sklearn.config_context(enable_metadata_routing=True):
        routed = GridSearchCV(FairnessLayerClassifier(LogisticRegression()),
                              {"tolerance": [0.01, 0.05]}, cv=3, error_score="raise")
        routed.fit(Xn, y, sensitive_features=sex)
    assert np.isfinite(routed.cv_results_["mean_test_score"]).all()


def test_zero_tolerance_with_trivial_decisions_warns(adult):
    """Check that tolerance=0 warns, naming a usable tolerance, when it forces all-or-nothing."""
    X, y = adult
    X = X.iloc[:2999]  # group sizes without a common exact rate
    with pytest.warns(UserWarning, match="trivial parity decisions.*at least about"):
        FairnessLayerClassifier(LogisticRegression(), tolerance=0.0, sensitive_features="sex",
                                sensitive_as_feature=False, cv=None).fit(X[NUMERIC + ["sex"]],
                                                                         y[:2999])


def test_fitted_rules_are_cross_fitted_for_an_overfitting_base():
    """Check that fitted-rule decisions of a random forest keep parity on new data with cv."""
    X, y = load_adult(return_X_y=True)
    X = X[NUMERIC + ["capital-gain", "sex"]].assign(sex=lambda d: (d["sex"] == "Male") * 1)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    Xtr, ytr = Xtr.iloc[:8000], ytr[:8000]
    gaps = {}
    for cv in (None, 5):
        clf = FairnessLayerClassifier(
            RandomForestClassifier(n_estimators=30, min_samples_leaf=1, random_state=0),
            tolerance=0.01, sensitive_features="sex", inference="fitted", cv=cv,
        ).fit(Xtr, ytr)
        gaps[cv] = demographic_parity_difference(None, clf.predict(Xte),
                                                 sensitive_features=Xte["sex"])
    assert gaps[5] < gaps[None]


def test_layer_after_preprocessing_in_an_outer_pipeline(adult):
    """Check the layer as the last step: pandas output works, an array names the fix."""
    X, y = adult
    pre = make_column_transformer((StandardScaler(), NUMERIC), remainder="passthrough")
    clf = FairnessLayerClassifier(LogisticRegression(max_iter=1000), sensitive_features="sex",
                                  sensitive_as_feature=False)
    with pytest.raises(ValueError, match="set_output"):
        make_pipeline(pre, clf).fit(X[NUMERIC + ["sex"]], y)
    pipe = make_pipeline(pre, clf).set_output(transform="pandas")
    pipe.fit(X[NUMERIC + ["sex"]], y)
    gap = demographic_parity_difference(None, pipe.predict(X[NUMERIC + ["sex"]]),
                                        sensitive_features=X["sex"])
    assert gap <= 0.01


def test_serving_one_pandas_row(adult):
    """Check that a Series row gets pandas advice, and a one-row frame is served."""
    X, y = adult
    clf = FairnessLayerClassifier(LogisticRegression(), sensitive_features="sex",
                                  sensitive_as_feature=False).fit(X[NUMERIC + ["sex"]], y)
    with pytest.raises(ValueError, match=r"X.iloc\[\[i\]\]"):
        clf.partial_predict_proba(X[NUMERIC + ["sex"]].iloc[0])
    proba = clf.partial_predict_proba(X[NUMERIC + ["sex"]].iloc[[0]])
    assert proba.shape == (1, 2)
    report = clf.stream_report()
    assert "certificate" in str(report) and "<table" in report._repr_html_()


def test_tolerance_above_one_is_refused(adult):
    """Check that a probability tolerance above 1 (no constraint at all) is refused."""
    X, y = adult
    with pytest.raises(ValueError, match="tolerance"):
        FairnessLayerClassifier(tolerance=1.5, sensitive_features="sex").fit(X, y)
