"""Pruning searches: a problem, a space per granularity, loops that only talk to the problem, one
ship step; and sensitivity analysis.

:func:`prune` is the one call. :class:`PruningProblem` holds the model, data, metric, constraint,
session, recovery and the search state; a space (:data:`SPACES`) holds the slots of one
granularity; the loops (:class:`OneShotSearch`, :class:`RecursiveSearch`, :class:`GreedySearch`,
:class:`RandomSearch`) move the problem toward its target; :func:`ship` removes the result
physically and measures every figure on it.
"""

from .driver import LOOPS, make_loop, make_problem, prune, solve
from .greedy import GreedySearch
from .oneshot import OneShotSearch
from .problem import Evaluation, PruningProblem
from .random import RandomSearch
from .recursive import RecursiveSearch
from .sensitivity import Sensitivity, SensitivityRow, sensitivity
from .ship import PruneResult, ship
from .spaces import SPACES, ChannelSpace, Cost, LayerSpace, NMSpace, Slot, Space, WeightSpace

__all__ = [
    "prune",
    "make_problem",
    "make_loop",
    "solve",
    "ship",
    "PruneResult",
    "PruningProblem",
    "Evaluation",
    "LOOPS",
    "OneShotSearch",
    "RecursiveSearch",
    "GreedySearch",
    "RandomSearch",
    "SPACES",
    "Space",
    "ChannelSpace",
    "LayerSpace",
    "WeightSpace",
    "NMSpace",
    "Slot",
    "Cost",
    "sensitivity",
    "Sensitivity",
    "SensitivityRow",
]
