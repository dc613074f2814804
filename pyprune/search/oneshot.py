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
from ._loop import Loop
from .problem import Evaluation, PruningProblem
from .spaces import Counts

__all__ = ["OneShotSearch"]


class OneShotSearch(Loop):
    """One cut to the target along a local or global ranking (see the module docstring)."""

    name = "oneshot"

    def __init__(self, scope: Literal["local", "global"] = "local", ratios: Mapping[str, float] | None = None,
                 bisection_steps: int = 8) -> None:
        if scope not in ("local", "global"):
            raise ValueError(f"scope must be 'local' or 'global', got {scope!r}")
        if ratios is not None and scope != "local":
            raise ValueError("ratios per group apply to scope='local'")
        if isinstance(bisection_steps, bool) or not isinstance(bisection_steps, int) or bisection_steps < 0:
            raise ValueError(f"bisection_steps must be a non-negative integer, got {bisection_steps!r}")
        self.scope = scope
        self.ratios = dict(ratios) if ratios is not None else None
        for sid, r in (self.ratios or {}).items():
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
                raise ValueError(f"ratio of {sid!r} must be a fraction in [0, 1], got {r!r}")
        self.bisection_steps = bisection_steps
        self.attempt: Evaluation | None = None  # the cut at the target when it broke the constraint
        self._global: np.ndarray | None = None
        self._below = 0.0  # the deepest depth found not to reach the target

    @property
    def label(self) -> str:
        return f"oneshot-{self.scope}"

    def prepare(self, p: PruningProblem) -> None:
        if self.ratios is not None:
            unknown = sorted(sid for sid, r in self.ratios.items() if sid not in p.by_id and r != 0)
            if unknown:
                why = [f"{sid} ({p.frozen[sid]})" if sid in p.frozen else sid for sid in unknown]
                raise ValueError(f"ratios name slots that cannot be pruned: {', '.join(why)}")
            if p.target is None:
                # No target of its own: the cut at the given ratios is the target.
                cost = p.cost(self.counts_at(p, 1.0))
                p.set_target(MACs(max(cost.macs / max(p.macs0, 1), 1e-12)))
        if self.scope == "global":
            # One ranking over every removable item: (normalised score, slot number, rank in slot).
            entries = []
            for i, s in enumerate(p.slots):
                ranked = s.scores[s.order[: s.cap]]
                entries.append(np.stack([ranked, np.full(len(ranked), i), np.arange(len(ranked))], axis=1))
            table = np.concatenate(entries)
            self._global = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]
        p.ensure_target()

    def counts_at(self, p: PruningProblem, t: float) -> Counts:
        """The cut at depth ``t`` in [0, 1] of the ranking (1 = every slot at its limit)."""
        t = min(max(t, 0.0), 1.0)
        if self.scope == "local":
            share = self.ratios if self.ratios is not None else {s.id: 1.0 for s in p.slots}
            return {s.id: s.count_for(t * share.get(s.id, 0.0)) for s in p.slots}
        assert self._global is not None
        k = int(round(t * len(self._global)))
        taken = np.bincount(self._global[:k, 1].astype(np.int64), minlength=len(p.slots))
        counts = {}
        for i, s in enumerate(p.slots):
            m = int(taken[i])
            while m > 0 and not s.allowed(m):
                m -= 1
            counts[s.id] = m
        return counts

    def _depth_for_target(self, p: PruningProblem) -> float | None:
        """Smallest depth whose cut reaches the target (None: not even the deepest cut does)."""
        if not p.reached(self.counts_at(p, 1.0)):
            return None
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if p.reached(self.counts_at(p, mid)):
                hi = mid
            else:
                lo = mid
        self._below = lo
        return hi

    def _fill(self, p: PruningProblem, depth: float) -> Counts:
        """The cut reaching the target with the least removed along the ranking.

        Every slot moves at the same depth, so with ``round_to`` the cut at the smallest depth that
        reaches the target can jump far past it (all slots take their next multiple at once). From
        the deepest cut that misses the target, single allowed steps are added instead, least
        important next items first, until the target is reached."""
        counts = self.counts_at(p, self._below) if self._below < depth else self.counts_at(p, depth)
        deepest = self.counts_at(p, depth)
        while not p.reached(counts):
            options = []
            for s in p.slots:
                n = counts[s.id]
                m = s.next_count(n, 1)
                if m is None:
                    continue
                options.append((float(np.mean(s.scores[s.order[n:m]])), s.id, m))
            if not options:
                return deepest
            _, sid, m = min(options)
            counts[sid] = m
        return counts

    def search(self, p: PruningProblem) -> None:
        if p.ensure_target().kind == "latency":
            self._latency_search(p)
            return
        depth = self._depth_for_target(p)
        if depth is None:
            p.note = "even removing every unit the limits allow does not reach it"
            depth = 1.0
            counts = self.counts_at(p, depth)
        elif self.ratios is not None:
            counts = self.counts_at(p, depth)  # the given ratios, scaled together: no filling
        else:
            counts = self._fill(p, depth)
        evaluation = p.trial(counts, recover=True)
        if evaluation.passed:
            p.commit(counts, f"one-shot {self.scope} cut", evaluation)
            return
        self.attempt = evaluation
        best = self._back_off(p, depth)
        if best is not None:
            p.commit(best[0], f"one-shot {self.scope} cut (backed off)", best[1])
        if not p.note:
            p.note = (f"the one-shot cut at the target breaks the constraint ({p.metric.name} "
                      f"{evaluation.metric:.4f})")

    def _back_off(self, p: PruningProblem, depth: float) -> tuple[Counts, Evaluation] | None:
        lo, hi, best = 0.0, depth, None
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            counts = self.counts_at(p, mid)
            evaluation = p.trial(counts, recover=True, early_stop=True)  # only pass/fail steers the bisection
            if evaluation.passed:
                lo, best = mid, (counts, evaluation)
            else:
                hi = mid
        return best

    def _latency_search(self, p: PruningProblem) -> None:
        """Latency: cut deeper along the ranking in MACs steps, measuring each cut physically."""
        if p.reached(p.counts):
            return
        last: tuple[Counts, Evaluation] | None = None
        steps = int(round(1.0 / p.options.checkpoint))
        for i in range(1, steps + 1):
            counts = self.counts_at(p, i / steps)
            if last is not None and counts == last[0]:
                continue
            evaluation = p.trial(counts, recover=True)
            if not evaluation.passed:
                p.note = f"deeper cuts break the constraint ({p.metric.name} {evaluation.metric:.4f})"
                break
            p.measure_every_commit()
            p.commit(counts, f"one-shot {self.scope} cut, depth {i / steps:.2f}", evaluation)
            last = (counts, evaluation)
            if p.reached(p.counts):
                return
