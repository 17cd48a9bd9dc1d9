"""Plots for fairness layers, as scikit-learn-style Display objects.

matplotlib is an optional dependency: it is imported inside the plotting
functions only, and a clear :class:`ImportError` says how to install it
(``pip install skfairlayer[plot]``). Nothing else in the package imports this
module.

Each Display stores what it computed as public attributes, draws with
:meth:`plot` (``ax=`` to draw on existing axes, so several methods share one
figure), and keeps the artists it drew (``line_``, ``ax_``, ``figure_``, ...).
The ``from_estimator`` constructors only call public methods and read public
attributes and constructor parameters of the estimator.
"""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, roc_auc_score

from ._groups import SensitiveColumns, encode, resolve

__all__ = [
    "GroupScoreDisplay",
    "ParityTradeoffDisplay",
    "StreamingGapDisplay",
    "running_gap",
]


def _import_pyplot(what):
    """Import matplotlib.pyplot, or raise an ImportError telling how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"{what} requires matplotlib. You can install it with "
            "`pip install skfairlayer[plot]` (or `pip install matplotlib`)."
        ) from exc
    return plt


def _check_ax(ax, what):
    """Return (figure, ax), creating them when ``ax`` is None."""
    plt = _import_pyplot(what)
    if ax is None:
        fig, ax = plt.subplots(layout="constrained")
        return fig, ax
    return ax.figure, ax


# ---------------------------------------------------------------- group helpers
def _codes(sensitive_features, n_samples):
    (grouping,), labels = encode(sensitive_features, n_samples=n_samples)
    return grouping.codes, labels


def _group_means(values, codes, n_groups):
    """Per-group mean of 1-D ``values`` or, for 2-D, of each column: shape (n_groups, n_cols)."""
    values = values[:, None] if values.ndim == 1 else values
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    sums = np.stack(
        [np.bincount(codes, weights=values[:, j], minlength=n_groups) for j in
         range(values.shape[1])],
        axis=1,
    )
    return sums / counts[:, None]


def _parity_gap(values, codes, n_groups):
    """Largest difference between two groups' mean output (max over columns)."""
    means = _group_means(values, codes, n_groups)
    return float((means.max(axis=0) - means.min(axis=0)).max())


def _label(group):
    if isinstance(group, tuple):
        return ", ".join(str(g) for g in group)
    return str(group.item() if isinstance(group, np.generic) else group)


def _layer_params(estimator):
    """Constructor parameters of the estimator (empty for objects without get_params)."""
    return estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}


def _columns_of(X, spec):
    """The columns ``spec`` (names or positions, or a callable) of ``X``."""
    return resolve(SensitiveColumns(spec, owner="This display").split(X)[1])


def _groups_and_kwargs(estimator, X, sensitive_features):
    """Groups of the rows of ``X`` and the keyword arguments the estimator's methods need.

    A :class:`~skfairlayer.FairnessLayerClassifier` that reads its groups from
    ``X`` (constructor ``sensitive_features`` set) gets no keyword; one that
    takes them as a keyword gets ``sensitive_features=``. Other estimators get
    no keyword and ``sensitive_features`` is used for the metrics only.
    """
    params = _layer_params(estimator)
    if "sensitive_features" not in params or params["sensitive_features"] is None:
        if sensitive_features is None:
            raise ValueError(
                "sensitive_features is required: this estimator does not read the groups "
                "from X. Got None instead."
            )
        kwargs = {"sensitive_features": sensitive_features} if "sensitive_features" in params else {}
        return sensitive_features, kwargs
    if sensitive_features is not None:
        return sensitive_features, {}
    return _columns_of(X, params["sensitive_features"]), {}


def _check_tolerances(tolerances):
    tol = np.asarray(tolerances, dtype=np.float64).reshape(-1)
    if tol.size == 0 or not np.isfinite(tol).all() or (tol < 0).any():
        raise ValueError(
            "tolerances must be a non-empty sequence of finite numbers >= 0. "
            f"Got {tolerances!r} instead."
        )
    return tol


def _positive_column(proba, classes, pos_label):
    """The probability column of ``pos_label`` (the last class by default); 2-D kept for K > 2."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        return proba
    if proba.shape[1] == 2 or pos_label is not None:
        if pos_label is None:
            return proba[:, -1]
        classes = list(classes)
        if pos_label not in classes:
            raise ValueError(
                f"pos_label must be one of the classes {classes!r}. Got {pos_label!r} instead."
            )
        return proba[:, classes.index(pos_label)]
    return proba


# ---------------------------------------------------------------- trade-off
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


# ---------------------------------------------------------------- group scores
class GroupScoreDisplay:
    """Per-group distributions of the scores before and after the fairness layer.

    Two panels: the base model's scores, and the projected scores, as one
    histogram per group, with a dashed vertical line at each group's mean.
    After the layer the group means lie within the tolerance of each other
    (demographic parity); the shapes of the distributions are shifted, not
    reshaped (one shift per group, clipped to [0, 1]).

    Parameters
    ----------
    scores_before : array-like of shape (n_samples,)
        Base scores (probability of the positive class).
    scores_after : array-like of shape (n_samples,)
        Scores after the layer.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership.
    tolerance : float, default=None
        The layer's tolerance, shown in the title of the second panel.

    Attributes
    ----------
    groups_ : ndarray of shape (n_groups,)
        Group labels, in plotting order.
    means_ : dict of {"before", "after"} to ndarray of shape (n_groups,)
        Mean score of each group.
    gaps_ : dict of {"before", "after"} to float
        Demographic parity difference of the scores.
    stairs_ : dict of {"before", "after"} to list of matplotlib StepPatch
        One histogram per group.
    mean_lines_ : dict of {"before", "after"} to list of matplotlib Line2D
        Vertical line at each group's mean.
    axes_ : ndarray of matplotlib Axes of shape (2,)
        The two panels.
    figure_ : matplotlib Figure
        Figure containing the panels.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skfairlayer import project
    >>> from skfairlayer.plotting import GroupScoreDisplay
    >>> rng = np.random.default_rng(0)
    >>> group = rng.integers(0, 2, 1000)
    >>> scores = np.clip(rng.beta(2, 5, 1000) + 0.2 * group, 0, 1)
    >>> after = project(scores, group, tolerance=0.01).proba
    >>> disp = GroupScoreDisplay.from_predictions(scores, after, sensitive_features=group)
    >>> bool(disp.gaps_["after"] <= 0.01 + 1e-9)
    True
    """

    def __init__(self, *, scores_before, scores_after, sensitive_features, tolerance=None):
        self.scores_before = scores_before
        self.scores_after = scores_after
        self.sensitive_features = sensitive_features
        self.tolerance = tolerance

    def plot(self, ax=None, *, bins=20, density=True):
        """Plot the two panels.

        Parameters
        ----------
        ax : sequence of two matplotlib Axes, default=None
            Axes for the "before" and "after" panels; a new figure with two
            side-by-side panels is created when None.
        bins : int, default=20
            Number of equal-width bins on [0, 1].
        density : bool, default=True
            Whether each group's histogram is normalised to unit area (groups
            of different sizes are then comparable).

        Returns
        -------
        display : GroupScoreDisplay
            Object that stores the computed values and the artists.
        """
        plt = _import_pyplot("GroupScoreDisplay")
        if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
            raise ValueError(f"bins must be a positive integer. Got {bins!r} instead.")
        if ax is None:
            fig, axes = plt.subplots(
                1, 2, sharex=True, sharey=True, figsize=(9, 3.5), layout="constrained"
            )
        else:
            axes = np.asarray(ax, dtype=object).reshape(-1)
            if axes.size != 2:
                raise ValueError(
                    "ax must be a sequence of two Axes (before, after). "
                    f"Got {axes.size} Axes instead."
                )
            fig = axes[0].figure
        self.axes_ = np.asarray(axes, dtype=object)
        self.figure_ = fig
        before = np.asarray(self.scores_before, dtype=np.float64).reshape(-1)
        after = np.asarray(self.scores_after, dtype=np.float64).reshape(-1)
        if before.shape != after.shape:
            raise ValueError(
                "scores_before and scores_after must have the same shape. "
                f"Got {before.shape} and {after.shape} instead."
            )
        codes, labels = _codes(self.sensitive_features, before.shape[0])
        self.groups_ = labels
        edges = np.linspace(0.0, 1.0, bins + 1)
        colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1"])
        self.means_, self.gaps_, self.stairs_, self.mean_lines_ = {}, {}, {}, {}
        for stage, values, axis in (("before", before, axes[0]), ("after", after, axes[1])):
            means = _group_means(values, codes, len(labels))[:, 0]
            self.means_[stage] = means
            self.gaps_[stage] = float(means.max() - means.min())
            self.stairs_[stage], self.mean_lines_[stage] = [], []
            for k, label in enumerate(labels):
                color = colors[k % len(colors)]
                counts, _ = np.histogram(values[codes == k], bins=edges, density=density)
                self.stairs_[stage].append(
                    axis.stairs(counts, edges, color=color, label=_label(label), linewidth=1.5)
                )
                self.mean_lines_[stage].append(
                    axis.axvline(means[k], color=color, linestyle="--", linewidth=1)
                )
            axis.set_xlabel("score (probability of the positive class)")
        axes[0].set_ylabel("density" if density else "count")
        axes[0].set_title(f"base model (gap {self.gaps_['before']:.3f})")
        tol = "" if self.tolerance is None else f", tolerance {self.tolerance:g}"
        axes[1].set_title(f"after the layer (gap {self.gaps_['after']:.3f}{tol})")
        axes[1].legend(title="group", fontsize="small")
        return self

    @classmethod
    def from_predictions(
        cls, scores_before, scores_after, *, sensitive_features, tolerance=None, ax=None,
        bins=20, density=True,
    ):
        """Plot the distributions from scores computed beforehand.

        Parameters
        ----------
        scores_before : array-like of shape (n_samples,)
            Base scores.
        scores_after : array-like of shape (n_samples,)
            Scores after the layer.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
            Group membership.
        tolerance : float, default=None
            The layer's tolerance, for the title.
        ax : sequence of two matplotlib Axes, default=None
            Axes for the two panels.
        bins : int, default=20
            Number of bins on [0, 1].
        density : bool, default=True
            Whether histograms are normalised per group.

        Returns
        -------
        display : GroupScoreDisplay
            The plotted display.
        """
        disp = cls(
            scores_before=scores_before, scores_after=scores_after,
            sensitive_features=sensitive_features, tolerance=tolerance,
        )
        return disp.plot(ax=ax, bins=bins, density=density)

    @classmethod
    def from_estimator(
        cls, estimator, X, *, sensitive_features=None, pos_label=None, ax=None, bins=20,
        density=True,
    ):
        """Plot the base's and the layer's scores of a fitted FairnessLayerClassifier on ``X``.

        The base scores come from the public fitted base ``estimator.estimator_``
        applied to ``X`` without the sensitive columns (unless the layer was
        built with ``sensitive_as_feature=True``), exactly as the layer feeds it.

        Parameters
        ----------
        estimator : FairnessLayerClassifier
            A fitted layer.
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Samples.
        sensitive_features : array-like of shape (n_samples,), default=None
            Groups, when the layer does not read them from ``X``.
        pos_label : int, float, bool or str, default=None
            Class whose probability is plotted; the last of ``classes_`` by default.
        ax : sequence of two matplotlib Axes, default=None
            Axes for the two panels.
        bins : int, default=20
            Number of bins on [0, 1].
        density : bool, default=True
            Whether histograms are normalised per group.

        Returns
        -------
        display : GroupScoreDisplay
            The plotted display.
        """
        if not hasattr(estimator, "estimator_"):
            raise ValueError(
                "estimator must be a fitted FairnessLayerClassifier (with a fitted base "
                f"estimator_). Got {estimator!r} instead."
            )
        params = _layer_params(estimator)
        groups, kwargs = _groups_and_kwargs(estimator, X, sensitive_features)
        after = estimator.predict_proba(X, **kwargs)
        base_X = _base_input(X, params)
        before = estimator.estimator_.predict_proba(base_X)
        classes = estimator.classes_
        after = _positive_column(after, classes, pos_label)
        before = _positive_column(before, classes, pos_label)
        if np.ndim(after) != 1:
            raise ValueError(
                "GroupScoreDisplay plots one class: pass pos_label= for a multiclass layer. "
                f"Got pos_label={pos_label!r} instead."
            )
        return cls.from_predictions(
            before, after, sensitive_features=groups, tolerance=params.get("tolerance"),
            ax=ax, bins=bins, density=density,
        )


def _base_input(X, params):
    """``X`` as the layer feeds it to its base: sensitive columns dropped unless kept."""
    spec = params.get("sensitive_features")
    if spec is None or callable(spec) or params.get("sensitive_as_feature", False):
        return X
    cols = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if hasattr(X, "iloc"):
        if all(isinstance(c, str) for c in cols):
            return X.drop(columns=cols)
        keep = [j for j in range(X.shape[1]) if j not in {c % X.shape[1] for c in cols}]
        return X.iloc[:, keep]
    arr = np.asarray(X)
    return np.delete(arr, [c % arr.shape[1] for c in cols], axis=1)


# ---------------------------------------------------------------- streaming
def running_gap(outputs, sensitive_features):
    """Pooled parity gap of everything served so far, after each row.

    Parameters
    ----------
    outputs : array-like of shape (n_samples,) or (n_samples, n_classes)
        Served outputs (probabilities or decisions) in serving order.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group of each row.

    Returns
    -------
    gaps : ndarray of shape (n_samples,)
        ``gaps[t]``: largest difference between two groups' mean output over
        rows ``0..t`` (max over classes for 2-D outputs); NaN while fewer than
        two groups have been seen.
    min_counts : ndarray of shape (n_samples,)
        Size of the smallest group seen so far (0 while a group is unseen).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.plotting import running_gap
    >>> gaps, _ = running_gap([1.0, 0.0, 1.0, 1.0], ["a", "b", "b", "a"])
    >>> gaps
    array([nan, 1. , 0.5, 0.5])
    """
    values = np.asarray(outputs, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    n = values.shape[0]
    codes, labels = _codes(sensitive_features, n)
    k = len(labels)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), codes] = 1.0
    counts = np.cumsum(onehot, axis=0)
    gaps = np.zeros(n)
    seen = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(values.shape[1]):
            sums = np.cumsum(onehot * values[:, j : j + 1], axis=0)
            means = sums / counts
            hi = np.where(seen, means, -np.inf).max(axis=1)
            lo = np.where(seen, means, np.inf).min(axis=1)
            gaps = np.maximum(gaps, hi - lo)
    gaps[seen.sum(axis=1) < 2] = np.nan
    min_counts = np.where(seen.all(axis=1), counts.min(axis=1), 0).astype(np.int64)
    return gaps, min_counts


class StreamingGapDisplay:
    """Pooled parity gap of a stream over time, with the tolerance and a certificate band.

    The pooled gap at time ``T`` is the demographic parity difference of all
    outputs served since the start (or the last reset) of the stream. The
    tolerance is drawn as a horizontal line; a certificate (an upper bound on
    the pooled gap at each time, e.g. ``tolerance + C / min_g N_g(T)`` for
    the primal-dual stream) as a shaded band above it.

    Parameters
    ----------
    n_seen : array-like of shape (n_points,)
        Number of rows served at each point.
    gaps : array-like of shape (n_points,)
        Pooled gap of the served outputs at each point.
    tolerance : float, default=None
        The tolerance.
    certificate : array-like of shape (n_points,), default=None
        Upper bound on the pooled gap at each point.
    raw_gaps : array-like of shape (n_points,), default=None
        Pooled gap of the base scores, for reference.
    name : str, default=None
        Legend label of the gap curve.

    Attributes
    ----------
    line_ : matplotlib Line2D
        Pooled gap curve.
    raw_line_ : matplotlib Line2D or None
        Pooled gap of the base scores.
    tolerance_line_ : matplotlib Line2D or None
        Horizontal line at the tolerance (shared by the displays drawn on the
        same axes with the same tolerance).
    band_ : matplotlib PolyCollection or None
        Certificate band between the tolerance and the certificate (None
        without a finite certificate).
    ax_ : matplotlib Axes
        Axes with the plot.
    figure_ : matplotlib Figure
        Figure containing the plot.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skfairlayer.plotting import StreamingGapDisplay
    >>> rng = np.random.default_rng(0)
    >>> group = rng.integers(0, 2, 300)
    >>> outputs = rng.uniform(size=300)
    >>> disp = StreamingGapDisplay.from_predictions(outputs, group, tolerance=0.05)
    >>> disp.tolerance_line_.get_ydata()[0]
    0.05
    """

    def __init__(
        self, *, n_seen, gaps, tolerance=None, certificate=None, raw_gaps=None, name=None
    ):
        self.n_seen = n_seen
        self.gaps = gaps
        self.tolerance = tolerance
        self.certificate = certificate
        self.raw_gaps = raw_gaps
        self.name = name

    def plot(self, ax=None, *, name=None, log_x=False, **kwargs):
        """Plot the pooled gap over time.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to plot on; a new figure is created when None.
        name : str, default=None
            Legend label of the gap curve; overrides ``name``.
        log_x : bool, default=False
            Whether the time axis is logarithmic.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot` for
            the gap curve.

        Returns
        -------
        display : StreamingGapDisplay
            Object that stores the computed values and the artists.
        """
        self.figure_, self.ax_ = _check_ax(ax, "StreamingGapDisplay")
        t = np.asarray(self.n_seen, dtype=np.float64)
        name = self.name if name is None else name
        line_kwargs = {"label": name or "pooled gap of the served outputs"}
        line_kwargs.update(kwargs)
        (self.line_,) = self.ax_.plot(t, np.asarray(self.gaps, dtype=np.float64), **line_kwargs)
        self.raw_line_ = None
        if self.raw_gaps is not None:
            (self.raw_line_,) = self.ax_.plot(
                t, np.asarray(self.raw_gaps, dtype=np.float64), color="0.6", linewidth=1,
                label="pooled gap of the base scores",
            )
        self.tolerance_line_ = None
        if self.tolerance is not None:
            tol = float(self.tolerance)
            # several streams on one axes share one tolerance line per value
            shared = [
                line for line in self.ax_.get_lines()
                if line.get_gid() == "tolerance" and line.get_ydata()[0] == tol
            ]
            self.tolerance_line_ = shared[0] if shared else self.ax_.axhline(
                tol, color="k", linestyle="--", linewidth=1, label="tolerance", gid="tolerance"
            )
        self.band_ = None
        upper = None if self.certificate is None else np.asarray(self.certificate, dtype=float)
        if upper is not None and np.isfinite(upper).any():  # inf: no certificate (yet)
            upper = np.where(np.isfinite(upper), upper, np.nan)
            lower = np.full_like(upper, 0.0 if self.tolerance is None else float(self.tolerance))
            self.band_ = self.ax_.fill_between(
                t, lower, np.maximum(upper, lower), color=self.line_.get_color(), alpha=0.15,
                label="certificate" if name is None else f"certificate ({name})",
            )
        if log_x:
            self.ax_.set_xscale("log")
        self.ax_.set_xlabel("rows served")
        self.ax_.set_ylabel("pooled parity gap")
        self.ax_.set_ylim(bottom=0)
        self.ax_.legend(loc="upper right")
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        *,
        sensitive_features=None,
        batch_size=1,
        output="proba",
        reset=True,
        show_raw=True,
        name=None,
        ax=None,
        log_x=False,
        **kwargs,
    ):
        """Serve ``X`` to a layer's stream in batches and plot its live report after each one.

        Rows of ``X`` are served in order, ``batch_size`` at a time, by
        ``partial_predict_proba`` (``output="proba"``) or ``partial_predict``
        (``output="decisions"``). After each batch the estimator's
        ``stream_report(output)`` gives the pooled gap and the certificate.
        This *serves* the rows: the estimator's stream state changes exactly
        as if they had been served by the caller.

        Parameters
        ----------
        estimator : FairnessLayerClassifier
            A fitted layer with the streaming methods.
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Rows in serving order.
        sensitive_features : array-like of shape (n_samples,), default=None
            Groups, when the layer does not read them from ``X``.
        batch_size : int, default=1
            Rows per call.
        output : {"proba", "decisions"}, default="proba"
            Which stream to serve and plot.
        reset : bool, default=True
            Whether the served copy starts at an empty stream (``reset_stream()``)
            or continues the estimator's stream. The display serves a deep copy
            of ``estimator``: the estimator itself never changes.
        show_raw : bool, default=True
            Whether to also draw the running gap of the base model's outputs
            (probabilities, or decisions at ``threshold``); needs ``reset=True``.
        name : str, default=None
            Legend label of the gap curve.
        ax : matplotlib Axes, default=None
            Axes to plot on.
        log_x : bool, default=False
            Whether the time axis is logarithmic.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        display : StreamingGapDisplay
            The plotted display.
        """
        for method in ("partial_predict_proba", "partial_predict", "stream_report", "reset_stream"):
            if not callable(getattr(estimator, method, None)):
                raise TypeError(
                    "StreamingGapDisplay.from_estimator needs a fitted layer with the streaming "
                    f"methods (partial_predict_proba, stream_report, ...). Got {estimator!r} "
                    "instead; use from_predictions for outputs served by other means."
                )
        if output not in ("proba", "decisions"):
            raise ValueError(f"output must be 'proba' or 'decisions'. Got {output!r} instead.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Got {batch_size!r} instead.")
        groups, method_kwargs = _groups_and_kwargs(estimator, X, sensitive_features)
        estimator = copy.deepcopy(estimator)  # serve a copy: the display never changes its input
        serve = (
            estimator.partial_predict_proba if output == "proba" else estimator.partial_predict
        )
        if reset:
            estimator.reset_stream()
        n = X.shape[0]
        n_seen, gaps, certificate = [], [], []
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            X_batch = X.iloc[rows] if hasattr(X, "iloc") else X[rows]
            batch_kwargs = {
                key: (value.iloc[rows] if hasattr(value, "iloc") else np.asarray(value)[rows])
                for key, value in method_kwargs.items()
            }
            serve(X_batch, **batch_kwargs)
            report = estimator.stream_report(output)
            n_seen.append(report.n_served)
            # counts: one array, or one per attribute with marginal groups.
            per_attribute = report.counts if isinstance(report.counts, list | tuple) else [
                report.counts
            ]
            served_groups = max(np.count_nonzero(np.asarray(c) > 0) for c in per_attribute)
            gaps.append(report.gap if served_groups >= 2 else np.nan)
            certificate.append(report.certificate)
        raw = None
        if show_raw and reset:
            params = _layer_params(estimator)
            base = estimator.estimator_.predict_proba(_base_input(X, params))
            base = _positive_column(base, estimator.classes_, None)
            if output == "decisions":
                base = (base >= params.get("threshold", 0.5)).astype(np.float64)
            raw = running_gap(base, groups)[0][np.asarray(n_seen) - 1]
        disp = cls(
            n_seen=np.asarray(n_seen), gaps=np.asarray(gaps),
            tolerance=_layer_params(estimator).get("tolerance"),
            certificate=np.asarray(certificate, dtype=np.float64), raw_gaps=raw, name=name,
        )
        return disp.plot(ax=ax, log_x=log_x, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        outputs,
        sensitive_features,
        *,
        tolerance=None,
        raw_scores=None,
        certificate=None,
        name=None,
        ax=None,
        log_x=False,
        **kwargs,
    ):
        """Plot the running pooled gap of outputs served in order.

        Parameters
        ----------
        outputs : array-like of shape (n_samples,) or (n_samples, n_classes)
            Served outputs in serving order.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
            Group of each row.
        tolerance : float, default=None
            The tolerance, drawn as a horizontal line.
        raw_scores : array-like of shape (n_samples,), default=None
            Base scores of the same rows, whose pooled gap is drawn for reference.
        certificate : array-like of shape (n_samples,) or float, default=None
            Upper bound on the pooled gap after each row. A float ``C`` means
            ``tolerance + C / min_g N_g(T)`` (the shape of the primal-dual
            certificate), infinite while a group is unseen.
        name : str, default=None
            Legend label of the gap curve.
        ax : matplotlib Axes, default=None
            Axes to plot on.
        log_x : bool, default=False
            Whether the time axis is logarithmic.
        **kwargs : dict
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot`.

        Returns
        -------
        display : StreamingGapDisplay
            The plotted display.
        """
        gaps, min_counts = running_gap(outputs, sensitive_features)
        n = gaps.shape[0]
        raw = None
        if raw_scores is not None:
            n_raw = np.asarray(raw_scores).shape[0]
            if n_raw != n:
                raise ValueError(f"raw_scores must have {n} rows, like outputs. Got {n_raw} instead.")
            raw = running_gap(raw_scores, sensitive_features)[0]
        if isinstance(certificate, Real):
            if tolerance is None:
                raise ValueError(
                    "A constant certificate C means tolerance + C / min_g N_g(T): pass the "
                    "tolerance too. Got tolerance=None instead."
                )
            with np.errstate(divide="ignore"):
                certificate = float(tolerance) + float(certificate) / min_counts
        elif certificate is not None:
            certificate = np.asarray(certificate, dtype=np.float64).reshape(-1)
            if certificate.shape[0] != n:
                raise ValueError(
                    f"certificate must have {n} entries, one per row. "
                    f"Got {certificate.shape[0]} instead."
                )
        disp = cls(
            n_seen=np.arange(1, n + 1), gaps=gaps, tolerance=tolerance,
            certificate=certificate, raw_gaps=raw, name=name,
        )
        return disp.plot(ax=ax, log_x=log_x, **kwargs)
