"""The fairness layer as a function: ``project`` a batch of scores onto parity.

``project`` builds a :class:`~skfairlayer.ProjectionProblem`,
solves it (exact solver where the structure allows, OSQP otherwise), verifies
the answer and returns a :class:`ProjectionResult`. No estimator code here.
"""

import dataclasses
from numbers import Real

import numpy as np

from . import _sensitivity
from ._criteria import CRITERIA, Criterion, build_problem, make_criterion
from ._groups import encode
from ._sklearn_compat import Interval, StrOptions, validate_params
from ._solvers import _exact, _simplex
from ._validation import check_bounds, check_groups_mode, check_scores, check_tolerance
from .exceptions import SolverError

__all__ = ["project", "solve_problem", "group_shifts", "ProjectionResult", "VERIFY_TOL"]

#: Largest violation of a parity row tolerated in a returned answer.
VERIFY_TOL = 1e-9

_SOLVERS = ("auto", "exact", "osqp")


class ProjectionResult:
    """Outcome of a verified projection.

    Attributes
    ----------
    proba : ndarray of shape (n_samples,) or (n_samples, n_classes)
        The projected outputs: closest to the scores in squared distance among
        those meeting every parity family and the bounds.
    problem : ProjectionProblem
        The problem that was solved.
    duals : list of ndarray of shape (n_groups,)
        Per family, the group multipliers ``nu_g`` (see :class:`~skfairlayer._solvers.Solution`).
    levels : ndarray of shape (n_families,)
        Lower end ``t_f`` of each family's band ``[t_f, t_f + tolerance]``.
    groups : ndarray of shape (n_groups,)
        Group labels, in code order.
    codes : ndarray of shape (n_samples,)
        Group code of each row.
    solver : str
        Which solver produced the answer: ``"exact"`` (one family over binary
        outputs), ``"simplex"`` (multiclass) or ``"osqp"``.
    gap : float
        Largest parity gap of ``proba`` over the families (``<= tolerance + VERIFY_TOL``).
    """

    def __init__(self, proba, problem, solution, groups, codes):
        self.proba = proba
        self.problem = problem
        self.duals = solution.duals
        self.levels = solution.levels
        self.row_duals = solution.row_duals
        self.solver = solution.solver
        self.iterations = solution.iterations
        self.groups = groups
        self.codes = codes
        gaps = solution.info.get("gaps")
        if gaps is None:
            gaps = [fam.gap(proba) for fam in problem.families]
        self.gap = max(gaps, default=0.0)

    @property
    def shifts(self):
        """Per family, the shift each group's scores move by: ``p_i = clip(s_i - shift[g_i])``.

        Exact for uniform weights (demographic parity), where it equals
        ``nu_g / n_g``; for weighted statistics it is ``nu_g`` times the group's
        mean weight.
        """
        return group_shifts(self.problem, self)

    def active_set(self, atol=1e-12):
        """Coordinates at a bound and parity rows at the edge of their band.

        Parameters
        ----------
        atol : float, default=1e-12
            Distance to a bound under which an output counts as held at it.

        Returns
        -------
        at_bound : ndarray of bool, same shape as ``proba``
            Outputs held at a bound (or at zero on the simplex).
        active : list of ndarray of int of shape (n_groups,)
            Per family, ``+1`` for a group at the top of the band, ``-1`` at the
            bottom, ``0`` strictly inside.
        """
        p, prob = self.proba, self.problem
        if prob.simplex:
            at_bound = p <= atol
        else:
            at_bound = (p <= prob.lower + atol) | (p >= prob.upper - atol)
        active = []
        for fam, t in zip(prob.families, self.levels, strict=True):
            m = fam.means(p)
            act = np.zeros(fam.n_groups, dtype=int)
            act[m >= t + fam.tolerance - 1e-10] = 1
            act[m <= t + 1e-10] = -1
            active.append(act)
        return at_bound, active

    def _linearization(self):
        lin = self.__dict__.get("_linearization_cache")
        if lin is None:
            # A custom criterion may build its constraints from the scores: check (one rebuild)
            # that they depend on them only as declared, else vjp/jvp raise NotImplementedError.
            rebuild = self.__dict__.get("_rebuild")
            lin = _sensitivity.Linearization(self.problem, self.proba, rebuild=rebuild)
            self.__dict__["_linearization_cache"] = lin
        return lin

    def vjp(self, grad):
        """Vector-Jacobian product: back-propagate ``grad`` through the projection.

        Locally the projection is affine. When the constraints do not depend
        on the scores (demographic parity, criteria given labels) its Jacobian
        is the orthogonal projector ``J`` onto the directions that keep every
        active constraint active: ``J`` zeroes the outputs held at a bound and
        removes, on the free outputs, the component that would move the active
        group statistics apart; ``J`` is symmetric, so ``vjp`` and :meth:`jvp`
        compute the same map. Label-free (plug-in) criteria weight rows by the
        base posteriors or bound them around the scores' group means; the
        derivative of those constraints is included and ``J`` is then not
        symmetric. Either way a product costs ``O(n_samples * n_classes)``.
        At the measure-zero set of non-differentiable points (weakly active
        rows, a group entirely at a bound, dependent rows) it returns the
        projector onto the null space of every active row, an element of the
        generalized Jacobian.

        Parameters
        ----------
        grad : array-like of the shape of ``proba``
            Gradient of a loss with respect to the projected outputs.

        Returns
        -------
        grad_scores : ndarray of the shape of ``proba``
            Gradient of the loss with respect to the scores.

        Raises
        ------
        NotImplementedError
            If a custom criterion's constraints change with the scores in a
            way they do not declare (see
            :func:`~skfairlayer._sensitivity.check_declared_dependence`).

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import project
        >>> result = project(np.array([0.9, 0.8, 0.2, 0.3]), np.array([0, 0, 1, 1]), tolerance=0.1)
        >>> result.vjp(np.array([1.0, 0.0, 0.0, 0.0]))
        array([ 0.75, -0.25,  0.25,  0.25])
        """
        return self._linearization().vjp(grad)

    def jvp(self, tangent):
        """Jacobian-vector product: the change of ``proba`` along a change ``tangent`` of the scores.

        The same map as :meth:`vjp` when the Jacobian is symmetric (criteria
        whose constraints do not depend on the scores); its transpose in general.

        Parameters
        ----------
        tangent : array-like of the shape of ``proba``
            Direction of change of the scores.

        Returns
        -------
        tangent_proba : ndarray of the shape of ``proba``
            First-order change of the projected outputs.

        Raises
        ------
        NotImplementedError
            If a custom criterion's constraints change with the scores in a
            way they do not declare.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import project
        >>> result = project(np.array([0.9, 0.8, 0.2, 0.3]), np.array([0, 0, 1, 1]), tolerance=0.1)
        >>> result.jvp(np.ones(4))  # a common shift passes through
        array([1., 1., 1., 1.])
        """
        return self._linearization().jvp(tangent)

    def __repr__(self):
        return (
            f"ProjectionResult(n_samples={self.proba.shape[0]}, n_groups={len(self.groups)}, "
            f"gap={self.gap:.3g}, solver={self.solver!r})"
        )


def group_shifts(problem, solution):
    """Per family, ``nu_g`` times the mean weight of group ``g`` (its additive shift)."""
    out = []
    for fam, nu in zip(problem.families, solution.duals, strict=True):
        inside = fam.codes >= 0
        counts = np.bincount(fam.codes[inside], minlength=fam.n_groups)
        total = np.bincount(fam.codes[inside], weights=fam.weights[inside], minlength=fam.n_groups)
        out.append(nu * total / np.maximum(counts, 1))
    return out


def _verify(problem, solution):
    """Raise unless the outputs meet the bounds exactly and the rows within VERIFY_TOL."""
    out = solution.outputs
    scalar = not problem.simplex and np.ndim(problem.lower) == 0 and np.ndim(problem.upper) == 0
    # The exact solver's output pass reads the range and group sums of each block it writes.
    read = solution.info.pop("verification", None) if scalar else None
    if scalar:  # min and max give the bounds' violation, and are NaN or inf if any output is
        lo, hi = read["range"] if read else (float(out.min()), float(out.max()))
        finite = np.isfinite(lo) and np.isfinite(hi)
        box = max(float(problem.lower) - lo, hi - float(problem.upper), 0.0) if finite else 0.0
    else:
        finite = bool(np.isfinite(out).all())
        box = problem.box_violation(out) if finite else 0.0
    if not finite:
        raise SolverError(f"The {solution.solver} solver returned non-finite outputs.")
    box_tol = 1e-12 if problem.simplex else 0.0
    if box > box_tol:
        raise SolverError(
            f"The {solution.solver} solver returned outputs outside the bounds by {box:.3g}."
        )
    gaps = read["gaps"] if read else [fam.gap(out) for fam in problem.families]
    solution.info["gaps"] = gaps
    viol = max((g - fam.tolerance for g, fam in zip(gaps, problem.families, strict=True)),
               default=0.0)
    if problem.rows is not None:
        viol = max(viol, problem.rows.violation(out))
    if viol > VERIFY_TOL:
        raise SolverError(
            f"The {solution.solver} solver returned outputs that violate the parity constraints "
            f"by {viol:.3g} (> {VERIFY_TOL:g}). This is a bug or a numerically hard instance; "
            "please report it with the data that triggers it."
        )


#: Bounds farther than this (times the largest score, plus one) are replaced by inactive
#: surrogates: the breakpoints of a far bound cost the solve relative precision (a gap
#: 3e-8 short of the tolerance with bounds of 1e6).
_FAR = 64.0


def _infinite_bounds(problem):
    """Whether a bound is infinite or so far that the exact solver's sums lose precision."""
    largest = max(float(np.max(np.abs(problem.lower))), float(np.max(np.abs(problem.upper))))
    if largest <= _FAR:  # never far: the scores' pass below is only needed for large bounds
        return False
    far = _FAR * (1.0 + float(np.max(np.abs(problem.scores))))
    return bool(np.any(np.abs(problem.lower) > far) or np.any(np.abs(problem.upper) > far))


def _solve_exact_unbounded(problem, warm_start, layout):
    """The exact solver on infinite bounds: finite surrogate bounds that stay inactive.

    Without a bound, a row moves by ``nu_g w_i`` and its group's mean by
    ``nu_g sum w^2``, at most the spread of the group means, so surrogate
    bounds farther than that from every score are never reached and the
    surrogate's solution (KKT with zero bound multipliers) is the unbounded
    one. A surrogate bound reached anyway is widened; ``None`` (the general
    solver) after a few tries.
    """
    fam = problem.families[0]
    s = problem.scores
    means = fam.means(s)
    inside = fam.codes >= 0
    sq = np.bincount(fam.codes[inside], weights=fam.weights[inside] ** 2, minlength=fam.n_groups)
    factor = float(np.max(fam.weights[inside] / sq[fam.codes[inside]], initial=1.0))
    reach = 2.0 * (float(np.ptp(means)) + fam.tolerance + 1.0) * max(factor, 1.0)
    lo, hi = float(s.min()), float(s.max())
    for _ in range(3):
        span = reach + (hi - lo)
        far_lo = np.asarray(problem.lower) < lo - span
        far_hi = np.asarray(problem.upper) > hi + span
        lower = np.where(far_lo, lo - span, problem.lower)
        upper = np.where(far_hi, hi + span, problem.upper)
        surrogate = dataclasses.replace(
            problem, lower=lower if np.ndim(lower) else float(lower),
            upper=upper if np.ndim(upper) else float(upper),
        )
        solution = _exact.solve_exact(surrogate, warm_start=warm_start, layout=layout)
        out = solution.outputs
        reached = (far_lo & (out <= lower)) | (far_hi & (out >= upper))
        if not np.any(reached):
            return solution
        reach *= 16.0
    return None


def solve_problem(problem, *, solver="auto", warm_start=None):
    """Solve and verify a :class:`ProjectionProblem`; return the raw verified solution.

    ``"exact"`` uses the structure of demographic-parity-like problems: one
    family over binary outputs (sorted breakpoints) or one family per class
    column on the simplex (a k x K dual solved by globalized Newton); either
    falls back to OSQP where it does not converge or its answer fails the
    verification (numerically hard instances). ``"osqp"`` solves any problem.
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}. Got {solver!r} instead.")
    exact_ok = _exact.supports(problem)
    simplex_ok = not exact_ok and _simplex.supports(problem)
    if solver == "exact" and not (exact_ok or simplex_ok):
        raise ValueError(
            "solver='exact' handles demographic-parity-like problems: one parity family over "
            "binary outputs, or one uniform-weight family per class column on the simplex, "
            "without extra rows; use solver='osqp' (or 'auto') for this problem."
        )
    solution = None
    if exact_ok and solver != "osqp":
        fam = problem.families[0]
        layout = None
        if fam.dense_uniform:
            layout = _exact.GroupLayout.from_family(fam)
        if _infinite_bounds(problem):
            solution = _solve_exact_unbounded(problem, warm_start, layout)
        else:
            solution = _exact.solve_exact(problem, warm_start=warm_start, layout=layout)
    elif simplex_ok and solver != "osqp":
        solution = _simplex.solve_simplex(problem, warm_start=warm_start)
    if solution is not None and _verified(problem, solution):
        return solution
    # The general solver: no specialised path, or its answer failed the verification
    # (numerically hard, e.g. a group of near-zero weight whose mean a row divides by it).
    from ._solvers import _osqp  # imported lazily: only the general case needs it

    solution = _osqp.solve_osqp(problem, warm_start=warm_start)
    _verify(problem, solution)
    return solution


def _verified(problem, solution):
    """Whether ``solution`` passes :func:`_verify`."""
    try:
        _verify(problem, solution)
    except SolverError:
        return False
    return True


@validate_params(
    {
        "proba": ["array-like"],
        "sensitive_features": ["array-like", dict],
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "criterion": [StrOptions(set(CRITERIA)), Criterion],
        "labels": ["array-like", None],
        "groups": [StrOptions({"intersectional", "marginal"})],
        "bounds": [tuple, list],
        "solver": [StrOptions(set(_SOLVERS))],
    },
    prefer_skip_nested_validation=True,
)
def project(
    proba,
    sensitive_features,
    *,
    tolerance=0.01,
    criterion="demographic_parity",
    labels=None,
    groups="intersectional",
    bounds=(0.0, 1.0),
    solver="auto",
):
    """Project scores onto group parity: the fairness layer as a function.

    Returns the outputs closest to ``proba`` in squared distance whose group
    statistics (the group means for demographic parity) differ by at most
    ``tolerance``, within ``bounds`` (binary) or on the probability simplex
    (multiclass). The answer is verified before it is returned: parity rows
    hold to ``VERIFY_TOL`` (1e-9) and the bounds exactly.

    Parameters
    ----------
    proba : array-like of shape (n_samples,) or (n_samples, n_classes)
        Base scores: the positive-class probability (binary), or one row of
        class probabilities per sample (multiclass; each projected row stays
        on the simplex).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership, one column per sensitive attribute.
    tolerance : float, default=0.01
        Largest allowed difference between two group statistics (for
        ``"mean_residual"``: largest allowed mean residual of a group).
    criterion : str or Criterion, default="demographic_parity"
        ``"demographic_parity"``, ``"equal_opportunity"``, ``"equalized_odds"``,
        ``"mean_residual"``, or a :class:`~skfairlayer.Criterion`
        instance (custom criteria; see its documentation).
    labels : array-like of shape (n_samples,), default=None
        True labels: 0/1 for binary scores, class indices (columns of
        ``proba``) for multiclass. Criteria conditioned on the label use them
        when given (an audit of a labelled batch, or training data) and the
        base posteriors as plug-in weights otherwise.
    groups : {"intersectional", "marginal"}, default="intersectional"
        With several sensitive attributes: ``"intersectional"`` makes every
        combination of values a group; ``"marginal"`` applies the criterion
        to each attribute separately (one set of families per attribute).
    bounds : tuple of (float, array-like or None), default=(0.0, 1.0)
        Lower and upper bounds of one-column outputs, ``None`` for an open end
        (e.g. ``(None, None)`` for regression outputs or logits); multiclass
        outputs are on the simplex.
    solver : {"auto", "exact", "osqp"}, default="auto"
        ``"exact"`` uses the one-shift-per-group structure of demographic
        parity (binary or multiclass, one grouping); ``"osqp"`` solves any
        affine criterion; ``"auto"`` picks exact when it applies.

    Returns
    -------
    result : ProjectionResult
        The projected outputs in ``result.proba``, with the multipliers, level
        and active set of the solution.

    Raises
    ------
    InfeasibleProblemError
        If no outputs within the bounds meet the tolerance.
    SolverError
        If the solver's answer fails verification.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer import project
    >>> scores = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.4])
    >>> groups = np.array(["a", "a", "a", "b", "b", "b"])
    >>> result = project(scores, groups, tolerance=0.1)
    >>> np.round(result.proba, 3)
    array([0.7, 0.6, 0.5, 0.4, 0.5, 0.6])
    >>> bool(result.gap <= 0.1 + 1e-9)
    True

    Multiclass scores stay on the simplex, with parity per class column:

    >>> proba = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.4, 0.5]])
    >>> result = project(proba, [0, 0, 1, 1], tolerance=0.0)
    >>> np.round(result.proba, 3)
    array([[0.45, 0.25, 0.3 ],
           [0.35, 0.35, 0.3 ],
           [0.45, 0.25, 0.3 ],
           [0.35, 0.35, 0.3 ]])
    """
    tolerance = check_tolerance(tolerance)
    scores = check_scores(proba)
    check_groups_mode(groups)
    n = scores.shape[0]
    lower, upper = check_bounds(bounds)
    encoded, group_labels = encode(sensitive_features, groups, n_samples=n)
    groupings = [(g.codes, g.n_groups) for g in encoded]
    names = [g.name for g in encoded] if len(encoded) > 1 else None
    codes = encoded[0].codes if groups == "intersectional" else np.column_stack(
        [g.codes for g in encoded]
    )
    problem = build_problem(
        criterion, scores, groupings, tolerance, labels=labels, lower=lower, upper=upper,
        names=names,
    )
    solution = solve_problem(problem, solver=solver)
    result = ProjectionResult(solution.outputs, problem, solution, group_labels, codes)
    if type(make_criterion(criterion)) not in CRITERIA.values():  # custom: checked by vjp/jvp
        result.__dict__["_rebuild"] = lambda moved: build_problem(
            criterion, moved, groupings, tolerance, labels=labels, lower=lower, upper=upper,
            names=names,
        )
    return result
