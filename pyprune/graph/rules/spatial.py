"""Pooling, padding, resizing and reductions: spatial axes change, channels pass through."""

from __future__ import annotations

import numpy as np
import onnx

from .._walk import Walk
from ._base import attr, freeze_all, rule


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
