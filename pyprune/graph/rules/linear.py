"""Weighted ops: consumers of incoming channels and roots of new units (Conv, ConvTranspose, Gemm, MatMul)."""

from __future__ import annotations

import numpy as np
import onnx

from .._walk import Walk
from ._base import CONTRIB_RULES, attr, freeze_all, rule, static_dim

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
        w.new_units(node, node.output[0], 1, static_dim(w, node.output[0], 1), frozen=(
            f"Conv node {node.name!r} has weights that are not constants"))
        return
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
        w.new_units(node, node.output[0], 1, static_dim(w, node.output[0], 1), frozen=(
            f"ConvTranspose node {node.name!r} has an explicit output_shape"))
        return
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
        w.new_units(node, node.output[0], 1, static_dim(w, node.output[0], 1), frozen=(
            f"Gemm node {node.name!r} multiplies by a matrix that is not a constant"))
        return
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
    _matmul(w, node, trans_b=False)


@rule("FusedMatMul", registry=CONTRIB_RULES)
def fused_matmul(w: Walk, node: onnx.NodeProto) -> None:
    """ONNX Runtime's MatMul with transposes and a scale folded in (``alpha * A' @ B'``)."""
    if attr(node, "transA", 0) or attr(node, "transBatchA", 0) or attr(node, "transBatchB", 0):
        freeze_all(w, node, "transposes its input or batch axes")
        out_rank = w.rank(node.output[0])
        if out_rank:
            w.new_units(node, node.output[0], out_rank - 1, static_dim(w, node.output[0], out_rank - 1),
                        frozen=f"FusedMatMul node {node.name!r} transposes its input or batch axes")
        return
    _matmul(w, node, trans_b=bool(attr(node, "transB", 0)))


@rule("FusedConv", registry=CONTRIB_RULES)
def fused_conv(w: Walk, node: onnx.NodeProto) -> None:
    """ONNX Runtime's Conv + bias (+ ``Z``, added before the activation) + an element-wise
    activation: a Conv whose output channels are joined with ``Z``'s like a residual Add."""
    z = node.input[3] if len(node.input) > 3 else ""
    z_info = w.info(z)
    conv(w, node)
    if not z:
        return
    out = w.info(node.output[0])
    if out is None:
        if z_info is not None:
            w.freeze(z_info.labels, f"FusedConv node {node.name!r} adds it to channels no group owns")
        return
    if z_info is None or z_info.axis != 1 or len(z_info.labels) != len(out.labels):
        w.freeze(out.labels, f"FusedConv node {node.name!r} adds {z!r}, which no prunable group produces")
        return
    w.set(node.output[0], 1, w.union(out.labels, z_info.labels, node))


def _matmul(w: Walk, node: onnx.NodeProto, trans_b: bool) -> None:
    """``A @ B`` with a constant 2-D ``B`` (stored ``[N, K]`` when ``trans_b``)."""
    k_axis, n_axis = (1, 0) if trans_b else (0, 1)
    a, b = node.input[0], node.input[1]
    info = w.info(a)
    bshape = w.shape(b)
    a_rank = w.rank(a)
    out_rank = w.rank(node.output[0])
    if not w.is_weight(b) and a_rank and w.rank(b) and out_rank:
        return _matmul_activations(w, node)
    if w.info(b) is not None or not w.is_weight(b) or len(bshape) != 2 or not a_rank:
        freeze_all(w, node, "multiplies two activations (or by a non-2-D constant)")
        if w.is_weight(b) and out_rank:
            w.new_units(node, node.output[0], out_rank - 1,
                        static_dim(w, node.output[0], out_rank - 1),
                        frozen=f"MatMul node {node.name!r} reads a 1-D or unknown-rank input")
        return
    if out_rank is None:
        # shape inference is best effort: without the output's rank there is no channel axis
        return freeze_all(w, node, "has an output of unknown rank")
    if info is not None and info.tiled:
        freeze_all(w, node, "reads channels merged with an axis of unknown size")
        info = None
    if info is not None:
        if info.axis != a_rank - 1 or a_rank < 2:
            freeze_all(w, node, "reads channels on a non-reduced axis")
        else:
            w.couple(b, k_axis, info.labels, "in", node)
            w.mask(node, 0, info)
    units = w.new_units(node, node.output[0], out_rank - 1, bshape[n_axis])
    w.couple(b, n_axis, units, "out", node)


def _matmul_activations(w: Walk, node: onnx.NodeProto) -> None:
    """A product of two activations (attention: ``Q @ K^T``, ``P @ V``).

    Channels on a batch axis (the heads of ``[batch, heads, rows, cols]``) pass through, united
    with the same axis of the other operand (or broadcast against its size 1); channels on the
    rows of the left or the columns of the right operand pass on to the same axis of the output.
    Channels on the reduced axis, or a batch axis the other operand fills with values no group
    owns, freeze.
    """
    known = [w.rank(n) for n in node.input[:2]]
    out_rank = w.rank(node.output[0])
    assert out_rank is not None
    ranks = [r for r in known if r is not None]
    assert len(ranks) == 2
    infos = [w.info(n) for n in node.input[:2]]
    placed: dict[int, np.ndarray] = {}
    tiled = any(info is not None and info.tiled for info in infos)
    if tiled and any(info is None or not info.tiled or info.axis >= rank - 2
                     for info, rank in zip(infos, ranks)):
        # a tiled axis keeps its unknown repeat count only as a batch axis both operands share
        return freeze_all(w, node, "multiplies channels merged with an axis of unknown size")
    for k, (info, rank) in enumerate(zip(infos, ranks)):
        if info is None:
            continue
        reduced = rank - 1 if k == 0 else rank - 2
        if rank < 2 or info.axis == reduced:
            return freeze_all(w, node, "multiplies two activations over their channel axis")
        if info.axis >= rank - 2:  # rows of A, columns of B
            out_axis = out_rank - 2 if k == 0 else out_rank - 1
        else:
            out_axis = info.axis + out_rank - rank
            other, other_rank = node.input[1 - k], ranks[1 - k]
            local = out_axis - (out_rank - other_rank)
            other_shape = w.shape(other)
            dim = 1 if local < 0 or local >= other_rank - 2 else other_shape[local]
            if infos[1 - k] is None and dim != 1:
                return freeze_all(w, node, f"multiplies the channels with {other!r}, which no "
                                           "prunable group produces")
        if out_axis in placed:
            if len(placed[out_axis]) == 1 or len(info.labels) == 1:  # broadcast against one unit
                placed[out_axis] = placed[out_axis] if len(info.labels) == 1 else info.labels
                continue
            if len(placed[out_axis]) != len(info.labels):
                return freeze_all(w, node, "joins channel tensors of different sizes")
            placed[out_axis] = w.union(placed[out_axis], info.labels, node)
        else:
            placed[out_axis] = info.labels
    if len(placed) > 1:
        return freeze_all(w, node, "puts channels on two axes of its output")
    for out_axis, labels in placed.items():
        w.set(node.output[0], out_axis, labels, tiled)
        w.scale_work(node, labels)  # one slice of the product per kept position


# -- normalisation ------------------------------------------------------------------------------
