"""Small ONNX models built in code, one per supported (or deliberately frozen) pattern.

Every builder takes ``opset`` and ``batch`` (an int for a fixed batch, a str for a symbolic one)
and returns an ``onnx.ModelProto`` with random weights (seeded). ``CATALOGUE`` lists the builders
with the opsets they support and how many prunable groups each must yield.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = (11, 13, 17, 18, 21)


class Builder:
    """Appends nodes and random initializers; opset-aware helpers for ops whose form changed."""

    def __init__(self, opset: int = 13, batch: int | str = "N", seed: int = 0) -> None:
        self.opset = opset
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.domains: set[str] = set()
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    def input(self, shape: list, name: str = "x", dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, [self.batch, *shape]))
        return name

    def const(self, value, base: str = "c") -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: list[int], scale: float | None = None, positive=False) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        w = self.rng.standard_normal(shape).astype(np.float32) * scale
        if positive:
            w = np.abs(w) + 0.5
        return self.const(w.astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), domain=domain, **attrs))
        if domain:
            self.domains.add(domain)
        return outs[0] if n_out == 1 else outs

    def ms(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        """An ONNX Runtime contrib op (com.microsoft), as its graph optimizer writes them."""
        return self.op(op_type, inputs, n_out, domain="com.microsoft", **attrs)

    # -- layers ---------------------------------------------------------------------------------

    def conv(self, x, cin, cout, k=3, group=1, bias=True, dims=2, stride=1):
        w = self.weight([cout, cin // group] + [k] * dims)
        ins = [x, w] + ([self.weight([cout], 0.1)] if bias else [])
        return self.op("Conv", ins, pads=[k // 2] * (2 * dims), group=group,
                       strides=[stride] * dims)

    def bn(self, x, c):
        return self.op("BatchNormalization", [x, self.weight([c], positive=True),
                       self.weight([c], 0.1), self.weight([c], 0.1),
                       self.weight([c], positive=True)])

    def gemm(self, x, k, n, trans_b=0, bias=True):
        w = self.weight([n, k] if trans_b else [k, n])
        ins = [x, w] + ([self.weight([n], 0.1)] if bias else [])
        return self.op("Gemm", ins, transB=trans_b)

    def matmul(self, x, k, n):
        return self.op("MatMul", [x, self.weight([k, n])])

    def relu(self, x):
        return self.op("Relu", [x])

    def unsqueeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Unsqueeze", [x], axes=axes)

    def squeeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Squeeze", [x], axes=axes)

    def split(self, x, sizes, axis=1):
        if self.opset >= 13:
            return self.op("Split", [x, self.const(np.array(sizes, np.int64))], n_out=len(sizes),
                           axis=axis)
        return self.op("Split", [x], n_out=len(sizes), axis=axis, split=sizes)

    def reduce_mean(self, x, axes, keepdims=1):
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(np.array(axes, np.int64))],
                           keepdims=keepdims)
        return self.op("ReduceMean", [x], axes=axes, keepdims=keepdims)

    def slice(self, x, start, end, axis):
        return self.op("Slice", [x, self.const(np.array([start], np.int64)),
                                 self.const(np.array([end], np.int64)),
                                 self.const(np.array([axis], np.int64))])

    def gelu_erf(self, x):
        d = self.op("Div", [x, self.const(np.array(np.sqrt(2.0), np.float32))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.const(np.array(1.0, np.float32))])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.const(np.array(0.5, np.float32))])

    def gelu_tanh(self, x):
        cube = self.op("Pow", [x, self.const(np.array(3.0, np.float32))])
        scaled = self.op("Mul", [cube, self.const(np.array(0.044715, np.float32))])
        inner = self.op("Add", [x, scaled])
        k = self.const(np.array(0.7978845608, np.float32))
        t = self.op("Tanh", [self.op("Mul", [inner, k])])
        half = self.op("Mul", [x, self.const(np.array(0.5, np.float32))])
        return self.op("Mul", [half, self.op("Add", [t, self.const(np.array(1.0, np.float32))])])

    def model(self, outputs: list[str], ir_version: int | None = None,
              shapes: dict[str, list] | None = None) -> onnx.ModelProto:
        """The model; output types come from onnx's inference or ``shapes`` where it fails."""
        outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
        graph = helper.make_graph(self.nodes, "test", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)]
                                  + [helper.make_opsetid(d, 1) for d in sorted(self.domains)])
        model.ir_version = ir_version or max(
            8, helper.find_min_ir_version_for([helper.make_opsetid("", self.opset)])
        )
        inferred = onnx.shape_inference.infer_shapes(model)
        # declare the output types, as exporters do
        types = {
            v.name: v
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)
            if v.type.WhichOneof("value") not in (None, "tensor_type")
            or v.type.tensor_type.HasField("shape")
        }
        for name, shape in (shapes or {}).items():
            types[name] = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
        del model.graph.output[:]
        model.graph.output.extend(
            types.get(o, helper.make_empty_tensor_value_info(o)) for o in outputs
        )
        return model


# -- the patterns -------------------------------------------------------------------------------


def conv_stack(opset=13, batch="N"):
    """Conv 2-D + BN + ReLU stack, with pooling, padding and a 1x1 conv head."""
    b = Builder(opset, batch)
    x = b.input([3, 8, 8])
    h = b.relu(b.bn(b.conv(x, 3, 6), 6))
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.relu(b.bn(b.conv(h, 6, 8, bias=False), 8))
    h = b.op("Pad", [h, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    h = b.op("AveragePool", [h], kernel_shape=[3, 3])
    return b.model([b.conv(h, 8, 4, k=1)])


def conv_1d_3d(opset=13, batch="N"):
    """Conv 1-D and 3-D chains with InstanceNormalization and LeakyReLU."""
    b = Builder(opset, batch)
    x = b.input([2, 10], "x")
    h = b.op("LeakyRelu", [b.conv(x, 2, 5, dims=1)], alpha=0.1)
    h = b.op("InstanceNormalization", [h, b.weight([5], positive=True), b.weight([5], 0.1)])
    if opset >= 17:  # normalises over the length axis only: channels pass through
        h = b.op("LayerNormalization", [h, b.weight([10], positive=True)], axis=-1)
    y1 = b.conv(h, 5, 3, dims=1)
    v = b.input([2, 4, 4, 4], "v")
    g = b.relu(b.conv(v, 2, 4, dims=3))
    g = b.op("GlobalAveragePool", [b.conv(g, 4, 3, dims=3, k=1)])
    return b.model([y1, g])


def residual_nested(opset=13, batch="N"):
    """Stacked and nested residual blocks: all joined channels become one group."""
    b = Builder(opset, batch)
    x = b.input([3, 6, 6])
    stem = b.relu(b.bn(b.conv(x, 3, 4), 4))
    inner = b.op("Add", [stem, b.bn(b.conv(b.relu(b.conv(stem, 4, 5)), 5, 4), 4)])
    inner = b.relu(inner)
    inner2 = b.op("Add", [inner, b.conv(inner, 4, 4)])
    outer = b.relu(b.op("Add", [inner2, stem]))
    outer = b.op("Sum", [outer, b.conv(outer, 4, 4, k=1)])
    outer = b.op("Sub", [b.conv(outer, 4, 4, k=1), outer])
    pooled = b.op("GlobalMaxPool", [outer])
    return b.model([b.conv(outer, 4, 2), b.conv(pooled, 4, 2, k=1)])


def concat_residuals(opset=13, batch="N"):
    """Concat (channel axis) of two residual outputs, then a residual over the concat."""
    b = Builder(opset, batch)
    x = b.input([3, 5, 5])
    a = b.conv(x, 3, 3)
    a = b.op("Add", [a, b.conv(b.relu(a), 3, 3)])
    c = b.conv(x, 3, 2)
    c = b.op("Add", [c, b.conv(b.relu(c), 2, 2)])
    cat = b.op("Concat", [a, c], axis=1)
    joined = b.op("Add", [cat, b.conv(x, 3, 5)])  # unit i of this conv = position i of concat
    return b.model([b.conv(b.relu(joined), 5, 2)])


def depthwise_after_concat(opset=13, batch="N"):
    """Concat -> depthwise conv (multiplier 1 and 2) -> pointwise, as in MobileNet/ShuffleNet."""
    b = Builder(opset, batch)
    x = b.input([3, 6, 6])
    cat = b.op("Concat", [b.conv(x, 3, 2), b.relu(b.conv(x, 3, 3)), x], axis=1)
    dw = b.op("Clip", [b.conv(cat, 8, 8, group=8), b.const(np.array(0, np.float32)),
                       b.const(np.array(6, np.float32))])
    pw = b.bn(b.conv(dw, 8, 6, k=1), 6)
    dw2 = b.conv(b.relu(pw), 6, 12, group=6)  # channel multiplier 2
    return b.model([b.conv(dw2, 12, 3, k=1)])


def se_in_residual(opset=13, batch="N"):
    """Squeeze-and-excitation inside a residual block (GAP -> Conv -> ReLU -> Conv -> Mul)."""
    b = Builder(opset, batch)
    x = b.input([3, 6, 6])
    stem = b.relu(b.conv(x, 3, 6))
    t = b.bn(b.conv(stem, 6, 6), 6)
    s = b.op("GlobalAveragePool", [t])
    s = b.op("HardSigmoid", [b.conv(b.relu(b.conv(s, 6, 3, k=1)), 3, 6, k=1)])
    t = b.op("Mul", [t, s])
    # a second SE with ReduceMean + Gemm, the way Keras exports it
    pooled = b.reduce_mean(t, [2, 3], keepdims=0)
    e = b.op("Sigmoid", [b.gemm(b.relu(b.gemm(pooled, 6, 2, trans_b=1)), 2, 6)])
    e = b.unsqueeze(e, [2, 3])
    e = b.op("Expand", [e, b.const(np.array([1, 1, 6, 6], np.int64))])
    t = b.op("Mul", [e, t])
    y = b.relu(b.op("Add", [stem, t]))
    return b.model([b.conv(y, 6, 2, k=1)])


def se_dynamic_view(opset=13, batch="N"):
    """SE written as torch exports ``y.view(b, c)`` / ``expand_as(x)`` with dynamic axes:
    the channel count is read at run time with Shape -> Gather and fed to Reshape/Expand."""
    b = Builder(opset, batch)
    x = b.input([3, 5, 5])
    t = b.relu(b.conv(x, 3, 6))
    shape = b.op("Shape", [t])
    n = b.unsqueeze(b.op("Gather", [shape, b.const(np.array(0, np.int64))], axis=0), [0])
    c = b.unsqueeze(b.op("Gather", [shape, b.const(np.array(1, np.int64))], axis=0), [0])
    pooled = b.op("GlobalAveragePool", [t])
    v = b.op("Reshape", [pooled, b.op("Concat", [n, c], axis=0)])
    v = b.op("Sigmoid", [b.gemm(b.relu(b.gemm(v, 6, 2, trans_b=1)), 2, 6, trans_b=1)])
    one = b.const(np.array([1, 1], np.int64))
    v = b.op("Reshape", [v, b.op("Concat", [n, c, one], axis=0)])
    v = b.op("Expand", [v, b.op("Shape", [t])])
    out = b.conv(b.op("Mul", [t, v]), 6, 2)
    return b.model([out], shapes={out: [batch, 2, 5, 5]})


def grouped_convs(opset=13, batch="N"):
    """ResNeXt/ShuffleNet-style grouped convs (Conv and ConvTranspose), stacked."""
    b = Builder(opset, batch)
    x = b.input([4, 6, 6])
    h = b.relu(b.bn(b.conv(x, 4, 8, k=1), 8))
    h = b.relu(b.bn(b.conv(h, 8, 12, group=2), 12))  # 4 channels per input block
    h = b.relu(b.conv(h, 12, 6, group=3, k=1))
    u = b.op("ConvTranspose", [h, b.weight([6, 2, 2, 2]), b.weight([4], 0.1)], strides=[2, 2],
             group=2)
    side = b.conv(x, 4, 6, group=2, k=1)  # grouped conv on the graph input
    return b.model([b.conv(b.relu(u), 4, 2), b.conv(side, 6, 2)])


def flatten_gemm(opset=13, batch="N"):
    """Conv -> Flatten -> Gemm -> Gemm: a channel is a contiguous block of H*W features."""
    b = Builder(opset, batch)
    x = b.input([2, 6, 6])
    h = b.op("MaxPool", [b.relu(b.conv(x, 2, 4))], kernel_shape=[2, 2], strides=[2, 2])
    f = b.op("Flatten", [h], axis=1)
    h = b.relu(b.gemm(f, 36, 7, trans_b=1))
    h = b.op("Dropout", [h])
    return b.model([b.gemm(h, 7, 3)])


def shape_reshape(opset=13, batch="N"):
    """Reshape target computed at run time: Shape -> Gather -> Unsqueeze -> Concat(-1)."""
    b = Builder(opset, batch)
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 5, stride=2))
    s = b.op("Shape", [h])
    n = b.op("Gather", [s, b.const(np.array(0, np.int64))], axis=0)
    target = b.op("Concat", [b.unsqueeze(n, [0]), b.const(np.array([-1], np.int64))], axis=0)
    f = b.op("Reshape", [h, target])
    # a second reshape with a constant target that names the merged size explicitly
    g = b.relu(b.conv(x, 3, 2))
    g = b.op("Reshape", [g, b.const(np.array([0, 2, 16], np.int64))])
    g = b.op("Reshape", [g, b.const(np.array([0, 32], np.int64))])
    y = b.gemm(f, 20, 3, trans_b=1)
    return b.model([y, b.gemm(g, 32, 2)], shapes={y: [batch, 3]})


def reshape_zoo(opset=13, batch="N"):
    """Reshapes that keep the channel axis whole: tokens of a ViT stem, GAP -> [N, C], size-1
    axes, Squeeze/Unsqueeze around the channel axis."""
    b = Builder(opset, batch)
    x = b.input([3, 4, 4])
    t = b.relu(b.conv(x, 3, 6, k=1, stride=2))  # [N, 6, 2, 2]
    tokens = b.op("Reshape", [t, b.const(np.array([0, 0, -1], np.int64))])  # [N, 6, 4]
    tokens = b.op("Transpose", [tokens], perm=[0, 2, 1])  # [N, 4, 6]
    y1 = b.matmul(b.op("Tanh", [tokens]), 6, 3)
    g = b.op("GlobalAveragePool", [b.relu(b.conv(x, 3, 5))])  # [N, 5, 1, 1]
    v = b.op("Reshape", [g, b.const(np.array([0, -1], np.int64))])  # [N, 5]
    v = b.relu(b.gemm(v, 5, 4))
    v = b.unsqueeze(v, [2])  # [N, 4, 1]
    v = b.op("Reshape", [v, b.const(np.array([0, 1, 4, 1], np.int64))])  # [N, 1, 4, 1]
    v = b.squeeze(v, [1])  # [N, 4, 1]
    v = b.conv(b.op("Sigmoid", [v]), 4, 2, k=1, dims=1)
    return b.model([y1, v], shapes={y1: [batch, 4, 3], v: [batch, 2, 1]})


def channels_last(opset=13, batch="N"):
    """Keras-style NHWC: Transpose to channels-last, per-channel Mul/Add, Reshape, MatMul."""
    b = Builder(opset, batch)
    x = b.input([3, 4, 4])
    h = b.conv(x, 3, 5)
    t = b.op("Transpose", [h], perm=[0, 2, 3, 1])
    t = b.op("Add", [b.op("Mul", [t, b.weight([5], positive=True)]), b.weight([5], 0.1)])
    t = b.relu(t)
    back = b.op("Transpose", [t], perm=[0, 3, 1, 2])
    y1 = b.conv(back, 5, 2, k=1)
    f = b.op("Reshape", [t, b.const(np.array([-1, 80], np.int64))])  # strided channel features
    y2 = b.op("Add", [b.matmul(f, 80, 3), b.weight([3], 0.1)])
    return b.model([y1, y2])


def transformer_ffn(opset=13, batch="N"):
    """MatMul -> bias Add -> GELU (Erf and Tanh forms) -> MatMul, with the residual."""
    b = Builder(opset, batch)
    x = b.input([4, 6])
    h = b.op("Add", [b.matmul(x, 6, 10), b.weight([10], 0.1)])
    h = b.gelu_erf(h)
    y = b.op("Add", [x, b.op("Add", [b.matmul(h, 10, 6), b.weight([6], 0.1)])])
    h2 = b.gelu_tanh(b.op("Add", [b.weight([8], 0.1), b.matmul(y, 6, 8)]))
    if opset >= 20:
        h2 = b.op("Gelu", [h2])
    z = b.op("Add", [y, b.matmul(h2, 8, 6)])
    return b.model([z])


def ort_transformer(opset=13, batch="N"):
    """A transformer block as ONNX Runtime's optimizer saves it: SkipLayerNormalization joins and
    normalises the residual stream (frozen), the FFN neurons (MatMul -> BiasGelu -> MatMul,
    FusedMatMul with a transposed weight -> FastGelu -> MatMul, QuickGelu and Gelu, a layer norm
    over a non-channel axis) prune, and so does the last residual sum, read by a MatMul only (the
    normalised stream it adds is then read through a Gather of the kept channels)."""
    b = Builder(opset, batch)
    x = b.input([4, 8])
    ln = b.ms("SkipLayerNormalization", [x, x, b.weight([8], positive=True), b.weight([8], 0.1)])
    a = b.ms("BiasGelu", [b.matmul(ln, 8, 12), b.weight([12], 0.1)])
    y = b.ms("SkipSimplifiedLayerNormalization", [b.matmul(a, 12, 8), ln, b.weight([8], positive=True)])
    h = b.ms("FusedMatMul", [y, b.weight([10, 8])], transB=1, alpha=0.5)
    h = b.ms("FastGelu", [h, b.weight([10], 0.1)])
    z = b.op("Add", [b.matmul(h, 10, 8), y])
    q = b.ms("Gelu", [b.ms("QuickGelu", [b.matmul(z, 8, 6)], alpha=1.702)])
    if opset >= 17:  # a normalisation over the 4 tokens keeps the 6 channels
        t = b.op("Transpose", [q], perm=[0, 2, 1])
        t = b.op("LayerNormalization", [t, b.weight([4], positive=True)], axis=-1)
        q = b.op("Transpose", [t], perm=[0, 2, 1])
    out = b.matmul(q, 6, 3)
    return b.model([out], shapes={out: [batch, 4, 3]})


def ort_fused_cnn(opset=13, batch="N"):
    """A CNN as ONNX Runtime's optimizer saves it: FusedConv with activations, one with a
    residual input Z (its output channels are joined with Z's), one depthwise."""
    b = Builder(opset, batch)
    x = b.input([3, 6, 6])

    def fused(h, cin, cout, z=None, group=1, **attrs):
        ins = [h, b.weight([cout, cin // group, 3, 3]), b.weight([cout], 0.1)] + ([z] if z else [])
        return b.ms("FusedConv", ins, pads=[1, 1, 1, 1], group=group, **attrs)

    c1 = fused(x, 3, 8, activation="Relu")
    c2 = fused(c1, 8, 8, activation="LeakyRelu", activation_params=[0.1])
    c3 = fused(c2, 8, 8, z=c1, activation="Relu")
    d = fused(c3, 8, 8, group=8, activation="Clip", activation_params=[0.0, 6.0])
    c4 = fused(d, 8, 6, activation="Sigmoid")
    y = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [c4])]), 6, 3)
    return b.model([y], shapes={y: [batch, 3]})


def paddle_style(opset=13, batch="p2o.DynamicDimension.0"):
    """paddle2onnx's MobileNetV3 pattern: weights in Constant nodes, Conv-BN-HardSwish, a
    squeeze-excitation with HardSigmoid, the batch axis named ``p2o.DynamicDimension.0``."""
    b = Builder(opset, batch if isinstance(batch, int) else "p2o.DynamicDimension.0")

    def hardswish(v):  # an op from opset 14; paddle2onnx writes x * HardSigmoid(x) before
        if opset >= 14:
            return b.op("HardSwish", [v])
        return b.op("Mul", [v, b.op("HardSigmoid", [v], alpha=1 / 6, beta=0.5)])

    x = b.input([3, 8, 8])
    h = hardswish(b.bn(b.conv(x, 3, 8, bias=False, stride=2), 8))
    h = hardswish(b.bn(b.conv(h, 8, 8, group=8, bias=False), 8))  # depthwise
    s = b.op("GlobalAveragePool", [h])
    s = b.op("HardSigmoid", [b.conv(b.relu(b.conv(s, 8, 4, k=1)), 4, 8, k=1)], alpha=1 / 6, beta=0.5)
    h = b.op("Mul", [h, s])
    h = hardswish(b.bn(b.conv(h, 8, 12, k=1, bias=False), 12))
    f = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    y = b.gemm(hardswish(b.gemm(f, 12, 16)), 16, 4)
    model = b.model([y], shapes={y: [b.batch, 4]})
    return _weights_in_constants(model)


def _weights_in_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer moved into a Constant node (as paddle2onnx 1.x writes weights)."""
    graph = model.graph
    constants = [helper.make_node("Constant", [], [t.name], value=t, name=f"p2o.Constant.{i}")
                 for i, t in enumerate(graph.initializer)]
    del graph.initializer[:]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def shared_token_shape(opset=13, batch="N"):
    """GPT-2's MLP as torch exports it: tokens flattened to [batch*seq, hidden] around Gemm, and
    one target shape [batch, seq, 4*hidden] (a Concat of Shape entries and a constant) shared by
    every layer's Reshape."""
    b = Builder(opset, batch)
    x = b.input([5, 6])  # [batch, seq, hidden]
    n = b.op("Shape", [x])
    dims = [b.unsqueeze(b.op("Gather", [n, b.const(np.array(i, np.int64))], axis=0), [0]) for i in (0, 1)]
    wide = b.op("Concat", [*dims, b.const(np.array([16], np.int64))], axis=0)
    h = x
    for _ in range(2):
        flat = b.op("Reshape", [h, b.const(np.array([-1, 6], np.int64))])
        up = b.op("Reshape", [b.gemm(flat, 6, 16), wide])  # shared by both layers' Reshapes
        up = b.gelu_tanh(up)
        down = b.gemm(b.op("Reshape", [up, b.const(np.array([-1, 16], np.int64))]), 16, 6)
        h = b.op("Add", [h, b.op("Reshape", [down, b.op("Shape", [h])])])
    return b.model([h], shapes={h: [batch, 5, 6]})


def keras_runtime_bias(opset=13, batch="N"):
    """Keras 3's export of a depthwise conv bias: channels-last, the bias reshaped to
    [1, 1, 1, C] with C read at run time from the activation's shape, then added."""
    b = Builder(opset, batch)
    x = b.input([6, 6, 3])  # NHWC
    h = b.op("Transpose", [b.conv(b.op("Transpose", [x], perm=[0, 3, 1, 2]), 3, 8)], perm=[0, 2, 3, 1])
    h = b.relu(h)
    c = b.unsqueeze(b.op("Gather", [b.op("Shape", [h]), b.const(np.array(3, np.int64))], axis=0), [0])
    ones = [b.const(np.array([1], np.int64)) for _ in range(3)]
    target = b.op("Concat", [*ones, c], axis=0)
    d = b.op("Transpose", [b.conv(b.op("Transpose", [h], perm=[0, 3, 1, 2]), 8, 8, group=8, bias=False)],
             perm=[0, 2, 3, 1])
    d = b.op("Add", [d, b.op("Reshape", [b.weight([8], 0.1), target])])
    y = b.gemm(b.op("ReduceMean", [b.relu(d)], axes=[1, 2], keepdims=0) if opset < 18
               else b.reduce_mean(b.relu(d), [1, 2], keepdims=0), 8, 3)
    return b.model([y], shapes={y: [batch, 3]})


def elementwise_zoo(opset=13, batch="N"):
    """Per-channel constants with broadcasting and shape-preserving ops between two convs."""
    b = Builder(opset, batch)
    x = b.input([3, 6, 6])
    h = b.conv(x, 3, 4)
    h = b.op("Mul", [h, b.weight([4, 1, 1], positive=True)])
    h = b.op("Sub", [h, b.weight([1, 4, 1, 1], 0.1)])
    h = b.op("Div", [h, b.const(np.array([2.0], np.float32))])
    h = b.op("PRelu", [h, b.weight([4, 1, 1], 0.2)])
    h = b.op("Elu", [h])
    h = b.op("Sigmoid", [h]) if opset < 14 else b.op("HardSwish", [h])
    h = b.op("Sqrt", [b.op("Add", [b.op("Pow", [h, b.const(np.array(2.0, np.float32))]),
                                   b.const(np.array(1.0, np.float32))])])
    h = b.op("Cast", [b.op("Identity", [h])], to=TensorProto.FLOAT)
    h = b.op("Softmax", [h], axis=3)
    h = b.op("Tanh", [h])
    roi = b.const(np.zeros(0, np.float32))
    h = b.op("Resize", [h, roi, b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    h = b.op("Max", [h, b.const(np.array(0.0, np.float32))])
    if opset >= 18:
        h = b.op("Resize", [h, "", "", b.const(np.array([6, 6], np.int64))], axes=[2, 3])
    return b.model([b.conv(h, 4, 2)])


def split_slice(opset=13, batch="N"):
    """Split and Slice along the channel axis (sizes and bounds rewritten on removal)."""
    b = Builder(opset, batch)
    x = b.input([3, 4, 4])
    h = b.relu(b.conv(x, 3, 7))
    p1, p2 = b.split(h, [3, 4])
    y = b.op("Concat", [b.conv(p1, 3, 2), b.conv(p2, 4, 2)], axis=1)
    s = b.slice(h, 2, 6, 1)
    return b.model([y, b.conv(s, 4, 3), b.conv(b.slice(h, -3, 100, 1), 3, 2)])


def gemm_variants(opset=13, batch="N"):
    """Gemm with every transA/transB, MatMul on 3-D activations, ConvTranspose."""
    b = Builder(opset, batch)
    x = b.input([5])
    h = b.relu(b.gemm(x, 5, 6, trans_b=1))
    h = b.relu(b.gemm(h, 6, 4, trans_b=0))
    t = b.op("Transpose", [h], perm=[1, 0])
    h = b.op("Gemm", [t, b.weight([4, 3]), b.weight([1, 3], 0.1)], transA=1)
    h = b.op("Gemm", [h, b.weight([2, 3])], transA=0, transB=1, alpha=0.5)
    v = b.input([3, 4, 4], "v")
    u = b.op("ConvTranspose", [b.relu(b.conv(v, 3, 4)), b.weight([4, 5, 2, 2]), b.weight([5], 0.1)],
             strides=[2, 2])
    u = b.op("ConvTranspose", [b.relu(u), b.weight([5, 2, 3, 3]), b.weight([10], 0.1)],
             pads=[1, 1, 1, 1], group=5)  # depthwise, multiplier 2
    u = b.op("Where", [b.op("Greater", [u, b.const(np.array(0.0, np.float32))]), u,
                       b.op("Neg", [u])])
    u = b.op("ConvTranspose", [u, b.weight([10, 3, 3, 3])], pads=[1, 1, 1, 1])
    s = b.input([3, 4], "s")
    m = b.relu(b.matmul(s, 4, 6))
    m = b.matmul(b.op("Transpose", [m], perm=[0, 1, 2]), 6, 2)
    return b.model([h, b.conv(u, 3, 2), m])


def frozen_cases(opset=13, batch="N"):
    """Patterns that must freeze: LRN, channel Softmax, grouped conv, graph output, If."""
    b = Builder(opset, batch)
    x = b.input([4, 4, 4])
    lrn = b.conv(b.op("LRN", [b.conv(x, 4, 4)], size=3), 4, 2)
    soft = b.conv(b.op("Softmax", [b.conv(x, 4, 4)], axis=1), 4, 2)
    grouped = b.conv(b.op("DepthToSpace", [b.conv(x, 4, 4)], blocksize=2), 1, 2)
    direct = b.conv(x, 4, 3)  # reaches a graph output
    # a tensor read inside an If branch
    inner = b.conv(x, 4, 2)
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Relu", [inner], ["then_y"])], "then", [],
                               [then_out])
    else_g = helper.make_graph([helper.make_node("Neg", [inner], ["else_y"])], "else", [],
                               [else_out])
    cond = b.const(np.array(True))
    iff = b.name("if")
    b.nodes.append(helper.make_node("If", [cond], [iff], name="If_0", then_branch=then_g,
                                    else_branch=else_g))
    # and an open one: Conv -> Relu -> Conv, prunable
    ok = b.conv(b.relu(b.conv(x, 4, 3)), 3, 2)
    return b.model([lrn, soft, grouped, direct, iff, ok])


def gated_concat_add(opset=13, batch="N"):
    """Gating Mul of two activations, and channel Concat joined with another producer."""
    b = Builder(opset, batch)
    x = b.input([3, 5, 5])
    a = b.conv(x, 3, 4)
    g = b.op("Sigmoid", [b.conv(x, 3, 4)])
    gated = b.op("Mul", [a, g])
    # ReduceMean over H,W then a Gemm classifier (keepdims=1 + Flatten)
    pooled = b.op("Flatten", [b.reduce_mean(gated, [2, 3], keepdims=1)])
    y = b.gemm(pooled, 4, 2)
    return b.model([y, b.conv(b.relu(gated), 4, 2)])


def shared_weight(opset=13, batch="N"):
    """One initializer used by two convs: their output channels are pruned together."""
    b = Builder(opset, batch)
    x = b.input([3, 5, 5])
    w = b.weight([4, 3, 3, 3])
    c1 = b.op("Conv", [x, w], pads=[1, 1, 1, 1])
    c2 = b.op("Conv", [b.op("Neg", [x]), w], pads=[1, 1, 1, 1])
    return b.model([b.conv(b.relu(c1), 4, 2), b.conv(c2, 4, 2)])


def gemm_mlp(sizes: tuple[int, ...], seed: int = 0, trans_b: tuple[int, ...] = (), opset: int = 13,
             batch="N") -> onnx.ModelProto:
    """Gemm -> Relu -> ... -> Gemm over ``sizes`` (input x[sizes[0]], logits of sizes[-1]); the
    Gemms numbered in ``trans_b`` store their weight transposed. Every hidden layer is a group."""
    b = Builder(opset, batch, seed)
    h = b.input([sizes[0]])
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = b.gemm(h, k, n, trans_b=int(i in trans_b))
        if i < len(sizes) - 2:
            h = b.relu(h)
    return b.model([h])


def attention(opset=17, batch="N", heads=4, head_dim=3, kv_heads=None, seq=5, target="const",
              merge="const", mask="input", keys="plain", ffn=True, seed=0, packed=False,
              position_bias=False):
    """A transformer block as exporters write it: Q/K/V MatMul + bias -> Reshape [B, S, H, d] ->
    Transpose -> Q @ K^T -> scale -> mask Add -> Softmax -> @ V -> Transpose -> Reshape ->
    output projection -> residual Add (-> LayerNorm) -> feed-forward block.

    ``target``: how the head-splitting Reshape gets its shape: ``"const"`` ([0, 0, H, d]),
    ``"infer_heads"`` ([0, 0, -1, d]), ``"runtime"`` (Shape -> Gather -> Concat with H and d
    constants, as torch.onnx exports ``view(B, S, H, d)``). ``merge``: the heads-merging Reshape's
    target, ``"const"`` ([0, 0, H*d]), ``"infer"`` ([0, 0, -1]) or ``"runtime"``. ``kv_heads``:
    grouped-query attention (K/V heads repeated with Unsqueeze/Expand/Reshape as Llama does);
    1 with ``keys="broadcast"``: multi-query keys broadcast by the MatMul. ``mask``: ``"input"``
    ([B, 1, 1, S] graph input), ``"causal"`` (a [1, 1, S, S] constant) or ``"none"``. ``keys``:
    ``"transpose"`` transposes K through ``[B*H, S, d]`` (scaled_dot_product_attention exports).
    ``packed``: one QKV projection reshaped to ``[B, S, 3, H, d]``, permuted to ``[3, B, H, S, d]``
    and split (timm's ViT). ``position_bias``: a relative position bias computed at run time from
    a ``[buckets, H]`` table (Gather of bucket ids, Transpose, Unsqueeze to ``[1, H, S, S]``) is
    added to the scores, as MPNet and T5 exports do.
    """
    b = Builder(opset, batch, seed)
    e = heads * head_dim
    kv = heads if kv_heads is None else kv_heads
    x = b.input([seq, e])

    def proj(h, n):
        return b.op("Add", [b.matmul(h, e, n), b.weight([n], 0.1)])

    def split(h, n_heads):
        if target == "runtime":
            shape = b.op("Shape", [h])
            lead = [b.unsqueeze(b.op("Gather", [shape, b.const(np.array(i, np.int64))], axis=0), [0])
                    for i in (0, 1)]
            t = b.op("Concat", [*lead, b.const(np.array([n_heads], np.int64)),
                                b.const(np.array([head_dim], np.int64))], axis=0)
        else:
            t = b.const(np.array([0, 0, n_heads if target == "const" else -1, head_dim], np.int64))
        return b.op("Transpose", [b.op("Reshape", [h, t])], perm=[0, 2, 1, 3])  # [B, H, S, d]

    if packed:
        qkv = b.op("Reshape", [proj(x, 3 * e), b.const(np.array([0, 0, 3, heads, head_dim], np.int64))])
        qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, B, H, S, d]
        q, k, v = (b.squeeze(t, [0]) for t in b.split(qkv, [1, 1, 1], axis=0))
        kv = heads
    else:
        q = split(proj(x, e), heads)
        k = split(proj(x, kv * head_dim), kv)
        v = split(proj(x, kv * head_dim), kv)
    if kv != heads and keys != "broadcast":
        rep = heads // kv

        def repeat(t):
            t = b.unsqueeze(t, [2])  # [B, kv, 1, S, d]
            shape = b.op("Shape", [t])
            dims = [b.unsqueeze(b.op("Gather", [shape, b.const(np.array(i, np.int64))], axis=0), [0])
                    for i in (0, 3, 4)]
            t = b.op("Expand", [t, b.op("Concat", [dims[0], b.const(np.array([kv, rep], np.int64)),
                                                   dims[1], dims[2]], axis=0)])
            return b.op("Reshape", [t, b.const(np.array([0, heads, seq, head_dim], np.int64))])

        k, v = repeat(k), repeat(v)
    if keys == "transpose":
        kt = b.op("Reshape", [k, b.const(np.array([-1, seq, head_dim], np.int64))])
        kt = b.op("Transpose", [kt], perm=[0, 2, 1])
        shape = b.op("Shape", [k])
        lead = b.op("Slice", [shape, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
        kt = b.op("Reshape", [kt, b.op("Concat", [lead, b.const(np.array([head_dim, seq], np.int64))],
                                       axis=0)])
    else:
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.array(head_dim ** -0.5, np.float32))])
    if position_bias:  # bucket ids from the run-time length: 7 buckets of relative offset
        length = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(1, np.int64))], axis=0)
        at = b.op("Range", [b.const(np.array(0, np.int64)), length, b.const(np.array(1, np.int64))])
        offsets = b.op("Sub", [b.unsqueeze(at, [0]), b.unsqueeze(at, [1])])
        three = [b.const(np.array(v, np.int64)) for v in (-3, 3)]
        buckets = b.op("Add", [b.op("Clip", [offsets, *three]), three[1]])
        table = b.op("Gather", [b.weight([7, heads], 0.5), buckets], axis=0)  # [S, S, H]
        scores = b.op("Add", [scores, b.unsqueeze(b.op("Transpose", [table], perm=[2, 0, 1]), [0])])
    if mask == "input":
        m = b.input([1, 1, seq], "mask")
        scores = b.op("Add", [scores, m])
    elif mask == "causal":
        causal = np.triu(np.full((seq, seq), -1e4, np.float32), 1)[None, None]
        scores = b.op("Add", [b.const(causal), scores])
    ctx = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])  # [B, H, S, d]
    ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])
    if merge == "runtime":
        shape = b.op("Shape", [ctx])
        lead = b.op("Slice", [shape, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
        t = b.op("Concat", [lead, b.const(np.array([-1], np.int64))], axis=0)
    else:
        t = b.const(np.array([0, 0, e if merge == "const" else -1], np.int64))
    out = b.op("Add", [x, proj(b.op("Reshape", [ctx, t]), e)])
    if opset >= 17:
        out = b.op("LayerNormalization", [out, b.weight([e], positive=True), b.weight([e], 0.1)],
                   axis=-1)
    if ffn:
        h = b.gelu_erf(proj(out, 2 * e))
        out = b.op("Add", [out, b.op("Add", [b.matmul(h, 2 * e, e), b.weight([e], 0.1)])])
    return b.model([out], shapes={out: [batch, seq, e]})


def attention_variants(opset=17, batch="N"):
    """Two attention blocks in a row: constant head count then a run-time target with a causal
    mask and keys transposed through [B*H, S, d]."""
    return attention(opset, batch, target="runtime", merge="runtime", keys="transpose",
                     mask="causal", seed=1)


def attention_gqa(opset=17, batch="N"):
    """Grouped-query attention: 6 query heads over 2 KV heads repeated with Expand + Reshape."""
    return attention(opset, batch, heads=6, kv_heads=2, head_dim=2, target="infer_heads",
                     merge="infer", seed=2)


def fused_attention(kind="Attention", heads=4, head_dim=8, kv_heads=2, seq=5, batch="N", seed=0,
                    opset=17):
    """What ONNX Runtime's transformer optimizer leaves: a ``com.microsoft`` attention node
    (``Attention`` with a packed QKV weight, ``MultiHeadAttention`` over projected Q/K/V with a
    packed bias, or ``GroupQueryAttention`` with ``kv_heads`` shared key/value heads) followed by
    the output projection, the residual and a feed-forward block."""
    b = Builder(opset, batch, seed)
    e = heads * head_dim
    x = b.input([seq, e])
    if kind == "Attention":
        ctx = b.op("Attention", [x, b.weight([e, 3 * e]), b.weight([3 * e], 0.1)], num_heads=heads,
                   domain="com.microsoft")
    elif kind == "MultiHeadAttention":
        q, k, v = (b.matmul(x, e, e) for _ in range(3))
        ctx = b.op("MultiHeadAttention", [q, k, v, b.weight([3 * e], 0.1)], num_heads=heads,
                   domain="com.microsoft")
    else:
        kv = kv_heads * head_dim
        q = b.op("Add", [b.matmul(x, e, e), b.weight([e], 0.1)])
        k, v = b.matmul(x, e, kv), b.matmul(x, e, kv)
        fixed = 1 if batch == "N" else batch  # the CPU kernel takes one sequence length per batch row
        seqlens = b.const(np.full([fixed], seq - 1, np.int32))
        total = b.const(np.array(seq, np.int32))
        ctx = b.op("GroupQueryAttention", [q, k, v, "", "", seqlens, total], n_out=3, num_heads=heads,
                   kv_num_heads=kv_heads, domain="com.microsoft")[0]
    out = b.op("Add", [x, b.op("Add", [b.matmul(ctx, e, e), b.weight([e], 0.1)])])
    h = b.gelu_erf(b.op("Add", [b.matmul(out, e, 2 * e), b.weight([2 * e], 0.1)]))
    out = b.op("Add", [out, b.matmul(h, 2 * e, e)])
    return b.model([out], shapes={out: [batch, seq, e]})


def fused_encoder(pre_norm=False, heads=2, head_dim=4, seq=5, batch="N", seed=0, opset=17):
    """Two encoder blocks as ONNX Runtime's optimizer fuses them: Attention and the feed-forward
    block, each joined to the residual by a ``SkipLayerNormalization`` (post-norm, BERT). With
    ``pre_norm`` the joins normalise for the next block and pass the residual sum on through
    their fourth output (GPT-2, ViT)."""
    b = Builder(opset, batch, seed)
    e = heads * head_dim
    x = b.input([seq, e])

    def join(branch, skip):
        ins = [branch, skip, b.weight([e], positive=True), b.weight([e], 0.1), b.weight([e], 0.1)]
        if not pre_norm:
            return b.op("SkipLayerNormalization", ins, epsilon=1e-5, domain="com.microsoft")
        normed, _, _, total = b.op("SkipLayerNormalization", ins, n_out=4, epsilon=1e-5,
                                   domain="com.microsoft")
        return normed, total

    normed = b.op("LayerNormalization", [x, b.weight([e], positive=True), b.weight([e], 0.1)], axis=-1)
    stream = x if pre_norm else normed
    h = normed
    for _ in range(2):
        ctx = b.op("Attention", [h, b.weight([e, 3 * e]), b.weight([3 * e], 0.1)], num_heads=heads,
                   domain="com.microsoft")
        joined = join(b.matmul(ctx, e, e), stream)
        h, stream = joined if pre_norm else (joined, joined)
        inner = b.op("BiasGelu", [b.matmul(h, e, 2 * e), b.weight([2 * e], 0.1)], domain="com.microsoft")
        joined = join(b.matmul(inner, 2 * e, e), stream)
        h, stream = joined if pre_norm else (joined, joined)
    return b.model([h], shapes={h: [batch, seq, e]})


@dataclass(frozen=True)
class Case:
    build: Callable[..., onnx.ModelProto]
    prunable: int  # prunable groups the analysis must find
    min_opset: int = 11


CATALOGUE: dict[str, Case] = {
    "conv_stack": Case(conv_stack, 2),
    "conv_1d_3d": Case(conv_1d_3d, 2),
    "residual_nested": Case(residual_nested, 2),
    "concat_residuals": Case(concat_residuals, 1),
    "depthwise_after_concat": Case(depthwise_after_concat, 3),
    "se_in_residual": Case(se_in_residual, 3),
    "se_dynamic_view": Case(se_dynamic_view, 2),
    "grouped_convs": Case(grouped_convs, 4),
    "flatten_gemm": Case(flatten_gemm, 2),
    "shape_reshape": Case(shape_reshape, 2),
    "reshape_zoo": Case(reshape_zoo, 3),
    "channels_last": Case(channels_last, 1),
    "transformer_ffn": Case(transformer_ffn, 2),
    "elementwise_zoo": Case(elementwise_zoo, 1),
    "split_slice": Case(split_slice, 1),
    "gemm_variants": Case(gemm_variants, 7),
    "frozen_cases": Case(frozen_cases, 1),
    "gated_concat_add": Case(gated_concat_add, 1),
    "shared_weight": Case(shared_weight, 1),
    "ort_transformer": Case(ort_transformer, 4),
    "ort_fused_cnn": Case(ort_fused_cnn, 3),
    "paddle_style": Case(paddle_style, 4),
    "shared_token_shape": Case(shared_token_shape, 2),
    "keras_runtime_bias": Case(keras_runtime_bias, 1),
    "attention": Case(attention, 2, min_opset=13),
    "attention_variants": Case(attention_variants, 2, min_opset=13),
    "attention_gqa": Case(attention_gqa, 2, min_opset=13),
}


def random_inputs(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float inputs for a model, symbolic dims set to ``batch``."""
    rng = np.random.default_rng(seed)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for v in model.graph.input:
        if v.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch
                for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng.standard_normal(dims).astype(np.float32)
        if v.name == "mask":  # an additive attention mask: 0 or a large negative number
            feeds[v.name] = np.where(rng.random(dims) < 0.3, -1e4, 0.0).astype(np.float32)
    return feeds


def mlp_proto(sizes: tuple[int, ...] = (8, 16, 12, 4), seed: int = 0, bn: bool = False) -> onnx.ModelProto:
    """Gemm -> Relu -> ... -> Gemm -> Softmax over ``sizes`` with input ``input`` and output
    ``probabilities`` (symbolic batch); with ``bn`` a BatchNormalization after the first layer."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array((rng.standard_normal(b) * 0.1).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"))
        x = f"h{i}"
        if bn and i == 0:
            for name, value in (("scale", 1.0), ("shift", 0.0), ("mean", 0.1), ("var", 1.0)):
                inits.append(numpy_helper.from_array(
                    (value + 0.1 * np.abs(rng.standard_normal(b))).astype(np.float32), f"bn_{name}"))
            nodes.append(helper.make_node("BatchNormalization", [x, "bn_scale", "bn_shift", "bn_mean", "bn_var"],
                                          ["bn_out"], name="bn"))
            x = "bn_out"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
