"""FairnessLayerClassifier: a probabilistic classifier with a parity projection on its output."""

from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import assert_all_finite, column_or_1d

from ._base import FairnessLayerBase
from ._criteria import SMALL_GROUP_SIZE
from ._decisions import warn_trivial_decisions
from ._sklearn_compat import HasMethods, Interval, StrOptions, _fit_context
from ._validation import check_scores

__all__ = ["FairnessLayerClassifier"]


class FairnessLayerClassifier(ClassifierMixin, FairnessLayerBase):
    """Classifier whose probabilities and decisions meet group parity.

    Wraps a probabilistic classifier and appends a *fairness layer*: the
    base model's probabilities are projected onto the closest probabilities
    (in squared distance) whose group means differ by at most ``tolerance``
    (Troxell, Montúfar and Roemer, ICML 2026). Every projection is verified;
    an infeasible or unsolved problem raises instead of returning outputs
    that break parity.

    :meth:`predict_proba` projects each batch exactly. :meth:`predict`
    returns decisions whose selection rates meet parity: rounding projected
    probabilities does not (their means are equal, not the share above 0.5),
    so decisions solve their own small problem — the integer decisions of
    maximal expected accuracy under selection-rate parity on the batch.

    :meth:`partial_predict_proba` and :meth:`partial_predict` serve a stream
    (rows one at a time or in small batches): the *pooled* gap of everything
    served stays within a certificate at every row (:meth:`stream_report`;
    see :ref:`streaming`).

    Parameters
    ----------
    estimator : estimator object, default=None
        A classifier with ``predict_proba``. It is cloned and fitted in
        :meth:`fit`, except a :class:`~sklearn.frozen.FrozenEstimator`, used as
        is. ``None`` means :class:`~sklearn.linear_model.LogisticRegression`.
    tolerance : float, default=0.01
        Largest allowed difference between two groups' mean probability
        (and selection rate, for :meth:`predict`).
    sensitive_features : str, int, list of those, or callable, default=None
        Where the groups come from: column(s) of ``X`` (names for a DataFrame,
        positions for an array) or a callable ``f(X) -> groups`` (e.g. binning
        an age column). Groups read from ``X`` work with scikit-learn scorers
        and :class:`~sklearn.model_selection.GridSearchCV` without metadata
        routing. ``None``: pass them to each method as ``sensitive_features=``.
    sensitive_as_feature : bool, default=True
        Whether the base estimator also sees the sensitive column(s) named by
        ``sensitive_features`` (by default ``X`` reaches it untouched, as in
        fairlearn). ``False`` drops them first: for a base that cannot read a
        string column, or a policy of not using the attribute as a feature.
    criterion : str or Criterion, default="demographic_parity"
        The parity criterion: ``"demographic_parity"`` (equal mean probability
        per group; per class for multiclass), ``"equal_opportunity"`` (equal
        mean probability among the positives), ``"equalized_odds"`` (among the
        positives and among the negatives; per true class for multiclass),
        ``"mean_residual"`` (each group's mean probability within
        ``tolerance`` of its mean label), or a
        :class:`~skfairlayer.Criterion` instance. Criteria conditioned on the
        label use ``y`` at fit and the base posteriors as plug-in weights at
        inference (exact in expectation for a base calibrated within each
        group; see :ref:`criteria`).
    groups : {"intersectional", "marginal"}, default="intersectional"
        With several sensitive attributes: ``"intersectional"`` makes every
        combination of values a group (as fairlearn does); ``"marginal"``
        applies the criterion to each attribute separately (as the paper
        does), which constrains fewer, larger groups.
    min_group_size : float or None, default=30
        :meth:`fit` warns (:class:`~skfairlayer.exceptions.SmallGroupWarning`)
        naming the groups with fewer (effective) training rows than this in a
        statistic of the criterion (e.g. few positives for equal opportunity),
        where parity is mostly noise. ``None`` disables the check.
    inference : {"batch", "fitted"}, default="batch"
        ``"batch"``: each call to :meth:`predict_proba` / :meth:`predict`
        meets parity exactly on its batch (a batch with fewer than two groups
        gets the fitted rules, ``layer_``). ``"fitted"``: the fitted rules row
        by row (parity on the out-of-fold scores they were learned from, and
        approximately on data distributed like them).
    cv : int, cross-validation generator, iterable or None, default=5
        How the fitted rules get out-of-sample base scores, as
        :class:`~sklearn.calibration.CalibratedClassifierCV` does: the base is
        also fitted on each training fold and scores its held-out fold.
        ``None`` uses the final base's in-sample scores (faster; fine for
        simple bases); a :class:`~sklearn.frozen.FrozenEstimator` base needs
        no folds. An int is a number of stratified folds.
    decision : {"parity", "threshold"}, default="parity"
        How :meth:`predict` decides. ``"parity"``: the integer decisions of
        maximal expected accuracy (under the base's calibrated probabilities)
        whose selection rates differ by at most ``tolerance`` on the batch —
        exact, no rounding slack. ``"threshold"``: projected probability
        ``>= threshold``; note that this does *not* keep parity of selection
        rates.
    threshold : float, default=0.5
        Threshold on the projected probability when ``decision="threshold"``.
    solver : {"auto", "exact", "osqp"}, default="auto"
        Projection solver; ``"auto"`` uses the exact solver where it applies.
    fine_tune : bool or FineTuning, default=False
        Whether to fine-tune the fitted base *through* the layer (the paper's
        F-Layer: minibatch Adam on the log-loss of the projected
        probabilities, back-propagated with the layer's closed-form
        Jacobian). ``True`` means :class:`~skfairlayer.FineTuning` with its
        defaults; pass an instance to choose the settings (searchable as
        ``fine_tune__learning_rate`` etc.). Bases: logistic regression,
        log-loss SGD, MLP (alone or last in a Pipeline) or any model with the
        fine-tuning protocol; ``estimator_`` keeps its class. See
        :ref:`fine_tuning`.
    random_state : int, RandomState instance or None, default=None
        Seed of the fine-tuning's validation split and batch shuffles (it is
        not passed to the base estimator). Pass an int for reproducible
        fine-tuning.
    verbose : int, default=0
        When positive, fine-tuning reports one line per epoch on standard
        error (training and validation projected log-loss, and the
        criterion's gap of the base outputs), and which epoch it kept.
    stream_algorithm : {"pooled", "paper"}, default="pooled"
        Algorithm of :meth:`partial_predict_proba` / :meth:`partial_predict`.
        ``"pooled"``: a primal-dual on the pooled constraints with an exact
        safeguard, certified at every row and any batch size. ``"paper"``:
        the paper's online primal-dual, for reproduction (binary demographic
        parity, intersectional groups; no finite-time guarantee). See
        :ref:`streaming`.
    stream_step : float, default=None
        Dual step of the streaming algorithm (``eta``, default 0.02, for
        ``"pooled"``; ``eta_0``, default 0.5, for ``"paper"``). ``None`` means
        the algorithm's default.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted base estimator.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    groups_ : ndarray of shape (n_groups,) or list of ndarray
        Sensitive groups seen during fit (tuples for several attributes); with
        ``groups="marginal"``, one array of values per attribute.
    layer_ : FittedLayer
        The fitted layer: the criterion's fitted rules (``coefficients``,
        ``decision_offsets``; binary, one grouping: ``shifts``,
        ``thresholds``) learned from out-of-fold scores. They serve
        ``inference="fitted"``, batches of fewer than two groups and the
        stream's start (see :ref:`inference`).
    fit_gap_ : float
        Largest gap of the projected training probabilities; for criteria
        conditioned on the label, measured with the training labels.
    fine_tune_history_ : dict or None
        With ``fine_tune``, per epoch (``0``: the fitted base) the projected
        training and validation log-loss and the validation gap, and
        ``best_epoch``, whose weights ``estimator_`` holds. ``None`` otherwise.
    n_features_in_ : int
        Number of features seen during fit (including sensitive columns).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    stream_ : object or None
        State of the stream of :meth:`partial_predict_proba` and
        :meth:`partial_predict`, started from ``layer_`` (read it through
        :meth:`stream_report`). ``None`` for criteria that cannot stream.

    See Also
    --------
    skfairlayer.project : The projection as a function.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skfairlayer import FairnessLayerClassifier
    >>> from skfairlayer.metrics import demographic_parity_difference
    >>> rng = np.random.default_rng(0)
    >>> group = rng.integers(0, 2, 400)
    >>> X = np.c_[rng.normal(size=400) + group, group]
    >>> y = (X[:, 0] + rng.normal(size=400) > 0.5).astype(int)
    >>> clf = FairnessLayerClassifier(
    ...     LogisticRegression(), tolerance=0.02, sensitive_features=1
    ... ).fit(X, y)
    >>> proba = clf.predict_proba(X)[:, 1]
    >>> bool(demographic_parity_difference(None, proba, sensitive_features=group) <= 0.02 + 1e-9)
    True
    >>> bool(demographic_parity_difference(None, clf.predict(X), sensitive_features=group) <= 0.02)
    True
    """

    _parameter_constraints = {
        **FairnessLayerBase._parameter_constraints,
        "estimator": [None, HasMethods(["fit"])],
        "tolerance": [Interval(Real, 0, 1, closed="both")],
        "decision": [StrOptions({"parity", "threshold"})],
        "threshold": [Interval(Real, 0, 1, closed="both")],
    }

    # sensitive_features is routed to this estimator by default.
    __metadata_request__fit = {"sensitive_features": True}
    __metadata_request__predict = {"sensitive_features": True}
    __metadata_request__predict_proba = {"sensitive_features": True}
    __metadata_request__score = {"sensitive_features": True}
    __metadata_request__partial_predict = {"sensitive_features": True}
    __metadata_request__partial_predict_proba = {"sensitive_features": True}

    def __init__(
        self,
        estimator=None,
        *,
        tolerance=0.01,
        sensitive_features=None,
        sensitive_as_feature=True,
        criterion="demographic_parity",
        groups="intersectional",
        min_group_size=SMALL_GROUP_SIZE,
        inference="batch",
        cv=5,
        decision="parity",
        threshold=0.5,
        solver="auto",
        fine_tune=False,
        random_state=None,
        verbose=0,
        stream_algorithm="pooled",
        stream_step=None,
    ):
        self.estimator = estimator
        self.tolerance = tolerance
        self.sensitive_features = sensitive_features
        self.sensitive_as_feature = sensitive_as_feature
        self.criterion = criterion
        self.groups = groups
        self.min_group_size = min_group_size
        self.inference = inference
        self.cv = cv
        self.decision = decision
        self.threshold = threshold
        self.solver = solver
        self.fine_tune = fine_tune
        self.random_state = random_state
        self.verbose = verbose
        self.stream_algorithm = stream_algorithm
        self.stream_step = stream_step

    # ------------------------------------------------------------ front-end hooks
    def _default_base(self):
        return LogisticRegression()

    def _check_base(self, base):
        if not hasattr(base, "predict_proba"):
            raise TypeError(
                f"The base estimator {base!r} has no predict_proba; the fairness layer projects "
                "probabilities. Use a probabilistic classifier or wrap it in "
                "sklearn.calibration.CalibratedClassifierCV(estimator)."
            )

    def _check_target(self, y, n_samples):
        """A 1-D, finite, binary or multiclass target of the right length."""
        y = column_or_1d(y, warn=True)
        if y.dtype.kind in "fc":
            assert_all_finite(y, input_name="y")
        if y.shape[0] != n_samples:
            raise ValueError(
                f"X has {n_samples} samples but y has {y.shape[0]}; they must match."
            )
        check_classification_targets(y)
        target_type = type_of_target(y, input_name="y")
        if target_type not in ("binary", "multiclass"):
            raise ValueError(
                "Only binary and multiclass classification are supported. The type of the "
                f"target is {target_type}."
            )
        return y

    def _set_fitted_base(self):
        self.classes_ = self.estimator_.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "The base estimator must be a classifier of at least two classes. "
                f"Got classes {self.classes_!r} instead."
            )

    def _scores(self, estimator, base_X, *, checked=True):
        """Base scores: the positive-class probability (binary) or every class column.

        ``checked=False``: scores of the expected shape and dtype are left to the
        stream that serves them, which checks them itself.
        """
        classes = None if estimator is self.estimator_ else estimator.classes_
        return _class_scores(estimator.predict_proba(base_X), self.classes_, classes, checked)

    def _row_scores(self, base_X):
        """One row's base scores as Python floats (binary: class 1's probability)."""
        proba = self.estimator_.predict_proba(base_X)
        if type(proba) is np.ndarray and proba.dtype == np.float64 and proba.shape == (
                1, len(self.classes_)):
            return proba.item(1) if proba.shape[1] == 2 else proba.tolist()[0]
        return _class_scores(proba, self.classes_, None, True).tolist()[0]

    def _layer_labels(self, y):
        return np.searchsorted(self.classes_, y)

    # ------------------------------------------------------------ fit and predict
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, sensitive_features=None, sample_weight=None, **fit_params):
        """Fit the base estimator, then the layer's fitted rules and stream.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Target: two or more classes.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X`` (see the constructor).
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the base estimator's ``fit``.
        **fit_params : dict
            Further parameters for the base estimator's ``fit`` (routed through
            metadata routing when it is enabled).

        Returns
        -------
        self : FairnessLayerClassifier
            The fitted estimator.
        """
        self._fit(X, y, sensitive_features, sample_weight, fit_params)
        if self.decision == "parity":
            warn_trivial_decisions(self.layer_, self.tolerance)
        return self

    def _proba(self, scores, groupings):
        return self.layer_.outputs(
            scores, groupings, inference=self.inference, tolerance=self.tolerance,
            solver=self.solver,
        )

    def predict_proba(self, X, *, sensitive_features=None):
        """Projected class probabilities: group means within ``tolerance``.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Samples.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Projected probabilities of ``classes_`` (rows on the simplex). With
            ``inference="batch"`` the criterion holds on this batch exactly (to
            1e-9; label-conditioned criteria in their plug-in form); a batch
            with fewer than two groups gets the training shifts.
        """
        scores, groupings = self._prepare(X, sensitive_features)
        return _two_columns(self._proba(scores, groupings))

    def predict(self, X, *, sensitive_features=None):
        """Decisions whose group selection rates differ by at most ``tolerance``.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Samples.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted class labels (see ``decision`` and ``inference``).
        """
        scores, groupings = self._prepare(X, sensitive_features)
        if self.decision == "threshold":
            p = self._proba(scores, groupings)
            labels = np.argmax(p, axis=1) if p.ndim == 2 else (p >= self.threshold).astype(int)
        else:
            labels = self.layer_.decisions(
                scores, groupings, inference=self.inference, tolerance=self.tolerance
            )
        if self.classes_.dtype == labels.dtype and np.array_equal(
                self.classes_, np.arange(self.classes_.size)):
            return labels  # the class indices are the labels
        return self.classes_[labels]

    def score(self, X, y, sample_weight=None, *, sensitive_features=None):
        """Accuracy of :meth:`predict` (decisions meeting parity).

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        score : float
            Mean accuracy.
        """
        return accuracy_score(
            y, self.predict(X, sensitive_features=sensitive_features), sample_weight=sample_weight
        )

    # ------------------------------------------------------------ streaming
    def partial_predict_proba(self, X, *, sensitive_features=None):
        """Serve probabilities to a stream: pooled group means within the certificate.

        With ``stream_algorithm="pooled"`` each row's probability is the base
        probability shifted by the stream's current dual for its group, then
        clipped (only if needed) so that the pooled gap of *all* probabilities
        served since :meth:`fit` or :meth:`reset_stream` stays within the
        certificate of :meth:`stream_report` at every row, whatever the batch
        size, order, group shares or drift. This holds for demographic parity
        (multiclass: per class, rows on the simplex), equal opportunity (plug-in
        weights) and mean residual, with intersectional or marginal groups;
        other criteria raise ``ValueError`` (see :ref:`streaming`).

        Like :meth:`partial_predict` and :meth:`reset_stream`, it updates
        ``stream_`` (the only state that changes after :meth:`fit`). Calls from
        several threads are serialized; an error (NaN scores, empty batch,
        unknown group: :class:`~skfairlayer.exceptions.UnseenGroupError`)
        leaves the stream unchanged.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Samples, in serving order.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Served probabilities of ``classes_`` (rows on the simplex).

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import FairnessLayerClassifier
        >>> rng = np.random.default_rng(0)
        >>> group = rng.integers(0, 2, 3000)
        >>> X = np.c_[rng.normal(size=3000) + group, group]
        >>> y = (X[:, 0] + rng.normal(size=3000) > 0.5).astype(int)
        >>> clf = FairnessLayerClassifier(tolerance=0.02, sensitive_features=1).fit(X[:1000], y[:1000])
        >>> for row in X[1000:]:
        ...     proba = clf.partial_predict_proba(row[None, :])
        >>> report = clf.stream_report()
        >>> int(report.n_served), bool(report.gap <= report.certificate == 0.02)
        (2000, True)
        """
        served = self._serve_row("proba", X, sensitive_features)
        if served is not None:  # one row, served as numbers: one array built
            return np.array([[1.0 - served, served] if len(self.classes_) == 2 else served])
        return _two_columns(self._serve("proba", X, sensitive_features))

    def partial_predict(self, X, *, sensitive_features=None):
        """Serve decisions to a stream: pooled selection rates within the certificate.

        With ``stream_algorithm="pooled"`` each row is decided by its group's
        current threshold (started at ``layer_.thresholds``, moved by the stream's
        duals) and flipped only if needed so that the pooled selection-rate gap
        of *all* decisions served since :meth:`fit` or :meth:`reset_stream`
        stays within the certificate of ``stream_report("decisions")`` at every
        row. With ``"paper"``, the paper's probabilities are thresholded at
        ``threshold`` (no guarantee on selection rates). The ``decision`` and
        ``inference`` parameters concern :meth:`predict` only.

        Multiclass targets, equal opportunity (plug-in) and marginal groups
        round a fractional stream, so their certificate adds a rounding term
        that the slack absorbs over time (see :ref:`streaming`). It updates
        ``stream_`` (its decision stream, separate from the probability
        stream); thread-safe, and an error leaves the stream unchanged.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Samples, in serving order.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Served class labels.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import FairnessLayerClassifier
        >>> rng = np.random.default_rng(0)
        >>> group = rng.integers(0, 2, 3000)
        >>> X = np.c_[rng.normal(size=3000) + group, group]
        >>> y = (X[:, 0] + rng.normal(size=3000) > 0.5).astype(int)
        >>> clf = FairnessLayerClassifier(tolerance=0.02, sensitive_features=1).fit(X[:1000], y[:1000])
        >>> labels = np.concatenate([clf.partial_predict(X[i : i + 4]) for i in range(1000, 3000, 4)])
        >>> report = clf.stream_report("decisions")
        >>> bool(report.gap <= report.certificate == 0.02)
        True
        """
        served = self._serve_row("decisions", X, sensitive_features)
        if served is not None:
            return self.classes_[[served]]
        return self.classes_[self._serve("decisions", X, sensitive_features)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


def _class_scores(proba, classes, fold_classes, checked):
    """A base's ``predict_proba`` as the layer's scores: class 1's column (binary) or every
    class's, checked unless ``checked=False`` and already of the expected shape and dtype
    (the stream that serves them checks them). ``fold_classes``: the classes of a
    cross-fitting fold's base, when it may lack some (None: all of ``classes``)."""
    proba = np.asarray(proba)
    if fold_classes is not None and not np.array_equal(fold_classes, classes):
        full = np.zeros((proba.shape[0], len(classes)))
        full[:, np.searchsorted(classes, fold_classes)] = proba
        proba = full
    if proba.ndim == 2 and proba.shape[1] == 2 == len(classes):
        proba = np.ascontiguousarray(proba[:, 1], dtype=np.float64)  # checked alone
    if not checked and proba.dtype == np.float64 and proba.ndim == (1 if len(classes) == 2 else 2):
        return proba
    return check_scores(proba, name="base predict_proba")


def _two_columns(p):
    """Class probabilities: binary outputs become ``[1 - p, p]`` (column-major, as
    scikit-learn's linear models return them: two contiguous writes)."""
    if p.ndim == 2:
        return p
    out = np.empty((p.shape[0], 2), order="F")
    out[:, 1] = p
    np.subtract(1.0, p, out=out[:, 0])
    return out
