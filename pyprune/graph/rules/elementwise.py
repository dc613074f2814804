"""Element-wise ops: unary activations and broadcasting binary ops (per-channel constants)."""

from __future__ import annotations

import onnx

from .._walk import Walk
from ._base import CONTRIB_RULES, freeze_all, rule, static_size

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
        if extra and node.op_type == "Clip" and static_size(w, extra) not in (1, None):
            return freeze_all(w, node, "has non-scalar bounds")
    if info is None:
        return
    if node.op_type == "Trilu":
        rank = w.rank(node.input[0])
        if rank is None or info.axis >= rank - 2:
            return freeze_all(w, node, "operates on the channel axis")
    for out in node.output:
        if out:
            w.set(out, info.axis, info.labels, info.tiled)


_BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal",
    "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
)  # fmt: skip


@rule(*_BROADCAST)
def broadcast(w: Walk, node: onnx.NodeProto) -> None:
    """Numpy-broadcasting position-wise ops.

    Two inputs carrying channels on the same aligned axis are joined (residual Add, SE Mul):
    their units are united. A constant with a full channel dimension is a per-channel parameter
    coupled to the units; a size-1 dimension broadcasts. A computed tensor with a full channel
    dimension that carries no units (MPNet's relative position bias, computed once and added to
    the attention scores of every layer) is indexed to the kept positions on this edge when units
    are removed; masking needs nothing there, since the units are masked where they are consumed.
    Anything else full-sized freezes.
    """
    labeled = [(i, info) for i, n in enumerate(node.input) if n and (info := w.info(n)) is not None]
    if not labeled:
        return
    out_rank = w.rank(node.output[0])
    present = {i: w.rank(n) for i, n in enumerate(node.input) if n}
    ranks = {i: r for i, r in present.items() if r is not None}
    if out_rank is None or len(ranks) != len(present):
        return freeze_all(w, node, "has inputs of unknown rank")
    out_axes = {info.axis + out_rank - ranks[i] for i, info in labeled}
    if len(out_axes) != 1:
        return freeze_all(w, node, "joins channels on different axes")
    axis = out_axes.pop()
    labels = labeled[0][1].labels
    tiled = any(info.tiled for _, info in labeled)
    if tiled and len(labeled) > 1:
        return freeze_all(w, node, "joins channels merged with an axis of unknown size")
    for _, info in labeled[1:]:
        if len(info.labels) != len(labels):
            return freeze_all(w, node, "joins channel tensors of different sizes")
        labels = w.union(labels, info.labels, node)
    constants, computed = [], []
    for i, name in enumerate(node.input):
        if not name or w.info(name) is not None:
            continue
        local = axis - (out_rank - ranks[i])
        dim = 1 if local < 0 else w.shape(name)[local]
        if dim == 1:
            continue
        if tiled or dim != len(labels):
            return freeze_all(w, node, f"broadcasts input {name!r} of unknown or unequal size")
        if w.is_weight(name):
            constants.append((name, local))
        else:
            computed.append((i, local))
    for name, local in constants:
        w.couple(name, local, labels, "param", node)
    for i, local in computed:
        w.edit_gather(node, i, local, labels)
    for out in node.output:
        if out:
            w.set(out, axis, labels, tiled)


# ONNX Runtime's fused activations. BiasGelu(X, bias) and FastGelu(X[, bias]) add a bias along the
# last axis, then apply GELU; BiasAdd(X, bias, skip) adds a bias and a residual: position-wise
# with per-channel constants and joined activations, what the broadcasting rule handles.
rule("Gelu", "QuickGelu", registry=CONTRIB_RULES)(unary)
rule("BiasGelu", "FastGelu", "BiasAdd", registry=CONTRIB_RULES)(broadcast)
