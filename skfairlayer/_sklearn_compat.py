"""The one place that touches scikit-learn's private API (as imbalanced-learn does)."""

from sklearn.base import _fit_context  # noqa: F401
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    StrOptions,
    validate_params,
)
from sklearn.utils.metadata_routing import _routing_enabled  # noqa: F401
from sklearn.utils.validation import _check_method_params, _num_samples  # noqa: F401
