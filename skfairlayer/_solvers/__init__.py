"""Solvers for :class:`~skfairlayer.ProjectionProblem` (arrays in, arrays out).

``_exact`` solves one parity family over binary outputs exactly, from the
one-shift-per-group structure of the KKT conditions. ``_osqp`` solves any
problem (several families, multiclass simplex, extra affine rows) with OSQP,
then polishes and repairs. Neither verifies: :mod:`skfairlayer._projection` does.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Solution:
    """Raw output of a solver.

    Attributes
    ----------
    outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
        The projected outputs ``P``.
    duals : list of ndarray of shape (n_groups,)
        Per family, the multipliers ``nu_g`` of its group statistics, with the
        sign convention ``P = Pi(S - sum_f nu_{f,g_i} w_{f,i} e_{column_f})``
        (``Pi`` the projection on the bounds / simplex); ``sum_g nu_g = 0``.
        ``nu_g > 0``: group ``g`` sits at the top of the band, ``< 0``: at the bottom.
    levels : ndarray of shape (n_families,)
        The auxiliary level ``t_f`` of each family (band is ``[t_f, t_f + tol_f]``).
    solver : str
        Which solver produced the answer.
    iterations : int
        Iterations used (solver-specific meaning).
    row_duals : ndarray or None
        Multipliers of the extra affine rows, if any.
    """

    outputs: np.ndarray
    duals: list
    levels: np.ndarray
    solver: str
    iterations: int = 0
    row_duals: np.ndarray | None = None
    info: dict = field(default_factory=dict)
