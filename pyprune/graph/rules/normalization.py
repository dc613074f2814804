"""Normalisation and softmax-like ops: per-channel parameters, or axes that mix channels."""

from __future__ import annotations

import onnx

from .._walk import Walk
from ._base import CONTRIB_RULES, attr, freeze_all, rule


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


@rule("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", registry=CONTRIB_RULES)
def skip_layer_norm(w: Walk, node: onnx.NodeProto) -> None:
    """``LayerNorm(input + skip + bias)`` over the last axis (ONNX Runtime's fused residual join and
    normalisation): channels on the last axis are normalised together, so they freeze."""
    labeled = [info for name in node.input[:2] if (info := w.info(name)) is not None]
    if not labeled:
        return
    rank = w.rank(node.input[0])
    if rank is None:
        return freeze_all(w, node, "has an input of unknown rank")
    if any(info.axis == rank - 1 for info in labeled):
        return freeze_all(w, node, "normalises over the channel axis")
    freeze_all(w, node, "joins channels that are not on its normalised axis")


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
    w.set(node.output[0], info.axis, info.labels, info.tiled)


# -- pooling, padding, resizing -----------------------------------------------------------------
