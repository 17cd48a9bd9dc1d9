"""skfairlayer: fairness layers for scikit-learn classifiers.

A fairness layer projects a model's outputs onto the closest outputs that meet
a group-parity criterion within a tolerance (Troxell, Montúfar and Roemer,
"Differentiable Optimization Layers for Guaranteed Fairness in Deep Learning", ICML 2026).
"""

from ._audit import audit_residuals
from ._barycenter import barycenter_projection
from ._classifier import FairnessLayerClassifier
from ._fine_tune import FineTuning
from ._regressor import FairnessLayerRegressor
from ._show_versions import show_versions
from .constraints import Criterion, DemographicParity
from .exceptions import InfeasibleProblemError, SmallGroupWarning, SolverError, UnseenGroupError
from .projection import ProjectionResult, project

__version__ = "0.1.0.dev0"

__all__ = [
    "Criterion",
    "DemographicParity",
    "FairnessLayerClassifier",
    "FairnessLayerRegressor",
    "FineTuning",
    "InfeasibleProblemError",
    "ProjectionResult",
    "SmallGroupWarning",
    "SolverError",
    "UnseenGroupError",
    "audit_residuals",
    "barycenter_projection",
    "project",
    "show_versions",
    "__version__",
]
