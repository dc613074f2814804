"""One ONNX Runtime session that judges every candidate of a search ("mask to search").

The model is edited once: a ``Mul`` by a fed-in mask on every edge where a group's channels enter a
consumer (and, on request, an ``Add`` of a fed-in shift), a scalar gate input per layer (placed by
the surgery's :func:`~pyprune.surgery.gate_layers`, the oracle of layer removal), and
the weights a search may change exposed as overridable inputs. A candidate is then only a set
of feeds; weights stay constants wherever they are not overridden, so ONNX Runtime keeps its
constant-weight optimisations and a structured candidate costs about one plain inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .. import core
from .. import metrics as _metrics
from ..data import Batch, Dataset, ModelLike, as_model
from ..graph import Group, Layer, MaskPoint, Model, graphs, insert_before
from ..surgery import gate_layers
from ._activations import ChannelStats, RunningChannelStats, TensorChoice, channel_axes
from ._ort import exposing, fetched_outputs, join_batches, make_session, run_batches

__all__ = ["MaskedSession", "Check", "EdgeKey", "AffineKey", "OutputPoint", "edge_key"]

#: An edge of the graph: (name of the consuming node, index of its input).
EdgeKey = tuple[str, int]
#: Where a per-channel affine correction is fed: an input edge, or a tensor name for an
#: :class:`OutputPoint` (the producer's output, as every reader sees it).
AffineKey = EdgeKey | str

_PREFIX = "pyprune_"


def edge_key(point: MaskPoint) -> EdgeKey:
    """The edge a :class:`~pyprune.graph.MaskPoint` sits on."""
    return (point.node, int(point.input_index))


@dataclass(frozen=True)
class Check:
    """Outcome of checking a candidate against a constraint (:meth:`MaskedSession.check`).

    ``value`` is the metric over the whole dataset (over the judged part, with ``judged_from``),
    or, when the evaluation ``stopped_early``, the best value still reachable after ``samples``
    of ``total`` samples (already failing).
    ``outputs`` are the candidate's outputs over the whole dataset when it ran to the end (None
    when it stopped early), so a passing candidate needs no second run.
    """

    value: float
    passed: bool
    stopped_early: bool
    samples: int
    total: int
    outputs: list[np.ndarray] | None = field(default=None, repr=False, compare=False)


@dataclass
class _Edge:
    """One rewritten edge: ``consumer.input[i] = x * mask (+ shift)``."""

    key: EdgeKey
    tensor: str
    axis: int
    rank: int
    size: int  # channels along axis
    dtype: np.dtype
    mask_input: str
    shift_input: str | None = None
    owners: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (group id, index)

    @property
    def mask_shape(self) -> list[int]:
        shape = [1] * self.rank
        shape[self.axis] = self.size
        return shape

    def ones(self) -> np.ndarray:
        return np.ones(self.mask_shape, dtype=self.dtype)


@dataclass(frozen=True)
class OutputPoint:
    """A tensor whose producer's output carries fed-in ``y * scale + shift`` per channel.

    The one place such output-edge corrections live: the producer is rewired to write a raw
    tensor, and a ``Mul`` and an ``Add`` reading ``scale_input``/``shift_input`` (shaped to
    broadcast along ``axis``) write the original name, so readers and graph outputs are unchanged.
    On shipping, a correction of a linear layer's output folds into its weights and bias
    (:func:`pyprune.surgery.fold_output_affine`): no extra node.
    """

    tensor: str
    axis: int
    rank: int
    size: int
    dtype: np.dtype
    scale_input: str
    shift_input: str
    producer: str = ""  # the node writing it (also when a layer gate has renamed its output since)
    index: int = 0  # which of its outputs

    @property
    def shape(self) -> list[int]:
        shape = [1] * self.rank
        shape[self.axis] = self.size
        return shape


class MaskedSession:
    """Evaluate pruning candidates of ``model`` on ``dataset`` inside one ONNX Runtime session.

    ``groups`` (:class:`~pyprune.graph.Group`): channels/neurons to mask, one ``Mul`` per distinct
    mask-point edge. ``layers`` (:class:`~pyprune.graph.Layer`): a scalar gate each (1 keeps the
    layer, 0 equals removing it: a residual branch is multiplied by it, a path's output blended
    back to its input). ``weights``: initializer names made overridable (each costs the runtime its
    constant-weight optimisations for that weight, so expose only what the search changes).
    ``affine``: extra :class:`~pyprune.graph.MaskPoint` edges (any consumer input: a mask point,
    a BatchNormalization input, ...) that also get a per-channel ``scale`` and ``shift`` input,
    so a recovery step can feed bias compensation or re-estimated normalisation statistics
    without a rebuild: the edge then carries ``x * (mask * scale) + shift``. ``output_affine``:
    ``(tensor, channel axis)`` pairs whose *producer's output* gets the same per-channel
    ``scale``/``shift`` inputs (:class:`OutputPoint`): every reader of the tensor, and the graph
    output if it is one, sees ``y * scale + shift``; a recovery step feeds there the correction of
    a layer's own output (e.g. the statistics its outputs had before pruning). ``capture``:
    tensors (``{name: channel axis}``, MaskPoints, ``(name, axis)`` pairs or names with axis 1)
    whose per-channel statistics :meth:`activation_stats` streams under any candidate, e.g. the
    inputs of BatchNormalization nodes to re-estimate their statistics after masking.

    ``split_at``: no batch straddles this sample (where a holdout part of the data begins).

    The data is validated against the model before anything else is done.
    """

    def __init__(
        self,
        model: ModelLike,
        dataset: Dataset,
        groups: Iterable[Group] = (),
        layers: Iterable[Layer] = (),
        weights: Iterable[str] = (),
        threads: int | None = None,
        batch_size: int | None = None,
        affine: Iterable[MaskPoint] = (),
        reference: Sequence[np.ndarray] | None = None,
        capture: TensorChoice = (),
        output_affine: Iterable[tuple[str, int]] = (),
        split_at: int | None = None,
    ) -> None:
        self.model: Model = as_model(model)
        self.dataset = dataset
        self.batches: list[Batch] = dataset.batches(self.model, batch_size, split_at)
        self.batch_size = batch_size
        self.split_at = split_at
        self.threads = threads
        self._groups = {g.id: g for g in groups}
        self._layers = {layer.id: layer for layer in layers}
        self._weights = list(dict.fromkeys(weights))
        self._edges: dict[EdgeKey, _Edge] = {}
        self._outputs: dict[str, OutputPoint] = {}
        self._gates: dict[str, tuple[str, np.dtype]] = {}  # layer id -> (gate input, dtype)
        self._weight_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._reference = None if reference is None else [np.asarray(r) for r in reference]
        self._capture = self._check_capture(channel_axes(capture))
        #: The values every run returns: the model's tensor outputs (a ZipMap output through the
        #: probabilities it reads; see :func:`~pyprune.evaluate.fetched_outputs`).
        self.output_names = list(fetched_outputs(self.model))
        self._affine_points = list(affine)
        self._output_points = list(output_affine)
        proto = self._build(self._affine_points, self._output_points)
        # Captured tensors are processed between runs (statistics, least-squares sums): the
        # runtime's threads must not spin through that work.
        self._session = make_session(proto, threads, self.model, spin=not self._capture)

    @contextmanager
    def first(self, samples: int) -> Iterator[None]:
        """Within the block, every run covers only the batches that end by sample ``samples`` (at
        least the first batch): a cheaper, rougher judgement of a candidate on part of the data."""
        whole = self.batches
        self.batches = self._first_batches(samples)
        try:
            yield
        finally:
            self.batches = whole

    def samples_in_first(self, samples: int) -> int:
        """How many samples :meth:`first` covers for ``samples``."""
        return self._first_batches(samples)[-1].stop

    def _first_batches(self, samples: int) -> list[Batch]:
        return [b for b in self.batches if b.stop <= samples] or self.batches[:1]

    # -- building -------------------------------------------------------------------------------

    def _check_capture(self, chosen: dict[str, int]) -> dict[str, int]:
        inputs = set(self.model.input_names)
        for name in chosen:
            if self.model.is_weight(name):
                raise ValueError(f"{name!r} is a weight, not an activation")
            if name not in inputs and self.model.producer(name) is None:
                raise ValueError(f"the model has no value named {name!r}")
        return chosen

    def _edge(self, point: MaskPoint, used: set[str]) -> _Edge:
        key = edge_key(point)
        edge = self._edges.get(key)
        size = len(point.index)
        if edge is None:
            try:
                node = self.model.node(point.node)
            except KeyError:
                raise ValueError(f"mask point names node {point.node!r}, which the model lacks") from None
            if not 0 <= point.input_index < len(node.input) or node.input[point.input_index] != point.tensor:
                raise ValueError(
                    f"mask point: input {point.input_index} of node {point.node!r} is not {point.tensor!r}"
                )
            if not 0 <= point.axis < point.rank:
                raise ValueError(f"mask point on {key}: axis {point.axis} is outside rank {point.rank}")
            elem = self.model.elem_type(point.tensor)
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
            edge = _Edge(key, point.tensor, int(point.axis), int(point.rank), size, dtype, _fresh("mask", used))
            self._edges[key] = edge
        elif (edge.size, edge.axis) != (size, int(point.axis)):
            raise ValueError(
                f"edge {key}: mask points disagree on its channel axis/size "
                f"({edge.axis}/{edge.size} vs {point.axis}/{size})"
            )
        return edge

    def _output_point(self, tensor: str, axis: int, used: set[str]) -> OutputPoint:
        if tensor in self._outputs:
            return self._outputs[tensor]
        producer = self.model.producer(tensor)
        if producer is None:
            raise ValueError(f"output affine on {tensor!r}: no node of the model produces it")
        rank = self.model.rank(tensor)
        if rank is None:
            raise ValueError(f"output affine on {tensor!r}: its rank is unknown")
        axis = int(axis) + rank if axis < 0 else int(axis)
        if not 0 <= axis < rank:
            raise ValueError(f"output affine on {tensor!r}: axis {axis} is outside rank {rank}")
        shape = self.model.shape(tensor)
        size = shape[axis] if shape is not None else None
        if not isinstance(size, int):
            raise ValueError(f"output affine on {tensor!r}: its channel axis has no fixed size")
        elem = self.model.elem_type(tensor)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
        point = OutputPoint(tensor, axis, rank, size, dtype, _fresh("scale", used), _fresh("shift", used),
                            producer.name, list(producer.output).index(tensor))
        self._outputs[tensor] = point
        return point

    def _build(self, affine: list[MaskPoint], output_affine: list[tuple[str, int]]) -> onnx.ModelProto:
        if self._layers:
            gated, inputs = gate_layers(self.model, list(self._layers))
            proto = gated.proto
            for lid, name in inputs.items():
                elem = gated.elem_type(name) or onnx.TensorProto.FLOAT
                self._gates[lid] = (name, np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
        else:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.model.proto)
        graph = proto.graph
        used = _names(graph)
        for group in self._groups.values():
            for point in group.mask_points:
                index = np.asarray(point.index, dtype=np.int64)
                if index.ndim != 1 or (index >= group.size).any():
                    raise ValueError(f"group {group.id!r}: mask point index does not fit {group.size} units")
                self._edge(point, used).owners.append((group.id, index))
        for point in affine:
            edge = self._edge(point, used)
            if edge.shift_input is None:
                edge.shift_input = _fresh("shift", used)

        for produced, axis in output_affine:
            self._output_point(produced, axis, used)
        # The Mul (and Add) of an edge go right before its consumer, in the graph that holds it:
        # a consumer inside a control-flow body reads the fed mask from the main graph by name.
        consumers = {n.name: n for g in graphs(graph) for n in g.node}
        before: dict[str, list[onnx.NodeProto]] = {}
        for edge in self._edges.values():
            node = consumers[edge.key[0]]
            if node.input[edge.key[1]] != edge.tensor:  # moved by a layer gate
                raise ValueError(f"edge {edge.key} is also a layer's gate edge; mask it upstream")
            elem = helper.np_dtype_to_tensor_dtype(edge.dtype)
            graph.input.append(helper.make_tensor_value_info(edge.mask_input, elem, edge.mask_shape))
            value = _fresh("masked", used)
            inserted = before.setdefault(node.name, [])
            inserted.append(helper.make_node("Mul", [edge.tensor, edge.mask_input], [value], name=_fresh("mul", used)))
            if edge.shift_input is not None:
                graph.input.append(helper.make_tensor_value_info(edge.shift_input, elem, edge.mask_shape))
                shifted = _fresh("shifted", used)
                inserted.append(helper.make_node("Add", [value, edge.shift_input], [shifted], name=_fresh("add", used)))
                value = shifted
            node.input[edge.key[1]] = value
        insert_before(graph, before)
        nodes = []
        for node in graph.node:
            corrected = [p for p in self._outputs.values() if p.producer == node.name]
            nodes.append(node)
            for out in corrected:
                # The producer now writes a raw tensor; Mul and Add give the original name back,
                # so every reader (and a graph output) sees the corrected values. The producer's
                # own output: a layer gate may have renamed it (its old name then belongs to the
                # gate's blend), and the correction belongs before the gate.
                elem = helper.np_dtype_to_tensor_dtype(out.dtype)
                raw, scaled, written = _fresh("raw", used), _fresh("scaled", used), node.output[out.index]
                node.output[out.index] = raw
                for fed in (out.scale_input, out.shift_input):
                    graph.input.append(helper.make_tensor_value_info(fed, elem, out.shape))
                nodes.append(helper.make_node("Mul", [raw, out.scale_input], [scaled], name=_fresh("mul", used)))
                nodes.append(helper.make_node("Add", [scaled, out.shift_input], [written], name=_fresh("add", used)))
        del graph.node[:]
        graph.node.extend(nodes)

        exposing(proto, self.output_names, self.model)
        outputs = {v.name for v in graph.output}
        model_inputs = set(self.model.input_names)
        for name in self._capture:
            if name not in outputs and name not in model_inputs:
                elem = self.model.elem_type(name) or onnx.TensorProto.FLOAT
                graph.output.append(helper.make_tensor_value_info(name, elem, None))

        initializers = {t.name: t for t in graph.initializer}
        listed = {v.name for v in graph.input}  # models of IR version < 4 list initializers already
        for name in self._weights:
            tensor = initializers.get(name)
            if tensor is None:
                raise ValueError(f"{name!r} is not a weight (initializer) of the model")
            if name not in listed:
                graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
        return proto

    def replica_arguments(self) -> dict[str, Any]:
        """The keyword arguments that build this session again (with the model itself), e.g. in
        another process: the same edges, gates, overridable weights and captured tensors, so a
        replica takes the same candidate arguments and gives the same outputs."""
        return {"groups": list(self._groups.values()), "layers": list(self._layers.values()),
                "weights": list(self._weights), "threads": self.threads, "batch_size": self.batch_size,
                "affine": list(self._affine_points), "capture": dict(self._capture),
                "output_affine": list(self._output_points), "split_at": self.split_at}

    # -- candidates -----------------------------------------------------------------------------

    @property
    def edges(self) -> list[EdgeKey]:
        """Every rewritten edge, in graph order of insertion."""
        return list(self._edges)

    def feed(
        self,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
    ) -> dict[str, np.ndarray]:
        """The extra inputs describing one candidate (see :meth:`run`)."""
        group_masks, layer_gates = group_masks or {}, layer_gates or {}
        affine = affine or {}
        for gid in group_masks:
            if gid not in self._groups:
                raise ValueError(f"group {gid!r} is not masked by this session; it masks {sorted(self._groups)}")
        for lid in layer_gates:
            if lid not in self._layers:
                raise ValueError(f"layer {lid!r} is not gated by this session; it gates {sorted(self._layers)}")
        keeps = {gid: self._keep_mask(gid, m) for gid, m in group_masks.items()}
        feed: dict[str, np.ndarray] = {}
        for lid, (name, dtype) in self._gates.items():
            feed[name] = np.asarray(layer_gates.get(lid, 1.0), dtype=dtype)
        for edge in self._edges.values():
            touched = any(g in keeps for g, _ in edge.owners)
            if not touched and edge.key not in affine:
                feed[edge.mask_input] = edge.ones()
                if edge.shift_input is not None:
                    feed[edge.shift_input] = np.zeros(edge.mask_shape, dtype=edge.dtype)
                continue
            vector = np.ones(edge.size, dtype=np.float64)
            for gid, index in edge.owners:
                keep = keeps.get(gid)
                if keep is not None:
                    owned = index >= 0
                    vector[owned] *= keep[index[owned]]
            shift = np.zeros_like(vector)
            if edge.key in affine:
                if edge.shift_input is None:
                    raise ValueError(f"edge {edge.key} has no affine inputs; pass it in affine= when building")
                scale, offset = affine[edge.key]
                vector *= _channel_vector(scale, edge, "scale", 1.0)
                shift = _channel_vector(offset, edge, "shift", 0.0)
            feed[edge.mask_input] = vector.astype(edge.dtype).reshape(edge.mask_shape)
            if edge.shift_input is not None:
                feed[edge.shift_input] = shift.astype(edge.dtype).reshape(edge.mask_shape)
        for key in affine:
            if isinstance(key, str):
                if key not in self._outputs:
                    raise ValueError(f"tensor {key!r} has no output affine inputs; pass it in output_affine= "
                                     "when building")
            elif key not in self._edges or self._edges[key].shift_input is None:
                raise ValueError(f"edge {key} has no affine inputs; pass it in affine= when building")
        for tensor, point in self._outputs.items():
            scale, offset = affine.get(tensor, (None, None))
            for name, values, default in ((point.scale_input, scale, 1.0), (point.shift_input, offset, 0.0)):
                vector = _channel_vector(values, point, "scale" if default else "shift", default)
                feed[name] = vector.astype(point.dtype).reshape(point.shape)
        feed.update(self._weight_feed(weights or {}))
        return feed

    def _keep_mask(self, gid: str, mask: Any) -> np.ndarray:
        size = self._groups[gid].size
        keep = np.asarray(mask)
        if keep.dtype != np.bool_ or keep.shape != (size,):
            raise ValueError(
                f"group {gid!r}: expected a bool keep-mask of shape ({size},), got "
                f"{keep.dtype} {list(keep.shape)}"
            )
        return keep.astype(np.float64)

    def _weight_feed(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, given in weights.items():
            if name not in self._weights:
                raise ValueError(f"weight {name!r} is not overridable in this session; it exposes {self._weights}")
            original = self.model.weight(name)
            given = np.asarray(given)
            if given.shape != original.shape:
                raise ValueError(f"weight {name!r}: expected shape {list(original.shape)}, got {list(given.shape)}")
            if given.dtype != np.bool_:  # replacement values, e.g. after a recovery step
                feed[name] = np.ascontiguousarray(given, dtype=original.dtype)
                continue
            cached = self._weight_cache.get(name)
            if cached is not None and np.array_equal(cached[0], given):
                feed[name] = cached[1]  # unchanged since the last candidate: no re-masking
                continue
            out = cached[1] if cached is not None else None
            masked = core.apply_mask(original, given, out=out) if out is not None else core.apply_mask(original, given)
            self._weight_cache[name] = (given.copy(), masked)
            feed[name] = masked
        return feed

    # -- evaluation -----------------------------------------------------------------------------

    def run(
        self,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
    ) -> list[np.ndarray]:
        """Outputs over the whole dataset for one candidate.

        ``group_masks``: group id -> bool keep-mask over its units (unlisted groups keep all).
        ``layer_gates``: layer id -> gate value (0 removes the layer, 1 keeps it).
        ``weights``: weight name -> bool keep-mask (the original masked by the core, re-masked only
        when the mask changed) or an array of new values. Unlisted weights keep their values.
        ``affine``: edge -> (scale, shift) per channel (None for either = identity).
        """
        feed = self.feed(group_masks, layer_gates, weights, affine)
        return run_batches(self._session, self.batches, feed, self.output_names)

    def activation_stats(
        self,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
    ) -> dict[str, ChannelStats]:
        """Per-channel statistics of the ``capture`` tensors over the dataset under one candidate
        (arguments as in :meth:`run`; none = the unmodified model), keyed by tensor name."""
        return self._stats(self.feed(group_masks, layer_gates, weights, affine), False)[1]

    def run_with_stats(
        self,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
    ) -> tuple[list[np.ndarray], dict[str, ChannelStats]]:
        """:meth:`run` and the statistics of :meth:`activation_stats` of one candidate from the same
        pass over the data. Only the moments are accumulated (count, mean, var, l2_norm; the other
        fields are NaN): what recovery needs, at about half the cost."""
        return self._stats(self.feed(group_masks, layer_gates, weights, affine), True)

    def stream(
        self,
        visit: Callable[[Batch, dict[str, np.ndarray]], None],
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
        outputs: bool = True,
    ) -> list[np.ndarray]:
        """Run one candidate over the data, handing each batch's ``capture`` tensors to
        ``visit(batch, {name: value})`` as they come (memory bounded by one batch); returns the
        outputs (an empty list with ``outputs=False``). What a recovery step accumulates from its
        statistics or least-squares sums is computed this way, in the same pass as the outputs."""
        return self._stream(self.feed(group_masks, layer_gates, weights, affine), outputs, visit)

    def _stream(self, feed: dict[str, np.ndarray], outputs: bool,
                visit: Callable[[Batch, dict[str, np.ndarray]], None]) -> list[np.ndarray]:
        if not self._capture:
            raise ValueError("this session captures no tensors; pass capture= when building it")
        inputs = set(self.model.input_names)
        fetched = [name for name in self._capture if name not in inputs]
        wanted = (self.output_names if outputs else []) + fetched
        parts: list[list[np.ndarray]] = []
        for batch in self.batches:
            got = self._session.run(wanted, {**batch.feed, **feed}) if wanted else []
            if outputs:
                parts.append(got[: len(self.output_names)])
            values = dict(zip(fetched, got[len(self.output_names) if outputs else 0 :]))
            values.update({name: batch.feed[name] for name in self._capture if name in inputs})
            visit(batch, values)
        return [join_batches([p[i] for p in parts]) for i in range(len(self.output_names))] if outputs else []

    def _stats(self, feed: dict[str, np.ndarray], outputs: bool) -> tuple[list[np.ndarray], dict[str, ChannelStats]]:
        running = {name: RunningChannelStats(name, axis, moments_only=outputs)
                   for name, axis in self._capture.items()}

        def visit(_batch: Batch, values: dict[str, np.ndarray]) -> None:
            for name, stats in running.items():
                stats.update(values[name])

        joined = self._stream(feed, outputs, visit)
        return joined, {name: stats.result() for name, stats in running.items()}

    @property
    def reference(self) -> list[np.ndarray]:
        """Outputs of the unmodified model over the dataset, computed once."""
        if self._reference is None:
            self._reference = self.run()
        return self._reference

    @reference.setter
    def reference(self, outputs: Sequence[np.ndarray]) -> None:
        """Outputs of the unmodified model already computed elsewhere (e.g. with statistics)."""
        self._reference = [np.asarray(r) for r in outputs]

    def target(self, metric: _metrics.Metric) -> Any:
        """What ``metric`` compares against: the labels or the reference outputs."""
        if _metrics.for_data(metric, self.dataset.has_labels).needs_labels:
            return self.dataset.labels
        return self.reference

    def evaluate(
        self,
        metric: str | _metrics.Metric,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
    ) -> float:
        """``metric`` of one candidate over the whole dataset (arguments as in :meth:`run`)."""
        metric = _metrics.get(metric)
        target = self.target(metric)
        return metric(self.run(group_masks, layer_gates, weights, affine), target)

    def check(
        self,
        metric: str | _metrics.Metric,
        threshold: float,
        group_masks: Mapping[str, Any] | None = None,
        layer_gates: Mapping[str, float] | None = None,
        weights: Mapping[str, np.ndarray] | None = None,
        affine: Mapping[AffineKey, tuple[Any, Any]] | None = None,
        early_stop: bool = False,
        target: Any = None,
        tolerance: float = 0.0,
        judged_from: int = 0,
    ) -> Check:
        """Whether a candidate's ``metric`` meets ``threshold`` (>= for higher-is-better metrics).

        With ``early_stop=True`` and a metric that is a mean of bounded per-sample scores
        (accuracy, agreement, cosine, KL), batches stop as soon as even perfect scores on the
        remaining samples could not meet the threshold (by more than ``tolerance``, which keeps
        a candidate within rounding of the threshold running to the end); the result says so.
        A candidate that runs to the end is judged on its joined outputs exactly as
        :meth:`evaluate` judges it. ``target``: what the metric compares against, when not the
        session's own (labels or reference).

        ``judged_from``: the threshold is about samples from this index on only (a holdout part;
        batches never straddle it, see ``split_at``). Their batches run first; a candidate that
        fails on them is not run on the others (a failing result, marked stopped early), one that
        passes is run on the rest too, so its outputs are whole.
        """
        metric = _metrics.get(metric)
        target = self.target(metric) if target is None else target
        total = len(self.dataset)
        if early_stop and judged_from and metric.sample_fn is not None:
            return self._check_part(metric, threshold, target, judged_from, tolerance,
                                    self.feed(group_masks, layer_gates, weights, affine))
        if not early_stop or metric.sample_fn is None:
            outs = self.run(group_masks, layer_gates, weights, affine)
            value = metric(outs, target)
            return Check(value, metric.meets(value, threshold), False, total, total, outs)
        feed = self.feed(group_masks, layer_gates, weights, affine)
        slack = tolerance if metric.direction == "higher" else -tolerance
        seen, partial = 0, 0.0
        parts: list[list[np.ndarray]] = []
        for batch in self.batches:
            outs = self._session.run(self.output_names, {**batch.feed, **feed})
            parts.append(outs)
            partial += float(np.sum(metric.sample_scores(outs, _slice_target(target, batch))))
            seen = batch.stop
            best = metric.best_possible(partial, seen, total)
            if seen < total and not metric.meets(best + slack, threshold):
                return Check(best, False, True, seen, total)
        joined = [join_batches([p[i] for p in parts]) for i in range(len(self.output_names))]
        value = metric(joined, target)
        return Check(value, metric.meets(value, threshold), False, total, total, joined)


    def _check_part(self, metric: _metrics.Metric, threshold: float, target: Any, judged_from: int,
                    tolerance: float, feed: dict[str, np.ndarray]) -> Check:
        """:meth:`check` of the samples from ``judged_from`` on, stopping as early as it can."""
        judged = [b for b in self.batches if b.start >= judged_from]
        rest = [b for b in self.batches if b.start < judged_from]
        total = sum(b.stop - b.start for b in judged)
        slack = tolerance if metric.direction == "higher" else -tolerance
        seen, partial = 0, 0.0
        parts: dict[int, list[np.ndarray]] = {}
        for batch in judged:
            outs = self._session.run(self.output_names, {**batch.feed, **feed})
            parts[batch.start] = outs
            partial += float(np.sum(metric.sample_scores(outs, _slice_target(target, batch))))
            seen += batch.stop - batch.start
            best = metric.best_possible(partial, seen, total)
            if not metric.meets(best + slack, threshold):
                return Check(best, False, True, seen, total)
        value = partial / max(total, 1)
        if not metric.meets(value + slack, threshold):
            return Check(value, False, True, seen, total)
        for batch in rest:  # it passes: the outputs on the other samples too, for the loss
            parts[batch.start] = self._session.run(self.output_names, {**batch.feed, **feed})
        ordered = [parts[k] for k in sorted(parts)]
        joined = [join_batches([p[i] for p in ordered]) for i in range(len(self.output_names))]
        return Check(value, metric.meets(value, threshold), False, total, total, joined)


def _slice_target(target: Any, batch: Batch) -> Any:
    if isinstance(target, np.ndarray):
        return target[batch.start : batch.stop]
    return [t[batch.start : batch.stop] for t in target]


def _channel_vector(values: Any, edge: _Edge | OutputPoint, what: str, default: float) -> np.ndarray:
    size = edge.size
    if values is None:
        return np.full(size, default)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (size,):
        where = f"edge {edge.key}" if isinstance(edge, _Edge) else f"tensor {edge.tensor!r}"
        raise ValueError(f"{where}: {what} needs {size} values (one per channel), got {v.size}")
    return v


def _names(graph: onnx.GraphProto) -> set[str]:
    used: set[str] = set()
    for g in graphs(graph):  # nested bodies too: a name they define must not be taken
        used |= {t.name for t in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
        for node in g.node:
            used.add(node.name)
            used.update(node.input)
            used.update(node.output)
    return used


def _fresh(kind: str, used: set[str]) -> str:
    i = len(used)
    while f"{_PREFIX}{kind}_{i}" in used:
        i += 1
    name = f"{_PREFIX}{kind}_{i}"
    used.add(name)
    return name
