"""Folding per-channel corrections into weights and biases, so a shipped model has no extra nodes.

Recovery judges its corrections inside the search session as ``x * scale + shift`` on an edge;
on shipping they become plain parameters: a replaced normalisation statistic, or the constant a
shift on a linear consumer's input adds to its output, folded into that consumer's bias (Conv,
Gemm) or into the constant of the ``Add`` that follows a MatMul. A MatMul with no such ``Add`` has
nowhere to fold into, so :func:`bias_after` tells recovery not to correct it at all.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..graph import MaskPoint, Model

__all__ = ["replace_input", "fold_input_shift", "bias_after"]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def replace_input(model: Model, node: onnx.NodeProto, index: int, values: np.ndarray) -> None:
    """Give ``node`` its own initializer for input ``index`` holding ``values`` (same dtype and
    shape as the old one; other readers of the old tensor keep it)."""
    old = model.weight(node.input[index])
    name = model.add_weight(model.unique_name(f"{node.input[index]}_recovered"),
                            np.asarray(values, dtype=old.dtype).reshape(old.shape))
    node.input[index] = name


def bias_after(model: Model, node: onnx.NodeProto) -> tuple[onnx.NodeProto, int] | None:
    """The ``Add`` of a constant bias along the last axis that alone reads a MatMul's output (or
    the ``SkipLayerNormalization`` whose bias input does that add), and the input index of that
    constant; None when there is none to fold a correction into."""
    readers = model.consumers(node.output[0])
    if len(readers) != 1 or model.is_graph_output(node.output[0]):
        return None
    add, index = readers[0]
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


def fold_input_shift(model: Model, node: onnx.NodeProto, point: MaskPoint, shift: np.ndarray) -> None:
    """Add to ``node``'s output what a constant ``shift`` on its input ``point`` contributes
    (``node`` is a Conv without padding, a Gemm, or a MatMul followed by :func:`bias_after`)."""
    w = model.weight(node.input[1]).astype(np.float64)
    s = np.asarray(shift, dtype=np.float64)
    if node.op_type == "Gemm":
        b = w.T if _attr(node, "transB", 0) else w
        alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
        delta = alpha * (s @ b) / (beta if beta else 1.0)
        _add_to_bias(model, node, 2, delta, beta != 0)
    elif node.op_type == "Conv":
        delta = w.sum(axis=tuple(range(2, w.ndim))) @ s
        _add_to_bias(model, node, 2, delta, True)
    elif node.op_type == "MatMul":
        found = bias_after(model, node)
        if found is None:
            raise ValueError(f"MatMul node {node.name!r} has no bias Add to fold a correction into")
        add, index = found
        old = model.weight(add.input[index])
        new = old.astype(np.float64) + (s @ w).reshape(old.shape)
        add.input[index] = model.add_weight(model.unique_name(f"{add.input[index]}_compensated"),
                                            new.astype(old.dtype))
    else:
        raise ValueError(f"cannot fold an input shift into a {node.op_type} node")


def _add_to_bias(model: Model, node: onnx.NodeProto, index: int, delta: np.ndarray, usable: bool) -> None:
    dtype = model.weight(node.input[1]).dtype
    given = len(node.input) > index and bool(node.input[index])
    if given and usable:
        old = model.weight(node.input[index]).astype(np.float64)
        new = np.broadcast_to(old, np.broadcast_shapes(old.shape, delta.shape)) + delta
        node.input[index] = model.add_weight(model.unique_name(f"{node.input[index]}_compensated"),
                                             new.astype(dtype))
        return
    if not usable:  # Gemm with beta = 0 ignores C, given or not: C = delta with beta = 1
        for a in node.attribute:
            if a.name == "beta":
                a.f = 1.0
    name = model.add_weight(model.unique_name(f"{node.name}_compensation"), delta.astype(dtype))
    if given:
        node.input[index] = name
        return
    while len(node.input) < index:
        node.input.append("")
    node.input.append(name)
