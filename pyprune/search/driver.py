"""The one call: ``prune(model, data, ...) -> PruneResult``, and the pieces it is made of.

:func:`prune` checks its settings into :class:`~pyprune.options.PruneOptions`, builds the
strategy's loop (which checks its own options), the :class:`~pyprune.search.problem.PruningProblem`,
runs the loop and ships the result. :func:`make_problem` and :func:`solve` are the same two halves
for callers who want to look at the problem in between.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .._signals import deferred_interrupts
from ..data import Dataset
from ..graph import Model
from ..options import PruneOptions
from ._loop import Loop
from .greedy import GreedySearch
from .oneshot import OneShotSearch
from .problem import BudgetSpent, PruningProblem
from .random import RandomSearch
from .recursive import RecursiveSearch
from .ship import PruneResult, ship

__all__ = ["prune", "make_problem", "make_loop", "solve", "LOOPS"]

#: Strategy name -> loop class (the names are :data:`pyprune.options.STRATEGIES`).
LOOPS: dict[str, type[Loop]] = {cls.name: cls for cls in (OneShotSearch, RecursiveSearch, GreedySearch, RandomSearch)}

_OPTION_FIELDS = frozenset(f.name for f in fields(PruneOptions))


def make_loop(strategy: str, options: Mapping[str, Any] | None = None) -> Loop:
    """The loop of ``strategy`` with its own ``options`` (unknown ones are refused by name)."""
    cls = LOOPS[strategy]
    options = dict(options or {})
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the {strategy} strategy; "
                         f"it takes {', '.join(accepted)}; every strategy takes {', '.join(sorted(_OPTION_FIELDS))}")
    return cls(**options)


def make_problem(model: Model | Any, data: Dataset | None = None, *, options: PruneOptions | None = None,
                 **settings: Any) -> tuple[PruningProblem, Loop]:
    """The problem and the loop :func:`prune` would run (settings as in :func:`prune`)."""
    opts = PruneOptions.from_settings(settings, options)
    loop = make_loop(opts.strategy, opts.search)  # before any model work: bad options fail fast
    return PruningProblem(model, data, opts, fit_on_part=loop.fits_on_part), loop


def solve(problem: PruningProblem, loop: Loop) -> PruneResult:
    """Run ``loop`` on ``problem`` and ship the result. Ctrl-C stops the loop; the last committed
    state (which meets the constraint) is shipped, flagged as interrupted, and so is a search
    interrupted while it was being shipped. A spent budget (``max_evals``, ``time_limit``) stops
    the loop the same way; the report then says which budget ran out."""
    try:
        loop.prepare(problem)
        loop.search(problem)
    except BudgetSpent as spent:
        problem.note = str(spent)
    except KeyboardInterrupt:
        problem.interrupted = True
    finally:
        problem.progress.close()
        problem.close()
    # A finished search is shipped whatever happens now: an interrupt during the removal and the
    # checks only marks the result as interrupted (and skips the optional latency figures).
    with deferred_interrupts(lambda: setattr(problem, "stop_requested", True)):
        return ship(problem, loop)


def prune(model: Model | Any, data: Dataset | None = None, *, options: PruneOptions | None = None,
          **settings: Any) -> PruneResult:
    """Prune ``model`` toward a target while the metric drops at most ``max_drop``.

    Settings (all keyword, see :class:`~pyprune.options.PruneOptions` for each default):
    ``granularity`` (channel, layer, weight, nm), ``strategy`` (oneshot, recursive, greedy,
    random; oneshot_local / oneshot_global), ``target`` (default ``MACs(0.5)``; a one-shot cut
    given per-group ``ratios`` is its own target), ``importance``, ``max_drop`` (a number, a
    :class:`~pyprune.targets.Constraint` or None), ``metric``, ``loss``, ``recovery``,
    ``round_to``/``skip``/``max_fraction``/``min_keep`` (or ``limits=``), ``seed``, ``threads``,
    ``batch_size``, ``measure_latency``, ``quiet``; anything else goes to the strategy (``step``,
    ``window``, ``patience``, ``trials``, ``mode``, ``scope``, ``ratios``, ``direction`` ...).
    ``options`` is a prepared :class:`~pyprune.options.PruneOptions` the settings override.
    """
    return solve(*make_problem(model, data, options=options, **settings))
