"""One-shot pruning: remove the least important units to the target in one cut.

``scope="local"`` removes the same fraction of every group (or ``ratios`` per group, e.g. from
:meth:`~pyprune.search.sensitivity.Sensitivity.allocate`; with ratios and no target the cut is
exactly those ratios, with a target the ratios are scaled down together until it is just
reached); ``scope="global"`` ranks all units of all groups together by their
normalised scores. The cut is judged once (with recovery); when it breaks the constraint, the
largest cut along the same ranking that meets it is found by bisection and returned, with a
statement saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from ..targets import MACs
from ._base import Counts, Evaluation, Search

__all__ = ["OneShotSearch"]


class OneShotSearch(Search):
    """One cut to the target along a local or global ranking (see the module docstring)."""

    name = "oneshot"

    def __init__(self, *args, scope: Literal["local", "global"] = "local",
                 ratios: Mapping[str, float] | None = None, bisection_steps: int = 8, **kwargs) -> None:
        if scope not in ("local", "global"):
            raise ValueError(f"scope must be 'local' or 'global', got {scope!r}")
        self.scope = scope
        self.ratios = dict(ratios) if ratios is not None else None
        self.bisection_steps = int(bisection_steps)
        if self.ratios is not None and scope != "local":
            raise ValueError("ratios per group apply to scope='local'")
        super().__init__(*args, **kwargs)
        self.name = f"oneshot-{scope}"
        if self.ratios is not None:
            unknown = sorted(sid for sid, r in self.ratios.items() if sid not in self.by_id and r != 0)
            if unknown:
                why = [f"{sid} ({self.frozen[sid]})" if sid in self.frozen else sid for sid in unknown]
                raise ValueError(f"ratios name slots that cannot be pruned: {', '.join(why)}")
            for sid, r in self.ratios.items():
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
                    raise ValueError(f"ratio of {sid!r} must be a fraction in [0, 1], got {r!r}")
            if kwargs.get("target") is None:
                # No target of its own: the cut at the given ratios is the target.
                cost = self.cost(self.counts_at(1.0))
                self.target = MACs(max(cost.macs / max(self.macs0, 1), 1e-12))
        if scope == "global":
            # One ranking over every removable item: (normalised score, slot number, rank in slot).
            entries = []
            for i, s in enumerate(self.slots):
                ranked = s.scores[s.order[: s.cap]]
                entries.append(np.stack([ranked, np.full(len(ranked), i), np.arange(len(ranked))], axis=1))
            table = np.concatenate(entries)
            self._global = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]

    def counts_at(self, t: float) -> Counts:
        """The cut at depth ``t`` in [0, 1] of the ranking (1 = every slot at its limit)."""
        t = min(max(t, 0.0), 1.0)
        if self.scope == "local":
            share = self.ratios if self.ratios is not None else {s.id: 1.0 for s in self.slots}
            return {s.id: s.count_for(t * share.get(s.id, 0.0)) for s in self.slots}
        k = int(round(t * len(self._global)))
        taken = np.bincount(self._global[:k, 1].astype(np.int64), minlength=len(self.slots))
        counts = {}
        for i, s in enumerate(self.slots):
            m = int(taken[i])
            while m > 0 and not s.allowed(m):
                m -= 1
            counts[s.id] = m
        return counts

    def _depth_for_target(self) -> float | None:
        """Smallest depth whose cut reaches the target (None: not even the deepest cut does)."""
        if not self.reached(self.counts_at(1.0)):
            return None
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.reached(self.counts_at(mid)):
                hi = mid
            else:
                lo = mid
        return hi

    def _loop(self) -> None:
        if self.target.kind == "latency":
            self._latency_loop()
            return
        depth = self._depth_for_target()
        if depth is None:
            self.note = "even removing every unit the limits allow does not reach it"
            depth = 1.0
        counts = self.counts_at(depth)
        evaluation = self.trial(counts, recover=True)
        if evaluation.passed:
            self.commit(counts, f"one-shot {self.scope} cut", evaluation)
            return
        self.history_note_failure(evaluation)
        best = self._back_off(depth)
        if best is not None:
            self.commit(best[0], f"one-shot {self.scope} cut (backed off)", best[1])
        if not self.note:
            self.note = (f"the one-shot cut at the target breaks the constraint ({self.metric.name} "
                         f"{evaluation.metric:.4f})")

    def history_note_failure(self, evaluation: Evaluation) -> None:
        self.attempt = evaluation  # the cut at the target, kept for reports and benchmarks

    def _back_off(self, depth: float) -> tuple[Counts, Evaluation] | None:
        lo, hi, best = 0.0, depth, None
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            counts = self.counts_at(mid)
            evaluation = self.trial(counts, recover=True)
            if evaluation.passed:
                lo, best = mid, (counts, evaluation)
            else:
                hi = mid
        return best

    def _latency_loop(self) -> None:
        """Latency: cut deeper along the ranking in MACs steps, measuring each cut physically."""
        if self.reached(self.counts):
            return
        last: tuple[Counts, Evaluation] | None = None
        steps = int(round(1.0 / self.checkpoint))
        for i in range(1, steps + 1):
            counts = self.counts_at(i / steps)
            if last is not None and counts == last[0]:
                continue
            evaluation = self.trial(counts, recover=True)
            if not evaluation.passed:
                self.note = f"deeper cuts break the constraint ({self.metric.name} {evaluation.metric:.4f})"
                break
            self._last_checkpoint_macs = float("inf")  # measure every cut
            self.commit(counts, f"one-shot {self.scope} cut, depth {i / steps:.2f}", evaluation)
            last = (counts, evaluation)
            if self.reached(self.counts):
                return
