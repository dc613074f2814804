"""Normalisation and softmax-like ops: per-channel parameters, or axes that mix channels."""

from __future__ import annotations

import onnx

from .._walk import Walk
from ._base import attr, freeze_all, rule


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
