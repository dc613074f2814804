"""ONNX Runtime's fused attention ops (``com.microsoft``): heads are the units.

ORT's transformer optimizer replaces the unfused attention of an export by one node:

* ``Attention``: the Q, K, V projections packed into one weight ``[hidden, 3 * heads * d]``
  (and bias), then attention; the output ``[batch, seq, heads * d]`` holds head ``h`` at
  positions ``h*d .. (h+1)*d``;
* ``MultiHeadAttention``: attention over projected query, key and value inputs (with an optional
  packed bias ``[3 * heads * d]``);
* ``GroupQueryAttention``: the same with fewer key/value heads, each shared by a group of query
  heads: a KV head is removed with its query heads.

A head is removed by cutting its slices out of the weights and biases and lowering the
``num_heads`` (``kv_num_heads``) attribute. Inputs and outputs shaped by the head count (past
and present key/value caches, an attention bias with a head axis) and per-part hidden sizes
(``qkv_hidden_sizes``) freeze the heads.
"""

from __future__ import annotations

import numpy as np
import onnx

from .._walk import Walk
from ._base import CONTRIB_RULES, attr, freeze_all, rule


def _present(node: onnx.NodeProto, index: int) -> bool:
    return len(node.input) > index and bool(node.input[index])


def _head_labels(w: Walk, labels: np.ndarray, heads: int, node: onnx.NodeProto) -> np.ndarray:
    """Unite the ``d`` features of each head (consecutive positions); one label per head."""
    rows = labels.reshape(heads, -1)
    for row in rows:
        w.union(np.full(len(row), row[0]), row, node)
    return rows[:, 0].copy()


def _cache_reason(w: Walk, node: onnx.NodeProto, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> str | None:
    """Why tensors shaped by the head count make the heads fixed (None: there are none)."""
    for i in inputs:
        if _present(node, i):
            return f"reads {node.input[i]!r}, shaped by the head count"
    for i in outputs:
        if len(node.output) > i and node.output[i] and (w.consumers(node.output[i])
                                                        or w.model.is_graph_output(node.output[i])):
            return f"writes {node.output[i]!r}, shaped by the head count"
    return None


@rule("Attention", registry=CONTRIB_RULES)
def attention(w: Walk, node: onnx.NodeProto) -> None:
    x, weight = node.input[0], node.input[1]
    bias = node.input[2] if _present(node, 2) else ""
    heads = int(attr(node, "num_heads", 0))
    wshape = w.shape(weight)
    out_rank = w.rank(node.output[0])
    if (not w.is_weight(weight) or (bias and not w.is_weight(bias)) or wshape is None
            or len(wshape) != 2 or not heads or out_rank is None):
        return freeze_all(w, node, "has weights that are not constants")
    info = w.info(x)
    if info is not None:
        if info.axis != (w.rank(x) or 0) - 1:
            freeze_all(w, node, "reads channels on a non-reduced axis")
        else:
            w.couple(weight, 0, info.labels, "in", node)
            w.mask(node, 0, info)
    hidden = wshape[1] // 3
    why = None
    if attr(node, "qkv_hidden_sizes") is not None:
        why = "has separate Q, K, V hidden sizes (qkv_hidden_sizes)"
    elif wshape[1] % 3 or hidden % heads:
        why = "has a packed weight that does not split into its heads"
    else:
        why = _cache_reason(w, node, (4, 5, 6), (1,))
    if why:
        return freeze_all(w, node, why)
    units = w.new_units(node, node.output[0], out_rank - 1, heads)
    positions = np.repeat(units, hidden // heads)
    w.set(node.output[0], out_rank - 1, positions)
    w.couple(weight, 1, np.tile(positions, 3), "out", node)
    if bias:
        w.couple(bias, 0, np.tile(positions, 3), "out", node)
    w.edit_attr(node, "num_heads", units)
    return None


@rule("MultiHeadAttention", registry=CONTRIB_RULES)
def multi_head_attention(w: Walk, node: onnx.NodeProto) -> None:
    heads = int(attr(node, "num_heads", 0))
    infos = [w.info(node.input[i]) if _present(node, i) else None for i in range(3)]
    ranks = [w.rank(node.input[i]) if _present(node, i) else None for i in range(3)]
    out_rank = w.rank(node.output[0])
    why = _cache_reason(w, node, (5, 6, 7), (1, 2))
    if why is None and (not heads or out_rank is None or ranks != [3, 3, 3]):
        why = "reads packed or 4-D query/key/value inputs"
    if why is None and any(i is None or i.axis != 2 or i.tiled for i in infos):
        why = "reads a query, key or value no prunable group produces"
    if why is None and any(len(i.labels) % heads for i in infos if i is not None):
        why = "reads hidden sizes that do not split into its heads"
    bias = node.input[3] if _present(node, 3) else ""
    if why is None and bias and not w.is_weight(bias):
        why = "adds a bias that is not a constant"
    if why is not None:
        return freeze_all(w, node, why)
    assert None not in infos and out_rank is not None
    per_part = [_head_labels(w, i.labels, heads, node) for i in infos if i is not None]
    labels = per_part[0]
    for other in per_part[1:]:
        labels = w.union(labels, other, node)
    if bias:
        w.couple(bias, 0, np.concatenate([i.labels for i in infos if i is not None]), "param", node)
    value_dim = len(infos[2].labels) // heads if infos[2] is not None else 1
    w.edit_attr(node, "num_heads", labels)
    w.scale_work(node, labels)
    w.set(node.output[0], out_rank - 1, np.repeat(labels, value_dim))
    return None


@rule("GroupQueryAttention", registry=CONTRIB_RULES)
def group_query_attention(w: Walk, node: onnx.NodeProto) -> None:
    heads, kv_heads = int(attr(node, "num_heads", 0)), int(attr(node, "kv_num_heads", 0))
    infos = [w.info(node.input[i]) if _present(node, i) else None for i in range(3)]
    ranks = [w.rank(node.input[i]) if _present(node, i) else None for i in range(3)]
    out_rank = w.rank(node.output[0])
    why = _cache_reason(w, node, (3, 4), (1, 2))
    if why is None and (not heads or not kv_heads or heads % kv_heads or out_rank is None
                        or ranks != [3, 3, 3]):
        why = "reads packed query/key/value inputs"
    if why is None and any(i is None or i.axis != 2 or i.tiled for i in infos):
        why = "reads a query, key or value no prunable group produces"
    if why is None and (infos[0] is not None and len(infos[0].labels) % heads
                        or any(i is not None and len(i.labels) % kv_heads for i in infos[1:])):
        why = "reads hidden sizes that do not split into its heads"
    if why is not None:
        return freeze_all(w, node, why)
    assert None not in infos and out_rank is not None
    q, k, v = (i.labels for i in infos if i is not None)
    query_heads = _head_labels(w, q, heads, node)
    groups = _head_labels(w, k, kv_heads, node)
    groups = w.union(groups, _head_labels(w, v, kv_heads, node), node)
    # query head h reads KV head h // (heads / kv_heads): they go together
    per_group = heads // kv_heads
    query_heads = w.union(query_heads, np.repeat(groups, per_group), node)
    w.edit_attr(node, "num_heads", query_heads)
    w.edit_attr(node, "kv_num_heads", groups)
    w.scale_work(node, query_heads)
    w.set(node.output[0], out_rank - 1, np.repeat(query_heads, len(q) // heads))
    return None
