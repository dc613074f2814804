"""The ONNX model view: weights wherever they live, producers/consumers, shapes, MACs, atomic save.

The graph stays a plain ``onnx.ModelProto`` (``Model.proto``); this module only adds an index over
it (who produces and who consumes each value), the shapes onnx's own shape inference finds, and a
few normalisations made once on load so that the rest of pyprune can treat every weight as an
initializer and every node as addressable by name.
"""

from __future__ import annotations

import mmap
import os
import secrets
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper, shape_inference

from .._files import same_file, temporary_folder
from ..errors import ModelLoadError, UnsupportedModelError
from ._contrib import CONTRIB_DOMAIN, standins

__all__ = ["load", "Model", "TensorSpec", "ShapeEntry", "MIN_OPSET", "MAC_WEIGHTED_OPS"]

#: Oldest default-domain opset the op rules are written for. Older models (opsets 7-10, the
#: classic model-zoo exports) are converted to it on load with ``onnx.version_converter``.
MIN_OPSET = 11

# Protobuf refuses to serialise a message of 2 GiB or more; above this (with some headroom for the
# graph itself) weights must live in an external data file.
_PROTOBUF_LIMIT = 2**31 - 2**26

# Initializers at most this many elements keep their data when shape inference runs on a
# data-free skeleton of the model (shape constants need their values; weights need only dims).
_SKELETON_MAX_ELEMENTS = 4096

# External data is written at offsets aligned to this (a cache line: vector loads of a mapped
# weight never straddle one), and only for tensors at least this large.
_EXTERNAL_ALIGN = 64
_EXTERNAL_MIN_BYTES = 1024
# Tensors are copied into a new external-data file in pieces of at most this many bytes, so saving
# a model never holds a second copy of a large weight.
_COPY_CHUNK = 64 * 2**20

# Constant-only producers folded into initializers on load. Only cheap, deterministic ops whose
# output is not larger than their inputs (so folding never blows up the file).
_FOLDABLE = frozenset(
    {
        "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Slice",
        "Gather", "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Reciprocal", "Abs", "Split",
    }
)  # fmt: skip

_FLOAT_PARAMS = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
     onnx.TensorProto.BFLOAT16}
)

_PARAM_DTYPES = frozenset(
    {
        onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
    }
)  # fmt: skip

Dim = int | str | None


class TensorSpec(NamedTuple):
    """A graph input or output: numpy dtype (None for non-tensor values) and shape.

    Shape entries are ints for fixed sizes, strings for symbolic dimensions and None when unknown;
    the shape itself is None when the rank is unknown or the value is not a tensor.
    """

    name: str
    dtype: np.dtype | None
    shape: list[Dim] | None


def load(source: str | os.PathLike | bytes | onnx.ModelProto) -> Model:
    """Load and normalise an ONNX model from a path, serialized bytes or a ``ModelProto``.

    External data (the >2 GB format) stays in its files: each weight is memory-mapped when it is
    read (:meth:`Model.weight`), so a model larger than memory can be analysed, and sessions and
    saves read the mapped weights in place. The source is never modified. ``Constant`` nodes and
    small constant-only subgraphs of the main graph are folded
    into initializers, every main-graph node gets a unique name, and shapes are inferred.

    A default-domain opset older than :data:`MIN_OPSET` is converted to it with
    ``onnx.version_converter`` (``Model.converted_from`` keeps the original opset; what pyprune
    writes is then at :data:`MIN_OPSET`).

    Raises ModelLoadError (naming the file and the cause) for unreadable or invalid models and
    UnsupportedModelError, naming the op, for an old opset the converter cannot bring forward.
    """
    path: Path | None = None
    had_external = False
    external_files: list[Path] = []
    if isinstance(source, onnx.ModelProto):
        label = "<ModelProto>"
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        had_external = _uses_external_data(proto)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = "<bytes>"
        try:
            proto = onnx.load_model_from_string(bytes(source))
        except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... by version
            raise ModelLoadError(f"{label}: not a valid ONNX model ({exc})") from None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        if path.is_dir():
            raise ModelLoadError(f"{label}: is a folder, not an ONNX model file")
        if not path.is_file():
            raise ModelLoadError(f"{label}: no such file")
        try:
            proto = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:
            raise ModelLoadError(f"{label}: not a valid ONNX model ({exc})") from None
        had_external = _uses_external_data(proto)
        external_files = _referenced_files(proto, path.parent) if had_external else []
        if had_external:
            try:
                _check_external(proto, path.parent)
            except Exception as exc:
                raise ModelLoadError(f"{label}: cannot read its external data ({exc})") from None
    else:
        raise TypeError(
            f"load() takes a path, bytes or onnx.ModelProto, not {type(source).__name__}"
        )
    if had_external and isinstance(source, onnx.ModelProto):
        raise ModelLoadError(
            f"{label}: the ModelProto refers to external data; load it from its file path instead"
        )
    _validate(proto, label, path)
    converted_from = None
    if _default_opset(proto) < MIN_OPSET:
        converted_from = _default_opset(proto)
        proto = _convert_opset(proto, label)
    base = path.parent if had_external and path is not None else None
    _normalise(proto, base)
    model = Model(proto, path=path, external_data=had_external, base=base)
    model._external_files = external_files
    model.converted_from = converted_from
    return model


class Model:
    """An ONNX model with an index over its main graph.

    ``proto`` is the model itself; every main-graph node has a unique name. After editing
    ``proto`` directly, call :meth:`refresh` to rebuild the index and re-run shape inference.
    Initializers may keep their data in external files (``base``: the folder their locations are
    relative to); :meth:`weight` maps them, and copies share them until a weight is replaced. In
    such a model a large weight that is replaced or added goes to a private scratch file and is
    mapped from there too (see :class:`_Scratch`): edits never put weights' data into the protobuf.
    Consumers of a value include nodes whose nested subgraphs (If/Loop/Scan bodies) read it, with
    input index ``-1``.
    """

    def __init__(
        self, proto: onnx.ModelProto, *, path: Path | None = None, external_data: bool = False,
        base: Path | None = None,
    ) -> None:
        self.proto = proto
        self.path = path
        self.external_data = external_data
        self.base = base
        self._external_files: list[Path] = []
        self._arrays: dict[str, np.ndarray] = {}
        self._scratches: list[_Scratch] = []  # scratch files initializers refer to (kept alive)
        self._scratch: _Scratch | None = None  # the one this model writes to (its own)
        #: The default-domain opset of the file when load() converted it (None: not converted).
        self.converted_from: int | None = None
        self._assumed: dict[str, list[Dim]] = {}
        self.refresh()

    # -- index ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the producer/consumer index and re-run shape inference after edits."""
        graph = self.proto.graph
        self._initializers = {t.name: t for t in graph.initializer}
        self._arrays = {k: v for k, v in self._arrays.items() if k in self._initializers}
        self._drop_unused_scratches()
        # nodes inside If/Loop/Scan bodies too: their names are unique in the model (see _nested.py)
        self._nodes = {n.name: n for g in _graphs(graph) for n in g.node}
        self._producers: dict[str, onnx.NodeProto] = {}
        self._consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for out in node.output:
                if out:
                    self._producers[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self._consumers.setdefault(name, []).append((node, i))
            for name in sorted(_outer_scope_reads(node)):
                self._consumers.setdefault(name, []).append((node, -1))
        self._graph_inputs = [v.name for v in graph.input if v.name not in self._initializers]
        # sizes of the input symbols the assumed shapes fix (for dims inferred as products)
        self._symbols: dict[str, int] = {}
        for value in graph.input:
            assumed = self._assumed.get(value.name)
            if assumed is not None and value.type.HasField("tensor_type"):
                for d, size in zip(value.type.tensor_type.shape.dim, assumed):
                    if d.dim_param and isinstance(size, int):
                        self._symbols.setdefault(d.dim_param, size)
        # Every name in use (computed once per refresh; unique_name adds what it hands out).
        self._used: set[str] = (set(self._initializers) | set(self._producers) | set(self._nodes)
                                | set(self._graph_inputs) | set(self._consumers))
        self._used.update(name for g in _graphs(graph) if g is not graph for name in _defined_in(g))
        self._graph_outputs = [v.name for v in graph.output]
        self._output_set = frozenset(self._graph_outputs)
        self._infer_types()

    def _infer_types(self) -> None:
        graph = self.proto.graph
        types: dict[str, onnx.TypeProto] = {}
        try:
            inferred = shape_inference.infer_shapes(
                self._inference_skeleton(), check_type=False, strict_mode=False, data_prop=True
            ).graph
            sources = [inferred.value_info, inferred.input, inferred.output]
        except Exception:  # inference is best effort: models with unknown ops still load
            sources = []
        for values in [graph.value_info, graph.input, graph.output, *sources]:
            for v in values:
                if v.type.WhichOneof("value") is not None:
                    known = types.get(v.name)
                    if known is None or _rank(v.type) is not None:
                        types[v.name] = v.type
        # Values inside If/Loop/Scan bodies (their MACs are counted; main-graph names win)
        nested = [g for g in _graphs(inferred) if g is not inferred] if sources else []
        for sub in nested:
            for values in (sub.input, sub.output, sub.value_info):
                for v in values:
                    if v.name not in types and v.type.WhichOneof("value") is not None:
                        types[v.name] = v.type
            for t in sub.initializer:
                types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
        self._types = types
        if sources:
            self._infer_reshapes()

    def _infer_reshapes(self) -> None:
        """Help onnx's inference where it stops: run-time Reshape targets, Loop states.

        onnx propagates shape values only in limited cases; exporters often compute Reshape
        targets as Shape -> Gather -> Unsqueeze -> Concat. Such targets are evaluated
        symbolically here, their outputs annotated and inference re-run downstream. A Loop's
        final state has no shape in onnx's inference (the body could change it); when the body
        hands back its state in the shape it received, that is the final state's shape too.
        """
        found: dict[str, onnx.ValueInfoProto] = {}  # every hint so far: each round re-infers with all
        # one round per level of run-time reshapes (ShuffleNet's channel shuffles chain 30 or so)
        for _ in range(64):
            hints = []
            for node in self.proto.graph.node:
                if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
                    hints.extend(self._loop_state_hints(node))
                    continue
                for out, dims, elem in _hints(self, node):
                    if dims is not None and dims != self.shape(out):
                        hints.append(helper.make_tensor_value_info(out, elem, dims))
            if not hints:
                return
            found.update((h.name, h) for h in hints)
            # onnx names the dimensions it cannot infer afresh on every run (avoiding names in
            # use). Values no new hint can change keep the shapes and names found so far, so the
            # names stay stable from round to round (symbols compared across values then mean
            # something); values downstream of a new hint are inferred again from it.
            stale = self._downstream(h.name for h in hints)
            skeleton = self._inference_skeleton()
            listed = {v.name for v in [*skeleton.graph.input, *skeleton.graph.output]}
            listed |= set(self._initializers)
            produced = {o for n in skeleton.graph.node for o in n.output}
            skeleton.graph.value_info.extend(
                helper.make_value_info(name, t) for name, t in self._types.items()
                if name in produced and name not in listed and name not in stale and name not in found)
            skeleton.graph.value_info.extend(h for name, h in found.items() if name not in listed)
            try:
                inferred = shape_inference.infer_shapes(
                    skeleton, check_type=False, strict_mode=False, data_prop=True
                ).graph
            except Exception:
                return
            for values in (inferred.value_info, inferred.output):
                for v in values:
                    if v.type.WhichOneof("value") is not None and _rank(v.type) is not None:
                        self._types[v.name] = v.type
            for h in found.values():
                self._types[h.name] = h.type

    def _downstream(self, values: Iterable[str]) -> set[str]:
        """Every value computed (transitively) from ``values``."""
        seen: set[str] = set()
        stack = list(values)
        while stack:
            for node, _ in self._consumers.get(stack.pop(), ()):
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        stack.append(out)
        return seen

    def with_input_shapes(self, shapes: Mapping[str, Sequence[Dim]]) -> Model:
        """This model seen with its symbolic input sizes fixed: ``{input: dims}``, where an int
        fixes a symbolic (or unknown) dimension and anything else leaves it as it is.

        Shapes inferred through the graph then carry those sizes, so MACs (and the analysis) are
        those of inputs of that size; the graph itself is untouched, and so is every file written
        from it. The view shares this model's proto (edits work on copies, which keep the sizes);
        ``self`` is returned when no size changes. ``assumed_shapes`` lists what was fixed.
        """
        current = {spec.name: spec.shape for spec in self.input_specs()}
        fixed: dict[str, list[Dim]] = {}
        for name, dims in shapes.items():
            mine = current.get(name)
            if mine is None or len(mine) != len(dims):
                continue
            new = [d if not isinstance(m, int) and isinstance(d, int) else m for m, d in zip(mine, dims)]
            if new != mine:
                fixed[name] = new
        if not fixed:
            return self
        view = Model.__new__(Model)
        view.proto, view.path, view.external_data = self.proto, self.path, self.external_data
        view.base = self.base
        view.converted_from = self.converted_from
        view._external_files = list(self._external_files)
        view._arrays = {}
        view._scratches, view._scratch = list(self._scratches), None
        view._assumed = {**self._assumed, **fixed}
        view.refresh()
        return view

    @property
    def assumed_shapes(self) -> dict[str, list[Dim]]:
        """Input shapes fixed by :meth:`with_input_shapes` (empty: the model's own)."""
        return {k: list(v) for k, v in self._assumed.items()}

    def _loop_state_hints(self, node: onnx.NodeProto) -> list[onnx.ValueInfoProto]:
        body = next((a.g for a in node.attribute if a.name == "body"), None)
        if body is None:
            return []
        hints = []
        # Loop inputs: trip count, condition, states...; body outputs: condition, states..., scans
        for k, state in enumerate(node.input[2:]):
            if k >= len(node.output) or not node.output[k] or self.shape(node.output[k]) is not None:
                continue
            given, returned = self.shape(state), self.shape(body.output[k + 1].name)
            if given is not None and given == returned:
                hints.append(helper.make_tensor_value_info(node.output[k], self.elem_type(state) or 0, given))
        return hints

    def _inference_skeleton(self) -> onnx.ModelProto:
        """The data-free copy onnx's shape inference runs on: inputs at their assumed sizes
        (:meth:`with_input_shapes`), contrib ops replaced by stand-ins with the same output shapes
        (see ``_contrib.py``)."""
        sk = _skeleton(self.proto)
        for value in sk.graph.input:
            assumed = self._assumed.get(value.name)
            if assumed is None or not value.type.HasField("tensor_type"):
                continue
            shape = value.type.tensor_type.shape
            for d, size in zip(shape.dim, assumed):
                if isinstance(size, int):
                    d.Clear()
                    d.dim_value = size
        dims = {t.name: list(t.dims) for t in sk.graph.initializer}
        nodes: list[onnx.NodeProto] = []
        replaced = False
        for node in sk.graph.node:
            stand = standins(node, dims.get)
            if stand is None:
                nodes.append(node)
            else:
                nodes.extend(stand)
                replaced = True
        if replaced:
            del sk.graph.node[:]
            sk.graph.node.extend(nodes)
        return sk

    def shape_vector(
        self, name: str, reader: tuple[str, int] | None = None
    ) -> list[ShapeEntry] | None:
        """Entries of a 1-D shape tensor, evaluated symbolically where possible.

        ``reader`` = (node, input index) reading ``name``, so that a constant ``name`` itself can
        be located. Returns None when the tensor is not an understood shape computation.
        """
        return _shape_vector(self, name, reader, 0)

    @property
    def graph(self) -> onnx.GraphProto:
        return self.proto.graph

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        """Main-graph nodes in topological order."""
        return list(self.proto.graph.node)

    def node(self, name: str) -> onnx.NodeProto:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in the main graph") from None

    def producer(self, value: str) -> onnx.NodeProto | None:
        """The node computing ``value``; None for graph inputs and initializers."""
        return self._producers.get(value)

    def consumers(self, value: str) -> list[tuple[onnx.NodeProto, int]]:
        """(node, input index) pairs reading ``value``; index -1 = read inside a nested subgraph."""
        return list(self._consumers.get(value, ()))

    def is_graph_output(self, value: str) -> bool:
        return value in self._output_set

    def is_graph_input(self, value: str) -> bool:
        return value in self._graph_inputs

    @property
    def input_names(self) -> list[str]:
        return list(self._graph_inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._graph_outputs)

    @property
    def opset(self) -> int:
        """Version of the default ("" / "ai.onnx") domain."""
        return _default_opset(self.proto)

    # -- weights -------------------------------------------------------------------------------

    @property
    def weight_names(self) -> list[str]:
        """Initializers of the main graph (folded ``Constant`` nodes included)."""
        return list(self._initializers)

    def is_weight(self, value: str) -> bool:
        return value in self._initializers

    def is_param(self, value: str) -> bool:
        """An initializer that :meth:`params` counts (float or 8/4-bit integer weights; shape
        constants and other integer tensors are not parameters)."""
        tensor = self._initializers.get(value)
        return tensor is not None and tensor.data_type in _PARAM_DTYPES

    def weight(self, name: str) -> np.ndarray:
        """The value of an initializer as a read-only array (copy it to modify; see set_weight).
        A weight kept in an external file is memory-mapped, not read."""
        array = self._arrays.get(name)
        if array is None:
            try:
                tensor = self._initializers[name]
            except KeyError:
                raise KeyError(f"no initializer named {name!r}") from None
            if external_data_helper.uses_external_data(tensor):
                array = _map_external(tensor, self.base)
            else:
                array = numpy_helper.to_array(tensor)
            array.flags.writeable = False
            self._arrays[name] = array
        return array

    def external_arrays(self, proto: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
        """The mapped arrays of the main-graph initializers of ``proto`` (default: this model's;
        e.g. an edited copy) that keep their data in external files, by name: what an ONNX Runtime
        session of ``proto`` is given in place of reading those files itself."""
        graph = (proto or self.proto).graph
        return {t.name: self.weight(t.name) if t.name in self._initializers else _map_external(t, self.base)
                for t in graph.initializer if external_data_helper.uses_external_data(t)}

    def release_mapped(self) -> None:
        """Drop the memory pages of mapped weights from this process (they stay in the file and
        the page cache, and come back when read again): after a pass over every weight, the
        resident memory returns to what the process itself holds."""
        for array in self._arrays.values():
            _release(array)

    def set_weight(self, name: str, array: np.ndarray) -> None:
        """Replace an initializer's value (kept in its element type; the shape may change). In a
        model with external data a large value is written to a scratch file and mapped from there."""
        old = self._initializers.get(name)
        if old is None:
            raise KeyError(f"no initializer named {name!r}")
        dtype = helper.tensor_dtype_to_np_dtype(old.data_type)
        value = np.ascontiguousarray(array, dtype=dtype)
        replaced = self._arrays.pop(name, None)
        if replaced is not None:
            _release(replaced)  # a mapped original read for the new value: its pages are not needed
        if self._spills(old.data_type, value.nbytes):
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                old.ClearField(field)
            del old.dims[:]
            old.dims.extend(value.shape)
            self._spill(old, value)
            return
        if old.data_type in _MAPPABLE and old.data_type != onnx.TensorProto.BOOL and sys.byteorder == "little":
            # The bytes go straight into the tensor: building a new TensorProto and copying it
            # over would hold the data twice more, which on a large model sets the peak memory.
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                          "external_data", "string_data", "data_location"):
                old.ClearField(field)
            del old.dims[:]
            old.dims.extend(value.shape)
            old.raw_data = value.tobytes()
            return
        new = numpy_helper.from_array(value, name)
        if old.doc_string:
            new.doc_string = old.doc_string
        old.CopyFrom(new)

    def add_weight(self, name: str, array: np.ndarray) -> str:
        """Add a new initializer (name must be unused) and return its name."""
        if name in self._initializers or name in self._producers or name in self._graph_inputs:
            raise ValueError(f"value name {name!r} is already used")
        value = np.ascontiguousarray(array)
        tensor = self.proto.graph.initializer.add()
        data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
        if self._spills(data_type, value.nbytes):
            tensor.name, tensor.data_type = name, data_type
            tensor.dims.extend(value.shape)
            self._spill(tensor, value)
        else:
            tensor.CopyFrom(numpy_helper.from_array(value, name))
        self._initializers[name] = tensor
        return name

    def _spills(self, data_type: int, nbytes: int) -> bool:
        """Whether a new value of this type and size goes to a scratch file: in a model with
        external data, a large weight numpy can map (in little-endian, as files keep it)."""
        return (self.external_data and self.base is not None and data_type in _MAPPABLE
                and nbytes >= _EXTERNAL_MIN_BYTES and sys.byteorder == "little")

    def _spill(self, tensor: onnx.TensorProto, value: np.ndarray) -> None:
        """Write ``value`` to this model's scratch file and refer ``tensor`` (its name, type and
        dims set) to it."""
        try:
            if self._scratch is None:
                self._scratch = _Scratch()
                self._scratches.append(self._scratch)
            self._scratch.append(tensor, value)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write an edited weight to a scratch file in {tempfile.gettempdir()} "
                          f"({exc.strerror or exc}); the TMPDIR environment variable says where such files go"
                          ) from None

    def _drop_unused_scratches(self) -> None:
        """Let go of the scratch files no initializer refers to any more (each is deleted when no
        model holds it)."""
        if not self._scratches:
            return
        used = {external_data_helper.ExternalDataInfo(t).location for t in self.proto.graph.initializer
                if external_data_helper.uses_external_data(t)}
        self._scratches = [s for s in self._scratches if s.location in used]
        if self._scratch is not None and self._scratch not in self._scratches:
            self._scratch = None

    def unique_name(self, base: str) -> str:
        """A value/node name not used anywhere in the main graph, nor handed out before: a name
        returned here is reserved, so two edits before the next :meth:`refresh` never collide."""
        name, i = base, 1
        while name in self._used or name in self._initializers:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    # -- shapes --------------------------------------------------------------------------------

    def shape(self, value: str) -> list[Dim] | None:
        """Shape of a tensor value: ints, symbolic dims as str, None when unknown."""
        tensor = self._initializers.get(value)
        if tensor is not None:
            return list(tensor.dims)
        t = self._types.get(value)
        if t is None or t.WhichOneof("value") != "tensor_type":
            return None
        if not t.tensor_type.HasField("shape"):
            return None
        return [_dim(d) for d in t.tensor_type.shape.dim]

    def rank(self, value: str) -> int | None:
        shape = self.shape(value)
        return None if shape is None else len(shape)

    def elem_type(self, value: str) -> int | None:
        """ONNX element type of a tensor value (onnx.TensorProto.FLOAT, ...), None if unknown."""
        tensor = self._initializers.get(value)
        if tensor is not None:
            return tensor.data_type
        t = self._types.get(value)
        if t is None or t.WhichOneof("value") != "tensor_type":
            return None
        return t.tensor_type.elem_type or None

    def input_specs(self) -> list[TensorSpec]:
        return [self._spec(name) for name in self._graph_inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [self._spec(name) for name in self._graph_outputs]

    def _spec(self, name: str) -> TensorSpec:
        elem = self.elem_type(name)
        dtype = None if elem is None else np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        return TensorSpec(name, dtype, self.shape(name) if dtype is not None else None)

    # -- complexity ----------------------------------------------------------------------------

    def node_macs(self, node: onnx.NodeProto) -> int:
        """Multiply-accumulates of one run of ``node``; symbolic dims (batch, ...) count as 1
        (see :meth:`with_input_shapes` for the MACs of inputs of a given size).

        Conv, ConvTranspose, Gemm, MatMul (batched included), GRU/LSTM/RNN and ONNX Runtime's
        FusedConv, FusedMatMul and Attention are counted; other ops are 0. Unknown shapes count 0.
        """
        return node_macs(self, node)

    def node_params(self, node: onnx.NodeProto) -> int:
        """Elements of the weights a node reads (initializers among its inputs)."""
        return sum(
            int(np.prod(self._initializers[n].dims, dtype=np.int64))
            for n in dict.fromkeys(node.input)
            if n in self._initializers and self._initializers[n].data_type in _PARAM_DTYPES
        )

    def macs(self) -> int:
        return sum(self.node_macs(n) for n in self.proto.graph.node)

    def uncounted_macs(self) -> list[str]:
        """Nodes (in the main graph or inside control-flow bodies) that do multiply-accumulate but
        whose MACs cannot be counted (their shapes stay unknown, even at the assumed input sizes):
        :meth:`macs` is then a lower bound."""
        ops = MAC_WEIGHTED_OPS | {"Attention", "GRU", "LSTM", "RNN"}
        return [n.name for g in _graphs(self.proto.graph) for n in g.node if n.op_type in ops and not self.node_macs(n)]

    def params(self) -> int:
        """Elements of all weight tensors (float and 8/4-bit integer initializers, subgraphs
        included)."""
        return sum(int(np.prod(t.dims, dtype=np.int64)) for t in self._param_tensors())

    def nonzeros(self) -> int:
        """Non-zero elements of the tensors counted by :meth:`params`."""
        total = 0
        for t in self._param_tensors():
            if t.name in self._initializers and t is self._initializers[t.name]:
                # Read without caching what was not cached: a count must not hold a second copy
                # of every weight (mapped pages are dropped after counting).
                array = self._arrays.get(t.name)
                if array is None:
                    array = _map_external(t, self.base) if external_data_helper.uses_external_data(t) \
                        else numpy_helper.to_array(t)
                total += int(np.count_nonzero(array))
                _release(array)
            else:
                total += int(np.count_nonzero(numpy_helper.to_array(t, str(self.base or ""))))
        return total

    def _param_tensors(self) -> Iterator[onnx.TensorProto]:
        for t in _all_initializers(self.proto.graph):
            if t.data_type in _PARAM_DTYPES:
                yield t

    def file_size(self) -> int:
        """Bytes the model takes when saved (model file plus external data)."""
        try:
            size = self.proto.ByteSize()
        except Exception:  # above the protobuf limit some runtimes refuse to size it
            size = -1
        if 0 <= size < _PROTOBUF_LIMIT and not _uses_external_data(self.proto):
            return size
        return sum(_data_bytes(t) for t in _all_initializers(self.proto.graph)) + _skeleton(
            self.proto, keep_elements=0
        ).ByteSize()

    def check(self) -> None:
        """``onnx.checker`` full check of the model (onnx.checker.ValidationError when it fails).

        A model whose weights live in external files or that is too large for one protobuf message
        is checked as a copy without its weights' data: every large initializer refers to a
        sparse placeholder file of the right size in a temporary folder (the checker looks at
        shapes, types and the graph, never at weight values), so no weight is read or copied.
        """
        if not _uses_external_data(self.proto):
            try:
                size = self.proto.ByteSize()
            except Exception:
                size = _PROTOBUF_LIMIT
            if size < _PROTOBUF_LIMIT:
                onnx.checker.check_model(self.proto, full_check=True)
                return
        light, _ = self.light_proto()
        with tempfile.TemporaryDirectory(prefix="pyprune-check-") as tmp:
            end = 0
            for t in light.graph.initializer:
                if external_data_helper.uses_external_data(t):
                    info = external_data_helper.ExternalDataInfo(t)
                    end = max(end, (info.offset or 0) + (info.length or 0))
            with open(Path(tmp) / _PLACEHOLDER, "wb") as f:
                f.truncate(end)  # sparse: takes no disk space
            onnx.save_model(light, str(Path(tmp) / "model.onnx"))
            onnx.checker.check_model(str(Path(tmp) / "model.onnx"), full_check=True)

    def light_proto(self, proto: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
        """A copy of ``proto`` (default: the model's) whose large main-graph initializers carry no
        data, only a reference into a placeholder external file, and those initializers by name
        (their values come from :meth:`_array_of`, one at a time, when a writer needs them): what
        a checker or a writer needs, without the 2 GB protobuf limit or a copy of the weights."""
        proto = proto or self.proto
        light = _copy_without(proto, {"graph"})
        light.graph.CopyFrom(_copy_without(proto.graph, {"initializer"}))
        sources: dict[str, onnx.TensorProto] = {}
        offset = 0
        for t in proto.graph.initializer:
            stub = light.graph.initializer.add()
            if _data_bytes(t) < _EXTERNAL_MIN_BYTES or t.data_type not in _MAPPABLE:
                stub.CopyFrom(t)
                if external_data_helper.uses_external_data(t):  # small or unusual: inline it
                    stub.CopyFrom(numpy_helper.from_array(self._array_of(t), t.name))
                continue
            stub.CopyFrom(_copy_without(t, {"raw_data", "external_data", "data_location"}))
            length = _data_bytes(t)
            _set_external(stub, _PLACEHOLDER, offset, length)
            offset += length + (-length) % _EXTERNAL_ALIGN
            sources[t.name] = t
        return light, sources

    def session_file(self, folder: Path, proto: onnx.ModelProto | None = None) -> Path:
        """Write ``proto`` (default: the model's; e.g. an edited copy) into ``folder`` as a model
        file ONNX Runtime can map its weights from: weights still in the model's external files
        keep their places in them (the files are hard-linked into ``folder``, so nothing is
        copied), weights in memory are streamed into one new data file. Returns the model file;
        the folder may be removed once a session has opened it (its mappings stay valid)."""
        light, sources = self.light_proto(proto)
        folder = Path(folder)
        links: dict[Path, str] = {}
        offset = 0
        with open(folder / "weights.data", "wb") as f:
            for stub in light.graph.initializer:
                source = sources.get(stub.name)
                if source is None:
                    continue
                if external_data_helper.uses_external_data(source) and self.base is not None:
                    info = external_data_helper.ExternalDataInfo(source)
                    original = self.base / info.location
                    if original not in links:
                        name = f"linked{len(links)}.data"
                        try:
                            os.link(original, folder / name)
                            links[original] = name
                        except OSError:  # another file system: copy the tensor instead
                            links[original] = ""
                    if links[original]:
                        _set_external(stub, links[original], info.offset or 0, _data_bytes(source))
                        continue
                offset = _append_external(f, offset, stub, self._array_of(source), "weights.data")
        path = folder / "model.onnx"
        onnx.save_model(light, str(path))
        return path

    def _array_of(self, tensor: onnx.TensorProto) -> np.ndarray:
        """A tensor's value without caching it (a writer or a session file needs it once)."""
        cached = self._arrays.get(tensor.name)
        if cached is not None and self._initializers.get(tensor.name) is tensor:
            return cached
        if external_data_helper.uses_external_data(tensor):
            return _map_external(tensor, self.base)
        return numpy_helper.to_array(tensor)

    # -- copies and files ----------------------------------------------------------------------

    def copy(self) -> Model:
        """An independent copy (same source path, so saving over the input stays refused)."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        new = Model.__new__(Model)
        new.proto, new.path, new.external_data = proto, self.path, self.external_data
        new.converted_from = self.converted_from
        new._assumed = dict(self._assumed)
        new.base = self.base
        new._external_files = list(self._external_files)
        new._arrays = {}
        new._scratches, new._scratch = list(self._scratches), None
        new.refresh()
        return new

    @property
    def external_files(self) -> list[Path]:
        """The external-data files the loaded model read its weights from (absolute paths)."""
        return list(self._external_files)

    def save(
        self,
        path: str | os.PathLike,
        *,
        overwrite_input: bool = False,
        external_data: bool | None = None,
        protect: Iterable[str | os.PathLike] = (),
    ) -> Path:
        """Write the model atomically; the file the model was loaded from is refused unless
        ``overwrite_input=True``, and so are its external-data files and any path in ``protect``
        (other files the caller's run reads), compared by real path.

        Weights go to an external-data file next to the model when ``external_data`` is True, or
        (by default) when the loaded model had external data or is too large for one protobuf
        file. That file is ``<name>.data``, or a new unique name (``<name>.<token>.data``) when such
        a file exists already, so no file is ever overwritten; the model file is renamed into place
        last, so a crash at any point leaves either the old model with its old weights or the new
        one with its new weights. The weights file a replaced model used is removed after the
        switch. The working folder does not matter.
        """
        target = Path(os.path.abspath(path))
        if self.path is not None and not overwrite_input and same_file(target, self.path):
            raise ValueError(f"refusing to overwrite the input model {self.path}; "
                             "choose another path or pass overwrite_input=True")
        for read in [*self._external_files, *map(Path, protect)]:
            if same_file(target, read):
                raise ValueError(f"refusing to overwrite {read}, which this model or run reads; "
                                 "choose another path")
        if target.is_dir():
            raise ValueError(f"{target} is a directory")
        directory = target.parent
        if not directory.is_dir():
            raise ValueError(f"directory {directory} does not exist")
        if external_data is None:
            external_data = self.external_data or self.file_size() >= _PROTOBUF_LIMIT
        replaced = _external_locations(target)
        written: onnx.ModelProto | None = None
        workdir = temporary_folder(directory)
        try:
            tmp_model = workdir / target.name
            if external_data:
                # <name>.data when free; never an existing file (the old model may still read it)
                data_name = f"{target.name}.data"
                if (directory / data_name).exists():
                    data_name = f"{target.name}.{secrets.token_hex(4)}.data"
                # Weights are streamed into the new file, from memory or from the files they are
                # mapped from, a piece at a time: no second copy of the model is ever held.
                proto = written = _write_external(self, workdir / data_name, data_name)
                # An absolute path: onnx resolves a relative one against the working folder.
                onnx.save_model(proto, str(tmp_model))
                if (workdir / data_name).exists():
                    os.replace(workdir / data_name, directory / data_name)  # a new name: clobbers nothing
            else:
                onnx.save_model(self._inline_proto() if _uses_external_data(self.proto) else self.proto,
                                str(tmp_model))
            os.replace(tmp_model, target)  # the switch
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if written is not None and _uses_external_data(self.proto):
            # A mapped model now reads its weights from the file it was saved to: the files it
            # mapped before may be removed below (an in-place save), and weights it held in
            # memory need not stay there.
            self._adopt(written, directory)
        # The replaced model's weights file is now read by nothing: remove it, unless the new model
        # or another file of the run reads it, or it is neither one pyprune named for this model
        # nor the input's own weights replaced in place.
        in_place = self.path is not None and same_file(target, self.path)
        keep = {os.path.realpath(f) for f in [*protect, *_external_locations(target)]}
        if not in_place:
            keep |= {os.path.realpath(f) for f in self._external_files}
        for old in replaced:
            if (os.path.realpath(old) not in keep and old.parent == directory
                    and (_ours(old.name, target.name) or in_place)):
                try:
                    old.unlink()
                except OSError:
                    pass
        return target

    def _inline_proto(self) -> onnx.ModelProto:
        """A copy of the model with the data of every main-graph weight inside it (a single-file
        save of a model whose weights live in files)."""
        light, sources = self.light_proto()
        for stub in light.graph.initializer:
            source = sources.get(stub.name)
            if source is not None:
                array = self._array_of(source)
                stub.CopyFrom(numpy_helper.from_array(np.asarray(array), stub.name))
                _release(array)
        return light

    def _adopt(self, written: onnx.ModelProto, directory: Path) -> None:
        """Refer every large initializer to where ``written`` (just saved in ``directory``) keeps it."""
        placed = {t.name: t for t in written.graph.initializer}
        for name, tensor in self._initializers.items():
            stub = placed.get(name)
            if stub is None:
                continue
            if not external_data_helper.uses_external_data(stub):
                if external_data_helper.uses_external_data(tensor):  # small: written inline
                    tensor.CopyFrom(stub)
                    self._arrays.pop(name, None)
                continue
            info = external_data_helper.ExternalDataInfo(stub)
            tensor.ClearField("raw_data")
            _set_external(tensor, info.location, info.offset or 0, info.length or 0)
            _release(self._arrays.pop(name, np.empty(0)))
            where = Path(os.path.abspath(directory / info.location))
            if where not in self._external_files:
                self._external_files.append(where)  # read by this model now: never to be written over
        self.base = directory
        self._drop_unused_scratches()

    def __repr__(self) -> str:
        g = self.proto.graph
        src = f" from {self.path}" if self.path else ""
        return f"<Model{src}: {len(g.node)} nodes, {len(g.initializer)} initializers>"


# -- MACs ---------------------------------------------------------------------------------------


def _concrete(shape: list[Dim] | None, symbols: Mapping[str, int] | None = None) -> list[int] | None:
    """Shape with symbolic dims at their sizes in ``symbols`` (a product of symbols such as
    ``sequence*batch``, as exporters annotate flattened tokens, multiplies them out); a symbol
    of unknown size counts as 1. None if any dim (or the rank) is unknown."""
    if shape is None or any(d is None for d in shape):
        return None
    return [d if isinstance(d, int) else _symbolic_size(str(d), symbols or {}) for d in shape]


def _symbolic_size(dim: str, symbols: Mapping[str, int]) -> int:
    size = 1
    for factor in dim.split("*"):
        factor = factor.strip()
        if factor.isdigit():
            size *= int(factor)
        elif factor.isidentifier() or factor.replace(".", "_").isidentifier():
            size *= symbols.get(factor, 1)
        else:
            return 1  # an expression this does not evaluate (sums, divisions): counted as 1
    return size


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# ONNX Runtime's fused ops counted as the standard op they fuse.
_CONTRIB_MACS_AS = {"FusedConv": "Conv", "FusedMatMul": "MatMul", "Attention": "Attention"}

#: Ops whose MACs scale with the slices of their weight operand (input 1): removing a share of
#: that weight's rows or columns removes that share of the node's MACs. ONNX Runtime's fused
#: forms included.
MAC_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedMatMul"})


def node_macs(model: Model, node: onnx.NodeProto) -> int:
    """MACs of one node (see :meth:`Model.node_macs`)."""
    if node.domain == CONTRIB_DOMAIN and node.op_type in ("MultiHeadAttention", "GroupQueryAttention"):
        return _contrib_macs(model, node)
    if node.domain in ("", "ai.onnx"):
        op = node.op_type
    else:
        op = _CONTRIB_MACS_AS.get(node.op_type, "") if node.domain == CONTRIB_DOMAIN else ""
    if op in ("Conv", "ConvTranspose"):
        w = _concrete(model.shape(node.input[1]), model._symbols)
        side = node.output[0] if op == "Conv" else node.input[0]
        act = _concrete(model.shape(side), model._symbols)
        if w is None or act is None or len(act) < 2:
            return 0
        # Conv: every output element sums over Cin/group * kernel; ConvTranspose: every input
        # element scatters into Cout/group * kernel outputs. Both equal elements * w[1:] volume.
        return int(np.prod(act, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
    if op == "Gemm":
        a = _concrete(model.shape(node.input[0]), model._symbols)
        b = _concrete(model.shape(node.input[1]), model._symbols)
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return 0
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return int(m * k * n)
    if op == "MatMul":
        a = _concrete(model.shape(node.input[0]), model._symbols)
        out = _concrete(model.shape(node.output[0]), model._symbols)
        weight = [d for d in model.shape(node.input[1]) or () if isinstance(d, int)] \
            if model.is_weight(node.input[1]) else []
        if out is None:
            return 0
        if len(weight) >= 2:  # a weight knows the reduced size even where A's is unknown
            k = int(weight[-1] if _attr(node, "transB", 0) else weight[-2])
        elif a:
            k = a[-2] if len(a) > 1 and _attr(node, "transA", 0) else a[-1]  # FusedMatMul's transA
        else:
            return 0
        return int(np.prod(out, dtype=np.int64) * k)
    if op == "Attention":  # com.microsoft: the QKV projection, then scores and context per head
        x = _concrete(model.shape(node.input[0]), model._symbols)
        w = _concrete(model.shape(node.input[1]), model._symbols)
        if x is None or w is None or len(x) != 3 or len(w) != 2:
            return 0
        batch, seq, hidden = x
        sizes = _attr(node, "qkv_hidden_sizes")
        qk, v = (int(sizes[0]), int(sizes[2])) if sizes else (w[1] // 3, w[1] // 3)
        return int(batch * seq * hidden * w[1] + batch * seq * seq * (qk + v))
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return _control_flow_macs(model, node)
    if op in ("GRU", "LSTM", "RNN"):  # every step multiplies its input by W and its state by R
        x = _concrete(model.shape(node.input[0]), model._symbols)
        w = _concrete(model.shape(node.input[1]), model._symbols)
        r = _concrete(model.shape(node.input[2]), model._symbols)
        if x is None or w is None or r is None or len(x) != 3:
            return 0
        steps = x[0] * x[1]  # sequence x batch, in either layout
        return int(steps * (np.prod(w, dtype=np.int64) + np.prod(r, dtype=np.int64)))
    return 0


def _contrib_macs(model: Model, node: onnx.NodeProto) -> int:
    """MACs of ONNX Runtime's fused attention: the packed projection (``Attention``) plus the
    two products per head, ``Q @ K^T`` and ``P @ V`` (sequence lengths symbolic count as 1)."""
    if node.op_type not in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
        return 0
    query = _concrete(model.shape(node.input[0]))
    out = _concrete(model.shape(node.output[0]))
    if query is None or out is None or len(query) != 3 or len(out) != 3:
        return 0
    batch, seq = query[0], query[1]
    projection = 0
    if node.op_type == "Attention":
        weight = _concrete(model.shape(node.input[1]))
        if weight is None or len(weight) != 2:
            return 0
        projection = batch * seq * weight[0] * weight[1]
        qk_width = weight[1] // 3
        length = seq
    else:
        key = _concrete(model.shape(node.input[1])) if len(node.input) > 1 and node.input[1] else None
        length = key[1] if key is not None and len(key) == 3 else seq
        qk_width = query[2] if node.op_type == "MultiHeadAttention" else out[2]
    return int(projection + batch * seq * length * (qk_width + out[2]))


def _control_flow_macs(model: Model, node: onnx.NodeProto) -> int:
    """MACs of an If (its costlier branch: an upper bound, the branch taken is known only at run
    time), a Loop (its body times a constant trip count, once when the count is not a constant)
    or a Scan (its body once per step of the first scanned input, once when unknown)."""
    bodies = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    counts = body_counts(model, node)
    return sum(counts.get(name, 0) * sum(node_macs(model, n) for n in body.node) for name, body in bodies.items())


def body_counts(model: Model, node: onnx.NodeProto) -> dict[str, int]:
    """How many runs of each body (by attribute name) the MACs of a control-flow node count (see
    :func:`_control_flow_macs`): the costlier If branch once, the other not at all."""
    bodies = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    if node.op_type == "If":
        costs = {name: sum(node_macs(model, n) for n in body.node) for name, body in bodies.items()}
        costliest = max(costs, key=lambda name: costs[name], default="")
        return {name: int(name == costliest) for name in bodies}
    times = 1
    if node.op_type == "Loop":
        trips = node.input[0] if node.input else ""
        if trips and model.is_weight(trips) and model.weight(trips).size == 1:
            times = max(int(model.weight(trips).ravel()[0]), 0)
    elif node.op_type == "Scan":
        n_state = len(node.input) - int(_attr(node, "num_scan_inputs", 0))
        scanned = node.input[n_state] if n_state < len(node.input) else ""
        axes = _attr(node, "scan_input_axes", None)
        shape = _concrete(model.shape(scanned), model._symbols) if scanned else None
        axis = int(axes[0]) if axes else 0
        times = shape[axis] if shape and len(shape) > axis else 1
    return {name: times for name in bodies}


# -- shape computations -------------------------------------------------------------------------

class ShapeEntry(NamedTuple):
    """One entry of a shape vector computed in the graph.

    ``value``: int, symbolic dim name, or None when unknown. ``const_at``: (node, input index,
    element) of the constant holding it, None when computed at run time. ``source``: (tensor,
    axis) when the entry is ``Shape(tensor)[axis]`` read at run time.
    """

    value: Dim
    const_at: tuple[str, int, int] | None = None
    source: tuple[str, int] | None = None


_SHAPE_PLUMBING = frozenset({"Unsqueeze", "Squeeze", "Cast", "Identity"})
# Integer arithmetic on shape entries (ONNX Div of integers truncates toward zero).
_SHAPE_ARITHMETIC = {"Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y,
                     "Div": lambda x, y: int(x / y)}


def _shape_vector(model: Model, name: str, reader: tuple[str, int] | None, depth: int):
    if depth > 12:
        return None
    if model.is_weight(name):
        value = model.weight(name)
        if value.dtype.kind not in "iu" or value.ndim > 1:
            return None
        return [
            ShapeEntry(int(v), (reader[0], reader[1], k) if reader else None)
            for k, v in enumerate(value.ravel().tolist())
        ]
    node = model.producer(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        shape = model.shape(node.input[0])
        if shape is None:
            return None
        axes = list(range(len(shape)))
        start, end = _attr(node, "start", 0), _attr(node, "end", len(shape))
        return [ShapeEntry(shape[a], None, (node.input[0], a)) for a in axes[start:end]]
    if op in _SHAPE_PLUMBING:
        return _shape_vector(model, node.input[0], (node.name, 0), depth + 1)
    if op == "Concat":
        out = []
        for k, piece in enumerate(node.input):
            entries = _shape_vector(model, piece, (node.name, k), depth + 1)
            if entries is None:
                return None
            out.extend(entries)
        return out
    if op == "Reshape" and model.rank(name) == 1:  # a 1-D vector reshaped to [-1] or [n]
        return _shape_vector(model, node.input[0], (node.name, 0), depth + 1)
    if op == "ConstantOfShape":
        length = _shape_vector(model, node.input[0], (node.name, 0), depth + 1)
        if length is None or len(length) != 1 or not isinstance(length[0].value, int):
            return None
        fill = _constant_fill(node)
        return None if fill is None else [ShapeEntry(fill)] * length[0].value
    if op in _SHAPE_SELECT or op == "Where":
        return _shape_select(model, node, depth)
    if op == "Mul" and len(node.input) == 2:  # a symbolic entry times 1 stays that entry
        kept = _times_one(model, node, depth)
        if kept is not None:
            return kept
    if op in _SHAPE_ARITHMETIC and len(node.input) == 2:
        # sizes worked out at run time, e.g. ShuffleNet's channels per group, C // 2: known
        # where the entries are, but computed (no constant to edit, no source to follow)
        operands = []
        for k, piece in enumerate(node.input):
            if model.is_weight(piece):
                value = model.weight(piece)
                if value.dtype.kind not in "iu" or value.ndim > 1:
                    return None
                operands.append([int(v) for v in value.ravel().tolist()])
            else:
                entries = _shape_vector(model, piece, (node.name, k), depth + 1)
                if entries is None:
                    return None
                operands.append([e.value for e in entries])
        a, b = operands
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            return None
        n = max(len(a), len(b))
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        return [ShapeEntry(_SHAPE_ARITHMETIC[op](x, y) if isinstance(x, int) and isinstance(y, int) and
                           (op != "Div" or y != 0) else None) for x, y in zip(a, b)]
    if op in ("Gather", "Slice"):
        data = _shape_vector(model, node.input[0], (node.name, 0), depth + 1)
        if data is None:
            return None
        if op == "Gather":
            if not model.is_weight(node.input[1]):
                return None
            idx = model.weight(node.input[1]).ravel().tolist()
            return [data[int(i) % len(data)] for i in idx] if data else None
        if len(node.input) < 3 or not all(model.is_weight(n) for n in node.input[1:]):
            return None
        bounds = [model.weight(n) for n in node.input[1:]]
        start, end = int(bounds[0].ravel()[0]), int(bounds[1].ravel()[0])
        step = int(bounds[3].ravel()[0]) if len(bounds) > 3 else 1
        return data[start:end:step]
    return None


# Element-wise comparisons and choices on shape entries (``Where(Equal(v, -1), 1, v)``)
_SHAPE_SELECT = {"Max": max, "Min": min, "Equal": lambda a, b: int(a == b)}


def _constant_fill(node: onnx.NodeProto) -> int | None:
    value = _attr(node, "value")
    if value is None:
        return 0
    array = numpy_helper.to_array(value).ravel()
    return int(array[0]) if array.size == 1 and array.dtype.kind in "iub" else None


def _shape_select(model: Model, node: onnx.NodeProto, depth: int) -> list[ShapeEntry] | None:
    """Element-wise arithmetic on shape vectors, entry by entry (broadcasting a single entry).

    Exporters compute targets such as ``Where(Equal(v, -1), ones, v)``: entries that are known
    integers are computed; a symbolic dimension is never negative, so comparing it with a
    negative constant is decided too. ``Where`` passes the chosen entry on unchanged (with where
    it came from), so a channel count read at run time is still recognised downstream.
    """
    vectors = []
    for k, name in enumerate(node.input):
        entries = _shape_vector(model, name, (node.name, k), depth + 1)
        if entries is None:
            return None
        vectors.append(entries)
    length = max(len(v) for v in vectors)
    if any(len(v) not in (1, length) for v in vectors):
        return None
    vectors = [v * length if len(v) == 1 else v for v in vectors]
    out: list[ShapeEntry] = []
    for parts in zip(*vectors):
        values = [e.value for e in parts]
        if node.op_type == "Where":
            cond = values[0]
            out.append(parts[1] if cond == 1 else parts[2] if cond == 0 else ShapeEntry(None))
            continue
        a, b = values
        if node.op_type == "Equal" and isinstance(a, str) != isinstance(b, str):
            number = b if isinstance(a, str) else a
            out.append(ShapeEntry(0 if isinstance(number, int) and number < 0 else None))
        elif node.op_type == "Mul" and 1 in values and any(isinstance(v, str) for v in values):
            out.append(parts[0] if b == 1 else parts[1])
        elif isinstance(a, int) and isinstance(b, int):
            compute: Any = _SHAPE_SELECT[node.op_type]
            out.append(ShapeEntry(int(compute(a, b))))
        else:
            out.append(ShapeEntry(None))
    return out


def _hints(model: Model, node: onnx.NodeProto) -> list[tuple[str, list[Dim] | None, int]]:
    """(value, shape, element type) annotations ``node`` allows: its output's shape where onnx's
    inference cannot find it, and the reduced dimension of a matrix multiplied by a constant
    weight (the model could not run otherwise), which onnx never infers backwards."""
    found: list[tuple[str, list[Dim] | None, int]] = []
    if node.output and node.output[0] and node.input:
        dims = _hint_dims(model, node)
        if dims is not None:
            found.append((node.output[0], dims, model.elem_type(node.input[0]) or 0))
    if node.domain in ("", "ai.onnx") and node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
        a, b = node.input[0], node.input[1]
        shape, weight = model.shape(a), model.shape(b) if model.is_weight(b) else None
        if (shape and weight and len(weight) == 2 and not isinstance(shape[-1], int)
                and not model.is_graph_input(a)):
            trans_a = node.op_type == "Gemm" and _attr(node, "transA", 0)
            trans_b = node.op_type == "Gemm" and _attr(node, "transB", 0)
            if not trans_a and (node.op_type == "MatMul" or len(shape) == 2):
                found.append((a, [*shape[:-1], weight[1 if trans_b else 0]], model.elem_type(a) or 0))
    return found


def _hint_dims(model: Model, node: onnx.NodeProto) -> list[Dim] | None:
    """The output shape of ``node`` where onnx's own inference cannot find it (None: leave it)."""
    if node.domain == "com.microsoft":
        if node.op_type in ("MultiHeadAttention", "GroupQueryAttention"):  # no stand-in for these
            return _attention_output(model, node)
        return None
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if node.op_type == "Reshape":
        return _reshape_output(model, node)
    if node.op_type == "Slice":
        return _slice_output(model, node)
    if node.op_type == "Expand":
        return _expand_output(model, node)
    return None


def _attention_output(model: Model, node: onnx.NodeProto) -> list[Dim] | None:
    """Output 0 of ONNX Runtime's fused attention ops: ``[batch, sequence, value hidden size]``."""
    query = model.shape(node.input[0])
    if query is None or len(query) != 3:
        return None
    heads = _attr(node, "num_heads", 0)
    if node.op_type == "Attention":
        sizes = _attr(node, "qkv_hidden_sizes")
        weight = model.shape(node.input[1])
        if sizes:
            hidden = int(sizes[2])
        elif weight is not None and len(weight) == 2 and isinstance(weight[1], int):
            hidden = weight[1] // 3
        else:
            return None
    elif node.op_type == "MultiHeadAttention":
        value = model.shape(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if value is not None and len(value) == 3 and isinstance(value[2], int):
            hidden = value[2]
        elif value is not None and len(value) == 4 and isinstance(value[3], int):
            hidden = heads * value[3]  # [batch, heads, length, head size]
        else:
            return None
    else:  # GroupQueryAttention: packed QKV when key and value are absent
        kv_heads = _attr(node, "kv_num_heads", 0)
        packed = len(node.input) < 2 or not node.input[1]
        if not isinstance(query[2], int) or not heads:
            return None
        hidden = query[2] * heads // (heads + 2 * kv_heads) if packed else query[2]
    if not isinstance(hidden, int):
        return None
    return [query[0], query[1], hidden]


def _expand_output(model: Model, node: onnx.NodeProto) -> list[Dim] | None:
    """Output shape of an Expand whose target is a (symbolically) known shape vector."""
    src = model.shape(node.input[0])
    entries = model.shape_vector(node.input[1])
    if src is None or entries is None:
        return None
    target: list[Dim] = [e.value for e in entries]
    rank = max(len(src), len(target))
    a = [1] * (rank - len(src)) + list(src)
    b = [1] * (rank - len(target)) + target
    dims: list[Dim] = []
    for x, y in zip(a, b):
        if x == 1:
            dims.append(y)
        elif y == 1 or x == y:
            dims.append(x)
        elif isinstance(x, int) and isinstance(y, int):
            return None  # not broadcastable: leave it to the runtime to refuse
        elif isinstance(x, int) or isinstance(y, int):
            dims.append(x if isinstance(x, int) else y)
        else:
            # Two symbols: equal at run time or one is 1. Exporters compute Expand targets from
            # the shape they mean to produce, so the target's dimension names the output's.
            dims.append(y)
    if any(isinstance(d, int) and d < 0 for d in dims) or all(d is None for d in dims):
        return None
    return dims


def _times_one(model: Model, node: onnx.NodeProto, depth: int) -> list[ShapeEntry] | None:
    """``v * 1`` (or ``1 * v``) of shape vectors keeps ``v``'s entries (with where they came from)."""
    vectors = [_shape_vector(model, n, (node.name, k), depth + 1) for k, n in enumerate(node.input)]
    if any(v is None for v in vectors):
        return None
    a, b = vectors
    assert a is not None and b is not None
    if all(e.value == 1 for e in b) and len(b) in (1, len(a)):
        return a
    if all(e.value == 1 for e in a) and len(a) in (1, len(b)):
        return b
    return None


def _slice_output(model: Model, node: onnx.NodeProto) -> list[Dim] | None:
    """Output shape of a Slice (opset 10+) whose bounds are computed at run time from shapes
    (``x.chunk(2, dim=1)`` exported by TorchScript: ends = C // 2)."""
    src = model.shape(node.input[0])
    if src is None or len(node.input) < 3:
        return None
    vectors: list[list[int] | None] = []
    for k, name in enumerate(node.input[1:5], start=1):
        if not name:
            vectors.append(None)
            continue
        entries = model.shape_vector(name, (node.name, k))
        values = [e.value for e in entries] if entries is not None else None
        if values is None or not all(isinstance(v, int) for v in values):
            return None
        vectors.append([v for v in values if isinstance(v, int)])
    starts, ends = vectors[0], vectors[1]
    if starts is None or ends is None:
        return None
    axes = vectors[2] if len(vectors) > 2 and vectors[2] is not None else list(range(len(starts)))
    steps = vectors[3] if len(vectors) > 3 and vectors[3] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        return None
    dims = list(src)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = dims[axis % len(dims)]
        if not isinstance(size, int) or step == 0:
            return None
        dims[axis % len(dims)] = len(range(*slice(start, end, step).indices(size)))
    return dims


def _reshape_output(model: Model, node: onnx.NodeProto) -> list[Dim] | None:
    """Output shape of a Reshape whose target is a (symbolically) known shape vector."""
    src = model.shape(node.input[0])
    entries = model.shape_vector(node.input[1])
    if src is None or entries is None or None in src:
        return None
    dims: list[Dim] = []
    free = -1
    for k, (value, _, _) in enumerate(entries):
        if value is None:
            return None
        if value == 0 and not _attr(node, "allowzero", 0):
            if k >= len(src):
                return None
            value = src[k]
        if value == -1:
            free = k
        dims.append(value)
    if free >= 0:
        # what is left of the input's element count once the other output dims are divided out
        remaining_syms = [d for d in src if isinstance(d, str)]
        remaining = int(np.prod([d for d in src if isinstance(d, int)], dtype=np.int64))
        for k, d in enumerate(dims):
            if k == free:
                continue
            if isinstance(d, str):
                if d not in remaining_syms:
                    return None
                remaining_syms.remove(d)
            elif d is None or d <= 0 or remaining % d:
                return None
            else:
                remaining //= d
        if not remaining_syms:
            dims[free] = remaining
        elif len(remaining_syms) == 1 and remaining == 1:
            dims[free] = remaining_syms[0]
        else:
            # tokens flattened around a Gemm: [batch, 32, 256] -> [-1, 256] gives 'batch*32', a
            # product of symbols and a size (what exporters annotate, e.g. 'sequence*batch')
            dims[free] = "*".join(map(str, [*remaining_syms, *([remaining] if remaining != 1 else [])]))
    return dims


# -- normalisation on load ----------------------------------------------------------------------


def _validate(proto: onnx.ModelProto, label: str, path: Path | None, external: bool = False) -> None:
    if not proto.HasField("graph"):
        raise ModelLoadError(f"{label}: not a valid ONNX model (no graph)")
    try:
        if path is not None:  # the checker reads the file itself: no re-serialisation to size it
            onnx.checker.check_model(str(path))
        elif proto.ByteSize() < _PROTOBUF_LIMIT:
            onnx.checker.check_model(proto)
    except Exception as exc:
        # The checker's message spans lines (the offending node printed out): keep all of it, short.
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelLoadError(f"{label}: invalid ONNX model ({text[:400]}{'...' if len(text) > 400 else ''})") from None


def _convert_opset(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """``proto`` brought forward to :data:`MIN_OPSET` by onnx's version converter, checked again.

    The converter's own message does not name the op reliably; the op types of the model are
    looked up in it, and ops without any schema are named first.
    """
    from onnx import version_converter

    opset = _default_opset(proto)
    ops = sorted({n.op_type for g in _graphs(proto.graph) for n in g.node if n.domain in ("", "ai.onnx")})
    unknown = [op for op in ops if not onnx.defs.has(op)]
    try:
        if unknown:
            raise RuntimeError("no schema")
        converted = version_converter.convert_version(proto, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        text = " ".join(str(exc).split())
        named = unknown or sorted((op for op in ops if op in text), key=len, reverse=True)[:1]
        culprit = f"op {', '.join(named)}" if named else "an op"
        raise UnsupportedModelError(
            f"{label}: opset {opset} is older than {MIN_OPSET}, the oldest pyprune analyses, and "
            f"onnx.version_converter cannot bring {culprit} forward to opset {MIN_OPSET}"
            + ("" if named else f" ({text[:200]})")
        ) from None
    return converted


def _default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def _ours(data_name: str, model_name: str) -> bool:
    """A weights file pyprune writes for ``model_name`` (``<model>.data`` or ``<model>.<token>.data``)."""
    return data_name == f"{model_name}.data" or (data_name.startswith(f"{model_name}.") and data_name.endswith(".data"))


def _external_locations(path: Path) -> list[Path]:
    """The external-data files an ONNX file on disk reads (none if it is no readable model)."""
    if not path.is_file():
        return []
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not a model (or not one we can read): it reads nothing we know of
        return []
    return _referenced_files(proto, path.parent)


def _referenced_files(proto: onnx.ModelProto, base: Path) -> list[Path]:
    files: dict[str, Path] = {}
    for t in _all_initializers(proto.graph):
        if external_data_helper.uses_external_data(t):
            info = external_data_helper.ExternalDataInfo(t)
            files[info.location] = Path(os.path.abspath(base / info.location))
    return list(files.values())


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(
        external_data_helper.uses_external_data(t) for t in _all_initializers(proto.graph)
    )


def _normalise(proto: onnx.ModelProto, base: Path | None = None) -> None:
    graph = proto.graph
    # Initializers listed as graph inputs (IR < 4 style "overridable defaults") are weights in
    # every exporter that writes them; treating them as constants is what makes them prunable.
    if proto.ir_version >= 4:
        inits = {t.name for t in graph.initializer}
        keep = [v for v in graph.input if v.name not in inits]
        if len(keep) != len(graph.input):
            del graph.input[:]
            graph.input.extend(keep)
    _fold_constants(proto, base)
    drop_unused(graph, nodes=False)
    _name_nodes(graph)
    from ._nested import normalise_bodies  # (it builds on this module)

    normalise_bodies(proto)
    _unshare_small_weights(graph)
    _unshare_shape_vectors(graph)


# Exporters also compute one target shape (Concat of Shape entries and constants) and reshape
# several layers' tensors with it: every transformer block's FFN reads the same [batch, seq,
# 4*hidden]. A channel count held in it must follow each layer's own pruning, so each reader gets
# its own Concat (the constants it reads are made private on the first edit).
_SHAPE_READERS = frozenset({"Reshape", "Expand", "Tile", "ConstantOfShape"})


def _unshare_shape_vectors(graph: onnx.GraphProto) -> None:
    producers = {o: n for n in graph.node for o in n.output if o}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((node, i))
    outputs = {v.name for v in graph.output}
    used = {n.name for n in graph.node} | set(producers) | {t.name for t in graph.initializer}
    used |= {v.name for v in graph.input}
    clones: dict[str, list[onnx.NodeProto]] = {}
    for name, reads in readers.items():
        concat = producers.get(name)
        if (concat is None or concat.op_type != "Concat" or concat.domain not in ("", "ai.onnx")
                or len(reads) < 2 or name in outputs
                or not all(n.op_type in _SHAPE_READERS and i == 1 for n, i in reads)):
            continue
        for node, i in reads[1:]:
            value, k = f"{name}__{node.name}", 1
            while value in used:
                value, k = f"{name}__{node.name}_{k}", k + 1
            used.add(value)
            copy = onnx.NodeProto()
            copy.CopyFrom(concat)
            copy.name, k = f"{concat.name}__{node.name}", 1
            while copy.name in used:
                copy.name, k = f"{concat.name}__{node.name}_{k}", k + 1
            used.add(copy.name)
            del copy.output[:]
            copy.output.append(value)
            node.input[i] = value
            clones.setdefault(concat.name, []).append(copy)
    if clones:
        nodes = []
        for node in graph.node:
            nodes.append(node)
            nodes.extend(clones.get(node.name, ()))
        del graph.node[:]
        graph.node.extend(nodes)


# Exporters deduplicate equal constants (zero biases, unit scales): one initializer then reads
# as a weight shared by unrelated layers, which would tie their channels together. Float
# vectors (biases, scales) are given one copy per reading node instead; shared matrices and
# filters (tied weights) stay shared and are pruned consistently.
_UNSHARE_MAX_ELEMENTS = 65536


def _unshare_small_weights(graph: onnx.GraphProto) -> None:
    inits = {t.name: t for t in graph.initializer}
    # nodes inside If/Loop/Scan bodies too (their names are unique in the model, see _nested.py)
    nodes = [n for g in _graphs(graph) for n in g.node]
    used = {t.name for t in graph.initializer} | {o for n in nodes for o in n.output}
    used |= {v.name for g in _graphs(graph) for v in g.input}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in inits:
                readers.setdefault(name, []).append((node, i))
    outputs = {v.name for v in graph.output}
    for name, reads in readers.items():
        tensor = inits[name]
        nodes = list(dict.fromkeys(n.name for n, _ in reads))
        if len(nodes) < 2 or name in outputs or tensor.data_type not in _FLOAT_PARAMS:
            continue
        if len(tensor.dims) > 1 or int(np.prod(tensor.dims)) > _UNSHARE_MAX_ELEMENTS:
            continue
        for node, i in reads:
            if node.name == nodes[0]:
                continue
            copy_name, k = f"{name}__{node.name}", 1
            while copy_name in used:
                copy_name, k = f"{name}__{node.name}_{k}", k + 1
            used.add(copy_name)
            clone = graph.initializer.add()
            clone.CopyFrom(tensor)
            clone.name = copy_name
            node.input[i] = copy_name


def drop_unused(graph: onnx.GraphProto, *, nodes: bool = True) -> None:
    """Remove initializers (and, with ``nodes``, nodes) whose values nothing reads.

    Nodes are removed only when none of their outputs is read or is a graph output; reads by
    nested subgraphs count as reads.
    """
    outputs = {v.name for v in graph.output}
    changed = True
    while changed:
        changed = False
        read = set(outputs)
        for node in graph.node:
            read.update(n for n in node.input if n)
            read.update(_outer_scope_reads(node))
        if nodes:
            live = [n for n in graph.node if any(o in read for o in n.output if o)]
            if len(live) != len(graph.node):
                del graph.node[:]
                graph.node.extend(live)
                changed = True
                continue
        inits = [t for t in graph.initializer if t.name in read]
        if len(inits) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(inits)
        input_names = {t.name for t in graph.initializer}
        graph_inputs = [v for v in graph.input if v.name not in input_names or v.name in read]
        if len(graph_inputs) != len(graph.input):
            del graph.input[:]
            graph.input.extend(graph_inputs)


def _name_nodes(graph: onnx.GraphProto) -> None:
    used: set[str] = set()
    pending = []
    for node in graph.node:
        if node.name and node.name not in used:
            used.add(node.name)
        else:
            pending.append(node)
    counter: dict[str, int] = {}
    for node in pending:
        base = node.name or node.op_type
        while True:
            counter[base] = counter.get(base, 0) + 1
            name = f"{base}_{counter[base]}"
            if name not in used:
                break
        node.name = name
        used.add(name)


def _fold_constants(proto: onnx.ModelProto, base: Path | None = None) -> None:
    """Turn Constant nodes and constant-only chains of cheap ops into initializers."""
    graph = proto.graph
    outputs = {v.name for v in graph.output}
    inits = {t.name: t for t in graph.initializer}
    opset_imports = list(proto.opset_import)
    alias: dict[str, str] = {}  # Identity of a constant: read the constant itself
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        default_domain = node.domain in ("", "ai.onnx")
        if not default_domain or any(o in outputs for o in node.output) or not node.output:
            kept.append(node)
            continue
        if node.op_type == "Constant":
            values = _constant_value(node) or _evaluate(node, {}, opset_imports)
        elif node.op_type == "Identity" and node.input[0] in inits:
            alias[node.output[0]] = node.input[0]
            continue
        elif node.op_type in _FOLDABLE and node.input and all(
            (not n) or n in inits for n in node.input
        ):
            feeds = {n: numpy_helper.to_array(inits[n], str(base or "")) for n in node.input if n}
            values = _evaluate(node, feeds, opset_imports)
        else:
            values = None
        if values is None:
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            if name:
                tensor = numpy_helper.from_array(np.asarray(value), name)
                graph.initializer.append(tensor)
                inits[name] = graph.initializer[-1]
    if len(kept) != len(graph.node) or alias:
        del graph.node[:]
        graph.node.extend(kept)
    if alias:
        rename_reads(graph, alias)


def rename_reads(graph: onnx.GraphProto, alias: dict[str, str]) -> None:
    """Follow aliases in nested subgraphs too (they may read outer values by name)."""
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                local = _defined_in(sub)
                sub_alias = {k: v for k, v in alias.items() if k not in local}
                for inner in sub.node:
                    for i, name in enumerate(inner.input):
                        if name in sub_alias:
                            inner.input[i] = sub_alias[name]
                rename_reads(sub, sub_alias)


def _constant_value(node: onnx.NodeProto) -> list[np.ndarray] | None:
    """The value of a Constant node without running it (the common attribute forms)."""
    (a,) = node.attribute or [None]
    if a is None:
        return None
    if a.name == "value" and a.t.data_location != onnx.TensorProto.EXTERNAL:
        return [numpy_helper.to_array(a.t)]
    simple = {"value_float": np.float32, "value_floats": np.float32,
              "value_int": np.int64, "value_ints": np.int64}
    if a.name in simple:
        return [np.array(helper.get_attribute_value(a), dtype=simple[a.name])]
    return None


def _evaluate(
    node: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: list[onnx.OperatorSetIdProto]
) -> list[np.ndarray] | None:
    """Run one node with onnx's reference evaluator; None if it cannot be folded."""
    from onnx.reference import ReferenceEvaluator

    inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)
        for name, arr in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=opsets)
    try:
        values = ReferenceEvaluator(model).run(None, feeds)
    except Exception:
        return None
    arrays = [v for v in values if isinstance(v, np.ndarray)]
    if len(arrays) != len(values):
        return None
    budget = sum(a.size for a in feeds.values()) + 1024
    if sum(v.size for v in arrays) > budget:
        return None
    return [np.asarray(v) for v in arrays]


# -- helpers ------------------------------------------------------------------------------------


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every graph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _all_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_initializers(attr.g)
            for sub in attr.graphs:
                yield from _all_initializers(sub)


def _defined_in(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
    return names


def _outer_scope_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's nested subgraphs read from the enclosing scope."""
    reads: set[str] = set()
    for attr in node.attribute:
        subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for sub in subgraphs:
            local = _defined_in(sub)
            for inner in sub.node:
                reads.update(n for n in inner.input if n and n not in local)
                reads.update(r for r in _outer_scope_reads(inner) if r not in local)
            reads.update(v.name for v in sub.output if v.name not in local)
    return reads


def _rank(t: onnx.TypeProto) -> int | None:
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    return len(t.tensor_type.shape.dim)


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param
    return None


def _skeleton(proto: onnx.ModelProto, keep_elements: int = _SKELETON_MAX_ELEMENTS):
    """A copy without the data of large initializers (dims kept), cheap to run inference on."""
    sk = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(sk, field, getattr(proto, field))
    sk.opset_import.extend(proto.opset_import)
    sk.functions.extend(proto.functions)
    g, src = sk.graph, proto.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    # A value that is a weight (an exporter's constant, or one folded on load) is typed by the
    # weight: a declared type without a shape (paddle2onnx declares every value so) would hide the
    # weight's dims from inference, and with them the shapes of everything it feeds.
    weights = {t.name for t in src.initializer}
    g.value_info.extend(v for v in src.value_info if v.name not in weights)
    g.sparse_initializer.extend(src.sparse_initializer)
    for t in src.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= keep_elements:
            g.initializer.append(t)
        else:
            stub = g.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
    return sk


# -- external data ------------------------------------------------------------------------------

#: Element types whose external data numpy can map as it is stored.
_MAPPABLE = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
     onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
     onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}
)  # fmt: skip

#: Name of the placeholder data file :meth:`Model.light_proto` refers large initializers to.
_PLACEHOLDER = "pyprune-weights.placeholder"


def _check_external(proto: onnx.ModelProto, base: Path) -> None:
    """Every external-data reference points into an existing file (checked on load, before any
    mapping), and tensors outside the main graph's initializers (subgraphs, attributes) are read
    in: only main-graph initializers are mapped."""
    main = len(proto.graph.initializer)  # _all_initializers yields the main graph's first
    for i, t in enumerate(_all_initializers(proto.graph)):
        if not external_data_helper.uses_external_data(t):
            continue
        info = external_data_helper.ExternalDataInfo(t)
        file = base / info.location
        if not file.is_file():
            raise FileNotFoundError(f"{info.location} (for tensor {t.name!r}) does not exist")
        length = info.length if info.length is not None else _data_bytes(t)
        if (info.offset or 0) + length > file.stat().st_size:
            raise ValueError(f"{info.location} is shorter than tensor {t.name!r} needs")
        if i >= main or t.data_type not in _MAPPABLE:
            external_data_helper.load_external_data_for_tensor(t, str(base))
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]


def _map_external(tensor: onnx.TensorProto, base: Path | None) -> np.ndarray:
    """A read-only memory map of a tensor's external data."""
    if base is None:
        raise ValueError(f"tensor {tensor.name!r} keeps its data in an external file, and the model has no "
                         "folder to find it in; load the model from its file path")
    info = external_data_helper.ExternalDataInfo(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    shape = tuple(int(d) for d in tensor.dims)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(base / info.location, dtype=dtype.newbyteorder("<"), mode="r", offset=info.offset or 0,
                     shape=shape)


def _release(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array (no-op for other arrays)."""
    while array is not None and not isinstance(array, np.memmap) and isinstance(array.base, np.ndarray):
        array = array.base
    mapped = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    if mapped is not None:
        try:
            mapped.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):  # not supported here: keep the pages
            pass


def _data_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's data wherever it lives (raw, typed fields or an external file)."""
    if external_data_helper.uses_external_data(tensor):
        info = external_data_helper.ExternalDataInfo(tensor)
        if info.length is not None:
            return int(info.length)
    elif tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    n = int(np.prod(tensor.dims, dtype=np.int64))
    try:
        return n * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        return n


def _copy_without(message, skip: set[str]):
    """A copy of a protobuf message without the fields named in ``skip`` (never copied at all)."""
    out = type(message)()
    for fd, value in message.ListFields():
        if fd.name in skip:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        if repeated:
            getattr(out, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


def _set_external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _append_external(f: Any, offset: int, stub: onnx.TensorProto, array: np.ndarray, location: str) -> int:
    """Write ``array``'s bytes at the next aligned position of the open data file ``f`` (now at
    ``offset``), in chunks, point ``stub`` at them in ``location`` and release the array; returns
    the file's new end."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    offset += (pad := (-offset) % _EXTERNAL_ALIGN)
    f.write(b"\0" * pad)
    for start in range(0, flat.size, _COPY_CHUNK):
        f.write(flat[start:start + _COPY_CHUNK].tobytes())
    _set_external(stub, location, offset, int(flat.size))
    _release(array)
    return offset + int(flat.size)


class _Scratch:
    """A private file that large weights replaced or added in a model with external data are
    written to, one after the other, and mapped back from (in the temporary folder: ``TMPDIR``).

    Kept in memory (in the protobuf or as arrays), a pruned copy would cost its own size, and
    recovery's fold, which writes a corrected value of every weight it touches before the cut, up
    to the original's size on top. Written here, a weight takes memory only while it is read
    (mapped pages are dropped after each pass, see :func:`_release`), and sessions and saves map
    or stream it like any external data. Tensors refer to the file by its
    absolute path; it lives in a temporary folder named after the process (so one a killed process
    left behind is removed by the next run, see :func:`~pyprune._files.clean_stale_temporaries`)
    and is deleted when no model holds it any more, or at exit.
    """

    def __init__(self) -> None:
        folder = temporary_folder(tempfile.gettempdir())
        self.path = folder / "weights.data"
        self.path.touch()
        self.location = str(self.path)
        self.end = 0
        weakref.finalize(self, shutil.rmtree, str(folder), True)

    def append(self, tensor: onnx.TensorProto, value: np.ndarray) -> None:
        """Write ``value`` at the end of the file and refer ``tensor`` to it."""
        with open(self.path, "ab") as f:
            self.end = _append_external(f, self.end, tensor, value, self.location)


def _write_external(model: Model, data_path: Path, data_name: str) -> onnx.ModelProto:
    """Write ``model``'s large main-graph initializers into ``data_path`` (page-aligned) and return
    a copy of the model referring to them as ``data_name``; small ones stay inline."""
    light, sources = model.light_proto()
    offset = 0
    with open(data_path, "wb") as f:
        for stub in light.graph.initializer:
            if stub.name not in sources:
                continue
            offset = _append_external(f, offset, stub, model._array_of(sources[stub.name]), data_name)
    return light
