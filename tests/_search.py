"""A search as :func:`pyprune.prune` builds it, kept open so tests can look inside it."""

from __future__ import annotations

from typing import Any

from pyprune.search import PruneResult, PruningProblem, make_problem, solve


class Search:
    """The problem and the loop of one strategy; attribute reads go to the problem."""

    def __init__(self, strategy: str, model: Any, data: Any = None, **settings: Any) -> None:
        self.problem, self.loop = make_problem(model, data, strategy=strategy, **settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.problem, name)

    def run(self) -> PruneResult:
        return solve(self.problem, self.loop)


def problem(strategy: str, model: Any, data: Any = None, **settings: Any) -> PruningProblem:
    return Search(strategy, model, data, **settings).problem
