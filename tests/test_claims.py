"""What a search claims is what it ships: the spaces' counts equal the physically pruned model's,
and whether a target was reached is decided on the shipped model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyprune
from pyprune.data import Dataset
from pyprune.graph import DependencyGraph, load
from pyprune.options import Limits, PruneOptions
from pyprune.search import ChannelSpace, LayerSpace
from pyprune.surgery import remove_layers, remove_units
from pyprune.targets import MACs, Params

from _models import CATALOGUE, random_inputs  # noqa: E402  (tests/ is on sys.path)
from _search import Search  # noqa: E402
from test_layers import nested_residual, resnet_like, transformer_like  # noqa: E402

FAST = dict(quiet=True, measure_latency=False)
LAYER_MODELS = {"resnet_like": resnet_like, "nested_residual": nested_residual, "transformer_like": transformer_like}


def figures(model) -> tuple[int, int, int]:
    return model.params(), model.macs(), model.nonzeros()


@pytest.mark.parametrize("name", sorted(LAYER_MODELS))
def test_layer_costs_equal_the_removed_model_for_every_subset(name):
    """Nested layers (a path inside a residual branch, a residual inside another) are counted once."""
    model = load(LAYER_MODELS[name]())
    space = LayerSpace(model, DependencyGraph(model), PruneOptions(granularity="layer"), None)
    ids = [s.id for s in space.slots]
    subsets = [c for r in range(1, len(ids) + 1) for c in itertools.combinations(ids, r)]
    for subset in subsets[:200]:
        cost = space.cost({i: 1 for i in subset})
        assert (cost.params, cost.macs, cost.nonzeros) == figures(remove_layers(model, list(subset))), subset


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(CATALOGUE)), data=st.data())
def test_channel_costs_equal_the_removed_model(name, data):
    model = load(CATALOGUE[name].build())
    graph = DependencyGraph(model)
    try:
        space = ChannelSpace(model, graph, PruneOptions(limits=Limits(round_to=1)), None)
    except pyprune.TargetError:
        return  # nothing prunable
    counts = {s.id: data.draw(st.integers(0, s.cap), label=s.id) for s in space.slots}
    cost = space.cost(counts)
    shipped = remove_units(model, space.removals(counts), graph)
    assert (cost.params, cost.macs, cost.nonzeros) == figures(shipped)


def test_layer_search_claims_only_what_it_ships():
    """A residual branch and the path layers inside it were both credited before: a search could
    claim "Target reached, MACs 0.68" for a model that shipped at 0.81."""
    model = load(resnet_like())
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    for strategy in ("oneshot", "greedy"):
        result = pyprune.prune(model, Dataset({"x": x}), granularity="layer", strategy=strategy,
                               target=MACs(0.6), max_drop=None, **FAST)
        shipped = result.model.macs() / model.macs()
        assert result.report.after.macs == result.model.macs()
        assert result.history[-1].macs == result.model.macs()
        assert result.met == (shipped <= 0.6), (strategy, shipped, result.statement)
        assert f"MACs {shipped:.3f}" in result.statement


def test_reached_is_decided_on_the_shipped_model(monkeypatch):
    """Should the search's estimate ever be wrong, the shipped model's own counts decide."""
    model = load(CATALOGUE["conv_stack"].build())
    feeds = random_inputs(model.proto, batch=16)
    search = Search("oneshot", model, Dataset(feeds), target=Params(0.7), max_drop=None, **FAST)
    honest = search.problem.space.cost

    def optimistic(counts, orders=None):
        cost = honest(counts, orders)
        return type(cost)(cost.params // 2, cost.macs, cost.nonzeros, cost.sparsity)

    monkeypatch.setattr(search.problem.space, "cost", optimistic)
    result = search.run()
    shipped = result.model.params() / model.params()
    assert shipped > 0.7 and not result.met
    assert result.statement.startswith("Target not reached") and "the search estimated" in result.statement


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_slot_at_its_cap_is_removable(name):
    """No count a loop can pick empties a Split output or a Slice (split_slice once could: five of
    a conv's seven channels removed left the Split's first output empty)."""
    model = load(CATALOGUE[name].build())
    graph = DependencyGraph(model)
    try:
        space = ChannelSpace(model, graph, PruneOptions(limits=Limits(round_to=1)), None)
    except pyprune.TargetError:
        return
    for scores_from in ("importance", "reversed"):
        counts = {s.id: s.cap for s in space.slots}
        if scores_from == "reversed":  # the other end of the order, as a window or random mode may reach
            for s in space.slots:
                s.order = np.concatenate([s.order[: s.cap][::-1], s.order[s.cap:]])
        shipped = remove_units(model, space.removals(counts), graph)
        cost = space.cost(counts)
        assert (cost.params, cost.macs, cost.nonzeros) == figures(shipped)
