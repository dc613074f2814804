"""What every search loop is: a name, its own options (checked on construction), and a search
that only talks to a :class:`~pyprune.search.problem.PruningProblem`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from .problem import PruningProblem
    from .spaces import Counts

__all__ = ["Loop", "check_step", "round_widths"]


class Loop:
    """A search strategy. Subclasses set :attr:`name` and implement :meth:`search`."""

    name: ClassVar[str] = "loop"

    @property
    def label(self) -> str:
        """How reports name this loop (e.g. ``oneshot-global``)."""
        return self.name

    @property
    def fits_on_part(self) -> bool:
        """Whether the problem may fit full recoveries on part of the calibration data on costly
        models (:attr:`~pyprune.search.problem.PruningProblem.recovery_samples`). A loop that runs
        one full recovery per committed step gains time from it; one that ships after a few
        (one-shot) or judges states without ranking them on part keeps every sample for the refits:
        fitted on a quarter of them, one-shot's least squares leave a trained encoder's embeddings
        at cosine 0.79 instead of 0.86."""
        return False

    def prepare(self, problem: PruningProblem) -> None:
        """Settle what the loop needs before it starts (by default: the target)."""
        problem.ensure_target()

    def search(self, problem: PruningProblem) -> None:
        """Move ``problem`` toward its target; Ctrl-C may stop it at any point (the problem then
        holds the last committed state, which meets the constraint)."""
        raise NotImplementedError


def check_step(step: object) -> float | int:
    """A step as a fraction in (0, 1] of a slot or a positive unit count."""
    if isinstance(step, bool) or not (isinstance(step, int) and step >= 1 or
                                      isinstance(step, float) and 0.0 < step <= 1.0):
        raise ValueError(f"step must be a fraction in (0, 1] or a positive unit count, got {step!r}")
    return step


#: Up to this many slots, every combination of a step up or down per slot is costed when rounding.
_ENUMERATE = 10
#: Rounded states judged (with recovery) before the unrounded state is kept.
_TRIES = 4


def _removed_importance(p: PruningProblem, state: Mapping[str, int]) -> float:
    return sum(float(np.sum(p.by_id[sid].scores[p.by_id[sid].order[:m]])) for sid, m in state.items() if m)


def _neighbours(p: PruningProblem, pending: Mapping[str, tuple[int, int | None]]) -> list[Counts]:
    """Allowed states around the current one: with few slots every combination of each slot's
    allowed counts next to its own (a rounded slot may need another to give way: 18 of 32
    channels rounds to 16 or 24, where 16 of it and 8 of another may land nearer the target);
    otherwise each rounded slot to its nearer allowed count, and all of them rounded up."""
    if len(p.slots) <= _ENUMERATE:
        choices = []
        for slot in p.slots:
            n = p.counts[slot.id]
            below, above = pending.get(slot.id, (n, slot.next_count(n, 1)))
            choices.append([(slot.id, m) for m in dict.fromkeys((below, above)) if m is not None])
        return [{**p.counts, **dict(choice)} for choice in itertools.product(*choices)]
    nearest = dict(p.counts)
    for sid, (below, above) in pending.items():
        n = nearest[sid]
        nearest[sid] = above if above is not None and above - n < n - below else below
    return [nearest, {**p.counts, **{sid: below for sid, (below, _) in pending.items()}}]


def _give_back(p: PruningProblem, counts: Counts) -> Counts:
    """Give back the most important units, in allowed steps, while the target stays reached
    (rounding may pass it by far: a step of 8 channels can be a tenth of the MACs)."""
    counts = dict(counts)
    while p.reached(counts):
        cost = p.cost(counts)
        back = []
        for slot in p.slots:
            n = counts[slot.id]
            if n == 0:
                continue
            m = slot.rounded(n - 1)[0]
            state = {**counts, slot.id: m}
            if p.reached(state):
                added = p.saving(p.cost(state), cost)
                value = float(np.sum(slot.scores[slot.order[m:n]]))
                back.append((value / added if added > 0 else math.inf, slot.id, m))
        if not back:
            break
        _, sid, m = max(back)
        counts[sid] = m
    return counts


def round_widths(p: PruningProblem) -> None:
    """Round the widths of a state searched in fine steps to each slot's ``round_to``, and check
    the result again.

    When the search reached its target: of the allowed states around it (:func:`_neighbours`)
    those that reach the target too, the one removing least first (ties: the least important
    units), with the most important units then given back while the target stays reached.
    When it did not (the constraint stopped it): the allowed states nearest in cost to it, the
    more pruned first. Up to ``_TRIES`` of them are judged with recovery and the first that meets
    the constraint is committed; if none does, the unrounded state stays (it met the
    constraint) and the problem's note says so. A state already allowed that reached its target
    only gets units given back.
    """
    pending = {s.id: s.rounded(p.counts[s.id]) for s in p.slots if not s.allowed(p.counts[s.id])}
    # A latency target is measured on the current state only: no other state is known to reach it.
    reached = p.reached(p.counts) and p.ensure_target().kind != "latency"
    if not pending:
        if not reached:
            return
        states = [_give_back(p, p.counts)]
    elif reached:
        states = [state for state in _neighbours(p, pending) if state != p.counts and p.reached(state)]
        states.sort(key=lambda state: (p.saving(p.base_cost, p.cost(state)), _removed_importance(p, state)))
        if states:
            states[0] = _give_back(p, states[0])
    else:
        here = p.saving(p.base_cost, p.cost(p.counts))
        states = [state for state in _neighbours(p, pending) if state != p.counts]
        states.sort(key=lambda state: (abs(p.saving(p.base_cost, p.cost(state)) - here),
                                       -p.saving(p.base_cost, p.cost(state))))
    tried: list[Counts] = []
    for state in states:
        if len(tried) == _TRIES:
            break
        if state == p.counts or state in tried:
            continue
        tried.append(state)
        evaluation = p.trial(state, recover=True)
        if evaluation.passed:
            p.commit(state, "round widths to round_to" if pending else "give back units past the target", evaluation)
            return
    if pending:
        p.note = (p.note + "; " if p.note else "") + "widths could not be rounded to round_to within the constraint"
