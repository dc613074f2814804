"""Folding per-channel corrections into weights and biases, so a shipped model has no extra nodes.

Recovery judges its corrections inside the search session as ``x * scale + shift`` on an edge or
on a layer's output; on shipping they become plain parameters: a replaced normalisation
statistic or weight, or a per-channel scale and shift of a linear layer's output folded into its
weight and bias (Conv, ConvTranspose, Gemm) or into the constant of the ``Add`` that follows a
MatMul. A MatMul with no such ``Add`` has nowhere to fold a shift into, so :func:`bias_after`
tells recovery not to correct it at all.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..graph import Model

__all__ = ["replace_input", "fold_output_affine", "bias_after"]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def replace_input(model: Model, node: onnx.NodeProto, index: int, values: np.ndarray) -> None:
    """Give ``node`` input ``index`` the ``values`` (same dtype and shape as the old one): in place
    when ``node`` alone reads that initializer (its name stays, so masks and removals that name
    it still apply), else in a new initializer of its own (other readers keep the old one)."""
    old = model.weight(node.input[index])
    if len(model.consumers(node.input[index])) == 1 and not model.is_graph_output(node.input[index]):
        model.set_weight(node.input[index], np.asarray(values, dtype=old.dtype).reshape(old.shape))
        return
    name = model.add_weight(model.unique_name(f"{node.input[index]}_recovered"),
                            np.asarray(values, dtype=old.dtype).reshape(old.shape))
    node.input[index] = name


def bias_after(model: Model, node: onnx.NodeProto) -> tuple[onnx.NodeProto, int] | None:
    """The ``Add`` of a constant bias along the last axis that alone reads a MatMul's output (maybe
    through identity Casts, float to the same float type, as Keras exports write them; or the
    ``SkipLayerNormalization`` whose bias input does that add), and the input index of that
    constant; None when there is none to fold a correction into."""
    value = node.output[0]
    while True:
        readers = model.consumers(value)
        if len(readers) != 1 or model.is_graph_output(value):
            return None
        add, index = readers[0]
        if add.op_type != "Cast" or _attr(add, "to", 0) != model.elem_type(value) or not model.elem_type(value):
            break
        value = add.output[0]
    if add.domain == "com.microsoft" and add.op_type in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        # ONNX Runtime fuses the bias Add into the normalisation that follows (its last input)
        bias_index = 4 if add.op_type == "SkipLayerNormalization" else 3
        if index not in (0, 1) or len(add.input) <= bias_index or not model.is_weight(add.input[bias_index]):
            return None
        bias = model.weight(add.input[bias_index])
        width = model.weight(node.input[1]).shape[-1]
        return (add, bias_index) if bias.shape == (width,) else None
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or index < 0:
        return None
    other = add.input[1 - index]
    if not model.is_weight(other):
        return None
    bias, out = model.weight(other), model.shape(node.output[0])
    width = model.weight(node.input[1]).shape[-1]
    if bias.ndim == 0 or bias.shape[-1] != width or int(np.prod(bias.shape)) != width:
        return None  # a per-position bias would change what the Add broadcasts
    if out is not None and bias.ndim > len(out):
        return None
    return add, 1 - index


def fold_output_affine(model: Model, node: onnx.NodeProto, out_axis: int, scale: np.ndarray,
                       shift: np.ndarray) -> None:
    """Fold ``y * scale + shift`` per output channel of a linear ``node`` (Conv, ConvTranspose,
    Gemm, or a MatMul followed by :func:`bias_after`) into its weight (``out_axis``: the weight's
    axis of output channels) and bias; a Conv or Gemm without a bias gets one."""
    w = model.weight(node.input[1])
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    t = np.asarray(shift, dtype=np.float64).reshape(-1)
    shape = [1] * w.ndim
    shape[out_axis] = s.size
    if not np.all(s == 1.0):
        replace_input(model, node, 1, w.astype(np.float64) * s.reshape(shape))
    if node.op_type == "MatMul":
        found = bias_after(model, node)
        if found is None:
            raise ValueError(f"MatMul node {node.name!r} has no bias Add to fold a correction into")
        add, index = found
        old = model.weight(add.input[index])
        new = old.astype(np.float64).reshape(-1) + t  # the Add comes after the corrected output
        add.input[index] = model.add_weight(model.unique_name(f"{add.input[index]}_recovered"),
                                            new.reshape(old.shape).astype(old.dtype))
        return
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
        raise ValueError(f"cannot fold an output correction into a {node.op_type} node")
    beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
    given = len(node.input) > 2 and bool(node.input[2])
    if given and beta != 0:
        old = model.weight(node.input[2]).astype(np.float64).reshape(-1)
        bias = np.broadcast_to(old, s.shape) * s + t / beta
    else:
        bias = t / (beta if beta else 1.0)
        if beta == 0:  # Gemm with beta = 0 ignores C, given or not: C = shift with beta = 1
            for a in node.attribute:
                if a.name == "beta":
                    a.f = 1.0
    name = model.add_weight(model.unique_name(f"{node.name}_bias_recovered"), bias.astype(w.dtype))
    if given:
        node.input[2] = name
        return
    while len(node.input) < 2:
        node.input.append("")
    node.input.append(name)
