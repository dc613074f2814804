"""Dependency groups: the smallest sets of coupled weight slices that must be removed together.

One walk over the main graph in topological order, entering If/Loop/Scan bodies where their node
stands (``rules/control.py``). Every producer of prunable units (Conv output channels, Gemm/MatMul
output features) allocates one *unit* per output position; the op rules (``rules/``) carry
per-position labels forward and record what each unit is coupled to. Joins (residual Add, SE Mul,
Concat along another axis, shared weights) unite units with a union-find, so a unit of the final
graph is an equivalence class of allocated units, and a group is a connected set of producers and
the classes they share.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._model import MAC_WEIGHTED_OPS, Model, _outer_scope_reads
from ._nested import followed, mac_multipliers, nested_nodes, subgraphs
from ._units import Coupling, Edit, Group, Layer, MaskPoint, ScaledNode
from ._walk import ChannelInfo, Walk  # noqa: F401  (ChannelInfo is part of this module's API)
from .rules import visit

__all__ = ["DependencyGraph", "ChannelInfo"]



class DependencyGraph:
    """The channel/neuron groups (and removable layers) of a model.

    ``groups`` lists every group in graph order, frozen ones included (``Group.frozen`` says
    why). Unit ``u`` of a group is coupled to every position ``p`` of each ``Coupling`` /
    ``MaskPoint`` with ``index[p] == u``.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        walk = _walk(model)
        groups, unit_map = walk.groups()
        self._offsets: dict[str, int] = {}
        offset = 0
        for g in groups:
            self._offsets[g.id] = offset
            offset += g.size
        self.total_units = offset
        to_global = np.full(len(unit_map), -1, dtype=np.int64)
        for u, (gi, unit_class) in unit_map.items():
            to_global[u] = self._offsets[groups[gi].id] + unit_class
        group_of = np.empty(offset, dtype=np.int64)
        for gi, g in enumerate(groups):
            group_of[self._offsets[g.id] : self._offsets[g.id] + g.size] = gi

        def global_labels(labels: np.ndarray) -> np.ndarray:
            out = np.full(len(labels), -1, dtype=np.int64)
            owned = labels >= 0
            out[owned] = to_global[labels[owned]]
            return out

        def split(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
            """(group number, local index array) for each group present in ``labels``."""
            glob = global_labels(labels)
            present = np.unique(group_of[glob[glob >= 0]])
            for gi in present.tolist():
                mine = (glob >= 0) & (group_of[np.maximum(glob, 0)] == gi)
                local = np.where(mine, glob - self._offsets[groups[gi].id], -1)
                yield gi, local

        seen: set[tuple[int, str, int]] = set()
        coupled: dict[tuple[int, str, int], Coupling] = {}
        for c in walk.couplings:
            for gi, local in split(c.labels):
                key = (gi, c.weight, c.axis)
                if key in seen:
                    continue
                seen.add(key)
                coupled[key] = Coupling(c.weight, c.axis, local, c.role, node=c.node)
                groups[gi].couplings.append(coupled[key])
        seen_masks: set[tuple[int, str, int]] = set()
        for m in walk.masks:
            for gi, local in split(m.labels):
                key = (gi, m.node, m.input_index)
                if key not in seen_masks:
                    seen_masks.add(key)
                    groups[gi].mask_points.append(
                        MaskPoint(m.node, m.input_index, m.tensor, m.axis, m.rank, local)
                    )
        seen_scaled: set[tuple[int, str]] = set()
        for node_name, labels in walk.scaled:
            for gi, local in split(labels):
                if (gi, node_name) not in seen_scaled:
                    seen_scaled.add((gi, node_name))
                    groups[gi].scaled.append(ScaledNode(node_name, local))
        self.edits = [
            Edit(e.kind, e.node, [global_labels(lab) for lab in e.labels], e.name,
                 e.input_index, e.element, e.span, e.graph)
            for e in walk.edits
        ]
        times = mac_multipliers(model)
        for g in groups:
            _complexity(model, walk, g, times)
        self.groups: list[Group] = groups
        #: Weights inside If/Loop/Scan bodies, left whole: ``{what: why}`` (see
        #: :func:`control_flow_weights`).
        self.control_flow: dict[str, str] = control_flow_weights(model)
        self._by_id = {g.id: g for g in groups}
        self._layers: list[Layer] | None = None

    def group(self, group_id: str) -> Group:
        try:
            return self._by_id[group_id]
        except KeyError:
            raise KeyError(f"no group {group_id!r}") from None

    def unit_offset(self, group_id: str) -> int:
        """Global id of unit 0 of a group (the numbering ``edits`` use)."""
        self.group(group_id)
        return self._offsets[group_id]

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    @property
    def layers(self) -> list[Layer]:
        if self._layers is None:
            from ._layers import find_layers

            self._layers = find_layers(self.model)
        return self._layers

    def layer(self, layer_id: str) -> Layer:
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(f"no layer {layer_id!r}")

    def __repr__(self) -> str:
        n = len(self.prunable_groups)
        return f"<DependencyGraph: {len(self.groups)} groups ({n} prunable)>"


def control_flow_weights(model: Model) -> dict[str, str]:
    """Weights read inside bodies pyprune does not follow, left whole: ``{id: reason}``.

    Keys are ``"<node> body"`` (``branches`` for If) for each control-flow node whose bodies read
    weights and are not walked (see ``_nested.FOLLOWED``); If branches and Loop bodies are analysed
    like the main graph, and the channels that flow into other bodies freeze.
    """
    found: dict[str, str] = {}
    nodes = [*model.nodes, *(n for n, _ in nested_nodes(model.graph))]
    for node in nodes:
        if not subgraphs(node) or followed(node):
            continue
        weights = sorted(n for n in _outer_scope_reads(node) if model.is_param(n))
        if not weights:
            continue
        listed = f"{', '.join(weights[:3])}{', ...' if len(weights) > 3 else ''}"
        kind = "branches" if node.op_type == "If" else "body"
        found[f"{node.name} {kind}"] = (f"{len(weights)} weight(s) read inside the {kind} of {node.op_type} node "
                                        f"{node.name!r} ({listed}) are not pruned: {node.op_type} bodies are "
                                        "not followed")
    return found


def _complexity(model: Model, walk: Walk, group: Group, times: dict[str, int]) -> None:
    """Parameters and MACs removed with each unit of a group (a node inside a body counted as often
    as :meth:`Model.macs` counts it, ``times``)."""
    params = np.zeros(group.size, dtype=np.float64)
    macs = np.zeros(group.size, dtype=np.float64)
    for c in group.couplings:
        shape = _weight_dims(model, c.weight)
        per_slice = int(np.prod(shape, dtype=np.int64)) // max(shape[c.axis], 1)
        owned = c.index[c.index >= 0]
        counts = np.bincount(owned, minlength=group.size).astype(np.float64)
        params += counts * per_slice
        node_macs = sum(
            model.node_macs(n) * times.get(n.name, 1)
            for n, i in walk.consumers(c.weight)
            if n.op_type in MAC_WEIGHTED_OPS and i == 1
        )
        macs += counts * (node_macs / max(shape[c.axis], 1))
    for scaled in group.scaled:
        owned = scaled.index[scaled.index >= 0]
        counts = np.bincount(owned, minlength=group.size).astype(np.float64)
        node = model.node(scaled.node)
        macs += counts * (model.node_macs(node) * times.get(node.name, 1) / max(len(scaled.index), 1))
    group.params_per_unit = params.astype(np.int64)
    group.macs_per_unit = np.rint(macs).astype(np.int64)


def _weight_dims(model: Model, name: str) -> list[int]:
    """Dims of a coupled weight: rules couple initializers only, whose dims are all known."""
    shape = model.shape(name)
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"coupled weight {name!r} has no static shape")
    return [d for d in shape if isinstance(d, int)]


def _walk(model: Model) -> Walk:
    """Run every node's rule in graph order (followed bodies included, see ``rules/control.py``);
    channels reaching outputs or bodies the walk does not follow freeze."""
    walk = Walk(model)
    for node in model.proto.graph.node:
        visit(walk, node)
    for name, info in walk.labelled():
        if model.is_graph_output(name):
            walk.freeze(info.labels, f"reaches the graph output {name!r}")
        for consumer, index in walk.consumers(name):
            if index < 0 and not followed(consumer):
                walk.freeze(
                    info.labels,
                    f"{consumer.op_type} node {consumer.name!r} reads it in a nested subgraph",
                )
    walk.check_shared_weights()
    return walk
