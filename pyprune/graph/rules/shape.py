"""Shape plumbing: Transpose, (Un)Squeeze, Flatten, Reshape, Shape, Concat, Split, Slice, Gather, Tile, Expand."""

from __future__ import annotations

import numpy as np
import onnx

from .._model import ShapeEntry
from .._walk import Walk
from ._base import (
    aligned_block,
    attr,
    axes_of,
    expand_labels,
    freeze_all,
    rule,
    single_varying_axis,
)


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
    w.set(node.output[0], list(perm).index(info.axis), info.labels, info.tiled)


@rule("Squeeze")
def squeeze(w: Walk, node: onnx.NodeProto) -> None:
    info = w.info(node.input[0])
    if info is None:
        return
    shape = w.shape(node.input[0])
    axes = axes_of(w, node)
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
    axes = axes_of(w, node)
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
        w.set(node.output[0], 0, expand_labels(info.labels, inner, info.axis))
    else:
        inner = shape[split:]
        if any(not isinstance(d, int) for d in inner):
            return freeze_all(w, node, "merges the channel axis with dimensions of unknown size")
        w.set(node.output[0], 1, expand_labels(info.labels, inner, info.axis - split))


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
        if _constant_follows_count(w, node, entries, counts):
            return
        for labels in counts.values():
            w.freeze(labels, f"Reshape node {node.name!r} reads a channel count into its target")
        return
    src, dst = w.shape(node.input[0]), w.shape(node.output[0])
    if src is None or dst is None or len(dst) != len(entries):
        return freeze_all(w, node, "has an input or output of unknown shape")
    if info.tiled:
        return _untile(w, node, info, src, dst, entries, counts)
    block = aligned_block(src, dst, info.axis)
    if block is None:
        if not _merge_leading(w, node, info, src, dst, entries, counts):
            freeze_all(w, node, "reshapes dimensions of unknown size together")
        return None
    (i0, i1), (j0, j1) = block
    inner = src[i0:i1]
    labels = expand_labels(info.labels, inner, info.axis - i0).reshape(dst[j0:j1])
    varying = single_varying_axis(labels)
    split = varying is None
    if varying is None:
        # The channel axis is split into several (attention heads: [.., H*d] -> [.., H, d]).
        # The outermost axis it is split into carries the units on; the positions along the
        # inner axes of one unit (the d features of a head) are united into that unit, so
        # removing it removes a whole slice of the outer axis and the inner sizes stay.
        varying = _split_channels(w, node, labels, entries, j0)
        if varying is None:
            return None
    axis: int = varying
    rows = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1)
    if split:
        for row in rows:
            w.union(np.full(len(row), row[0]), row, node)
    out_axis, out_labels = j0 + axis, rows[:, 0]
    labels = _follow_target(w, node, entries, counts, out_axis, out_labels, info)
    if labels is not None:
        w.set(node.output[0], out_axis, labels)


def _constant_follows_count(w: Walk, node: onnx.NodeProto, entries, counts) -> bool:
    """A per-channel constant reshaped onto an axis sized at run time by a channel count, as
    Keras exports a bias: ``Reshape(bias[C], [1, 1, 1, Shape(x)[3]])``. Its values are the
    channels' own (coupled like a bias), and the count follows the kept channels by itself."""
    data = node.input[0]
    if len(counts) != 1 or not w.is_weight(data):
        return False
    ((j, labels),) = counts.items()
    shape = w.shape(data)
    if shape is None or [d for d in shape if d != 1] != [len(labels)]:
        return False
    if any(e.value not in (1, -1) for k, e in enumerate(entries) if k != j):
        return False
    w.couple(data, list(shape).index(len(labels)), labels, "param", node)
    w.set(node.output[0], j, labels)
    return True


def _merge_leading(w: Walk, node, info, src: list, dst: list, entries, counts) -> bool:
    """``[.., n, C, rest] -> [.., n * C, rest]`` with ``n`` unknown: the merged axis is tiled.

    Exporters fold the heads into the batch to transpose keys (``[B, H, S, d] -> [B*H, S, d]``).
    The axes after the channel axis and those before the merged ones must match one to one.
    """
    a = info.axis
    rest = src[a + 1:]
    k = len(dst) - len(rest) - 1
    if k < 0 or k > a or list(dst[k + 1:]) != list(rest) or None in rest or list(dst[:k]) != list(src[:k]):
        return False
    merged = src[k:a]
    if not merged or all(isinstance(d, int) for d in merged) or counts:
        return False
    if isinstance(entries[k].value, int) and entries[k].value != -1:
        return False
    w.set(node.output[0], k, info.labels, tiled=True)
    return True


def _untile(w: Walk, node, info, src: list, dst: list, entries, counts) -> None:
    """A tiled axis split back into ``[.., n, C]`` (``[B*H, d, S] -> [B, H, d, S]``), or kept whole."""
    a = info.axis
    rest = src[a + 1:]
    j1 = len(dst) - len(rest)
    if j1 <= a or list(dst[j1:]) != list(rest) or None in rest or list(dst[:a]) != list(src[:a]):
        return freeze_all(w, node, "reshapes channels merged with an axis of unknown size")
    if j1 - 1 == a:  # the tiled axis stays one axis
        if isinstance(entries[a].value, int) and entries[a].value != -1 or counts:
            return freeze_all(w, node, "reshapes channels merged with an axis of unknown size")
        return w.set(node.output[0], a, info.labels, tiled=True)
    labels = _follow_target(w, node, entries, counts, j1 - 1, info.labels, info)
    if labels is not None:
        w.set(node.output[0], j1 - 1, labels)


def _split_channels(w: Walk, node: onnx.NodeProto, labels: np.ndarray, entries, j0: int) -> int | None:
    """The axis the units go on when a reshape splits the channel axis into several: the one
    just outside the innermost that varies (heads in ``[H, d]``, and in ``[3, H, d]`` where a
    packed projection is split into Q, K, V and heads), when the others may keep their sizes."""
    varying = [a for a in range(labels.ndim)
               if labels.shape[a] > 1 and not np.all(labels == labels.take([0], axis=a))]
    outer = varying[-2]
    for a in range(labels.ndim):
        if a == outer or a not in varying and labels.shape[a] == 1:
            continue
        value = entries[j0 + a].value
        if value == 0 and not attr(node, "allowzero", 0):
            freeze_all(w, node, "copies a dimension (0) into a split channel axis")
            return None
    return outer


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
    seen: set[str] = set()
    stack = [n for n in node.input[1:] if n]
    while stack and len(seen) < 64:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        producer = w.producer(name)
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
    stacked = [i for i in infos if i is not None]
    if len(stacked) != len(infos):
        return freeze_all(w, node, "stacks channel tensors with tensors no group produces")
    labels = stacked[0].labels
    for info in stacked[1:]:
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
        for labels in counts.values():
            w.freeze(labels, f"Expand node {node.name!r} broadcasts to a channel count")
        return
    if rank is None or out_rank is None:
        return freeze_all(w, node, "has inputs of unknown rank")
    out_axis = info.axis + out_rank - rank
    local = out_axis - (out_rank - len(entries))
    if local < 0:
        return w.set(node.output[0], out_axis, info.labels)
    shifted = {j + out_rank - len(entries): labels for j, labels in counts.items()}
    # output axes ahead of the target's entries (the input has the higher rank) have none;
    # only entry out_axis is read, and it lies within the target since local >= 0
    padded: list[ShapeEntry | None] = [None] * (out_rank - len(entries)) + list(entries)
    labels = _follow_target(w, node, padded, shifted, out_axis, info.labels, info)
    if labels is not None:
        w.set(node.output[0], out_axis, labels)
