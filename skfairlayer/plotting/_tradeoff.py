"""The parity-performance trade-off over a sweep of tolerances (:class:`ParityTradeoffDisplay`)."""

import copy

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, roc_auc_score

from ._common import (
    _check_ax,
    _check_tolerances,
    _codes,
    _groups_and_kwargs,
    _layer_params,
    _parity_gap,
    _positive_column,
)

__all__ = ["ParityTradeoffDisplay"]


class ParityTradeoffDisplay:
    """Parity–performance trade-off over a sweep of tolerances.

    One curve per method: the parity gap (x) against a performance score (y),
    one point per tolerance. Draw several methods on the same axes by passing
    ``ax=display.ax_`` to the next call. Create it with :meth:`from_estimator`
    or :meth:`from_predictions`.

    Parameters
    ----------
    gaps : array-like of shape (n_points,)
        Demographic parity difference of the outputs at each point.
    scores : array-like of shape (n_points,)
        Performance score at each point.
    tolerances : array-like of shape (n_points,), default=None
        Tolerance of each point, used to annotate the points.
    name : str, default=None
        Name of the method, used in the legend.
    score_name : str, default="accuracy"
        Label of the y axis.
    gap_name : str, default="demographic parity difference"
        Label of the x axis.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The trade-off curve.
    annotations_ : list of matplotlib Annotation
        Tolerance labels of the points (empty unless ``annotate=True``).
    ax_ : matplotlib Axes
        Axes with the curve.
    figure_ : matplotlib Figure
        Figure containing the curve.

    See Also
    --------
    GroupScoreDisplay : Per-group score distributions before and after the layer.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skfairlayer.plotting import ParityTradeoffDisplay
    >>> disp = ParityTradeoffDisplay(
    ...     gaps=[0.20, 0.05, 0.01], scores=[0.85, 0.84, 0.83], tolerances=[1, 0.05, 0.01],
    ...     name="layer",
    ... ).plot()
    >>> disp.line_.get_label()
    'layer'
    """

    def __init__(
        self,
        *,
        gaps,
        scores,
        tolerances=None,
        name=None,
        score_name="accuracy",
        gap_name="demographic parity difference",
    ):
        self.gaps = gaps
        self.scores = scores
        self.tolerances = tolerances
        self.name = name
        self.score_name = score_name
        self.gap_name = gap_name

    def plot(self, ax=None, *, name=None, annotate=False, **kwargs):
        """Plot the trade-off curve.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to plot on; a new figure is created when None.
        name : str, default=None
            Legend label; overrides the ``name`` given at construction.
        annotate : bool, default=False
            Whether to label each point with its tolerance.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        display : ParityTradeoffDisplay
            Object that stores the computed values and the artists.
        """
        self.figure_, self.ax_ = _check_ax(ax, "ParityTradeoffDisplay")
        name = self.name if name is None else name
        gaps = np.asarray(self.gaps, dtype=np.float64)
        scores = np.asarray(self.scores, dtype=np.float64)
        line_kwargs = {"marker": "o"}
        if name is not None:
            line_kwargs["label"] = name
        line_kwargs.update(kwargs)
        (self.line_,) = self.ax_.plot(gaps, scores, **line_kwargs)
        self.annotations_ = []
        if annotate and self.tolerances is not None:
            for g, s, t in zip(gaps, scores, np.asarray(self.tolerances), strict=True):
                self.annotations_.append(
                    self.ax_.annotate(
                        f"{t:g}", (g, s), textcoords="offset points", xytext=(4, 4),
                        fontsize="small", color=self.line_.get_color(),
                    )
                )
        self.ax_.set_xlabel(self.gap_name)
        self.ax_.set_ylabel(self.score_name)
        if name is not None:
            self.ax_.legend(loc="lower right")
        return self

    @classmethod
    def from_predictions(
        cls,
        y_true,
        y_preds,
        *,
        sensitive_features,
        tolerances=None,
        score_func=None,
        score_name=None,
        name=None,
        ax=None,
        annotate=False,
        **kwargs,
    ):
        """Plot the trade-off from predictions made at each point of a sweep.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True labels.
        y_preds : sequence of array-like of shape (n_samples,) or (n_samples, n_classes)
            Outputs at each point of the sweep: decisions, or scores
            (probabilities of the positive class, or a matrix of class
            probabilities for multiclass).
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
            Group membership of the samples.
        tolerances : array-like of shape (n_points,), default=None
            Tolerance of each point (for annotations).
        score_func : callable, default=None
            ``score_func(y_true, y_pred) -> float``. None means accuracy for
            decisions (1-D outputs with at most two distinct values that are
            labels) and ROC AUC for scores.
        score_name : str, default=None
            Label of the y axis; derived from ``score_func`` when None.
        name : str, default=None
            Name of the method, for the legend.
        ax : matplotlib Axes, default=None
            Axes to plot on.
        annotate : bool, default=False
            Whether to label each point with its tolerance.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        display : ParityTradeoffDisplay
            The plotted display.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from skfairlayer import project
        >>> from skfairlayer.plotting import ParityTradeoffDisplay
        >>> rng = np.random.default_rng(0)
        >>> group = rng.integers(0, 2, 500)
        >>> scores = np.clip(rng.uniform(size=500) * 0.8 + 0.2 * group, 0, 1)
        >>> y = (rng.uniform(size=500) < scores).astype(int)
        >>> tolerances = [0.2, 0.1, 0.05, 0.0]
        >>> preds = [project(scores, group, tolerance=t).proba for t in tolerances]
        >>> disp = ParityTradeoffDisplay.from_predictions(
        ...     y, preds, sensitive_features=group, tolerances=tolerances, name="projection"
        ... )
        >>> bool(disp.gaps[-1] <= 1e-9)
        True
        """
        if isinstance(y_preds, np.ndarray) and y_preds.ndim == 1:
            raise ValueError(
                "y_preds must be a sequence of outputs, one array per point of the sweep. "
                f"Got a single 1-D array of shape {y_preds.shape} instead."
            )
        y_true = np.asarray(y_true)
        n = y_true.shape[0]
        codes, labels = _codes(sensitive_features, n)
        preds = [np.asarray(p) for p in y_preds]
        if not preds:
            raise ValueError(f"y_preds must hold at least one array. Got {y_preds!r} instead.")
        if tolerances is not None:
            tolerances = _check_tolerances(tolerances)
            if tolerances.size != len(preds):
                raise ValueError(
                    f"tolerances must have one entry per array of y_preds ({len(preds)}). "
                    f"Got {tolerances.size} instead."
                )
        gaps, scores = [], []
        for p in preds:
            if p.shape[0] != n:
                raise ValueError(
                    f"Each array of y_preds must have {n} rows, like y_true. "
                    f"Got an array of shape {p.shape} instead."
                )
            func, default_name = _score_func(score_func, y_true, p)
            gaps.append(_parity_gap(p.astype(np.float64), codes, len(labels)))
            scores.append(float(func(y_true, p)))
        if score_name is None:
            score_name = default_name if score_func is None else getattr(
                score_func, "__name__", "score"
            )
        disp = cls(
            gaps=np.asarray(gaps), scores=np.asarray(scores), tolerances=tolerances,
            name=name, score_name=score_name,
        )
        return disp.plot(ax=ax, annotate=annotate, **kwargs)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        tolerances,
        sensitive_features=None,
        response_method="predict",
        param_name="tolerance",
        refit_on=None,
        score_func=None,
        score_name=None,
        name=None,
        ax=None,
        annotate=False,
        **kwargs,
    ):
        """Sweep the tolerance of an estimator and plot the trade-off on ``(X, y)``.

        For each tolerance, a copy of the fitted estimator with
        ``param_name`` set to it predicts ``X``. With
        ``inference="batch"`` (the default) only the tolerance at prediction
        time matters, so no refit is needed; otherwise (fitted shifts,
        fine-tuning, or any estimator whose fit depends on the tolerance)
        pass ``refit_on=(X_train, y_train)`` to refit a clone per tolerance.

        Parameters
        ----------
        estimator : estimator object
            A fitted :class:`~skfairlayer.FairnessLayerClassifier` (or any
            estimator with a tolerance parameter).
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Evaluation samples.
        y : array-like of shape (n_samples,)
            True labels.
        tolerances : array-like of shape (n_points,)
            Tolerances to sweep.
        sensitive_features : array-like of shape (n_samples,), default=None
            Groups of the samples, when the estimator does not read them from
            ``X`` (for a layer constructed with ``sensitive_features=None`` they
            are also passed to its methods).
        response_method : {"predict", "predict_proba"}, default="predict"
            Outputs to evaluate: decisions, or probabilities (the positive
            class for binary problems).
        param_name : str, default="tolerance"
            Name of the tolerance parameter (e.g. ``"clf__tolerance"`` in a
            pipeline).
        refit_on : tuple of (X_train, y_train) or (X_train, y_train, groups_train), default=None
            Refit a clone of the estimator on these data at each tolerance
            (the groups are needed when the layer takes them as a keyword).
        score_func : callable, default=None
            ``score_func(y_true, y_pred) -> float``; None means accuracy for
            decisions, ROC AUC for probabilities.
        score_name : str, default=None
            Label of the y axis.
        name : str, default=None
            Name of the method, for the legend (the class name by default).
        ax : matplotlib Axes, default=None
            Axes to plot on.
        annotate : bool, default=False
            Whether to label each point with its tolerance.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        display : ParityTradeoffDisplay
            The plotted display.
        """
        tolerances = _check_tolerances(tolerances)
        if response_method not in ("predict", "predict_proba"):
            raise ValueError(
                "response_method must be 'predict' or 'predict_proba'. "
                f"Got {response_method!r} instead."
            )
        params = _layer_params(estimator)
        if refit_on is None and (
            params.get("inference", "batch") != "batch" or params.get("fine_tune", False)
        ):
            raise ValueError(
                "This estimator's fitted state depends on the tolerance (inference="
                f"{params.get('inference')!r}, fine_tune={params.get('fine_tune', False)!r}): "
                "pass refit_on=(X_train, y_train) to refit it at each tolerance. "
                f"Got refit_on={refit_on!r} instead."
            )
        groups, method_kwargs = _groups_and_kwargs(estimator, X, sensitive_features)
        preds = []
        for t in tolerances:
            if refit_on is None:
                est = copy.deepcopy(estimator).set_params(**{param_name: float(t)})
            else:
                X_fit, y_fit, fit_kwargs = _check_refit_on(refit_on, method_kwargs)
                est = clone(estimator).set_params(**{param_name: float(t)})
                est.fit(X_fit, y_fit, **fit_kwargs)
            out = getattr(est, response_method)(X, **method_kwargs)
            if response_method == "predict_proba":
                out = _positive_column(out, getattr(est, "classes_", ()), None)
            preds.append(out)
        if name is None:
            name = type(estimator).__name__
        return cls.from_predictions(
            y, preds, sensitive_features=groups, tolerances=tolerances, score_func=score_func,
            score_name=score_name, name=name, ax=ax, annotate=annotate, **kwargs,
        )


def _check_refit_on(refit_on, method_kwargs):
    """(X_train, y_train, fit keyword arguments) from ``refit_on``."""
    if not isinstance(refit_on, tuple) or len(refit_on) not in (2, 3):
        raise ValueError(
            "refit_on must be a tuple (X_train, y_train) or, for a layer that takes its "
            f"groups as a keyword, (X_train, y_train, groups_train). Got {refit_on!r} instead."
        )
    if len(refit_on) == 3:
        return refit_on[0], refit_on[1], {"sensitive_features": refit_on[2]}
    if method_kwargs:
        raise ValueError(
            "This layer takes its groups as a keyword: pass refit_on=(X_train, y_train, "
            "groups_train). Got a pair instead."
        )
    return refit_on[0], refit_on[1], {}


def _score_func(score_func, y_true, y_pred):
    """The score function and its axis label for these outputs."""
    if score_func is not None:
        return score_func, None
    is_scores = y_pred.ndim == 2 or (
        y_pred.dtype.kind == "f" and not np.isin(y_pred, np.unique(y_true)).all()
    )
    if not is_scores:
        return accuracy_score, "accuracy"
    if y_pred.ndim == 2:
        return (lambda yt, yp: roc_auc_score(yt, yp, multi_class="ovr")), "ROC AUC (one-vs-rest)"
    return roc_auc_score, "ROC AUC"
