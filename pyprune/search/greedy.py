"""Greedy pruning: each round, try the next step of every slot and commit the cheapest one.

Every candidate (the next ``step`` least important units of one group, one layer, or the next
elements of one weight) is judged in the session. Candidates that break the constraint on the
user's metric are dropped for the round (and their step halved); of the rest, the one with the
least increase of a smooth fidelity loss (KL divergence of softmax outputs, or MSE, to the
unpruned model) per unit of cost saved is committed, then recovery runs. Ranking by a smooth
loss rather than by the (saturating) metric is what lets the search tell good cuts from bad ones.

Rounds are lazy (``lazy=True``, the default): a candidate judged in an earlier round keeps the
rank it had then until it could be the round's choice; only then is it judged again, and a
candidate is committed only on a judgement of the current state. Cutting more rarely makes
another cut cheaper, so an earlier rank is in practice a lower bound, and a round usually judges
the slot that moved and one or two others instead of every slot (the "lazy greedy" of submodular
maximisation). ``lazy=False`` judges every slot every round.

When no candidate meets the constraint, the search may look ``patience`` steps further along the
least-loss path: judged on a few hundred samples the metric moves by single samples and is not
monotonic in what is removed, so a slightly deeper cut can meet the constraint again. If none of
those steps does, the search returns to the last state that met it; only such a state is ever
returned (also on Ctrl-C).

While the metric is far from the constraint, one step per round wastes most of a round: on a
ResNet-18 every step of the first half of the cut costs a hundredth of the allowed drop. So a
round may commit several steps at once (``batch``): with the best candidate, the next passing
ones (other slots, the better-ranked half, least rank first) whose metric drops, added up, stay
within half of the slack left to the constraint. Drops ranked on part of the data (below) are
first scaled by the share of such drops that full judgements kept lately: statistics matching on
a quarter of the samples overstates them several times over. The joined state is judged with the
full recovery before it is committed; when it fails the constraint, or takes more than the half
of the slack it was planned in, the round commits the best step alone, and the next rounds join
half as many (twice as many again after a joined state passes).
Near the constraint the slack admits no companion and the search is greedy one step at a time;
without a constraint it always is (nothing would tell a joined state that went too far).

On models where one run over the calibration data is costly (a ResNet or a BERT on a few dozen
samples), candidates are ranked on the first quarter of the fitted samples
(:attr:`~pyprune.search.problem.PruningProblem.rank_samples`; ``rank_on_part``), and the step
chosen is judged on all of them (with the full recovery a commit runs) before it is committed; a
step refuted there is not offered again from the same state, and its slot's step is halved. A
step that failed the constraint as ranked is still offered when the share of its drop that full
judgements kept lately fits in half the slack: late in a cut, statistics matching on a quarter of
the samples fails steps the full recovery keeps far inside the constraint.

Without a constraint, with a time limit or an evaluation budget (``pace``), steps are sized so that
the target is reached within it: after each commit, the cost saving still needed is divided by the
commits the budget still allows at the pace of the last few (``_PACE_OVER``; the first, which judged
every slot, is not counted; the time kept back for the final refit and shipping is not the
search's), and a slot whose step would save less than that share takes a larger one (its first step
doubled as often as it takes). Every candidate of a round then saves about the same, so ranking by
loss per unit of cost compares like with like. On a BERT-base-sized encoder without a constraint,
steps of 5 % of a group (one head, 154 neurons), doubled at most twice, reached 0.88 of the MACs in
five minutes of a half-MACs target; paced, 0.500 after 232 s of search, the whole run 277 s. Under a
constraint, joined commits already take large steps while the slack allows, and they grow as the
search goes on; paced steps from the start cost a ResNet-18 fidelity (cosine 0.9942 at 0.49 of the
MACs in 96 s, against 0.9984 in 102 s unpaced). So a constrained search is paced only once half of a
budget is spent and its recent commits, at their mean saving, would not reach the target in the rest
(no margin): the ResNet-18 keeps its path, and the BERT-base-sized encoder with 0.1 of cosine slack
reaches 0.494-0.679 of its MACs in five minutes (three runs), against 0.709 unpaced. Between rounds,
a candidate judged on an earlier state with another step keeps its rank, scaled by the ratio of the
steps, as an estimate for the new one (re-judged before it is chosen), so a change of pace does not
make a round judge every slot again. When the share is more than any one step can save (a capped
slot: 11 of a layer's 12 heads save 2.6 % of a BERT-base-sized encoder's MACs, and the pace asked
10-20 % late in a budget), the round's best-ranked steps of other slots join the best until they
make it, judged once as a whole (:meth:`_commit_paced`): the encoder then reached half its MACs
after 213 s of search instead of ending at 0.550 at the limit on the same path (cosine 0.904).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ._loop import Loop, check_step, round_widths
from .problem import Evaluation, PruningProblem
from .spaces import Cost, Slot

__all__ = ["GreedySearch"]

#: A judged candidate: (loss increase per unit of cost saved, slot id, count, evaluation, orders).
_Candidate = tuple[float, str, int, Evaluation, "dict[str, np.ndarray] | None"]
#: Identifies a candidate across rounds: slot id, its count before the step, after, which order.
_Key = tuple[str, int, int, int]
_Proposal = tuple[Slot, int, "dict[str, np.ndarray] | None"]
#: Candidates from earlier rounds judged again at once (a fixed number, so that every executor
#: takes the same path; two workers judge them side by side).
_REJUDGED = 2
#: A joined commit takes other steps only up to this multiple of the best step's loss per cost.
_JOIN_RANK = 2.0
#: Ranking judgements' metric drops are scaled by the largest share a full judgement kept of them
#: over this many recent steps judged both ways (until there are as many, by 1).
_KEPT_OF = 4
#: A paced search plans to reach its target with this share of the search's budget still left
#: (besides the time kept back for the final refit and shipping).
_PACE_MARGIN = 0.2
#: The pace is the mean time and evaluations of this many recent commits (each with its round).
_PACE_OVER = 5


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
    ``sliver``: a step that would leave a group below this fraction of its units is taken only
    when no other step passes (greedy by loss per unit of cost alone once cut 62 of a
    convolution's 64 channels while cheaper cuts elsewhere remained).

    Steps ignore ``round_to``: the search moves in fine steps and rounds the final widths to it
    afterwards, checking the rounded state again (:func:`~pyprune.search._loop.round_widths`).
    Candidates are compared with ``recover="quick"`` (statistics matching on top of the
    committed recovery); each commit runs the full recovery. When no candidate passes that way,
    the ``recheck`` least-loss ones are judged with the full recovery before the search gives up.
    ``lazy``: judge again only the candidates that could be a round's choice (module docstring).
    ``grow``: a slot's step doubles each time it is committed, up to ``grow`` times the first
    (1: fixed steps); a step that fails is halved either way.
    ``batch``: commit several passing steps in one round while the slack to the constraint allows
    (module docstring); only with a constraint.
    ``rank_on_part``: rank candidates on part of the calibration data where the problem offers one
    (costly models; module docstring).
    ``pace``: with a time limit or an evaluation budget and a params or MACs target, size the
    steps so that the target is reached within the budget (under a constraint, only once half of
    it is spent and the search is behind; module docstring).

    The defaults (steps of 5% of a group, at least one unit; no window; patience 3) were chosen
    on the folded-BatchNorm exports of ``benchmarks/bench_recovery.py``, where each candidate is
    judged with recovery: steps of 2% with a window of 3 took the torch CNN to the same accuracy
    in six times the evaluations (243 s against 38 s). ``window > 1`` lets the loss pick among
    the next units of single-unit steps (more evaluations per round).
    """

    name = "greedy"

    def __init__(self, step: float | int = 0.05, recover_candidates: bool = True, window: int = 1,
                 patience: int = 3, sliver: float = 0.25, recheck: int = 3, lazy: bool = True,
                 grow: int = 4, batch: bool = True, rank_on_part: bool = True, pace: bool = True) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.step, self.recover_candidates = check_step(step), bool(recover_candidates)
        self.window, self.patience = window, patience
        if isinstance(sliver, bool) or not isinstance(sliver, (int, float)) or not 0.0 <= sliver < 1.0:
            raise ValueError(f"sliver must be a fraction in [0, 1), got {sliver!r}")
        self.sliver = float(sliver)
        if isinstance(recheck, bool) or not isinstance(recheck, int) or recheck < 0:
            raise ValueError(f"recheck must be a non-negative integer, got {recheck!r}")
        self.recheck = recheck
        if not isinstance(lazy, bool):
            raise ValueError(f"lazy must be true or false, got {lazy!r}")
        self.lazy = lazy
        if isinstance(grow, bool) or not isinstance(grow, int) or grow < 1:
            raise ValueError(f"grow must be a positive integer, got {grow!r}")
        self.grow = grow
        if not isinstance(batch, bool):
            raise ValueError(f"batch must be true or false, got {batch!r}")
        self.batch = batch
        if not isinstance(rank_on_part, bool):
            raise ValueError(f"rank_on_part must be true or false, got {rank_on_part!r}")
        self.rank_on_part = rank_on_part
        if not isinstance(pace, bool):
            raise ValueError(f"pace must be true or false, got {pace!r}")
        self.pace = pace
        self._samples: int | None = None  # what candidates are judged on (None: all the data)
        self._base = (0.0, 0.0)  # the current state's metric and loss as the candidates see it
        self._refuted: set[tuple[str, int, int]] = set()  # steps that failed on all the data
        self._kept: list[float] = []  # per step judged both ways: share of its ranking drop kept
        self._joined = 0  # how many steps a round may join (set per search)
        self._round_passing: list[_Candidate] = []
        self._known: dict[_Key, _Candidate] = {}  # candidates judged in earlier rounds (lazy)
        self._first: dict[str, int] = {}  # each slot's first step
        self._cycles: list[tuple[float, int, float]] = []  # seconds, evaluations, saving of each commit's cycle
        self._ceiling: dict[str, int] = {}  # the pace raises no slot's step past this (it failed)
        self._paced: dict[str, int] = {}  # this round's steps as the pace sizes them
        self._pacing = False  # whether the pace has sized steps in this search
        self._share: float | None = None  # the saving this round's commit should make, when paced

    @property
    def fits_on_part(self) -> bool:
        return self.rank_on_part

    def _step_of(self, slot: Slot) -> int:
        if isinstance(self.step, int):
            return self.step
        return max(1, int(round(self.step * slot.size)))

    def search(self, p: PruningProblem) -> None:
        self._search(p)
        if not p.interrupted:
            round_widths(p)

    def _slivered(self, slot: Slot, m: int) -> bool:
        """Whether removing ``m`` items leaves ``slot`` a sliver (below ``sliver`` of its size)."""
        return slot.size - m < math.ceil(self.sliver * slot.size)

    def _search(self, p: PruningProblem) -> None:
        steps = {s.id: self._step_of(s) for s in p.slots}
        first = self._first = dict(steps)
        exhausted: set[str] = set()
        self._known = {}
        passing = None  # the last state that met the constraint, while looking past failing ones
        tentative = 0
        self._joined = len(p.slots)
        self._samples = p.rank_samples if self.rank_on_part else None
        self._refuted = set()
        self._kept = []
        self._cycles, self._ceiling, self._paced, self._pacing = [], {}, {}, False
        cycle = (p.elapsed(), p.evaluations, p.current.cost)
        try:
            while not p.reached(p.counts):
                # A cycle the time left cannot hold is not begun (its half would be thrown away).
                recent = self._recent_cycle()
                p.expect(recent[0] if recent else 0.0)
                self._pace(p, steps)
                grown = {sid for sid in steps if self._step(sid, steps) > first[sid]}
                best, failing = self._round(p, steps, exhausted)
                if best is not None and passing is None and (self._commit_joined(p, best, steps)
                                                             or self._commit_paced(p, best, steps)):
                    self._refuted = set()
                    cycle = self._cycle_done(p, cycle)
                    continue
                if best is not None and best[3].samples is not None:
                    best = self._confirm(p, best, steps)
                    if best is None:
                        continue  # refuted on all the data: the round is chosen again without it
                if best is None and any(c[1] in grown for c in failing):
                    continue  # a grown step failed: try its first size again before looking further
                if best is None and failing:
                    best = self._recheck(p, failing)
                best_failing = failing[0] if failing else None
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
                    self._grow(p, steps, [sid])
                self._refuted = set()
                cycle = self._cycle_done(p, cycle)
            if passing is not None:  # the target was reached on a failing state
                p.restore(passing)
                p.note = "no candidate step keeps the metric within the constraint"
        except KeyboardInterrupt:
            if passing is not None:
                p.restore(passing)  # ship only a state that meets the constraint
            raise

    def _grow(self, p: PruningProblem, steps: dict[str, int], committed: list[str]) -> None:
        """A step that passed may grow (up to ``grow`` times the first): large steps while the
        cut costs little, halved again where it fails. A slot the pace may not raise past a
        failed size may go twice as far after a commit."""
        for sid in committed:
            if self.grow > 1:
                steps[sid] = max(steps[sid], min(steps[sid] * 2, self._step_of(p.by_id[sid]) * self.grow))
            if sid in self._ceiling:
                self._ceiling[sid] *= 2

    def _step(self, sid: str, steps: dict[str, int]) -> int:
        """The step slot ``sid`` takes this round: its own, or the pace's when larger (up to the
        size that last failed, halved)."""
        return max(steps[sid], min(self._paced.get(sid, 0), self._ceiling.get(sid, self._paced.get(sid, 0))))

    def _halve(self, sid: str, steps: dict[str, int]) -> None:
        """After slot ``sid``'s step failed: half of it next time, and no more from the pace."""
        steps[sid] = max(1, self._step(sid, steps) // 2)
        if sid in self._paced:
            self._ceiling[sid] = steps[sid]

    def _cycle_done(self, p: PruningProblem, since: tuple[float, int, Cost]) -> tuple[float, int, Cost]:
        """Record the time, evaluations and cost saving of a commit since ``since`` (with its
        round); the start of the next cycle."""
        now = (p.elapsed(), p.evaluations, p.current.cost)
        self._cycles.append((now[0] - since[0], now[1] - since[1], p.saving(since[2], now[2])))
        return now

    def _recent_cycle(self) -> tuple[float, float, float] | None:
        """The mean seconds, evaluations and saving of the last ``_PACE_OVER`` commit cycles (the
        first, which judged every slot, is not counted); None before there are any.

        Means, not medians: the rounds that judge many slots again (a refuted step, a raised
        pace) or refit far (a large step) are a third of a BERT-base-sized encoder's, at three to
        five times the others' cost, and the budget pays for all of them."""
        recent = self._cycles[1:][-_PACE_OVER:]
        if not recent:
            return None
        seconds, evaluations, saved = np.mean(np.asarray(recent, dtype=np.float64), axis=0)
        return float(seconds), float(evaluations), float(saved)

    def _pace(self, p: PruningProblem, steps: dict[str, int]) -> None:
        """Size this round's steps from the budget (module docstring): each slot's step saves at
        least the share of the cost still needed that one commit must take for the target to be
        reached with ``_PACE_MARGIN`` of the budget left, at the pace of the recent commits.
        Under a constraint, only once half a budget is spent and the recent commits' mean saving
        would not reach the target in the whole budget (the search is behind)."""
        self._paced, self._share = {}, None
        needed = p.still_needed(p.current.cost)
        recent = self._recent_cycle()
        o = p.options
        if not self.pace or needed is None or needed <= 0 or recent is None:
            return
        seconds, evaluations, saved = recent
        constrained = p.threshold is not None
        margin = 0.0 if constrained else _PACE_MARGIN
        left = math.inf  # commits the budget still allows
        search = p.search_seconds()
        if search is not None:
            left = (search * (1 - margin) - p.final_refit_seconds() - p.elapsed()) / max(seconds, 1e-6)
        if o.max_evals is not None:
            left = min(left, (o.max_evals * (1 - margin) - p.evaluations) / max(evaluations, 1.0))
        if not math.isfinite(left):
            return
        if constrained and (not self._half_spent(p) or saved * left >= needed):
            # Joined commits take what the slack allows, at no cost in fidelity; they grow as a
            # search goes on, so early commits say little of its pace (a ResNet-18 paced from its
            # second commit reached its target sooner at cosine 0.9968, against 0.9984).
            return
        share = self._share = needed / max(left, 1.0)
        for slot in p.slots:
            n, step = p.counts[slot.id], steps[slot.id]
            m = slot.next_fine(n, step)
            if m is None:
                continue
            saved = p.saving(p.current.cost, p.cost({**p.counts, slot.id: m}))
            if saved <= 0 or saved >= share:
                continue
            units = share * (m - n) / saved
            paced = self._first[slot.id]
            while paced < units and n + paced < slot.cap:
                paced *= 2
            if paced > step:
                self._paced[slot.id] = paced
                self._pacing = True

    @staticmethod
    def _half_spent(p: PruningProblem) -> bool:
        """Whether half of a budget (the search's time, or the evaluations) has been spent."""
        search, most = p.search_seconds(), p.options.max_evals
        return (search is not None and p.elapsed() >= search / 2) or (most is not None and 2 * p.evaluations >= most)

    def _drop(self, p: PruningProblem, evaluation: Evaluation, base: float | None = None) -> float:
        """How much of the slack to the constraint a candidate used (metric units, >= 0), from
        ``base`` (default: the current state as the candidates see it)."""
        base = self._base[0] if base is None else base
        return max(0.0, base - evaluation.metric if p.metric.direction == "higher" else evaluation.metric - base)

    def _learn_kept(self, ranked_drop: float, full_drop: float) -> None:
        """Record how much of a ranking judgement's metric drop the full judgement on all the data
        kept (only where candidates are ranked on part of the data)."""
        if self._samples is not None and ranked_drop > 0:
            self._kept.append(full_drop / ranked_drop)

    def _share_kept(self, evaluation: Evaluation) -> float:
        """The share of a candidate's metric drop it is expected to keep once judged in full.

        Ranking judgements (part of the data, statistics matching on the committed corrections)
        overstate the drop: on a ResNet-18 the full recovery a commit runs leaves 5-25 % of it.
        Taken as it is, half the slack admitted one companion step at most; scaled by the
        largest share kept over the last few steps judged both ways, it admits what the full
        judgement of the joined state (which follows anyway) then shows to fit. 1 for drops
        judged on all the data, and until enough were learned."""
        if evaluation.samples is None or len(self._kept) < _KEPT_OF:
            return 1.0
        return min(1.0, max(self._kept[-_KEPT_OF:]))

    def _passes(self, p: PruningProblem, evaluation: Evaluation) -> bool:
        """Whether a candidate meets the constraint as far as the ranking can tell: it passed as
        judged, or it was ranked on part of the data and the share of its drop a full judgement
        is expected to keep (:meth:`_share_kept`, once learned) fits in half the slack left.

        Late in a cut, statistics matching on a quarter of the samples fails steps that the full
        recovery keeps well within the constraint (a ResNet-18 at 0.6 of its MACs: ranked 0.985,
        0.9993 in full), so judged as they are, every slot's step was halved to single units.
        The step chosen is judged in full before it is committed either way (:meth:`_confirm`)."""
        if evaluation.passed:
            return True
        if (evaluation.samples is None or evaluation.stopped_early or p.threshold is None
                or len(self._kept) < _KEPT_OF or not p.current.passed or not math.isfinite(evaluation.metric)):
            return False
        slack = abs(p.current.metric - p.threshold)
        return self._drop(p, evaluation) * self._share_kept(evaluation) <= slack / 2

    def _confirm(self, p: PruningProblem, best: _Candidate, steps: dict[str, int]) -> _Candidate | None:
        """Judge a step ranked on part of the data on all of it, with the full recovery a commit
        runs: the candidate to commit, or None when it fails there (then it is not offered again
        from this state, and its slot's step is halved)."""
        rank, sid, m, ranked, orders = best
        judged = p.trial({**p.counts, sid: m}, orders, recover=True)
        self._learn_kept(self._drop(p, ranked), self._drop(p, judged, p.current.metric))
        if judged.passed:
            return rank, sid, m, judged, orders
        self._refuted.add((sid, p.counts[sid], m))
        self._halve(sid, steps)
        return None

    def _commit_joined(self, p: PruningProblem, best: _Candidate, steps: dict[str, int]) -> bool:
        """Commit the round's best step with the passing steps of other slots that fit in half
        the slack left to the constraint (module docstring); False when there are none, or when
        the joined state fails and only the best step should be committed."""
        # Without a constraint nothing would stop a joined state that goes too far (measured: the
        # digits CNN at half its MACs kept 87% test accuracy joined, 99% one step at a time).
        if not self.batch or p.threshold is None or self._joined < 2 or best[4] is not None:
            return False
        slack = abs(p.current.metric - p.threshold)
        passing = sorted((c for c in self._round_passing if c[4] is None and c[1] != best[1]
                          and not self._slivered(p.by_id[c[1]], c[2])), key=lambda c: c[0])
        passing = passing[: (len(passing) + 1) // 2]  # the better-ranked half
        # ... and only steps about as cheap as the best, so that joining does not change the order
        # greedy would take them in by much
        passing = [c for c in passing if c[0] <= _JOIN_RANK * max(best[0], 0.0)]
        ranked = self._drop(p, best[3])  # the drops as judged, and as expected in full
        used = ranked * self._share_kept(best[3])
        state = {**p.counts, best[1]: best[2]}
        joined = [best]
        for candidate in passing:
            if len(joined) >= self._joined or p.reached(state):
                break
            drop = self._drop(p, candidate[3])
            expected = drop * self._share_kept(candidate[3])
            if used + expected > slack / 2:
                continue
            used += expected
            ranked += drop
            state[candidate[1]] = candidate[2]
            joined.append(candidate)
        if len(joined) < 2:
            return False
        evaluation = p.trial(state, recover=True)
        full = self._drop(p, evaluation, p.current.metric)
        self._learn_kept(ranked, full)
        # A joined state is kept only within the half of the slack it was planned in: steps that
        # pass alone can together take most of it (two stages' channels of a ResNet-18 took the
        # cosine from 0.9995 to 0.9901 at once), and greedy one step at a time would not go there.
        if not evaluation.passed or full > slack / 2:
            self._joined = max(1, self._joined // 2)
            return False
        if self._commit_steps(p, joined, state, evaluation, steps):
            self._joined = min(len(p.slots), self._joined * 2)
        return True

    def _round(self, p: PruningProblem, steps: dict[str, int],
               exhausted: set[str]) -> tuple[_Candidate | None, list[_Candidate]]:
        """Judge the slots' next steps: the best passing candidate and the failing ones (least
        rank first), each judged on the current state.

        A step that would leave its group a sliver is taken only when no other step passes."""
        proposals: dict[_Key, _Proposal] = {}
        for slot in p.slots:
            if slot.id in exhausted:
                continue
            n, step = p.counts[slot.id], self._step(slot.id, steps)
            m = slot.next_fine(n, step)
            if m is None:
                exhausted.add(slot.id)
                continue
            if step > self._first[slot.id] and p.reached({**p.counts, slot.id: m}):
                # A grown step past the target: the first size lands nearer to it; a paced one
                # takes the smallest doubling of the first that reaches it (the budget would not
                # allow many first-size steps).
                if slot.id in self._paced:
                    m = self._landing(p, slot, n, m)
                else:
                    m = slot.next_fine(n, self._first[slot.id]) or m
            for j, orders in enumerate(self._orders(slot, n, m)):
                proposals[(slot.id, n, m, j)] = (slot, m, orders)
        # Savings past the target are not credited: a step that overshoots it is ranked by the
        # part that was needed, so the last step lands near the target instead of far below.
        needed = p.still_needed(p.current.cost)
        self._base = p.current_on(self._samples)
        known = self._known_for(proposals) if self.lazy else {}
        fresh: dict[_Key, _Candidate] = {}
        self._judge(p, [k for k in proposals if k not in known], proposals, needed, fresh)
        while True:
            ranked = {**known, **fresh}
            best, failing = self._choose(p, ranked, proposals)
            if best is None:  # nothing passes: what failed on an earlier state may pass now
                stale = [k for k in failing if k not in fresh]
            elif best in fresh:
                break
            else:  # a candidate judged on an earlier state could be the choice: judge it again
                # (a sliver only when the best is one: else it cannot be the choice)
                sliver = self._slivered(proposals[best][0], ranked[best][2])
                stale = [k for k in sorted(ranked, key=lambda k: ranked[k][0])
                         if k not in fresh and self._passes(p, ranked[k][3])
                         and (sliver or not self._slivered(proposals[k][0], ranked[k][2]))][:_REJUDGED]
            if not stale:
                break
            self._judge(p, stale, proposals, needed, fresh)
        passed = {c[1] for c in fresh.values() if self._passes(p, c[3])}
        for sid in dict.fromkeys(c[1] for c in fresh.values()):
            if sid not in passed and self._step(sid, steps) > 1:
                # A smaller step next round. A slot whose single unit breaks the constraint
                # stays a candidate: after other cuts and their recovery it may pass again.
                self._halve(sid, steps)
        self._known.update(fresh)
        # The passing candidates a joined commit may add to the best: judged on this state, or on
        # an earlier one where the slot's step was the same (the joined state is judged anyway).
        self._round_passing = [c for c in {**known, **fresh}.values()
                               if self._passes(p, c[3]) and (c[1], p.counts[c[1]], c[2]) not in self._refuted]
        return (fresh[best] if best is not None else None), [fresh[k] for k in failing if k in fresh]

    def _commit_paced(self, p: PruningProblem, best: _Candidate, steps: dict[str, int]) -> bool:
        """Without a constraint, when the pace asks one commit for more than the best step saves
        (no step of a capped slot can: 11 of a layer's 12 heads save 2.6 % of a BERT-base-sized
        encoder's MACs): commit it with the next best-ranked steps of other slots until their
        savings together make the share, judged once as a whole. False when not paced, or when
        no other step is needed or at hand."""
        share = self._share
        if share is None or p.threshold is not None or best[4] is not None:
            return False
        state = {**p.counts, best[1]: best[2]}
        joined = [best]
        slivers = self._slivered(p.by_id[best[1]], best[2])  # as the choice was: only when nothing else
        for candidate in sorted(self._round_passing, key=lambda c: c[0]):
            if p.saving(p.current.cost, p.cost(state)) >= share or p.reached(state):
                break
            sid = candidate[1]
            if (candidate[4] is None and state[sid] == p.counts[sid]
                    and (slivers or not self._slivered(p.by_id[sid], candidate[2]))):
                state[sid] = candidate[2]
                joined.append(candidate)
        if len(joined) < 2:
            return False
        evaluation = p.trial(state, recover=True)
        if not evaluation.passed:
            return False
        self._commit_steps(p, joined, state, evaluation, steps)
        return True

    def _commit_steps(self, p: PruningProblem, joined: list[_Candidate], state: dict[str, int],
                      evaluation: Evaluation, steps: dict[str, int]) -> bool:
        """Commit the steps ``joined`` together as ``state`` (judged as ``evaluation``); their
        slots' steps grow when it passes. Whether it passed."""
        action = "remove " + ", ".join(f"{m - p.counts[sid]} of {sid}" for _, sid, m, _, _ in joined)
        if not p.commit(state, action, evaluation).passed:
            return False
        self._grow(p, steps, [c[1] for c in joined])
        return True

    def _landing(self, p: PruningProblem, slot: Slot, n: int, m: int) -> int:
        """The count of the smallest step from ``n`` (the slot's first step doubled) that
        reaches the target; ``m`` when none below it does."""
        step = self._first[slot.id]
        while n + step < m:
            landing = slot.next_fine(n, step)
            if landing is not None and p.reached({**p.counts, slot.id: landing}):
                return landing
            step *= 2
        return m

    def _known_for(self, proposals: dict[_Key, _Proposal]) -> dict[_Key, _Candidate]:
        """Candidates judged in earlier rounds, by the proposals they stand for: the same step,
        or (in a paced search, whose steps change with the pace) the step of the same slot last
        judged from the same state, whose rank, scaled by the ratio of the steps, stands in for
        the new step's until it could be chosen. The scale takes the loss as growing with the
        square of what a step removes (per unit saved, with the step); taken as they were,
        every smaller step's rank was below every larger one's, and each change of pace had
        every slot judged again."""
        latest: dict[tuple[str, int, int], tuple[int, _Candidate]] = {}
        for (sid, n, m, j), c in self._known.items():  # in the order judged: the latest wins
            latest[(sid, n, j)] = (m, c)
        known = {}
        for key in proposals:
            sid, n, m, j = key
            if key in self._known:
                known[key] = self._known[key]
            elif (sid, n, j) in latest and self._pacing:
                was, c = latest[(sid, n, j)]
                known[key] = (c[0] * (m - n) / max(was - n, 1), *c[1:])
        return known

    def _judge(self, p: PruningProblem, keys: list[_Key], proposals: dict[_Key, _Proposal],
               needed: float | None, into: dict[_Key, _Candidate]) -> None:
        """Judge the candidates ``keys`` on the current state as one batch (in parallel where the
        run's executor has workers and no recovery is re-estimated per candidate), into ``into``.

        A failing candidate may stop early; its loss is only needed when no candidate passes and
        the search looks past the failure, and then the stopped ones are judged again in full,
        so the ranking sees what it always saw."""
        if not keys:
            return
        states = [({**p.counts, proposals[k][0].id: proposals[k][1]}, proposals[k][2]) for k in keys]
        recover = "quick" if self.recover_candidates else False
        evaluations = p.trials(states, recover=recover, early_stop=True, samples=self._samples)
        if not any(self._passes(p, e) for e in evaluations) and not any(self._passes(p, c[3]) for c in into.values()):
            stopped = [i for i, e in enumerate(evaluations) if e.stopped_early]
            for i, evaluation in zip(stopped, p.trials([states[i] for i in stopped], recover=recover)):
                evaluations[i] = evaluation
        for key, evaluation in zip(keys, evaluations):
            slot, m, orders = proposals[key]
            saved = p.saving(p.current.cost, evaluation.cost)
            if needed is not None and needed > 0:
                saved = min(saved, needed)
            rank = (evaluation.loss - self._base[1]) / saved if saved > 0 else math.inf
            into[key] = (rank, slot.id, m, evaluation, orders)

    def _choose(self, p: PruningProblem, ranked: dict[_Key, _Candidate],
                proposals: dict[_Key, _Proposal]) -> tuple[_Key | None, list[_Key]]:
        """The least-rank passing candidate (a sliver only when nothing else passes) and the
        failing ones, least rank first."""
        best = best_sliver = None
        failing: list[_Key] = []
        for key, (rank, sid, m, evaluation, _) in ranked.items():
            if not self._passes(p, evaluation) or (sid, key[1], m) in self._refuted:
                failing.append(key)
            elif self._slivered(proposals[key][0], m):
                if best_sliver is None or rank < ranked[best_sliver][0]:
                    best_sliver = key
            elif best is None or rank < ranked[best][0]:
                best = key
        failing.sort(key=lambda k: ranked[k][0])
        return (best if best is not None else best_sliver), failing

    def _recheck(self, p: PruningProblem, failing: list[_Candidate]) -> _Candidate | None:
        """When no candidate passes with quick recovery, judge the ``recheck`` least-loss ones with
        the full recovery a commit would run: a refit repairs more than statistics matching."""
        if not self.recover_candidates or not p.recovery.active:
            return None
        best: _Candidate | None = None
        for rank, sid, m, _, orders in failing[: self.recheck]:
            evaluation = p.trial({**p.counts, sid: m}, orders, recover=True)
            if evaluation.passed and (best is None or evaluation.loss < best[3].loss):
                best = (rank, sid, m, evaluation, orders)
        return best

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
