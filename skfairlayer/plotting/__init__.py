"""Plots for fairness layers, as scikit-learn-style Display objects.

matplotlib is an optional dependency: it is imported inside the plotting
functions only, and a clear :class:`ImportError` says how to install it
(``pip install skfairlayer[plot]``). Nothing else in the package imports this
module.

Each Display stores what it computed as public attributes, draws with
:meth:`plot` (``ax=`` to draw on existing axes, so several methods share one
figure), and keeps the artists it drew (``line_``, ``ax_``, ``figure_``, ...).
The ``from_estimator`` constructors only call public methods and read public
attributes and constructor parameters of the estimator.
"""

from ._group_scores import GroupScoreDisplay
from ._streaming import StreamingGapDisplay, running_gap
from ._tradeoff import ParityTradeoffDisplay

__all__ = [
    "GroupScoreDisplay",
    "ParityTradeoffDisplay",
    "StreamingGapDisplay",
    "running_gap",
]
