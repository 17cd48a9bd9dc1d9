"""Streaming inference: one :class:`Stream` wrapper over one engine interface.

:func:`start_stream` builds a stream from a :class:`StreamStart` (plain data
describing the fitted start) and picks the engine from the shape of the
problem. Every engine has the same interface: ``step(scores, codes) ->
(outputs, new_state)``, ``commit(new_state, n_rows)``, ``reset()``,
``report(labels) -> StreamReport``, ``certificate()``; it is picklable. The
algorithms and their certificates: docs/user_guide/streaming.rst.
"""

from ._families import CENTER_MARGIN, PooledFamilies, project_box_simplex
from ._paper import PAPER_B_TAU, PaperPrimalDual, penalized_projection
from ._pooled import PooledPrimalDual, decompose_shifts
from ._report import SLACK_SCALE, StreamReport, slack_schedule
from ._residual import PooledResidual
from ._stream import ALGORITHMS, KINDS, OUTPUTS, Stream, StreamStart, start_stream

__all__ = [
    "ALGORITHMS",
    "CENTER_MARGIN",
    "KINDS",
    "OUTPUTS",
    "PAPER_B_TAU",
    "SLACK_SCALE",
    "PaperPrimalDual",
    "PooledFamilies",
    "PooledPrimalDual",
    "PooledResidual",
    "Stream",
    "StreamReport",
    "StreamStart",
    "decompose_shifts",
    "penalized_projection",
    "project_box_simplex",
    "slack_schedule",
    "start_stream",
]
