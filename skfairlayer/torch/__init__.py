"""PyTorch front end of the fairness layer (optional: ``pip install skfairlayer[torch]``).

The same exact projection as :func:`skfairlayer.project`, on tensors and on their
device, with a closed-form backward pass (double backward, forward mode,
``torch.func.vmap``, ``torch.compile``), for binary outputs, multiclass outputs
on the simplex and marginal groups over several attributes; a streaming module
for serving row by row; a group-stratified batch sampler. See ``docs/user_guide/torch.rst``.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "skfairlayer.torch requires PyTorch. You can install it with "
        "`pip install skfairlayer[torch]` (or `pip install torch`)."
    ) from exc

from ._function import CRITERIA, VERIFY_TOL, FairnessLayer, fairness_layer, output_tolerance
from ._sampler import GroupStratifiedBatchSampler
from ._stream import StreamingFairnessLayer

__all__ = [
    "CRITERIA",
    "VERIFY_TOL",
    "FairnessLayer",
    "GroupStratifiedBatchSampler",
    "SkorchFineTuning",
    "StreamingFairnessLayer",
    "fairness_layer",
    "output_tolerance",
]


def __getattr__(name):
    if name == "SkorchFineTuning":  # imports scikit-learn estimators only when asked for
        from ._skorch import SkorchFineTuning

        return SkorchFineTuning
    raise AttributeError(f"module 'skfairlayer.torch' has no attribute {name!r}")
