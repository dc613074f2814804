"""MaskedSession on groups found by the dependency analysis: equal to the graph's own masked
oracle (insert_masks) and to the physically pruned model (remove_units)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pyprune.data import Dataset
from pyprune.evaluate import MaskedSession, activation_stats, run_model
from pyprune.graph import DependencyGraph, load
from pyprune.surgery import insert_masks, remove_units


def _model() -> onnx.ModelProto:
    """Conv+BN+ReLU stem, two branches concatenated, a residual add, global pool, classifier."""
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...], low: float | None = None) -> onnx.TensorProto:
        values = rng.uniform(low, 1.5, size=shape) if low is not None else rng.normal(size=shape) * 0.5
        return numpy_helper.from_array(values.astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "Wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["r1", "Wb"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "W3", "B3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["r1", "c3"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        init("W1", (6, 3, 3, 3)), init("B1", (6,)), init("s1", (6,), 0.5), init("b1", (6,)),
        init("m1", (6,)), init("v1", (6,), 0.5), init("Wa", (4, 6, 3, 3)), init("Wb", (3, 6, 1, 1)),
        init("W3", (6, 7, 1, 1)), init("B3", (6,)), init("Wfc", (5, 6)), init("Bfc", (5,)),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def setup():
    model = load(_model())
    graph = DependencyGraph(model)
    groups = graph.prunable_groups
    x = np.random.default_rng(1).normal(size=(6, 3, 6, 6)).astype(np.float32)
    data = Dataset(x)
    session = MaskedSession(model, data, groups=groups, batch_size=4, threads=1)
    return model, graph, groups, data, session


def test_the_analysis_finds_the_coupled_groups(setup):
    _, _, groups, _, session = setup
    sizes = sorted(g.size for g in groups)
    assert sizes == [3, 4, 6]  # conv_b, conv_a, the residual stream (conv1 + conv3 + classifier input)
    shared = {(p.node, p.input_index) for g in groups for p in g.mask_points}
    assert len(session.edges) == len(shared) and ("conv3", 0) in shared  # the Concat edge, once


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_masked_session_equals_insert_masks_and_removal(setup, seed):
    model, graph, groups, data, session = setup
    rng = np.random.default_rng(seed)
    keep = {}
    for g in groups:
        mask = rng.random(g.size) < 0.6
        mask[rng.integers(g.size)] = True  # removal keeps at least one unit per group
        keep[g.id] = mask
    (got,) = session.run(keep)
    (masked,) = run_model(insert_masks(model, keep, graph), data)
    np.testing.assert_allclose(got, masked, rtol=1e-5, atol=1e-5)
    removals = {gid: np.flatnonzero(~mask) for gid, mask in keep.items()}
    (removed,) = run_model(remove_units(model, removals, graph), data)
    np.testing.assert_allclose(got, removed, rtol=1e-4, atol=1e-4)


def test_activations_at_the_groups_mask_points(setup):
    model, _, groups, data, _ = setup
    points = [p for g in groups for p in g.mask_points]
    stats = activation_stats(model, data, points, batch_size=4)
    for p in points:
        assert stats[p.tensor].mean.shape == (len(p.index),)
        assert np.all(stats[p.tensor].zero_fraction >= 0)
