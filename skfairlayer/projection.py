"""The fairness layer as a function: ``project`` a batch of scores onto parity.

``project`` builds a :class:`~skfairlayer.constraints.ProjectionProblem`,
solves it (exact solver where the structure allows, OSQP otherwise), verifies
the answer and returns a :class:`ProjectionResult`. No estimator code here.
"""

import numpy as np

from . import _sensitivity
from ._solvers import _exact
from ._validation import check_scores, check_tolerance, encode_groups
from .constraints import ProjectionProblem, make_criterion
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
        Which solver produced the answer (``"exact"`` or ``"osqp"``).
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
        self.gap = max((fam.gap(proba) for fam in problem.families), default=0.0)

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
            lin = _sensitivity.Linearization(self.problem, self.proba)
            self.__dict__["_linearization_cache"] = lin
        return lin

    def vjp(self, grad):
        """Vector-Jacobian product: back-propagate ``grad`` through the projection.

        Locally the projection is the orthogonal projector ``J`` onto the
        directions that keep every active constraint active: ``J`` zeroes the
        outputs held at a bound and removes, on the free outputs, the component
        that would move the active group statistics apart. ``J`` is symmetric,
        so ``vjp`` and :meth:`jvp` compute the same map, in ``O(n_samples)``.
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

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import project
        >>> result = project(np.array([0.9, 0.8, 0.2, 0.3]), np.array([0, 0, 1, 1]), tolerance=0.1)
        >>> result.vjp(np.array([1.0, 0.0, 0.0, 0.0]))
        array([ 0.75, -0.25,  0.25,  0.25])
        """
        return self._linearization().apply(grad)

    def jvp(self, tangent):
        """Jacobian-vector product: the change of ``proba`` along a change ``tangent`` of the scores.

        The Jacobian is symmetric, so this is the same map as :meth:`vjp`.

        Parameters
        ----------
        tangent : array-like of the shape of ``proba``
            Direction of change of the scores.

        Returns
        -------
        tangent_proba : ndarray of the shape of ``proba``
            First-order change of the projected outputs.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer import project
        >>> result = project(np.array([0.9, 0.8, 0.2, 0.3]), np.array([0, 0, 1, 1]), tolerance=0.1)
        >>> result.jvp(np.ones(4))  # a common shift passes through
        array([1., 1., 1., 1.])
        """
        return self._linearization().apply(tangent)

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
    if not np.isfinite(out).all():
        raise SolverError(f"The {solution.solver} solver returned non-finite outputs.")
    box = problem.box_violation(out)
    box_tol = 1e-12 if problem.simplex else 0.0
    if box > box_tol:
        raise SolverError(
            f"The {solution.solver} solver returned outputs outside the bounds by {box:.3g}."
        )
    viol = problem.parity_violation(out)
    if viol > VERIFY_TOL:
        raise SolverError(
            f"The {solution.solver} solver returned outputs that violate the parity constraints "
            f"by {viol:.3g} (> {VERIFY_TOL:g}). This is a bug or a numerically hard instance; "
            "please report it with the data that triggers it."
        )


def solve_problem(problem, *, solver="auto", warm_start=None):
    """Solve and verify a :class:`ProjectionProblem`; return the raw verified solution."""
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}. Got {solver!r} instead.")
    exact_ok = _exact.supports(problem)
    if solver == "exact" and not exact_ok:
        raise ValueError(
            "solver='exact' handles one parity family over binary outputs without extra "
            "rows; use solver='osqp' (or 'auto') for this problem."
        )
    if solver == "exact" or (solver == "auto" and exact_ok):
        solution = _exact.solve_exact(problem, warm_start=warm_start)
    else:
        from ._solvers import _osqp  # imported lazily: only the general case needs it

        solution = _osqp.solve_osqp(problem, warm_start=warm_start)
    _verify(problem, solution)
    return solution


def project(
    proba,
    sensitive_features,
    *,
    tolerance=0.01,
    criterion="demographic_parity",
    labels=None,
    bounds=(0.0, 1.0),
    solver="auto",
):
    """Project scores onto group parity: the fairness layer as a function.

    Returns the outputs closest to ``proba`` in squared distance whose group
    statistics (the group means for demographic parity) differ by at most
    ``tolerance``, within ``bounds``. The answer is verified before it is
    returned: parity rows hold to ``VERIFY_TOL`` (1e-9) and the bounds exactly.

    Parameters
    ----------
    proba : array-like of shape (n_samples,)
        Base scores, e.g. the positive-class column of ``predict_proba``.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
        Group membership; several columns define intersectional groups.
    tolerance : float, default=0.01
        Largest allowed difference between two group statistics.
    criterion : str or Criterion, default="demographic_parity"
        The parity criterion.
    labels : array-like of shape (n_samples,), default=None
        True labels, for criteria that need them.
    bounds : tuple of (float or array-like), default=(0.0, 1.0)
        Lower and upper bounds of the outputs.
    solver : {"auto", "exact", "osqp"}, default="auto"
        ``"exact"`` uses the one-shift-per-group structure (one family, binary
        outputs); ``"osqp"`` solves any affine criterion; ``"auto"`` picks exact
        when it applies.

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
    """
    tolerance = check_tolerance(tolerance)
    scores = check_scores(proba)
    if scores.ndim != 1:
        raise ValueError(
            "project expects binary scores of shape (n_samples,) (the positive-class "
            f"probability). Got an array of shape {scores.shape} instead."
        )
    codes, groups = encode_groups(sensitive_features, n_samples=scores.shape[0])
    lower, upper = (np.asarray(b, dtype=np.float64) for b in bounds)
    crit = make_criterion(criterion)
    if crit.requires_labels and labels is None:
        raise ValueError(f"criterion {crit!r} requires labels; pass labels=y.")
    families = crit.families(codes, len(groups), scores, tolerance, labels=labels)
    problem = ProjectionProblem(scores, families, lower=lower, upper=upper)
    solution = solve_problem(problem, solver=solver)
    return ProjectionResult(solution.outputs, problem, solution, groups, codes)
