"""Pruning loops: one-shot, recursive, greedy and random search, with recovery; sensitivity analysis."""

from ._base import Limits, PruneResult, Search
from .greedy import GreedySearch
from .oneshot import OneShotSearch
from .random import RandomSearch
from .recovery import Recovery
from .recursive import RecursiveSearch
from .sensitivity import Sensitivity, sensitivity

__all__ = ["Search", "Limits", "PruneResult", "OneShotSearch", "RecursiveSearch", "GreedySearch",
           "RandomSearch", "Recovery", "sensitivity", "Sensitivity"]
