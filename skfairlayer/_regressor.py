"""FairnessLayerRegressor: a regressor with a parity projection on its predictions."""

import dataclasses

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.utils.validation import assert_all_finite, column_or_1d

from ._base import FairnessLayerBase
from ._criteria import SMALL_GROUP_SIZE, Criterion, make_criterion
from ._fine_tune_regression import fine_tune_regressor
from ._layer import FittedLayer
from ._sklearn_compat import HasMethods, StrOptions, _fit_context
from ._stream_start import layer_stream, stream_unsupported
from ._validation import check_bounds, check_scores

__all__ = ["FairnessLayerRegressor"]

_CRITERIA = ("demographic_parity", "mean_residual")


class FairnessLayerRegressor(RegressorMixin, FairnessLayerBase):
    """Regressor whose predictions meet group parity of means.

    Wraps any regressor and appends a *fairness layer*: the base model's
    predictions are projected onto the closest predictions (in squared
    distance) that meet the criterion within ``tolerance`` and lie within
    ``bounds``. Every projection is verified; an infeasible or unsolved
    problem raises instead of returning predictions that break parity.

    Without bounds, demographic parity moves every prediction of a group by
    the same shift (the groups' means are brought into a common band of width
    ``tolerance``); with bounds the shifted predictions are clipped and the
    shifts adjust so that the means still agree. See the user guide's page
    on regression.

    The layer works in standardised units (predictions centred by the
    training target's mean and divided by its standard deviation, for the
    built-in criteria) so that its verification (rows within 1e-9) is
    relative to the target's scale: in the target's units the rows hold to
    ``1e-9 * std(y)``. Bounds hold exactly.

    Parameters
    ----------
    estimator : estimator object, default=None
        A regressor with ``predict`` returning one value per row. It is cloned
        and fitted in :meth:`fit`, except a
        :class:`~sklearn.frozen.FrozenEstimator`, used as is. ``None`` means
        :class:`~sklearn.linear_model.Ridge`.
    tolerance : float, default=0.01
        Largest allowed difference between two groups' mean prediction
        (``"demographic_parity"``) or largest allowed mean residual of a group
        (``"mean_residual"``), in the target's units.
    bounds : None, "target" or tuple of (float, float), default=None
        Range of the returned predictions. ``None``: unbounded (demographic
        parity is then a constant shift per group, the least change that
        meets it). ``"target"``: the training target's range
        ``[min(y), max(y)]``. ``(lower, upper)``: that interval (either end may
        be infinite, or None for an open end, e.g. ``(0, None)``). Predictions
        outside the bounds are projected into them.
    sensitive_features : str, int, list of those, or callable, default=None
        Where the groups come from: column(s) of ``X`` (names or positions),
        a callable ``f(X) -> groups``, or ``None`` to pass them to each method
        as the ``sensitive_features=`` keyword.
    sensitive_as_feature : bool, default=True
        Whether the base estimator also sees the sensitive column(s).
    criterion : {"demographic_parity", "mean_residual"} or Criterion, \
default="demographic_parity"
        ``"demographic_parity"``: the groups' mean predictions agree within
        ``tolerance``. ``"mean_residual"``: each group's mean prediction lies
        within ``tolerance`` of its mean target — measured with the labels at
        fit (``fit_gap_``, the fitted rules); at inference, where labels do not
        exist, its plug-in form replaces the targets by the base predictions,
        which the base predictions meet (only the bounds act). To audit a
        labelled batch use :func:`~skfairlayer.audit_residuals`. A
        :class:`~skfairlayer.Criterion` instance is used on the
        predictions in the target's units (labels: the targets when it sets
        ``continuous_labels = True``, else ``None``).
    groups : {"intersectional", "marginal"}, default="intersectional"
        With several sensitive attributes: every combination of values is a
        group, or the criterion applies to each attribute separately.
    min_group_size : float or None, default=30
        :meth:`fit` warns (:class:`~skfairlayer.exceptions.SmallGroupWarning`)
        about groups with fewer training rows than this. ``None`` disables it.
    inference : {"batch", "fitted"}, default="batch"
        ``"batch"``: each call to :meth:`predict` meets the criterion exactly on
        its batch (a batch with fewer than two groups gets the fitted rules).
        ``"fitted"``: apply the fitted per-group shifts row by row.
    cv : int, cross-validation generator, iterable or None, default=5
        How the fitted rules get out-of-sample base predictions (``KFold``
        for an int); ``None`` uses the final base's in-sample predictions.
    solver : {"auto", "exact", "osqp"}, default="auto"
        Projection solver; ``"auto"`` uses the exact solver (one parity family,
        any bounds) where it applies and OSQP otherwise.
    fine_tune : bool or FineTuning, default=False
        Whether to fine-tune the fitted base *through* the layer: starting
        from the fitted base, minimise the mean squared error of the projected
        predictions (in standardised units, plus the base's own penalty) by
        minibatch Adam, back-propagating through the projection with its
        closed-form Jacobian. Supported bases:
        :class:`~sklearn.linear_model.Ridge`,
        :class:`~sklearn.linear_model.LinearRegression`,
        :class:`~sklearn.linear_model.SGDRegressor`,
        :class:`~sklearn.neural_network.MLPRegressor`, one of these as the last
        step of a :class:`~sklearn.pipeline.Pipeline` (earlier steps stay
        fixed). ``FineTuning``'s ``margin`` and ``label_free`` do not apply.
    random_state : int, RandomState instance or None, default=None
        Seed of the fine-tuning's validation split and batch shuffles.
    verbose : int, default=0
        When positive, fine-tuning logs one line per epoch.
    stream_algorithm : {"pooled", "paper"}, default="pooled"
        Algorithm of :meth:`partial_predict` (see its documentation).
    stream_step : float, default=None
        Dual step of the streaming algorithm; ``None`` means its default.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted base estimator.
    bounds_ : tuple of (float, float)
        The bounds in use, in the target's units (``(-inf, inf)`` for ``None``).
    groups_ : ndarray of shape (n_groups,) or list of ndarray
        Sensitive groups seen during fit.
    layer_ : FittedLayer
        The fitted layer, in standardised units (see above).
    fit_gap_ : float
        Largest gap between group means of the projected training predictions,
        in the target's units (0 for ``"mean_residual"``, whose rows are not
        a gap between groups).
    fine_tune_history_ : dict or None
        With ``fine_tune``, per epoch the projected training and validation
        mean squared errors (standardised units) and the validation gap of the
        base predictions; ``best_epoch``. ``None`` otherwise.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    stream_ : object or None
        State of the stream of :meth:`partial_predict`, or ``None`` where the
        problem cannot stream.

    See Also
    --------
    FairnessLayerClassifier : The layer on a classifier's probabilities.
    audit_residuals : Project a labelled batch onto mean residual parity.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import FairnessLayerRegressor
    >>> rng = np.random.default_rng(0)
    >>> group = rng.integers(0, 2, 400)
    >>> X = np.c_[rng.normal(size=400), group]
    >>> y = 3 * X[:, 0] + 2 * group + rng.normal(size=400)
    >>> reg = FairnessLayerRegressor(tolerance=0.1, sensitive_features=1).fit(X, y)
    >>> pred = reg.predict(X)
    >>> gap = abs(pred[group == 0].mean() - pred[group == 1].mean())
    >>> bool(gap <= 0.1 + 1e-9)
    True
    """

    _parameter_constraints = {
        **FairnessLayerBase._parameter_constraints,
        "estimator": [None, HasMethods(["fit", "predict"])],
        "bounds": [None, StrOptions({"target"}), tuple, list],
        "criterion": [StrOptions(set(_CRITERIA)), Criterion],
    }

    def __init__(
        self,
        estimator=None,
        *,
        tolerance=0.01,
        bounds=None,
        sensitive_features=None,
        sensitive_as_feature=True,
        criterion="demographic_parity",
        groups="intersectional",
        min_group_size=SMALL_GROUP_SIZE,
        inference="batch",
        cv=5,
        solver="auto",
        fine_tune=False,
        random_state=None,
        verbose=0,
        stream_algorithm="pooled",
        stream_step=None,
    ):
        self.estimator = estimator
        self.tolerance = tolerance
        self.bounds = bounds
        self.sensitive_features = sensitive_features
        self.sensitive_as_feature = sensitive_as_feature
        self.criterion = criterion
        self.groups = groups
        self.min_group_size = min_group_size
        self.inference = inference
        self.cv = cv
        self.solver = solver
        self.fine_tune = fine_tune
        self.random_state = random_state
        self.verbose = verbose
        self.stream_algorithm = stream_algorithm
        self.stream_step = stream_step

    # ------------------------------------------------------------ front-end hooks
    def _default_base(self):
        return Ridge()

    def _fine_tune(self, estimator, base_X, y, codes, sample_weight, tuning):
        units = (self._center, self._scale, *self._layer_bounds())
        return fine_tune_regressor(
            estimator, base_X, y, codes, units=units, tolerance=float(self.tolerance) / self._scale,
            criterion=self.criterion, solver=self.solver, sample_weight=sample_weight,
            params=tuning.settings(), random_state=self.random_state, verbose=self.verbose,
        )

    def _layer_bounds(self):
        return tuple((b - self._center) / self._scale for b in self.bounds_)

    def _check_base(self, base):
        if not hasattr(base, "predict"):
            raise TypeError(f"The base estimator {base!r} has no predict method.")

    def _check_target(self, y, n_samples):
        """A 1-D finite real target; sets the bounds and the standardisation."""
        y = column_or_1d(y, warn=True)
        if y.shape[0] != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {y.shape[0]}; they must match.")
        if n_samples == 0:
            raise ValueError("X and y are empty: at least one sample is required.")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "Unknown label type: the target of a regressor must be numeric. "
                f"Got dtype {y.dtype} instead."
            ) from None
        assert_all_finite(y, input_name="y")
        self.bounds_ = _check_bounds(self.bounds, y)
        builtin = not isinstance(self.criterion, Criterion)
        scale = float(np.std(y)) if builtin else 1.0
        self._center = float(np.mean(y)) if builtin else 0.0
        self._scale = scale if np.isfinite(scale) and scale > 1e-12 * (1 + abs(self._center)) \
            else 1.0
        return y

    def _scores(self, estimator, base_X, *, checked=True):
        """Base predictions, standardised (see the class documentation).

        ``checked`` is accepted for the shared serving path: predictions are
        always checked here (their standardisation needs finite values).
        """
        pred = np.asarray(estimator.predict(base_X), dtype=np.float64)
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise ValueError(
                "The base regressor must predict one value per row. "
                f"Got predictions of shape {pred.shape} instead."
            )
        pred = check_scores(pred, name="base predict")
        return (pred - self._center) / self._scale

    def _layer_labels(self, y):
        crit = make_criterion(self.criterion)
        if not crit.continuous_labels:
            return None
        return (np.asarray(y, dtype=np.float64) - self._center) / self._scale

    def _make_layer(self):
        lower, upper = self._layer_bounds()
        return FittedLayer(
            self.criterion, float(self.tolerance) / self._scale, solver=self.solver,
            lower=lower, upper=upper, decisions=False,
        )

    def _unscale(self, outputs):
        out = self._center + self._scale * outputs
        return np.clip(out, *self.bounds_, out=out)  # exact bounds after the change of units

    # ------------------------------------------------------------ fit and predict
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, sensitive_features=None, sample_weight=None, **fit_params):
        """Fit the base regressor, then the layer's fitted rules.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Real target.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the base estimator's ``fit``.
        **fit_params : dict
            Further parameters for the base estimator's ``fit``.

        Returns
        -------
        self : FairnessLayerRegressor
            The fitted estimator.
        """
        self._fit(X, y, sensitive_features, sample_weight, fit_params)
        self.fit_gap_ = float(self.layer_.fit_gap) * self._scale
        return self

    def predict(self, X, *, sensitive_features=None):
        """Projected predictions: the criterion within ``tolerance``, within ``bounds_``.

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
            With ``inference="batch"`` the criterion holds on this batch exactly
            (mean residual: its plug-in form); a batch with fewer than two
            groups, or ``inference="fitted"``, gets the fitted shifts.
        """
        scores, groupings = self._prepare(X, sensitive_features)
        return self._unscale(self.layer_.outputs(scores, groupings, inference=self.inference))

    def score(self, X, y, sample_weight=None, *, sensitive_features=None):
        """Coefficient of determination (R^2) of :meth:`predict`.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            True targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), \
default=None
            Group membership, when not read from ``X``.

        Returns
        -------
        score : float
            R^2 of the projected predictions.
        """
        return r2_score(
            y, self.predict(X, sensitive_features=sensitive_features), sample_weight=sample_weight
        )

    # ------------------------------------------------------------ streaming
    def _unit_box(self):
        """``(lower, width)`` of the bounds in the layer's units: the stream serves in [0, 1]."""
        lower, upper = (float(b) for b in (self.layer_.lower, self.layer_.upper))
        return lower, upper - lower

    def _stream_unsupported(self):
        if not all(np.isfinite(self.bounds_)) or self.bounds_[0] == self.bounds_[1]:
            return (
                "partial_predict needs finite bounds of positive width (bounds='target' or a "
                "pair): the pooled certificate budgets each served row's effect on its group's "
                "pooled mean by the width of the output range, which is infinite without "
                f"bounds. Got bounds={self.bounds!r} instead; use predict on batches, or set "
                "bounds."
            )
        if isinstance(self.criterion, Criterion):
            return "A custom Criterion has no streaming form: use predict on batches."
        return stream_unsupported(
            self.criterion, 2, len(self.layer_.group_sizes), self.stream_algorithm
        )

    def _stream_config(self):
        algorithm, tolerance, step, threshold = super()._stream_config()
        width = (self.bounds_[1] - self.bounds_[0]) if all(np.isfinite(self.bounds_)) else 1.0
        return (algorithm, tolerance / width, step, threshold)

    def _start_stream(self, scores, groupings):
        lower, width = self._unit_box()
        unit = _UnitLayer(self.layer_, self.criterion, width)
        return layer_stream(
            unit, (scores - lower) / width, groupings, self.groups_, self._stream_config()
        )

    def partial_predict(self, X, *, sensitive_features=None):
        """Serve predictions to a stream: pooled group means within the certificate.

        Demographic parity (intersectional or marginal groups) and the plug-in
        mean residual, with finite ``bounds``: the stream engines of
        :class:`FairnessLayerClassifier` run on the predictions mapped
        affinely onto ``[0, 1]`` (``bounds_`` to ``[0, 1]``), so the pooled gap
        of everything served since :meth:`fit` or :meth:`reset_stream` stays
        within the certificate of :meth:`stream_report` at every row, whatever
        the batch size. Unbounded predictions raise a ``ValueError`` saying why
        (the certificate needs a bounded effect of each row).

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
            Served predictions, within ``bounds_``.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import FairnessLayerRegressor
        >>> rng = np.random.default_rng(0)
        >>> group = rng.integers(0, 2, 3000)
        >>> X = np.c_[rng.normal(size=3000), group]
        >>> y = 10 * X[:, 0] + 5 * group + rng.normal(size=3000)
        >>> reg = FairnessLayerRegressor(tolerance=0.5, bounds="target", sensitive_features=1)
        >>> reg = reg.fit(X[:1000], y[:1000])
        >>> served = np.concatenate([reg.partial_predict(X[i : i + 8]) for i in range(1000, 3000, 8)])
        >>> report = reg.stream_report()
        >>> bool(report.gap <= report.certificate), float(report.tolerance)
        (True, 0.5)
        """
        state = self._stream()
        scores, codes = self._stream_inputs(X, sensitive_features)
        lower, width = self._unit_box()
        served = state.serve("proba", (scores - lower) / width, codes)
        return self._unscale(lower + width * served)

    def stream_report(self, output="proba"):
        """Live report of the stream, in the target's units.

        Parameters
        ----------
        output : {"proba"}, default="proba"
            The stream of served predictions (the only one of a regressor).

        Returns
        -------
        report : StreamReport
            Per-group ``counts`` and pooled ``means``, the pooled ``gap``, the
            ``certificate`` (an upper bound on the gap, valid now), ``tolerance``
            and ``shifts`` in the target's units; ``duals`` in the stream's own
            units (outputs mapped onto [0, 1]).
        """
        if output != "proba":
            raise ValueError(f"A regressor serves one stream, output='proba'. Got {output!r}.")
        report = self._stream().report("proba")
        lower, span = self.bounds_[0], self.bounds_[1] - self.bounds_[0]

        def rescale(value, offset=0.0):  # marginal groups: one array per attribute
            if isinstance(value, list | tuple):
                return [rescale(v, offset) for v in value]
            return None if value is None else offset + span * np.asarray(value)

        return dataclasses.replace(
            report, means=rescale(report.means, lower), gap=span * report.gap,
            tolerance=span * report.tolerance, certificate=span * report.certificate,
            shifts=rescale(report.shifts),
        )


class _UnitLayer:
    """The fitted layer seen from the stream: outputs mapped from the bounds onto [0, 1]."""

    n_classes = 2

    def __init__(self, layer, criterion, width):
        self._layer = layer
        self.criterion = criterion  # the named criterion: the stream engines know it
        self.group_sizes = layer.group_sizes
        self.coefficients = [c / width for c in layer.coefficients]
        self.decision_offsets = [np.zeros((k, 2)) for k in layer.group_sizes]

    def problem(self, scores, groupings, labels=None, *, keep_trivial=False):
        return self._layer.problem(scores, groupings, labels, keep_trivial=keep_trivial)


def _check_bounds(bounds, y):
    """The bounds in the target's units: ``(lower, upper)`` with ``lower <= upper``."""
    if bounds is None:
        return (-np.inf, np.inf)
    if isinstance(bounds, str):
        return (float(np.min(y)), float(np.max(y)))
    return check_bounds(bounds, scalar=True)
