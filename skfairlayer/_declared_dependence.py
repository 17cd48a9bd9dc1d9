"""Check that a problem's constraints depend on the scores only as it declares.

The sensitivities differentiate constraints that are constant in the scores,
families of posterior weights (``plug_in_class``) and row bounds affine in the
scores (``bounds_jacobian``); anything else is detected here, by rebuilding the
problem at moved scores.
"""

import numpy as np

__all__ = ["check_declared_dependence"]


def _posterior_weight(scores, y):
    """Raw plug-in weight ``S[:, y]`` (binary: ``s`` for ``y = 1``, ``1 - s`` for ``y = 0``)."""
    if scores.ndim == 1:
        return scores if y == 1 else 1.0 - scores
    return scores[:, y]


def check_declared_dependence(problem, rebuild, *, step=1e-4, weight_scale=1.0):
    """Raise ``NotImplementedError`` if the constraints move with the scores undeclared.

    Rebuilds the problem at scores moved by ``step`` towards the centre of the
    bounds (a row-dependent amount; the simplex and ``[0, 1]`` are kept) and
    checks that the group codes, the weights of families without
    ``plug_in_class`` and the row matrix are unchanged, that plug-in weights
    are the normalised posteriors, and that row bounds move only by their
    ``bounds_jacobian``. Costs one problem build.

    Parameters
    ----------
    problem : ProjectionProblem
        The solved problem.
    rebuild : callable
        ``rebuild(scores) -> ProjectionProblem`` with the same criterion, groups
        and labels.
    step : float, default=1e-4
        Size of the perturbation.
    weight_scale : float, default=1.0
        Plug-in posteriors are read from an affine image of the scores with
        this slope (see :class:`Linearization`); only their normalisation is
        checked then.
    """
    s = np.asarray(problem.scores, dtype=np.float64)
    n = s.shape[0]
    factor = step * (1.0 + 0.5 * np.sin(np.arange(n) * 1.7))
    centre = 0.5 if s.ndim == 1 else 1.0 / s.shape[1]
    moved = s + (factor if s.ndim == 1 else factor[:, None]) * (centre - s)

    def fail(what):
        raise NotImplementedError(
            f"Cannot differentiate this projection: {what} with the scores, which the problem "
            "does not declare. Sensitivities cover constraints that are constant in the scores, "
            "families of posterior weights (GroupStatistics.plug_in_class, built with "
            "group_family) and row bounds affine in the scores (AffineRows.bounds_jacobian)."
        )

    try:
        other = rebuild(moved)
    except (ValueError, TypeError) as exc:
        raise NotImplementedError(
            "Cannot differentiate this projection: rebuilding its constraints from slightly "
            f"moved scores failed ({exc}), so their dependence on the scores is unknown."
        ) from exc
    if len(other.families) != len(problem.families):
        fail("the number of parity families changes")
    for fam, fam2 in zip(problem.families, other.families, strict=True):
        if not np.array_equal(fam.codes, fam2.codes) or fam.column != fam2.column:
            fail(f"the groups of family {fam.name!r} change")
        if fam.plug_in_class is None:
            if not np.allclose(fam.weights, fam2.weights, rtol=1e-12, atol=1e-15):
                fail(f"the weights of family {fam.name!r} change")
            continue
        inside = fam.codes >= 0
        totals = np.asarray(fam.totals if fam.totals is not None else [], dtype=np.float64)
        if totals.size != fam.n_groups:
            fail(f"family {fam.name!r} declares plug-in weights without totals; its weights change")
        if weight_scale != 1.0:
            sums = np.bincount(fam.codes[inside], weights=fam.weights[inside],
                               minlength=fam.n_groups)
            if not np.allclose(sums, 1.0, rtol=1e-9):
                fail(f"the weights of family {fam.name!r} are not normalised, and change")
            continue
        raw = _posterior_weight(s, int(fam.plug_in_class))
        expected = np.where(inside, raw / totals[np.where(inside, fam.codes, 0)], 0.0)
        if not np.allclose(fam.weights, expected, rtol=1e-9, atol=1e-15):
            fail(
                f"the weights of family {fam.name!r} are not the normalised posteriors of class "
                f"{fam.plug_in_class!r} it declares, and change"
            )
    rows, rows2 = problem.rows, other.rows
    if (rows is None) != (rows2 is None):
        fail("the extra affine rows appear or disappear")
    if rows is not None:
        if rows.matrix.shape != rows2.matrix.shape or abs(rows.matrix - rows2.matrix).max() > 0:
            fail(f"the matrix of {rows.name!r} changes")
        jac = getattr(rows, "bounds_jacobian", None)
        shift = np.zeros(rows.matrix.shape[0]) if jac is None else jac @ (moved - s).ravel()
        for old, new in ((rows.lower, rows2.lower), (rows.upper, rows2.upper)):
            old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
            finite = np.isfinite(old)
            if not np.array_equal(finite, np.isfinite(new)) or not np.allclose(
                new[finite], old[finite] + shift[finite], rtol=1e-9, atol=1e-12
            ):
                fail(f"the bounds of {rows.name!r} change")
