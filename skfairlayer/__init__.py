"""skfairlayer: fairness layers for scikit-learn and PyTorch models.

A fairness layer projects a model's outputs onto the closest outputs that meet
a group-parity criterion within a tolerance (Troxell, Montúfar and Roemer,
"Differentiable Optimization Layers for Guaranteed Fairness in Deep Learning", ICML 2026).
Subpackages: :mod:`skfairlayer.metrics`, :mod:`skfairlayer.plotting`,
:mod:`skfairlayer.datasets`, and the optional front ends :mod:`skfairlayer.torch`
and :mod:`skfairlayer.dask`.
"""

from ._audit import audit_residuals
from ._barycenter import barycenter_projection
from ._classifier import FairnessLayerClassifier
from ._criteria import (
    AffineRows,
    Criterion,
    DemographicParity,
    EqualizedOdds,
    EqualOpportunity,
    GroupStatistics,
    MeanResidual,
    ProjectionProblem,
    group_family,
)
from ._fine_tune import FineTuning
from ._layer import FittedLayer
from ._projection import ProjectionResult, project
from ._regressor import FairnessLayerRegressor
from ._show_versions import show_versions
from ._stream import StreamReport
from .exceptions import InfeasibleProblemError, SmallGroupWarning, SolverError, UnseenGroupError

__version__ = "0.2.0.dev0"

__all__ = [
    "AffineRows",
    "Criterion",
    "DemographicParity",
    "EqualOpportunity",
    "EqualizedOdds",
    "FairnessLayerClassifier",
    "FairnessLayerRegressor",
    "FineTuning",
    "FittedLayer",
    "GroupStatistics",
    "InfeasibleProblemError",
    "MeanResidual",
    "ProjectionProblem",
    "ProjectionResult",
    "SmallGroupWarning",
    "SolverError",
    "StreamReport",
    "UnseenGroupError",
    "group_family",
    "audit_residuals",
    "barycenter_projection",
    "project",
    "show_versions",
    "__version__",
]
