"""Dask front end: the fairness layer over a whole distributed collection.

``project`` computes the exact global projection (parity of the group means
over every row of the collection, not per partition) from per-group
aggregates in a fixed small number of passes; ``parity_decisions`` computes the
exact global parity decisions. ``predict_proba`` and ``predict`` apply a fitted
:class:`~skfairlayer.FairnessLayerClassifier` or
:class:`~skfairlayer.FairnessLayerRegressor` to Dask arrays or DataFrames:
the fitted rule partition by partition (every criterion), or the global solve
(demographic parity: binary, or multiclass on the simplex).
Requires ``dask[array,dataframe]`` and ``distributed``
(``pip install skfairlayer[dask]``). See the user guide, "Beyond one machine".
"""

try:
    import dask  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        "skfairlayer.dask requires dask. You can install it with "
        "`pip install skfairlayer[dask]` (or `pip install 'dask[array,dataframe]' distributed`)."
    ) from exc

from ._aggregates import solve_aggregates
from ._decisions import DaskParityDecisions, parity_decisions
from ._estimator import predict, predict_proba
from ._project import DaskProjectionResult, project
from ._simplex import DaskMulticlassResult

__all__ = [
    "DaskMulticlassResult",
    "DaskParityDecisions",
    "DaskProjectionResult",
    "parity_decisions",
    "predict",
    "predict_proba",
    "project",
    "solve_aggregates",
]
