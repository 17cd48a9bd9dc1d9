"""What every fairness-layer estimator shares: parameters, fit, routing, tags, streaming.

An estimator here keeps parameters, fits its base, encodes groups
(:mod:`skfairlayer._groups`), fits one :class:`~skfairlayer._layer.FittedLayer`
and starts one stream; the front ends (classifier, regressor) only say what
the base's scores are and how outputs are returned.
"""

import sys
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, indexable
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.validation import check_is_fitted, validate_data

from ._criteria import CRITERIA, Criterion
from ._fine_tune import FineTuning, fine_tune
from ._groups import GroupEncoder, SensitiveColumns, resolve
from ._layer import FittedLayer
from ._sklearn_compat import (
    Interval,
    StrOptions,
    _check_method_params,
    _num_samples,
    _routing_enabled,
)
from ._stream_start import (
    STREAM_ALGORITHMS,
    STREAM_SUPPORTED,
    layer_stream,
    stream_unsupported,
)
from .exceptions import SmallGroupWarning, _plain

__all__ = ["FairnessLayerBase"]

_FAST_ROWS = 256  # batches up to this size take the streaming fast path
#: Bytes of ``X`` per call of the base on a large dense batch: its rows stay in cache while
#: the base scores them and the group column is read (see ``FairnessLayerBase._scored``).
_BLOCK_BYTES = 8 << 20
#: Fewest rows per call of the base when scoring in blocks (wider ``X``: one call; a model
#: that starts threads per call then still gets large calls).
_MIN_BLOCK_ROWS = 16384


class FairnessLayerBase(MetaEstimatorMixin, BaseEstimator):
    """Base class of the fairness-layer estimators (not for direct use)."""

    _parameter_constraints = {
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "sensitive_features": [None, str, Integral, list, tuple, callable],
        "sensitive_as_feature": ["boolean"],
        "criterion": [StrOptions(set(CRITERIA)), Criterion],
        "groups": [StrOptions({"intersectional", "marginal"})],
        "min_group_size": [None, Interval(Real, 0, None, closed="left")],
        "inference": [StrOptions({"batch", "fitted"})],
        "solver": [StrOptions({"auto", "exact", "osqp"})],
        "cv": [None, Interval(Integral, 2, None, closed="left"), "cv_object"],
        "fine_tune": ["boolean", FineTuning],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "stream_algorithm": [StrOptions(set(STREAM_ALGORITHMS))],
        "stream_step": [None, Interval(Real, 0, None, closed="neither")],
    }

    # ------------------------------------------------------------ front-end hooks
    def _default_base(self):
        raise NotImplementedError

    def _check_base(self, base):
        """Raise when ``base`` cannot serve as the base estimator."""

    def _check_target(self, y, n_samples):
        raise NotImplementedError

    def _scores(self, estimator, base_X):
        """The base's scores of ``base_X`` (what the layer projects)."""
        raise NotImplementedError

    def _layer_labels(self, y):
        """Labels of the fit set as the criterion reads them (class indices)."""
        return None

    def _make_layer(self):
        """The (unfitted) layer: criterion, tolerance, solver and, for regressors, bounds."""
        return FittedLayer(self.criterion, float(self.tolerance), solver=self.solver)

    # ------------------------------------------------------------ helpers
    def _base(self):
        return self._default_base() if self.estimator is None else self.estimator

    def _columns(self):
        return SensitiveColumns(
            self.sensitive_features, keep=self.sensitive_as_feature, owner=type(self).__name__
        )

    def _fine_tuning(self):
        if self.fine_tune is True:
            return FineTuning()
        return self.fine_tune or None

    def _prepare(self, X, sensitive_features):
        """Base scores and groupings of a batch (shared by the predict-like methods)."""
        check_is_fitted(self)
        _check_2d(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        base_X, raw_groups = self._columns().split(X, sensitive_features)
        n = _num_samples(base_X)
        if n == 0:
            raise ValueError("X is empty: at least one sample is required.")
        scores, raw_groups = self._scored(base_X, raw_groups)  # the base validates X first
        return scores, self._encoder.transform(resolve(raw_groups), n)

    def _scored(self, base_X, raw_groups):
        """The base's scores of ``base_X`` and the groups, a large dense batch in row blocks.

        Each block of rows is read from memory once: the base scores it and a
        strided group column of ``X`` is copied out while it is in cache (base
        predictions are row-wise). Faster than one call on the whole batch,
        whose passes each stream it from memory.
        """
        rows = _block_rows(base_X)
        if rows is None:
            return self._scores(self.estimator_, base_X), raw_groups
        column = isinstance(raw_groups, np.ndarray) and not raw_groups.flags.c_contiguous
        groups = np.empty(raw_groups.shape, raw_groups.dtype) if column else raw_groups
        scores = None
        for start in range(0, base_X.shape[0], rows):
            block = slice(start, start + rows)
            part = self._scores(self.estimator_, base_X[block])
            if scores is None:
                scores = np.empty((base_X.shape[0], *part.shape[1:]), dtype=part.dtype)
            scores[block] = part
            if column:
                groups[block] = raw_groups[block]
        return scores, groups

    # ------------------------------------------------------------ fit
    def _fit(self, X, y, sensitive_features, sample_weight, fit_params):
        base = self._base()
        self._check_base(base)
        tuning = self._fine_tuning()
        if tuning is not None:
            _check_fine_tunable(base, tuning)
        _check_2d(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        columns = self._columns()
        base_X, raw_groups = columns.split(X, sensitive_features)
        n = _num_samples(base_X)
        y = self._check_target(y, n)
        if sensitive_features is not None and not _routing_enabled() and _in_model_selection():
            raise ValueError(_SEARCH_MESSAGE.format(name=type(self).__name__))
        if _routing_enabled():
            routed = process_routing(self, "fit", sample_weight=sample_weight, **fit_params)
            base_params = routed.estimator.fit
        else:
            base_params = dict(fit_params)
            if sample_weight is not None:
                base_params["sample_weight"] = sample_weight
        self.estimator_ = self._fit_base(base, base_X, y, base_params, columns)
        self._set_fitted_base()
        self._encoder = GroupEncoder(self.groups)
        groupings = self._encoder.fit_transform(resolve(raw_groups), n)
        self.groups_ = self._encoder.labels_
        codes = [g.codes for g in groupings]
        fine_codes = codes if self.groups == "marginal" else codes[0]
        self.fine_tune_history_ = None
        if tuning is not None:
            self.fine_tune_history_ = self._fine_tune(
                self.estimator_, base_X, y, fine_codes, sample_weight, tuning
            )
        scores = self._layer_scores(base, base_X, y, base_params, fine_codes, sample_weight)
        labels = self._layer_labels(y)
        self.layer_ = self._make_layer()
        self.layer_.fit(scores, groupings, labels)
        self._warn_small_groups(self.layer_.small_groups(self.min_group_size))
        self.fit_gap_ = self.layer_.fit_gap
        self._fast_index = self._encoder.index()
        self.stream_ = None
        if self._stream_unsupported() is None:
            self.stream_ = self._start_stream(scores, groupings)
        return self

    def _start_stream(self, scores, groupings):
        """The stream started from the fitted layer (a front end may change units)."""
        return layer_stream(self.layer_, scores, groupings, self.groups_, self._stream_config())

    def _set_fitted_base(self):
        """Copy what the front end needs from the fitted base (e.g. ``classes_``)."""

    def _fit_base(self, base, base_X, y, params, columns):
        if isinstance(base, FrozenEstimator):
            return base
        try:
            return clone(base).fit(base_X, y, **params)
        except (ValueError, TypeError) as exc:
            hint = _column_hint(exc, columns)
            if hint is None:
                raise
            raise type(exc)(f"{exc}\n{hint}") from exc

    def _fine_tune(self, estimator, base_X, y, codes, sample_weight, tuning):
        return fine_tune(
            estimator, base_X, y, codes,
            classes=getattr(self, "classes_", None),
            tolerance=float(self.tolerance), criterion=self.criterion, solver=self.solver,
            sample_weight=sample_weight, params=tuning.settings(),
            random_state=self.random_state, verbose=self.verbose,
        )

    def _layer_scores(self, base, base_X, y, params, codes, sample_weight):
        """Scores the fitted rules learn from: out-of-fold with ``cv``, else in-sample."""
        if self.cv is None or isinstance(base, FrozenEstimator):
            return self._scores(self.estimator_, base_X)
        cv = self.cv
        if isinstance(cv, Integral) and hasattr(self, "classes_"):
            smallest = int(np.unique(y, return_counts=True)[1].min())
            cv = min(int(cv), smallest)
            if cv < 2:  # a class with a single row: no out-of-fold scores possible
                return self._scores(self.estimator_, base_X)
        splitter = check_cv(cv, y, classifier=hasattr(self, "classes_"))
        (base_X,) = indexable(base_X)
        scores = None
        tuning = self._fine_tuning()
        for train, test in splitter.split(base_X, y):
            X_train = _safe_indexing(base_X, train)
            fold_params = _check_method_params(base_X, params, train)
            est = clone(base).fit(X_train, y[train], **fold_params)
            if tuning is not None:
                fold_codes = (
                    [c[train] for c in codes] if isinstance(codes, list) else codes[train]
                )
                weight = None if sample_weight is None else np.asarray(sample_weight)[train]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SmallGroupWarning)
                    self._fine_tune(est, X_train, y[train], fold_codes, weight, tuning)
            part = self._scores(est, _safe_indexing(base_X, test))
            if scores is None:
                scores = np.empty((len(y),) + part.shape[1:])
            scores[test] = part
        return scores

    def _warn_small_groups(self, small):
        if not small:
            return
        smallest = {}  # group label -> (effective size, statistic)
        for name, gid, size in small:
            if self.groups == "marginal":
                j = int(name.split(":")[0].split()[-1]) if name.startswith("attribute") else 0
                label = self.groups_[j][gid]
            else:
                label = self.groups_[gid]
            label = _plain(label)
            if label not in smallest or size < smallest[label][0]:
                smallest[label] = (size, name)
        described = [
            f"{label!r} ({size:.3g} rows in {name})"
            for label, (size, name) in list(smallest.items())[:10]
        ]
        more = f" and {len(smallest) - 10} more" if len(smallest) > 10 else ""
        several = self._encoder.n_attributes_ > 1 and self.groups != "marginal"
        remedy = "merging small groups" + (" or groups='marginal'" if several else "")
        warnings.warn(
            f"Sensitive group(s) {', '.join(described)}{more} have fewer than "
            f"{self.min_group_size:g} (effective) rows at fit: their statistics are mostly "
            f"noise, so parity on them says little about new data. Consider {remedy} "
            "(min_group_size=None silences this warning).",
            SmallGroupWarning,
            stacklevel=4,
        )

    # ------------------------------------------------------------ streaming
    def _stream_config(self):
        step = None if self.stream_step is None else float(self.stream_step)
        return (self.stream_algorithm, float(self.tolerance), step,
                float(getattr(self, "threshold", 0.5)))

    def _fitted_stream(self):
        """The fitted stream (raises, saying why, when the problem cannot stream)."""
        if "layer_" not in self.__dict__:  # the full check only when it would fail (hot path)
            check_is_fitted(self)
        state = getattr(self, "stream_", None)
        if state is None:
            raise ValueError(
                f"Streaming is not available for criterion {self.criterion!r} here: "
                f"{self._stream_unsupported()} {STREAM_SUPPORTED}"
            )
        return state

    def _stream(self):
        """The fitted stream, checked against the current parameters."""
        state = self._fitted_stream()
        if state.config != self._stream_config():
            raise ValueError(
                "The streaming parameters (stream_algorithm, tolerance, stream_step, threshold) "
                "changed since the stream started: call reset_stream() to start a new stream "
                f"with them. Got {self._stream_config()!r} instead of {state.config!r}."
            )
        return state

    def _stream_unsupported(self):
        return stream_unsupported(
            self.criterion, self.layer_.n_classes, len(self.layer_.group_sizes),
            self.stream_algorithm,
        )

    def _stream_inputs(self, X, sensitive_features):
        """Base scores and group codes of a batch; a fast path for small numpy batches."""
        fast = self._fast_inputs(X, sensitive_features)
        if fast is not None:
            return fast
        scores, groupings = self._prepare(X, sensitive_features)
        codes = [g.codes for g in groupings]
        return scores, (codes[0] if len(codes) == 1 else codes)

    def _fast_inputs(self, X, sensitive_features):
        """Skip the generic validation for a small numeric ndarray (None: the full path)."""
        split = self._fast_split(X, sensitive_features)
        if split is None:
            return None
        base_X, codes = split
        return self._scores(self.estimator_, base_X, checked=False), codes  # the stream checks

    def _fast_split(self, X, sensitive_features):
        """The base's input and the group codes of a small numeric ndarray whose groups are
        all known, without the generic validation (None: the full path)."""
        index = self.__dict__.get("_fast_index")
        if (
            index is None
            or type(X) is not np.ndarray
            or X.ndim != 2
            or not 0 < X.shape[0] <= _FAST_ROWS
            or X.dtype.kind not in "biuf"
            or X.shape[1] != self.__dict__.get("n_features_in_", -1)
            or "feature_names_in_" in self.__dict__
        ):
            return None
        spec = self.sensitive_features
        if isinstance(spec, list | tuple) and len(spec) == 1:
            spec = spec[0]
        if spec is None:
            if sensitive_features is None or np.shape(sensitive_features) != (X.shape[0],):
                return None
            values, base_X = np.asarray(sensitive_features).tolist(), X
        else:
            if (
                sensitive_features is not None
                or not isinstance(spec, Integral)
                or isinstance(spec, bool)
                or not -X.shape[1] <= spec < X.shape[1]
            ):
                return None
            j = int(spec) % X.shape[1]
            values = X[:, j].tolist()
            base_X = X if self.sensitive_as_feature else np.delete(X, j, axis=1)
        try:
            return base_X, [index[v] for v in values]
        except (KeyError, TypeError):
            return None

    def _serve_row(self, output, X, sensitive_features):
        """One row of a numeric ndarray served with Python numbers from the base's scores
        (a front end's ``_row_scores(base_X)``) to the engine's output
        (:meth:`Stream.serve_one`): what it served, or None (not such a row, no
        ``_row_scores``, or a stream that serves batches only; nothing done)."""
        if not hasattr(self, "_row_scores") or type(X) is not np.ndarray or X.shape[0] != 1:
            return None
        state = self._stream()
        if not state.serves_rows(output):
            return None
        split = self._fast_split(X, sensitive_features)
        if split is None:
            return None
        base_X, codes = split
        return state.serve_one(output, self._row_scores(base_X), codes[0])

    def _serve(self, output, X, sensitive_features):
        state = self._stream()
        scores, codes = self._stream_inputs(X, sensitive_features)
        return state.serve(output, scores, codes)

    def reset_stream(self):
        """Start a new stream: forget every row served by the ``partial_*`` methods.

        The new stream starts again from the fit with the current streaming
        parameters. :meth:`fit` also starts a new stream. Do not call it while
        other threads are serving rows: they could serve into the stream being
        discarded.

        Returns
        -------
        self : object
            The estimator, with an empty stream.
        """
        self.stream_ = self._fitted_stream().restarted(self._stream_config())
        return self

    def stream_report(self, output="proba"):
        """Live report of a stream: counts, pooled means and gap, certificate, duals.

        Parameters
        ----------
        output : {"proba", "decisions"}, default="proba"
            The stream of served outputs (pooled means) or of served decisions
            (selection rates).

        Returns
        -------
        report : StreamReport
            Per-group ``counts`` and pooled ``means``, the pooled ``gap``, the
            ``certificate`` (an upper bound on the gap, valid now; ``inf`` for
            the paper's algorithm), the ``duals``, and ``n_served`` /
            ``n_adjusted`` rows.
        """
        return self._fitted_stream().report(output)

    # ------------------------------------------------------------ sklearn plumbing
    def get_metadata_routing(self):
        """Get metadata routing of this object.

        Returns
        -------
        routing : MetadataRouter
            Routing of ``fit`` metadata to the base estimator and of
            ``sensitive_features`` to this estimator.
        """
        return (
            MetadataRouter(owner=self)
            .add_self_request(self)
            .add(
                estimator=self._base(),
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        base_tags = self._base().__sklearn_tags__()
        reads_columns = self._columns().reads_X
        tags.input_tags.sparse = base_tags.input_tags.sparse
        tags.input_tags.allow_nan = base_tags.input_tags.allow_nan
        tags.input_tags.string = reads_columns
        return tags


_SEARCH_MESSAGE = (
    "{name} received sensitive_features= as a fit parameter inside a cross-validation or "
    "search, with metadata routing off: scoring would call predict/score without the groups "
    "and every score would be NaN. Either read the groups from a column of X "
    "(sensitive_features='<column>' in the constructor), or enable metadata routing "
    "(sklearn.set_config(enable_metadata_routing=True)) so the groups reach scoring too."
)


def _in_model_selection():
    """Whether a model-selection routine (cross-validation, a search) is fitting us."""
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code.co_name == "_fit_and_score" and frame.f_globals.get(
            "__name__", ""
        ).startswith("sklearn.model_selection"):
            return True
        frame = frame.f_back
    return False


def _column_hint(exc, columns):
    """A remedy for a base that failed on the sensitive columns, or None."""
    if not columns.reads_X:
        return None
    names = [c for c in columns.columns if isinstance(c, str)]
    text = str(exc)
    if not columns.keep and any(repr(n) in text or n in text for n in names):
        return (
            f"The base estimator did not get the sensitive column(s) {columns.spec!r}: "
            "sensitive_as_feature=False drops them from its input. Pass "
            "sensitive_as_feature=True to keep them as features."
        )
    if columns.keep and ("could not convert" in text or "string" in text.lower()):
        return (
            f"The base estimator sees the sensitive column(s) {columns.spec!r} as features "
            "(sensitive_as_feature=True). Encode them in its preprocessing (e.g. a "
            "OneHotEncoder in a ColumnTransformer), or pass sensitive_as_feature=False to "
            "drop them from its input."
        )
    return None


def _check_fine_tunable(base, tuning):
    """Fail before fitting when fine-tuning cannot run on ``base``."""
    from ._differentiable import check_differentiable

    if isinstance(base, FrozenEstimator):
        raise ValueError(
            "fine_tune updates the base estimator's weights, but a FrozenEstimator must "
            "not change. Pass the unfrozen estimator (it is cloned, never modified) or set "
            f"fine_tune=False. Got {base!r} instead."
        )
    check_differentiable(base)
    tuning.settings()


def _block_rows(X):
    """Rows per block for scoring ``X`` in blocks, or None for one call (small, wide,
    sparse, a DataFrame, or not stored by rows)."""
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.flags.c_contiguous):
        return None
    rows = _BLOCK_BYTES // max(X.shape[1] * X.itemsize, 1)
    return rows if rows >= _MIN_BLOCK_ROWS and X.shape[0] >= 2 * rows else None


def _check_2d(X):
    if hasattr(X, "iloc") and getattr(X, "ndim", 2) == 1:
        raise ValueError(
            "X is a single row as a pandas Series; pass a one-row DataFrame instead, e.g. "
            "X.iloc[[i]] rather than X.iloc[i] (or series.to_frame().T)."
        )
    if getattr(X, "ndim", 2) == 1 or (isinstance(X, list) and X and np.ndim(X[0]) == 0):
        raise ValueError(
            "Expected a 2D array for X, got a 1D array instead. Reshape your data with "
            "array.reshape(-1, 1) for a single feature or array.reshape(1, -1) for a single "
            "sample."
        )
