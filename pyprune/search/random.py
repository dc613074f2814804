"""Random search: random removals, kept when the constraint holds, reverted otherwise.

Each trial picks one to ``max_slots`` slots at random and removes a random number of units from
each (up to ``step`` of the slot): by default the least important ones next in line
(``mode="importance"``: random search weighted toward unimportant units), or uniformly random
units among those left (``mode="uniform"``). Each trial is judged with recovery applied; one that
meets the constraint is committed, any other is reverted. The loop ends at the target or after
``trials`` trials. Everything random comes from one generator seeded with the run's ``seed``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ._loop import Loop
from .problem import PruningProblem

__all__ = ["RandomSearch"]


class RandomSearch(Loop):
    """Seeded random trials (see the module docstring)."""

    name = "random"

    def __init__(self, trials: int = 200, step: float = 0.1, max_slots: int = 2,
                 mode: Literal["importance", "uniform"] = "importance") -> None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"trials must be a positive integer, got {trials!r}")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.0 < float(step) <= 1.0:
            raise ValueError(f"step must be a fraction in (0, 1], got {step!r}")
        if isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 1:
            raise ValueError(f"max_slots must be a positive integer, got {max_slots!r}")
        if mode not in ("importance", "uniform"):
            raise ValueError(f"mode must be 'importance' or 'uniform', got {mode!r}")
        self.trials, self.step, self.max_slots, self.mode = trials, float(step), max_slots, mode

    def search(self, p: PruningProblem) -> None:
        rng = np.random.default_rng(p.options.seed)
        for _ in range(self.trials):
            if p.reached(p.counts):
                return
            active = [s for s in p.slots if s.next_count(p.counts[s.id], 1) is not None]
            if not active:
                p.note = "every group is at its limit"
                return
            picked = rng.choice(len(active), size=int(rng.integers(1, min(self.max_slots, len(active)) + 1)),
                                replace=False)
            candidate = dict(p.counts)
            orders: dict[str, np.ndarray] = {}
            for i in sorted(picked.tolist()):
                slot = active[i]
                n = p.counts[slot.id]
                largest = max(1, math.ceil(self.step * slot.size))
                m = slot.next_count(n, int(rng.integers(1, largest + 1)))
                if m is None:
                    m = slot.next_count(n, 1)
                assert m is not None  # the slot is active: one more item is allowed
                candidate[slot.id] = m
                if self.mode == "uniform" and slot.reorderable:
                    rest = slot.order[n:slot.cap]  # items past the cap are never removed
                    chosen = rng.choice(len(rest), size=m - n, replace=False)
                    taken = np.zeros(len(rest), dtype=bool)
                    taken[chosen] = True
                    orders[slot.id] = np.concatenate([slot.order[:n], rest[taken], rest[~taken],
                                                      slot.order[slot.cap:]])
            # A failing trial is reverted unseen: its judgement may stop early.
            evaluation = p.trial(candidate, orders or None, recover=True, early_stop=True)
            if evaluation.passed:
                removed = ", ".join(f"{candidate[sid] - p.counts[sid]} of {sid}"
                                    for sid in candidate if candidate[sid] != p.counts[sid])
                p.commit(candidate, f"remove {removed}", evaluation, orders or None)
        if not p.reached(p.counts):
            p.note = f"the trial budget ({self.trials}) ran out"
