"""Real third-party exports through the ``pyprune`` command line, checked independently.

For every model of the corpus (``_corpus_models.py``: torchvision/timm CNNs and a ViT exported by
torch.onnx, transformers models, ONNX Runtime's fused BERT, skl2onnx classifiers with and without
ZipMap, Keras 3 exports, opset-9 CNNs, paddle2onnx exports, If/Loop control flow, a streaming
model with scalar and state inputs, a segmentation model with symbolic height and width) this
script runs, in a subprocess and exactly as a new user would::

    pyprune prune MODEL.onnx -o OUT.onnx --macs 0.5 --strategy oneshot --max-drop none \\
            --data NAME.npz --quiet

and records the exit code, the wall time and the last line on stderr. It then judges the written
model without trusting anything pyprune says, with onnx, onnxruntime and numpy only:

* valid: ``onnx.checker.check_model(path, full_check=True)`` passes, ONNX Runtime loads the model
  and runs every calibration sample, and the outputs keep the original names, types and shapes;
* MACs: multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul (and com.microsoft
  FusedMatMul/Attention, GRU/LSTM/RNN), counted here from ``onnx.shape_inference`` shapes after
  the inputs are fixed to one calibration sample's shapes (values shape inference cannot reach,
  e.g. behind com.microsoft ops, are measured by running the model with them as extra outputs);
  a Loop body counts once per iteration of a constant trip count, an If counts the branch its
  condition selects for the sample (its larger branch when the condition cannot be read);
* at target: pruned/original MACs <= 0.52 (the target 0.5 plus rounding slack);
* cosine: mean cosine similarity, sample by sample, between the pruned and original model's first
  float output (ZipMap probabilities are read as a class-ordered vector);
* speed-up: original/pruned median ONNX Runtime latency at batch 1, same session options
  (all graph optimisations, 2 intra-op threads), ``--runs`` timed runs each, the two models
  run in turn (one run each, repeated) so that load from other processes hits both alike; the
  load average is printed, since on a busy 2-core machine medians move by several times.

A failing run (exit code 2 or 3) is repeated with ``--debug`` to keep the traceback in the
``--json`` file for diagnosis. The last line is the total: valid models, models at the target,
and internal errors (exit code 3: an exception pyprune did not expect).

    python benchmarks/bench_corpus.py                   # every model (builds the corpus once)
    python benchmarks/bench_corpus.py --quick           # six small models
    python benchmarks/bench_corpus.py --only resnet18,bert --json out.json
    python benchmarks/bench_corpus.py --rebuild         # rebuild cached exports first
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus_models import MODELS, QUICK, Entry, build  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGET = 0.5
AT_TARGET = 0.52     # MACs ratio that counts as reaching the 0.5 target (rounding to 8 channels)
THREADS = 2
EXIT_INTERNAL = 3


# ------------------------------------------------------------------------------------- data
def feeds_of(entry: Entry, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """One feed per calibration sample, each with a batch of 1.

    Per-sample arrays are split along axis 0 (keeping the axis); inputs the builder marked as
    shared (scalars, states without batch axis) are fed whole with every sample. Arrays whose
    key is no model input are ignored, as pyprune's own loader documents.
    """
    names = {i.name for i in model.graph.input}
    with np.load(entry.data) as npz:
        arrays = {k: npz[k] for k in npz.files if k in names}
    per_sample = [k for k in arrays if k not in entry.shared]
    n = min(len(arrays[k]) for k in per_sample)
    return [{k: (arrays[k][i:i + 1] if k in per_sample else arrays[k]) for k in arrays}
            for i in range(n)]


# -------------------------------------------------------------------------------- ORT helpers
def session(path: Path) -> ort.InferenceSession:
    """A CPU session with the options every measurement here uses."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, feeds: list[dict]) -> list[list]:
    return [sess.run(None, feed) for feed in feeds]


def first_float_output(outputs: list) -> int | None:
    """Index of the first float tensor output, or of a ZipMap (list of dicts) output."""
    for i, value in enumerate(outputs):
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            return i
    for i, value in enumerate(outputs):
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return i
    return None


def as_vector(value) -> np.ndarray:
    """A float64 vector of one sample's output (a ZipMap's probabilities in class order)."""
    if isinstance(value, list):
        return np.asarray([[row[k] for k in sorted(row)] for row in value], np.float64).ravel()
    return np.asarray(value, np.float64).ravel()


def mean_cosine(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    """Mean per-sample cosine; one cosine over all samples when a sample has a single value
    (a sample-wise cosine of scalars only says whether the signs agree)."""
    def cos(a: np.ndarray, b: np.ndarray) -> float:
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            return 1.0 if na == nb else 0.0
        return float(a @ b / (na * nb))

    if ref[0].size < 2:
        return cos(np.concatenate(ref), np.concatenate(out))
    return float(np.mean([cos(a, b) for a, b in zip(ref, out)]))


def interface_problem(ref: list, out: list, ref_sess, out_sess) -> str:
    """Why the pruned model's outputs are not interchangeable with the original's, or ''."""
    ref_names = [o.name for o in ref_sess.get_outputs()]
    out_names = [o.name for o in out_sess.get_outputs()]
    if ref_names != out_names:
        return f"outputs changed: {ref_names} -> {out_names}"
    for name, a, b in zip(ref_names, ref, out):
        if type(a) is not type(b):
            return f"output {name} changed kind: {type(a).__name__} -> {type(b).__name__}"
        if isinstance(a, np.ndarray) and (a.shape != b.shape or a.dtype != b.dtype):
            return f"output {name} changed: {a.dtype}{list(a.shape)} -> {b.dtype}{list(b.shape)}"
    return ""


def latencies(paths: tuple[Path, Path], feed: dict, runs: int) -> dict[str, list[float]]:
    """Median and minimum latency (ms) of two models at batch 1, run in turn."""
    sessions = [session(p) for p in paths]
    for s in sessions:  # warm-up: first runs allocate buffers and pick kernels
        for _ in range(3):
            s.run(None, feed)
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for s, acc in zip(sessions, times):
            t0 = time.perf_counter()
            s.run(None, feed)
            acc.append((time.perf_counter() - t0) * 1e3)
    return {"median": [float(np.median(t)) for t in times],
            "min": [float(np.min(t)) for t in times]}


# ------------------------------------------------------------------------------- MACs counter
def _dims(value_type: onnx.TypeProto, symbols: dict[str, int]) -> list[int | None] | None:
    if not value_type.HasField("tensor_type") or not value_type.tensor_type.HasField("shape"):
        return None
    out = []
    for d in value_type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        else:
            out.append(symbols.get(d.dim_param))
    return out


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


class MacCounter:
    """Counts multiply-accumulates of one model at one feed from inferred (or measured) shapes."""

    def __init__(self, path: Path, feed: dict[str, np.ndarray]) -> None:
        model = onnx.load(str(path))
        # Map the inputs' symbolic dims to the feed's sizes, so that symbols repeated inside
        # subgraphs (a Loop body declaring ["batch", 128]) resolve too; then fix the inputs.
        self.symbols: dict[str, int] = {}
        for inp in model.graph.input:
            if inp.name not in feed:
                continue
            shape = feed[inp.name].shape
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, shape):
                if d.dim_param:
                    self.symbols[d.dim_param] = int(size)
            del dims[:]
            for size in shape:
                dims.add().dim_value = int(size)
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - fall back to measured shapes for everything
            pass
        self.model, self.feed = model, feed
        self.shapes: dict[str, list[int | None]] = {}
        self.consts: dict[str, np.ndarray] = {}
        for g in _graphs(model.graph):
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                dims = _dims(vi.type, self.symbols)
                if dims is not None and vi.name not in self.shapes:
                    self.shapes[vi.name] = dims
            for init in g.initializer:
                self.shapes[init.name] = list(init.dims)
                if init.data_type == TensorProto.INT64 and len(init.dims) == 0:
                    self.consts[init.name] = numpy_helper.to_array(init)
            for node in g.node:
                if node.op_type == "Constant":
                    for attr in node.attribute:
                        if attr.name == "value":
                            self.shapes[node.output[0]] = list(attr.t.dims)
                            self.consts[node.output[0]] = numpy_helper.to_array(attr.t)
        self.measured = 0
        # If conditions of the top-level graph: read at run time to count the branch taken.
        self.conditions = [n.input[0] for n in model.graph.node if n.op_type == "If"]
        self.values: dict[str, np.ndarray] = {}

    def _known(self, name: str) -> list[int] | None:
        dims = self.shapes.get(name)
        return dims if dims is not None and all(d is not None for d in dims) else None

    def _measure(self, names: list[str]) -> None:
        """Fill shapes shape inference could not give by running the model with them as outputs."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
        present = {o.name for o in model.graph.output}
        types.update({c: TensorProto.BOOL for c in self.conditions})
        for name in names:
            if name not in present:
                model.graph.output.append(helper.make_tensor_value_info(
                    name, types.get(name) or TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        wanted = set(names)
        outs = [o.name for o in sess.get_outputs()]
        for name, value in zip(outs, sess.run(None, self.feed)):
            if name in wanted and isinstance(value, np.ndarray):
                self.shapes[name] = list(value.shape)
                self.values[name] = value if value.size == 1 else None
                self.measured += 1

    def count(self) -> tuple[int, int]:
        """(MACs, counted ops whose shapes stayed unknown)."""
        missing = [v for n in self.model.graph.node for v in self._needs(n)
                   if self._known(v) is None] + self.conditions
        if missing:
            try:
                self._measure(sorted(set(missing)))
            except Exception:  # noqa: BLE001 - the count then reports how many ops it missed
                pass
        return self._graph_macs(self.model.graph)

    @staticmethod
    def _needs(node: onnx.NodeProto) -> list[str]:
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            return [node.input[0], node.input[1], node.output[0]]
        if op in ("Gemm", "MatMul", "FusedMatMul", "MatMulInteger"):
            return [node.input[0], node.output[0]]
        if op == "Attention":
            return [node.input[0], node.input[1]]
        if op in ("GRU", "LSTM", "RNN"):
            return [node.input[0], node.input[1], node.input[2]]
        return []

    def _graph_macs(self, graph: onnx.GraphProto) -> tuple[int, int]:
        total, unknown = 0, 0
        for node in graph.node:
            if node.op_type == "Loop":
                body = next(a.g for a in node.attribute if a.name == "body")
                trips = self.consts.get(node.input[0]) if node.input[0] else None
                macs, unk = self._graph_macs(body)
                total += macs * (int(trips) if trips is not None else 1)
                unknown += unk
                continue
            if node.op_type in ("If", "Scan"):
                branches = {a.name: self._graph_macs(a.g) for a in node.attribute
                            if a.type == onnx.AttributeProto.GRAPH}
                cond = self.values.get(node.input[0]) if node.op_type == "If" else None
                if cond is not None:
                    macs, unk = branches["then_branch" if bool(cond) else "else_branch"]
                else:
                    macs = max(m for m, _ in branches.values())
                    unk = sum(u for _, u in branches.values())
                total += macs
                unknown += unk
                continue
            needed = self._needs(node)
            if not needed:
                continue
            shapes = [self._known(v) for v in needed]
            if any(s is None for s in shapes):
                unknown += 1
                continue
            total += self._node_macs(node, shapes)
        return total, unknown

    @staticmethod
    def _node_macs(node: onnx.NodeProto, shapes: list[list[int]]) -> int:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Conv":
            _, w, y = shapes
            return math.prod(y) * math.prod(w[1:])
        if op == "ConvTranspose":
            x, w, _ = shapes
            return math.prod(x) * math.prod(w[1:])
        if op == "Gemm":
            a, y = shapes
            k = a[0] if attrs.get("transA", 0) else a[1]
            return math.prod(y) * k
        if op in ("MatMul", "FusedMatMul", "MatMulInteger"):
            a, y = shapes
            if len(a) == 1:
                k = a[0]
            else:
                k = a[-2] if attrs.get("transA", 0) else a[-1]
            return math.prod(y) * k
        if op == "Attention":  # com.microsoft: QKV projection + scores + context
            x, w = shapes
            batch, seq, hidden = x
            return batch * seq * hidden * w[1] + 2 * batch * seq * seq * (w[1] // 3)
        if op in ("GRU", "LSTM", "RNN"):
            x, w, r = shapes
            steps = x[0] * x[1]  # seq * batch in either layout
            return steps * (math.prod(w) + math.prod(r))
        return 0


def count_macs(path: Path, feed: dict) -> tuple[int, int]:
    return MacCounter(path, feed).count()


# ------------------------------------------------------------------------------------ one row
@dataclass
class Row:
    name: str
    source: str
    opset: int
    exit: int | None = None            # None: timed out
    valid: str = "-"                   # yes / no / - (no output written)
    macs: int = 0                      # original, batch 1
    macs_ratio: float | None = None
    at_target: bool = False
    cosine: float | None = None
    speedup: float | None = None
    latency_ms: dict | None = None     # {"median": [orig, pruned], "min": [orig, pruned]}
    wall_s: float = 0.0
    stderr: str = ""                   # pyprune's last stderr line
    reason: str = ""                   # one line: why this row is not a success
    uncounted_ops: tuple[int, int] = (0, 0)
    note: str = ""
    traceback: list[str] = field(default_factory=list)


def prune_command(entry: Entry, out: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).parent / "pyprune"
    return [str(exe), "prune", str(entry.model), "-o", str(out), "--macs", str(TARGET),
            "--strategy", "oneshot", "--max-drop", "none", "--data", str(entry.data),
            "--quiet", *extra]


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def evaluate(entry: Entry, out_dir: Path, timeout: float, runs: int) -> Row:
    original = onnx.load(str(entry.model), load_external_data=False)
    opset = next((o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), 0)
    row = Row(entry.name, entry.source, opset, note=entry.note)
    out = out_dir / f"{entry.name}.pruned.onnx"
    for stale in out_dir.glob(f"{entry.name}.pruned.onnx*"):
        stale.unlink()

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(prune_command(entry, out), capture_output=True, text=True,
                              timeout=timeout)
        row.exit, row.stderr = proc.returncode, last_line(proc.stderr)
    except subprocess.TimeoutExpired as exc:
        row.stderr = last_line(exc.stderr.decode() if isinstance(exc.stderr, bytes)
                               else exc.stderr or "")
        row.reason = f"timed out after {timeout:.0f} s"
    row.wall_s = time.perf_counter() - t0
    if row.exit not in (0, 1, None):
        row.reason = row.stderr or f"exit {row.exit} with nothing on stderr"
        with tempfile.TemporaryDirectory() as tmp:  # the traceback, for diagnosis only
            dbg = subprocess.run(prune_command(entry, Path(tmp) / "o.onnx", "--debug"),
                                 capture_output=True, text=True, timeout=timeout)
            row.traceback = dbg.stderr.strip().splitlines()[-16:]

    feeds = feeds_of(entry, original)
    ref_sess = session(entry.model)
    row.macs, unknown_ref = count_macs(entry.model, feeds[0])
    if not out.exists():
        if row.exit in (0, 1):
            row.reason = f"exit {row.exit} but no output file"
        row.uncounted_ops = (unknown_ref, 0)
        return row

    # Validity, judged only with onnx and onnxruntime.
    try:
        onnx.checker.check_model(str(out), full_check=True)
        out_sess = session(out)
        ref_outs, out_outs = run_all(ref_sess, feeds), run_all(out_sess, feeds)
        problem = interface_problem(ref_outs[0], out_outs[0], ref_sess, out_sess)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable model
        row.valid = "no"
        row.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return row
    if problem:
        row.valid, row.reason = "no", problem
    else:
        row.valid = "yes"

    macs, unknown_out = count_macs(out, feeds[0])
    row.uncounted_ops = (unknown_ref, unknown_out)
    row.macs_ratio = macs / row.macs if row.macs else None
    row.at_target = row.macs_ratio is not None and row.macs_ratio <= AT_TARGET
    idx = first_float_output(ref_outs[0])
    if idx is not None and row.valid == "yes":
        row.cosine = mean_cosine([as_vector(o[idx]) for o in ref_outs],
                                 [as_vector(o[idx]) for o in out_outs])
    row.latency_ms = latencies((entry.model, out), feeds[0], runs)
    median = row.latency_ms["median"]
    row.speedup = median[0] / median[1]
    if not row.reason and not row.at_target:
        ratio = "unknown" if row.macs_ratio is None else f"{row.macs_ratio:.3f}"
        row.reason = f"MACs ratio {ratio} > {AT_TARGET}" + (f"; {row.stderr}" if row.stderr else "")
    return row


# ------------------------------------------------------------------------------------ output
COLUMNS = ("model", "source", "opset", "exit", "valid", "MMACs", "MACs", "target", "cosine",
           "speed-up", "time (s)", "reason")


def cells(row: Row) -> list[str]:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    return [row.name, row.source, str(row.opset), "T/O" if row.exit is None else str(row.exit),
            row.valid, f"{row.macs / 1e6:.1f}", num(row.macs_ratio, ".3f"),
            "yes" if row.at_target else "no", num(row.cosine, ".4f"), num(row.speedup, ".2f"),
            f"{row.wall_s:.1f}", row.reason[:110]]


WIDTHS = (24, 52, 5, 4, 5, 8, 6, 6, 7, 8, 8, 0)


def fmt_line(values: list[str]) -> str:
    parts = [v.ljust(w) if i < 2 or i == len(values) - 1 else v.rjust(w)
             for i, (v, w) in enumerate(zip(values, WIDTHS))]
    return "  ".join(parts).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast subset: " + ", ".join(QUICK))
    parser.add_argument("--unseen", action="store_true",
                        help="the exports of _unseen_models.py instead (other architectures, settings and seeds, "
                             "cached in corpus/unseen)")
    parser.add_argument("--only", help="comma-separated model names (see the registry)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached exports")
    parser.add_argument("--json", type=Path, help="write every row to this JSON file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pyprune run")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model and side")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="cache of built models")
    args = parser.parse_args(argv)

    registry = MODELS
    if args.unseen:
        from _unseen_models import UNSEEN

        registry = UNSEEN
        if args.corpus == CORPUS:
            args.corpus = CORPUS / "unseen"
    names = list(registry)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in registry]
        if unknown:
            parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(registry)}")
    elif args.quick:
        names = list(QUICK)

    print(f"pyprune {version('pyprune')}, onnx {onnx.__version__}, onnxruntime {ort.__version__}; "
          f"{len(names)} models; target MACs {TARGET} (at target: <= {AT_TARGET})")
    print("command: " + " ".join(Path(a).name if i == 0 else a for i, a in
                                 enumerate(prune_command(Entry("NAME", Path("MODEL.onnx"),
                                                               Path("NAME.npz"), ""),
                                                         Path("OUT.onnx")))))
    # Latency is measured on whatever else the machine is doing; say how busy it was.
    print("load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print()
    out_dir = args.corpus / "pruned"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(fmt_line(list(COLUMNS)))
    print(fmt_line(["-" * max(w, len(c)) for c, w in zip(COLUMNS, WIDTHS)]))
    rows: list[Row] = []
    for name in names:
        try:
            entry = build(name, args.corpus, rebuild=args.rebuild, registry=registry)
        except Exception as exc:  # noqa: BLE001 - an exporter failing here is a corpus problem
            print(f"{name}: could not be built: {type(exc).__name__}: {exc}", flush=True)
            continue
        row = evaluate(entry, out_dir, args.timeout, args.runs)
        rows.append(row)
        print(fmt_line(cells(row)), flush=True)

    m = len(rows)
    valid = sum(r.valid == "yes" for r in rows)
    at_target = sum(r.valid == "yes" and r.at_target for r in rows)
    internal = sum(r.exit == EXIT_INTERNAL for r in rows)
    print()
    print("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"{valid}/{m} valid, {at_target}/{m} at target, {internal} internal errors (exit 3)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
