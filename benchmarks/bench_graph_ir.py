"""Graph representation: pyprune's protobuf view against onnx-ir, side by side.

pyprune keeps a loaded model as a plain ``onnx.ModelProto`` with an index over it
(``pyprune.graph.Model``). onnx-ir (PyPI ``onnx-ir``) is the ONNX project's in-memory IR: values
that know their producer and uses, tensors that may stay memory-mapped, graph passes. This script
measures both ways, in one run, on two generated models:

* **convnet**: a stack of 3x3 Conv + Relu (512 channels), global pooling, a Reshape whose target
  is a shape constant, and a Gemm classifier: ~24M float32 parameters, ~98 MB. Measured as one
  file and again with its weights in an external data file (the >2 GB layout).
* **transformer**: 24 pre-LayerNorm blocks of MatMul/Add/Softmax/Reshape/Transpose with the
  run-time reshape targets exporters write (Shape -> Gather -> Unsqueeze -> Concat, the head
  sizes as Constant nodes) and an Erf GELU: ~2,000 nodes (1,969), 4.8M parameters.

Operations, each on both sides:

* parse: ``onnx.load`` against ``onnx_ir.load``;
* load: ``pyprune.graph.load`` (onnx.checker, Constant folding, unused removal, node naming,
  producer/consumer index, onnx shape inference with data propagation) against the same work
  with onnx-ir (``onnx.load`` without external data, the same checker, ``serde.deserialize_model``,
  the passes LiftConstantsToInitializers, RemoveUnusedNodes, NameFix and ShapeInference, and a
  name -> value / node index; producers and consumers are kept by the IR itself);
* prune: cut half of the output channels of every weighted layer (the producer's weight rows and
  bias, the consumer's input columns, through pyprune's C++ gather on both sides), write each
  shape constant that counts those channels into a fresh initializer, drop what is unused;
* producer and consumers of every value of the loaded model, looked up by name;
* re-index and shape inference after the edit (``Model.refresh`` against onnx-ir's
  ShapeInferencePass, which runs the same onnx inference on a copy without large tensors);
* serialize the pruned model to bytes, as pyprune does for every ONNX Runtime session;
* save the pruned model: one file, and with external data (``Model.save`` against
  ``onnx_ir.save``); for the convnet also the unpruned 98 MB file;
* RSS after load and peak RSS (the kernel's VmHWM, reset after a warm-up on tiny models) of a
  fresh process running load -> prune -> shape inference -> save, per side and model.

Timings are the best of 3 for the convnet and the median of 5 for the transformer; the two sides
alternate within each repetition. The ratio column is onnx-ir / protobuf (below 1: onnx-ir is
faster). The pruned models of both sides are then checked against each other and against the
original with the same channels zeroed (ONNX Runtime, removal equals masking), and onnx-ir's
round trip is checked on a model with If/Loop subgraphs, a com.microsoft op, metadata, doc strings
and external data.

    python benchmarks/bench_graph_ir.py                  # the sizes above
    python benchmarks/bench_graph_ir.py --quick          # small models, under a minute
    python benchmarks/bench_graph_ir.py --json out.json  # also write every figure as JSON
    python benchmarks/bench_graph_ir.py --repeats 7      # more repetitions on a busy machine

Needs ``pip install onnx-ir`` next to pyprune.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:
    import onnx_ir as ir
    from onnx_ir.passes import common as ir_passes
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("bench_graph_ir.py needs onnx-ir: pip install onnx-ir")

import pyprune.graph
from pyprune import core
from pyprune.graph import drop_unused

OPSET = 17
EXT_THRESHOLD = 1024  # bytes: tensors above this go to the external data file, on both sides

# -- generated models -------------------------------------------------------------------------


@dataclass
class Plan:
    """One pruning edit, expressed in names that both loaders keep.

    ``weights``: initializer -> {axis: kept indices}. ``consts``: (node name, input index, new
    value) for shape constants. ``masks``: (initializer, axis, kept) of the producing slices, to
    build the masked reference.
    """

    weights: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    consts: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    masks: list[tuple[str, int, np.ndarray]] = field(default_factory=list)


@dataclass
class Generated:
    key: str
    label: str
    proto: onnx.ModelProto
    plan: Plan
    feeds: dict[str, np.ndarray]
    big: bool  # best of 3 (else median of 5); external-data variant and unpruned save


def _half(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.sort(rng.choice(n, n // 2, replace=False)).astype(np.int64)


def make_convnet(channels: int, layers: int, spatial: int, in_ch: int = 64, classes: int = 1000):
    rng = np.random.default_rng(0)
    nodes, inits, plan = [], [], Plan()
    x, cin, prev = "x", in_ch, None
    for i in range(layers):
        w, b = f"conv{i}.weight", f"conv{i}.bias"
        scale = np.float32(np.sqrt(2.0 / (cin * 9)))
        inits.append(numpy_helper.from_array(
            rng.standard_normal((channels, cin, 3, 3), dtype=np.float32) * scale, w))
        inits.append(numpy_helper.from_array(
            rng.standard_normal(channels, dtype=np.float32) * np.float32(0.01), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}.out"], name=f"conv{i}",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}.out"], [f"relu{i}.out"], name=f"relu{i}"))
        keep = _half(rng, channels)
        plan.weights[w] = {0: keep} if prev is None else {0: keep, 1: prev}
        plan.weights[b] = {0: keep}
        plan.masks += [(w, 0, keep), (b, 0, keep)]
        x, cin, prev = f"relu{i}.out", channels, keep
    inits.append(numpy_helper.from_array(np.array([-1, channels], np.int64), "head.shape"))
    inits.append(numpy_helper.from_array(
        rng.standard_normal((classes, channels), dtype=np.float32) * np.float32(0.05), "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc.bias"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool.out"], name="pool"),
        helper.make_node("Reshape", ["pool.out", "head.shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc",
                         transB=1),
    ]
    plan.weights["fc.weight"] = {1: prev}
    plan.consts.append(("flatten", 1, np.array([-1, channels // 2], np.int64)))
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_ch, spatial, spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bench_graph_ir")
    feeds = {"x": np.random.default_rng(1).standard_normal(
        (2, in_ch, spatial, spatial), dtype=np.float32)}
    return proto, plan, feeds


def make_transformer(blocks: int, d: int = 128, heads: int = 4, ffn: int = 512):
    rng = np.random.default_rng(0)
    dh = d // heads
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    plan = Plan()

    def weight(name: str, shape: tuple[int, ...], scale: float) -> str:
        inits.append(numpy_helper.from_array(
            rng.standard_normal(shape, dtype=np.float32) * np.float32(scale), name))
        return name

    def const(name: str, value: np.ndarray) -> str:
        nodes.append(helper.make_node("Constant", [], [name], name=f"{name}.const",
                                      value=numpy_helper.from_array(value, name)))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out.removesuffix(".out"), **attrs))
        return out

    def reshape(p: str, data: str, like: str, tail: np.ndarray) -> str:
        """Reshape ``data`` to [batch, seq, *tail] the way exporters compute the target."""
        shape = node("Shape", [like], f"{p}.shape.out")
        pieces = []
        for axis in (0, 1):
            idx = const(f"{p}.idx{axis}", np.array(axis, np.int64))
            g = node("Gather", [shape, idx], f"{p}.gather{axis}.out", axis=0)
            ax = const(f"{p}.axes{axis}", np.array([0], np.int64))
            pieces.append(node("Unsqueeze", [g, ax], f"{p}.unsqueeze{axis}.out"))
        pieces.append(const(f"{p}.tail", tail))
        target = node("Concat", pieces, f"{p}.concat.out", axis=0)
        return node("Reshape", [data, target], f"{p}.reshape.out")

    x = "x"
    for i in range(blocks):
        b = f"b{i}"
        ln1 = node("LayerNormalization",
                   [x, weight(f"{b}.ln1.scale", (d,), 0.1), weight(f"{b}.ln1.bias", (d,), 0.1)],
                   f"{b}.ln1.out", axis=-1, epsilon=1e-5)
        keep_j = _half(rng, dh)
        cols = np.concatenate([h * dh + keep_j for h in range(heads)])
        heads_out = {}
        for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            w = weight(f"{b}.{t}.weight", (d, d), d**-0.5)
            bias = weight(f"{b}.{t}.bias", (d,), 0.02)
            mm = node("MatMul", [ln1, w], f"{b}.{t}.matmul.out")
            ab = node("Add", [mm, bias], f"{b}.{t}.add.out")
            r = reshape(f"{b}.{t}", ab, ln1, np.array([heads, dh], np.int64))
            heads_out[t] = node("Transpose", [r], f"{b}.{t}.transpose.out", perm=perm)
            plan.weights[w] = {1: cols}
            plan.weights[bias] = {0: cols}
            plan.masks += [(w, 1, cols), (bias, 0, cols)]
            plan.consts.append((f"{b}.{t}.concat", 2, np.array([heads, dh // 2], np.int64)))
        scores = node("MatMul", [heads_out["q"], heads_out["k"]], f"{b}.scores.out")
        scale = const(f"{b}.scale", np.array(dh**-0.5, np.float32))
        scaled = node("Mul", [scores, scale], f"{b}.scaled.out")
        masked = node("Add", [scaled, "mask"], f"{b}.masked.out")
        probs = node("Softmax", [masked], f"{b}.softmax.out", axis=-1)
        ctx = node("MatMul", [probs, heads_out["v"]], f"{b}.context.out")
        ctx_t = node("Transpose", [ctx], f"{b}.context_t.out", perm=[0, 2, 1, 3])
        merged = reshape(f"{b}.o", ctx_t, ln1, np.array([d], np.int64))
        wo = weight(f"{b}.o.weight", (d, d), d**-0.5)
        o = node("Add", [node("MatMul", [merged, wo], f"{b}.o.matmul.out"),
                         weight(f"{b}.o.bias", (d,), 0.02)], f"{b}.o.add.out")
        plan.weights[wo] = {0: cols}
        plan.consts.append((f"{b}.o.concat", 2, np.array([d // 2], np.int64)))
        x1 = node("Add", [x, o], f"{b}.residual1.out")
        ln2 = node("LayerNormalization",
                   [x1, weight(f"{b}.ln2.scale", (d,), 0.1), weight(f"{b}.ln2.bias", (d,), 0.1)],
                   f"{b}.ln2.out", axis=-1, epsilon=1e-5)
        w1, b1 = weight(f"{b}.fc1.weight", (d, ffn), d**-0.5), weight(f"{b}.fc1.bias", (ffn,), 0.02)
        h1 = node("Add", [node("MatMul", [ln2, w1], f"{b}.fc1.matmul.out"), b1], f"{b}.fc1.add.out")
        # GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt(2)))
        e = node("Erf", [node("Div", [h1, const(f"{b}.sqrt2", np.array(2**0.5, np.float32))],
                              f"{b}.gelu.div.out")], f"{b}.gelu.erf.out")
        e1 = node("Add", [e, const(f"{b}.one", np.array(1.0, np.float32))], f"{b}.gelu.add.out")
        g = node("Mul", [node("Mul", [h1, e1], f"{b}.gelu.mul.out"),
                         const(f"{b}.half", np.array(0.5, np.float32))], f"{b}.gelu.out")
        w2 = weight(f"{b}.fc2.weight", (ffn, d), ffn**-0.5)
        h2 = node("Add", [node("MatMul", [g, w2], f"{b}.fc2.matmul.out"),
                          weight(f"{b}.fc2.bias", (d,), 0.02)], f"{b}.fc2.add.out")
        kf = _half(rng, ffn)
        plan.weights[w1] = {1: kf}
        plan.weights[b1] = {0: kf}
        plan.weights[w2] = {0: kf}
        plan.masks += [(w1, 1, kf), (b1, 0, kf)]
        x = node("Add", [x1, h2], f"{b}.residual2.out")
    nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, "transformer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 1, 1, "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bench_graph_ir")
    r = np.random.default_rng(1)
    feeds = {"x": r.standard_normal((2, 16, d), dtype=np.float32),
             "mask": np.zeros((2, 1, 1, 16), np.float32)}
    return proto, plan, feeds


def generate(quick: bool) -> list[Generated]:
    if quick:
        conv = make_convnet(channels=128, layers=4, spatial=8)
        xf = make_transformer(blocks=4)
    else:
        conv = make_convnet(channels=512, layers=11, spatial=8)
        xf = make_transformer(blocks=24)
    return [Generated("convnet", "convnet", *conv, big=True),
            Generated("transformer", "transformer", *xf, big=False)]


def _params(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer)


def _file_mb(path: Path) -> float:
    size = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.exists():
        size += data.stat().st_size
    return size / 1e6


# -- the two sides ----------------------------------------------------------------------------


class ProtobufSide:
    """pyprune's view: onnx.ModelProto + index (pyprune.graph.Model), numpy_helper tensors."""

    name = "protobuf"

    @staticmethod
    def parse(path: Path):
        return onnx.load(str(path))

    @staticmethod
    def load(path: Path) -> pyprune.graph.Model:
        return pyprune.graph.load(path)

    @staticmethod
    def edit(model: pyprune.graph.Model, plan: Plan) -> None:
        for name, axes in plan.weights.items():
            model.set_weight(name, core.gather(model.weight(name), axes))
        for node_name, index, value in plan.consts:  # as surgery's _set_const does
            node = model.node(node_name)
            node.input[index] = model.add_weight(model.unique_name(f"{node_name}_in{index}"), value)
        graph = model.proto.graph
        del graph.value_info[:]  # stale shapes, inferred again by refresh()
        drop_unused(graph)

    @staticmethod
    def names(model: pyprune.graph.Model) -> list[str]:
        outs = [o for n in model.nodes for o in n.output if o]
        return list(dict.fromkeys(model.input_names + model.weight_names + outs))

    @staticmethod
    def queries(model: pyprune.graph.Model, names: list[str]) -> int:
        count = 0
        for name in names:
            if model.producer(name) is not None:
                count += 1
            count += len(model.consumers(name))
        return count

    @staticmethod
    def infer(model: pyprune.graph.Model) -> None:
        model.refresh()

    @staticmethod
    def save(model: pyprune.graph.Model, path: Path, external: bool) -> None:
        model.save(path, external_data=external)

    @staticmethod
    def to_bytes(model: pyprune.graph.Model) -> bytes:  # what pyprune hands ONNX Runtime
        return model.proto.SerializeToString()

    @staticmethod
    def shapes(model: pyprune.graph.Model) -> dict[str, list | None]:
        outs = [o for n in model.nodes for o in n.output if o]
        return {name: model.shape(name) for name in outs}


class IRView:
    """An onnx-ir model with the name -> value / node index pyprune's API is written against."""

    __slots__ = ("model", "nodes", "values")

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.values = ir.convenience.create_value_mapping(model.graph)
        self.nodes = {n.name: n for n in model.graph}


class _Clock:
    """Adds the time since the previous call to ``steps[label]`` (does nothing without steps)."""

    def __init__(self, steps: dict[str, float] | None) -> None:
        self.steps = steps
        self.t = time.perf_counter()

    def __call__(self, label: str) -> None:
        if self.steps is not None:
            now = time.perf_counter()
            self.steps[label] = self.steps.get(label, 0.0) + now - self.t
            self.t = now


class IRSide:
    name = "onnx-ir"

    @staticmethod
    def parse(path: Path):
        return ir.load(path)

    @staticmethod
    def load(path: Path, steps: dict[str, float] | None = None) -> IRView:
        """``steps``, when given, receives the seconds each step took."""
        clock = _Clock(steps)
        proto = onnx.load(str(path), load_external_data=False)
        clock("onnx.load")
        external = any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer)
        onnx.checker.check_model(str(path) if external else proto)
        clock("checker")
        model = ir.serde.deserialize_model(proto)
        del proto
        ir.external_data.set_base_dir(model.graph, str(path.parent))
        clock("deserialize")
        for label, p in (
            ("lift constants",
             ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)),
            ("remove unused", ir_passes.RemoveUnusedNodesPass()),
            ("name fix", ir_passes.NameFixPass()),
            ("shape inference",
             ir_passes.ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)),
        ):
            p(model)
            clock(label)
        view = IRView(model)
        clock("name index")
        return view

    @staticmethod
    def edit(view: IRView, plan: Plan) -> None:
        graph = view.model.graph
        inits = graph.initializers
        for name, axes in plan.weights.items():
            value = inits[name]
            new = core.gather(value.const_value.numpy(), axes)
            value.const_value = ir.Tensor(new, name=name)
            value.shape = ir.Shape(new.shape)
        for node_name, index, array in plan.consts:
            name, k = f"{node_name}_in{index}", 1
            while name in view.values:
                name, k = f"{node_name}_in{index}_{k}", k + 1
            value = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                             shape=ir.Shape(array.shape), const_value=ir.Tensor(array, name=name))
            graph.register_initializer(value)
            view.values[name] = value
            view.nodes[node_name].replace_input_with(index, value)
        ir_passes.RemoveUnusedNodesPass()(view.model)
        for node in graph:  # stale shapes, inferred again by infer()
            for out in node.outputs:
                if not out.is_graph_output():
                    out.shape = None

    @staticmethod
    def names(view: IRView) -> list[str]:
        return list(view.values)

    @staticmethod
    def queries(view: IRView, names: list[str]) -> int:
        count = 0
        values = view.values
        for name in names:
            value = values[name]
            if value.producer() is not None:
                count += 1
            count += len(value.uses())
        return count

    @staticmethod
    def infer(view: IRView) -> None:
        ir_passes.ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)(
            view.model)

    @staticmethod
    def save(view: IRView, path: Path, external: bool) -> None:
        if external:
            ir.save(view.model, path, external_data=path.name + ".data",
                    size_threshold_bytes=EXT_THRESHOLD)
        else:
            ir.save(view.model, path)

    @staticmethod
    def to_bytes(view: IRView) -> bytes:
        return ir.to_proto(view.model).SerializeToString()

    @staticmethod
    def shapes(view: IRView) -> dict[str, list | None]:
        out = {}
        for node in view.model.graph:
            for v in node.outputs:
                if v.name:
                    out[v.name] = None if v.shape is None else [
                        d if isinstance(d, int) else d.value for d in v.shape]
        return out


SIDES = (ProtobufSide, IRSide)

# -- timing -----------------------------------------------------------------------------------


def _measure(setups: list[Callable], runs: list[Callable], reps: int, best: bool) -> list[float]:
    """Time each side's ``run(setup())``; the sides alternate within every repetition."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(reps):
        for k, (setup, run) in enumerate(zip(setups, runs)):
            state = setup()
            gc.collect()
            t0 = time.perf_counter()
            run(state)
            times[k].append(time.perf_counter() - t0)
            del state
    return [min(t) if best else statistics.median(t) for t in times]


def _once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_model(gen: Generated, path: Path, out_dir: Path, external: bool,
               repeats: int | None = None) -> list[dict]:
    reps, best = (3, True) if gen.big else (5, False)
    reps = repeats or reps
    plan = gen.plan
    rows: list[dict] = []

    def row(label: str, setup_for, run_for) -> None:
        ms = _measure([lambda s=s: setup_for(s) for s in SIDES],
                      [lambda st, s=s: run_for(s, st) for s in SIDES], reps, best)
        rows.append({"op": label, "protobuf_ms": ms[0] * 1e3, "onnx_ir_ms": ms[1] * 1e3,
                     "ratio": ms[1] / ms[0]})
        print(f"  {label:<52} {ms[0] * 1e3:10.1f} {ms[1] * 1e3:10.1f} {ms[1] / ms[0]:7.2f}",
              flush=True)

    def loaded(side):
        return side.load(path)

    def pruned(side):
        m = side.load(path)
        side.edit(m, plan)
        return m

    def shipped(side):
        m = pruned(side)
        side.infer(m)
        return m

    def save_to(side, model, ext: bool) -> None:
        target = out_dir / f"{side.name}-{gen.key}{'-ext' if ext else ''}.onnx"
        side.save(model, target, ext)

    row("parse file", lambda s: None, lambda s, _: s.parse(path))
    if not external:
        proto = onnx.load(str(path))
        on_proto = min(_once(lambda: onnx.checker.check_model(proto)) for _ in range(reps))
        on_path = min(_once(lambda: onnx.checker.check_model(str(path))) for _ in range(reps))
        size = min(_once(proto.ByteSize) for _ in range(reps))
        del proto
        rows.append({"op": "onnx.checker (both loads run it on the proto)",
                     "proto_ms": on_proto * 1e3, "path_ms": on_path * 1e3,
                     "bytesize_ms": size * 1e3})
        print(f"    onnx.checker alone (part of both loads): {on_proto * 1e3:.1f} ms on the loaded "
              f"proto, {on_path * 1e3:.1f} ms given the file path; proto.ByteSize() (pyprune's "
              f"load calls it) {size * 1e3:.1f} ms")
    row("load: validate, normalise, index, shapes", lambda s: None, lambda s, _: s.load(path))
    runs = []
    for _ in range(reps):
        steps: dict[str, float] = {}
        IRSide.load(path, steps)
        runs.append(steps)
    breakdown = {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}
    rows.append({"op": "onnx-ir load steps (median)", "steps_ms": breakdown})
    print("    onnx-ir load steps, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in breakdown.items()))
    row("prune: slice weights, rewrite shape consts", loaded, lambda s, m: s.edit(m, plan))
    if not external:
        names = ProtobufSide.names(ProtobufSide.load(path))
        row(f"producer + consumers of all {len(names)} values", loaded,
            lambda s, m: s.queries(m, names))
        row("re-index + shape inference after pruning", pruned, lambda s, m: s.infer(m))
        row("serialize pruned model to bytes (ORT session)", shipped, lambda s, m: s.to_bytes(m))
        if gen.big:
            row(f"save unpruned, one file ({_file_mb(path):.0f} MB)", loaded,
                lambda s, m: save_to(s, m, False))
        row("save pruned, one file", shipped, lambda s, m: save_to(s, m, False))
    if gen.big:
        row("save pruned, external data", shipped, lambda s, m: save_to(s, m, True))
    return rows


# -- peak memory, one fresh process per side ---------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_child(side_name: str, model_path: str, plan_path: str, out_dir: str, ext: bool) -> None:
    """One pipeline in a fresh process: RSS after load, peak RSS over load -> prune -> save."""
    side = {s.name: s for s in SIDES}[side_name]
    plan = pickle.loads(Path(plan_path).read_bytes())
    out = Path(out_dir)
    # warm up on tiny models first, so that lazy imports and first-call caches of either side
    # do not count as the pipeline's memory
    for proto, tiny_plan, _ in (make_convnet(16, 2, 4), make_transformer(1, 16, 2, 32)):
        warm = out / "warm.onnx"
        onnx.save_model(proto, str(warm))
        for warm_ext in (False, True):
            m = side.load(warm)
            side.edit(m, tiny_plan)
            side.infer(m)
            side.save(m, out / f"warm-{int(warm_ext)}.onnx", warm_ext)
            del m
    gc.collect()
    _reset_peak()
    base = _status_mb("VmRSS")
    m = side.load(Path(model_path))
    gc.collect()
    after_load, peak_load = _status_mb("VmRSS"), _status_mb("VmHWM")
    side.edit(m, plan)
    side.infer(m)
    side.save(m, out / f"rss-{side_name}.onnx", ext)
    print(json.dumps({"after_load_mb": after_load - base, "peak_load_mb": peak_load - base,
                      "peak_total_mb": _status_mb("VmHWM") - base}))


def measure_rss(path: Path, plan: Plan, work: Path, ext: bool) -> dict[str, dict]:
    plan_path = work / "plan.pkl"
    plan_path.write_bytes(pickle.dumps(plan))
    out = {}
    for side in SIDES:
        out_dir = Path(tempfile.mkdtemp(dir=work))
        proc = subprocess.run(
            [sys.executable, __file__, "--rss-child", side.name, str(path), str(plan_path),
             str(out_dir), "1" if ext else "0"],
            capture_output=True, text=True, check=True)
        out[side.name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def import_cost() -> dict[str, float]:
    """Extra start-up time of importing onnx-ir (and its passes) after onnx, fresh processes."""
    code = ("import time, sys; t0 = time.perf_counter(); import onnx; t1 = time.perf_counter(); "
            "import onnx_ir, onnx_ir.passes.common; t2 = time.perf_counter(); "
            "print(t1 - t0, t2 - t1, 'sympy' in sys.modules)")
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        runs.append((float(out[0]), float(out[1]), out[2] == "True"))
    return {"onnx_ms": min(r[0] for r in runs) * 1e3, "onnx_ir_ms": min(r[1] for r in runs) * 1e3,
            "sympy_imported": runs[0][2]}


# -- checks -----------------------------------------------------------------------------------


def _run(path_or_proto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    src = str(path_or_proto) if isinstance(path_or_proto, Path) else \
        path_or_proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def check_equivalence(gen: Generated, path: Path, work: Path) -> dict:
    """Both pruned models load in ORT, agree with each other and with the masked original."""
    masked = onnx.ModelProto()
    masked.CopyFrom(gen.proto)
    inits = {t.name: t for t in masked.graph.initializer}
    for name, axis, kept in gen.plan.masks:
        a = numpy_helper.to_array(inits[name]).copy()
        drop = np.setdiff1d(np.arange(a.shape[axis]), kept)
        index = [slice(None)] * a.ndim
        index[axis] = drop
        a[tuple(index)] = 0
        inits[name].CopyFrom(numpy_helper.from_array(a, name))
    reference = _run(masked, gen.feeds)
    outputs, params, shapes = {}, {}, {}
    for side in SIDES:
        m = side.load(path)
        side.edit(m, gen.plan)
        side.infer(m)
        target = work / f"check-{side.name}-{gen.key}.onnx"
        side.save(m, target, False)
        onnx.checker.check_model(str(target), full_check=True)
        outputs[side.name] = _run(target, gen.feeds)
        params[side.name] = _params(onnx.load(str(target)))
        shapes[side.name] = side.shapes(m)
    pb, irr = outputs["protobuf"], outputs["onnx-ir"]
    a, b = shapes["protobuf"], shapes["onnx-ir"]
    common = set(a) & set(b)
    return {
        "pruned_params": params,
        "max_abs_diff_sides": float(np.max(np.abs(pb - irr))),
        "max_abs_diff_vs_masked": float(max(np.max(np.abs(o - reference))
                                            for o in outputs.values())),
        "output_scale": float(np.max(np.abs(reference))),
        "shapes_compared": len(common),
        "shapes_equal": sum(a[k] == b[k] for k in common),
        "shapes_known_protobuf": sum(a[k] is not None for k in common),
        "shapes_known_onnx_ir": sum(b[k] is not None for k in common),
        "shapes_differing": {k: [a[k], b[k]] for k in sorted(common) if a[k] != b[k]},
    }


def _canonical(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Order-insensitive form: attributes sorted, value_info of initializers dropped."""
    p = onnx.ModelProto.FromString(proto.SerializeToString())

    def fix(g: onnx.GraphProto) -> None:
        for n in g.node:
            attrs = sorted(n.attribute, key=lambda a: a.name)
            del n.attribute[:]
            n.attribute.extend(attrs)
            for a in n.attribute:
                if a.HasField("g"):
                    fix(a.g)
                for s in a.graphs:
                    fix(s)
        inits = {t.name for t in g.initializer}
        vi = sorted((v for v in g.value_info if v.name not in inits), key=lambda v: v.name)
        del g.value_info[:]
        g.value_info.extend(vi)

    fix(p.graph)
    ops = sorted(p.opset_import, key=lambda o: o.domain)
    del p.opset_import[:]
    p.opset_import.extend(ops)
    return p


def feature_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """If and Loop bodies reading outer values, a com.microsoft op, metadata and doc strings."""
    f = TensorProto.FLOAT
    then = helper.make_graph([helper.make_node("Add", ["x", "w"], ["t"], name="then_add")],
                             "then", [], [helper.make_tensor_value_info("t", f, [2, 3])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "w"], ["e"], name="else_sub")],
                              "else", [], [helper.make_tensor_value_info("e", f, [2, 3])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Mul", ["acc_in", "w"], ["acc_out"], name="body_mul")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", f, [2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f, [2, 3])])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
        helper.make_node("If", ["c"], ["branch"], name="if", then_branch=then,
                         else_branch=other),
        helper.make_node("Loop", ["trips", "", "branch"], ["looped"], name="loop", body=body),
        helper.make_node("Gelu", ["looped"], ["y"], name="gelu", domain="com.microsoft",
                         doc_string="ORT contrib op"),
    ]
    w = np.linspace(0.5, 1.5, 6, dtype=np.float32).reshape(2, 3)
    graph = helper.make_graph(
        nodes, "features", [helper.make_tensor_value_info("x", f, ["batch", 3])],
        [helper.make_tensor_value_info("y", f, [2, 3])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array(0, np.float32), "zero"),
                     numpy_helper.from_array(np.array(3, np.int64), "trips")],
        value_info=[helper.make_tensor_value_info("branch", f, [2, 3])],
        doc_string="graph doc")
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              producer_name="bench_graph_ir", doc_string="model doc")
    helper.set_model_props(proto, {"author": "bench", "license": "Apache-2.0"})
    onnx.checker.check_model(proto)
    return proto, {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 2}


def check_fidelity(generated: list[Generated], work: Path) -> dict:
    proto, feeds = feature_model()
    result = {}
    im = ir.serde.deserialize_model(proto)
    back = ir.serde.serialize_model(im)
    result["feature model round trip equal"] = _canonical(proto) == _canonical(back)
    result["feature model round trip runs in ORT, same output"] = bool(
        np.array_equal(_run(proto, feeds), _run(back, feeds)))
    uses = im.graph.initializers["w"].uses()
    result["outer value read in If/Loop bodies: onnx-ir lists"] = sorted(
        f"{u.node.name} (in {u.node.graph.name})" for u in uses)
    model = pyprune.graph.load(proto)
    result["outer value read in If/Loop bodies: pyprune lists"] = sorted(
        f"{n.name} (index {i})" for n, i in model.consumers("w"))
    sparse = onnx.ModelProto()
    sparse.CopyFrom(proto)
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sparse_w")
    indices = numpy_helper.from_array(np.array([4], np.int64), "sparse_w_indices")
    sparse.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [2, 3]))
    back = ir.serde.serialize_model(ir.serde.deserialize_model(sparse))
    result["sparse_initializer kept by the round trip"] = len(back.graph.sparse_initializer) == 1
    for gen in generated:
        back = ir.serde.serialize_model(ir.serde.deserialize_model(gen.proto))
        result[f"{gen.key} round trip equal"] = _canonical(gen.proto) == _canonical(back)
    # external data: loaded lazily, memory-mapped, written back byte for byte
    ext_dir = work / "features-ext"
    ext_dir.mkdir()
    src = ext_dir / "features.onnx"
    big = onnx.ModelProto()
    big.CopyFrom(proto)
    onnx.save_model(big, str(src), save_as_external_data=True, location="features.onnx.data",
                    size_threshold=0)
    loaded = ir.load(src)
    tensor = loaded.graph.initializers["w"].const_value
    result["external tensor type"] = type(tensor).__name__
    arr = tensor.numpy()
    result["external tensor memory-mapped"] = isinstance(getattr(tensor, "raw", None), mmap.mmap)
    result["external tensor values equal"] = bool(np.array_equal(arr, numpy_helper.to_array(
        proto.graph.initializer[0])))
    out = ext_dir / "out" / "features.onnx"
    out.parent.mkdir()
    ir.save(loaded, out, external_data="features.onnx.data", size_threshold_bytes=0)
    result["external data re-saved, runs in ORT, same output"] = bool(
        np.array_equal(_run(proto, feeds), _run(out, feeds)))
    return result


# -- main -------------------------------------------------------------------------------------


def _print_rss(label: str, rss: dict[str, dict]) -> list[dict]:
    pb, irr = rss["protobuf"], rss["onnx-ir"]
    rows = []
    for key, text in (("after_load_mb", "RSS after load"), ("peak_total_mb",
                                                             "peak RSS, load->prune->save")):
        rows.append({"model": label, "what": text, "protobuf_mb": pb[key],
                     "onnx_ir_mb": irr[key], "ratio": irr[key] / pb[key] if pb[key] else None})
        ratio = f"{irr[key] / pb[key]:7.2f}" if pb[key] > 0.5 else "      -"
        print(f"  {label + ': ' + text:<52} {pb[key]:10.0f} {irr[key]:10.0f} {ratio}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models (smoke run)")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    parser.add_argument("--repeats", type=int, help="repetitions per timing (default: 3 for the "
                        "convnet, best taken; 5 for the transformer, median taken)")
    parser.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        side, model_path, plan_path, out_dir, ext = args.rss_child
        rss_child(side, model_path, plan_path, out_dir, ext == "1")
        return 0

    print(f"python {platform.python_version()}, onnx {onnx.__version__}, onnx-ir "
          f"{ir.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    generated = generate(args.quick)
    report: dict = {"quick": args.quick, "versions": {"onnx": onnx.__version__,
                                                      "onnx_ir": ir.__version__},
                    "models": {}, "timings": [], "rss": []}
    with tempfile.TemporaryDirectory(prefix="bench-graph-ir-") as tmp:
        work = Path(tmp)
        variants = []
        for gen in generated:
            path = work / f"{gen.key}.onnx"
            onnx.save_model(gen.proto, str(path))
            variants.append((gen, path, False, gen.label))
            if gen.big:
                ext_dir = work / "ext"
                ext_dir.mkdir()
                ext_path = ext_dir / f"{gen.key}.onnx"
                copy = onnx.ModelProto()  # the conversion to external data edits in place
                copy.CopyFrom(gen.proto)
                onnx.save_model(copy, str(ext_path), save_as_external_data=True,
                                location=ext_path.name + ".data", size_threshold=EXT_THRESHOLD)
                variants.append((gen, ext_path, True, gen.label + " (external data)"))
            info = {"nodes": len(gen.proto.graph.node), "initializers":
                    len(gen.proto.graph.initializer), "params": _params(gen.proto),
                    "file_mb": _file_mb(path)}
            report["models"][gen.key] = info
            print(f"{gen.key}: {info['nodes']} nodes, {info['initializers']} initializers, "
                  f"{info['params'] / 1e6:.2f}M float32 parameters, {info['file_mb']:.1f} MB; "
                  f"{'best' if gen.big else 'median'} of {args.repeats or (3 if gen.big else 5)}")

        header = f"  {'operation':<52} {'protobuf':>10} {'onnx-ir':>10} {'ratio':>7}"
        print("\ntimes in ms (ratio = onnx-ir / protobuf)")
        for gen, path, ext, label in variants:
            print(f"\n{label}\n{header}")
            out_dir = Path(tempfile.mkdtemp(dir=work))
            for r in time_model(gen, path, out_dir, ext, args.repeats):
                report["timings"].append({"model": label, **r})

        print("\nmemory in MB: RSS above the RSS before loading (a fresh process per side and "
              "model, warmed up on tiny models; peak = the kernel's VmHWM)\n"
              f"{header.replace('operation', 'model: measure')}")
        for gen, path, ext, label in variants:
            report["rss"] += _print_rss(label, measure_rss(path, gen.plan, work, ext))

        print("\nchecks")
        for gen in generated:
            eq = check_equivalence(gen, work / f"{gen.key}.onnx", work)
            report["models"][gen.key]["checks"] = eq
            print(f"  {gen.key}: pruned params protobuf {eq['pruned_params']['protobuf']:,} / "
                  f"onnx-ir {eq['pruned_params']['onnx-ir']:,}; max |diff| between the sides "
                  f"{eq['max_abs_diff_sides']:.3g}, against the masked original "
                  f"{eq['max_abs_diff_vs_masked']:.3g} (outputs up to "
                  f"{eq['output_scale']:.3g}); inferred shapes equal for "
                  f"{eq['shapes_equal']}/{eq['shapes_compared']} node outputs (known: protobuf "
                  f"{eq['shapes_known_protobuf']}, onnx-ir {eq['shapes_known_onnx_ir']})")
            for name, (pb_shape, ir_shape) in list(eq["shapes_differing"].items())[:5]:
                print(f"    {name}: protobuf {pb_shape}, onnx-ir {ir_shape}")
        cost = import_cost()
        report["import"] = cost
        print(f"  import onnx {cost['onnx_ms']:.0f} ms, then onnx_ir + passes "
              f"{cost['onnx_ir_ms']:.0f} ms more (sympy imported: {cost['sympy_imported']})")
        fidelity = check_fidelity(generated, work)
        report["fidelity"] = fidelity
        for k, v in fidelity.items():
            print(f"  {k}: {v}")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
