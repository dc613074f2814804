"""Searches at scale: budgets, executors, early-stopping checks and block steps for weights.

Budgets (``max_evals``, ``time_limit``) stop a search like an interrupt and say so; executors
(local, a process pool, Ray) judge the same candidates with the same results; pass/fail checks that
stop early leave every search's result unchanged; weight slots step in blocks.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

import pyprune
from pyprune import Dataset, MACs, Sparsity, load
from pyprune.evaluate import Checker, Job, LocalExecutor, MaskedSession, ReplicaSpec
from pyprune.options import PruneOptions, format_duration, parse_duration
from pyprune.search import PruningProblem, sensitivity
from pyprune.search.problem import BudgetSpent
from pyprune.search.spaces import WEIGHT_BLOCK

from _models import gemm_mlp  # noqa: E402  (tests/ is on sys.path)
from _search import Search  # noqa: E402

ASSETS = Path(pyprune.__file__).parent / "assets"
CNN = Path(__file__).parents[1] / "benchmarks" / "models" / "digits_cnn.onnx"
FAST = dict(quiet=True, measure_latency=False)
HAVE_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def mlp():
    arrays = np.load(ASSETS / "digits.npz")
    return load(ASSETS / "digits_mlp.onnx"), Dataset({"input": arrays["input"]}, arrays["label"])


@pytest.fixture(scope="module")
def cnn():
    arrays = np.load(ASSETS / "digits.npz")
    data = Dataset({"input": arrays["input"][:96].reshape(-1, 1, 8, 8)}, arrays["label"][:96])
    return load(CNN), data


def _path(result) -> list[tuple]:
    """What a search did, step by step: the action, what it removed and the metric it saw."""
    return [(e.action, e.removed, e.metric, e.loss, e.macs) for e in result.history.entries]


# -- budgets ----------------------------------------------------------------------------------------


def test_durations_parse_and_print_as_written():
    assert [parse_duration(t) for t in ("90s", "10m", "1h", "1h30m", "45", 2.5)] == [90, 600, 3600, 5400, 45, 2.5]
    assert [format_duration(s) for s in (90, 600, 3600, 2.5)] == ["90s", "10m", "1h", "2.5s"]
    for bad in ("10x", "m", "-3", "0", None, True, "1m2"):
        with pytest.raises(ValueError, match="time_limit"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="max_evals"):
        PruneOptions(max_evals=0)
    with pytest.raises(ValueError, match="executor"):
        PruneOptions(executor="gpu")
    with pytest.raises(ValueError, match="ray_address"):
        PruneOptions(ray_address="auto")  # only with executor="ray"
    assert PruneOptions(time_limit="10m").time_limit == 600


@pytest.mark.parametrize("strategy", ["greedy", "recursive", "random", "oneshot"])
def test_an_evaluation_budget_stops_every_loop_with_a_passing_model(mlp, strategy):
    model, data = mlp
    # Greedy sizes its steps from a budget (pace); unpaced, its path is the unbounded one's.
    loop = {"search": {"pace": False}} if strategy == "greedy" else {}
    free = Search(strategy, model, data, target=MACs(0.3), max_drop=0.02, **loop, **FAST).run()
    budget = max(free.report.evaluations // 2, 1)
    search = Search(strategy, model, data, target=MACs(0.3), max_drop=0.02, max_evals=budget, **loop, **FAST)
    result = search.run()
    assert result.report.evaluations <= budget
    if free.report.evaluations > budget:
        assert not result.met and not result.interrupted
        assert f"the evaluation budget ({budget}) ran out" in result.statement
        assert result.metric is not None and search.problem.passes(result.metric)
        # Up to where the budget stopped it, the search did what the unbounded one did.
        assert _path(result) == _path(free)[: len(result.history.entries)]


def _steps(result) -> list[int]:
    return [sum(len(v) for v in e.removed.values()) for e in result.history.entries if e.action.startswith("remove")]


def test_a_paced_greedy_reaches_the_target_within_its_evaluation_budget(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.3), max_drop=None, recovery="lstsq", holdout=0.0, **FAST)
    free = Search("greedy", model, data, search={"pace": False}, **settings).run()
    budget = free.report.evaluations // 3
    unpaced = Search("greedy", model, data, search={"pace": False}, max_evals=budget, **settings).run()
    search = Search("greedy", model, data, max_evals=budget, **settings)
    paced = search.run()
    assert free.met and not unpaced.met
    assert paced.met and paced.report.evaluations <= budget
    # steps larger than growth alone allows (four times the first)
    assert max(_steps(paced)) > 4 * max(max(1, round(0.05 * s.size)) for s in search.slots)
    # paced by evaluations, the path is the same every time
    again = Search("greedy", model, data, max_evals=budget, **settings).run()
    assert _path(again) == _path(paced)


def test_a_paced_greedy_joins_steps_when_no_single_step_makes_the_share(cnn):
    """Late in a tight budget the pace asks more of a commit than any one slot's step saves: the
    best-ranked steps of several slots are committed together (never so without a pace)."""
    model, data = cnn
    settings = dict(target=MACs(0.1), max_drop=None, recovery="lstsq", holdout=0.0, **FAST)
    free = Search("greedy", model, data, search={"pace": False}, **settings).run()
    budget = free.report.evaluations // 4
    paced = Search("greedy", model, data, max_evals=budget, **settings).run()
    assert paced.met and paced.report.evaluations <= budget
    commits = [e for e in paced.history.entries if e.action.startswith("remove")]
    assert any(len(e.removed) > 1 for e in commits)
    assert all(len(e.removed) == 1 for e in free.history.entries if e.action.startswith("remove"))


def test_a_greedy_under_a_constraint_is_paced_only_when_behind(cnn):
    """Under a constraint, a budget the joined commits keep to leaves the path as it is; in one
    they do not, steps are sized up once half of it is spent, and the search gets further in it,
    still within the constraint."""
    model, data = cnn
    settings = dict(target=MACs(0.5), max_drop=0.05, recovery="lstsq", holdout=0.0, **FAST)
    free = Search("greedy", model, data, search={"pace": False}, **settings).run()
    roomy = Search("greedy", model, data, max_evals=free.report.evaluations * 3, **settings).run()
    assert free.met and _path(roomy) == _path(free)
    budget = free.report.evaluations // 3
    unpaced = Search("greedy", model, data, search={"pace": False}, max_evals=budget, **settings).run()
    paced = Search("greedy", model, data, max_evals=budget, **settings).run()
    assert not unpaced.met and paced.report.evaluations <= budget
    half = [e for e in paced.history.entries if e.evaluations <= budget // 2]
    assert len(half) >= 2
    assert _path(unpaced)[: len(half)] == _path(paced)[: len(half)]  # the same until half is spent
    assert paced.report.after.macs < unpaced.report.after.macs
    assert paced.metric >= paced.report.threshold


def test_a_pace_is_only_taken_where_it_is_needed(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.3), max_drop=None, recovery="lstsq", holdout=0.0, **FAST)
    free = Search("greedy", model, data, search={"pace": False}, **settings).run()
    roomy = Search("greedy", model, data, max_evals=free.report.evaluations * 10, **settings).run()
    assert _path(roomy) == _path(free)
    with pytest.raises(ValueError, match="pace"):
        Search("greedy", model, data, search={"pace": "yes"}, **settings)


def test_a_time_limit_stops_the_search_and_says_so(mlp):
    model, data = mlp
    result = Search("greedy", model, data, target=MACs(0.3), time_limit=1e-9, **FAST).run()
    assert not result.met and "the time limit (1e-09s) ran out" in result.statement
    assert result.report.evaluations == 0 and result.model.macs() == model.macs()


def test_a_time_limit_keeps_back_what_shipping_takes(mlp, monkeypatch):
    """The limit counts the whole call: the search stops twice the setup's time before it (at
    half of it at the latest), so that removal, checks and writing end within it."""
    model, data = mlp
    p = Search("greedy", model, data, target=MACs(0.3), time_limit=100, **FAST).problem
    assert p._setup_seconds > 0 and p.search_seconds() == pytest.approx(100 - 2 * p._setup_seconds)
    p._setup_seconds = 10.0
    assert p.search_seconds() == 80.0
    p._setup_seconds = 40.0
    assert p.search_seconds() == 50.0
    monkeypatch.setattr(PruningProblem, "elapsed", lambda self: 49.0)
    p.charge()
    monkeypatch.setattr(PruningProblem, "elapsed", lambda self: 51.0)
    with pytest.raises(BudgetSpent, match=r"the time limit \(100s\) ran out"):
        p.charge()
    assert Search("greedy", model, data, target=MACs(0.3), **FAST).problem.search_seconds() is None
    analysis = PruningProblem(model, data, PruneOptions(time_limit=100, quiet=True), ships=False)
    analysis._setup_seconds = 40.0
    assert analysis.search_seconds() == 100  # a sensitivity analysis ships nothing: it gets all of it


def test_a_greedy_does_not_begin_a_cycle_the_time_left_cannot_hold(cnn, monkeypatch):
    """With every evaluation taking ten seconds, the search stops between commits once the next
    cycle would pass the search's share of the limit, not in the middle of a round."""
    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.3), max_drop=None, time_limit=225, search={"pace": False},
                    **FAST)
    p = search.problem
    p._setup_seconds = 0.0
    monkeypatch.setattr(PruningProblem, "elapsed", lambda self: 220.0)
    with pytest.raises(BudgetSpent, match="time limit"):
        p.expect(5.0)
    p.expect(4.0)
    monkeypatch.setattr(PruningProblem, "elapsed", lambda self: 10.0 * self.evaluations)
    result = search.run()
    assert not result.met and "the time limit (225s) ran out" in result.statement
    last = result.history.entries[-1]
    assert last.action.startswith("remove") and last.evaluations == result.report.evaluations


def test_budgets_stop_a_sensitivity_analysis(cnn):
    model, data = cnn
    full = sensitivity(model, data, ratios=(0.25, 0.5), quiet=True)
    # Two groups (four evaluations) per batch: the second batch does not fit a budget of five.
    part = sensitivity(model, data, ratios=(0.25, 0.5), quiet=True, max_evals=5)
    assert part.stopped == "the evaluation budget (5) ran out" and not part.interrupted
    assert part.rows == full.rows[: len(part.rows)] and len(part.rows) < len(full.rows)
    assert "the evaluation budget (5) ran out" in str(part) and part.to_dict()["stopped"]


def test_the_log_line_of_a_budgeted_run_shows_the_pace_and_what_is_left(mlp, capsys):
    model, data = mlp
    Search("greedy", model, data, target=MACs(0.9), max_evals=50, time_limit="10m", measure_latency=False).run()
    err = capsys.readouterr().err  # not a terminal: one line per committed step
    assert "eval/s" in err and "evals left" in err and "left)" in err


# -- executors --------------------------------------------------------------------------------------


def test_a_batch_equals_the_states_judged_one_by_one(cnn):
    model, data = cnn
    problem = Search("greedy", model, data, target=MACs(0.5), **FAST).problem
    states = [({s.id: n}, None) for s in problem.slots for n in (1, 3)]
    alone = [problem.trial(c, o, recover=True) for c, o in states]
    together = problem.trials(states, recover=True)
    assert [(e.metric, e.loss, e.passed) for e in alone] == [(e.metric, e.loss, e.passed) for e in together]
    assert problem.evaluations == 2 * len(states)


def test_a_replica_judges_jobs_as_the_session_does(cnn):
    model, data = cnn
    problem = Search("greedy", model, data, target=MACs(0.5), **FAST).problem
    masks = problem.space.masks({problem.slots[0].id: 2})
    checker = Checker(problem.metric, problem.metric_target, 0.99)
    jobs = [Job(masks.groups, mode=mode) for mode in ("run", "stats", "check")]
    here = list(LocalExecutor(problem.session, checker).map(jobs))
    replica = ReplicaSpec.of(problem.session, checker, threads=1).build()
    there = list(LocalExecutor(replica, checker).map(jobs))
    for a, b in zip(here, there):
        assert (a.outputs is None) == (b.outputs is None)
        for x, y in zip(a.outputs or [], b.outputs or []):
            np.testing.assert_array_equal(x, y)
    assert here[1].stats is not None and there[1].stats is not None
    for name, stats in here[1].stats.items():
        np.testing.assert_array_equal(stats.mean, there[1].stats[name].mean)


def test_the_process_executor_gives_the_local_result(cnn):
    model, data = cnn
    settings = dict(target=MACs(0.6), max_drop=0.02, step=0.1, window=1, **FAST)
    local = Search("greedy", model, data, **settings).run()
    pooled = Search("greedy", model, data, executor="process", workers=2, **settings).run()
    assert _path(pooled) == _path(local) and local.report.evaluations == pooled.report.evaluations
    assert pooled.report.after.metric == local.report.after.metric


def test_the_process_executor_refuses_a_metric_it_cannot_send(cnn):
    model, data = cnn
    metric = pyprune.metrics.custom(lambda out, y: float((out.argmax(1) == y).mean()), name="mine", output=0)
    search = Search("greedy", model, data, metric=metric, executor="process", **FAST)
    with pytest.raises(ValueError, match="cannot be pickled"):
        _ = search.problem.executor


def _need_ray():
    if not HAVE_RAY:
        pytest.skip('Ray is not installed (pip install "pyprune[ray]"): the Ray executor is not tested')
    import ray

    return ray


def test_a_ray_it_starts_imports_the_package_this_process_runs(cnn, tmp_path, monkeypatch):
    # Ray puts the driver's working directory first on its workers' path: started from a folder
    # holding another `pyprune/` (a source checkout), the workers must still import this one.
    ray = _need_ray()
    assert not ray.is_initialized()
    (tmp_path / "pyprune").mkdir()
    (tmp_path / "pyprune" / "__init__.py").write_text("raise ImportError('the shadowing copy was imported')\n")
    monkeypatch.chdir(tmp_path)
    model, data = cnn
    settings = dict(target=MACs(0.8), max_drop=0.02, step=0.1, window=1, **FAST)
    remote = Search("greedy", model, data, executor="ray", workers=1, **settings).run()
    assert _path(remote) == _path(Search("greedy", model, data, **settings).run())
    assert not ray.is_initialized()  # the Ray it started is stopped with the search


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = _need_ray()
    # A Ray the user started: from a folder without a `pyprune/` in it (see the test above).
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        os.chdir(previous)
    yield ray
    ray.shutdown()


def test_the_ray_executor_gives_the_local_result(cnn, ray_cluster):
    model, data = cnn
    settings = dict(target=MACs(0.6), max_drop=0.02, step=0.1, window=1, **FAST)
    local = Search("greedy", model, data, **settings).run()
    remote = Search("greedy", model, data, executor="ray", workers=2, **settings).run()
    assert _path(remote) == _path(local) and local.report.evaluations == remote.report.evaluations
    assert ray_cluster.is_initialized()  # a Ray it did not start is left running
    table = sensitivity(model, data, ratios=(0.25, 0.5), quiet=True)
    assert sensitivity(model, data, ratios=(0.25, 0.5), quiet=True, executor="ray", workers=2).rows == table.rows


# -- early stop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("holdout", [0.0, 0.3])
@pytest.mark.parametrize("strategy", ["greedy", "recursive", "random", "oneshot"])
def test_checks_that_stop_early_leave_the_result_unchanged(mlp, strategy, holdout, monkeypatch):
    model, data = mlp
    # Several batches, so a failing candidate can stop before the end of the data (with a
    # holdout: before the end of its samples, or before the fitted ones). Without recovery:
    # candidates judged with re-estimated corrections need the whole data.
    settings = dict(granularity="weight", target=Sparsity(0.8), max_drop=0.01, batch_size=32, recovery="none",
                    holdout=holdout, **FAST)
    search = Search(strategy, model, data, **settings)
    judged = []
    evaluation = PruningProblem._evaluation

    def spy(self, result, *args):
        out = evaluation(self, result, *args)
        judged.append(out.stopped_early)
        return out

    monkeypatch.setattr(PruningProblem, "_evaluation", spy)
    fast = search.run()
    monkeypatch.setattr(PruningProblem, "stops_early", property(lambda self: False))
    full = Search(strategy, model, data, **settings).run()
    assert _path(fast) == _path(full) and fast.report.after == full.report.after
    assert any(judged), "no candidate stopped early: the test does not test the early stop"


def test_an_early_stop_never_fails_a_candidate_within_rounding_of_the_threshold(mlp):
    model, data = mlp
    session = MaskedSession(model, data, batch_size=16)
    exact = session.check("accuracy", 1.0, early_stop=False)
    assert exact.passed is False
    # A threshold at the exact value passes whether the check may stop early or not.
    assert session.check("accuracy", exact.value, early_stop=True).passed
    stopped = session.check("accuracy", 1.0, early_stop=True)
    assert stopped.stopped_early and stopped.outputs is None and stopped.value >= exact.value
    full = session.check("accuracy", 0.0, early_stop=True)
    assert full.outputs is not None and full.value == exact.value


def test_a_check_about_a_holdout_judges_its_samples_first_and_runs_the_rest_only_when_it_passes(mlp):
    model, data = mlp
    split = 256
    session = MaskedSession(model, data, batch_size=32, split_at=split)
    outputs = session.run()
    labels = data.labels
    on_holdout = float(np.mean(outputs[0][split:].argmax(1) == labels[split:]))
    passed = session.check("accuracy", on_holdout, early_stop=True, judged_from=split)
    assert passed.passed and passed.value == pytest.approx(on_holdout)
    np.testing.assert_array_equal(passed.outputs[0], outputs[0])  # whole, in sample order
    failed = session.check("accuracy", 1.0, early_stop=True, judged_from=split)
    assert not failed.passed and failed.stopped_early and failed.outputs is None
    assert failed.samples <= len(labels) - split  # the fitted samples never ran


# -- weight blocks ----------------------------------------------------------------------------------


def test_weight_slots_step_in_blocks_and_take_the_last_partial_one():
    model = load(gemm_mlp((64, 48, 10)))
    problem = Search("greedy", model, None, granularity="weight", target=Sparsity(0.5), **FAST).problem
    for slot in problem.slots:
        block = max(1, math.ceil(WEIGHT_BLOCK * slot.size))
        assert slot.min_step == block
        assert slot.next_count(0, 1) == block
        assert slot.next_count(slot.cap - 1, 1) == slot.cap  # the remainder, smaller than a block
        assert slot.next_count(slot.cap, 1) is None


def test_greedy_on_weights_needs_far_fewer_evaluations_than_elements(mlp):
    model, data = mlp
    result = Search("greedy", model, data, granularity="weight", target=Sparsity(0.3), max_drop=0.02, **FAST).run()
    assert result.met
    removed = result.report.before.nonzeros - result.report.after.nonzeros
    # Steps of one element would take (window x) one evaluation per element removed.
    assert result.report.evaluations < removed / 10


# -- the command line and recipes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    arrays = np.load(ASSETS / "digits.npz")
    np.savez(root / "data.npz", input=arrays["input"], label=arrays["label"])
    return root, ASSETS / "digits_mlp.onnx", root / "data.npz"


def test_cli_budgets_stop_with_exit_1_and_say_which_ran_out(digits_files):
    from _cli import cli

    root, model, data = digits_files
    out = root / "budget.onnx"
    proc = cli("prune", model, "-o", out, "--macs", "0.3", "--data", data, "--labels", "label",
               "--max-evals", "4", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "the evaluation budget (4) ran out" in proc.stderr and out.is_file()
    proc = cli("prune", model, "-o", root / "slow.onnx", "--macs", "0.3", "--data", data, "--labels", "label",
               "--time-limit", "0.000001s", "--quiet")
    assert proc.returncode == 1 and "the time limit" in proc.stderr
    for args, needle in ((("--time-limit", "ten"), "duration"), (("--max-evals", "0"), "positive integer"),
                         (("--ray-address", "auto"), "--ray-address needs --executor ray")):
        proc = cli("prune", model, "-o", root / "x.onnx", "--macs", "0.5", *args)
        assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1


def test_recipes_take_budgets_and_executors(digits_files):
    from pyprune.app.recipes import RecipeError, parse_recipe

    root, model, data = digits_files
    raw = {"model": str(model), "output": str(root / "r.onnx"), "data": {"path": str(data), "labels": "label"},
           "time_limit": "10m", "step": [{"granularity": "channel", "macs": 0.5, "max_evals": 20,
                                          "executor": "process", "workers": 2}]}
    step = parse_recipe(raw, root / "recipe.toml", allow_outside=True).steps[0]
    assert (step.options.time_limit, step.options.max_evals, step.options.executor) == (600, 20, "process")
    with pytest.raises(RecipeError, match="time_limit"):
        parse_recipe({**raw, "time_limit": "soon"}, root / "recipe.toml", allow_outside=True)


# -- external data ----------------------------------------------------------------------------------


def test_external_data_is_mapped_and_a_pruned_model_matches_its_masked_search(tmp_path):
    import onnx

    from pyprune.evaluate import run_model

    proto = gemm_mlp((64, 96, 48, 10), seed=3)
    onnx.save_model(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    model = load(tmp_path / "ext.onnx")
    big = [t.name for t in model.proto.graph.initializer if t.dims and np.prod(t.dims) * 4 >= 1024]
    assert big and all(isinstance(model.weight(n), np.memmap) for n in big)  # mapped, never read in
    assert all(not t.raw_data for t in model.proto.graph.initializer if t.name in big)
    data = Dataset({"x": np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)})
    result = pyprune.prune(model, data, target=MACs(0.6), max_drop=None, strategy="oneshot", **FAST)
    assert result.met and result.report.verified  # the shipped model ran and matched the masked search
    out = result.model.save(tmp_path / "small.onnx", external_data=True)
    onnx.checker.check_model(str(out), full_check=True)
    reloaded = load(out)
    np.testing.assert_allclose(run_model(reloaded, data)[0], run_model(result.model, data)[0], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0 and load(tmp_path / "ext.onnx").macs() == model.macs()



def _external_and_inline(tmp_path: Path):
    """The same MLP saved with external data (every tensor) and as one file, both loaded."""
    import onnx

    proto = gemm_mlp((64, 96, 48, 10), seed=3)
    onnx.save_model(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    onnx.save_model(proto, str(tmp_path / "inline.onnx"))
    return load(tmp_path / "ext.onnx"), load(tmp_path / "inline.onnx")


def _large(model) -> list[str]:
    return [t.name for t in model.proto.graph.initializer if np.prod(t.dims) * 4 >= 1024]


def test_a_shipped_model_with_external_data_holds_no_weight_in_its_protobuf_and_saves_the_same_weights(tmp_path):
    import hashlib

    import onnx
    import onnxruntime as ort
    from onnx import external_data_helper

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    ext, inline = _external_and_inline(tmp_path)
    inputs = {p: digest(p) for p in tmp_path.iterdir()}
    data = Dataset({"x": np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)})
    # the default recovery folds corrections into every weight it cuts: the full path of a build
    shipped = [pyprune.prune(m, data, target=MACs(0.6), max_drop=None, strategy="oneshot", **FAST).model
               for m in (ext, inline)]
    large = _large(shipped[0])
    assert large and all(external_data_helper.uses_external_data(t) and not t.raw_data
                         for t in shipped[0].proto.graph.initializer if t.name in large)
    assert shipped[0].proto.ByteSize() < 4096  # the graph, no weight data
    (tmp_path / "out").mkdir()
    out = shipped[0].save(tmp_path / "out" / "small.onnx")
    onnx.checker.check_model(str(out), full_check=True)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reloaded = load(out)
    assert reloaded.external_data and set(reloaded.weight_names) == set(shipped[1].weight_names)
    for name in shipped[1].weight_names:  # bit for bit what the same edits give in memory
        np.testing.assert_array_equal(reloaded.weight(name), shipped[1].weight(name))
    assert {p: digest(p) for p in inputs} == inputs  # the inputs are untouched


def test_removal_from_a_model_with_external_data_equals_slicing_and_masking(tmp_path):
    from pyprune.evaluate import run_model
    from pyprune.graph import DependencyGraph
    from pyprune.surgery import remove_units

    ext, inline = _external_and_inline(tmp_path)
    graph = DependencyGraph(ext)
    removals = {g.id: np.arange(0, g.size, 3) for g in graph.prunable_groups}
    pruned = remove_units(ext, removals, graph)
    sliced = remove_units(inline, removals)
    for name in sliced.weight_names:
        np.testing.assert_array_equal(pruned.weight(name), sliced.weight(name))
    data = Dataset({"x": np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)})
    masked = MaskedSession(ext, data, groups=graph.prunable_groups)
    keep = {g.id: np.isin(np.arange(g.size), removals[g.id], invert=True) for g in graph.prunable_groups}
    expected = masked.run(group_masks=keep)[0]
    np.testing.assert_allclose(run_model(pruned, data)[0], expected, rtol=1e-4, atol=1e-5)


def test_scratch_files_of_edited_weights_go_with_the_models_that_read_them(tmp_path):
    import gc

    from onnx import external_data_helper

    from pyprune.graph import DependencyGraph
    from pyprune.surgery import remove_units

    ext, _ = _external_and_inline(tmp_path)
    graph = DependencyGraph(ext)
    pruned = remove_units(ext, {graph.prunable_groups[0].id: [0, 1, 2]}, graph)
    files = {Path(external_data_helper.ExternalDataInfo(t).location) for t in pruned.proto.graph.initializer
             if external_data_helper.uses_external_data(t)} - {Path("ext.onnx.data")}
    assert files and all(f.is_file() and tmp_path not in f.parents for f in files)  # private, not by the input
    copy = pruned.copy()
    del pruned
    gc.collect()
    assert all(f.is_file() for f in files)  # the copy still reads them
    copy.save(tmp_path / "saved.onnx")  # reads its own file from now on
    gc.collect()
    assert not any(f.exists() for f in files)
    assert not any(f.parent.exists() for f in files)


def test_a_time_limit_stops_a_batch_in_its_middle_and_counts_what_was_judged(cnn, monkeypatch):
    model, data = cnn
    search = Search("greedy", model, data, target=MACs(0.3), time_limit=60, **FAST)
    assert len(search.problem.slots) > 3  # the first round is one batch of more than three candidates
    # The clock passes the limit once three candidates are judged.
    monkeypatch.setattr(PruningProblem, "elapsed", lambda self: 100.0 if self.evaluations >= 3 else 0.0)
    result = search.run()
    assert result.report.evaluations == 3 and "the time limit (1m) ran out" in result.statement
    assert result.model.macs() == model.macs()  # a round that did not finish commits nothing
