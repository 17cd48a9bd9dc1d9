"""Group-parity metrics and scikit-learn scorers that read the sensitive features from ``X``.

The metrics follow fairlearn's signatures, ``metric(y_true, y_pred, *,
sensitive_features, sample_weight=None)``, and accept decisions (0/1) as well
as probabilities of the positive class. Unlike fairlearn, a rate that does
not exist for some group (a true positive rate for a group without positive
samples, say) raises an error naming the group instead of counting as 0.

scikit-learn scorers are called as ``scorer(estimator, X, y)``, with no
sensitive features: :func:`make_parity_scorer` and
:func:`make_constrained_scorer` read them from columns of ``X``.
"""

from ._classification import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    group_summary,
)
from ._regression import (
    group_error_ratio,
    ks_distance,
    mean_difference,
    residual_difference,
    wasserstein_distance,
)
from ._scorers import make_constrained_scorer, make_parity_scorer

__all__ = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "group_error_ratio",
    "group_summary",
    "ks_distance",
    "make_constrained_scorer",
    "make_parity_scorer",
    "mean_difference",
    "residual_difference",
    "wasserstein_distance",
]
