"""Unit removal: refusals, rewritten shape constants and attributes, costs, untouched inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pyprune.graph import DependencyGraph, load
from pyprune.surgery import insert_masks, remove_units

sys.path.insert(0, str(Path(__file__).parent))  # the generated test models live next to this
from _models import (  # noqa: E402
    Builder,
    conv_stack,
    depthwise_after_concat,
    frozen_cases,
    random_inputs,
    shape_reshape,
    split_slice,
)


def _run(model, feeds):
    s = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _keep(group, removed):
    return ~np.isin(np.arange(group.size), removed)


def test_refusals_are_value_errors_naming_the_problem():
    model = load(frozen_cases(13))
    graph = DependencyGraph(model)
    open_group = graph.prunable_groups[0]
    frozen = next(g for g in graph.groups if g.frozen and g.size > 1)
    with pytest.raises(ValueError, match="is frozen"):
        remove_units(model, {frozen.id: [0]}, graph)
    with pytest.raises(ValueError, match="cannot remove all 3 units"):
        remove_units(model, {open_group.id: [0, 1, 2]}, graph)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        remove_units(model, {open_group.id: [3]}, graph)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        remove_units(model, {open_group.id: [-1]}, graph)
    with pytest.raises(ValueError, match="no group 'nothing'"):
        remove_units(model, {"nothing": [0]}, graph)
    with pytest.raises(ValueError, match="1-D integer"):
        remove_units(model, {open_group.id: [0.5]}, graph)


def test_removal_leaves_the_input_model_unchanged_and_empty_removal_copies():
    model = load(conv_stack(13))
    before = model.proto.SerializeToString()
    graph = DependencyGraph(model)
    group = graph.prunable_groups[0]
    pruned = remove_units(model, {group.id: [1, 4]}, graph)
    assert model.proto.SerializeToString() == before
    assert pruned.proto is not model.proto
    same = remove_units(model, {group.id: []}, graph)
    assert same.proto.SerializeToString() == before


def test_costs_drop_by_the_units_figures_in_a_chain():
    model = load(conv_stack(13, "N"))
    graph = DependencyGraph(model)
    group = graph.prunable_groups[0]
    removed = [0, 2, 5]
    pruned = remove_units(model, {group.id: removed})
    assert model.params() - pruned.params() == int(group.params_per_unit[removed].sum())
    assert model.macs() - pruned.macs() == int(group.macs_per_unit[removed].sum())
    assert pruned.shape(model.nodes[0].output[0]) == ["N", 3, 8, 8]


def test_depthwise_group_attribute_follows_the_kept_channels():
    model = load(depthwise_after_concat(13))
    graph = DependencyGraph(model)
    g6 = next(g for g in graph.prunable_groups if g.size == 6)
    g3 = next(g for g in graph.prunable_groups if g.size == 3)
    pruned = remove_units(model, {g6.id: [1, 2], g3.id: [0]}, graph)
    groups = [a.i for n in pruned.nodes for a in n.attribute if a.name == "group" and a.i > 1]
    assert groups == [7, 4]  # 8 - 1 concat channels, 6 - 2 with multiplier 2 kept
    dw2 = [n for n in pruned.nodes if any(a.name == "group" and a.i == 4 for a in n.attribute)]
    assert pruned.weight(dw2[0].input[1]).shape[0] == 8


def test_split_sizes_and_slice_bounds_are_rewritten():
    model = load(split_slice(13))
    graph = DependencyGraph(model)
    (group,) = graph.prunable_groups
    pruned = remove_units(model, {group.id: [0, 3, 5]}, graph)
    split = next(n for n in pruned.nodes if n.op_type == "Split")
    assert pruned.weight(split.input[1]).tolist() == [2, 2]
    slices = [n for n in pruned.nodes if n.op_type == "Slice"]
    # h[2:6] keeps channels 2, 4 -> positions 1..3 of the kept [1, 2, 4, 6]
    assert (pruned.weight(slices[0].input[1]).tolist(),
            pruned.weight(slices[0].input[2]).tolist()) == ([1], [3])
    # h[-3:] = channels 4, 5, 6 -> kept 4, 6 -> positions 2..4
    assert (pruned.weight(slices[1].input[1]).tolist(),
            pruned.weight(slices[1].input[2]).tolist()) == ([2], [4])
    with pytest.raises(ValueError, match="empty"):
        remove_units(model, {group.id: [0, 1, 2]}, graph)


def test_split_sizes_written_as_attribute_before_opset_13():
    model = load(split_slice(11))
    graph = DependencyGraph(model)
    (group,) = graph.prunable_groups
    pruned = remove_units(model, {group.id: [6]}, graph)
    split = next(n for n in pruned.nodes if n.op_type == "Split")
    assert [list(a.ints) for a in split.attribute if a.name == "split"] == [[3, 3]]
    onnx.checker.check_model(pruned.proto, full_check=True)


def test_reshape_constant_target_is_rewritten_and_runtime_target_stays():
    model = load(shape_reshape(13, "N"))
    graph = DependencyGraph(model)
    small = next(g for g in graph.prunable_groups if g.size == 2)
    big = next(g for g in graph.prunable_groups if g.size == 5)
    pruned = remove_units(model, {small.id: [1], big.id: [0, 4]}, graph)
    targets = [pruned.weight(n.input[1]).tolist() for n in pruned.nodes
               if n.op_type == "Reshape" and pruned.is_weight(n.input[1])]
    assert targets == [[0, 1, 16], [0, 16]]
    runtime = next(n for n in pruned.nodes if n.op_type == "Reshape"
                   and not pruned.is_weight(n.input[1]))
    assert pruned.shape(runtime.output[0]) == ["N", 12]
    feeds = random_inputs(model.proto, batch=3)
    masked = insert_masks(model, {small.id: _keep(small, [1]), big.id: _keep(big, [0, 4])}, graph)
    for got, want in zip(_run(pruned, feeds), _run(masked, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_shared_shape_constant_is_copied_not_edited_in_place():
    b = Builder(13, batch=2)
    x = b.input([3, 4, 4])
    target = b.const(np.array([2, 32], np.int64))
    r1 = b.op("Reshape", [b.relu(b.conv(x, 3, 2)), target])
    r2 = b.op("Reshape", [b.relu(b.conv(x, 3, 2)), target])
    model = load(b.model([b.gemm(r1, 32, 2), b.gemm(r2, 32, 2)]))
    graph = DependencyGraph(model)
    first = graph.prunable_groups[0]
    pruned = remove_units(model, {first.id: [0]}, graph)
    shapes = [pruned.weight(n.input[1]).tolist() for n in pruned.nodes if n.op_type == "Reshape"]
    assert shapes == [[2, 16], [2, 32]]
    onnx.checker.check_model(pruned.proto, full_check=True)


def test_pruned_model_saves_reloads_and_runs_with_another_batch(tmp_path):
    model = load(conv_stack(13, "N"))
    graph = DependencyGraph(model)
    removals = {g.id: [0] for g in graph.prunable_groups}
    pruned = remove_units(model, removals, graph)
    path = pruned.save(tmp_path / "pruned.onnx")
    again = load(path)
    assert again.params() == pruned.params()
    feeds = random_inputs(model.proto, batch=5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, feeds)
    assert out.shape == (5, 4, 4, 4)
    masked = insert_masks(model, {k: _keep(graph.group(k), v) for k, v in removals.items()})
    np.testing.assert_allclose(out, _run(masked, feeds)[0], rtol=1e-4, atol=1e-5)


def test_no_unused_initializers_or_stale_shapes_remain():
    model = load(depthwise_after_concat(13))
    graph = DependencyGraph(model)
    removals = {g.id: [0] for g in graph.prunable_groups}
    pruned = remove_units(model, removals, graph)
    read = {i for n in pruned.nodes for i in n.input}
    assert all(t.name in read for t in pruned.proto.graph.initializer)
    assert len(pruned.proto.graph.value_info) == 0


def test_insert_masks_validates_the_keep_masks():
    model = load(conv_stack(13))
    graph = DependencyGraph(model)
    group = graph.prunable_groups[0]
    with pytest.raises(ValueError, match="bool array of shape"):
        insert_masks(model, {group.id: np.ones(3, bool)}, graph)
    with pytest.raises(KeyError, match="no group"):
        insert_masks(model, {"nothing": np.ones(3, bool)}, graph)


def test_onnxruntime_contrib_gelu_ops_pass_channels():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((4, 6)), "b1": rng.standard_normal(6),
               "w2": rng.standard_normal((6, 3))}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("BiasGelu", ["a", "b1"], ["g"], domain="com.microsoft"),
        helper.make_node("Gelu", ["g"], ["g2"], domain="com.microsoft"),
        helper.make_node("MatMul", ["g2", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model = load(proto)
    deps = DependencyGraph(model)
    group = deps.groups[0]
    assert group.prunable and {c.weight for c in group.couplings} == {"w1", "b1", "w2"}
    pruned = remove_units(model, {group.id: [0, 3]}, deps)
    onnx.checker.check_model(pruned.proto, full_check=True)
    masked = insert_masks(model, {group.id: _keep(group, [0, 3])}, deps)
    feeds = random_inputs(proto)
    np.testing.assert_allclose(_run(pruned, feeds)[0], _run(masked, feeds)[0], rtol=1e-4,
                               atol=1e-5)
