"""Score distributions per group before and after the layer (:class:`GroupScoreDisplay`)."""

from numbers import Integral

import numpy as np

from ._common import (
    _base_input,
    _codes,
    _group_means,
    _groups_and_kwargs,
    _import_pyplot,
    _label,
    _layer_params,
    _positive_column,
)

__all__ = ["GroupScoreDisplay"]


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
