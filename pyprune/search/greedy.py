"""Greedy pruning: each round, try the next step of every slot and commit the cheapest one.

Every candidate (the next ``step`` least important units of one group, one layer, or the next
elements of one weight) is judged in the session. Candidates that break the constraint on the
user's metric are dropped for the round (and their step halved); of the rest, the one with the
least increase of a smooth fidelity loss (KL divergence of softmax outputs, or MSE, to the
unpruned model) per unit of cost saved is committed, then recovery runs. Ranking by a smooth
loss rather than by the (saturating) metric is what lets the search tell good cuts from bad ones.

When no candidate meets the constraint, the search may look ``patience`` steps further along the
least-loss path: judged on a few hundred samples the metric moves by single samples and is not
monotonic in what is removed, so a slightly deeper cut can meet the constraint again. If none of
those steps does, the search returns to the last state that met it; only such a state is ever
returned (also on Ctrl-C).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ._loop import Loop, check_step
from .problem import Evaluation, PruningProblem
from .spaces import Slot

__all__ = ["GreedySearch"]

#: A judged candidate: (loss increase per unit of cost saved, slot id, count, evaluation, orders).
_Candidate = tuple[float, str, int, Evaluation, "dict[str, np.ndarray] | None"]


class GreedySearch(Loop):
    """Least loss per unit of cost saved, one step per round (see the module docstring).

    ``step``: units per candidate step, as a fraction of the slot's size (or a count).
    ``recover_candidates``: re-estimate recovery statistics inside every candidate evaluation
    too (default; about twice the evaluation cost, and much better ranked: a cut that BN
    re-estimation repairs is not mistaken for a bad one. Recovery after each commit is always done).
    ``window``: with ``window > 1`` each group offers its ``window`` least important remaining
    units one at a time as separate candidates, so the loss, not only the importance score,
    picks which unit goes (``window`` times the evaluations per round).
    ``patience``: how many steps past a state where no candidate meets the constraint the search
    looks for one that meets it again (0: stop there).

    The defaults (steps of 2% of a group, at least one unit; a window of 3; patience 3) were
    chosen on the digits CNN and MLP of ``benchmarks/bench_search.py``: under a 1-point
    constraint on 360 calibration images they take the CNN to 0.495 of its MACs at 99.2% held-out
    accuracy (steps of 5% without a window or patience stopped near 0.77 on an earlier, less
    well trained version of the CNN). Steps are single channels on small groups; on wide models
    (hundreds of channels per group) single-unit steps mean many rounds of ``window`` evaluations
    per group; a larger ``step`` (the window applies to single-unit steps only) is faster.
    """

    name = "greedy"

    def __init__(self, step: float | int = 0.02, recover_candidates: bool = True, window: int = 3,
                 patience: int = 3) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.step, self.recover_candidates = check_step(step), bool(recover_candidates)
        self.window, self.patience = window, patience

    def _step_of(self, slot: Slot) -> int:
        if isinstance(self.step, int):
            return self.step
        return max(1, int(round(self.step * slot.size)))

    def search(self, p: PruningProblem) -> None:
        steps = {s.id: self._step_of(s) for s in p.slots}
        exhausted: set[str] = set()
        passing = None  # the last state that met the constraint, while looking past failing ones
        tentative = 0
        try:
            while not p.reached(p.counts):
                best, best_failing = self._round(p, steps, exhausted)
                if best is None and best_failing is not None and self.patience:
                    # No step keeps the constraint. On a few hundred samples the metric is not
                    # monotonic in what is removed, so look up to ``patience`` steps further
                    # along the least-loss path for a state that meets it again.
                    if passing is None:
                        passing, tentative = p.state(), 0
                    tentative += 1
                    if tentative <= self.patience:
                        best = best_failing
                if best is None:
                    if passing is not None:
                        p.restore(passing)
                    p.note = "no candidate step keeps the metric within the constraint"
                    return
                _, sid, m, evaluation, orders = best
                n = p.counts[sid]
                if p.commit({**p.counts, sid: m}, f"remove {m - n} of {sid}", evaluation, orders).passed:
                    passing = None
            if passing is not None:  # the target was reached on a failing state
                p.restore(passing)
                p.note = "no candidate step keeps the metric within the constraint"
        except KeyboardInterrupt:
            if passing is not None:
                p.restore(passing)  # ship only a state that meets the constraint
            raise

    def _round(self, p: PruningProblem, steps: dict[str, int],
               exhausted: set[str]) -> tuple[_Candidate | None, _Candidate | None]:
        """Judge every slot's next step; the best passing candidate and the best failing one."""
        best = best_failing = None
        # Savings past the target are not credited: a step that overshoots it is ranked by the
        # part that was needed, so the last step lands near the target instead of far below.
        needed = p.still_needed(p.current.cost)
        candidates: list[tuple[Slot, int, dict[str, np.ndarray] | None]] = []
        for slot in p.slots:
            if slot.id in exhausted:
                continue
            n = p.counts[slot.id]
            m = slot.next_count(n, steps[slot.id])
            while m is None and steps[slot.id] > 1:
                steps[slot.id] = max(1, steps[slot.id] // 2)
                m = slot.next_count(n, steps[slot.id])
            if m is None:
                exhausted.add(slot.id)
                continue
            candidates.extend((slot, m, orders) for orders in self._orders(slot, n, m))
        # The round's candidates are independent: judged as one batch (in parallel where the
        # run's executor has workers). A failing candidate may stop early; its loss is only
        # needed when no candidate passes and the search looks past the failure, and then the
        # stopped ones are judged again in full, so the ranking below sees what it always saw.
        states = [({**p.counts, slot.id: m}, orders) for slot, m, orders in candidates]
        evaluations = p.trials(states, recover=self.recover_candidates, early_stop=True)
        if self.patience and not any(e.passed for e in evaluations):
            stopped = [i for i, e in enumerate(evaluations) if e.stopped_early]
            redone = p.trials([states[i] for i in stopped], recover=self.recover_candidates) if stopped else []
            for i, evaluation in zip(stopped, redone):
                evaluations[i] = evaluation
        passed: set[str] = set()
        for (slot, m, orders), evaluation in zip(candidates, evaluations):
            saved = p.saving(p.current.cost, evaluation.cost)
            if needed is not None and needed > 0:
                saved = min(saved, needed)
            rank = (evaluation.loss - p.current.loss) / saved if saved > 0 else math.inf
            entry = (rank, slot.id, m, evaluation, orders)
            if evaluation.passed:
                passed.add(slot.id)
                if best is None or rank < best[0]:
                    best = entry
            elif best_failing is None or rank < best_failing[0]:
                best_failing = entry
        for sid in dict.fromkeys(slot.id for slot, _, _ in candidates):
            if sid not in passed and steps[sid] > 1:
                # A smaller step next round. A slot whose single unit breaks the constraint
                # stays a candidate: after other cuts and their recovery it may pass again.
                steps[sid] = max(1, steps[sid] // 2)
        return best, best_failing

    def _orders(self, slot: Slot, n: int, m: int) -> Iterator[dict[str, np.ndarray] | None]:
        """Candidate item orders of one slot: the importance order, or (window > 1, single-unit
        steps) each of the ``window`` next units moved to the front of what remains."""
        if self.window == 1 or m - n != 1 or not slot.reorderable:
            yield None
            return
        rest = slot.order[n:]
        for j in range(min(self.window, slot.cap - n)):  # items past the cap are never removed
            moved = np.concatenate([slot.order[:n], rest[j : j + 1], np.delete(rest, j)])
            yield {slot.id: moved}
