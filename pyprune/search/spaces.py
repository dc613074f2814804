"""Search spaces: one per granularity, each owning its slots, their masks, their cost and their removal.

A search works on *slots*: a channel group, a removable layer, a weight tensor or a weight's N:M
pattern. Each slot orders its items (units, the layer itself, weight elements) from least to most
important, and a search state is simply how many items of each slot are removed (a prefix of that
order, or of an order a loop supplies). A space turns a state into

* the masks the search session is fed (:meth:`Space.masks`),
* what the state costs (:meth:`Space.cost`: params, MACs, non-zeros, sparsity), counted so that it
  equals what the physically pruned model has, and
* the physically pruned model itself (:meth:`Space.remove`).

Loops never look inside a space: they see slots (:class:`Slot`) and ask the problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .. import importance as _importance
from ..errors import TargetError
from ..graph import (
    MAC_WEIGHTED_OPS,
    DependencyGraph,
    Group,
    Layer,
    Model,
    counted_macs,
    enclosing,
    maskable_weights,
    nm_masks,
)
from ..options import PruneOptions
from ..surgery import apply_weight_masks, remove_layers, remove_units

__all__ = ["Slot", "Cost", "Masks", "Space", "ChannelSpace", "LayerSpace", "WeightSpace", "NMSpace",
           "SPACES", "Counts", "Orders"]

#: A search state: slot id -> number of items removed.
Counts = dict[str, int]
#: Item orders that differ from the slots' own (a loop trying another unit first).
Orders = Mapping[str, np.ndarray]


@dataclass
class Slot:
    """One place to cut. Items ``order[:n]`` are removed when ``n`` items are (a prefix)."""

    id: str
    size: int
    order: np.ndarray  # item indices, least important first; those past ``cap`` are never removed
    scores: np.ndarray  # score of each item, by item index (normalised for groups)
    cap: int  # most items that may be removed
    round_to: int = 1
    depth: int = 0  # position of the slot's root in the graph (larger = nearer the output)
    reorderable: bool = True  # a loop may remove its items in another order than ``order``
    #: The fewest items one step removes: 1 for units and layers, a block of a weight tensor
    #: for single weights (a step of one element out of millions tells a search nothing).
    min_step: int = 1

    def allowed(self, n: int) -> bool:
        if not 0 <= n <= self.cap:
            return False
        return n == 0 or self.round_to == 1 or (self.size - n) % self.round_to == 0

    def next_count(self, n: int, step: int) -> int | None:
        """The smallest allowed count removing at least ``step`` more items (and at least
        ``min_step``, except for the last, partial block before the cap), or None."""
        m = n + max(int(step), self.min_step, 1)
        if self.min_step > 1 and n < self.cap < m:
            m = self.cap
        while m <= self.cap:
            if self.allowed(m):
                return m
            m += 1
        return None

    def next_fine(self, n: int, step: int) -> int | None:
        """``n + step`` (at most ``cap``), ignoring ``round_to``: a loop searching in fine steps
        rounds the final widths afterwards (:func:`~pyprune.search._loop.round_widths`)."""
        if n >= self.cap:
            return None
        return min(n + max(int(step), self.min_step, 1), self.cap)

    def rounded(self, n: int) -> tuple[int, int | None]:
        """The allowed counts around ``n``: the largest not above it (fewer removed, always
        exists: 0) and the smallest above it (None when the cap is in the way)."""
        below = n
        while below > 0 and not self.allowed(below):
            below -= 1
        return below, self.next_count(n - 1, 1) if n > 0 else 0

    def count_for(self, ratio: float) -> int:
        """The largest allowed count not above ``ratio`` of the slot."""
        m = min(int(math.floor(ratio * self.size + 1e-9)), self.cap)
        while m > 0 and not self.allowed(m):
            m -= 1
        return max(m, 0)

    def removed_items(self, n: int, order: np.ndarray | None = None) -> np.ndarray:
        return np.sort((self.order if order is None else order)[:n])


@dataclass(frozen=True)
class Cost:
    """What a state keeps: parameters, MACs per sample, non-zero parameters, and the zeroed
    fraction of the prunable weight elements."""

    params: int
    macs: int
    nonzeros: int
    sparsity: float


@dataclass
class Masks:
    """What the search session is fed for one state."""

    groups: dict[str, np.ndarray] = field(default_factory=dict)  # group id -> bool keep mask
    gates: dict[str, float] = field(default_factory=dict)  # layer id -> 1 keep / 0 remove
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # weight -> bool keep mask


class Space:
    """Slots of one granularity over one model (see the module docstring)."""

    granularity: ClassVar[str] = ""
    #: Target kinds this granularity can move, and why others cannot.
    refuses: ClassVar[dict[str, str]] = {}

    def __init__(self, model: Model, graph: DependencyGraph, options: PruneOptions, dataset: Any) -> None:
        self.model, self.graph, self.options, self.dataset = model, graph, options, dataset
        self.frozen: dict[str, str] = dict(graph.control_flow)
        self.params0, self.macs0, self.nonzeros0 = model.params(), model.macs(), model.nonzeros()
        self._depth = {n.name: i for i, n in enumerate(model.nodes)}
        # a node inside a control-flow body is as deep as the control-flow node holding it
        self._holder = enclosing(model.graph)
        self._depth.update((inner, self._depth.get(node, 0)) for inner, node in self._holder.items())
        self.slots: list[Slot] = self._make_slots(set(options.limits.skip))
        self.by_id = {s.id: s for s in self.slots}
        known = set(self.frozen) | set(self.by_id) | self._known_ids()
        unknown = sorted(set(options.limits.skip) - known)
        if unknown:
            raise ValueError(
                f"skip names {', '.join(map(repr, unknown))}, not a {self.granularity}-granularity "
                f"unit of this model; known: {', '.join(sorted(known))}"
            )
        if not self.slots:
            frozen = "; ".join(f"{k}: {v}" for k, v in self.frozen.items())
            raise TargetError(f"nothing can be pruned at {self.granularity} granularity in this model"
                              + (f" (frozen: {frozen})" if frozen else ""))

    @classmethod
    def check_target(cls, kind: str) -> None:
        """Refuse a target this granularity cannot move (before any work)."""
        if kind in cls.refuses:
            raise TargetError(cls.refuses[kind])

    # -- what subclasses provide ----------------------------------------------------------------

    def _make_slots(self, skip: set[str]) -> list[Slot]:
        raise NotImplementedError

    def _known_ids(self) -> set[str]:
        return set()

    def masks(self, counts: Mapping[str, int], orders: Orders | None = None) -> Masks:
        raise NotImplementedError

    def cost(self, counts: Mapping[str, int], orders: Orders | None = None) -> Cost:
        raise NotImplementedError

    def remove(self, model: Model, counts: Mapping[str, int], orders: Orders | None = None) -> Model:
        """The physically pruned copy of ``model`` (the original, or it with recovery folded in)."""
        raise NotImplementedError

    def session_parts(self) -> dict[str, Any]:
        """What the search session must mask, gate or expose: MaskedSession keyword arguments."""
        return {}

    @property
    def groups(self) -> list[Group]:
        """Channel groups a state may cut (recovery reads which inputs of a layer they mask)."""
        return []

    def sources(self) -> dict[str, list[str]]:
        """Slot id -> the nodes whose computation cutting the slot changes first (recovery
        corrects these and everything below them)."""
        return {}

    def kept_counter(self, counts: Mapping[str, int], orders: Orders | None = None) -> Callable[[str, int], int]:
        """``kept(weight, axis)``: how many positions along ``axis`` of ``weight`` a state keeps
        (what a bias that recovery adds to the weight's layer will be cut to)."""
        return lambda weight, axis: int(self.model.weight(weight).shape[axis])

    # -- shared ----------------------------------------------------------------------------------

    def _order(self, slot: Slot, orders: Orders | None) -> np.ndarray:
        return orders.get(slot.id, slot.order) if orders else slot.order

    def _keep(self, slot: Slot, n: int, orders: Orders | None) -> np.ndarray:
        keep = np.ones(slot.size, dtype=bool)
        keep[self._order(slot, orders)[:n]] = False
        return keep

    def _depth_of(self, nodes: Iterable[str]) -> int:
        return max((self._depth.get(n, 0) for n in nodes), default=0)

    def _skipped(self, skip: set[str], uid: str) -> bool:
        if uid in skip:
            self.frozen[uid] = "skipped on request"
            return True
        return False


class ChannelSpace(Space):
    """Channel/neuron groups of the dependency graph; a state keeps a prefix-free subset of units."""

    granularity = "channel"
    refuses = {"sparsity": "a sparsity target applies to weight granularity; for channels or layers use "
                           "a params or MACs target"}

    def _make_slots(self, skip: set[str]) -> list[Slot]:
        limits, opts = self.options.limits, self.options
        chosen: list[Group] = []
        for g in self.graph.groups:
            if not g.prunable:
                self.frozen[g.id] = g.frozen or "frozen"
            elif self._skipped(skip, g.id):
                continue
            elif g.size < 2:
                self.frozen[g.id] = "a single unit (a group always keeps one)"
            else:
                chosen.append(g)
        scores = _importance.all_group_scores(
            self.model, chosen, opts.importance, reduce=opts.reduce, normalize=opts.normalize,
            dataset=self.dataset, seed=opts.seed, threads=opts.threads)
        slots: list[Slot] = []
        self._groups: list[Group] = []
        pieces = self._pieces()
        for g in chosen:
            s = scores[g.id]
            order = np.argsort(s, kind="stable").astype(np.int64)
            # A Split output or a Slice must keep a unit: the best unit of each such piece goes to
            # the end of the order, past the cap, so no count a loop can pick empties it.
            kept = self._keepers(pieces.get(g.id, []), s)
            if kept:
                order = np.concatenate([order[~np.isin(order, kept)], np.asarray(kept, np.int64)])
            keep_min = max(limits.min_keep, len(kept), g.size - int(math.floor(limits.max_fraction * g.size)))
            slot = Slot(g.id, g.size, order, s, max(g.size - keep_min, 0), limits.round_for(g),
                        self._depth.get(g.root, 0))
            while slot.cap > 0 and not slot.allowed(slot.cap):
                slot.cap -= 1
            if slot.cap > 0:
                slots.append(slot)
                self._groups.append(g)
            else:
                self.frozen[g.id] = "limits leave nothing to remove"
        # Channel accounting: weight -> axis -> [(group id, index)], and the MACs of its readers.
        self._axes: dict[str, dict[int, list[tuple[str, np.ndarray]]]] = {}
        for g in self._groups:
            for c in g.couplings:
                self._axes.setdefault(c.weight, {}).setdefault(c.axis, []).append((g.id, np.asarray(c.index)))
        # (nodes inside control-flow bodies as often as the model's MACs count them)
        counted = list(counted_macs(self.model))
        self._weighted_nodes = [(n.input[1], macs) for n, macs in counted
                                if n.op_type in MAC_WEIGHTED_OPS | {"Attention"}
                                and len(n.input) > 1 and n.input[1] in self._axes]
        self._weight_size = {w: int(np.prod(self.model.weight(w).shape, dtype=np.int64)) for w in self._axes}
        # Weight-free nodes whose work shrinks with the units (attention products, per head).
        scaled: dict[str, list[tuple[str, np.ndarray]]] = {}
        for g in self._groups:
            for sc in g.scaled:
                scaled.setdefault(sc.node, []).append((g.id, np.asarray(sc.index)))
        macs_of = {n.name: macs for n, macs in counted}
        self._scaled = [(macs_of.get(n, 0), owners) for n, owners in scaled.items()]
        return slots

    def _pieces(self) -> dict[str, list[np.ndarray]]:
        """Per group, the unit sets that must each keep one unit: every output of a Split and
        every Slice along the channel axis (removing all of one would leave an empty tensor)."""
        pieces: dict[str, list[np.ndarray]] = {}
        offsets = {g.id: (self.graph.unit_offset(g.id), g.size) for g in self.graph.groups}
        for edit in self.graph.edits:
            if edit.kind == "split":
                sets = list(edit.labels)
            elif edit.kind == "slice":
                start, end = edit.span
                sets = [edit.labels[0][start:end]]
            else:
                continue
            for labels in sets:
                units = labels[labels >= 0]
                for gid, (first, size) in offsets.items():
                    local = units[(units >= first) & (units < first + size)] - first
                    if local.size:
                        pieces.setdefault(gid, []).append(np.unique(local))
        return pieces

    @staticmethod
    def _keepers(pieces: list[np.ndarray], scores: np.ndarray) -> list[int]:
        """One unit per piece (the best scored, shared between pieces where possible)."""
        kept: list[int] = []
        for piece in sorted(pieces, key=len):
            if not np.isin(piece, kept).any():
                kept.append(int(piece[np.argmax(scores[piece])]))
        return kept

    @property
    def groups(self) -> list[Group]:
        return list(self._groups)

    def session_parts(self) -> dict[str, Any]:
        return {"groups": self._groups}

    def sources(self) -> dict[str, list[str]]:
        # A cut inside a control-flow body changes the main graph from the control-flow node on.
        return {g.id: sorted({self._holder.get(mp.node, mp.node) for mp in g.mask_points}) for g in self._groups}

    def kept_counter(self, counts: Mapping[str, int], orders: Orders | None = None) -> Callable[[str, int], int]:
        keeps = self.masks(counts, orders).groups

        def kept(weight: str, axis: int) -> int:
            size = int(self.model.weight(weight).shape[axis])
            owners = self._axes.get(weight, {}).get(axis % self.model.weight(weight).ndim)
            if not owners:
                return size
            keep = np.ones(size, dtype=bool)
            for gid, index in owners:
                owned = index >= 0
                keep[owned] &= keeps[gid][index[owned]]
            return int(keep.sum())

        return kept

    def masks(self, counts: Mapping[str, int], orders: Orders | None = None) -> Masks:
        return Masks(groups={s.id: self._keep(s, counts.get(s.id, 0), orders) for s in self.slots})

    def cost(self, counts: Mapping[str, int], orders: Orders | None = None) -> Cost:
        keeps = self.masks(counts, orders).groups
        kept_frac: dict[str, float] = {}
        for w, axes in self._axes.items():
            frac = 1.0
            for owners in axes.values():
                keep = np.ones(len(owners[0][1]), dtype=bool)
                for gid, index in owners:
                    owned = index >= 0
                    keep[owned] &= keeps[gid][index[owned]]
                frac *= keep.mean()
            kept_frac[w] = frac
        params = self.params0 - sum(self._weight_size[w] * (1 - f) for w, f in kept_frac.items())
        macs = self.macs0 - sum(mc * (1 - kept_frac[w]) for w, mc in self._weighted_nodes)
        for node_macs, owners in self._scaled:
            keep = np.ones(len(owners[0][1]), dtype=bool)
            for gid, index in owners:
                owned = index >= 0
                keep[owned] &= keeps[gid][index[owned]]
            macs -= node_macs * (1 - keep.mean())
        params, macs = int(round(params)), int(round(macs))
        return Cost(params, macs, self.nonzeros0 - (self.params0 - params), 0.0)

    def removals(self, counts: Mapping[str, int], orders: Orders | None = None) -> dict[str, np.ndarray]:
        """Unit indices removed per group."""
        return {s.id: s.removed_items(counts[s.id], self._order(s, orders)) for s in self.slots
                if counts.get(s.id, 0)}

    def remove(self, model: Model, counts: Mapping[str, int], orders: Orders | None = None) -> Model:
        removals = self.removals(counts, orders)
        if not removals:
            return model.copy()
        graph = self.graph if model is self.model else DependencyGraph(model)
        return remove_units(model, removals, graph)


class LayerSpace(Space):
    """Removable layers (residual branches, shape-preserving paths); a slot is one layer.

    A layer nested inside another removed layer goes with it, so the cost of a state is counted
    on the union of the removed nodes: the same nodes and weights physical removal drops.
    """

    granularity = "layer"
    refuses = ChannelSpace.refuses

    def _make_slots(self, skip: set[str]) -> list[Slot]:
        chosen: list[Layer] = []
        for layer in self.graph.layers:
            if not layer.prunable:
                self.frozen[layer.id] = layer.frozen or "frozen"
            elif not self._skipped(skip, layer.id):
                chosen.append(layer)
        scores = _importance.layer_scores(self.model, chosen, self.options.importance, seed=self.options.seed)
        self._layers = {layer.id: layer for layer in chosen}
        # Weights and their readers, to count what a set of removed nodes takes with it.
        self._readers: dict[str, set[str]] = {}
        for node in self.model.nodes:
            for v in node.input:
                if v and self.model.is_param(v) and not self.model.is_graph_output(v):
                    self._readers.setdefault(v, set()).add(node.name)
        self._node_macs = {n.name: self.model.node_macs(n) for n in self.model.nodes}
        self._weight_size = {w: int(np.prod(self.model.weight(w).shape, dtype=np.int64)) for w in self._readers}
        self._cache: dict[frozenset[str], tuple[int, int, int]] = {}
        return [Slot(layer.id, 1, np.zeros(1, np.int64), np.array([scores[layer.id]]), 1, 1,
                     self._depth_of(layer.nodes), reorderable=False) for layer in chosen]

    def session_parts(self) -> dict[str, Any]:
        return {"layers": list(self._layers.values())}

    def sources(self) -> dict[str, list[str]]:
        return {lid: sorted(layer.nodes) for lid, layer in self._layers.items()}

    def masks(self, counts: Mapping[str, int], orders: Orders | None = None) -> Masks:
        return Masks(gates={s.id: 0.0 if counts.get(s.id, 0) else 1.0 for s in self.slots})

    def cost(self, counts: Mapping[str, int], orders: Orders | None = None) -> Cost:
        gone = frozenset(s.id for s in self.slots if counts.get(s.id, 0))
        if gone not in self._cache:
            nodes = set().union(*(self._layers[i].nodes for i in gone)) if gone else set()
            macs = sum(self._node_macs[n] for n in nodes)
            dropped = [w for w, readers in self._readers.items() if readers and readers <= nodes]
            params = sum(self._weight_size[w] for w in dropped)
            nonzeros = sum(int(np.count_nonzero(self.model.weight(w))) for w in dropped)
            self._cache[gone] = (params, macs, nonzeros)
        params, macs, nonzeros = self._cache[gone]
        return Cost(self.params0 - params, self.macs0 - macs, self.nonzeros0 - nonzeros, 0.0)

    def remove(self, model: Model, counts: Mapping[str, int], orders: Orders | None = None) -> Model:
        gone = [s.id for s in self.slots if counts.get(s.id, 0)]
        return remove_layers(model, gone) if gone else model.copy()


class _WeightsBase(Space):
    """Shared by unstructured and N:M weight spaces: weights keep their shapes, zeros are counted."""

    refuses = {kind: (f"a {kind} target needs structured pruning (channel or layer granularity): zeroed "
                      "weights do not reduce dense MACs or latency; use a sparsity or params target")
               for kind in ("macs", "latency")}

    def _prepare_counting(self) -> None:
        self._prunable_total = 0
        self._zero0 = 0
        for w in maskable_weights(self.model):
            arr = self.model.weight(w.name)
            self._prunable_total += arr.size
            self._zero0 += int(arr.size - np.count_nonzero(arr))

    def _known_ids(self) -> set[str]:
        return {w.name for w in maskable_weights(self.model)}

    def session_parts(self) -> dict[str, Any]:
        return {"weights": [s.id for s in self.slots]}

    def sources(self) -> dict[str, list[str]]:
        return {s.id: sorted(n.name for n, _ in self.model.consumers(s.id)) for s in self.slots}

    def _removed_nonzeros(self, counts: Mapping[str, int], orders: Orders | None) -> int:
        raise NotImplementedError

    def cost(self, counts: Mapping[str, int], orders: Orders | None = None) -> Cost:
        removed = self._removed_nonzeros(counts, orders)
        zeroed = self._zero0 + removed
        sparsity = zeroed / self._prunable_total if self._prunable_total else 0.0
        return Cost(self.params0, self.macs0, self.nonzeros0 - removed, sparsity)

    def remove(self, model: Model, counts: Mapping[str, int], orders: Orders | None = None) -> Model:
        weights = self.masks(counts, orders).weights
        return apply_weight_masks(model, weights) if weights else model.copy()


#: Smallest step of a weight slot, as a fraction of the tensor: searches remove weights in blocks
#: of at least 1% of a tensor. Single elements made greedy search take one evaluation per element
#: once its steps had halved down (thousands of evaluations on a small MLP).
WEIGHT_BLOCK = 0.01


class WeightSpace(_WeightsBase):
    """Unstructured weight pruning: every element of a maskable weight is an item; searches step
    through them in blocks of at least :data:`WEIGHT_BLOCK` of the tensor (``Slot.min_step``)."""

    granularity = "weight"

    def _make_slots(self, skip: set[str]) -> list[Slot]:
        limits, opts = self.options.limits, self.options
        chosen = [w for w in maskable_weights(self.model) if not self._skipped(skip, w.name)]
        norms = None
        if _importance.needs_data(opts.importance):
            norms = _importance.weight_input_norms(self.model, chosen, self.dataset, opts.threads, opts.batch_size)
        scores = _importance.weight_scores(self.model, [w.name for w in chosen], opts.importance,
                                           input_norms=norms, seed=opts.seed, threads=opts.threads)
        slots = []
        for w in chosen:
            flat = scores[w.name].reshape(-1).astype(np.float64)
            order = np.argsort(flat, kind="stable").astype(np.int64)
            cap = min(int(math.floor(limits.max_fraction * w.size)), w.size - 1)
            slots.append(Slot(w.name, w.size, order, flat, cap, 1, self._depth_of(w.nodes),
                              min_step=max(1, math.ceil(WEIGHT_BLOCK * w.size))))
        self._prepare_counting()
        self._nz_prefix = {}
        for s in slots:
            arr = self.model.weight(s.id).reshape(-1)
            self._nz_prefix[s.id] = np.concatenate([[0], np.cumsum(arr[s.order] != 0)])
        return slots

    def masks(self, counts: Mapping[str, int], orders: Orders | None = None) -> Masks:
        out = Masks()
        for s in self.slots:
            n = counts.get(s.id, 0)
            if n:
                out.weights[s.id] = self._keep(s, n, orders).reshape(self.model.weight(s.id).shape)
        return out

    def _removed_nonzeros(self, counts: Mapping[str, int], orders: Orders | None) -> int:
        removed = 0
        for s in self.slots:
            n = counts.get(s.id, 0)
            if orders and s.id in orders:
                removed += int(np.count_nonzero(self.model.weight(s.id).reshape(-1)[orders[s.id][:n]]))
            else:
                removed += int(self._nz_prefix[s.id][n])
        return removed


class NMSpace(_WeightsBase):
    """N:M weight patterns (2:4 by default): a slot is one weight, switched to its pattern or not."""

    granularity = "nm"

    def _make_slots(self, skip: set[str]) -> list[Slot]:
        n, m = self.options.nm
        slots = []
        self._patterns: dict[str, np.ndarray] = {}
        for w in maskable_weights(self.model):
            if self._skipped(skip, w.name):
                continue
            reason = w.nm_reason(m)
            if reason:
                self.frozen[w.name] = reason
                continue
            self._patterns[w.name] = nm_masks(self.model, n, m, weights=[w.name])[w.name]
            slots.append(Slot(w.name, 1, np.zeros(1, np.int64), np.zeros(1), 1, 1, self._depth_of(w.nodes),
                              reorderable=False))
        self._prepare_counting()
        self._pattern_nonzeros = {
            name: int(np.count_nonzero(self.model.weight(name).reshape(-1)[~mask.reshape(-1)]))
            for name, mask in self._patterns.items()}
        return slots

    def masks(self, counts: Mapping[str, int], orders: Orders | None = None) -> Masks:
        return Masks(weights={s.id: self._patterns[s.id] for s in self.slots if counts.get(s.id, 0)})

    def _removed_nonzeros(self, counts: Mapping[str, int], orders: Orders | None) -> int:
        return sum(self._pattern_nonzeros[s.id] for s in self.slots if counts.get(s.id, 0))


#: Granularity name -> space class.
SPACES: dict[str, type[Space]] = {cls.granularity: cls for cls in (ChannelSpace, LayerSpace, WeightSpace, NMSpace)}
