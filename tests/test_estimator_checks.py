"""scikit-learn's estimator checks, with a written reason for every expected failure."""

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfairlayer import FairnessLayerClassifier, FairnessLayerRegressor


def first_feature_parity(X):
    """Two groups from the first feature's third decimal (the checks' data has no group column).

    A deterministic function of X that puts rows of any batch in both groups.
    """
    first = X.tocsr()[:, [0]] if hasattr(X, "tocsr") else np.asarray(X)[:, [0]]
    first = first.toarray() if hasattr(first, "toarray") else first
    return (np.floor(np.nan_to_num(np.real(first.astype(complex)).ravel()) * 1000) % 2).astype(int)


# With tolerance=1 the layer never binds: this instance tests the API plumbing.
# min_group_size=None: the checks' datasets have ~10 rows per group (SmallGroupWarning otherwise).
_PLUMBING = FairnessLayerClassifier(
    LogisticRegression(), tolerance=1.0, sensitive_features=first_feature_parity,
    min_group_size=None,
)
# A binding tolerance: the checks then also exercise the projection and parity decisions.
_BINDING = FairnessLayerClassifier(
    LogisticRegression(), tolerance=0.05, sensitive_features=first_feature_parity,
    min_group_size=None,
)


def _expected_failed_checks(estimator):
    if estimator.tolerance >= 1:
        return {}
    # check_classifiers_train asserts predict == argmax(predict_proba). With a binding
    # tolerance, predict returns the parity decisions, which by design differ from
    # thresholding the projected probabilities (that would break selection-rate parity).
    reason = "predict returns parity decisions, not argmax(predict_proba), by design"
    # The check compares predict on the whole fit set (exact parity decisions of that batch)
    # with predict row by row (one-row batches take the rules fitted on out-of-fold scores,
    # cv=5); with a binding tolerance the two rules differ on some rows, by design.
    subset = "one-row batches use the cross-fitted rules, the whole batch its exact decisions"
    return {"check_classifiers_train": reason, "check_methods_subset_invariance": subset}


@parametrize_with_checks([_PLUMBING, _BINDING], expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    """Check that the estimator passes scikit-learn's API checks."""
    check(estimator)


# The regressor: the same two instances (plumbing, then a binding tolerance in the target's units).
_REG_PLUMBING = FairnessLayerRegressor(
    Ridge(), tolerance=1e6, sensitive_features=first_feature_parity, min_group_size=None,
)
_REG_BINDING = FairnessLayerRegressor(
    Ridge(), tolerance=0.05, sensitive_features=first_feature_parity, min_group_size=None,
)


def _expected_failed_regressor_checks(estimator):
    if estimator.tolerance >= 1e6:
        return {}
    # inference="batch" projects each batch as a whole: with a binding tolerance a row's
    # prediction depends on the rest of its batch, by design (inference="fitted" is row-wise).
    reason = "batch inference: a row's projected prediction depends on its batch, by design"
    return {"check_methods_subset_invariance": reason}


@parametrize_with_checks(
    [_REG_PLUMBING, _REG_BINDING], expected_failed_checks=_expected_failed_regressor_checks
)
def test_sklearn_compatible_regressor(estimator, check):
    """Check that the regressor passes scikit-learn's API checks."""
    check(estimator)
