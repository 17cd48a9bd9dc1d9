"""The driver step of the Dask projection for other engines: shifts from aggregates.

For a Spark SQL aggregation or a database (user guide, "Beyond one machine":
the Spark recipe): the exact shifts from the aggregates of one bracket pass.
"""

import numpy as np

from .._solvers._reduced import _solve_model
from .._validation import check_tolerance
from ._open_ends import scalar_bounds
from ._project import _model

__all__ = ["solve_aggregates"]


def solve_aggregates(center, half, sizes, free_counts, free_sums, top_counts, bottom_counts,
                     scores, codes, *, tolerance=0.01, bounds=(0.0, 1.0)):
    """The exact shifts from the aggregates of one bracket pass, computed anywhere.

    The driver step of :func:`project`, for engines other than Dask (a Spark
    SQL aggregation, a database): given a bracket ``center +- half`` of the
    per-group shifts, the counts and score sums of the rows free on it
    (``lb + half_g <= s - center_g <= ub - half_g``), the counts at the top
    (``s - center_g >= ub + half_g``) and the bottom (``<= lb - half_g``), and
    every other row, it returns the optimal shifts if they lie in the bracket.

    Parameters
    ----------
    center, half : array-like of shape (n_groups,)
        Centre and half-width of the bracket of each group's shift.
    sizes : array-like of shape (n_groups,)
        Rows per group.
    free_counts, free_sums : array-like of shape (n_groups,)
        Count and sum of the scores of the rows free on the bracket.
    top_counts, bottom_counts : array-like of shape (n_groups,)
        Rows at the upper and at the lower bound for every shift of the bracket.
    scores, codes : array-like of shape (n_uncertain,)
        The remaining rows: their scores and group codes (``0 .. n_groups - 1``).
    tolerance : float, default=0.01
        Largest allowed difference between two group means.
    bounds : tuple of float, default=(0.0, 1.0)
        Scalar bounds of the outputs.

    Returns
    -------
    shifts : ndarray of shape (n_groups,) or None
        The optimal shifts (``p = clip(s - shifts[g], lb, ub)``), or None when
        the optimum is not inside the bracket (re-centre, widen, run the pass
        again).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.dask import solve_aggregates
    >>> s, g = np.array([0.9, 0.8, 0.7, 0.2, 0.3, 0.4]), np.array([0, 0, 0, 1, 1, 1])
    >>> shifts = solve_aggregates([0.0, 0.0], [1.0, 1.0], [3, 3], [0, 0], [0.0, 0.0],
    ...                           [0, 0], [0, 0], s, g, tolerance=0.1)
    >>> np.round(shifts, 3)
    array([ 0.2, -0.2])
    """
    lb, ub = scalar_bounds(bounds)
    if not (np.isfinite(lb) and np.isfinite(ub)):
        raise ValueError(
            "solve_aggregates needs finite bounds: for an open end pass a finite stand-in "
            "beyond every output (e.g. the scores' range plus the tolerance past it) and check "
            f"that no row reaches it. Got {bounds!r} instead."
        )
    tolerance = check_tolerance(tolerance)
    center, half, sizes = (np.asarray(x, dtype=np.float64) for x in (center, half, sizes))
    scores = np.asarray(scores, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.intp)
    k = sizes.size
    agg = {"s": scores, "g": codes, "w": np.ones(scores.size),
           "nfree": np.asarray(free_counts, dtype=np.float64),
           "sfree": np.asarray(free_sums, dtype=np.float64),
           "ntop": np.asarray(top_counts, dtype=np.float64),
           "nbot": np.asarray(bottom_counts, dtype=np.float64),
           "nunc": np.bincount(codes, minlength=k).astype(np.float64),
           "sunc": np.bincount(codes, weights=scores, minlength=k)}
    n_g = np.maximum(sizes, 1)
    model = _model(sizes, agg, lb, ub, tolerance)
    res = _solve_model(model, (center - half) * n_g, (center + half) * n_g, 1, center * n_g)
    if not res.ok:
        return None
    return np.where(sizes > 0, res.nu, 0.0) / n_g
