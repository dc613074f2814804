"""The state of one dependency analysis, as the op rules see it.

A tensor that carries prunable channels has a channel axis and a label per position along it (the
unit that position belongs to, or -1). The rules (``rules/``) read labels, couple weight slices,
record mask points and shape edits, unite and freeze units through this object; the driver in
``_dependency.py`` walks the graph and turns the final state into groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ._model import Model, ShapeEntry, _outer_scope_reads
from ._nested import followed, subgraphs
from ._units import Edit, Group

__all__ = ["Walk", "ChannelInfo"]


@dataclass(frozen=True)
class ChannelInfo:
    """The channel axis of a tensor and the unit each position along it belongs to (-1: none).

    ``tiled``: the axis holds ``labels`` repeated an unknown number of times (channels merged
    with a leading axis of unknown size, ``[batch, heads, ..] -> [batch * heads, ..]``). Only
    rules that move the axis as a whole handle such tensors (see ``TILED_OPS``); the others
    freeze them.
    """

    axis: int
    labels: np.ndarray
    tiled: bool = False


@dataclass
class _Space:
    node: str
    op_type: str
    first: int
    size: int
    frozen: str | None


@dataclass
class _RawCoupling:
    weight: str
    axis: int
    labels: np.ndarray
    role: str
    node: str


@dataclass
class _RawMask:
    node: str
    input_index: int
    tensor: str
    axis: int
    rank: int
    labels: np.ndarray


class Walk:
    """State of one analysis; the op rules talk to it."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.opset = model.opset
        self._parent: list[int] = []
        self._unit_space: list[int] = []
        self.spaces: list[_Space] = []
        self._info: dict[str, ChannelInfo] = {}
        self.couplings: list[_RawCoupling] = []
        self.masks: list[_RawMask] = []
        self.edits: list[Edit] = []
        self.freezes: list[tuple[np.ndarray, str]] = []
        self.scaled: list[tuple[str, np.ndarray]] = []
        # Readers and producers in the main graph and in the bodies the walk follows (see
        # _nested.FOLLOWED): a body's node reads outer values by name; a control-flow node whose
        # bodies are not followed reads at input index -1, and so does a followed one its bodies'
        # outputs.
        self._readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self._producers: dict[str, onnx.NodeProto] = {}
        self._index(model.proto.graph)

    def _index(self, graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name:
                    self._readers.setdefault(name, []).append((node, i))
            for out in node.output:
                if out:
                    self._producers[out] = node
            if not subgraphs(node):
                continue
            if followed(node):
                for _, sub in subgraphs(node):
                    self._index(sub)
                    for v in sub.output:
                        self._readers.setdefault(v.name, []).append((node, -1))
            else:
                for name in sorted(_outer_scope_reads(node)):
                    self._readers.setdefault(name, []).append((node, -1))

    # -- queries -------------------------------------------------------------------------------

    def info(self, name: str) -> ChannelInfo | None:
        return self._info.get(name) if name else None

    def shape(self, name: str):
        return self.model.shape(name)

    def rank(self, name: str) -> int | None:
        return self.model.rank(name)

    def is_weight(self, name: str) -> bool:
        return bool(name) and self.model.is_weight(name)

    def const(self, name: str) -> np.ndarray | None:
        return self.model.weight(name) if self.is_weight(name) else None

    def consumers(self, name: str) -> list[tuple[onnx.NodeProto, int]]:
        """(node, input index) pairs reading ``name``, inside followed bodies too (index -1: read
        inside a body the walk does not follow, or a followed body's output)."""
        return list(self._readers.get(name, ()))

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node computing ``name``, inside followed bodies too."""
        return self._producers.get(name)

    def shape_entries(self, node: onnx.NodeProto, input_index: int) -> list[ShapeEntry] | None:
        """The shape vector read by ``node`` at ``input_index`` (see ``Model.shape_vector``).

        A constant held upstream (in a Concat feeding the target) is only reported editable
        when this node is the vector's only reader.
        """
        name = node.input[input_index]
        entries = self.model.shape_vector(name, (node.name, input_index))
        if entries is None:
            return None
        shared = len(self.consumers(name)) > 1
        return [
            e._replace(const_at=None) if e.const_at and e.const_at[0] != node.name and shared
            else e
            for e in entries
        ]

    # -- recording -----------------------------------------------------------------------------

    def set(self, name: str, axis: int, labels: np.ndarray, tiled: bool = False) -> None:
        self._info[name] = ChannelInfo(int(axis), np.asarray(labels, dtype=np.int64), bool(tiled))

    def new_units(
        self, node: onnx.NodeProto, output: str, axis: int, size: int, frozen: str | None = None
    ) -> np.ndarray:
        """Allocate the units ``node`` produces on ``axis`` of ``output``."""
        first = len(self._parent)
        space = len(self.spaces)
        self._parent.extend(range(first, first + size))
        self._unit_space.extend([space] * size)
        self.spaces.append(_Space(node.name, node.op_type, first, size, frozen))
        labels = np.arange(first, first + size, dtype=np.int64)
        if size:
            self.set(output, axis, labels)
        return labels

    def couple(
        self, weight: str, axis: int, labels: np.ndarray, role: str, node: onnx.NodeProto
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        shape = self.model.shape(weight)
        if shape is None or shape[axis] != len(labels):
            self.freeze(labels, f"{node.op_type} node {node.name!r}: {weight!r} has an odd shape")
            return
        self.couplings.append(_RawCoupling(weight, axis, labels, role, node.name))

    def mask(self, node: onnx.NodeProto, input_index: int, info: ChannelInfo) -> None:
        name = node.input[input_index]
        rank = self.rank(name)
        if rank is None:
            self.freeze(info.labels, f"{node.op_type} node {node.name!r} reads an unknown rank")
            return
        self.masks.append(_RawMask(node.name, input_index, name, info.axis, rank, info.labels))

    def scale_work(self, node: onnx.NodeProto, labels: np.ndarray) -> None:
        """``node`` has no weights, but its work is proportional to the positions of ``labels``
        kept (see ``ScaledNode``)."""
        self.scaled.append((node.name, np.asarray(labels, dtype=np.int64)))

    def union(self, a: np.ndarray, b: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
        """Unite position-wise; a unit meeting a position no group owns is frozen."""
        out = a.copy()
        for p, (u, v) in enumerate(zip(a.tolist(), b.tolist())):
            if u >= 0 and v >= 0:
                self._union(u, v)
            elif u >= 0 or v >= 0:
                self.freeze(
                    np.array([max(u, v)]),
                    f"{node.op_type} node {node.name!r} joins the channel with one no group owns",
                )
                out[p] = max(u, v)
        return out

    def _find(self, u: int) -> int:
        parent = self._parent
        root = u
        while parent[root] != root:
            root = parent[root]
        while parent[u] != root:
            parent[u], u = root, parent[u]
        return root

    def _union(self, u: int, v: int) -> None:
        ru, rv = self._find(u), self._find(v)
        if ru != rv:
            self._parent[max(ru, rv)] = min(ru, rv)

    def freeze(self, labels: np.ndarray, reason: str) -> None:
        labels = np.asarray(labels)
        if (labels >= 0).any():
            self.freezes.append((labels[labels >= 0], reason))

    def edit_attr(self, node: onnx.NodeProto, name: str, labels: np.ndarray) -> None:
        self.edits.append(Edit("attr", node.name, [labels], name=name))

    def edit_const(self, node: onnx.NodeProto | str | None, input_index: int, element: int,
                   labels: np.ndarray) -> None:
        name = node.name if isinstance(node, onnx.NodeProto) else node
        if name is None:
            self.freeze(labels, "a shape constant holding the channel count is shared")
            return
        self.edits.append(Edit("const", name, [labels], input_index=input_index, element=element))

    def edit_split(self, node: onnx.NodeProto, pieces: list[np.ndarray]) -> None:
        self.edits.append(Edit("split", node.name, list(pieces)))

    def edit_slice(self, node: onnx.NodeProto, j: int, labels: np.ndarray, start: int,
                   end: int) -> None:
        self.edits.append(Edit("slice", node.name, [labels], element=j, span=(start, end)))

    def edit_gather(self, node: onnx.NodeProto, input_index: int, axis: int, labels: np.ndarray) -> None:
        """Input ``input_index`` of ``node``, a tensor no group produces, lines up on ``axis`` with
        the channels ``labels``: on removal this edge reads only its kept positions."""
        self.edits.append(Edit("gather", node.name, [labels], input_index=input_index, element=axis))

    def edit_dim(self, node: onnx.NodeProto, body: str, value: str, axis: int, labels: np.ndarray) -> None:
        """The declared shape of input or output ``value`` of the body ``body`` of control-flow
        node ``node`` counts the channels of ``labels`` on ``axis``."""
        self.edits.append(Edit("dim", node.name, [labels], name=value, element=axis, graph=body))

    # -- the walk ------------------------------------------------------------------------------

    def labelled(self):
        """Every value that carries channels, with its channel info."""
        return self._info.items()

    def check_shared_weights(self) -> None:
        """Shared weights: slices coupled twice are the same units; other readers freeze them."""
        by_key: dict[tuple[str, int], np.ndarray] = {}
        readers: dict[str, set[str]] = {}
        for c in self.couplings:
            readers.setdefault(c.weight, set()).add(c.node)
            known = by_key.get((c.weight, c.axis))
            if known is None:
                by_key[(c.weight, c.axis)] = c.labels
            else:
                node = self.model.node(c.node)
                by_key[(c.weight, c.axis)] = self.union(known, c.labels, node)
        for weight, nodes in readers.items():
            others = [n for n, _ in self.consumers(weight) if n.name not in nodes]
            if others:
                reason = (
                    f"weight {weight!r} is also read by {others[0].op_type} node "
                    f"{others[0].name!r}"
                )
                for c in self.couplings:
                    if c.weight == weight:
                        self.freeze(c.labels, reason)

    # -- grouping ------------------------------------------------------------------------------

    def groups(self) -> tuple[list[Group], dict[int, tuple[int, int]]]:
        """Build the Group records; also return unit -> (group number, class) for every unit."""
        n_units = len(self._parent)
        cls_root = np.array([self._find(u) for u in range(n_units)], dtype=np.int64)
        # spaces sharing a class belong to one group
        space_parent = list(range(len(self.spaces)))

        def find_space(s: int) -> int:
            while space_parent[s] != s:
                space_parent[s] = space_parent[space_parent[s]]
                s = space_parent[s]
            return s

        owner: dict[int, int] = {}
        for u in range(n_units):
            s = self._unit_space[u]
            r = int(cls_root[u])
            if r in owner:
                a, b = find_space(owner[r]), find_space(s)
                if a != b:
                    space_parent[max(a, b)] = min(a, b)
            else:
                owner[r] = s
        members: dict[int, list[int]] = {}
        for s in range(len(self.spaces)):
            members.setdefault(find_space(s), []).append(s)
        unit_map: dict[int, tuple[int, int]] = {}
        groups: list[Group] = []
        reasons: list[list[str]] = []
        for spaces in members.values():
            gi = len(groups)
            classes: dict[int, int] = {}
            for s in spaces:
                sp = self.spaces[s]
                for u in range(sp.first, sp.first + sp.size):
                    r = int(cls_root[u])
                    if r not in classes:
                        classes[r] = len(classes)
                    unit_map[u] = (gi, classes[r])
            root = self.spaces[spaces[0]]
            for s in spaces:
                sp = self.spaces[s]
                units = {unit_map[u][1] for u in range(sp.first, sp.first + sp.size)}
                if sp.size == len(classes) and len(units) == len(classes):
                    root = sp
                    break
            groups.append(Group(id=root.node, root=root.node, op_type=root.op_type,
                                size=len(classes)))
            reasons.append([cause for s in spaces if (cause := self.spaces[s].frozen)])
        for labels, reason in self.freezes:
            for u in labels.tolist():
                reasons[unit_map[u][0]].append(reason)
        for group, why in zip(groups, reasons):
            if why:
                group.frozen = "; ".join(dict.fromkeys(why))
            elif group.size < 2:
                group.frozen = f"has {group.size} unit(s): nothing can be removed"
        return groups, unit_map
