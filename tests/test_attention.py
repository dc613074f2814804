"""Attention heads as units: found in every export style, removed exactly as masking predicts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyprune.graph import DependencyGraph, find_layers, load
from pyprune.surgery import gate_layers, insert_masks, remove_layers, remove_units

sys.path.insert(0, str(Path(__file__).parent))  # the generated test models live next to this
from _models import attention, fused_attention, fused_encoder, random_inputs  # noqa: E402


def _run(model, feeds):
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _heads_group(graph, size):
    """The group whose units are attention heads (or KV groups): it couples the output projection."""
    groups = [g for g in graph.groups if g.size == size and g.scaled]  # it scales the attention products
    assert len(groups) == 1, [(g.id, g.size, g.frozen) for g in graph.groups]
    return groups[0]


def test_a_head_couples_q_k_v_columns_biases_and_output_rows():
    heads, d, e = 4, 3, 12
    model = load(attention(17, "N", heads=heads, head_dim=d))
    graph = DependencyGraph(model)
    group = _heads_group(graph, heads)
    assert group.prunable
    by_role = {}
    for c in group.couplings:
        shape = model.weight(c.weight).shape
        by_role.setdefault(c.role, []).append((shape, c.axis))
        # every head owns d consecutive positions of each coupled slice
        owned = c.index[c.index >= 0]
        assert np.array_equal(np.bincount(owned), np.full(heads, d))
        assert np.array_equal(owned, np.repeat(np.arange(heads), d))
    assert by_role["out"] == [((e, e), 1)] * 3  # Q, K, V columns
    assert by_role["param"] == [((e,), 0)] * 3  # their biases
    assert by_role["in"] == [((e, e), 0)]  # the output projection's rows
    # Q, K, V columns and biases plus the output projection's rows
    assert group.params_per_unit.tolist() == [4 * e * d + 3 * d] * heads
    # one mask point: the context entering the output projection
    assert len(group.mask_points) == 1 and group.mask_points[0].axis == 2


def test_head_count_constants_follow_the_kept_heads():
    model = load(attention(17, "N", heads=4, head_dim=3, target="const", merge="const"))
    graph = DependencyGraph(model)
    group = _heads_group(graph, 4)
    pruned = remove_units(model, {group.id: [0, 2]}, graph)
    targets = sorted(pruned.weight(n.input[1]).tolist() for n in pruned.nodes if n.op_type == "Reshape")
    assert targets == [[0, 0, 2, 3]] * 3 + [[0, 0, 6]]
    assert pruned.shape(pruned.nodes[-1].output[0]) == ["N", 5, 12]  # the residual stream keeps its width


def test_a_position_bias_computed_at_run_time_follows_the_kept_heads():
    """MPNet and T5 add a relative position bias [1, H, S, S], computed from a table at run time,
    to every layer's scores: the heads stay prunable, and the pruned Add reads the bias's kept
    heads through a Gather (the table, which other layers share in those models, keeps them all)."""
    model = load(attention(17, "N", heads=4, head_dim=2, position_bias=True, seed=5))
    graph = DependencyGraph(model)
    group = _heads_group(graph, 4)
    assert group.prunable
    pruned = remove_units(model, {group.id: [0, 2]}, graph)
    onnx.checker.check_model(pruned.proto, full_check=True)
    kept_heads = [n for n in pruned.nodes if n.op_type == "Gather" and pruned.is_weight(n.input[1])
                  and pruned.weight(n.input[1]).tolist() == [1, 3]]
    assert len(kept_heads) == 1 and dict((a.name, a.i) for a in kept_heads[0].attribute) == {"axis": 1}
    assert [model.weight(n.input[0]).shape for n in pruned.nodes
            if n.op_type == "Gather" and model.is_weight(n.input[0])] == [(7, 4)]
    feeds = random_inputs(model.proto, batch=2, seed=3)
    keep = np.array([False, True, False, True])
    np.testing.assert_allclose(_run(pruned, feeds)[0], _run(insert_masks(model, {group.id: keep}, graph), feeds)[0],
                               rtol=1e-4, atol=1e-5)


def test_grouped_query_attention_removes_a_kv_head_with_its_query_heads():
    model = load(attention(17, "N", heads=6, kv_heads=2, head_dim=2))
    graph = DependencyGraph(model)
    group = _heads_group(graph, 2)
    q_columns = next(c for c in group.couplings if model.weight(c.weight).shape == (12, 12) and c.role == "out")
    assert np.array_equal(q_columns.index, np.repeat([0, 0, 0, 1, 1, 1], 2))  # 3 query heads per group
    pruned = remove_units(model, {group.id: [1]}, graph)
    expand = next(n for n in pruned.nodes if n.op_type == "Concat" and any(
        pruned.is_weight(i) and pruned.weight(i).tolist() == [1, 3] for i in n.input))
    assert expand is not None  # the Expand target now repeats 1 KV head 3 times
    feeds = random_inputs(model.proto, batch=2)
    keep = np.array([True, False])
    np.testing.assert_allclose(_run(pruned, feeds)[0], _run(insert_masks(model, {group.id: keep}, graph), feeds)[0],
                               rtol=1e-4, atol=1e-5)


def test_multi_query_attention_prunes_the_shared_value_features_not_its_one_kv_head():
    # One KV head shared by every query head: no head can go without all others. What remains
    # removable in attention are the value features, each one across all heads at once.
    heads, d = 4, 3
    model = load(attention(17, "N", heads=heads, kv_heads=1, head_dim=d))
    graph = DependencyGraph(model)
    values = next(g for g in graph.prunable_groups if g.size == d)
    rows = next(c for c in values.couplings if c.role == "in")
    assert np.array_equal(rows.index, np.tile(np.arange(d), heads))  # feature j of every head
    pruned = remove_units(model, {values.id: [1]}, graph)
    onnx.checker.check_model(pruned.proto, full_check=True)
    feeds = random_inputs(model.proto, batch=2)
    keep = np.array([True, False, True])
    np.testing.assert_allclose(_run(pruned, feeds)[0], _run(insert_masks(model, {values.id: keep}, graph), feeds)[0],
                               rtol=1e-4, atol=1e-5)


@settings(max_examples=30, deadline=None, database=None)
@given(
    opset=st.sampled_from([13, 14, 17, 18, 21]),
    heads=st.integers(2, 5),
    head_dim=st.integers(1, 4),
    groups=st.sampled_from([None, 2]),
    target=st.sampled_from(["const", "infer_heads", "runtime"]),
    merge=st.sampled_from(["const", "infer", "runtime"]),
    mask=st.sampled_from(["input", "causal", "none"]),
    keys=st.sampled_from(["plain", "transpose"]),
    packed=st.booleans(),
    position_bias=st.booleans(),
    data=st.data(),
)
def test_removing_heads_equals_masking_them(opset, heads, head_dim, groups, target, merge, mask, keys, packed,
                                            position_bias, data):
    kv = heads if groups is None or heads % groups or groups == heads or packed else groups
    # a packed [3, H, d] split with d = 1 cannot be told from [3, H] heads: it freezes instead
    head_dim = max(head_dim, 2) if packed else head_dim
    batch = data.draw(st.sampled_from(["N", 2]))
    proto = attention(opset, batch, heads=heads, head_dim=head_dim, kv_heads=kv, target=target,
                      merge=merge, mask=mask, keys=keys, seed=heads * 7 + head_dim, packed=packed,
                      position_bias=position_bias)
    model = load(proto)
    graph = DependencyGraph(model)
    group = _heads_group(graph, kv)
    assert group.prunable
    removed = data.draw(st.lists(st.integers(0, kv - 1), min_size=1, max_size=kv - 1, unique=True))
    pruned = remove_units(model, {group.id: removed}, graph)
    onnx.checker.check_model(pruned.proto, full_check=True)
    keep = ~np.isin(np.arange(kv), removed)
    feeds = random_inputs(proto, batch=2, seed=opset)
    got, want = _run(pruned, feeds)[0], _run(insert_masks(model, {group.id: keep}, graph), feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert pruned.params() == model.params() - int(group.params_per_unit[removed].sum())
    assert pruned.macs() < model.macs()


@settings(max_examples=12, deadline=None, database=None)
@given(kind=st.sampled_from(["Attention", "MultiHeadAttention", "GroupQueryAttention"]),
       heads=st.sampled_from([2, 4, 6]), data=st.data())
def test_fused_attention_heads_are_removed_by_rewriting_weights_and_num_heads(kind, heads, data):
    kv = 2 if kind == "GroupQueryAttention" else heads
    batch = 1 if kind == "GroupQueryAttention" else "N"
    proto = fused_attention(kind, heads=heads, kv_heads=kv, batch=batch, seed=heads)
    model = load(proto)
    graph = DependencyGraph(model)
    (group,) = [g for g in graph.groups if g.size == kv]  # the feed-forward group has 2 * 8 * heads
    assert group.prunable, group.frozen
    removed = data.draw(st.lists(st.integers(0, kv - 1), min_size=1, max_size=kv - 1, unique=True))
    pruned = remove_units(model, {group.id: removed}, graph)
    onnx.checker.check_model(pruned.proto, full_check=True)
    node = next(n for n in pruned.nodes if n.domain == "com.microsoft")
    attrs = {a.name: a.i for a in node.attribute}
    kept = kv - len(removed)
    assert attrs["num_heads"] == (kept * heads // kv)
    if kind == "GroupQueryAttention":
        assert attrs["kv_num_heads"] == kept
    keep = ~np.isin(np.arange(kv), removed)
    feeds = random_inputs(proto, batch=1 if batch == 1 else 2)
    got, want = _run(pruned, feeds)[0], _run(insert_masks(model, {group.id: keep}, graph), feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert pruned.macs() < model.macs()


def test_fused_attention_with_a_cache_keeps_its_heads():
    proto = fused_attention("GroupQueryAttention", heads=4, kv_heads=2, batch=1)
    node = next(n for n in proto.graph.node if n.op_type == "GroupQueryAttention")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.FLOAT, [1, 2, 5, 8]))
    graph = DependencyGraph(load(proto))
    frozen = [g.frozen for g in graph.groups if g.frozen and "shaped by the head count" in g.frozen]
    assert frozen and "GroupQueryAttention" in frozen[0]


def _removal_equals_gating(model, layer_ids, feeds):
    gated, gates = gate_layers(model, layer_ids)
    gate_feeds = {**feeds, **{name: np.array(0.0, np.float32) for name in gates.values()}}
    removed = remove_layers(model, layer_ids)
    onnx.checker.check_model(removed.proto, full_check=True)
    np.testing.assert_allclose(_run(removed, feeds)[0], _run(gated, gate_feeds)[0], rtol=1e-4, atol=1e-5)
    return removed


@settings(max_examples=10, deadline=None, database=None)
@given(target=st.sampled_from(["const", "runtime"]), keys=st.sampled_from(["plain", "transpose"]),
       opset=st.sampled_from([14, 17, 21]), data=st.data())
def test_attention_and_feed_forward_blocks_are_layers(target, keys, opset, data):
    proto = attention(opset, "N", target=target, merge=target, keys=keys)
    model = load(proto)
    blocks = [layer for layer in find_layers(model) if layer.kind == "residual" and len(layer.nodes) > 5]
    assert len(blocks) == 2 and all(layer.prunable for layer in blocks), [(b.id, b.frozen) for b in blocks]
    attention_block = max(blocks, key=lambda layer: len(layer.nodes))
    assert any(model.node(n).op_type == "Softmax" for n in attention_block.nodes)
    chosen = data.draw(st.lists(st.sampled_from([b.id for b in blocks]), min_size=1, unique=True))
    removed = _removal_equals_gating(model, chosen, random_inputs(proto, batch=2))
    assert removed.params() < model.params()


def test_fused_blocks_joined_by_skip_layer_normalization_are_layers():
    for pre_norm in (False, True):
        proto = fused_encoder(pre_norm=pre_norm)
        model = load(proto)
        layers = [layer for layer in find_layers(model) if layer.kind == "skip_norm"]
        assert len(layers) == 4 and all(layer.prunable for layer in layers), [(la.id, la.frozen) for la in layers]
        feeds = random_inputs(proto, batch=2)
        for layer in layers:
            removed = _removal_equals_gating(model, [layer.id], feeds)
            assert removed.macs() < model.macs()
        _removal_equals_gating(model, [layer.id for layer in layers[::2]], feeds)
        # heads of the fused Attention nodes and the BiasGelu neurons stay prunable alongside
        assert sorted(g.size for g in DependencyGraph(model).prunable_groups) == [2, 2, 16, 16]


def test_bias_compensation_folds_into_the_fused_skip_layer_normalization_bias():
    import pyprune as pp

    proto = fused_encoder()
    model = load(proto)
    x = np.random.default_rng(0).standard_normal((16, 5, 8)).astype(np.float32)
    ratios = {g.id: 0.5 for g in DependencyGraph(model).prunable_groups}
    result = pp.prune(model, pp.Dataset({"x": x}), strategy="oneshot", ratios=ratios, target=None,
                      max_drop=None, metric="cosine", quiet=True, measure_latency=False)
    assert result.report.verified, result.report.max_output_error
    joins = [n for n in result.model.nodes if n.op_type == "SkipLayerNormalization"]
    before = {n.name: model.weight(n.input[4]) for n in model.nodes if n.op_type == "SkipLayerNormalization"}
    changed = [n for n in joins if not np.array_equal(result.model.weight(n.input[4]), before[n.name])]
    assert len(changed) == 4  # the means of the removed heads' and neurons' outputs moved into each bias


def test_packed_qkv_weight_of_fused_attention_takes_wanda_and_two_of_four_masks():
    import pyprune as pp
    from pyprune.graph import maskable_weights

    proto = fused_attention("Attention", heads=2, head_dim=8)
    model = load(proto)
    packed = next(n.input[1] for n in model.nodes if n.op_type == "Attention")
    (weight,) = [w for w in maskable_weights(model) if w.name == packed]
    assert weight.reduction_axis == 0 and weight.nm_reason(4) is None
    x = np.random.default_rng(0).standard_normal((8, 5, 16)).astype(np.float32)
    for granularity in ("weight", "nm"):
        result = pp.prune(model, pp.Dataset({"x": x}), granularity=granularity, strategy="oneshot",
                          importance="wanda", target=pp.Sparsity(0.5), max_drop=None, metric="cosine",
                          quiet=True, measure_latency=False)
        assert result.report.verified
        kept = result.model.weight(packed) != 0
        assert kept.mean() <= 0.55
        if granularity == "nm":  # at most 2 of every 4 consecutive inputs of each output column
            assert (kept.reshape(4, 4, -1).sum(axis=1) <= 2).all()


def _with_head_edited(proto, edit):
    """The attention() model with one head's weights changed by ``edit(weights by role)``."""
    model = load(proto)
    graph = DependencyGraph(model)
    group = _heads_group(graph, 4)
    for c in group.couplings:
        w = np.array(model.weight(c.weight))
        edit(c, w, np.moveaxis(w, c.axis, 0), c.index == 2)  # head 2
        model.set_weight(c.weight, w)
    model.refresh()
    return model


def test_head_importances_find_the_head_that_does_nothing():
    from pyprune import Dataset
    from pyprune.importance import all_group_scores

    proto = attention(17, "N", heads=4, head_dim=3, mask="none")
    x = np.random.default_rng(0).standard_normal((16, 5, 12)).astype(np.float32)
    data = Dataset({"x": x})

    model = load(proto)
    q_matmul = next(n for n in model.nodes if n.op_type == "MatMul")
    q_bias = next(n for n in model.nodes if n.op_type == "Add" and n.input[0] == q_matmul.output[0])
    queries = {q_matmul.input[1], q_bias.input[1]}

    def uniform_attention(c, w, view, head):  # zero queries: every key gets the same weight
        if c.weight in queries:
            view[head] = 0

    spread = _with_head_edited(proto, uniform_attention)
    group = _heads_group(DependencyGraph(spread), 4)
    entropy = all_group_scores(spread, [group], "attention_entropy", dataset=data)[group.id]
    assert int(np.argmin(entropy)) == 2  # attends to all 5 keys alike: the least focused head

    def silent(c, w, view, head):  # its rows of the output projection are zero
        if c.role == "in":
            view[head] = 0

    mute = _with_head_edited(proto, silent)
    group = _heads_group(DependencyGraph(mute), 4)
    for name in ("ablation", "wanda"):
        scores = all_group_scores(mute, [group], name, dataset=data, normalize="none")[group.id]
        assert scores[2] == pytest.approx(0.0, abs=1e-9) and (np.delete(scores, 2) > 0).all(), name
