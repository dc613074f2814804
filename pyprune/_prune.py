"""The one-call entry point: ``prune(model, data, ...) -> PruneResult``."""

from __future__ import annotations

from typing import Any

from .data import Dataset
from .search._base import PruneResult
from .search.greedy import GreedySearch
from .search.oneshot import OneShotSearch
from .search.random import RandomSearch
from .search.recursive import RecursiveSearch
from .targets import Target

__all__ = ["prune", "PruneResult", "STRATEGIES"]

STRATEGIES = ("oneshot", "oneshot_local", "oneshot_global", "recursive", "greedy", "random")


def prune(model: Any, data: Dataset | None = None, *, granularity: str = "channel", importance: str = "l2",
          strategy: str = "greedy", target: Target | None = None, max_drop: float | None = 0.01,
          metric: Any = None, seed: int = 0, threads: int | None = None, quiet: bool = False,
          **options: Any) -> PruneResult:
    """Prune ``model`` toward ``target`` (default ``MACs(0.5)``; for a one-shot cut given per-group
    ``ratios``, those ratios) while the metric drops at most ``max_drop``; ``options`` go to the
    strategy (e.g. ``step``, ``trials``, ``recovery``, ``ratios``)."""
    key = strategy.strip().lower().replace("-", "_")
    if key not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    common = dict(granularity=granularity, importance=importance, target=target,
                  max_drop=max_drop, metric=metric, seed=seed, threads=threads, quiet=quiet)
    if key.startswith("oneshot"):
        options.setdefault("scope", "global" if key == "oneshot_global" else "local")
        return OneShotSearch(model, data, **common, **options).run()
    cls = {"recursive": RecursiveSearch, "greedy": GreedySearch, "random": RandomSearch}[key]
    return cls(model, data, **common, **options).run()
