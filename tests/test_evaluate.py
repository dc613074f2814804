"""MaskedSession against its oracles: constant masks inserted, physically pruned models,
masked initializers; early stop; Evaluator reference caching."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pyprune import metrics
from pyprune.data import Dataset
from pyprune.errors import DataError
from pyprune.evaluate import Evaluator, MaskedSession, edge_key, run_model
from pyprune.graph import Group, MaskPoint, find_layers, load
from pyprune.surgery import remove_layers

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(size=shape).astype(np.float32), name)


def _make(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def chain_model() -> onnx.ModelProto:
    """x[N,3,6,6] -> Conv(4) -> Relu -> Conv(5) -> Relu -> GAP -> Flatten -> Gemm(3)."""
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["logits"], name="fc"),
    ]
    inits = [_init("W1", (4, 3, 3, 3)), _init("B1", (4,)), _init("W2", (5, 4, 3, 3)), _init("B2", (5,))]
    inits += [_init("W3", (5, 3)), _init("B3", (3,))]
    return _make(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )


G1 = Group("conv1", "conv1", "Conv", 4, mask_points=[MaskPoint("conv2", 0, "r1", 1, 4, np.arange(4))])
G2 = Group("conv2", "conv2", "Conv", 5, mask_points=[MaskPoint("fc", 0, "f", 1, 2, np.arange(5))])


def concat_model() -> onnx.ModelProto:
    """Two convs (2 and 3 channels) concatenated, then a 1x1 conv and a residual add."""
    nodes = [
        helper.make_node("Abs", ["x"], ["h"], name="abs"),
        helper.make_node("Conv", ["h", "Wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["h", "Wb"], ["b"], name="conv_b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "Wc"], ["c"], name="conv_c"),
        helper.make_node("Relu", ["c"], ["branch"], name="relu"),
        helper.make_node("Add", ["h", "branch"], ["y"], name="add"),
    ]
    return _make(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [_init("Wa", (2, 3, 1, 1)), _init("Wb", (3, 3, 1, 1)), _init("Wc", (3, 5, 1, 1))],
    )


GA = Group("a", "conv_a", "Conv", 2, mask_points=[MaskPoint("conv_c", 0, "cat", 1, 4, np.array([0, 1, -1, -1, -1]))])
GB = Group("b", "conv_b", "Conv", 3, mask_points=[MaskPoint("conv_c", 0, "cat", 1, 4, np.array([-1, -1, 0, 1, 2]))])


def path_model() -> onnx.ModelProto:
    """x[N,4,3,3] -> Conv(4) -> Relu -> Conv(4) -> Relu: two shape-preserving path layers."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    return _make(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [_init("W1", (4, 4, 3, 3)), _init("W2", (4, 4, 3, 3))],
    )


def ort_run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def with_constant_edges(proto: onnx.ModelProto, edges: dict) -> onnx.ModelProto:
    """Oracle: ``x * scale + shift`` with constant initializers on the given (node, input) edges."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    nodes = []
    for node in graph.node:
        for i, name in enumerate(list(node.input)):
            if (node.name, i) in edges:
                scale, shift = edges[(node.name, i)]
                graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"k_{node.name}_{i}"))
                nodes.append(helper.make_node("Mul", [name, f"k_{node.name}_{i}"], [f"m_{node.name}_{i}"]))
                value = f"m_{node.name}_{i}"
                if shift is not None:
                    graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), f"s_{node.name}_{i}"))
                    nodes.append(helper.make_node("Add", [value, f"s_{node.name}_{i}"], [f"a_{node.name}_{i}"]))
                    value = f"a_{node.name}_{i}"
                node.input[i] = value
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def physically_pruned_chain(proto: onnx.ModelProto, keep1: np.ndarray, keep2: np.ndarray) -> onnx.ModelProto:
    """Oracle: conv1/conv2 with the dropped channels sliced out of every coupled weight."""
    w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    k1, k2 = np.flatnonzero(keep1), np.flatnonzero(keep2)
    new = {
        "W1": w["W1"][k1], "B1": w["B1"][k1], "W2": w["W2"][k2][:, k1], "B2": w["B2"][k2],
        "W3": w["W3"][k2], "B3": w["B3"],
    }  # fmt: skip
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in new.items())
    return model


@pytest.fixture(scope="module")
def chain():
    return load(chain_model())


@pytest.fixture(scope="module")
def chain_data():
    x = RNG.normal(size=(10, 3, 6, 6)).astype(np.float32)
    return Dataset(x, labels=RNG.integers(0, 3, size=10))


@pytest.fixture(scope="module")
def chain_session(chain, chain_data):
    return MaskedSession(chain, chain_data, groups=[G1, G2], weights=["W1", "W2"], batch_size=4, threads=1)


def test_unmasked_session_equals_the_model(chain, chain_data, chain_session):
    (expected,) = ort_run(chain.proto, {"x": chain_data.arrays[""]})
    (got,) = chain_session.run()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert chain_session.reference[0] is chain_session.reference[0]  # cached, computed once


@settings(max_examples=12, deadline=None)
@given(keep1=st.lists(st.booleans(), min_size=4, max_size=4), keep2=st.lists(st.booleans(), min_size=5, max_size=5))
def test_structured_masks_equal_constant_masks_and_removal(chain, chain_data, chain_session, keep1, keep2):
    keep1, keep2 = np.array(keep1), np.array(keep2)
    (got,) = chain_session.run({"conv1": keep1, "conv2": keep2})
    feed = {"x": chain_data.arrays[""]}
    edges = {
        ("conv2", 0): (keep1.reshape(1, 4, 1, 1), None),
        ("fc", 0): (keep2.reshape(1, 5), None),
    }
    (masked,) = ort_run(with_constant_edges(chain.proto, edges), feed)
    np.testing.assert_allclose(got, masked, rtol=1e-5, atol=1e-5)
    if keep1.any() and keep2.any():
        (removed,) = ort_run(physically_pruned_chain(chain.proto, keep1, keep2), feed)
        np.testing.assert_allclose(got, removed, rtol=1e-4, atol=1e-4)


def test_weight_masks_equal_masked_initializers(chain, chain_data, chain_session):
    rng = np.random.default_rng(1)
    m1 = rng.random((4, 3, 3, 3)) < 0.5
    m2 = rng.random((5, 4, 3, 3)) < 0.5
    model = onnx.ModelProto()
    model.CopyFrom(chain.proto)
    for t in model.graph.initializer:
        if t.name in ("W1", "W2"):
            mask = m1 if t.name == "W1" else m2
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * mask, t.name))
    (expected,) = ort_run(model, {"x": chain_data.arrays[""]})
    for _ in range(2):  # the second run reuses the cached masked copies
        (got,) = chain_session.run(weights={"W1": m1, "W2": m2})
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # An unlisted weight returns to its original value on the next candidate.
    (only_w2,) = chain_session.run(weights={"W2": m2})
    model_w2 = onnx.ModelProto()
    model_w2.CopyFrom(chain.proto)
    for t in model_w2.graph.initializer:
        if t.name == "W2":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * m2, t.name))
    np.testing.assert_allclose(only_w2, ort_run(model_w2, {"x": chain_data.arrays[""]})[0], rtol=1e-5, atol=1e-5)
    # The model the session was built from is untouched.
    assert [v.name for v in chain.proto.graph.input] == ["x"] and len(chain.proto.graph.node) == 7


def test_weight_values_can_be_replaced(chain, chain_data, chain_session):
    doubled = chain.weight("W1") * 2
    model = onnx.ModelProto()
    model.CopyFrom(chain.proto)
    for t in model.graph.initializer:
        if t.name == "W1":
            t.CopyFrom(numpy_helper.from_array(doubled, "W1"))
    (got,) = chain_session.run(weights={"W1": doubled})
    np.testing.assert_allclose(got, ort_run(model, {"x": chain_data.arrays[""]})[0], rtol=1e-5, atol=1e-5)


def test_candidate_errors_name_the_problem(chain_session):
    with pytest.raises(ValueError, match=r"group 'nope' is not masked by this session"):
        chain_session.run({"nope": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"group 'conv1': expected a bool keep-mask of shape \(4,\)"):
        chain_session.run({"conv1": np.ones(5, bool)})
    with pytest.raises(ValueError, match=r"weight 'W3' is not overridable"):
        chain_session.run(weights={"W3": np.ones((5, 3), bool)})
    with pytest.raises(ValueError, match=r"weight 'W1': expected shape \[4, 3, 3, 3\]"):
        chain_session.run(weights={"W1": np.ones((4, 3), bool)})


def test_shared_edge_layer_gate_and_affine():
    model = load(concat_model())
    (branch,) = [layer for layer in find_layers(model) if layer.kind == "residual"]
    x = RNG.normal(size=(5, 3, 4, 4)).astype(np.float32)
    bn_edge = MaskPoint("relu", 0, "c", 1, 4, np.arange(3))  # e.g. where a BN re-estimate would go
    session = MaskedSession(model, Dataset(x), groups=[GA, GB], layers=[branch], affine=[GA.mask_points[0], bn_edge],
                            batch_size=2)
    assert len(session.edges) == 2  # the Concat edge is shared by both groups
    keep_a, keep_b = np.array([True, False]), np.array([False, True, True])
    scale, shift = np.array([1.0, 2.0, 0.5, 1.0, 3.0]), np.array([0.1, 0.0, -0.2, 0.3, 0.0])
    bn_scale, bn_shift = np.array([0.9, 1.1, 1.0]), np.array([0.0, 0.5, -0.5])
    (got,) = session.run(
        {"a": keep_a, "b": keep_b},
        {branch.id: 0.5},
        affine={edge_key(GA.mask_points[0]): (scale, shift), ("relu", 0): (bn_scale, bn_shift)},
    )
    edges = {
        ("conv_c", 0): ((np.concatenate([keep_a, keep_b]) * scale).reshape(1, 5, 1, 1), shift.reshape(1, 5, 1, 1)),
        ("relu", 0): (bn_scale.reshape(1, 3, 1, 1), bn_shift.reshape(1, 3, 1, 1)),
        ("add", 1): (np.array(0.5), None),
    }
    (expected,) = ort_run(with_constant_edges(model.proto, edges), {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Gate 0 removes the branch: the block becomes the identity.
    (gated,) = session.run(layer_gates={branch.id: 0.0})
    np.testing.assert_allclose(gated, np.abs(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"shift needs 5 values"):
        session.run(affine={edge_key(GA.mask_points[0]): (None, np.zeros(4))})
    with pytest.raises(ValueError, match=r"edge \('conv_a', 0\) has no affine inputs"):
        session.run(affine={("conv_a", 0): (None, None)})


def test_layer_gates_equal_layer_removal():
    model = load(path_model())
    layers = [layer for layer in find_layers(model) if layer.prunable]
    assert {layer.kind for layer in layers} == {"path"} and len(layers) == 2
    x = RNG.normal(size=(3, 4, 3, 3)).astype(np.float32)
    session = MaskedSession(model, Dataset(x), layers=layers, batch_size=2)
    np.testing.assert_allclose(session.run()[0], run_model(model, Dataset(x))[0], rtol=1e-6)
    for layer in layers:
        (gated,) = session.run(layer_gates={layer.id: 0.0})
        (removed,) = run_model(remove_layers(model, [layer.id]), Dataset(x))
        np.testing.assert_allclose(gated, removed, rtol=1e-5, atol=1e-6)
    (both,) = session.run(layer_gates={layer.id: 0.0 for layer in layers})
    np.testing.assert_allclose(both, x, rtol=1e-6)
    with pytest.raises(ValueError, match="layer 'nope' is not gated by this session"):
        session.run(layer_gates={"nope": 0.0})


def test_bad_mask_point_is_rejected(chain, chain_data):
    wrong = Group("w", "conv1", "Conv", 4, mask_points=[MaskPoint("conv2", 0, "c1", 1, 4, np.arange(4))])
    with pytest.raises(ValueError, match=r"input 0 of node 'conv2' is not 'c1'"):
        MaskedSession(chain, chain_data, groups=[wrong])


def test_data_is_validated_before_the_session_is_built(chain):
    with pytest.raises(DataError, match="expected dtype float32, got float64"):
        MaskedSession(chain, Dataset(np.zeros((2, 3, 6, 6))), groups=[G1])


def test_evaluate_uses_labels_or_reference(chain, chain_data, chain_session):
    keep = np.array([True, False, True, True])
    outputs = chain_session.run({"conv1": keep})
    acc = chain_session.evaluate("accuracy", {"conv1": keep})
    assert acc == pytest.approx(metrics.accuracy()(outputs, chain_data.labels))
    kl = chain_session.evaluate("kl", {"conv1": keep})
    assert kl == pytest.approx(metrics.kl_divergence()(outputs, chain_session.reference))
    assert chain_session.evaluate("agreement") == 1.0
    unlabelled = MaskedSession(chain, Dataset(chain_data.arrays[""]), groups=[G1])
    with pytest.raises(DataError, match="metric 'accuracy' needs labels"):
        unlabelled.evaluate("accuracy")


def test_early_stop_when_the_threshold_is_out_of_reach(chain, chain_data):
    session = MaskedSession(chain, chain_data, groups=[G1, G2], batch_size=2)
    drop_all = {"conv2": np.zeros(5, bool)}  # constant logits: agreement collapses
    full = session.check("agreement", 0.99, drop_all)
    stopped = session.check("agreement", 0.99, drop_all, early_stop=True)
    assert not full.passed and not full.stopped_early and full.samples == 10
    assert not stopped.passed and stopped.stopped_early and stopped.samples < 10
    assert stopped.value >= full.value  # an optimistic bound, already failing
    kept = session.check("agreement", 0.99, early_stop=True)
    assert kept.passed and not kept.stopped_early and kept.value == 1.0
    # Metrics that are not per-sample means never stop early.
    mse = session.check("mse", 1e-9, drop_all, early_stop=True)
    assert not mse.passed and not mse.stopped_early


def test_evaluator_scores_pruned_models_against_the_cached_reference(chain, chain_data):
    evaluator = Evaluator(chain, chain_data, metric="cosine", threads=1, batch_size=3)
    np.testing.assert_allclose(evaluator.reference[0], run_model(chain, chain_data)[0], rtol=1e-5, atol=1e-6)
    assert evaluator.baseline == pytest.approx(1.0)
    keep1, keep2 = np.array([True, True, False, True]), np.ones(5, bool)
    pruned = physically_pruned_chain(chain.proto, keep1, keep2)
    session = evaluator.session(groups=[G1])
    assert session.reference[0] is evaluator.reference[0]  # shared, not recomputed
    assert evaluator.score(pruned) == pytest.approx(session.evaluate(evaluator.metric, {"conv1": keep1}), abs=1e-6)
    assert evaluator.score(pruned, "accuracy") == pytest.approx(session.evaluate("accuracy", {"conv1": keep1}))
    with pytest.raises(DataError, match="needs labels"):
        Evaluator(chain, Dataset(chain_data.arrays[""]), metric="accuracy")


def test_activation_stats_under_a_candidate(chain, chain_data):
    session = MaskedSession(chain, chain_data, groups=[G1], capture={"c2": 1, "x": 1}, batch_size=3)
    keep = np.array([True, False, False, True])
    stats = session.activation_stats({"conv1": keep})
    masked = with_constant_edges(chain.proto, {("conv2", 0): (keep.reshape(1, 4, 1, 1), None)})
    masked.graph.output.append(helper.make_tensor_value_info("c2", TensorProto.FLOAT, None))
    c2 = ort_run(masked, {"x": chain_data.arrays[""]})[1].astype(np.float64)
    per_channel = np.moveaxis(c2, 1, 0).reshape(5, -1)
    np.testing.assert_allclose(stats["c2"].mean, per_channel.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["c2"].var, per_channel.var(1), rtol=1e-5, atol=1e-6)
    expected = np.moveaxis(chain_data.arrays[""], 1, 0).reshape(3, -1).mean(1)
    np.testing.assert_allclose(stats["x"].mean, expected, rtol=1e-6)
    unmasked = session.activation_stats()
    assert not np.allclose(unmasked["c2"].mean, stats["c2"].mean)
    (out,) = session.run()  # captured tensors are not part of the model's outputs
    assert out.shape == (10, 3)
    with pytest.raises(ValueError, match="captures no tensors"):
        MaskedSession(chain, chain_data).activation_stats()
