"""Recursive (iterative) pruning: a step at a time, nearest the output first, rolling back breaks.

Slots are visited from the one nearest the output toward the input (``direction="input"``
reverses that; ``"importance"`` visits them in the order of their least important unit). In the
current slot a step removes ``step`` of the units that remain (10% by default) and is judged
with recovery applied; a step that keeps the constraint is committed, a step that breaks it is
rolled back and retried at half the size down to a single unit.
Each sweep commits at most one step per slot, then moves on; sweeps repeat until the target is
met or a whole sweep commits nothing.
"""

from __future__ import annotations

import math
from typing import Literal

from ._loop import Loop, check_step
from .problem import PruningProblem
from .spaces import Slot

__all__ = ["RecursiveSearch"]


class RecursiveSearch(Loop):
    """Step-by-step pruning from the output side (see the module docstring)."""

    name = "recursive"

    def __init__(self, step: float | int = 0.1,
                 direction: Literal["output", "input", "importance"] = "output") -> None:
        if direction not in ("output", "input", "importance"):
            raise ValueError(f"direction must be 'output', 'input' or 'importance', got {direction!r}")
        self.step, self.direction = check_step(step), direction

    def _first_step(self, slot: Slot, n: int) -> int:
        if isinstance(self.step, int):
            return self.step
        return max(1, math.ceil(self.step * (slot.size - n)))

    def _visit_order(self, p: PruningProblem) -> list[Slot]:
        if self.direction == "output":
            return sorted(p.slots, key=lambda s: -s.depth)
        if self.direction == "input":
            return sorted(p.slots, key=lambda s: s.depth)
        return sorted(p.slots, key=lambda s: float(s.scores[s.order[0]]))

    def search(self, p: PruningProblem) -> None:
        exhausted: set[str] = set()
        steps: dict[str, int] = {}
        while not p.reached(p.counts):
            progress = False
            for slot in self._visit_order(p):
                if slot.id in exhausted:
                    continue
                # One committed step per slot per sweep: every slot takes its share before any
                # slot is cut to its limit, so the constraint's budget is not spent on the first
                # slots visited.
                k = steps.get(slot.id) or self._first_step(slot, p.counts[slot.id])
                while True:
                    n = p.counts[slot.id]
                    m = slot.next_count(n, k)
                    if m is None:
                        if k > 1:
                            k = max(1, k // 2)
                            continue
                        exhausted.add(slot.id)
                        break
                    candidate = {**p.counts, slot.id: m}
                    # Only pass/fail matters for a step that breaks the constraint: it may stop early.
                    evaluation = p.trial(candidate, recover=True, early_stop=True)
                    if evaluation.passed:
                        p.commit(candidate, f"remove {m - n} of {slot.id}", evaluation)
                        progress = True
                        steps[slot.id] = self._first_step(slot, m) if k == self._first_step(slot, n) else k
                        break
                    if k > 1:
                        k = max(1, k // 2)  # roll back and try a smaller step
                    else:
                        # Even one unit breaks the constraint: next sweep, after other slots'
                        # cuts and their recovery, it may not (the metric is not monotonic).
                        steps[slot.id] = 1
                        break
                if p.reached(p.counts):
                    return
            if not progress:
                p.note = "no step of any group or layer keeps the metric within the constraint"
                return
