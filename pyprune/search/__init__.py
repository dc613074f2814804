"""Pruning loops: one-shot, recursive, greedy and random search, with recovery."""

from ._base import Limits, PruneResult, Search
from .greedy import GreedySearch
from .oneshot import OneShotSearch
from .random import RandomSearch
from .recovery import Recovery
from .recursive import RecursiveSearch

__all__ = ["Search", "Limits", "PruneResult", "OneShotSearch", "RecursiveSearch", "GreedySearch",
           "RandomSearch", "Recovery"]
