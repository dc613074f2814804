"""Layer candidates and their removal: removing a layer equals gating it with 0."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from pyprune.graph import find_layers, load
from pyprune.surgery import gate_layers, remove_layers

# -- model builder ------------------------------------------------------------------------------


class Builder:
    """Tiny graph builder: nodes get unique names, weights are seeded random initializers."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def weight(self, shape, scale: float = 0.5) -> str:
        name = self.name("w")
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str:
        outs = [self.name("t") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1) -> str:
        w = self.weight([cout, cin // group, k, k], scale=1.0 / np.sqrt(cin * k * k / group))
        b = self.weight([cout], 0.1)
        return self.op("Conv", [x, w, b], pads=[k // 2] * 4, strides=[stride] * 2, group=group)

    def model(self, x: str, shape, out: str, out_shape, opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def basic_block(b: Builder, x: str, c: int) -> str:
    h = b.op("Relu", [b.conv(x, c, c)])
    return b.op("Relu", [b.op("Add", [x, b.conv(h, c, c)])])


def resnet_like(batch="N", seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    b = Builder(seed)
    t = b.op("Relu", [b.conv("x", 3, 8)])
    t = basic_block(b, t, 8)
    t = basic_block(b, t, 8)
    # downsample block: both Add inputs come from the block input, so it is no residual layer
    main = b.conv(b.op("Relu", [b.conv(t, 8, 16, stride=2)]), 16, 16)
    short = b.conv(t, 8, 16, k=1, stride=2)
    t = b.op("Relu", [b.op("Add", [main, short])])
    t = b.op("Flatten", [b.op("GlobalAveragePool", [t])])
    out = b.op("Gemm", [t, b.weight([10, 16]), b.weight([10])], transB=1)
    return b.model("x", [batch, 3, 8, 8], out, [batch, 10], opset=opset)


def transformer_like(seed: int = 0) -> onnx.ModelProto:
    b = Builder(seed)
    d, h = 8, 16
    t = b.op("MatMul", ["x", b.weight([d, d])])
    for _ in range(2):
        u = b.op("Add", [b.op("MatMul", [t, b.weight([d, h])]), b.weight([h], 0.1)])
        # GELU as exported by torch: x * 0.5 * (1 + erf(x / sqrt 2))
        erf = b.op("Erf", [b.op("Div", [u, _const(b, 1.4142135)])])
        g = b.op("Mul", [b.op("Mul", [u, b.op("Add", [erf, _const(b, 1.0)])]), _const(b, 0.5)])
        f = b.op("Add", [b.op("MatMul", [g, b.weight([h, d])]), b.weight([d], 0.1)])
        t = b.op("Add", [t, f])
        t = b.op("LayerNormalization", [t, _ones(b, d), b.weight([d], 0.1)], axis=-1)
    return b.model("x", ["N", 5, d], t, ["N", 5, d])


def _const(b: Builder, value: float) -> str:
    name = b.name("c")
    b.inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return name


def _ones(b: Builder, n: int) -> str:
    name = b.name("one")
    b.inits.append(numpy_helper.from_array(np.ones(n, dtype=np.float32), name))
    return name


def nested_residual(seed: int = 0) -> onnx.ModelProto:
    """y = x + (h + g(h)) with h = f(x): the inner residual sits inside the outer branch."""
    b = Builder(seed)
    x = b.op("Relu", [b.conv("x", 4, 6)])
    h = b.op("Relu", [b.conv(x, 6, 6)])
    inner = b.op("Add", [h, b.op("Sigmoid", [b.conv(h, 6, 6, k=1)])])
    t = b.op("Add", [x, inner])
    # a path whose output is a graph output
    out = b.op("Relu", [b.conv(t, 6, 6, k=1)])
    return b.model("x", [2, 4, 5, 5], out, [2, 6, 5, 5])


# -- helpers ------------------------------------------------------------------------------------


def run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def gated_outputs(model, removed: list[str], x: np.ndarray) -> list[np.ndarray]:
    prunable = [layer.id for layer in find_layers(model) if layer.prunable]
    gated, gates = gate_layers(model, prunable)
    feeds = {"x": x}
    for layer_id, name in gates.items():
        feeds[name] = np.array(0.0 if layer_id in removed else 1.0, dtype=np.float32)
    return run(gated.proto, feeds)


def check_removal(model, removed: list[str], x: np.ndarray) -> None:
    before = model.proto.SerializeToString()
    pruned = remove_layers(model, removed)
    assert model.proto.SerializeToString() == before, "the input model was modified"
    onnx.checker.check_model(pruned.proto, full_check=True)
    # nothing dangling: every node output and every initializer is read
    read = {v for n in pruned.proto.graph.node for v in n.input} | set(pruned.output_names)
    assert all(any(o in read for o in n.output) for n in pruned.proto.graph.node)
    assert all(t.name in read for t in pruned.proto.graph.initializer)
    assert [o.name for o in pruned.proto.graph.output] == model.output_names
    got = run(pruned.proto, {"x": x})
    want = gated_outputs(model, removed, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


# -- tests --------------------------------------------------------------------------------------


def test_resnet_like_candidates():
    model = load(resnet_like())
    layers = {layer.id: layer for layer in find_layers(model)}
    residual = [layer for layer in layers.values() if layer.kind == "residual"]
    # two identity blocks; the downsample block's join has no input that is the other's source
    assert len(residual) == 2
    for layer in residual:
        join = model.node(layer.gate.node)
        assert join.op_type == "Add"
        assert layer.bypass[1] == join.output[0]
        assert len(layer.nodes) == 4  # conv, relu, conv, add
        assert layer.params == 2 * (8 * 8 * 9 + 8)
        assert layer.macs == 2 * 8 * 8 * 9 * 64
    paths = [layer for layer in layers.values() if layer.kind == "path"]
    # the 8->8 convs in the identity blocks (4) and the 16->16 conv of the downsample block
    assert len(paths) == 5
    assert all(layer.prunable for layer in layers.values())
    shapes = {model.node(p.nodes[0]).op_type for p in paths}
    assert shapes == {"Conv"}


def test_transformer_like_candidates():
    model = load(transformer_like())
    layers = find_layers(model)
    residual = [layer for layer in layers if layer.kind == "residual"]
    assert len(residual) == 2
    # the FFN branch: MatMul, Add, Div, Erf, Add, Mul, Mul, MatMul, Add, and the join
    assert all(len(layer.nodes) == 10 for layer in residual)
    paths = [layer for layer in layers if layer.kind == "path"]
    assert len(paths) == 1  # the first d->d MatMul
    x = np.random.default_rng(1).standard_normal((3, 5, 8)).astype(np.float32)
    for layer in layers:
        check_removal(model, [layer.id], x)
    check_removal(model, [layer.id for layer in layers], x)


def test_nested_residual_and_output_path():
    model = load(nested_residual())
    layers = {layer.id: layer for layer in find_layers(model)}
    residual = sorted((layer for layer in layers.values() if layer.kind == "residual"),
                      key=lambda layer: len(layer.nodes))
    assert len(residual) == 2
    inner, outer = residual
    assert set(inner.nodes) < set(outer.nodes)
    out_path = [layer for layer in layers.values() if model.is_graph_output(layer.bypass[1])]
    assert len(out_path) == 1 and out_path[0].kind == "path"
    x = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    for layer in layers.values():
        check_removal(model, [layer.id], x)
    check_removal(model, [inner.id, outer.id], x)
    check_removal(model, list(layers), x)


def test_gate_one_is_the_original():
    model = load(resnet_like(batch=2))
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = run(model.proto, {"x": x})
    got = gated_outputs(model, [], x)
    np.testing.assert_array_equal(got[0], want[0])


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.sampled_from([1, 2, "N"]),
    opset=st.sampled_from([11, 13, 17, 21]),
    data=st.data(),
)
def test_removal_equals_gating(seed, batch, opset, data):
    model = load(resnet_like(batch=batch, seed=seed, opset=opset))
    layers = [layer.id for layer in find_layers(model)]
    removed = data.draw(st.lists(st.sampled_from(layers), min_size=1, max_size=len(layers), unique=True))
    n = 2 if batch == "N" else batch
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    check_removal(model, removed, x)


def test_removal_shrinks_and_drops_weights():
    model = load(resnet_like())
    layers = [layer for layer in find_layers(model) if layer.kind == "residual"]
    pruned = remove_layers(model, [layers[0].id])
    assert pruned.params() == model.params() - layers[0].params
    assert pruned.macs() == model.macs() - layers[0].macs
    assert len(pruned.proto.graph.node) == len(model.proto.graph.node) - len(layers[0].nodes)


def test_shape_changing_layers_are_no_candidates():
    b = Builder()
    t = b.conv("x", 3, 4)  # 3 -> 4 channels: no path layer
    t = b.conv(t, 4, 4, stride=2)  # spatial change: no path layer
    y = b.op("Add", [t, b.op("ReduceMean", [t], axes=[1], keepdims=1)])  # branch broadcasts up
    model = load(b.model("x", [1, 3, 6, 6], y, [1, 4, 3, 3], opset=17))
    layers = find_layers(model)
    assert [layer.kind for layer in layers] == ["residual"]
    # y = t + mean(t): the branch reads only t and broadcasts to t's shape, so y = t is valid
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    check_removal(model, [layers[0].id], x)


def test_unknown_shapes_freeze_with_reason():
    b = Builder()
    t = b.op("Relu", [b.conv("x", 3, 3)])
    y = b.op("Add", ["x", b.op("CustomOp", [t], domain="custom.domain")])
    proto = b.model("x", [1, 3, 4, 4], y, [None, None, None, None])
    proto.opset_import.append(helper.make_opsetid("custom.domain", 1))
    model = load(proto)
    layers = {layer.id: layer for layer in find_layers(model)}
    residual = [layer for layer in layers.values() if layer.kind == "residual"]
    assert len(residual) == 1 and not residual[0].prunable
    assert "not fully known" in residual[0].frozen
    with pytest.raises(ValueError, match="frozen"):
        remove_layers(model, [residual[0].id])


def test_bad_ids():
    model = load(resnet_like())
    with pytest.raises(ValueError, match="no layer 'nope'"):
        remove_layers(model, ["nope"])
    with pytest.raises(TypeError):
        remove_layers(model, "residual:Add1")


def test_output_read_inside_a_subgraph_is_renamed():
    """A path whose output an If branch reads from the outer scope."""
    b = Builder()
    t = b.op("Relu", [b.conv("x", 3, 4)])
    p = b.conv(t, 4, 4)
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Relu", [p], ["then_y"], name="then_relu")], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Neg", [p], ["else_y"], name="else_neg")], "else", [], [else_out])
    b.nodes.append(helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g))
    proto = b.model("x", [1, 3, 4, 4], "y", [1, 4, 4, 4])
    proto.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    model = load(proto)
    layers = {layer.id: layer for layer in find_layers(model)}
    layer = layers[f"path:{model.producer(p).name}"]
    assert layer.prunable and layer.bypass == (t, p)
    pruned = remove_layers(model, [layer.id])
    onnx.checker.check_model(pruned.proto, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    gated, gates = gate_layers(model, [layer.id])
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        want = run(gated.proto, {**feeds, gates[layer.id]: np.array(0.0, dtype=np.float32)})
        np.testing.assert_allclose(run(pruned.proto, feeds)[0], want[0], rtol=1e-5, atol=1e-6)


def test_branch_reading_another_graph_input():
    """Branches that also read a second input through a shared side computation (as attention
    blocks read a mask) are residual layers; the side computation stays while anyone reads it."""
    b = Builder()
    gate = b.op("Sigmoid", [b.op("Unsqueeze", ["m", _axes(b, [0])])])  # shared by both blocks
    t = "x"
    for _ in range(2):
        t = b.op("Add", [t, b.op("Mul", [b.op("MatMul", [t, b.weight([6, 6])]), gate])])
    proto = b.model("x", [3, 6], t, [3, 6])
    proto.graph.input.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [6]))
    model = load(proto)
    residual = [layer for layer in find_layers(model) if layer.kind == "residual"]
    assert len(residual) == 2
    assert all(len(layer.nodes) == 3 for layer in residual)  # MatMul, Mul, Add; not the side chain
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 6)).astype(np.float32),
             "m": rng.standard_normal(6).astype(np.float32)}
    for removed in ([residual[0].id], [layer.id for layer in residual]):
        pruned = remove_layers(model, removed)
        onnx.checker.check_model(pruned.proto, full_check=True)
        assert pruned.input_names == ["x", "m"]  # the interface never changes
        gated, gates = gate_layers(model, [layer.id for layer in residual])
        gate_feeds = {g: np.array(0.0 if i in removed else 1.0, dtype=np.float32) for i, g in gates.items()}
        want = run(gated.proto, {**feeds, **gate_feeds})
        np.testing.assert_allclose(run(pruned.proto, feeds)[0], want[0], rtol=1e-5, atol=1e-6)
    assert not any(n.op_type == "Sigmoid" for n in remove_layers(model, [r.id for r in residual]).nodes)


def _axes(b: Builder, axes: list[int]) -> str:
    name = b.name("axes")
    b.inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), name))
    return name


def test_branch_with_a_subgraph_goes_whole():
    b = Builder()
    t = b.op("Relu", [b.conv("x", 3, 3)])
    out = helper.make_tensor_value_info("sub_y", TensorProto.FLOAT, [1, 3, 4, 4])
    then_g = helper.make_graph([helper.make_node("Relu", [t], ["sub_y"], name="sub_relu")], "then", [], [out])
    else_g = helper.make_graph([helper.make_node("Neg", [t], ["sub_y"], name="sub_neg")], "else", [], [out])
    f = b.name("f")
    b.nodes.append(helper.make_node("If", ["cond"], [f], name="choice", then_branch=then_g, else_branch=else_g))
    y = b.op("Sigmoid", [b.op("Add", ["x", f])])
    proto = b.model("x", [1, 3, 4, 4], y, [1, 3, 4, 4])
    proto.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    model = load(proto)
    residual = [layer for layer in find_layers(model) if layer.kind == "residual"]
    assert len(residual) == 1
    assert "choice" in residual[0].nodes  # reached through the subgraph's outer-scope read
    assert residual[0].prunable
    pruned = remove_layers(model, [residual[0].id])
    onnx.checker.check_model(pruned.proto, full_check=True)
    assert not any(n.op_type == "If" for n in pruned.nodes)
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    gated, gates = gate_layers(model, [residual[0].id])
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        zero = {gates[residual[0].id]: np.array(0.0, dtype=np.float32)}
        np.testing.assert_allclose(run(pruned.proto, feeds)[0], run(gated.proto, {**feeds, **zero})[0])


def test_a_layer_that_is_the_whole_model_is_frozen():
    b = Builder()
    y = b.op("Relu", [b.conv("x", 3, 3)])
    model = load(b.model("x", [1, 3, 4, 4], y, [1, 3, 4, 4]))
    (layer,) = find_layers(model)
    assert layer.kind == "path" and layer.frozen == "the layer is the whole model"
