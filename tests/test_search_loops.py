"""Behaviour of the search loops' newer parts: one pass yielding outputs and statistics, greedy's
patience past failing states, recursive's one step per group per sweep."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pyprune
from pyprune import Dataset, MACs, load
from pyprune.evaluate import MaskedSession, RunningChannelStats
from pyprune.graph import DependencyGraph
from pyprune.recovery import Recovery

from _search import Search  # noqa: E402  (tests/ is on sys.path)

ASSETS = Path(pyprune.__file__).parent / "assets"
CNN = Path(__file__).parents[1] / "benchmarks" / "models" / "digits_cnn.onnx"
FAST = dict(quiet=True, measure_latency=False)


@pytest.fixture(scope="module")
def mlp():
    arrays = np.load(ASSETS / "digits.npz")
    return load(ASSETS / "digits_mlp.onnx"), Dataset({"input": arrays["input"]}, arrays["label"])


@pytest.fixture(scope="module")
def cnn():
    arrays = np.load(ASSETS / "digits.npz")
    data = Dataset({"input": arrays["input"][:96].reshape(-1, 1, 8, 8)}, arrays["label"][:96])
    return load(CNN), data


def test_one_pass_gives_the_outputs_and_statistics_of_separate_runs(cnn):
    model, data = cnn
    groups = [g for g in DependencyGraph(model).groups if g.prunable]
    recovery = Recovery(model, {g.id: [mp.node for mp in g.mask_points] for g in groups}, groups, mode="stats")
    session = MaskedSession(model, data, groups=groups, batch_size=40, affine=recovery.affine_points,
                            capture=recovery.capture, output_affine=recovery.output_points)
    keep = np.ones(groups[0].size, dtype=bool)
    keep[::3] = False
    masks = {groups[0].id: keep}
    outputs, stats = session.run_with_stats(masks)
    np.testing.assert_array_equal(outputs[0], session.run(masks)[0])
    separate = session.activation_stats(masks)
    assert set(stats) == set(separate) == set(recovery.capture)
    for name, s in stats.items():
        np.testing.assert_allclose(s.mean, separate[name].mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.var, separate[name].var, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.l2_norm, separate[name].l2_norm, rtol=1e-9)
        assert np.isnan(s.mean_abs).all() and np.isnan(s.zero_fraction).all()  # moments only
        assert not np.isnan(separate[name].mean_abs).any()


def test_moments_only_statistics_equal_the_full_ones():
    rng = np.random.default_rng(3)
    chunks = [np.maximum(rng.normal(5.0, 2.0, size=(n, 4, 3)), 0).astype(np.float32) for n in (3, 1, 7)]
    full, moments = RunningChannelStats("t", 1), RunningChannelStats("t", 1, moments_only=True)
    for chunk in chunks:
        full.update(chunk)
        moments.update(chunk)
    a, b = full.result(), moments.result()
    everything = np.concatenate(chunks).astype(np.float64)
    np.testing.assert_allclose(b.mean, everything.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(b.var, everything.var(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(b.l2_norm, np.sqrt((everything**2).sum(axis=(0, 2))), rtol=1e-9)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_allclose(a.zero_fraction, (everything == 0).mean(axis=(0, 2)))


def test_greedy_patience_goes_further_and_returns_only_passing_states(mlp):
    model, data = mlp
    runs = {p: Search("greedy", model, data, target=MACs(0.3), max_drop=0.01, patience=p, **FAST) for p in (0, 3)}
    results = {p: search.run() for p, search in runs.items()}
    for p, result in results.items():
        threshold = runs[p].threshold
        assert not result.met and result.metric >= threshold
        # Steps taken past a failing state and then abandoned are not in the history: a failing
        # state stays only where a passing one follows within ``patience`` steps.
        passed = [e.metric >= threshold for e in result.history if e.metric is not None]
        assert passed[-1]
        assert all(any(passed[i : i + p + 2]) for i in range(len(passed)))
        assert result.report.verified
    assert results[3].model.macs() <= results[0].model.macs()
    assert results[3].report.evaluations > results[0].report.evaluations


def test_greedy_rejects_a_bad_patience(mlp):
    model, data = mlp
    with pytest.raises(ValueError, match="patience must be a non-negative integer"):
        Search("greedy", model, data, patience=-1, **FAST)


def test_recursive_takes_one_step_per_group_per_sweep(cnn):
    model, data = cnn
    search = Search("recursive", model, data, target=MACs(0.3), max_drop=None, **FAST)
    result = search.run()
    assert result.met
    steps = [next(iter(e.removed)) for e in result.history if e.removed]
    first_sweep = steps[: len(search.slots)]
    assert len(set(first_sweep)) == len(search.slots)  # every group once before any twice
    depth = {s.id: s.depth for s in search.slots}
    assert [depth[s] for s in first_sweep] == sorted((depth[s] for s in first_sweep), reverse=True)


# -- lazy greedy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("recovery", ["none", "lstsq"])
def test_lazy_greedy_commits_only_judgements_of_the_current_state(cnn, recovery, monkeypatch):
    """A candidate judged in an earlier round is judged again before it is committed: every
    committed evaluation equals a judgement of that step made on the state it is committed to."""
    from pyprune.search import PruningProblem

    model, data = cnn
    commit = PruningProblem.commit
    checked = []

    def spy(self, counts, action, evaluation, orders=None):
        if action.startswith("remove"):
            again = self.trial(counts, orders, recover="quick")
            checked.append((evaluation.metric, again.metric, evaluation.loss, again.loss))
        return commit(self, counts, action, evaluation, orders)

    monkeypatch.setattr(PruningProblem, "commit", spy)
    # one step per commit: joined commits are judged on the joined state (test below)
    Search("greedy", model, data, target=MACs(0.6), max_drop=0.02, recovery=recovery, holdout=0.0,
           search={"batch": False}, quiet=True, measure_latency=False).run()
    assert len(checked) >= 3
    for metric, again, loss, loss_again in checked:
        assert metric == pytest.approx(again, abs=1e-9) and loss == pytest.approx(loss_again, rel=1e-6, abs=1e-9)


def test_lazy_greedy_judges_fewer_candidates_for_the_same_target(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.6), max_drop=0.02, recovery="lstsq", holdout=0.0, quiet=True, measure_latency=False)
    lazy = Search("greedy", model, data, search={"batch": False}, **settings).run()
    eager = Search("greedy", model, data, search={"lazy": False, "batch": False}, **settings).run()
    assert lazy.met and eager.met
    assert lazy.report.evaluations < eager.report.evaluations
    # the same constraint holds for both; the lazy path may differ, not its guarantee
    assert lazy.metric >= lazy.report.before.metric - 0.02 - 1e-9


def test_greedy_steps_grow_while_they_pass_and_fall_back_when_they_fail(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0, quiet=True, measure_latency=False)
    runs = {grow: Search("greedy", model, data, search={"grow": grow, "batch": False}, **settings) for grow in (1, 4)}
    results = {grow: s.run() for grow, s in runs.items()}
    assert all(r.met for r in results.values())
    steps = {grow: [sum(len(v) for v in e.removed.values()) for e in r.history if e.action.startswith("remove")]
             for grow, r in results.items()}
    first = {s.id: max(1, round(0.05 * s.size)) for s in runs[4].slots}
    assert max(steps[1]) <= max(first.values())  # fixed steps: never above the first size
    assert max(steps[4]) > max(first.values())  # grown steps
    assert len(steps[4]) < len(steps[1])  # fewer commits for the same target
    with pytest.raises(ValueError, match="grow"):
        Search("greedy", model, data, search={"grow": 0}, **settings)


# -- joined commits, and recovery that does not pay --------------------------------------------------


def _joined(result) -> list:
    return [e for e in result.history if e.action.startswith("remove") and len(e.removed) > 1]


def test_greedy_joins_cheap_steps_while_the_slack_allows(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0, quiet=True, measure_latency=False)
    runs = {batch: Search("greedy", model, data, search={"batch": batch}, **settings) for batch in (True, False)}
    results = {batch: search.run() for batch, search in runs.items()}
    assert all(r.met for r in results.values())
    assert _joined(results[True]) and not _joined(results[False])
    assert results[True].report.evaluations < results[False].report.evaluations
    for search, result in zip(runs.values(), results.values()):
        assert result.metric >= search.threshold and result.report.verified


def _failing_full_trials(monkeypatch, fails) -> list[dict[str, tuple[int, int]]]:
    """Make full-recovery trials fail where ``fails(moved, failed so far)`` says so; ``moved``:
    slot -> (count now, count judged). Returns the ``moved`` of every trial made to fail."""
    from pyprune.search import PruningProblem

    trial = PruningProblem.trial
    failed: list[dict[str, tuple[int, int]]] = []

    def failing(self, counts, orders=None, recover=False, early_stop=False):
        evaluation = trial(self, counts, orders, recover, early_stop)
        moved = {k: (self.counts[k], counts[k]) for k in counts if counts[k] != self.counts[k]}
        if recover is True and fails(moved, failed):
            failed.append(moved)
            return replace(evaluation, passed=False)
        return evaluation

    monkeypatch.setattr(PruningProblem, "trial", failing)
    return failed


def test_greedy_commits_the_best_step_alone_when_the_joined_state_fails(cnn, monkeypatch):
    """A joined state judged failing is not committed: the round commits its best step alone,
    and the next rounds join fewer steps."""
    model, data = cnn
    joined_trials = _failing_full_trials(monkeypatch, lambda moved, failed: len(moved) > 1)
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0,
                    quiet=True, measure_latency=False)
    result = search.run()
    assert joined_trials and not _joined(result)
    assert result.metric >= search.threshold
    assert search.loop._joined < len(search.slots)  # fewer joined after each failure


def test_greedy_keeps_a_joined_state_only_within_the_slack_it_was_planned_in(cnn, monkeypatch):
    """A joined state that passes but takes more than half the slack left is not committed (the
    steps together went further than one step at a time would): the best step goes alone."""
    from pyprune.search import PruningProblem

    model, data = cnn
    trial = PruningProblem.trial
    spent = []

    def nearly_at_the_floor(self, counts, orders=None, recover=False, early_stop=False):
        evaluation = trial(self, counts, orders, recover, early_stop)
        if recover is True and sum(counts[k] != self.counts[k] for k in counts) > 1:
            spent.append(counts)
            return replace(evaluation, metric=self.threshold + 1e-9, passed=True)
        return evaluation

    monkeypatch.setattr(PruningProblem, "trial", nearly_at_the_floor)
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0,
                    **FAST)
    result = search.run()
    assert spent and not _joined(result)
    assert search.loop._joined < len(search.slots)  # fewer joined after each refusal


def test_ranking_drops_are_scaled_by_what_full_judgements_kept(cnn, ranked):
    """Joined commits plan with a ranking judgement's drop scaled by the largest share of it the
    full judgements kept lately; drops judged on all the data, or before enough were learned,
    are taken as they are."""
    from pyprune.search.greedy import _KEPT_OF

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), metric="cosine", max_drop=0.01, recovery="lstsq",
                    holdout=0.0, **FAST)
    result = search.run()
    loop, p = search.loop, search.problem
    assert loop._kept and all(k >= 0 for k in loop._kept)  # learned from the run's confirmations
    ranked_eval = replace(p.current, samples=16)
    loop._kept = [0.5] * (_KEPT_OF - 1)
    assert loop._share_kept(ranked_eval) == 1.0  # too few learned yet
    loop._kept = [0.9, 0.1, 0.2, 0.3, 0.25][-_KEPT_OF:]
    assert loop._share_kept(ranked_eval) == pytest.approx(max(loop._kept[-_KEPT_OF:]))
    assert loop._share_kept(replace(ranked_eval, samples=None)) == 1.0
    loop._kept = [3.0] * _KEPT_OF  # a full judgement dropped more: never scaled up
    assert loop._share_kept(ranked_eval) == 1.0
    assert result.metric >= search.threshold


def test_ranked_steps_failing_as_judged_are_offered_when_their_expected_drop_fits(cnn, ranked):
    """A step ranked on part of the data that failed the constraint there is still offered (and
    then judged in full) when the share of its drop full judgements kept lately fits in half the
    slack; not before enough shares were learned, and never on a judgement of all the data or
    one stopped early."""
    from pyprune.search.greedy import _KEPT_OF

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), metric="cosine", max_drop=0.01, recovery="lstsq",
                    holdout=0.0, **FAST)
    search.run()
    loop, p = search.loop, search.problem
    assert p.current.passed
    loop._base = (p.current.metric, p.current.loss)
    slack = p.current.metric - p.threshold

    def ranked_drop(times: float, **changes):
        return replace(p.current, **{"metric": p.current.metric - times * slack, "passed": False, "samples": 16,
                                     **changes})

    loop._kept = [0.1] * _KEPT_OF
    assert loop._passes(p, ranked_drop(4))  # 0.4 of the slack expected
    assert not loop._passes(p, ranked_drop(6))  # 0.6: more than half
    assert not loop._passes(p, ranked_drop(4, samples=None))
    assert not loop._passes(p, ranked_drop(4, stopped_early=True))
    assert loop._passes(p, replace(p.current, samples=16))  # passed as judged
    loop._kept = [0.1] * (_KEPT_OF - 1)
    assert not loop._passes(p, ranked_drop(4))


def _diverging(monkeypatch, problem) -> list[int]:
    """Recovery passes whose outputs move further from the original each time: the count of
    passes run per settle."""
    from pyprune.recovery import Recovery

    run_pass = Recovery.run_pass
    calls: list[int] = []

    settle = type(problem)._settle
    passes = [0]  # of the settle under way

    def counted(self, *args, **kwargs):
        passes[0] = 0
        return settle(self, *args, **kwargs)

    def worse(self, session, masks, changed, **kwargs):
        outs, _ = run_pass(self, session, masks, changed, **kwargs)
        calls.append(1)
        passes[0] += 1
        if passes[0] == 1:  # the first as run, each later one twice as far from the original; never settles
            return outs, 1.0
        return [r + 2.0 ** (passes[0] - 1) * (o - r) for o, r in zip(outs, problem.reference)], 1.0
    monkeypatch.setattr(Recovery, "run_pass", worse)
    monkeypatch.setattr(type(problem), "_settle", counted)
    return calls


def test_recovery_passes_stop_once_they_move_away_from_the_original(cnn, monkeypatch):
    from pyprune.search.problem import _DIVERGING

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST)
    state = {s.id: s.size // 4 for s in search.slots}
    plain = search.problem.evaluate(state, corrections="none")
    calls = _diverging(monkeypatch, search.problem)
    search.problem.recovery.ends_adaptive = False
    evaluation = search.problem.trial(state, recover=True)
    assert len(calls) == 1 + _DIVERGING  # not the full count of passes
    assert evaluation.loss <= plain.loss + 1e-12  # the guard keeps the closest: no correction


def test_recovery_passes_that_overshoot_and_come_back_go_on(cnn, monkeypatch):
    """Refitting every layer at once can overshoot on the first correction and settle, passes
    later, far closer than it started (a folded CNN does): passes that come closer than the one
    before are not "moving away", however far the best so far."""
    from pyprune.recovery import Recovery
    from pyprune.search.problem import _DIVERGING

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", loss="mse",
                    **FAST)
    state = {s.id: s.size // 4 for s in search.slots}
    plain = search.problem.evaluate(state, corrections="none")
    reference = search.problem.reference
    run_pass = Recovery.run_pass
    away = [1.0, 6.0, 3.0, 0.5, 0.2, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]  # from the original, per pass
    calls: list[int] = []

    def overshooting(self, session, masks, changed, **kwargs):
        outs, _ = run_pass(self, session, masks, changed, **kwargs)
        k = away[min(len(calls), len(away) - 1)]
        calls.append(1)
        return [r + k * (o - r) for o, r in zip(outs, reference)], 1.0  # never settles
    monkeypatch.setattr(Recovery, "run_pass", overshooting)
    search.problem.recovery.ends_adaptive = False
    evaluation = search.problem.trial(state, recover=True)
    assert len(calls) > 3 + _DIVERGING
    assert evaluation.loss < 0.25 * plain.loss  # a pass past the overshoot was kept


def test_candidates_are_judged_without_reestimation_once_it_stops_paying(cnn, monkeypatch):
    from pyprune.search.problem import _QUICK_TRIES

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST)
    p = search.problem
    calls = _diverging(monkeypatch, p)
    states = [({**p.counts, slot.id: 1}, None) for slot in p.slots] * 3
    for state in states[:_QUICK_TRIES]:
        p.trials([state], recover="quick")
    assert calls  # each of those re-estimated
    before = len(calls)
    judged = p.trials(states[_QUICK_TRIES:_QUICK_TRIES + 4], recover="quick")
    assert len(calls) == before  # no pass: judged with the committed corrections
    assert all(e.corrections is None for e in judged)
    # the pause lasts until the model is cut by another tenth
    p.counts = {s.id: s.size // 2 for s in p.slots}
    p.trials([states[0]], recover="quick")
    assert len(calls) > before


# -- ranking on part of the data -----------------------------------------------------------------


@pytest.fixture
def ranked(monkeypatch):
    """Costly-model behaviour on the small CNN: every model ranks on part of its data."""
    import pyprune.search.problem as problem_module

    monkeypatch.setattr(problem_module, "_RANK_MACS", 0)


def test_costly_models_offer_a_ranking_part_of_whole_batches(cnn, ranked):
    model, data = cnn
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, holdout=0.0, **FAST).problem
    assert p.rank_samples == 24 and p.session.batches[0].stop == 24  # a quarter of 96, whole batches
    state = ({**p.counts, p.slots[0].id: 3}, None)
    part, whole = p.trials([state], samples=p.rank_samples)[0], p.trials([state])[0]
    assert part.samples == 24 and whole.samples is None
    assert part.outputs[0].shape[0] == 24
    np.testing.assert_allclose(part.outputs[0], whole.outputs[0][:24], rtol=1e-5, atol=1e-5)
    first = p.metric([o[:24] for o in whole.outputs], p.metric_target[:24])
    assert part.metric == pytest.approx(first)
    assert p.current_on(p.rank_samples) == pytest.approx(
        (p.metric([r[:24] for r in p.reference], p.metric_target[:24]), 0.0))
    with pytest.raises(ValueError, match="no full recovery"):
        p.trials([state], recover=True, samples=24)


def test_greedy_ranks_on_part_and_commits_only_states_judged_on_all(cnn, ranked, monkeypatch):
    from pyprune.search import PruningProblem

    model, data = cnn
    commit = PruningProblem.commit
    committed = []

    def spy(self, counts, action, evaluation, orders=None):
        committed.append(evaluation.samples)
        return commit(self, counts, action, evaluation, orders)

    monkeypatch.setattr(PruningProblem, "commit", spy)
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0, **FAST)
    result = search.run()
    assert search.problem.rank_samples == 24
    assert committed and all(s is None for s in committed)
    assert result.metric >= search.threshold and result.report.verified
    unranked = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0,
                      search={"rank_on_part": False}, **FAST)
    assert unranked.run().metric >= unranked.threshold


@pytest.mark.parametrize("recovery", ["lstsq", "none"])
def test_a_commit_judges_a_ranking_judgement_on_all_the_data(cnn, ranked, recovery):
    """A state offered with a ranking judgement that passes (greedy's tentative steps past a
    failure take the least-loss one) is judged on all the data when committed, and recorded as
    that judgement says: here it fails, since no cut keeps the cosine at 1. Once, a ranking
    judgement stood for the state, and a shipped encoder that had lost 9 points of agreement
    was reported as meeting a one-point constraint."""
    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.5), metric="cosine", max_drop=0.0, recovery=recovery,
                    holdout=0.0, **FAST)
    p = search.problem
    state = {**p.counts, p.slots[0].id: p.slots[0].size // 2}
    part = p.trials([(state, None)], samples=p.rank_samples)[0]
    assert part.samples == p.rank_samples
    committed = p.commit(state, "remove half of a slot", replace(part, metric=p.baseline, passed=True))
    assert committed.samples is None and not committed.passed
    assert p.current is committed and p.history.entries[-1].metric == committed.metric
    again = p.evaluate(p.counts, count=False)
    assert again.metric == pytest.approx(committed.metric) and again.metric < p.threshold


def test_a_shipped_state_that_fails_the_constraint_is_not_called_one_that_meets_it(cnn):
    """Whatever a loop leaves, the statement says whether the shipped model meets the constraint."""
    from pyprune.search.ship import ship

    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.1), metric="cosine", max_drop=0.0, recovery="none",
                    holdout=0.0, **FAST)
    p = search.problem
    state = {**p.counts, p.slots[0].id: p.slots[0].size // 2}
    p.commit(state, "remove half of a slot", p.trial(state))
    result = ship(p, search.loop)
    assert not result.met and result.metric < search.threshold
    assert "does not meet the constraint" in result.statement
    assert "found that meets the constraint" not in result.statement
    p.interrupted = True
    interrupted = ship(p, search.loop).statement
    assert "does not meet the constraint" in interrupted and "that meets the constraint:" not in interrupted


def test_a_step_refuted_on_all_the_data_is_not_committed(cnn, ranked, monkeypatch):
    """A step that passes on the ranking part and fails on all the data is not committed, and is
    not offered again from the same state."""
    model, data = cnn
    refuted = _failing_full_trials(monkeypatch, lambda moved, failed: len(moved) == 1 and not failed)
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=0.02, recovery="lstsq", holdout=0.0,
                    search={"batch": False}, **FAST)
    result = search.run()
    assert refuted
    (sid, (n, m)), = refuted[0].items()
    first = next(e for e in result.history if e.action.startswith("remove"))
    assert not (set(first.removed) == {sid} and len(first.removed[sid]) == m - n)
    assert result.metric >= search.threshold


def test_ranking_on_part_gives_the_same_path_through_a_process_pool(cnn, ranked):
    model, data = cnn
    settings = dict(target=MACs(0.6), max_drop=0.02, recovery="none", holdout=0.0, **FAST)
    local = Search("greedy", model, data, **settings).run()
    pooled = Search("greedy", model, data, executor="process", workers=2, **settings).run()
    assert [e.action for e in local.history] == [e.action for e in pooled.history]
    assert local.metric == pooled.metric


def test_without_a_constraint_greedy_takes_one_step_per_round(cnn):
    """Nothing would tell a joined state that went too far: without a constraint, no joins."""
    model, data = cnn
    settings = dict(target=MACs(0.5), max_drop=None, recovery="lstsq", quiet=True, measure_latency=False)
    result = Search("greedy", model, data, **settings).run()
    assert result.met and not _joined(result)


def test_later_passes_reuse_least_squares_sums_whose_inputs_did_not_change(mlp, monkeypatch):
    """A pass under the same masks skips the Gram matrices of layers whose input no changed
    correction lies above, and the corrections come out exactly as when every pass sums again."""
    from pyprune import core
    from pyprune.recovery import Recovery

    model, data = mlp
    state_of = lambda p: {s.id: s.size // 3 for s in p.slots}  # noqa: E731
    calls = []
    accumulate = core.gram_accumulate

    def counted(*args, **kwargs):
        calls.append(1)
        return accumulate(*args, **kwargs)

    monkeypatch.setattr(core, "gram_accumulate", counted)
    results = {}
    for reuse in (True, False):
        if not reuse:
            monkeypatch.setattr(Recovery, "_reusable", lambda self, *a: {})
        search = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST)
        search.problem.recovery.ends_adaptive = False
        calls.clear()
        evaluation = search.problem.trial(state_of(search.problem), recover=True)
        results[reuse] = (evaluation, len(calls), search.problem.recovery_runs)
    (a, calls_reused, runs_a), (b, calls_all, runs_b) = results[True], results[False]
    assert runs_a == runs_b > 1 and calls_reused < calls_all
    assert a.metric == b.metric and a.loss == b.loss
    for x, y in zip(a.corrections, b.corrections):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key], dtype=object if isinstance(x[key], tuple) else None),
                                          np.asarray(y[key], dtype=object if isinstance(y[key], tuple) else None))


def _settle_spans(monkeypatch) -> list[tuple[bool, int]]:
    """Every recovery settle from now on, as (whether refits end their paths, samples it ran on)."""
    from pyprune.search import PruningProblem

    settle = PruningProblem._settle
    spans: list[tuple[bool, int]] = []

    def spy(self, masks, changed, full, passes, moved):
        spans.append((self.recovery.refits_end_paths, self.session.batches[-1].stop))
        return settle(self, masks, changed, full, passes, moved)

    monkeypatch.setattr(PruningProblem, "_settle", spy)
    return spans


def test_costly_models_decide_how_far_to_correct_on_the_ranking_part(mlp, ranked, monkeypatch):
    """Both ways of correcting below a refit are tried on the ranking part; the chosen one then
    runs on the recovery part (here twice as many samples: the refit needs more rows than the
    ranking part holds; its sums are not taken from the ranking part's), and the state is
    judged on all the data."""
    import pyprune.recovery as recovery_module

    monkeypatch.setattr(recovery_module, "_ROWS_PER_UNKNOWN", 4)
    model, data = mlp
    spans = _settle_spans(monkeypatch)
    search = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST)
    p = search.problem
    assert p.rank_samples is not None and p.recovery.ends_adaptive
    state = {s.id: s.size // 3 for s in p.slots}
    evaluation = p.trial(state, recover=True)
    part, fitted, whole = p.rank_samples, p.recovery_samples, len(p.dataset)
    assert fitted == 2 * part < whole
    assert spans == [(True, part), (False, part), (p.recovery.refits_end_paths, fitted)]
    assert evaluation.samples is None and evaluation.outputs[0].shape[0] == whole


def test_a_decision_on_the_recovery_part_is_the_recovery(mlp, ranked, monkeypatch):
    """Where the recovery part is the ranking part, the chosen way's run in the decision is the
    full recovery (not run a third time); the state is still judged on all the data, and as its
    corrections judge it."""
    model, data = mlp
    spans = _settle_spans(monkeypatch)
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST).problem
    part = p.rank_samples
    assert part is not None and p.recovery_samples == part and p.recovery.ends_adaptive
    state = {s.id: s.size // 3 for s in p.slots}
    evaluation = p.trial(state, recover=True)
    assert spans == [(True, part), (False, part)]
    assert evaluation.samples is None and evaluation.outputs[0].shape[0] == len(p.dataset)
    again = p.evaluate(state, corrections=evaluation.corrections, count=False)
    assert evaluation.metric == again.metric and evaluation.loss == again.loss
    assert evaluation.loss < p.evaluate(state, corrections="none", count=False).loss


@pytest.mark.parametrize("rows_per_unknown, parts", [(2, 1), (4, 2), (6, None)])
def test_the_recovery_part_is_the_least_that_keeps_every_refit(mlp, ranked, monkeypatch, rows_per_unknown, parts):
    """Full recoveries fit on the ranking part when every least-squares refit keeps enough rows
    there for its unknowns (its rows sampled at the rate it has on all the data), else on twice
    it, else on all the data; statistics and refit rows then come from that part alone."""
    import pyprune.recovery as recovery_module

    monkeypatch.setattr(recovery_module, "_ROWS_PER_UNKNOWN", rows_per_unknown)
    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST).problem
    refits = [lin for lin in p.recovery.linears.values() if lin.fit == "lstsq"]
    assert p.rank_samples == 90 and refits  # the digits MLP's output layer: 32 inputs + intercept
    assert p.recovery_samples == (None if parts is None else parts * p.rank_samples)
    fitted_on = p.recovery_samples or p.fit_samples
    assert p.recovery.fit_rows == p.recovery_samples
    for lin in refits:  # one row per sample here: every sample of the part, none past it
        assert sum(t.shape[0] for t in lin.targets.values()) == fitted_on
        assert rows_per_unknown * (p.recovery._columns(lin) + 1) <= fitted_on
    state = {s.id: s.size // 3 for s in p.slots}
    assert p.trial(state, recover=True).loss < p.evaluate(state, corrections="none", count=False).loss


def test_costly_models_fit_recovery_on_part_and_judge_on_all(mlp, ranked):
    """A full recovery fitted on the recovery part is judged on every sample: its metric and loss
    are those of the state judged on all the data with the corrections it fitted."""
    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=0.05, recovery="lstsq", **FAST).problem
    assert p.recovery_samples is not None and p.recovery_samples < p.fit_samples
    state = {s.id: s.size // 3 for s in p.slots}
    fitted = p.trial(state, recover=True)
    again = p.evaluate(state, corrections=fitted.corrections, count=False)
    assert fitted.outputs[0].shape[0] == len(p.dataset)
    assert fitted.metric == again.metric and fitted.loss == again.loss
    assert fitted.loss < p.evaluate(state, corrections="none", count=False).loss


def _committed(mlp, share: int, **settings):
    """A costly-model greedy problem on the digits MLP (with the ``ranked`` fixture) that has
    committed ``1 / share`` of every layer with its recovery: the problem and that evaluation."""
    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=0.05, recovery="lstsq", **FAST, **settings).problem
    state = {s.id: s.size // share for s in p.slots}
    fitted = p.trial(state, recover=True)
    p.commit(state, f"1/{share} of every layer", fitted)
    return p, fitted


def test_the_state_shipped_is_refitted_on_all_the_data(mlp, ranked):
    """A costly model's recoveries are fitted on the first samples; the state to ship is refitted
    once on all of them, kept because it brings the outputs closer to the original, and what
    pyprune writes computes those corrections."""
    p, fitted = _committed(mlp, 2, holdout=0.0)
    part = p.recovery_samples
    assert part is not None and part < p.fit_samples
    shipped = p.final_refit()
    assert p.recovery_samples is None and p.recovery.fit_rows is None
    for lin in p.recovery.linears.values():  # every batch has its refit targets now
        if lin.fit == "lstsq":
            assert max(lin.targets) >= part
    assert shipped.loss < fitted.loss and shipped.metric >= fitted.metric
    assert p.current is shipped and any(f"not the first {part}" in note for note in p.notes)
    again = p.evaluate(p.counts, corrections=shipped.corrections, count=False)
    assert again.loss == pytest.approx(shipped.loss)


def test_recovery_passes_stop_at_the_deadline(mlp):
    """A recovery given a deadline already past runs one pass (its outputs judge the corrections
    it was fed) and begins no other; without one it runs on until the corrections settle."""
    import time

    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST).problem
    state = {s.id: s.size // 2 for s in p.slots}
    masks, changed = p.space.masks(state), p.changed(state)
    runs = p.recovery_runs
    p._settle(masks, changed, True, 6, None)
    free = p.recovery_runs - runs
    p.recovery.clear()
    runs = p.recovery_runs
    best = p._settle(masks, changed, True, 6, None, deadline=time.perf_counter())
    assert free >= 2 and p.recovery_runs - runs == 1 and best is not None


def test_a_refit_on_all_the_data_that_judges_worse_is_not_kept(mlp, ranked):
    """Here the refit on all the samples brings the outputs closer to the original but costs
    calibration accuracy: the search's corrections stay, and so does the part they were fitted on."""
    p, fitted = _committed(mlp, 3, holdout=0.0)
    part = p.recovery_samples
    shipped = p.final_refit()
    assert shipped.loss == pytest.approx(fitted.loss) and shipped.metric == fitted.metric
    assert p.recovery_samples == part and p.recovery.fit_rows == part
    assert not any("fitted samples on the state shipped" in note for note in p.notes)


def test_the_refit_on_all_the_data_is_skipped_when_it_would_pass_the_time_limit(mlp, ranked):
    p, fitted = _committed(mlp, 3, time_limit=3600)
    part = p.recovery_samples
    p._part_recovery_seconds = 3600.0  # scaled to all the samples, past the limit
    shipped = p.final_refit()
    assert p.recovery_samples == part and shipped.loss == pytest.approx(fitted.loss)


def test_the_refit_on_all_the_data_must_end_before_the_time_kept_for_shipping(mlp, ranked):
    """A refit that would end inside the limit but in the time kept back for shipping is skipped."""
    p, fitted = _committed(mlp, 3, time_limit=3600)
    part = p.recovery_samples
    p._setup_seconds = 900.0  # the search and the refit get 3600 - 2 * 900 s
    p._part_recovery_seconds = 2000.0 * part / p.fit_samples
    assert p.search_seconds() == 1800.0 and p.final_refit_seconds() == pytest.approx(2000.0)
    runs = p.recovery_runs
    shipped = p.final_refit()
    assert p.recovery_runs == runs and p.recovery_samples == part and shipped.loss == pytest.approx(fitted.loss)
    p._setup_seconds = 0.0  # the same refit, with the whole limit before it: it runs
    p.final_refit()
    assert p.recovery_runs > runs


@pytest.mark.parametrize("strategy, settings", [("oneshot", {}), ("recursive", {}), ("random", {}),
                                               ("greedy", {"rank_on_part": False})])
def test_loops_that_do_not_rank_on_part_fit_recovery_on_all_the_data(mlp, ranked, strategy, settings):
    """Only a loop that ranks its candidates on part of the data fits its recoveries on a part:
    one-shot ships after one recovery, which sees every calibration sample even on a costly model."""
    model, data = mlp
    p = Search(strategy, model, data, target=MACs(0.5), max_drop=None, recovery="lstsq", **FAST,
               **settings).problem
    assert p.rank_samples is not None and p.recovery_samples is None and p.recovery.fit_rows is None
    refits = [lin for lin in p.recovery.linears.values() if lin.fit == "lstsq"]
    assert refits and all(sum(t.shape[0] for t in lin.targets.values()) == p.fit_samples for lin in refits)


def test_cheap_models_fit_recovery_on_all_the_data(mlp):
    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=0.05, recovery="lstsq", **FAST).problem
    assert p.rank_samples is None and p.recovery_samples is None


def test_candidates_stop_judging_uncorrected_outputs_once_recovery_leaves_them_behind(cnn, monkeypatch):
    """Compared candidates run their uncorrected outputs too only while the last full recovery
    did not leave those far behind; a full recovery always runs them (and decides again)."""
    import pyprune.search.problem as problem_module

    model, data = cnn
    p = Search("greedy", model, data, target=MACs(0.5), max_drop=0.05, recovery="lstsq", holdout=0.0,
               **FAST).problem
    first = {**p.counts, p.slots[0].id: p.slots[0].size // 4}
    p.commit(first, "first", p.trial(first, recover=True))
    state = {**first, p.slots[1].id: p.slots[1].size // 4}
    for hopeless in (0.0, math.inf):  # uncorrected outputs left behind / never
        monkeypatch.setattr(problem_module, "_HOPELESS", hopeless)
        p.trial(state, recover=True)
        assert p._uncorrected_hopeless is (hopeless == 0.0)
        runs = p.recovery_runs
        p.trial(state, recover="quick")
        assert p.recovery_runs - runs == (2 if hopeless == 0.0 else 3)
