"""How channel indices flow through each ONNX op: one registry, one rule per op type.

A tensor that carries prunable channels has a *channel axis* and a *label* per position along it
(the unit that position belongs to, or -1 for positions no group owns). Walking the graph in
topological order, the rule of each node reads the labels of its inputs and

* passes them on to its outputs (element-wise ops, pooling, Transpose, Flatten, Concat, ...),
* couples weight slices to them (Conv/Gemm/MatMul columns, BatchNorm and per-channel constants),
* records a mask point where the channels are mixed away (inputs of Conv, Gemm, MatMul),
* starts new labels for the units it produces (Conv output channels, Gemm/MatMul features),
* unites labels where two tensors are joined position by position (residual Add, SE Mul), or
* freezes them, with a reason naming the op and why, when it cannot prove removal is exact.

Ops without a rule freeze every channel that reaches them. The walk itself (labels, union-find,
grouping) lives in ``_dependency.py``; this module only says what each op does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

if TYPE_CHECKING:
    from ._dependency import Walk

__all__ = ["RULES", "CONTRIB_RULES", "rule", "rule_for", "freeze_all"]

Rule = Callable[["Walk", onnx.NodeProto], None]

#: op_type -> rule, for the default ONNX domain.
RULES: dict[str, Rule] = {}

#: op_type -> rule for ONNX Runtime's "com.microsoft" ops that appear in models saved after
#: ORT's graph optimisations (fused activations with a per-channel bias).
CONTRIB_RULES: dict[str, Rule] = {}


def rule(*op_types: str, registry: dict[str, Rule] = RULES) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule of ``op_types``."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            if op in registry:
                raise RuntimeError(f"two rules for {op}")
            registry[op] = fn
        return fn

    return register


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule of a node's op (None: not understood, its channels freeze)."""
    if node.domain in ("", "ai.onnx"):
        return RULES.get(node.op_type)
    if node.domain == "com.microsoft":
        return CONTRIB_RULES.get(node.op_type)
    return None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def freeze_all(w: Walk, node: onnx.NodeProto, why: str | None = None) -> None:
    """Freeze every channel entering ``node`` (the rule of ops nobody taught pyprune)."""
    reason = f"{node.op_type} node {node.name!r} " + (why or "is not understood by pyprune")
    for name in node.input:
        info = w.info(name)
        if info is not None:
            w.freeze(info.labels, reason)


# -- element-wise ---------------------------------------------------------------------------

_UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Mish",
    "Softplus", "Softsign", "Tanh", "Erf", "Gelu", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Cast", "Clip",
    "ThresholdedRelu", "Shrink", "Not", "IsNaN", "IsInf", "Dropout", "CastLike", "Trilu",
)  # fmt: skip


@rule(*_UNARY)
def unary(w: Walk, node: onnx.NodeProto) -> None:
    """Position-wise on the first input; extra inputs (Clip bounds, Dropout ratio) are scalars."""
    info = w.info(node.input[0])
    for extra in node.input[1:]:
        if extra and w.info(extra) is not None:
            return freeze_all(w, node, "takes channel data in a parameter input")
        if extra and node.op_type == "Clip" and _size(w, extra) not in (1, None):
            return freeze_all(w, node, "has non-scalar bounds")
    if info is None:
        return
    if node.op_type == "Trilu":
        rank = w.rank(node.input[0])
        if rank is None or info.axis >= rank - 2:
            return freeze_all(w, node, "operates on the channel axis")
    for out in node.output:
        if out:
            w.set(out, info.axis, info.labels)


_BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal",
    "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
)  # fmt: skip


@rule(*_BROADCAST)
def broadcast(w: Walk, node: onnx.NodeProto) -> None:
    """Numpy-broadcasting position-wise ops.

    Two inputs carrying channels on the same aligned axis are joined (residual Add, SE Mul):
    their units are united. A constant with a full channel dimension is a per-channel parameter
    coupled to the units; a size-1 dimension broadcasts. Anything else full-sized freezes.
    """
    labeled = [(i, w.info(n)) for i, n in enumerate(node.input) if n and w.info(n) is not None]
    if not labeled:
        return
    out_rank = w.rank(node.output[0])
    ranks = [w.rank(n) if n else None for n in node.input]
    if out_rank is None or any(r is None for n, r in zip(node.input, ranks) if n):
        return freeze_all(w, node, "has inputs of unknown rank")
    out_axes = {info.axis + out_rank - ranks[i] for i, info in labeled}
    if len(out_axes) != 1:
        return freeze_all(w, node, "joins channels on different axes")
    axis = out_axes.pop()
    labels = None
    for i, info in labeled:
        if labels is None:
            labels = info.labels
        elif len(info.labels) != len(labels):
            return freeze_all(w, node, "joins channel tensors of different sizes")
        else:
            labels = w.union(labels, info.labels, node)
    constants = []
    for i, name in enumerate(node.input):
        if not name or w.info(name) is not None:
            continue
        local = axis - (out_rank - ranks[i])
        dim = 1 if local < 0 else w.shape(name)[local]
        if dim == 1:
            continue
        if dim != len(labels):
            return freeze_all(w, node, f"broadcasts input {name!r} of unknown or unequal size")
        if w.is_weight(name):
            constants.append((name, local))
        else:
            return freeze_all(
                w, node, f"joins the channels with {name!r}, which no prunable group produces"
            )
    for name, local in constants:
        w.couple(name, local, labels, "param", node)
    for out in node.output:
        if out:
            w.set(out, axis, labels)


# BiasGelu(X, bias) and FastGelu(X[, bias]) add a bias along the last axis, then apply GELU:
# position-wise with a per-channel constant, exactly what the broadcasting rule handles.
rule("Gelu", "QuickGelu", registry=CONTRIB_RULES)(unary)
rule("BiasGelu", "FastGelu", registry=CONTRIB_RULES)(broadcast)


# -- weighted ops: consumers of incoming channels, roots of new units -------------------------


@rule("Conv")
def conv(w: Walk, node: onnx.NodeProto) -> None:
    x, weight = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 else ""
    info = w.info(x)
    if w.info(weight) is not None or (bias and w.info(bias) is not None):
        return freeze_all(w, node, "computes its weights from channel data")
    if not w.is_weight(weight) or (bias and not w.is_weight(bias)):
        freeze_all(w, node, "has weights that are not constants")
        return w.new_units(node, node.output[0], 1, _dim(w, node.output[0], 1), frozen=(
            f"Conv node {node.name!r} has weights that are not constants"))
    wshape = w.shape(weight)
    out_ch, in_per_group = wshape[0], wshape[1]
    groups = attr(node, "group", 1)
    in_ch = in_per_group * groups
    if info is not None and info.axis != 1:
        freeze_all(w, node, "reads channels on a spatial axis")
        info = None
    if groups == 1:
        if info is not None:
            w.couple(weight, 1, info.labels, "in", node)
            w.mask(node, 0, info)
        units = w.new_units(node, node.output[0], 1, out_ch)
        w.couple(weight, 0, units, "out", node)
        if bias:
            w.couple(bias, 0, units, "out", node)
        return
    if in_per_group == 1 and info is not None and len(info.labels) == in_ch:
        # Depthwise (channel multiplier m = out/in): output channel o reads input channel o // m,
        # so removing an input channel removes its m outputs and the group count follows it.
        labels = np.repeat(info.labels, out_ch // groups)
        w.couple(weight, 0, labels, "param", node)
        if bias:
            w.couple(bias, 0, labels, "param", node)
        w.edit_attr(node, "group", info.labels)
        w.set(node.output[0], 1, labels)
        return
    # Grouped conv: position i of every input block meets the same filters, so those channels
    # are one unit (removing it keeps the blocks equal); output units are positions within an
    # output block, repeated in every block. The group count stays.
    if info is not None:
        if len(info.labels) != in_ch:
            freeze_all(w, node, "reads a channel count that does not match its weights")
        else:
            w.couple(weight, 1, _unite_blocks(w, info.labels, groups, node), "in", node)
            w.mask(node, 0, info)
    units = np.tile(w.new_units(node, node.output[0], 1, out_ch // groups), groups)
    w.set(node.output[0], 1, units)
    w.couple(weight, 0, units, "out", node)
    if bias:
        w.couple(bias, 0, units, "out", node)


def _unite_blocks(w: Walk, labels: np.ndarray, groups: int, node: onnx.NodeProto) -> np.ndarray:
    """Unite position i of each of ``groups`` equal blocks; return the labels of one block."""
    blocks = labels.reshape(groups, -1)
    first = blocks[0]
    for block in blocks[1:]:
        first = w.union(first, block, node)
    return first


@rule("ConvTranspose")
def conv_transpose(w: Walk, node: onnx.NodeProto) -> None:
    x, weight = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 else ""
    info = w.info(x)
    if not w.is_weight(weight) or (bias and not w.is_weight(bias)) or w.info(weight) is not None:
        freeze_all(w, node, "has weights that are not constants")
        return
    if attr(node, "output_shape") is not None:
        freeze_all(w, node, "has an explicit output_shape")
        return w.new_units(node, node.output[0], 1, _dim(w, node.output[0], 1), frozen=(
            f"ConvTranspose node {node.name!r} has an explicit output_shape"))
    wshape = w.shape(weight)
    in_ch, out_per_group = wshape[0], wshape[1]
    groups = attr(node, "group", 1)
    if info is not None and info.axis != 1:
        freeze_all(w, node, "reads channels on a spatial axis")
        info = None
    if groups == 1:
        if info is not None:
            w.couple(weight, 0, info.labels, "in", node)
            w.mask(node, 0, info)
        units = w.new_units(node, node.output[0], 1, out_per_group)
        w.couple(weight, 1, units, "out", node)
        if bias:
            w.couple(bias, 0, units, "out", node)
        return
    if groups == in_ch and info is not None and len(info.labels) == in_ch:
        labels = np.repeat(info.labels, out_per_group)
        w.couple(weight, 0, info.labels, "param", node)
        if bias:
            w.couple(bias, 0, labels, "param", node)
        w.edit_attr(node, "group", info.labels)
        w.set(node.output[0], 1, labels)
        return
    if info is not None:
        if len(info.labels) != in_ch:
            freeze_all(w, node, "reads a channel count that does not match its weights")
        else:
            _unite_blocks(w, info.labels, groups, node)
            w.couple(weight, 0, info.labels, "in", node)
            w.mask(node, 0, info)
    units = w.new_units(node, node.output[0], 1, out_per_group)
    w.set(node.output[0], 1, np.tile(units, groups))
    w.couple(weight, 1, units, "out", node)
    if bias:
        w.couple(bias, 0, np.tile(units, groups), "out", node)


@rule("Gemm")
def gemm(w: Walk, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 else ""
    info = w.info(a)
    trans_a, trans_b = attr(node, "transA", 0), attr(node, "transB", 0)
    if not w.is_weight(b) or w.info(b) is not None or (c and w.info(c) is not None):
        freeze_all(w, node, "multiplies by a matrix that is not a constant")
        return w.new_units(node, node.output[0], 1, _dim(w, node.output[0], 1), frozen=(
            f"Gemm node {node.name!r} multiplies by a matrix that is not a constant"))
    if info is not None:
        if info.axis != (0 if trans_a else 1):
            freeze_all(w, node, "reads channels on its row axis")
        else:
            w.couple(b, 1 if trans_b else 0, info.labels, "in", node)
            w.mask(node, 0, info)
    n = w.shape(b)[0 if trans_b else 1]
    units = w.new_units(node, node.output[0], 1, n)
    w.couple(b, 0 if trans_b else 1, units, "out", node)
    if c:
        cshape = w.shape(c)
        if not w.is_weight(c):
            w.freeze(units, f"Gemm node {node.name!r} adds a bias that is not a constant")
        elif cshape and cshape[-1] == n and n != 1:
            w.couple(c, len(cshape) - 1, units, "out", node)


@rule("MatMul")
def matmul(w: Walk, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    info = w.info(a)
    bshape = w.shape(b)
    a_rank = w.rank(a)
    if w.info(b) is not None or not w.is_weight(b) or len(bshape) != 2 or not a_rank:
        freeze_all(w, node, "multiplies two activations (or by a non-2-D constant)")
        if w.is_weight(b) and w.rank(node.output[0]):
            rank = w.rank(node.output[0])
            w.new_units(node, node.output[0], rank - 1, _dim(w, node.output[0], rank - 1),
                        frozen=f"MatMul node {node.name!r} reads a 1-D or unknown-rank input")
        return
    if info is not None:
        if info.axis != a_rank - 1 or a_rank < 2:
            freeze_all(w, node, "reads channels on a non-reduced axis")
        else:
            w.couple(b, 0, info.labels, "in", node)
            w.mask(node, 0, info)
    units = w.new_units(node, node.output[0], w.rank(node.output[0]) - 1, bshape[1])
    w.couple(b, 1, units, "out", node)


# -- normalisation ------------------------------------------------------------------------------


@rule("BatchNormalization", "InstanceNormalization")
def channel_norm(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    params = [n for n in node.input[1:] if n]
    if info.axis != 1 or any(not w.is_weight(p) for p in params):
        return freeze_all(w, node, "has non-constant parameters or a channel axis other than 1")
    if any(o for o in node.output[1:]):
        return freeze_all(w, node, "outputs training statistics")
    for p in params:
        w.couple(p, 0, info.labels, "param", node)
    w.set(node.output[0], 1, info.labels)


@rule("LayerNormalization")
def layer_norm(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "has an input of unknown rank")
    first = attr(node, "axis", -1) % rank
    if info.axis >= first:
        return freeze_all(w, node, "normalises over the channel axis")
    for out in node.output:
        if out:
            w.set(out, info.axis, info.labels)


@rule("LRN")
def lrn(w: Walk, node: onnx.NodeProto) -> None:
    freeze_all(w, node, "mixes neighbouring channels")


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "has an input of unknown rank")
    axis = attr(node, "axis", -1 if w.opset >= 13 else 1) % rank
    # Before opset 13 the op normalises over all axes from `axis` on (coerced to 2-D).
    mixed = info.axis == axis if w.opset >= 13 else info.axis >= axis
    if mixed:
        return freeze_all(w, node, "normalises over the channel axis")
    w.set(node.output[0], info.axis, info.labels)


# -- pooling, padding, resizing -----------------------------------------------------------------


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pool(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    if info.axis != 1:
        return freeze_all(w, node, "pools over the channel axis")
    if len(node.output) > 1 and node.output[1]:
        return freeze_all(w, node, "outputs flat indices that count channels")
    w.set(node.output[0], 1, info.labels)


@rule("Pad")
def pad(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    if any(w.info(n) is not None for n in node.input[1:] if n):
        return freeze_all(w, node, "takes channel data in a parameter input")
    rank = w.rank(node.input[0])
    pads = attr(node, "pads")
    if pads is None and len(node.input) > 1 and node.input[1]:
        pads = w.const(node.input[1])
    if pads is None or rank is None:
        return freeze_all(w, node, "has padding computed at run time")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        value = w.const(node.input[3])
        if value is None:
            return freeze_all(w, node, "has axes computed at run time")
        axes = [int(a) % rank for a in np.asarray(value).ravel()]
    k = len(axes)
    for j, a in enumerate(axes):
        if a == info.axis and (pads[j] != 0 or pads[j + k] != 0):
            return freeze_all(w, node, "pads the channel axis")
    w.set(node.output[0], info.axis, info.labels)


@rule("Resize", "Upsample")
def resize(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    axes = attr(node, "axes")
    axes = list(range(rank)) if axes is None and rank else [a % rank for a in (axes or [])]
    if not axes:
        return freeze_all(w, node, "has an input of unknown rank")
    if info.axis not in axes:
        return w.set(node.output[0], info.axis, info.labels)
    j = axes.index(info.axis)
    scale_input = 2 if node.op_type == "Resize" else 1
    scales = w.const(node.input[scale_input]) if len(node.input) > scale_input else None
    sizes_name = node.input[3] if node.op_type == "Resize" and len(node.input) > 3 else ""
    if attr(node, "scales") is not None:  # Upsample-7 style attribute
        scales = np.asarray(attr(node, "scales"))
    if scales is not None and scales.size:
        if float(scales.ravel()[j]) != 1.0:
            return freeze_all(w, node, "scales the channel axis")
    elif sizes_name:
        sizes = w.const(sizes_name)
        if sizes is None:
            return freeze_all(w, node, "has output sizes computed at run time")
        if int(sizes.ravel()[j]) != len(info.labels):
            return freeze_all(w, node, "resizes the channel axis")
        w.edit_const(node, 3, j, info.labels)
    else:
        return freeze_all(w, node, "has scales computed at run time")
    w.set(node.output[0], info.axis, info.labels)


# -- reductions ---------------------------------------------------------------------------------


_REDUCE = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin",
)  # fmt: skip


@rule(*_REDUCE)
def reduce(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "has an input of unknown rank")
    keepdims = attr(node, "keepdims", 1)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [attr(node, "axis", 0) % rank]
    else:
        axes = attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = w.const(node.input[1])
            if value is None:
                return freeze_all(w, node, "reduces over axes computed at run time")
            axes = value.ravel().tolist()
        if not axes:
            if attr(node, "noop_with_empty_axes", 0):
                return w.set(node.output[0], info.axis, info.labels)
            axes = list(range(rank))
        axes = [int(a) % rank for a in axes]
    if info.axis in axes:
        return freeze_all(w, node, "reduces over the channel axis")
    axis = info.axis if keepdims else info.axis - sum(a < info.axis for a in axes)
    w.set(node.output[0], axis, info.labels)


# -- layout ops ---------------------------------------------------------------------------------


@rule("Transpose")
def transpose(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    perm = attr(node, "perm")
    if perm is None:
        if rank is None:
            return freeze_all(w, node, "has an input of unknown rank")
        perm = list(reversed(range(rank)))
    w.set(node.output[0], list(perm).index(info.axis), info.labels)


@rule("Squeeze")
def squeeze(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    shape = w.shape(node.input[0])
    axes = _axes(w, node)
    if shape is None or axes is False:
        return freeze_all(w, node, "has unknown shape or axes")
    rank = len(shape)
    axes = [a % rank for a in axes] if axes else [i for i, d in enumerate(shape) if d == 1]
    if info.axis in axes:
        return freeze_all(w, node, "squeezes the channel axis")
    w.set(node.output[0], info.axis - sum(a < info.axis for a in axes), info.labels)


@rule("Unsqueeze")
def unsqueeze(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    axes = _axes(w, node)
    rank = w.rank(node.input[0])
    if not axes or rank is None:
        return freeze_all(w, node, "has unknown rank or axes")
    out_rank = rank + len(axes)
    inserted = {a % out_rank for a in axes}
    kept = [i for i in range(out_rank) if i not in inserted]
    w.set(node.output[0], kept[info.axis], info.labels)


@rule("Flatten")
def flatten(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    shape = w.shape(node.input[0])
    if shape is None:
        return freeze_all(w, node, "has an input of unknown shape")
    split = attr(node, "axis", 1) % (len(shape) + 1) if shape else 0
    if info.axis < split:
        inner = shape[:split]
        if any(not isinstance(d, int) for d in inner):
            return freeze_all(w, node, "merges the channel axis with dimensions of unknown size")
        w.set(node.output[0], 0, _expand(info.labels, inner, info.axis))
    else:
        inner = shape[split:]
        if any(not isinstance(d, int) for d in inner):
            return freeze_all(w, node, "merges the channel axis with dimensions of unknown size")
        w.set(node.output[0], 1, _expand(info.labels, inner, info.axis - split))


@rule("Reshape")
def reshape(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    entries = w.shape_entries(node, 1)
    if w.info(node.input[1]) is not None:
        return freeze_all(w, node, "takes its target shape from channel data")
    if entries is None:
        _freeze_shape_sources(w, node, "has a target shape computed at run time")
        return freeze_all(w, node, "has a target shape computed at run time")
    counts = _channel_counts(w, entries)
    if info is None:
        for labels in counts.values():
            w.freeze(labels, f"Reshape node {node.name!r} reads a channel count into its target")
        return
    src, dst = w.shape(node.input[0]), w.shape(node.output[0])
    if src is None or dst is None or None in src or None in dst:
        return freeze_all(w, node, "has an input or output of unknown shape")
    blocks = _align(src, dst)
    if blocks is None:
        return freeze_all(w, node, "reshapes dimensions of unknown size together")
    for (i0, i1), (j0, j1) in blocks:
        if i0 <= info.axis < i1:
            break
    inner = src[i0:i1]
    labels = _expand(info.labels, inner, info.axis - i0).reshape(dst[j0:j1])
    axis = _single_varying_axis(labels)
    if axis is None:
        return freeze_all(w, node, "splits the channel axis into several axes")
    out_axis = j0 + axis
    out_labels = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1)[:, 0]
    labels = _follow_target(w, node, entries, counts, out_axis, out_labels, info)
    if labels is not None:
        w.set(node.output[0], out_axis, labels)


def _follow_target(w: Walk, node, entries, counts, out_axis, out_labels, info):
    """Make entry ``out_axis`` of a target shape follow the kept channels.

    Returns the output's labels, or None when the node had to be frozen.

    A channel count read at run time from the tensor whose channels these are (``Shape(x)[c]``)
    follows by itself once both are united; a constant is rewritten; -1 is inferred.
    """
    for j, labels in counts.items():
        if j != out_axis or len(labels) != len(out_labels):
            w.freeze(labels, f"{node.op_type} node {node.name!r} puts a channel count elsewhere")
            freeze_all(w, node, "puts a channel count on another axis")
            return None
    if out_axis in counts:
        return w.union(out_labels, counts[out_axis], node)
    value, where, _ = entries[out_axis]
    if not isinstance(value, int):
        freeze_all(w, node, "has a channel dimension computed at run time")
        return None
    if value == 0 and node.op_type == "Reshape" and not attr(node, "allowzero", 0):
        if not (out_axis == info.axis and np.array_equal(out_labels, info.labels)):
            freeze_all(w, node, "copies a dimension (0) into the channel axis")
            return None
    elif value == len(out_labels) and value > 1:
        if where is None:
            freeze_all(w, node, "has a channel dimension computed at run time")
            return None
        w.edit_const(where[0], where[1], where[2], out_labels)
    elif value not in (-1, 1) or (value == 1 and node.op_type == "Reshape"):
        freeze_all(w, node, "has an unexpected target shape")
        return None
    return out_labels


def _channel_counts(w: Walk, entries) -> dict[int, np.ndarray]:
    """Entries of a shape vector that are ``Shape(x)[a]`` with ``a`` the channel axis of x."""
    counts = {}
    for j, entry in enumerate(entries):
        if entry.source is not None:
            src = w.info(entry.source[0])
            if src is not None and src.axis == entry.source[1]:
                counts[j] = src.labels
    return counts


def _freeze_shape_sources(w: Walk, node: onnx.NodeProto, why: str) -> None:
    """Freeze the channels of every tensor whose Shape feeds this node's shape input."""
    seen, stack = set(), [n for n in node.input[1:] if n]
    while stack and len(seen) < 64:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = w.model.producer(name)
        if producer is None:
            continue
        if producer.op_type == "Shape":
            info = w.info(producer.input[0])
            if info is not None:
                w.freeze(info.labels, f"{node.op_type} node {node.name!r} {why}")
            continue
        stack.extend(n for n in producer.input if n)


_SHAPE_PLUMBING = frozenset({"Gather", "Slice", "Unsqueeze", "Squeeze", "Cast", "Identity",
                             "Concat"})


@rule("Shape")
def shape_op(w: Walk, node: onnx.NodeProto) -> None:
    """Shape of a channel tensor: safe while its channel count only reaches shape targets.

    A channel count read at run time may flow (through Gather/Slice/Unsqueeze/Concat ...) into
    Reshape or Expand targets, whose rules unite it with the channels they shape.
    """
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "reads the shape of a tensor of unknown rank")
    start, end = attr(node, "start", 0), attr(node, "end", rank)
    dims = list(range(rank))[start:end]
    if info.axis not in dims:
        return
    channel = dims.index(info.axis)
    for consumer, _ in w.consumers(node.output[0]):
        if _reads_other_entries(w, consumer, channel, len(dims)):
            continue
        bad = _outside_shape_targets(w, node.output[0], 0)
        if bad is not None:
            w.freeze(
                info.labels,
                f"Shape node {node.name!r}: the channel count is read at run time by "
                f"{bad.op_type} node {bad.name!r}",
            )
            return


def _outside_shape_targets(w: Walk, value: str, depth: int) -> onnx.NodeProto | None:
    """A node using a shape value other than as a Reshape/Expand target (None if none)."""
    for consumer, index in w.consumers(value):
        if consumer.op_type in ("Reshape", "Expand") and index == 1:
            continue
        if consumer.op_type in _SHAPE_PLUMBING and index == 0 or consumer.op_type == "Concat":
            if depth > 12:
                return consumer
            if consumer.op_type in ("Gather", "Slice") and not all(
                w.is_weight(n) for n in consumer.input[1:] if n
            ):
                return consumer
            bad = _outside_shape_targets(w, consumer.output[0], depth + 1)
            if bad is not None:
                return bad
            continue
        return consumer
    return None


def _reads_other_entries(w: Walk, consumer: onnx.NodeProto, channel: int, n: int) -> bool:
    """True when a consumer of a shape vector provably ignores entry ``channel``."""
    if consumer.op_type == "Gather" and consumer.input[0] != consumer.input[1]:
        idx = w.const(consumer.input[1])
        return idx is not None and channel not in (np.asarray(idx).ravel() % n).tolist()
    if consumer.op_type == "Slice":
        bounds = [w.const(n_) if n_ else None for n_ in consumer.input[1:]]
        if len(bounds) < 2 or bounds[0] is None or bounds[1] is None:
            return False
        if len(bounds) > 2 and bounds[2] is not None and bounds[2].size and int(bounds[2][0]) != 0:
            return False
        if len(bounds) > 3 and bounds[3] is not None and bounds[3].size:
            step = int(bounds[3][0])
        else:
            step = 1
        picked = list(range(n))[int(bounds[0][0]) : int(bounds[1][0]) : step]
        return channel not in picked
    return False


@rule("Size")
def size(w: Walk, node: onnx.NodeProto) -> None:
    freeze_all(w, node, "reads the element count, which changes with the channel count")


@rule("Concat")
def concat(w: Walk, node: onnx.NodeProto) -> None:
    infos = [w.info(n) for n in node.input]
    if all(i is None for i in infos):
        return
    rank = w.rank(node.output[0])
    if rank is None:
        return freeze_all(w, node, "has an output of unknown rank")
    axis = attr(node, "axis") % rank
    channel_axes = {i.axis for i in infos if i is not None}
    if len(channel_axes) != 1:
        return freeze_all(w, node, "joins channels on different axes")
    channel = channel_axes.pop()
    if channel == axis:
        pieces = []
        for name, info in zip(node.input, infos):
            if info is not None:
                pieces.append(info.labels)
                continue
            dim = w.shape(name)[axis] if w.shape(name) else None
            if not isinstance(dim, int):
                return freeze_all(w, node, "concatenates an input of unknown size")
            pieces.append(np.full(dim, -1, np.int64))
        return w.set(node.output[0], axis, np.concatenate(pieces))
    if any(i is None for i in infos):
        return freeze_all(w, node, "stacks channel tensors with tensors no group produces")
    labels = infos[0].labels
    for info in infos[1:]:
        if len(info.labels) != len(labels):
            return freeze_all(w, node, "stacks channel tensors of different sizes")
        labels = w.union(labels, info.labels, node)
    w.set(node.output[0], channel, labels)


@rule("Split")
def split(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "has an input of unknown rank")
    axis = attr(node, "axis", 0) % rank
    if axis != info.axis:
        for out in node.output:
            if out:
                w.set(out, info.axis, info.labels)
        return
    sizes = attr(node, "split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        sizes = w.const(node.input[1])
        if sizes is None:
            return freeze_all(w, node, "has split sizes computed at run time")
    total, n = len(info.labels), len(node.output)
    if sizes is None:
        if total % n:  # opset 18 uneven split: the last piece is smaller
            chunk = -(-total // n)
            sizes = [chunk] * (n - 1) + [total - chunk * (n - 1)]
        else:
            sizes = [total // n] * n
    sizes = [int(s) for s in np.asarray(sizes).ravel()]
    pieces = np.split(info.labels, np.cumsum(sizes)[:-1])
    w.edit_split(node, pieces)
    for out, piece in zip(node.output, pieces):
        if out:
            w.set(out, axis, piece)


@rule("Slice")
def slice_(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    if any(w.info(n) is not None for n in node.input[1:] if n):
        return freeze_all(w, node, "takes its bounds from channel data")
    rank = w.rank(node.input[0])
    values = [w.const(n) if n else None for n in node.input[1:5]]
    if rank is None or len(values) < 2 or values[0] is None or values[1] is None:
        return freeze_all(w, node, "has bounds computed at run time")
    starts, ends = values[0].ravel().tolist(), values[1].ravel().tolist()
    if len(values) > 2 and node.input[3]:
        if values[2] is None:
            return freeze_all(w, node, "has axes computed at run time")
        axes = [int(a) % rank for a in values[2].ravel()]
    else:
        axes = list(range(len(starts)))
    if len(values) > 3 and node.input[4]:
        if values[3] is None:
            return freeze_all(w, node, "has steps computed at run time")
        steps = values[3].ravel().tolist()
    else:
        steps = [1] * len(starts)
    if info.axis not in axes:
        return w.set(node.output[0], info.axis, info.labels)
    j = axes.index(info.axis)
    if steps[j] != 1:
        return freeze_all(w, node, "slices the channel axis with a step")
    positions = np.arange(len(info.labels))[slice(int(starts[j]), int(ends[j]))]
    if positions.size == 0:
        return freeze_all(w, node, "selects no channel")
    w.edit_slice(node, j, info.labels, int(positions[0]), int(positions[-1]) + 1)
    w.set(node.output[0], info.axis, info.labels[positions])


@rule("Gather")
def gather(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return freeze_all(w, node) if w.info(node.input[1]) is not None else None
    rank = w.rank(node.input[0])
    idx_rank = w.rank(node.input[1])
    if rank is None or idx_rank is None:
        return freeze_all(w, node, "has inputs of unknown rank")
    axis = attr(node, "axis", 0) % rank
    if axis == info.axis:
        return freeze_all(w, node, "gathers along the channel axis")
    out_axis = info.axis if info.axis < axis else info.axis - 1 + idx_rank
    w.set(node.output[0], out_axis, info.labels)


@rule("Tile")
def tile(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return freeze_all(w, node) if w.info(node.input[1]) is not None else None
    repeats = w.const(node.input[1])
    if repeats is None:
        return freeze_all(w, node, "has repeats computed at run time")
    if int(repeats.ravel()[info.axis]) != 1:
        return freeze_all(w, node, "repeats the channel axis")
    w.set(node.output[0], info.axis, info.labels)


@rule("Expand")
def expand(w: Walk, node: onnx.NodeProto) -> None:
    """Broadcast to a target shape: the channel entry must be 1, or follow the channels."""
    info = w.info(node.input[0])
    if w.info(node.input[1]) is not None:
        return freeze_all(w, node, "takes its target shape from channel data")
    entries = w.shape_entries(node, 1)
    if entries is None:
        _freeze_shape_sources(w, node, "has a target shape computed at run time")
        return freeze_all(w, node, "has a target shape computed at run time")
    counts = _channel_counts(w, entries)
    rank, out_rank = w.rank(node.input[0]), w.rank(node.output[0])
    if info is None:
        # a tensor broadcast to the shape of a channel tensor: only size-1 positions follow
        for j, labels in counts.items():
            w.freeze(labels, f"Expand node {node.name!r} broadcasts to a channel count")
        return
    if rank is None or out_rank is None:
        return freeze_all(w, node, "has inputs of unknown rank")
    out_axis = info.axis + out_rank - rank
    local = out_axis - (out_rank - len(entries))
    if local < 0:
        return w.set(node.output[0], out_axis, info.labels)
    shifted = {j + out_rank - len(entries): labels for j, labels in counts.items()}
    entries = [None] * (out_rank - len(entries)) + list(entries)
    labels = _follow_target(w, node, entries, shifted, out_axis, info.labels, info)
    if labels is not None:
        w.set(node.output[0], out_axis, labels)


# -- helpers ------------------------------------------------------------------------------------


def _size(w: Walk, name: str) -> int | None:
    shape = w.shape(name)
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def _dim(w: Walk, name: str, axis: int) -> int:
    shape = w.shape(name)
    if shape is None or len(shape) <= axis or not isinstance(shape[axis], int):
        return 0
    return shape[axis]


def _axes(w: Walk, node: onnx.NodeProto) -> list[int] | None | bool:
    """Axes of Squeeze/Unsqueeze from the attribute or the constant input; False if unknown."""
    axes = attr(node, "axes")
    if axes is not None:
        return list(axes)
    if len(node.input) > 1 and node.input[1]:
        value = w.const(node.input[1])
        return False if value is None else [int(a) for a in value.ravel()]
    return None


def _expand(labels: np.ndarray, dims: list[int], axis: int) -> np.ndarray:
    """Labels of every element of a block of ``dims`` whose axis ``axis`` carries ``labels``."""
    shape = [1] * len(dims)
    shape[axis] = len(labels)
    return np.broadcast_to(labels.reshape(shape), dims).ravel().copy()


def _align(src: list, dst: list) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Pair up contiguous blocks of ``src`` and ``dst`` with equal element counts.

    Symbolic dimensions must match one to one (same name, same block); None when they do not.
    """
    blocks = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and isinstance(src[i], str):
            if src[i] != dst[j]:
                return None
            blocks.append(((i, i + 1), (j, j + 1)))
            i, j = i + 1, j + 1
            continue
        i0, j0 = i, j
        p = q = 1
        if i < len(src):
            p, i = src[i], i + 1
        if j < len(dst):
            if isinstance(dst[j], str):
                return None
            q, j = dst[j], j + 1
        while p != q:
            if p < q and i < len(src) and isinstance(src[i], int):
                p, i = p * src[i], i + 1
            elif q < p and j < len(dst) and isinstance(dst[j], int):
                q, j = q * dst[j], j + 1
            else:
                return None
        # trailing size-1 dims belong to the current block
        while i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            i += 1
        while j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            j += 1
        blocks.append(((i0, i), (j0, j)))
    return blocks


def _single_varying_axis(labels: np.ndarray) -> int | None:
    """The one axis along which ``labels`` changes (0 if none changes); None if several do."""
    varying = [
        a
        for a in range(labels.ndim)
        if labels.shape[a] > 1 and not np.all(labels == labels.take([0], axis=a))
    ]
    if len(varying) > 1:
        return None
    if varying:
        return varying[0]
    sized = [a for a in range(labels.ndim) if labels.shape[a] > 1]
    return sized[0] if sized else 0
