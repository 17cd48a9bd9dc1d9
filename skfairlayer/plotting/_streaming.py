"""The running parity gap of a stream (:func:`running_gap`, :class:`StreamingGapDisplay`)."""

import copy
from numbers import Integral, Real

import numpy as np

from ._common import (
    _base_input,
    _check_ax,
    _codes,
    _groups_and_kwargs,
    _layer_params,
    _positive_column,
)

__all__ = ["StreamingGapDisplay", "running_gap"]


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
