"""Physical removal of channel/neuron units.

The smaller model equals the masked original. For units, every weight slice coupled to a
removed unit is cut (through the C++ gather), and every shape constant and attribute that counts
channels follows: depthwise ``group``, Reshape targets, Resize/Expand sizes, Split sizes and
Slice bounds. Stale shape annotations are dropped, unused initializers removed, and shapes
inferred again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .. import core
from ..graph import DependencyGraph, Edit, Model, drop_unused, graphs, insert_before, subgraphs

__all__ = ["remove_units", "removal_plan"]


def removal_plan(
    graph: DependencyGraph, removals: Mapping[str, Sequence[int] | np.ndarray]
) -> np.ndarray:
    """Validate ``{group_id: unit indices}`` and return a global kept-unit mask.

    Raises ValueError for unknown or frozen groups, out-of-range or duplicate-free violations,
    and requests that remove every unit of a group.
    """
    kept = np.ones(graph.total_units, dtype=bool)
    for group_id, indices in removals.items():
        try:
            group = graph.group(group_id)
        except KeyError:
            raise ValueError(f"no group {group_id!r} in this model") from None
        idx = np.asarray(indices)
        if idx.size == 0:
            continue
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ValueError(f"indices of group {group_id!r} must be a 1-D integer sequence")
        if group.frozen:
            raise ValueError(f"group {group_id!r} is frozen: {group.frozen}")
        if idx.min() < 0 or idx.max() >= group.size:
            raise ValueError(
                f"indices of group {group_id!r} must be in [0, {group.size}), got "
                f"{int(idx.min())}..{int(idx.max())}"
            )
        if np.unique(idx).size >= group.size:
            raise ValueError(f"cannot remove all {group.size} units of group {group_id!r}")
        kept[graph.unit_offset(group_id) + idx.astype(np.int64)] = False
    return kept


def remove_units(
    model: Model,
    removals: Mapping[str, Sequence[int] | np.ndarray],
    graph: DependencyGraph | None = None,
) -> Model:
    """A new model with the given units of each group physically removed.

    ``removals`` maps group id -> unit indices to remove. ``graph`` may be passed when already
    built for ``model``. The input model is not modified.
    """
    graph = graph or DependencyGraph(model)
    kept = removal_plan(graph, removals)
    out = model.copy()
    if kept.all():
        return out
    _cut_weights(out, graph, removals, kept)
    gathers: dict[str, list[onnx.NodeProto]] = {}
    for edit in graph.edits:
        _apply_edit(out, edit, kept, gathers)
    g = out.proto.graph
    insert_before(g, gathers)
    for sub in graphs(g):
        del sub.value_info[:]  # stale shapes; inferred again below
    drop_unused(g)
    out.refresh()
    return out


def _cut_weights(out: Model, graph: DependencyGraph, removals, kept: np.ndarray) -> None:
    axes_kept: dict[str, dict[int, np.ndarray]] = {}
    for group_id in removals:
        group = graph.group(group_id)
        local_kept = kept[graph.unit_offset(group_id) : graph.unit_offset(group_id) + group.size]
        for c in group.couplings:
            owned = c.index >= 0
            keep = axes_kept.setdefault(c.weight, {}).setdefault(
                c.axis, np.ones(len(c.index), dtype=bool)
            )
            keep[owned] &= local_kept[c.index[owned]]
    for weight, axes in axes_kept.items():
        if all(mask.all() for mask in axes.values()):
            continue
        indices = {axis: np.flatnonzero(mask) for axis, mask in axes.items() if not mask.all()}
        out.set_weight(weight, core.gather(out.weight(weight), indices))
        out.release_mapped()  # the original's pages that were read for the cut: not kept resident


def _kept_positions(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Which positions labelled ``labels`` stay (-1: no group owns it, it stays)."""
    return (labels < 0) | kept[np.maximum(labels, 0)]


def _kept_count(labels: np.ndarray, kept: np.ndarray) -> int:
    return int(np.count_nonzero(_kept_positions(labels, kept)))


def _apply_edit(out: Model, edit: Edit, kept: np.ndarray, gathers: dict[str, list[onnx.NodeProto]]) -> None:
    """Apply one edit; a ``"gather"`` edit's new node is queued in ``gathers`` (inserted after every
    edit, since inserting rebuilds the node lists the edits look nodes up in)."""
    if edit.kind == "gather":
        _gather_kept(out, edit, kept, gathers)
        return
    node = out.node(edit.node)
    if edit.kind == "attr":
        value = _kept_count(edit.labels[0], kept)
        for a in node.attribute:
            if a.name == edit.name:
                a.i = value
        return
    if edit.kind == "const":
        _set_const(out, node, edit.input_index, {edit.element: _kept_count(edit.labels[0], kept)})
        return
    if edit.kind == "split":
        sizes = [_kept_count(piece, kept) for piece in edit.labels]
        if sizes == [len(piece) for piece in edit.labels]:
            return
        if 0 in sizes:
            raise ValueError(f"removal would leave an output of Split node {edit.node!r} empty")
        if out.opset >= 13:
            name = out.add_weight(out.unique_name(f"{edit.node}_split"), np.array(sizes, np.int64))
            if len(node.input) > 1:
                node.input[1] = name
            else:
                node.input.append(name)
            _drop_attr(node, "num_outputs")
        else:
            _drop_attr(node, "split")
            node.attribute.append(helper.make_attribute("split", sizes))
        return
    if edit.kind == "dim":
        _set_dim(node, edit.graph, edit.name, edit.element, _kept_count(edit.labels[0], kept))
        return
    if edit.kind == "slice":
        labels, (start, end) = edit.labels[0], edit.span
        new_start = _kept_count(labels[:start], kept)
        inside = _kept_count(labels[start:end], kept)
        if inside == 0:
            raise ValueError(f"removal would leave the output of Slice node {edit.node!r} empty")
        if new_start == start and inside == end - start:
            return
        _set_const(out, node, 1, {edit.element: new_start})
        _set_const(out, node, 2, {edit.element: new_start + inside})
        return
    raise AssertionError(f"unknown edit kind {edit.kind}")


def _gather_kept(out: Model, edit: Edit, kept: np.ndarray, gathers: dict[str, list[onnx.NodeProto]]) -> None:
    """Make input ``edit.input_index`` of ``edit.node`` read only the kept positions along
    ``edit.element`` through a new Gather, queued in ``gathers`` to go right before the node (other
    readers of the tensor keep all of it)."""
    keep = _kept_positions(edit.labels[0], kept)
    if keep.all():
        return
    node = _any_node(out, edit.node)
    source = node.input[edit.input_index]
    index = out.add_weight(out.unique_name(f"{edit.node}_in{edit.input_index}_kept"),
                           np.flatnonzero(keep).astype(np.int64))
    read = out.unique_name(f"{source}_kept")
    gathers.setdefault(node.name, []).append(helper.make_node(
        "Gather", [source, index], [read], name=out.unique_name(f"{edit.node}_gather_kept"), axis=edit.element))
    node.input[edit.input_index] = read


def _any_node(out: Model, name: str) -> onnx.NodeProto:
    """The node called ``name`` in the main graph or in a nested body."""
    for g in graphs(out.proto.graph):
        for node in g.node:
            if node.name == name:
                return node
    raise KeyError(f"no node named {name!r} in the model")


def _set_const(out: Model, node: onnx.NodeProto, index: int, values: dict[int, int]) -> None:
    """Write elements of a constant input into a fresh initializer private to ``node``."""
    current = out.weight(node.input[index])
    flat = current.ravel()
    if all(int(flat[k]) == v for k, v in values.items()):
        return
    new = np.array(current, copy=True)
    for k, v in values.items():
        new.flat[k] = v
    node.input[index] = out.add_weight(out.unique_name(f"{node.name}_in{index}"), new)


def _set_dim(node: onnx.NodeProto, body: str, value: str, axis: int, size: int) -> None:
    """Dimension ``axis`` of the shape body ``body`` of ``node`` declares for its input or output
    ``value`` becomes ``size`` (a declared symbol or unknown size stays)."""
    for name, graph in subgraphs(node):
        if name != body:
            continue
        for v in [*graph.input, *graph.output]:
            t = v.type.tensor_type if v.type.HasField("tensor_type") else None
            if v.name == value and t is not None and t.HasField("shape") and axis < len(t.shape.dim):
                if t.shape.dim[axis].HasField("dim_value"):
                    t.shape.dim[axis].dim_value = size


def _drop_attr(node: onnx.NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)
