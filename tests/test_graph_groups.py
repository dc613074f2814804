"""Dependency groups: what each unit is coupled to, where it is masked, and why groups freeze."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from pyprune.graph import RULES, DependencyGraph, load
from pyprune.surgery import insert_masks, remove_units

sys.path.insert(0, str(Path(__file__).parent))  # the generated test models live next to this
from _models import (  # noqa: E402
    Builder,
    channels_last,
    concat_residuals,
    depthwise_after_concat,
    flatten_gemm,
    frozen_cases,
    random_inputs,
    se_in_residual,
    shared_weight,
    transformer_ffn,
)


def _graph(proto):
    model = load(proto)
    return model, DependencyGraph(model)


def _couplings(group):
    return {(c.weight, c.axis, c.role): c.index.tolist() for c in group.couplings}


def test_conv_bn_conv_couplings_mask_points_and_costs():
    b = Builder(13, batch="N")
    x = b.input([3, 5, 5])
    c1 = b.conv(x, 3, 4)
    bn = b.bn(c1, 4)
    c2 = b.conv(b.relu(bn), 4, 2, bias=False)
    model, graph = _graph(b.model([c2]))
    group = graph.group(model.producer(c1).name)
    assert group.prunable and group.size == 4 and group.op_type == "Conv"
    conv1, bn_node, _, conv2 = model.nodes
    expected = {(conv1.input[1], 0, "out"), (conv1.input[2], 0, "out"),
                (conv2.input[1], 1, "in")}
    expected |= {(n, 0, "param") for n in bn_node.input[1:]}
    assert set(_couplings(group)) == expected
    assert all(v == [0, 1, 2, 3] for v in _couplings(group).values())
    (mp,) = group.mask_points
    assert (mp.node, mp.input_index, mp.axis, mp.rank) == (conv2.name, 0, 1, 4)
    assert mp.index.tolist() == [0, 1, 2, 3]
    # per unit: conv1 row (27 + bias 1) + 4 BN params + conv2 column (2*9)
    assert group.params_per_unit.tolist() == [27 + 1 + 4 + 18] * 4
    # conv1: 5*5 outputs x 27; conv2: 2*5*5 outputs x 9 per input channel
    assert group.macs_per_unit.tolist() == [25 * 27 + 50 * 9] * 4
    last = graph.group(conv2.name)
    assert last.frozen == f"reaches the graph output {c2!r}"


def test_flatten_into_gemm_masks_contiguous_blocks():
    model, graph = _graph(flatten_gemm(13))
    conv = graph.groups[0]
    gemm = [n for n in model.nodes if n.op_type == "Gemm"][0]
    (mp,) = conv.mask_points
    assert mp.node == gemm.name and mp.axis == 1 and mp.rank == 2
    assert mp.index.tolist() == np.repeat(np.arange(4), 9).tolist()  # [N, 4, 3, 3] flattened
    assert _couplings(conv)[(gemm.input[1], 1, "in")] == mp.index.tolist()


def test_channels_last_reshape_gives_strided_features():
    model, graph = _graph(channels_last(13))
    conv = graph.groups[0]
    matmul = [n for n in model.nodes if n.op_type == "MatMul"][0]
    mp = [m for m in conv.mask_points if m.node == matmul.name][0]
    assert mp.index.tolist() == np.tile(np.arange(5), 16).tolist()  # [N, 4, 4, 5] flattened
    # the per-channel Mul/Add constants after the Transpose are coupled on their last axis
    params = [c for c in conv.couplings if c.role == "param"]
    assert len(params) == 2 and all(c.axis == 0 and len(c.index) == 5 for c in params)


def test_concat_offsets_map_into_a_joined_group():
    model, graph = _graph(concat_residuals(13))
    (group,) = graph.prunable_groups
    assert group.size == 5
    # the concat is joined with a 5-channel conv, so its root is that conv
    assert model.node(group.root).op_type == "Conv"
    roots = {c.node for c in group.couplings if c.role == "out"}
    assert len(roots) == 5  # two convs per residual pair plus the joined conv
    first_pair = [c for c in group.couplings if c.role == "out" and len(c.index) == 3]
    assert all(c.index.tolist() == [0, 1, 2] for c in first_pair)
    second_pair = [c for c in group.couplings if c.role == "out" and len(c.index) == 2]
    assert all(c.index.tolist() == [3, 4] for c in second_pair)


def test_depthwise_output_follows_input_channels_with_multiplier():
    model, graph = _graph(depthwise_after_concat(13))
    group_of = {n.name: a.i for n in model.nodes for a in n.attribute if a.name == "group"}
    depthwise = [n for n in model.nodes if group_of.get(n.name) == 6][0]
    group = [g for g in graph.prunable_groups if g.size == 6][0]
    coupled = _couplings(group)
    assert coupled[(depthwise.input[1], 0, "param")] == np.repeat(np.arange(6), 2).tolist()
    assert not any(m.node == depthwise.name for m in group.mask_points)
    edit = [e for e in graph.edits if e.node == depthwise.name]
    assert edit and edit[0].kind == "attr" and edit[0].name == "group"
    # the graph input concatenated in front of the first depthwise is owned by no group
    first_dw = [c for c in graph.groups[0].couplings if c.role == "param" and len(c.index) == 8]
    assert first_dw[0].index.tolist() == [0, 1, -1, -1, -1, -1, -1, -1]


def test_se_scale_conv_joins_the_trunk():
    model, graph = _graph(se_in_residual(13))
    trunk = graph.prunable_groups[0]
    roles = {model.node(c.node).op_type for c in trunk.couplings if c.role == "out"}
    assert roles == {"Conv", "Gemm"}  # the trunk convs and both SE expansions
    assert trunk.size == 6
    squeezes = {g.size for g in graph.prunable_groups[1:]}
    assert squeezes == {3, 2}


def test_transformer_ffn_prunes_the_intermediate_neurons():
    model, graph = _graph(transformer_ffn(13))
    first = graph.group(graph.prunable_groups[0].id)
    assert first.size == 10 and first.op_type == "MatMul"
    matmuls = [n for n in model.nodes if n.op_type == "MatMul"]
    coupled = _couplings(first)
    assert (matmuls[0].input[1], 1, "out") in coupled
    assert (matmuls[1].input[1], 0, "in") in coupled
    bias = [c for c in first.couplings if c.role == "param"]
    assert len(bias) == 1 and bias[0].index.tolist() == list(range(10))
    assert first.macs_per_unit.tolist() == [4 * 6 + 4 * 6] * 10


def test_shared_weight_is_pruned_consistently():
    model, graph = _graph(shared_weight(13))
    (group,) = graph.prunable_groups
    convs = [n for n in model.nodes if n.op_type == "Conv"]
    assert convs[0].input[1] == convs[1].input[1]
    assert {c.node for c in group.couplings if c.role == "out"} <= {convs[0].name, convs[1].name}
    assert len(group.mask_points) == 2
    # MACs of both convs reading the shared rows are counted
    assert group.macs_per_unit[0] >= 2 * 25 * 27


def test_frozen_reasons_name_the_op_and_why():
    model, graph = _graph(frozen_cases(13))
    reasons = {model.node(g.root).op_type + ":" + g.id: g.frozen for g in graph.groups}
    text = "\n".join(r for r in reasons.values() if r)
    assert "LRN node" in text and "mixes neighbouring channels" in text
    assert "Softmax node" in text and "normalises over the channel axis" in text
    assert "DepthToSpace node" in text and "is not understood" in text
    assert "reaches the graph output" in text
    assert "reaches the graph output 'if" in text  # through both branches of the If
    assert len(graph.prunable_groups) == 1


@pytest.mark.parametrize(
    "build, reason",
    [
        (lambda b, h: b.op("Gather", [h, b.const(np.array([0, 2], np.int64))], axis=1),
         "gathers along the channel axis"),
        (lambda b, h: b.op("Reshape", [h, b.const(np.array([-1, 4], np.int64))]),
         "reshapes dimensions of unknown size together"),
        (lambda b, h: b.op("DepthToSpace", [h], blocksize=2), "is not understood"),
        (lambda b, h: b.op("Slice", [h, b.const(np.array([0], np.int64)),
                                     b.const(np.array([4], np.int64)),
                                     b.const(np.array([1], np.int64)),
                                     b.const(np.array([2], np.int64))]),
         "slices the channel axis with a step"),
        (lambda b, h: b.op("Softmax", [h], axis=1), "normalises over the channel axis"),
        (lambda b, h: b.reduce_mean(h, [1]), "reduces over the channel axis"),
    ],
)
def test_unsupported_uses_freeze_with_a_reason(build, reason):
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 4))
    out = build(b, h)
    model, graph = _graph(b.model([b.op("Relu", [out])]))
    group = graph.groups[0]
    assert group.frozen is not None and reason in group.frozen


def test_channels_joined_with_a_computed_tensor_read_its_kept_channels():
    """An Add joining a group's channels with a tensor no group produces (here a graph input
    through a Relu; in MPNet a position bias) leaves the group prunable: on removal that edge
    reads the tensor's kept channels through a Gather, and its other readers keep all of them."""
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 4))
    z = b.op("Relu", [b.input([4, 4, 4], "z")])
    joined, other = b.conv(b.op("Add", [h, z]), 4, 2), b.conv(z, 4, 2)
    model, graph = _graph(b.model([joined, other]))
    group = graph.groups[0]  # the first convolution's 4 channels
    assert group.size == 4 and group.prunable, group.frozen
    pruned = remove_units(model, {group.id: [1, 2]}, graph)
    gathers = [n for n in pruned.nodes if n.op_type == "Gather"]
    assert [(n.input[0], pruned.weight(n.input[1]).tolist()) for n in gathers] == [(z, [0, 3])]
    feeds = random_inputs(model.proto, batch=2, seed=1)

    def run(m):
        return ort.InferenceSession(m.proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)

    masked = insert_masks(model, {group.id: np.array([True, False, False, True])}, graph)
    for got, want in zip(run(pruned), run(masked)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_shape_reading_the_channel_count_freezes():
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 4))
    c = b.op("Gather", [b.op("Shape", [h]), b.const(np.array([1], np.int64))], axis=0)
    zeros = b.op("ConstantOfShape", [c])
    model, graph = _graph(b.model([b.conv(h, 4, 2), zeros], shapes={zeros: [4]}))
    assert "the channel count is read at run time by ConstantOfShape" in graph.groups[0].frozen


def test_channel_count_read_into_a_view_unites_the_shaped_channels():
    from _models import se_dynamic_view

    model, graph = _graph(se_dynamic_view(13))
    trunk = graph.prunable_groups[0]
    gemms = [n.name for n in model.nodes if n.op_type == "Gemm"]
    # the SE expansion Gemm is shaped by the trunk's run-time channel count: one group
    assert gemms[1] in {c.node for c in trunk.couplings if c.role == "out"}
    assert not graph.edits  # nothing to rewrite: the counts follow at run time


def test_weight_read_by_another_op_freezes():
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    conv = b.conv(x, 3, 4)
    w = b.nodes[-1].input[1]
    side = b.op("ReduceSum", [w], keepdims=0)
    model, graph = _graph(b.model([b.conv(b.relu(conv), 4, 2), side]))
    assert "is also read by ReduceSum" in graph.groups[0].frozen


def test_registry_has_one_rule_per_op_and_covers_the_listed_ops():
    listed = """Conv ConvTranspose Gemm MatMul BatchNormalization InstanceNormalization Add Sub
    Mul Div PRelu Relu LeakyRelu Clip Sigmoid HardSigmoid HardSwish Gelu Erf Tanh Pow Sqrt
    Dropout Identity Cast MaxPool AveragePool GlobalAveragePool GlobalMaxPool Pad Resize
    Upsample LRN Softmax Sum Concat Split Slice Transpose Flatten Reshape Shape""".split()
    assert set(listed) <= set(RULES)


def test_dynamic_split_sizes_freeze():
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    s = b.input([2], "sizes", TensorProto.INT64)
    h = b.relu(b.conv(x, 3, 4))
    p, q = b.op("Split", [h, s], n_out=2, axis=1)
    b.inputs[-1] = helper.make_tensor_value_info("sizes", TensorProto.INT64, [2])
    outs = [b.op("Relu", [p]), b.op("Relu", [q])]
    model, graph = _graph(b.model(outs, shapes={o: ["N", None, 4, 4] for o in outs}))
    assert "split sizes computed at run time" in graph.groups[0].frozen


def test_grouped_conv_units_are_positions_within_blocks():
    b = Builder(13, batch="N")
    x = b.input([4, 5, 5])
    h = b.relu(b.conv(x, 4, 6, k=1))
    g = b.conv(h, 6, 4, group=2)  # input blocks of 3, output blocks of 2
    model, graph = _graph(b.model([b.conv(b.relu(g), 4, 2)]))
    first, second = graph.prunable_groups
    grouped = model.node(second.root)
    assert first.size == 3  # channel i and i + 3 meet the same filters: one unit
    coupled = _couplings(first)
    assert coupled[(model.nodes[0].input[1], 0, "out")] == [0, 1, 2, 0, 1, 2]
    assert coupled[(grouped.input[1], 1, "in")] == [0, 1, 2]
    assert second.size == 2
    assert _couplings(second)[(grouped.input[1], 0, "out")] == [0, 1, 0, 1]
    assert not graph.edits  # the group count stays


def test_single_unit_groups_are_frozen():
    b = Builder(13, batch="N")
    x = b.input([3, 4, 4])
    model, graph = _graph(b.model([b.conv(b.relu(b.conv(x, 3, 1)), 1, 2)]))
    assert graph.groups[0].frozen == "has 1 unit(s): nothing can be removed"


def test_layers_and_lookups_by_id():
    from _models import residual_nested

    model, graph = _graph(residual_nested(13))
    assert any(layer.kind == "residual" for layer in graph.layers)
    first = graph.layers[0]
    assert graph.layer(first.id) is first
    assert graph.group(graph.groups[0].id) is graph.groups[0]
    with pytest.raises(KeyError):
        graph.group("nothing")
    with pytest.raises(KeyError):
        graph.layer("nothing")
    offsets = [graph.unit_offset(g.id) for g in graph.groups]
    assert offsets == sorted(offsets) and graph.total_units == sum(g.size for g in graph.groups)
