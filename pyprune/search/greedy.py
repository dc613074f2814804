"""Greedy pruning: each round, try the next step of every slot and commit the cheapest one.

Every candidate (the next ``step`` least important units of one group, one layer, or the next
elements of one weight) is judged in the session. Candidates that break the constraint on the
user's metric are dropped for the round (and their step halved); of the rest, the one with the
least increase of a smooth fidelity loss (KL divergence of softmax outputs, or MSE, to the
unpruned model) per unit of cost saved is committed, then recovery runs. Ranking by a smooth
loss rather than by the (saturating) metric is what lets the search tell good cuts from bad ones.
"""

from __future__ import annotations

import math

import numpy as np

from ._base import Evaluation, Search

__all__ = ["GreedySearch"]


class GreedySearch(Search):
    """Least loss per unit of cost saved, one step per round (see the module docstring).

    ``step``: units per candidate step, as a fraction of the slot's size (or a count).
    ``recover_candidates``: re-estimate recovery statistics inside every candidate evaluation
    too (default; about twice the evaluation cost, and much better ranked: a cut that BN
    re-estimation repairs is not mistaken for a bad one. Recovery after each commit is always done).
    ``window``: with ``window > 1`` each group offers its ``window`` least important remaining
    units one at a time as separate candidates, so the loss, not only the importance score,
    picks which unit goes (``window`` times the evaluations per round).
    """

    name = "greedy"

    def __init__(self, *args, step: float | int = 0.05, recover_candidates: bool = True,
                 window: int = 1, **kwargs) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.window = window
        if isinstance(step, bool) or not (isinstance(step, int) and step >= 1 or
                                          isinstance(step, float) and 0.0 < step <= 1.0):
            raise ValueError(f"step must be a fraction in (0, 1] or a positive unit count, got {step!r}")
        self.step, self.recover_candidates = step, bool(recover_candidates)
        super().__init__(*args, **kwargs)

    def _step_of(self, slot) -> int:
        if isinstance(self.step, int):
            return self.step
        return max(1, int(round(self.step * slot.size)))

    def _loop(self) -> None:
        steps = {s.id: self._step_of(s) for s in self.slots}
        exhausted: set[str] = set()
        while not self.reached(self.counts):
            best: tuple[float, str, int, Evaluation] | None = None
            for slot in self.slots:
                if slot.id in exhausted:
                    continue
                n = self.counts[slot.id]
                m = slot.next_count(n, steps[slot.id])
                while m is None and steps[slot.id] > 1:
                    steps[slot.id] = max(1, steps[slot.id] // 2)
                    m = slot.next_count(n, steps[slot.id])
                if m is None:
                    exhausted.add(slot.id)
                    continue
                candidate = {**self.counts, slot.id: m}
                any_passed = False
                for orders in self._orders(slot, n, m):
                    evaluation = self.trial(candidate, orders, recover=self.recover_candidates)
                    if not evaluation.passed:
                        continue
                    any_passed = True
                    saved = self.saving(self.current.cost, evaluation.cost)
                    rank = (evaluation.loss - self.current.loss) / saved if saved > 0 else math.inf
                    if best is None or rank < best[0]:
                        best = (rank, slot.id, m, evaluation, orders)
                if not any_passed:
                    if steps[slot.id] > 1:
                        steps[slot.id] = max(1, steps[slot.id] // 2)
                    else:
                        exhausted.add(slot.id)
            if best is None:
                self.note = "no candidate step keeps the metric within the constraint"
                return
            _, sid, m, evaluation, orders = best
            n = self.counts[sid]
            self.commit({**self.counts, sid: m}, f"remove {m - n} of {sid}", evaluation, orders)

    def _orders(self, slot, n: int, m: int):
        """Candidate item orders of one slot: the importance order, or (window > 1, single-unit
        steps) each of the ``window`` next units moved to the front of what remains."""
        if self.window == 1 or m - n != 1 or slot.kind not in ("group", "weight"):
            yield None
            return
        rest = slot.order[n:]
        for j in range(min(self.window, len(rest))):
            moved = np.concatenate([slot.order[:n], rest[j : j + 1], np.delete(rest, j)])
            yield {slot.id: moved}
