"""FairnessLayerClassifier: a scikit-learn meta-estimator with a parity projection on its output."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping, process_routing
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    assert_all_finite,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._decisions import apply_thresholds, parity_decisions
from ._differentiable import check_differentiable
from ._fine_tune import check_fine_tune_params, fine_tune
from ._multiclass_decisions import affine_decisions, class_offsets
from ._sklearn_compat import (
    HasMethods,
    Interval,
    StrOptions,
    _fit_context,
    _num_samples,
    _routing_enabled,
)
from ._solvers._simplex import project_simplex_rows
from ._validation import check_scores, encode_groups, encode_marginal
from .constraints import (
    CRITERIA,
    SMALL_GROUP_SIZE,
    Criterion,
    DemographicParity,
    EqualizedOdds,
    EqualOpportunity,
    MeanResidual,
    ProjectionProblem,
    build_problem,
    make_criterion,
    small_groups,
)
from .exceptions import InfeasibleProblemError, SmallGroupWarning
from .online import ALGORITHMS as _STREAM_ALGORITHMS
from .online import CriterionStreamState, StreamState
from .projection import group_shifts, solve_problem

_STREAM_SUPPORTED = (
    "Streaming (partial_predict_proba, partial_predict, stream_report) supports "
    "criterion='demographic_parity' (binary or multiclass), 'equal_opportunity' (binary, or "
    "multiclass with EqualOpportunity(positive_class=...)) and 'mean_residual', with "
    "intersectional or marginal groups."
)

__all__ = ["FairnessLayerClassifier"]


def _has_predict_proba(estimator):
    return hasattr(estimator, "predict_proba")


class FairnessLayerClassifier(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
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
    they served since :meth:`fit` or :meth:`reset_stream` stays within a
    certificate that holds at every row and equals ``tolerance`` once each
    group has a few hundred rows; :meth:`stream_report` reports it live. This
    holds for demographic parity (binary or multiclass), equal opportunity
    (binary, or one class of a multiclass target) and mean residual, with
    intersectional or marginal groups; the other criteria raise.

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
        Where the groups come from. Column(s) of ``X`` holding the sensitive
        features: names for a DataFrame, positions for an array; or a callable
        ``f(X) -> groups`` (e.g. binning an age column; the base then sees all
        of ``X``). Reading groups from ``X`` lets scikit-learn scorers (which
        call ``predict(X)`` with no metadata) and
        :class:`~sklearn.model_selection.GridSearchCV` work without metadata
        routing. ``None`` means the groups are passed to each method as the
        ``sensitive_features=`` keyword instead.
    sensitive_as_feature : bool, default=False
        Whether the base estimator also sees the sensitive column(s) named by
        ``sensitive_features`` (by default they are dropped before the base).
    criterion : str or Criterion, default="demographic_parity"
        The parity criterion: ``"demographic_parity"`` (equal mean probability
        per group; per class for multiclass), ``"equal_opportunity"`` (equal
        mean probability among the positives), ``"equalized_odds"`` (among the
        positives and among the negatives; per true class for multiclass),
        ``"mean_residual"`` (each group's mean probability within
        ``tolerance`` of its mean label), or a
        :class:`~skfairlayer.constraints.Criterion` instance. Criteria
        conditioned on the label use ``y`` at fit (``fit_gap_``) and, at
        inference where labels do not exist, the base posteriors as plug-in
        weights — exact in expectation when the base is calibrated within each
        group (wrap it in :class:`~sklearn.calibration.CalibratedClassifierCV`
        when unsure).
    groups : {"intersectional", "marginal"}, default="intersectional"
        With several sensitive attributes: ``"intersectional"`` makes every
        combination of values a group (as fairlearn does); ``"marginal"``
        applies the criterion to each attribute separately (as the paper
        does), which constrains fewer, larger groups.
    min_group_size : float or None, default=30
        :meth:`fit` warns (:class:`~skfairlayer.exceptions.SmallGroupWarning`)
        naming the groups with fewer (effective) training rows than this in
        some statistic of the criterion — e.g. few positives for equal
        opportunity — where parity is mostly noise. ``None`` disables the
        check. The layer still works on such groups.
    inference : {"batch", "fitted"}, default="batch"
        ``"batch"``: each call to :meth:`predict_proba` / :meth:`predict`
        meets parity exactly on its batch; a batch with fewer than two groups
        (a single row, say) gets the per-group shifts / thresholds learned on
        the training set instead. ``"fitted"``: always apply the training
        shifts / thresholds row by row (parity then holds on the training set
        and approximately on data distributed like it).
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
    fine_tune : bool, default=False
        Whether to fine-tune the fitted base *through* the layer (the paper's
        F-Layer): starting from the fitted base, minimise the log-loss of the
        projected probabilities by minibatch Adam, back-propagating through
        the projection with its closed-form Jacobian. Supported bases:
        :class:`~sklearn.linear_model.LogisticRegression`,
        :class:`~sklearn.linear_model.SGDClassifier` with ``loss="log_loss"``,
        :class:`~sklearn.neural_network.MLPClassifier`, one of these as the
        last step of a :class:`~sklearn.pipeline.Pipeline` (earlier steps stay
        fixed), or any model implementing the fine-tuning protocol (methods
        ``fine_tune_parameters``, ``fine_tune_forward``,
        ``set_fine_tune_parameters``; see the user guide). Every criterion,
        binary or multiclass targets and either ``groups`` mode: each
        minibatch is projected as the fit-time layer projects the training set
        (label-based criteria with the training labels). ``estimator_``
        stays the same class, with updated weights. Off by default: on our
        benchmarks (Adult and synthetic data, logistic regression and MLP
        bases) it lowered the log-loss and raised the ROC AUC of the projected
        probabilities, but left the accuracy of the parity decisions unchanged
        within noise, for several seconds of extra training (see the
        fine-tuning pages of the user guide).
    fine_tune_params : dict, default=None
        Settings of the fine-tuning loop; keys and defaults:
        ``max_epochs=50``, ``learning_rate=3e-3`` (Adam), ``batch_size=1024``
        (batches are stratified so that each carries every group of every
        attribute, and every (group, label) cell for label-conditioned
        criteria),
        ``validation_fraction=0.1`` (early stopping on the projected
        validation log-loss; the best parameters, possibly the starting ones,
        are kept), ``n_iter_no_change=5``, ``tol=1e-4``, ``margin=1e-6``
        (outputs stay in ``[margin, 1 - margin]`` during training so the loss
        stays finite), ``label_free=False`` (label-conditioned criteria:
        project each minibatch with the training labels, as the fit-time
        projection does; ``True`` uses their plug-in form, the layer applied
        at prediction).
    random_state : int, RandomState instance or None, default=None
        Seed of the fine-tuning's validation split and batch shuffles (it is
        not passed to the base estimator). Pass an int for reproducible
        fine-tuning.
    verbose : int, default=0
        When positive, fine-tuning prints one line per epoch: training and
        validation projected log-loss, and the criterion's gap of the base
        outputs.
    stream_algorithm : {"pooled", "paper"}, default="pooled"
        Algorithm of :meth:`partial_predict_proba` / :meth:`partial_predict`.
        ``"pooled"``: a primal-dual on the pooled constraints started from the
        fitted shifts and thresholds, with an exact safeguard, so that the
        pooled gap of everything served meets a certificate at every row, at
        any batch size (see :mod:`skfairlayer.online`). ``"paper"``: the
        paper's online primal-dual (penalised per-batch projection, dual step
        ``eta_0 / sqrt(t)``, exact projection of batches of at least 64 rows),
        for reproduction (binary demographic parity with intersectional
        groups only); it has no finite-time guarantee and with one row per
        batch it corrects nothing.
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
    shifts_ : ndarray of shape (n_groups,) or None
        Binary demographic parity (intersectional groups): per-group shift
        subtracted from the base probability by the projection of the training
        set; used for batches with fewer than two groups. ``None`` otherwise
        (see ``family_shifts_``).
    thresholds_ : ndarray of shape (n_groups,) or None
        Binary demographic parity: per-group score thresholds of the parity
        decisions on the training set. ``None`` otherwise (see
        ``decision_shifts_``).
    family_shifts_ : list of ndarray or None
        Other criteria, multiclass or marginal groups: per family of the
        criterion's plug-in (label-free) form, a coefficient per group; a row's
        output for the family's class is shifted by the coefficient times the
        row's plug-in weight (1 for demographic parity, its posterior of the
        conditioning class for equal opportunity / equalized odds). Learned on
        the training set and used with ``inference="fitted"`` and for batches
        with fewer than two groups (custom affine rows are then not enforced).
        ``None`` for binary demographic parity.
    decision_shifts_ : list of ndarray of shape (n_groups, n_classes) or None
        Other criteria, multiclass or marginal groups: per grouping (one, or
        one per attribute with ``groups="marginal"``), an offset per group and
        class; a row takes the class of largest offset probability (binary:
        columns ``[1 - s, s]``). They reproduce the class counts per group of
        the parity decisions of the training set, and decide with
        ``inference="fitted"`` and for batches with fewer than two groups.
    fit_gap_ : float
        Largest gap of the projected training probabilities; for criteria
        conditioned on the label, measured with the training labels.
    fine_tune_history_ : dict or None
        With ``fine_tune=True``, per epoch (``0`` is the plain fitted base)
        the projected training and validation log-loss and the validation
        gap of the base outputs in the criterion (label-based), and
        ``best_epoch``, the epoch whose
        weights ``estimator_`` holds. ``None`` otherwise.
    n_features_in_ : int
        Number of features seen during fit (including sensitive columns).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    stream_ : skfairlayer.online.StreamState or None
        State of the stream served by :meth:`partial_predict_proba` and
        :meth:`partial_predict`, started at the end of :meth:`fit` (fitted group
        shares, shifts and thresholds; for other criteria, multiclass targets
        and marginal groups a :class:`~skfairlayer.online.CriterionStreamState`
        started from ``family_shifts_`` and ``decision_shifts_``). ``None`` for
        criteria that cannot stream (equalized odds, equal opportunity over
        every class, custom criteria). Read it through :meth:`stream_report`.

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
        "estimator": [None, HasMethods(["fit", "predict_proba"])],
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "sensitive_features": [None, str, Integral, list, tuple, callable],
        "sensitive_as_feature": ["boolean"],
        "criterion": [StrOptions(set(CRITERIA)), Criterion],
        "groups": [StrOptions({"intersectional", "marginal"})],
        "min_group_size": [None, Interval(Real, 0, None, closed="left")],
        "inference": [StrOptions({"batch", "fitted"})],
        "decision": [StrOptions({"parity", "threshold"})],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "solver": [StrOptions({"auto", "exact", "osqp"})],
        "fine_tune": ["boolean"],
        "fine_tune_params": [None, dict],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "stream_algorithm": [StrOptions(set(_STREAM_ALGORITHMS))],
        "stream_step": [None, Interval(Real, 0, None, closed="neither")],
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
        sensitive_as_feature=False,
        criterion="demographic_parity",
        groups="intersectional",
        min_group_size=SMALL_GROUP_SIZE,
        inference="batch",
        decision="parity",
        threshold=0.5,
        solver="auto",
        fine_tune=False,
        fine_tune_params=None,
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
        self.decision = decision
        self.threshold = threshold
        self.solver = solver
        self.fine_tune = fine_tune
        self.fine_tune_params = fine_tune_params
        self.random_state = random_state
        self.verbose = verbose
        self.stream_algorithm = stream_algorithm
        self.stream_step = stream_step

    # ------------------------------------------------------------------ helpers
    def _base(self):
        return LogisticRegression() if self.estimator is None else self.estimator

    def _column_spec(self):
        spec = self.sensitive_features
        if spec is None:
            return None
        return list(spec) if isinstance(spec, (list, tuple)) else [spec]

    def _split(self, X, sensitive_features):
        """Return (X for the base, raw sensitive features) after checking their source."""
        if callable(self.sensitive_features):
            if sensitive_features is not None:
                raise ValueError(
                    "The sensitive features are given twice: the constructor derives them from X "
                    "with a callable, and sensitive_features= was also passed. Use one of the two."
                )
            return X, _Deferred(self.sensitive_features, X)
        columns = self._column_spec()
        if columns is None:
            if sensitive_features is None:
                raise ValueError(
                    "FairnessLayerClassifier needs the sensitive features: pass "
                    "sensitive_features=<array of groups> to this method, or set the "
                    "constructor parameter sensitive_features=<column name(s) or index(es) of X>."
                )
            return X, sensitive_features
        if sensitive_features is not None:
            raise ValueError(
                "The sensitive features are given twice: the constructor reads them from "
                f"column(s) {self.sensitive_features!r} of X, and sensitive_features= was also "
                "passed. Use one of the two."
            )
        if hasattr(X, "iloc"):
            if all(isinstance(c, str) for c in columns):
                missing = [c for c in columns if c not in X.columns]
                if missing:
                    raise ValueError(
                        f"sensitive_features column(s) {missing!r} not found in X, whose columns "
                        f"are {list(X.columns)!r}."
                    )
                groups = X[columns]
                base_X = X if self.sensitive_as_feature else X.drop(columns=columns)
                return base_X, groups
            idx = self._check_indices(columns, X.shape[1])
            groups = X.iloc[:, idx]
            keep = [j for j in range(X.shape[1]) if j not in idx]
            return (X if self.sensitive_as_feature else X.iloc[:, keep]), groups
        if not all(isinstance(c, Integral) and not isinstance(c, bool) for c in columns):
            raise ValueError(
                "sensitive_features must be column indices when X is not a DataFrame. "
                f"Got {self.sensitive_features!r} instead."
            )
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(
                f"Expected a 2D array for X, got an array of shape {arr.shape} instead. "
                "Reshape your data with array.reshape(-1, 1) for a single feature."
            )
        idx = self._check_indices(columns, arr.shape[1])
        groups = arr[:, idx]
        base_X = arr if self.sensitive_as_feature else np.delete(arr, idx, axis=1)
        return base_X, groups

    def _check_indices(self, columns, n_columns):
        idx = [int(c) for c in columns]
        bad = [c for c in idx if not -n_columns <= c < n_columns]
        if bad:
            raise ValueError(
                f"sensitive_features index(es) {bad!r} out of range for X with {n_columns} columns."
            )
        return sorted({c % n_columns for c in idx})

    def _positive_scores(self, base_X):
        """Base scores: the positive-class probability (binary) or all class columns."""
        proba = check_scores(self.estimator_.predict_proba(base_X), name="base predict_proba")
        if proba.ndim == 1 or len(self.classes_) == 2:
            return proba if proba.ndim == 1 else proba[:, -1]
        return proba

    # ------------------------------------------------ criteria, groupings, fitted rules
    def _classic(self):
        """Binary demographic parity over intersectional groups: the exact per-group paths."""
        return (
            len(self.classes_) == 2
            and self.groups == "intersectional"
            and type(make_criterion(self.criterion)) is DemographicParity
        )

    def _encode(self, raw_groups, n, fit=False):
        """Group codes: one array (intersectional) or a list of arrays (marginal)."""
        if self.groups == "marginal":
            codes, groups = encode_marginal(
                raw_groups, groups=None if fit else self.groups_, n_samples=n
            )
        else:
            codes, groups = encode_groups(
                raw_groups, groups=None if fit else self.groups_, n_samples=n
            )
        if fit:
            self.groups_ = groups
        return codes

    def _groupings(self, codes):
        if self.groups == "marginal":
            groupings = [(c, len(g)) for c, g in zip(codes, self.groups_, strict=True)]
            names = [f"attribute {j}" for j in range(len(groupings))]
            return groupings, (names if len(names) > 1 else None)
        return [(codes, len(self.groups_))], None

    def _layer_problem(self, scores, codes, labels=None, keep_trivial=False):
        """The criterion's problem on a batch (global group codes; absent groups dropped)."""
        groupings, names = self._groupings(codes)
        return build_problem(
            self.criterion, scores, groupings, float(self.tolerance), labels=labels,
            names=names, keep_trivial=keep_trivial,
        )

    def _fitted_coefficients(self, problem_all, duals):
        """Per family, a coefficient per grouping group: shift = coef[g] * raw row weight."""
        coefs = []
        solvable = iter(duals)
        for fam in problem_all.families:
            n_grouping = self._grouping_size(fam)
            coef = np.zeros(n_grouping)
            if fam.n_groups >= 2:
                nu = next(solvable)
                coef[fam.ids()] = nu / fam.totals
            coefs.append(coef)
        return coefs

    def _grouping_size(self, fam):
        if self.groups == "marginal":
            return int(max(len(g) for g in self.groups_))
        return len(self.groups_)

    def _fitted_shift_matrix(self, scores, codes, coefs):
        """Row shifts ``sum_f coef_f[g_i] * raw_{f,i}`` at each family's column."""
        problem = self._layer_problem(scores, codes, keep_trivial=True)
        if len(problem.families) != len(coefs):
            raise ValueError(
                f"The criterion {self.criterion!r} built {len(problem.families)} families on this "
                f"batch but {len(coefs)} at fit; a Criterion must build the same families for "
                "every batch with the same output shape."
            )
        n = scores.shape[0]
        delta = np.zeros((n, 1 if scores.ndim == 1 else scores.shape[1]))
        for fam, coef in zip(problem.families, coefs, strict=True):
            inside = np.flatnonzero(fam.codes >= 0)
            if inside.size == 0:
                continue
            g = fam.codes[inside]
            raw = fam.weights[inside] * fam.totals[g]
            delta[inside, fam.column] += coef[fam.ids()[g]] * raw
        return delta[:, 0] if scores.ndim == 1 else delta

    def _fitted_proba(self, scores, codes):
        delta = self._fitted_shift_matrix(scores, codes, self.family_shifts_)
        if scores.ndim == 1:
            return np.clip(scores - delta, 0.0, 1.0)
        return project_simplex_rows(scores - delta)

    def _fitted_decisions(self, scores, codes):
        values = np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores.copy()
        groupings, _ = self._groupings(codes)
        for (c, _), offsets in zip(groupings, self.decision_shifts_, strict=True):
            values -= offsets[c]
        return np.argmax(values, axis=1)

    def _label_indices(self, y):
        return np.searchsorted(self.classes_, y)

    def _warn_small_groups(self, problem):
        if self.min_group_size is None:
            return
        small = small_groups(problem.families, float(self.min_group_size))
        if not small:
            return
        smallest = {}  # group label -> (effective size, statistic)
        for name, gid, size in small:
            if self.groups == "marginal":
                j = int(name.split(":")[0].split()[-1]) if name.startswith("attribute") else 0
                label = self.groups_[j][gid]
            else:
                label = self.groups_[gid]
            label = label.item() if hasattr(label, "item") else label
            if label not in smallest or size < smallest[label][0]:
                smallest[label] = (size, name)
        described = [
            f"{label!r} ({size:.3g} rows in {name})"
            for label, (size, name) in list(smallest.items())[:10]
        ]
        more = f" and {len(smallest) - 10} more" if len(smallest) > 10 else ""
        warnings.warn(
            f"Sensitive group(s) {', '.join(described)}{more} have fewer than "
            f"{self.min_group_size:g} (effective) rows at fit: their statistics are mostly "
            "noise, so parity on them says little about new data. Consider merging small "
            "groups or groups='marginal'.",
            SmallGroupWarning,
            stacklevel=3,
        )

    def _problem(self, scores, codes, n_groups):
        crit = make_criterion(self.criterion)
        families = crit.families(codes, n_groups, scores, float(self.tolerance))
        return ProjectionProblem(scores, families)

    def _project(self, scores, codes, n_groups):
        return solve_problem(self._problem(scores, codes, n_groups), solver=self.solver).outputs

    def _prepare(self, X, sensitive_features, routed=None):
        """Base scores and fitted-group codes of a batch (shared by the predict-like methods)."""
        check_is_fitted(self)
        _check_2d(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        base_X, raw_groups = self._split(X, sensitive_features)
        n = _num_samples(base_X)
        if n == 0:
            raise ValueError("X is empty: at least one sample is required.")
        scores = self._positive_scores(base_X)  # the base validates its input first
        codes = self._encode(_resolve(raw_groups), n)
        return scores, codes

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, sensitive_features=None, sample_weight=None, **fit_params):
        """Fit the base estimator, then the layer's fallback shifts and thresholds.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Binary target.
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
        base = self._base()
        if not _has_predict_proba(base):
            raise TypeError(
                f"The base estimator {base!r} has no predict_proba; the fairness layer projects "
                "probabilities. Use a probabilistic classifier or wrap it in "
                "sklearn.calibration.CalibratedClassifierCV."
            )
        if self.fine_tune:
            _check_fine_tunable(base, self.fine_tune_params)
        _check_2d(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        base_X, raw_groups = self._split(X, sensitive_features)
        n = _num_samples(base_X)
        y = _check_target(y, n)

        if _routing_enabled():
            routed = process_routing(self, "fit", sample_weight=sample_weight, **fit_params)
            base_fit_params = routed.estimator.fit
        else:
            base_fit_params = dict(fit_params)
            if sample_weight is not None:
                base_fit_params["sample_weight"] = sample_weight
        if isinstance(base, FrozenEstimator):
            self.estimator_ = base
        else:
            self.estimator_ = clone(base).fit(base_X, y, **base_fit_params)
        self.classes_ = self.estimator_.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "The base estimator must be a classifier of at least two classes. "
                f"Got classes {self.classes_!r} instead."
            )
        codes = self._encode(_resolve(raw_groups), n, fit=True)
        self.fine_tune_history_ = None
        if self.fine_tune:
            self.fine_tune_history_ = fine_tune(
                self.estimator_,
                base_X,
                y,
                codes,
                classes=self.classes_,
                tolerance=float(self.tolerance),
                criterion=self.criterion,
                solver=self.solver,
                sample_weight=sample_weight,
                params=self.fine_tune_params,
                random_state=self.random_state,
                verbose=self.verbose,
            )
        scores = self._positive_scores(base_X)
        if self._classic():
            self._fit_layer(scores, codes)
            self._start_stream(codes)
        else:
            self._fit_general_layer(scores, codes, self._label_indices(y))
            self._start_stream(codes, scores)
        return self

    def _fit_general_layer(self, scores, codes, labels):
        """Fitted rules of any criterion: plug-in shifts of the projection and of the decisions.

        The projection of the training set uses the labels (``fit_gap_`` is its
        label-based gap); the fallback rules come from the plug-in (label-free)
        problem, the form the criterion takes at inference.
        """
        self.shifts_ = None
        self.thresholds_ = None
        labelled = self._layer_problem(scores, codes, labels=labels)
        self._warn_small_groups(labelled)
        solution = solve_problem(labelled, solver=self.solver)
        self.fit_gap_ = max((f.gap(solution.outputs) for f in labelled.families), default=0.0)
        plugin_all = self._layer_problem(scores, codes, keep_trivial=True)
        plugin = ProjectionProblem(
            scores, tuple(f for f in plugin_all.families if f.n_groups >= 2),
            simplex=scores.ndim == 2, rows=plugin_all.rows,
        )
        groupings, _ = self._groupings(codes)
        if plugin.families or plugin.rows is not None:
            duals = solve_problem(plugin, solver=self.solver).duals
            try:
                decisions = affine_decisions(plugin).decisions
            except InfeasibleProblemError:  # e.g. per-group rows out of reach of 0/1 decisions
                decisions = np.argmax(scores, axis=1) if scores.ndim == 2 else (scores > 0.5)
        else:
            duals = []
            decisions = np.argmax(scores, axis=1) if scores.ndim == 2 else (scores > 0.5)
        self.family_shifts_ = self._fitted_coefficients(plugin_all, duals)
        self.decision_shifts_ = class_offsets(scores, groupings, np.asarray(decisions, dtype=int))

    def _fit_layer(self, scores, codes):
        """Learn the fallback shifts (projection) and thresholds (decisions) on the fit set."""
        k = len(self.groups_)
        self.family_shifts_ = None
        self.decision_shifts_ = None
        problem = self._problem(scores, codes, k)
        self._warn_small_groups(problem)
        if k < 2:
            self.shifts_ = np.zeros(k)
            self.thresholds_ = np.full(k, 0.5)
            self.fit_gap_ = 0.0
            return
        solution = solve_problem(problem, solver=self.solver)
        self.shifts_ = group_shifts(problem, solution)[0]
        self.fit_gap_ = problem.families[0].gap(solution.outputs)
        self.thresholds_ = parity_decisions(scores, codes, k, float(self.tolerance)).thresholds

    # ------------------------------------------------------------------ predict
    def _batch_proba(self, scores, codes):
        """Projected positive-class probabilities (binary) or class probabilities of a batch."""
        if not self._classic():
            if self.inference == "fitted":
                return self._fitted_proba(scores, codes)
            problem = self._layer_problem(scores, codes)
            if not problem.families and problem.rows is None:  # fewer than two groups
                return self._fitted_proba(scores, codes)
            return solve_problem(problem, solver=self.solver).outputs
        present = np.unique(codes)
        if self.inference == "fitted" or present.size < 2:
            return np.clip(scores - self.shifts_[codes], 0.0, 1.0)
        local = np.searchsorted(present, codes)
        return self._project(scores, local, present.size)

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
        scores, codes = self._prepare(X, sensitive_features)
        p = self._batch_proba(scores, codes)
        return p if p.ndim == 2 else np.column_stack([1.0 - p, p])

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
            Predicted class labels. With ``decision="parity"`` and
            ``inference="batch"``, these are the decisions of maximal expected
            accuracy whose selection rates meet parity exactly on the batch
            (training thresholds for a batch with fewer than two groups).
        """
        scores, codes = self._prepare(X, sensitive_features)
        if self.decision == "threshold":
            p = self._batch_proba(scores, codes)
            labels = np.argmax(p, axis=1) if p.ndim == 2 else (p >= self.threshold).astype(int)
        elif not self._classic():
            problem = None
            if self.inference == "batch":
                problem = self._layer_problem(scores, codes)
            if problem is None or (not problem.families and problem.rows is None):
                labels = self._fitted_decisions(scores, codes)
            else:
                try:
                    labels = affine_decisions(problem).decisions
                except InfeasibleProblemError as exc:
                    # Rows such as a per-group mean residual can be out of reach of 0/1
                    # decisions on a tiny batch; say so rather than fail or pretend.
                    warnings.warn(
                        f"{exc} Using the decision rule fitted on the training set for this "
                        "batch instead; it does not meet the criterion on the batch.",
                        UserWarning,
                        stacklevel=2,
                    )
                    labels = self._fitted_decisions(scores, codes)
        else:
            present = np.unique(codes)
            if self.inference == "fitted" or present.size < 2:
                labels = apply_thresholds(scores, codes, self.thresholds_)
            else:
                local = np.searchsorted(present, codes)
                labels = parity_decisions(
                    scores, local, present.size, float(self.tolerance)
                ).decisions
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

    # ------------------------------------------------------------------ streaming
    def _stream_config(self):
        step = None if self.stream_step is None else float(self.stream_step)
        return (self.stream_algorithm, float(self.tolerance), step, float(self.threshold))

    def _new_stream(self, shares):
        algorithm, tolerance, step, threshold = self._stream_config()
        return StreamState(
            algorithm, tolerance, self.shifts_, self.thresholds_, shares,
            step=step, threshold=threshold, groups=self.groups_,
        )

    def _start_stream(self, codes, scores=None):
        """Start the stream from the fit: group shares and fitted shifts / thresholds.

        Other criteria, multiclass targets and marginal groups start from the
        fitted plug-in coefficients (``family_shifts_``) and decision offsets
        (``decision_shifts_``); criteria without a streaming form get no stream
        (the streaming methods then raise, saying why).
        """
        if self._classic():
            shares = np.bincount(codes, minlength=len(self.groups_)) / max(codes.size, 1)
            self.stream_ = self._new_stream(shares)
        elif self._stream_unsupported() is not None:
            self.stream_ = None
        else:
            self.stream_ = self._new_criterion_stream(scores, codes)

    def _stream_unsupported(self):
        """Why the criterion cannot stream with a certificate, or None when it can."""
        crit = make_criterion(self.criterion)
        kind = type(crit)
        if kind in (DemographicParity, MeanResidual):
            return None
        if kind is EqualOpportunity and (
            len(self.classes_) == 2 or crit.positive_class is not None
        ):
            return None
        if kind in (EqualOpportunity, EqualizedOdds):
            return (
                "This criterion puts each row in several statistics with different plug-in "
                "weights (its posteriors of several true classes), and served rows never change: "
                "a stream can make the pooled constraint unreachable (a group whose rows all "
                "carry equal posteriors can never separate its rates for two true classes), so "
                "no bound that reaches the tolerance holds at every row. Use predict_proba / "
                "predict on batches instead."
            )
        return (
            "A custom Criterion has no streaming form: its families and rows are defined over a "
            "whole batch."
        )

    def _new_criterion_stream(self, scores, codes):
        """The stream of other criteria: layout, fitted coefficients, offsets and shares."""
        crit = make_criterion(self.criterion)
        binary = len(self.classes_) == 2
        groupings, _ = self._groupings(codes)
        _, tolerance, step, _ = self._stream_config()
        common = {
            "n_classes": len(self.classes_),
            "binary": binary,
            "group_sizes": [k for _, k in groupings],
            "step": step,
            "groups": self.groups_,
            "criterion": self.criterion if isinstance(self.criterion, str) else repr(crit),
            "config": self._stream_config(),
        }
        if isinstance(crit, MeanResidual):
            return CriterionStreamState("residual", tolerance, **common)
        problem = self._layer_problem(scores, codes, keep_trivial=True)
        per = len(problem.families) // len(groupings)
        first = problem.families[:per]
        coefs, shares = [], []
        for j, (_, k) in enumerate(groupings):
            fams = range(j * per, (j + 1) * per)
            coefs.append(np.column_stack([self.family_shifts_[f][:k] for f in fams]))
            fam = problem.families[j * per]
            share = np.zeros(k)
            share[fam.ids()] = fam.totals / scores.shape[0]
            shares.append(share)
        return CriterionStreamState(
            "parity", tolerance,
            columns=[1] if binary else [f.column for f in first],
            weight_class=first[0].plug_in_class,
            coefs=coefs,
            offsets=[np.asarray(o, dtype=np.float64) for o in self.decision_shifts_],
            shares=shares,
            **common,
        )

    def _fitted_stream(self):
        state = getattr(self, "stream_", None)
        if state is None:
            check_is_fitted(self)  # raises NotFittedError when not fitted
            reason = None if self._classic() else self._stream_unsupported()
            if reason is not None:
                raise ValueError(
                    f"{_STREAM_SUPPORTED} {reason} Got criterion={self.criterion!r}, "
                    f"groups={self.groups!r}, {len(self.classes_)} classes instead."
                )
            raise AttributeError(
                "This FairnessLayerClassifier has no stream state (fitted by an older "
                "version?); call fit again."
            )
        return state

    def _stream(self):
        state = self._fitted_stream()
        if self.stream_algorithm == "paper" and isinstance(state, CriterionStreamState):
            raise ValueError(
                "stream_algorithm='paper' reproduces the paper's online algorithm, defined for "
                "binary demographic parity with intersectional groups; use "
                f"stream_algorithm='pooled'. Got criterion={self.criterion!r}, "
                f"groups={self.groups!r}, {len(self.classes_)} classes instead."
            )
        if state.config != self._stream_config():
            raise ValueError(
                "The streaming parameters (stream_algorithm, tolerance, stream_step, threshold) "
                "changed since the stream started: call reset_stream() to start a new stream "
                f"with them. Got {self._stream_config()!r} instead of {state.config!r}."
            )
        return state

    def _stream_inputs(self, X, sensitive_features, state):
        """Base scores and group codes of a batch; a fast path for small numpy batches."""
        fast = self._stream_fast_inputs(X, sensitive_features, state)
        return fast if fast is not None else self._prepare(X, sensitive_features)

    def _stream_fast_inputs(self, X, sensitive_features, state):
        """Skip the generic validation for a small numeric ndarray (None: use the full path).

        Any irregularity (DataFrame, feature names, unexpected shape, unknown or
        missing group, several sensitive columns) returns None, so errors come
        from the full path with their usual messages.
        """
        attrs = self.__dict__
        if (
            type(X) is not np.ndarray
            or X.ndim != 2
            or not 0 < X.shape[0] <= 256
            or X.dtype.kind not in "biuf"
            or X.shape[1] != attrs.get("n_features_in_", -1)
            or "feature_names_in_" in attrs
        ):
            return None
        spec = self.sensitive_features
        if spec is None:
            if sensitive_features is None:
                return None
            values = np.asarray(sensitive_features)
            if values.shape != (X.shape[0],):
                return None
            base_X = X
        else:
            if isinstance(spec, list | tuple) and len(spec) > 1:
                return self._stream_fast_blocks(X, sensitive_features, state, spec)
            if isinstance(spec, list | tuple) and len(spec) == 1:
                spec = spec[0]
            if (
                sensitive_features is not None
                or not isinstance(spec, Integral)
                or isinstance(spec, bool)
                or not -X.shape[1] <= spec < X.shape[1]
            ):
                return None
            j = int(spec) % X.shape[1]
            values = X[:, j]
            if self.sensitive_as_feature:
                base_X = X
            elif j == 0:
                base_X = X[:, 1:]
            elif j == X.shape[1] - 1:
                base_X = X[:, :-1]
            else:
                base_X = np.concatenate((X[:, :j], X[:, j + 1 :]), axis=1)
        codes = state.codes_of(values.tolist())
        if codes is None:
            return None
        proba = np.asarray(self.estimator_.predict_proba(base_X))
        if proba.ndim != 2:
            return None
        # The stream checks that the scores are finite.
        return (proba[:, -1] if proba.shape[1] == 2 else proba), codes

    def _stream_fast_blocks(self, X, sensitive_features, state, spec):
        """Fast inputs for marginal groups read from several columns (None: the full path)."""
        n_columns = X.shape[1]
        if sensitive_features is not None or self.groups != "marginal" or not all(
            isinstance(c, Integral) and not isinstance(c, bool) and -n_columns <= c < n_columns
            for c in spec
        ):
            return None
        idx = sorted({int(c) % n_columns for c in spec})  # attribute order of _split
        if len(idx) != len(spec):
            return None
        codes = state.codes_of(X[:, idx].tolist())
        if codes is None:
            return None
        base_X = X if self.sensitive_as_feature else np.delete(X, idx, axis=1)
        proba = np.asarray(self.estimator_.predict_proba(base_X))
        if proba.ndim != 2:
            return None
        return (proba[:, -1] if proba.shape[1] == 2 else proba), codes

    def _paper_projection(self, scores, codes):
        """Exact projection of one batch (the paper's algorithm, batches of >= b_tau rows)."""
        present = np.unique(codes)
        if present.size < 2:
            return np.clip(scores, 0.0, 1.0)
        return self._project(scores, np.searchsorted(present, codes), present.size)

    def partial_predict_proba(self, X, *, sensitive_features=None):
        """Serve probabilities to a stream: pooled group means within the certificate.

        With ``stream_algorithm="pooled"`` each row's probability is the base
        probability shifted by the stream's current dual for its group, then
        clipped (only if needed) so that the pooled gap of *all* probabilities
        served since :meth:`fit` or :meth:`reset_stream` stays within the
        certificate of :meth:`stream_report` — at every row, whatever the batch
        size (one row is fine), order, group shares or drift. Groups unseen at
        fit raise :class:`~skfairlayer.exceptions.UnseenGroupError`.

        Multiclass targets get rows on the simplex with pooled per-class means
        within the certificate; equal opportunity pools means weighted by the
        base posterior of the positive class (its plug-in form); marginal
        groups keep every attribute within it at once; mean residual serves the
        base probabilities (which meet its plug-in rows). Equalized odds, equal
        opportunity over every class and custom criteria raise a
        ``ValueError`` (no certificate can hold at every row; see
        :mod:`skfairlayer.online`).

        This method (with :meth:`partial_predict` and :meth:`reset_stream`) is
        the only one that changes the estimator after :meth:`fit`: it updates
        ``stream_``. Concurrent calls from several threads are safe (the update
        is serialized); an error (NaN scores, empty batch, wrong number of
        columns, unknown group) leaves the stream unchanged.

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
        state = self._stream()
        scores, codes = self._stream_inputs(X, sensitive_features, state)
        p = state.partial_proba(scores, codes, project=self._paper_projection)
        if p.ndim == 2:
            return p
        out = np.empty((p.shape[0], 2))
        out[:, 1] = p
        out[:, 0] = 1.0 - p
        return out

    def partial_predict(self, X, *, sensitive_features=None):
        """Serve decisions to a stream: pooled selection rates within the certificate.

        With ``stream_algorithm="pooled"`` each row is decided by its group's
        current threshold (started at ``thresholds_``, moved by the stream's
        duals) and flipped only if needed so that the pooled selection-rate gap
        of *all* decisions served since :meth:`fit` or :meth:`reset_stream`
        stays within the certificate of ``stream_report("decisions")`` at every
        row. With ``"paper"``, the paper's probabilities are thresholded at
        ``threshold`` (no guarantee on selection rates). The ``decision`` and
        ``inference`` parameters concern :meth:`predict` only.

        Multiclass targets: pooled per-class selection rates; equal
        opportunity: selection rates weighted by the base posterior of the
        positive class (plug-in); marginal groups: every attribute at once.
        These round a fractional stream (the class of largest accumulated
        deficit), so their certificate adds ``(K - 1)^2 / K`` per group cell
        divided by the group's (weighted) count, until the slack absorbs it.
        Mean residual: each group's selection rates stay within the
        certificate of its mean base probabilities.

        This method (with :meth:`partial_predict_proba` and
        :meth:`reset_stream`) is the only one that changes the estimator after
        :meth:`fit`: it updates ``stream_`` (its decision stream, separate from
        the probability stream). Thread-safe; an error leaves the stream
        unchanged.

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
        state = self._stream()
        scores, codes = self._stream_inputs(X, sensitive_features, state)
        return self.classes_[state.partial_decisions(scores, codes, project=self._paper_projection)]

    def reset_stream(self):
        """Start a new stream: forget every row served by the ``partial_*`` methods.

        The new stream starts again from the fit (group shares, ``shifts_``,
        ``thresholds_``) with the current streaming parameters. :meth:`fit`
        also starts a new stream. Do not call it while other threads are
        serving rows: they could serve into the stream being discarded.

        Returns
        -------
        self : FairnessLayerClassifier
            The estimator, with an empty stream.
        """
        state = self._fitted_stream()
        if state.config == self._stream_config():
            state.reset()
        elif isinstance(state, CriterionStreamState):
            self.stream_ = state.restarted(self._stream_config())
        else:
            self.stream_ = self._new_stream(state.shares)
        return self

    def stream_report(self, output="proba"):
        """Live report of a stream: counts, pooled means and gap, certificate, duals.

        Parameters
        ----------
        output : {"proba", "decisions"}, default="proba"
            The stream of :meth:`partial_predict_proba` (pooled mean
            probabilities) or of :meth:`partial_predict` (selection rates).

        Returns
        -------
        report : skfairlayer.online.StreamReport
            Per-group ``counts`` and pooled ``means``, the pooled ``gap``, the
            ``certificate`` (an upper bound on the gap, valid now; ``inf`` for
            the paper's algorithm), the ``duals``, the next rows' ``shifts``, and
            ``n_served`` / ``n_adjusted`` rows.
        """
        return self._fitted_stream().report(output)

    # ------------------------------------------------------------------ sklearn plumbing
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
        reads_columns = self.sensitive_features is not None and not callable(
            self.sensitive_features
        )
        tags.input_tags.sparse = base_tags.input_tags.sparse and not reads_columns
        tags.input_tags.allow_nan = base_tags.input_tags.allow_nan
        tags.input_tags.string = reads_columns
        tags.classifier_tags.multi_class = True
        return tags


def _check_fine_tunable(base, fine_tune_params):
    """Fail before fitting when fine-tuning cannot run on ``base``."""
    if isinstance(base, FrozenEstimator):
        raise ValueError(
            "fine_tune=True updates the base estimator's weights, but a FrozenEstimator must "
            "not change. Pass the unfrozen estimator (it is cloned, never modified) or set "
            f"fine_tune=False. Got {base!r} instead."
        )
    check_differentiable(base)
    check_fine_tune_params(fine_tune_params)


def _check_2d(X):
    if getattr(X, "ndim", 2) == 1 or (isinstance(X, list) and X and np.ndim(X[0]) == 0):
        raise ValueError(
            "Expected a 2D array for X, got a 1D array instead. Reshape your data with "
            "array.reshape(-1, 1) for a single feature or array.reshape(1, -1) for a single sample."
        )


def _check_target(y, n_samples):
    """A 1-D, finite, binary or multiclass target of the right length."""
    y = column_or_1d(y, warn=True)
    if y.dtype.kind in "fc":
        assert_all_finite(y, input_name="y")
    if y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {y.shape[0]}; they must match.")
    check_classification_targets(y)
    target_type = type_of_target(y, input_name="y")
    if target_type not in ("binary", "multiclass"):
        raise ValueError(
            "Only binary and multiclass classification are supported. The type of the target "
            f"is {target_type}."
        )
    return y


class _Deferred:
    """Groups computed by a user callable, evaluated once the base has validated X."""

    def __init__(self, func, X):
        self.func, self.X = func, X


def _resolve(raw_groups):
    return raw_groups.func(raw_groups.X) if isinstance(raw_groups, _Deferred) else raw_groups
