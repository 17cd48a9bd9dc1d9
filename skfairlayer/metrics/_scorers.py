"""scikit-learn scorers that read the sensitive features from columns of ``X``."""

from numbers import Integral

import numpy as np
from sklearn import get_config
from sklearn.metrics import accuracy_score
from sklearn.utils.metadata_routing import MetadataRequest

from .._groups import SensitiveColumns, resolve
from ._classification import (
    _check_real,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from ._regression import (
    group_error_ratio,
    ks_distance,
    mean_difference,
    residual_difference,
    wasserstein_distance,
)

# Feasibility slack of make_constrained_scorer: absorbs the rounding of group means
# (the package verifies its own parity guarantees to the same 1e-9).
_FEASIBILITY_SLACK = 1e-9


# --------------------------------------------------------------------------- scorers
_METRICS = {
    "demographic_parity_difference": (demographic_parity_difference, False),
    "demographic_parity_ratio": (demographic_parity_ratio, True),
    "equal_opportunity_difference": (equal_opportunity_difference, False),
    "equalized_odds_difference": (equalized_odds_difference, False),
}


def _check_metric(metric):
    """Metric function and whether greater values are better (None for a callable)."""
    if callable(metric):
        return metric, None
    if isinstance(metric, str) and metric in _METRICS:
        return _METRICS[metric]
    raise ValueError(
        f"metric must be one of {sorted(_METRICS)} or a callable "
        "metric(y_true, y_pred, *, sensitive_features, sample_weight=None). "
        f"Got {metric!r} instead."
    )


def _check_columns(sensitive_features):
    if callable(sensitive_features):
        return sensitive_features
    cols = (
        list(sensitive_features)
        if isinstance(sensitive_features, list | tuple)
        else [sensitive_features]
    )
    is_name = [isinstance(c, str) for c in cols]
    is_index = [isinstance(c, Integral) and not isinstance(c, bool) for c in cols]
    if not cols or not (all(is_name) or all(is_index)):
        raise ValueError(
            "sensitive_features must be the column name(s) (str) or column index(es) (int) "
            "of X holding the groups, a non-empty list of those, or a callable X -> groups. "
            f"Got {sensitive_features!r} instead."
        )
    return cols


class _GroupScorer:
    """Shared machinery of the scorers: groups read from X, positive-class outputs."""

    def __init__(self, sensitive_features, metric, pos_label):
        self._columns = _check_columns(sensitive_features)
        self._sensitive_features = sensitive_features
        self._metric_name = metric if isinstance(metric, str) else getattr(
            metric, "__name__", repr(metric)
        )
        self._metric, self._greater_is_better_default = _check_metric(metric)
        self._pos_label = pos_label
        self._sample_weight_request = None

    # -- groups -----------------------------------------------------------------------
    def _groups(self, X):
        spec = self._sensitive_features
        columns = SensitiveColumns(spec, owner="This scorer")
        return resolve(columns.split(X)[1])

    # -- outputs ----------------------------------------------------------------------
    def _positive_label(self, estimator):
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            return 1 if self._pos_label is None else self._pos_label
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.size > 2:
            raise ValueError(
                "Parity scorers need a binary classifier; the estimator has classes "
                f"{classes.tolist()!r}. Got {type(estimator).__name__} instead."
            )
        if self._pos_label is None:
            return classes[-1].item() if hasattr(classes[-1], "item") else classes[-1]
        if self._pos_label not in classes.tolist():
            raise ValueError(
                f"pos_label={self._pos_label!r} is not among the estimator's classes "
                f"{classes.tolist()!r}. Got {self._pos_label!r} instead."
            )
        return self._pos_label

    def _positive_proba(self, estimator, X, pos_label):
        proba = np.asarray(estimator.predict_proba(X))
        classes = getattr(estimator, "classes_", None)
        if proba.ndim == 1:
            return proba
        if classes is None:
            return proba[:, -1]
        return proba[:, list(np.asarray(classes).tolist()).index(pos_label)]

    def _metric_value(self, y, y_pos, groups, sample_weight, pos_label):
        y_true = None if y is None else (np.asarray(y) == pos_label).astype(np.int64)
        return float(
            self._metric(
                y_true, y_pos, sensitive_features=groups, sample_weight=sample_weight
            )
        )

    # -- scikit-learn integration ------------------------------------------------------
    def _accept_sample_weight(self):
        # Without metadata routing, scikit-learn (GridSearchCV, multi-metric dicts) asks
        # each scorer whether it takes sample_weight before passing it.
        return True

    def set_score_request(self, *, sample_weight=None):
        """Request ``sample_weight`` when metadata routing is enabled.

        Parameters
        ----------
        sample_weight : bool, str or None, default=None
            ``True`` to receive ``sample_weight`` passed to ``fit`` of a
            meta-estimator such as :class:`~sklearn.model_selection.GridSearchCV`
            (as scikit-learn's own scorers do after
            ``set_score_request(sample_weight=True)``).

        Returns
        -------
        self : object
            The scorer.
        """
        if not get_config().get("enable_metadata_routing", False):
            raise RuntimeError(
                "This method is only available when metadata routing is enabled. You can "
                "enable it using sklearn.set_config(enable_metadata_routing=True)."
            )
        self._sample_weight_request = sample_weight
        return self

    def get_metadata_routing(self):
        """Metadata requested by the scorer (only ``sample_weight``, if set).

        Returns
        -------
        request : MetadataRequest
            The request of the ``score`` method.
        """
        request = MetadataRequest(owner=repr(self))
        request.score.add_request(param="sample_weight", alias=self._sample_weight_request)
        return request


class _ParityScorer(_GroupScorer):
    """Scorer ``scorer(estimator, X, y, sample_weight=None)`` for a parity metric."""

    def __init__(self, sensitive_features, metric, response_method, greater_is_better, pos_label):
        super().__init__(sensitive_features, metric, pos_label)
        if response_method not in ("predict", "predict_proba"):
            raise ValueError(
                "response_method must be 'predict' or 'predict_proba'. "
                f"Got {response_method!r} instead."
            )
        if greater_is_better is None:
            greater_is_better = bool(self._greater_is_better_default)
        elif not isinstance(greater_is_better, bool | np.bool_):
            raise TypeError(
                f"greater_is_better must be a bool or None. Got {greater_is_better!r} instead."
            )
        self._response_method = response_method
        self._sign = 1.0 if greater_is_better else -1.0

    def __call__(self, estimator, X, y_true=None, sample_weight=None):
        """Evaluate the parity metric of ``estimator`` on ``X``.

        Parameters
        ----------
        estimator : object
            Fitted binary classifier.
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Data; holds the sensitive column(s) and is passed whole to the
            estimator.
        y_true : array-like of shape (n_samples,), default=None
            True labels, needed by the metrics conditional on the label.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            The metric, negated when ``greater_is_better=False``.
        """
        groups = self._groups(X)
        if self._metric in _REGRESSION_METRICS:  # real predictions and targets, as they are
            value = self._metric(
                y_true, np.asarray(estimator.predict(X)), sensitive_features=groups,
                sample_weight=sample_weight,
            )
            return self._sign * float(value)
        pos_label = self._positive_label(estimator)
        if self._response_method == "predict":
            y_pos = (np.asarray(estimator.predict(X)) == pos_label).astype(np.float64)
        else:
            y_pos = self._positive_proba(estimator, X, pos_label)
        return self._sign * self._metric_value(y_true, y_pos, groups, sample_weight, pos_label)

    def __repr__(self):
        return (
            f"make_parity_scorer({self._sensitive_features!r}, metric={self._metric_name!r}, "
            f"response_method={self._response_method!r}, "
            f"greater_is_better={self._sign > 0})"
        )


class _ConstrainedScorer(_GroupScorer):
    """Scorer: ``score_func`` when the decisions meet parity, a penalised value otherwise."""

    def __init__(self, sensitive_features, tolerance, score_func, penalty, metric, pos_label):
        super().__init__(sensitive_features, metric, pos_label)
        if self._greater_is_better_default is True:
            raise ValueError(
                "make_constrained_scorer needs a metric where smaller is fairer (a "
                f"difference), not {metric!r}. Got {metric!r} instead."
            )
        self._tolerance = _check_real(tolerance, "tolerance", low=0.0)
        if not callable(score_func):
            raise TypeError(
                "score_func must be a callable score_func(y_true, y_pred, **kwargs), e.g. "
                f"sklearn.metrics.accuracy_score. Got {score_func!r} instead."
            )
        self._score_func = score_func
        if not (isinstance(penalty, str) and penalty == "hard"):
            if isinstance(penalty, str):
                raise ValueError(
                    f"penalty must be 'hard' or a real number >= 0. Got {penalty!r} instead."
                )
            penalty = _check_real(penalty, "penalty", low=0.0)
        self._penalty = penalty

    def __call__(self, estimator, X, y_true, sample_weight=None):
        """Score ``estimator`` on ``X``, penalised when its decisions break parity.

        Parameters
        ----------
        estimator : object
            Fitted binary classifier.
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Data; holds the sensitive column(s) and is passed whole to the
            estimator.
        y_true : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights, passed to ``score_func`` and the parity metric.

        Returns
        -------
        score : float
            ``score_func`` value if the parity gap is within the tolerance,
            else the penalised value (see :func:`make_constrained_scorer`).
        """
        groups = self._groups(X)
        pos_label = self._positive_label(estimator)
        y_pred = np.asarray(estimator.predict(X))
        y_pos = (y_pred == pos_label).astype(np.float64)
        gap = self._metric_value(y_true, y_pos, groups, sample_weight, pos_label)
        excess = gap - self._tolerance
        if excess <= _FEASIBILITY_SLACK:
            kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
            return float(self._score_func(y_true, y_pred, **kwargs))
        if self._penalty == "hard":
            return -1.0 - excess
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        return float(self._score_func(y_true, y_pred, **kwargs)) - self._penalty * excess

    def __repr__(self):
        name = getattr(self._score_func, "__name__", repr(self._score_func))
        return (
            f"make_constrained_scorer({self._sensitive_features!r}, "
            f"tolerance={self._tolerance!r}, score_func={name}, penalty={self._penalty!r}, "
            f"metric={self._metric_name!r})"
        )


def make_parity_scorer(
    sensitive_features,
    *,
    metric="demographic_parity_difference",
    response_method="predict",
    greater_is_better=None,
    pos_label=None,
):
    """Make a scikit-learn scorer of a parity metric, reading the groups from ``X``.

    scikit-learn calls scorers as ``scorer(estimator, X, y)``, without
    sensitive features. This scorer takes them from column(s) of ``X``,
    passes the whole ``X`` to the estimator, and evaluates the metric of its
    outputs. Use it as ``scoring=`` of
    :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_validate` etc., alone or in a dict
    of scorers. The estimator must accept ``X`` with the sensitive
    column(s): a pipeline whose
    :class:`~sklearn.compose.ColumnTransformer` drops or encodes them, or a
    :class:`~skfairlayer.FairnessLayerClassifier` reading them by name.

    Parameters
    ----------
    sensitive_features : str, int, list of str or int, or callable
        Column name(s) of a DataFrame ``X``, or column index(es) of ``X``
        (positions, also for a DataFrame); several columns define
        intersectional groups. A callable is called as
        ``sensitive_features(X)`` and returns the groups.
    metric : str or callable, default="demographic_parity_difference"
        ``"demographic_parity_difference"``, ``"demographic_parity_ratio"``,
        ``"equal_opportunity_difference"``, ``"equalized_odds_difference"``,
        or a callable with their signature. It receives ``y_true`` as 0/1
        (1 for ``pos_label``) and the positive-class decisions (0/1) or
        probabilities.
    response_method : {"predict", "predict_proba"}, default="predict"
        Evaluate the parity of the decisions (``predict(X) == pos_label``)
        or of the probabilities of the positive class.
    greater_is_better : bool, default=None
        Whether larger metric values are better. ``None``: False for the
        differences (the scorer returns the negated difference, as
        scikit-learn's ``neg_*`` scorers do, so that larger is better in
        searches), True for the ratio and False for a callable.
    pos_label : int, str or bool, default=None
        The positive class; ``None`` means the estimator's last class
        (``classes_[-1]``), or 1 when it has no ``classes_``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y_true=None, sample_weight=None) -> float``.
        It accepts ``sample_weight`` when metadata routing is disabled; with
        routing enabled, call ``scorer.set_score_request(sample_weight=True)``.

    Raises
    ------
    ValueError
        When called, if the column(s) are missing from ``X``, or from the
        metric (e.g. a group without positives for the true positive rate).

    See Also
    --------
    make_constrained_scorer : Accuracy subject to parity.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn.compose import make_column_transformer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_validate
    >>> from sklearn.pipeline import make_pipeline
    >>> from skfairlayer.datasets import make_parity_classification
    >>> from skfairlayer.metrics import make_parity_scorer
    >>> X, y, group = make_parity_classification(600, random_state=0)
    >>> X = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)]).assign(group=group)
    >>> model = make_pipeline(
    ...     make_column_transformer(("drop", ["group"]), remainder="passthrough"),
    ...     LogisticRegression(),
    ... )
    >>> scores = cross_validate(
    ...     model, X, y, cv=3,
    ...     scoring={"accuracy": "accuracy", "neg_dp": make_parity_scorer("group")},
    ... )
    >>> bool((scores["test_neg_dp"] < -0.2).all())  # the model inherits the bias
    True
    """
    return _ParityScorer(
        sensitive_features, metric, response_method, greater_is_better, pos_label
    )


def make_constrained_scorer(
    sensitive_features,
    *,
    tolerance=0.01,
    score_func=accuracy_score,
    penalty="hard",
    metric="demographic_parity_difference",
    pos_label=None,
):
    """Make a scorer of "score subject to parity", reading the groups from ``X``.

    On each call, ``y_pred = estimator.predict(X)``, ``score =
    score_func(y_true, y_pred)`` and ``gap`` is the parity ``metric`` of the
    decisions ``y_pred == pos_label`` over the groups read from ``X``. With
    ``excess = gap - tolerance`` the scorer returns:

    - ``score`` when ``excess <= 1e-9`` (the decisions meet parity; the
      slack absorbs the rounding of group means),
    - ``-1 - excess`` when ``penalty="hard"``: below every feasible score of
      a ``score_func`` bounded below by -1 (accuracy, balanced accuracy,
      precision, recall, F1, ROC AUC, Matthews correlation), and the smaller
      the violation the higher the value,
    - ``score - penalty * excess`` when ``penalty`` is a number: a soft
      penalty, continuous at the tolerance.

    Note that cross-validation averages these values over the folds: with
    ``penalty="hard"``, a candidate that breaks parity on some folds only
    is pulled down, but may still outrank a feasible but much less accurate
    one. For a strict selection, score parity separately (a dict of
    scorers with :func:`make_parity_scorer`) and choose with a callable
    ``refit``.

    Parameters
    ----------
    sensitive_features : str, int, list of str or int, or callable
        Column name(s) of a DataFrame ``X``, column index(es) of ``X``, or a
        callable ``X -> groups``; see :func:`make_parity_scorer`.
    tolerance : float, default=0.01
        Largest parity gap counted as meeting parity.
    score_func : callable, default=sklearn.metrics.accuracy_score
        ``score_func(y_true, y_pred, **kwargs)``, greater is better; gets
        ``sample_weight=`` when the scorer gets sample weights.
    penalty : "hard" or float, default="hard"
        How a violation is penalised; see above.
    metric : str or callable, default="demographic_parity_difference"
        A parity metric where smaller is fairer:
        ``"demographic_parity_difference"``,
        ``"equal_opportunity_difference"``, ``"equalized_odds_difference"``
        or a callable with their signature.
    pos_label : int, str or bool, default=None
        The positive class; ``None`` means the estimator's last class.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y_true, sample_weight=None) -> float``,
        usable as ``scoring=`` of scikit-learn searches, alone or in a dict.

    See Also
    --------
    make_parity_scorer : The parity metric itself as a scorer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyClassifier
    >>> from skfairlayer.metrics import make_constrained_scorer
    >>> X = np.array([[0, 0], [1, 0], [2, 1], [3, 1]])  # column 1: the group
    >>> y = np.array([0, 1, 0, 1])
    >>> clf = DummyClassifier(strategy="constant", constant=1).fit(X, y)
    >>> scorer = make_constrained_scorer(1, tolerance=0.0)
    >>> scorer(clf, X, y)  # everyone selected: parity holds, accuracy 0.5
    0.5
    """
    return _ConstrainedScorer(
        sensitive_features, tolerance, score_func, penalty, metric, pos_label
    )



#: Metrics of real-valued predictions: their scorers pass ``predict(X)`` and ``y`` as they are.
_REGRESSION_METRICS = (
    group_error_ratio, ks_distance, mean_difference, residual_difference, wasserstein_distance,
)
_METRICS.update({
    "mean_difference": (mean_difference, False),
    "residual_difference": (residual_difference, False),
    "group_error_ratio": (group_error_ratio, False),
    "ks_distance": (ks_distance, False),
    "wasserstein_distance": (wasserstein_distance, False),
})
