"""The fitted layer: one object for every criterion, grouping and number of classes.

A :class:`FittedLayer` projects batches (exactly, verified) and decides them
(selection-rate parity, exact on the batch); it also holds the rules learned
on the fit set — per family, a shift coefficient per group, and per grouping a
decision offset per group and class — that serve batches with fewer than two
groups, ``inference="fitted"`` and the start of a stream. Special cases (two
groups, one uniform family) are chosen by the shape of the problem inside
:func:`solve_problem` and :func:`decide`, never by the caller. See the user
guide's pages on the layer, decisions and inference.
"""

import warnings

import numpy as np

from ._criteria import ProjectionProblem, build_problem
from ._decisions import parity_decisions
from ._multiclass_decisions import affine_decisions, class_offsets
from ._projection import solve_problem
from ._solvers._simplex import project_simplex_rows
from ._validation import check_bounds
from .exceptions import InfeasibleProblemError

__all__ = ["FittedLayer", "decide"]


def decide(problem):
    """Decisions of maximal expected accuracy meeting the problem's rows on the batch.

    One uniform family over binary outputs (demographic parity, any number of
    groups) is solved by exact counts per group; every other shape by the
    affine decision LP with an integer repair.

    Parameters
    ----------
    problem : ProjectionProblem
        The (plug-in) problem of a batch, with at least one family or row.

    Returns
    -------
    decisions : ndarray of shape (n_samples,)
        Class index of each row (binary: 0/1).
    """
    if _one_uniform_binary_family(problem):
        fam = problem.families[0]
        return parity_decisions(problem.scores, fam.codes, fam.n_groups, fam.tolerance).decisions
    return np.asarray(affine_decisions(problem).decisions, dtype=np.intp)


def _one_uniform_binary_family(problem):
    if problem.simplex or problem.rows is not None or len(problem.families) != 1:
        return False
    fam = problem.families[0]
    return bool(fam.uniform and fam.plug_in_class is None and fam.group_ids is None)


class FittedLayer:
    """The fairness layer fitted on a training set.

    Build it with :meth:`fit`. Batches are projected or decided with the
    criterion on the batch; rules learned at fit serve the rest. A fitted
    :class:`~skfairlayer.FairnessLayerClassifier` holds one as ``layer_``.

    Parameters
    ----------
    criterion : str or Criterion
        The criterion (a name such as ``"demographic_parity"``, or an instance).
    tolerance : float
        The criterion's tolerance.
    solver : {"auto", "exact", "osqp"}, default="auto"
        Projection solver.
    lower, upper : float, ndarray of shape (n_samples,) or None, default=0.0, 1.0
        Bounds of binary (or regression) outputs, ``None`` for an open end;
        multiclass outputs lie on the simplex.
    decisions : bool, default=True
        Whether to learn the decision rule (``decision_offsets``); regression
        outputs have none.

    Attributes
    ----------
    coefficients : list of ndarray
        Per family of the plug-in problem (in the order the criterion builds
        them, over all groupings), a shift coefficient per group: a row's output
        in the family's column moves by the coefficient times its raw weight.
    decision_offsets : list of ndarray of shape (n_groups, n_classes)
        Per grouping, offsets such that ``argmax_c S[i, c] - sum offsets[g(i), c]``
        (binary: columns ``[1 - s, s]``) reproduces the fit set's decisions.
    fit_gap : float
        Largest gap of the projected fit-set outputs (label-conditioned
        criteria: measured with the labels).
    n_classes : int
        Number of classes of the outputs (2 for binary scores).
    shifts : ndarray of shape (n_groups,) or None
        Binary demographic parity with one grouping: the fitted shift of each
        group (a row's probability moves down by its group's shift); else None.
    thresholds : ndarray of shape (n_groups,) or None
        Binary outputs with one grouping: the score threshold of each group's
        fitted decisions; else None.

    See Also
    --------
    FairnessLayerClassifier : The estimator that fits and serves the layer.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import FairnessLayerClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3))
    >>> groups = np.where(X[:, 0] > 0, "a", "b")
    >>> y = (X[:, 0] + X[:, 1] + rng.normal(size=400) > 0).astype(int)
    >>> clf = FairnessLayerClassifier(tolerance=0.02).fit(X, y, sensitive_features=groups)
    >>> layer = clf.layer_
    >>> layer.shifts.round(3)  # group "a" scores higher: its probabilities move down
    array([ 0.233, -0.18 ])
    >>> layer.thresholds.round(3)  # and it needs a higher score to be selected
    array([0.811, 0.259])
    >>> round(layer.fit_gap, 6)
    0.02
    """

    def __init__(self, criterion, tolerance, *, solver="auto", lower=0.0, upper=1.0,
                 decisions=True):
        self.criterion = criterion
        self.tolerance = float(tolerance)
        self.solver = solver
        lower, upper = check_bounds((lower, upper))  # regression: any, None or infinite open
        self.lower = float(lower) if lower.ndim == 0 else lower
        self.upper = float(upper) if upper.ndim == 0 else upper
        self.with_decisions = decisions  # False: continuous outputs, no decision rules

    # ------------------------------------------------------------------ problems
    def problem(self, scores, groupings, labels=None, *, keep_trivial=False, tolerance=None):
        """The criterion's problem on a batch (groups absent from it are dropped).

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        groupings : list of Grouping
            The batch's groupings (codes of the groups learned at fit).
        labels : ndarray of shape (n_samples,) or None, default=None
            Class indices; ``None`` for the plug-in (label-free) form.
        keep_trivial : bool, default=False
            Keep families with fewer than two groups (to match families by
            position across batches).
        tolerance : float or None, default=None
            Overrides the fitted tolerance (batch inference reads the
            estimator's current tolerance); ``None`` keeps it.

        Returns
        -------
        problem : ProjectionProblem
            The batch's projection problem.
        """
        names = [g.name for g in groupings]
        tolerance = self.tolerance if tolerance is None else float(tolerance)
        return build_problem(
            self.criterion, scores, [(g.codes, g.n_groups) for g in groupings], tolerance,
            labels=labels, names=names if any(names) else None, keep_trivial=keep_trivial,
            lower=self.lower, upper=self.upper,
        )

    def fit(self, scores, groupings, labels=None):
        """Learn the fitted rules from (preferably out-of-sample) base scores.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the fit set.
        groupings : list of Grouping
            The fit set's groupings.
        labels : ndarray of shape (n_samples,) or None, default=None
            Class indices; label-conditioned criteria measure ``fit_gap`` with them.

        Returns
        -------
        self : FittedLayer
        """
        self.n_classes = 2 if scores.ndim == 1 else scores.shape[1]
        self.group_sizes = [g.n_groups for g in groupings]
        labelled = self.problem(scores, groupings, labels)
        self.fit_rows = 0 if labelled.rows is None else int(labelled.rows.lower.size)
        self._effective_sizes = [
            (f.name, f.ids(), f.effective_sizes(), f.uniform) for f in labelled.families
        ]
        if labelled.families or labelled.rows is not None:
            outputs = solve_problem(labelled, solver=self.solver).outputs
            self.fit_gap = max((f.gap(outputs) for f in labelled.families), default=0.0)
        else:
            self.fit_gap = 0.0
        plugin_all = self.problem(scores, groupings, keep_trivial=True)
        plugin = ProjectionProblem(
            scores, tuple(f for f in plugin_all.families if f.n_groups >= 2),
            simplex=scores.ndim == 2, rows=plugin_all.rows, lower=self.lower, upper=self.upper,
        )
        duals = []
        if plugin.families or plugin.rows is not None:
            duals = solve_problem(plugin, solver=self.solver).duals
        self.coefficients = _coefficients(plugin_all, duals, self.group_sizes)
        self.n_families = len(plugin_all.families)
        self.shares = [
            np.bincount(g.codes, minlength=g.n_groups) / max(g.codes.size, 1) for g in groupings
        ]
        self.decision_offsets = (
            self._decision_offsets(scores, groupings, plugin) if self.with_decisions else None
        )
        return self

    def _decision_offsets(self, scores, groupings, plugin):
        """Per grouping, offsets whose argmax rule reproduces the fit set's parity decisions."""
        exact, decisions = None, None
        if len(groupings) == 1 and _one_uniform_binary_family(plugin):
            fam = plugin.families[0]
            exact = parity_decisions(scores, fam.codes, fam.n_groups, fam.tolerance)
            decisions = exact.decisions
        elif plugin.families or plugin.rows is not None:
            try:
                decisions = decide(plugin)
            except InfeasibleProblemError:  # e.g. rows out of reach of 0/1 decisions
                decisions = None
        if decisions is None:
            decisions = np.argmax(scores, axis=1) if scores.ndim == 2 else (scores > 0.5)
        decisions = np.asarray(decisions, dtype=int)
        self.constant_decisions = bool(np.unique(decisions).size == 1)
        values = np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores
        if np.array_equal(decisions, np.argmax(values, axis=1)):  # the criterion does not bind
            return [np.zeros((g.n_groups, values.shape[1])) for g in groupings]
        if exact is not None:  # one threshold per group reproduces exact counts: no LP
            offsets = np.zeros((groupings[0].n_groups, 2))
            offsets[plugin.families[0].ids(), 1] = 2.0 * exact.thresholds - 1.0
            return [offsets]  # 1 iff s - o1 > 1 - s
        return class_offsets(scores, [(g.codes, g.n_groups) for g in groupings], decisions)

    def small_groups(self, min_size):
        """``(family name, group code, effective size)`` of the fit set's groups below ``min_size``.

        Parameters
        ----------
        min_size : float or None
            Effective size (Kish) below which a group is reported; ``None``
            reports none.

        Returns
        -------
        small : list of (str, int, float)
            Family name, group code in its grouping, and effective size.
        """
        if min_size is None:
            return []
        return [
            (name, int(ids[j]), float(sizes[j]))
            for name, ids, sizes, _ in self._effective_sizes
            for j in np.flatnonzero(sizes < min_size)
        ]

    @property
    def uniform_group_sizes(self):
        """Binary demographic parity over one grouping: the fit set's group sizes (else None)."""
        if self.n_classes != 2 or len(self._effective_sizes) != 1:
            return None
        _, _, sizes, uniform = self._effective_sizes[0]
        return np.round(sizes).astype(np.int64) if uniform else None

    # ------------------------------------------------------------------ outputs
    def outputs(self, scores, groupings, *, inference="batch", tolerance=None, solver=None):
        """Projected outputs of a batch: exact on the batch, or by the fitted rule.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        groupings : list of Grouping
            The batch's groupings.
        inference : {"batch", "fitted"}, default="batch"
            ``"batch"`` solves the criterion on the batch (verified); a batch
            where no family has two groups falls back to the fitted rule, as
            does ``"fitted"``.
        tolerance : float or None, default=None
            Overrides the fitted tolerance; ``None`` keeps it.
        solver : str or None, default=None
            Overrides the fitted solver; ``None`` keeps it.

        Returns
        -------
        outputs : ndarray of the shape of ``scores``
            Projected probabilities.
        """
        if inference == "batch":
            problem = self.problem(scores, groupings, tolerance=tolerance)
            if problem.families or problem.rows is not None:
                return solve_problem(problem, solver=solver or self.solver).outputs
        return self.fitted_outputs(scores, groupings)

    def fitted_outputs(self, scores, groupings):
        """Outputs by the fitted shifts: within the bounds; parity holds on the fit set.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the rows.
        groupings : list of Grouping
            The rows' groupings.

        Returns
        -------
        outputs : ndarray of the shape of ``scores``
            Scores minus each row's fitted shift, clipped to ``[0, 1]``
            (multiclass: projected onto the simplex row by row).
        """
        delta = self._shift_matrix(scores, groupings)
        if scores.ndim == 1:
            return np.clip(scores - delta, self.lower, self.upper)
        return project_simplex_rows(scores - delta)

    def _shift_matrix(self, scores, groupings):
        """Row shifts ``sum_f coef_f[g_i] * raw_{f,i}`` at each family's column."""
        problem = self.problem(scores, groupings, keep_trivial=True)
        if len(problem.families) != self.n_families:
            raise ValueError(
                f"The criterion {self.criterion!r} built {len(problem.families)} families on "
                f"this batch but {self.n_families} at fit; a Criterion must build the same "
                "families for every batch with the same output shape."
            )
        n = scores.shape[0]
        delta = np.zeros((n, 1 if scores.ndim == 1 else scores.shape[1]))
        for fam, coef in zip(problem.families, self.coefficients, strict=True):
            if fam.group_ids is None and fam.uniform:  # raw weight 1 on every row
                delta[:, fam.column] += coef.take(fam.codes)
                continue
            inside = np.flatnonzero(fam.codes >= 0)
            if inside.size == 0:
                continue
            g = fam.codes[inside]
            raw = fam.weights[inside] * fam.totals[g]
            delta[inside, fam.column] += coef[fam.ids()[g]] * raw
        return delta[:, 0] if scores.ndim == 1 else delta

    # ------------------------------------------------------------------ decisions
    def decisions(self, scores, groupings, *, inference="batch", tolerance=None):
        """Class index of each row: parity decisions on the batch, or the fitted rule.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the batch.
        groupings : list of Grouping
            The batch's groupings.
        inference : {"batch", "fitted"}, default="batch"
            ``"batch"`` decides with the criterion on the batch (a batch where
            no family has two groups gets the fitted rule); ``"fitted"``
            always applies the fitted rule.
        tolerance : float or None, default=None
            Overrides the fitted tolerance; ``None`` keeps it.

        Returns
        -------
        decisions : ndarray of shape (n_samples,)
            Class index of each row (binary: 0/1).
        """
        if inference == "batch":
            problem = self.problem(scores, groupings, tolerance=tolerance)
            if problem.families or problem.rows is not None:
                try:
                    return decide(problem)
                except InfeasibleProblemError as exc:
                    # Rows such as a per-group mean residual can be out of reach of 0/1
                    # decisions on a tiny batch; say so rather than fail or pretend.
                    warnings.warn(
                        f"{exc} Using the decision rule fitted on the training set for this "
                        "batch instead; it does not meet the criterion on the batch.",
                        UserWarning,
                        stacklevel=3,
                    )
        return self.fitted_decisions(scores, groupings)

    def fitted_decisions(self, scores, groupings):
        """Decisions by the fitted per-group offsets.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base scores of the rows.
        groupings : list of Grouping
            The rows' groupings.

        Returns
        -------
        decisions : ndarray of shape (n_samples,)
            ``argmax_c S[i, c] - sum offsets[g(i), c]`` of each row.
        """
        values = np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores.copy()
        for g, offsets in zip(groupings, self.decision_offsets, strict=True):
            values -= offsets[g.codes]
        return np.argmax(values, axis=1)

    # ------------------------------------------------------------------ views
    @property
    def shifts(self):
        """Binary demographic parity, one grouping: the fitted shift of each group (else None)."""
        if self.n_classes != 2 or len(self.group_sizes) != 1 or self.n_families != 1:
            return None
        return self.coefficients[0]

    @property
    def thresholds(self):
        """Binary outputs, one grouping: the score threshold of each group's fitted decisions."""
        if self.n_classes != 2 or len(self.group_sizes) != 1 or self.decision_offsets is None:
            return None
        o = self.decision_offsets[0]
        return (1.0 + o[:, 1] - o[:, 0]) / 2.0

    def __repr__(self):
        return (
            f"FittedLayer(criterion={self.criterion!r}, tolerance={self.tolerance!r}, "
            f"groups={self.group_sizes!r}, fit_gap={getattr(self, 'fit_gap', None)!r})"
        )


def _coefficients(problem_all, duals, group_sizes):
    """Per family, a coefficient per grouping group: shift = coef[g] * raw row weight."""
    k = max(group_sizes)
    coefs = []
    solvable = iter(duals)
    for fam in problem_all.families:
        coef = np.zeros(k)
        if fam.n_groups >= 2:
            coef[fam.ids()] = next(solvable) / fam.totals
        coefs.append(coef)
    return coefs
