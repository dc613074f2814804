"""How much accuracy pruning keeps on exports with nothing left to recover from, via the CLI.

Real exports carry no BatchNormalization nodes: ``torch.onnx.export`` in eval mode folds them into
the convolutions, and scikit-learn and Keras MLPs never had any. pyprune's recovery (BN
re-estimation, bias compensation) then has little to work with. This script measures where that
leaves each search on five digits classifiers exported the way users export them
(``_recovery_models.py``: two torch CNNs with BN folded, one of them residual; a skl2onnx MLP; a
Keras 3 MLP; a Keras 3 NHWC CNN), so that new recovery code can be judged against these figures.

For every model, strategy (oneshot, recursive, greedy, random), recovery mode, target (0.5 and
0.3 of the MACs for CNNs, of the parameters for MLPs) and constraint (``--max-drop 0.02`` and
``--max-drop none``), the installed command line is run in a subprocess as a user would run it::

    pyprune prune MODEL -o OUT --macs 0.5 --data calib.npz --labels y --max-drop 0.02 \\
            --strategy greedy --threads 2 --quiet [--recovery MODE]

and the written model is then measured here, independently of pyprune's own report: test
accuracy in ONNX Runtime on the 360 held-out images no search saw (for the skl2onnx model, the
argmax of its probabilities output), calibration accuracy on the 300 training images the search
judged with, and the MACs and parameter ratios from this file's own counter (ONNX shape
inference; MACs of Conv, Gemm and MatMul; parameters = every float constant). Wall time is the
subprocess's, start-up included (printed once as the time of ``pyprune --version``). The exit
code is the CLI's: 0 target reached under the constraint, 1 not reached (the best model found is
still written and measured), 2 bad input.

The skl2onnx MLP's first output is its int64 label, and the command line judges the first output
(it has no flag to choose another yet): that model is pruned through the Python API instead
(``_api_prune.py``, the same arguments, ``metrics.accuracy(output=1)`` and the KL divergence of
the probabilities as the loss), run by the interpreter beside the ``pyprune`` executable.

Recovery modes are a command-line option: ``default`` runs the CLI without a recovery flag (what
the installed version does by default); any other mode ``M`` is passed as ``--recovery M`` and
requires the installed CLI to accept that flag (checked against ``pyprune prune --help`` first).

Baseline, for the torch models: Torch-Pruning (``pip install torch-pruning``), one-shot L2
magnitude on the trained torch module (BatchNorm still separate, so its statistics follow the kept
channels; no fine-tuning), exported the same way and measured the same way:

* ``TP same widths``: a column on every pyprune row of a torch model: the accuracy of the network
  Torch-Pruning makes with exactly the channel counts of pyprune's written model (so the same
  MACs), i.e. what plain magnitude selection gives at those widths;
* ``torch-pruning uniform``: rows where every prunable layer loses the same fraction of its
  channels, the smallest fraction that brings the MACs to the target.

    python benchmarks/bench_recovery.py                      # everything, family member seed 0
    python benchmarks/bench_recovery.py --quick              # smoke run: one model, two strategies
    python benchmarks/bench_recovery.py --seed 1             # the same on exports never seen before
    python benchmarks/bench_recovery.py --recovery-modes none,stats,lstsq --json after.json

Models are built once per seed and cached in ``benchmarks/models/recovery/seed<N>/`` (pruned
models and CLI logs go to ``.../seed<N>/pruned/``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recovery_models as rm  # noqa: E402  (a sibling module of this script, not a package)

STRATEGIES = ["oneshot", "recursive", "greedy", "random"]
TARGETS = [0.5, 0.3]
MAX_DROPS = ["0.02", "none"]
THREADS = 2
QUICK_MODEL, QUICK_STRATEGIES, QUICK_TARGETS = "torch_cnn", ["oneshot", "greedy"], [0.5]


# ---------------------------------------------------------------------------------- counting
def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every constant tensor of the main graph: initializers and ``Constant`` node values."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def complexity(path: Path) -> tuple[int, int]:
    """(MACs per sample, parameters) of an ONNX model, counted independently of pyprune.

    The batch dimension is fixed to 1 and shapes are inferred with data propagation (so a
    Reshape whose shape is computed from ``Shape`` at run time, as in Keras exports, still gets a
    concrete output). MACs: Conv = output elements x (input channels / group) x kernel size;
    Gemm = weight size; MatMul with a constant right-hand side = rows per sample x weight size.
    Parameters: elements of every floating-point constant (weights, biases, scales).
    """
    model = onnx.load(path)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    consts = _constants(model)
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in consts:
            out = shapes.get(node.output[0])
            if out is None or None in out[1:]:
                raise RuntimeError(f"{path.name}: no shape for the output of Conv {node.name!r}")
            macs += math.prod(out[1:]) * math.prod(consts[node.input[1]].shape[1:])
        elif node.op_type == "Gemm" and node.input[1] in consts:
            macs += consts[node.input[1]].size
        elif node.op_type == "MatMul" and node.input[1] in consts:
            a = shapes.get(node.input[0])
            rows = math.prod(a[1:-1]) if a and len(a) > 2 and None not in a[1:-1] else 1
            macs += rows * consts[node.input[1]].size
    params = sum(v.size for v in consts.values() if np.issubdtype(v.dtype, np.floating))
    return int(macs), int(params)


def accuracy(path: Path, x: np.ndarray, y: np.ndarray, output: int) -> float:
    """Top-1 accuracy in ONNX Runtime from the scores output (never the skl2onnx label)."""
    return rm.onnx_accuracy(path, x, y, output)


# ------------------------------------------------------------------------------------- CLI
def find_cli(explicit: str | None) -> str:
    """The ``pyprune`` console script of this interpreter's environment (else the one on PATH)."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "pyprune"
    if beside.exists():
        return str(beside)
    found = shutil.which("pyprune")
    if not found:
        sys.exit("pyprune's command line was not found; install pyprune or pass --pyprune PATH")
    return found


def cli_flags(cli: str) -> set[str]:
    """The long options ``pyprune prune`` accepts, read from its ``--help``."""
    text = subprocess.run([cli, "prune", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


@dataclass
class CliRun:
    exit_code: int | str  # "timeout" when it had to be stopped
    seconds: float
    last_line: str


def run_cli(command: list[str], log: Path, timeout: float) -> CliRun:
    """Run one CLI command in its own process group; stdout and stderr go to ``log``."""
    start = time.perf_counter()
    with log.open("w") as out:
        out.write(" ".join(command) + "\n\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | str = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: nothing else is touched
            proc.wait()
            code = "timeout"
    seconds = time.perf_counter() - start
    lines = [ln.strip() for ln in log.read_text().splitlines()[2:] if ln.strip()]
    return CliRun(code, seconds, lines[-1] if lines else "")


def startup_seconds(cli: str) -> float:
    start = time.perf_counter()
    subprocess.run([cli, "--version"], capture_output=True, check=True)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- Torch-Pruning
def _prunable_modules(model, example) -> list:
    """Conv2d and Linear modules in the order the forward pass runs them (the order in which
    both exporters emit their Conv/Gemm nodes)."""
    import torch
    from torch import nn

    order: list = []
    hooks = [m.register_forward_hook(lambda mod, *_: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    return order


def onnx_widths(path: Path) -> list[tuple[str, int, tuple[int, ...]]]:
    """(op, output channels, kernel shape) of every Conv / Gemm / constant-weight MatMul, in
    graph order."""
    model = onnx.load(path)
    consts = _constants(model)
    widths = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[1] not in consts:
            continue
        w = consts[node.input[1]]
        if node.op_type == "Conv":
            widths.append(("Conv", w.shape[0], tuple(w.shape[2:])))
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            widths.append(("Gemm", w.shape[0] if trans_b else w.shape[1], ()))
        else:
            widths.append(("MatMul", w.shape[-1], ()))
    return widths


def _torch_macs(model, example) -> int:
    """MACs per sample of Conv2d and Linear layers (the ONNX counter's definition, in torch)."""
    import torch
    from torch import nn

    total = [0]

    def count(mod, _inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += out[0].numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        else:
            total[0] += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(example[:1])
    for h in hooks:
        h.remove()
    return total[0]


def tp_prune_to_widths(model, example, widths: list[int]):
    """A copy of ``model`` with each Conv2d/Linear (forward order) cut to ``widths`` output
    channels by Torch-Pruning's L2 group magnitude; coupled layers (the residual join) share one
    group, so the second of them finds its width already reached."""
    import torch
    import torch_pruning as tp
    from torch import nn

    model = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for module, width in zip(_prunable_modules(model, example), widths):
        conv = isinstance(module, nn.Conv2d)
        current = module.out_channels if conv else module.out_features
        if width >= current:
            continue
        prune_fn = tp.prune_conv_out_channels if conv else tp.prune_linear_out_channels
        scores = importance(graph.get_pruning_group(module, prune_fn, idxs=list(range(current))))
        drop = torch.argsort(scores)[: current - width].tolist()
        group = graph.get_pruning_group(module, prune_fn, idxs=drop)
        if not graph.check_pruning_group(group):
            raise RuntimeError(f"Torch-Pruning refuses to cut {module} to {width}")
        group.prune()
    return model.eval()


def tp_uniform(model, example, target: float) -> tuple[object, float]:
    """Torch-Pruning's one-shot L2 pruner with one channel ratio for every layer (the classifier
    aside): the smallest ratio whose MACs are at most ``target`` of the original, by bisection."""
    import torch_pruning as tp
    from torch import nn

    base = _torch_macs(model, example)

    def pruned(ratio: float):
        candidate = copy.deepcopy(model)
        classifier = [m for m in candidate.modules() if isinstance(m, nn.Linear)][-1]
        tp.pruner.BasePruner(candidate, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, ignored_layers=[classifier]).step()
        return candidate.eval()

    lo, hi = 0.0, 0.95
    best = pruned(hi)
    for _ in range(14):
        mid = (lo + hi) / 2
        candidate = pruned(mid)
        if _torch_macs(candidate, example) <= target * base:
            hi, best = mid, candidate
        else:
            lo = mid
    return best, hi


def export_for_measurement(model, example, path: Path) -> Path:
    """The TorchScript exporter for every Torch-Pruning result (BatchNorm folded, as in the
    originals); only ONNX Runtime accuracy and the counter read it."""
    rm._export_torch(model, example.numpy()[:1], path, dynamo=False)
    return path


# ------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    model: str
    strategy: str
    recovery: str
    target: float
    kind: str  # "macs" or "params": what the target and `ratio` measure
    max_drop: str
    ratio: float | None  # of `kind`, written model / original
    macs_ratio: float | None
    params_ratio: float | None
    test_unpruned: float
    test_accuracy: float | None
    calib_unpruned: float
    calib_accuracy: float | None
    seconds: float
    exit_code: int | str
    tp_same_widths: float | None = None  # Torch-Pruning's accuracy at the written model's widths
    tp_ratio: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


HEADER = ("| model | strategy | recovery | target | max_drop | ratio | test acc (unpruned → pruned) | "
          "calib acc | time s | exit | TP same widths |")


def format_row(r: Row) -> str:
    ratio = "-" if r.ratio is None else f"{r.ratio:.3f} {r.kind}"
    return (f"| {r.model} | {r.strategy} | {r.recovery} | {r.target:.2f} {r.kind} | {r.max_drop} | {ratio} | "
            f"{r.test_unpruned:.4f} → {fmt(r.test_accuracy)} | {fmt(r.calib_accuracy)} | {r.seconds:.1f} | "
            f"{r.exit_code} | {fmt(r.tp_same_widths)} |")


# ------------------------------------------------------------------------------------ bench
def bench_model(name: str, exported: rm.Exported, args, cli: str, modes: list[str],
                strategies: list[str], targets: list[float], max_drops: list[str], out: Path) -> list[Row]:
    spec = rm.MODELS[name]
    with np.load(exported.calib) as npz:
        calib_x = next(npz[k] for k in npz.files if k != "y")
        calib_y = npz["y"]
    test_base = accuracy(exported.path, exported.x_test, exported.y_test, spec.output)
    calib_base = accuracy(exported.path, calib_x, calib_y, spec.output)
    macs0, params0 = complexity(exported.path)
    print(f"{name}: unpruned test accuracy {test_base:.4f}, calibration {calib_base:.4f}; "
          f"{macs0:,} MACs, {params0:,} params", flush=True)

    torch_model = example = None
    if spec.torch and not args.no_torch_pruning:
        import torch

        torch_model = rm.load_torch_model(name, args.cache, args.seed)
        example = torch.from_numpy(calib_x[:2])

    def measure(path: Path) -> dict:
        macs, params = complexity(path)
        ratios = {"macs": macs / macs0, "params": params / params0}
        return {"ratio": ratios[spec.target], "macs_ratio": ratios["macs"], "params_ratio": ratios["params"],
                "test_accuracy": accuracy(path, exported.x_test, exported.y_test, spec.output),
                "calib_accuracy": accuracy(path, calib_x, calib_y, spec.output)}

    rows: list[Row] = []
    for target in targets:
        for mode in modes:
            for strategy in strategies:
                for max_drop in max_drops:
                    tag = f"{name}.{strategy}.{mode}.{target}.{max_drop}"
                    written = out / f"{tag}.onnx"
                    written.unlink(missing_ok=True)
                    command = [cli, "prune", str(exported.path), "-o", str(written), f"--{spec.target}", str(target),
                               "--data", str(exported.calib), "--labels", "y", "--max-drop", max_drop,
                               "--strategy", strategy, "--threads", str(THREADS), "--quiet"]
                    if spec.output:  # the CLI judges output 0 (skl2onnx's label): the API runner
                        command = [str(Path(cli).parent / "python"), str(Path(__file__).parent / "_api_prune.py"),
                                   *command[1:], "--score-output", str(spec.output)]
                    if mode != "default":
                        command += ["--recovery", mode]
                    run = run_cli(command, out / f"{tag}.log", args.timeout)
                    figures = measure(written) if written.exists() else {
                        "ratio": None, "macs_ratio": None, "params_ratio": None,
                        "test_accuracy": None, "calib_accuracy": None}
                    row = Row(name, strategy, mode, target, spec.target, max_drop, **figures,
                              test_unpruned=test_base, calib_unpruned=calib_base, seconds=run.seconds,
                              exit_code=run.exit_code, note=run.last_line if run.exit_code != 0 else "")
                    if torch_model is not None and written.exists():
                        _tp_same_widths(row, torch_model, example, written, out / f"{tag}.tp.onnx", measure)
                    rows.append(row)
                    print(f"  {format_row(row)}", flush=True)

    if torch_model is not None:
        for target in targets:
            start = time.perf_counter()
            pruned, ratio = tp_uniform(torch_model, example, target)
            seconds = time.perf_counter() - start
            figures = measure(export_for_measurement(pruned, example, out / f"{name}.tp_uniform.{target}.onnx"))
            row = Row(name, "torch-pruning uniform", "none", target, spec.target, "-", **figures,
                      test_unpruned=test_base, calib_unpruned=calib_base, seconds=seconds, exit_code="-",
                      note=f"channel ratio {ratio:.3f} removed from every layer")
            rows.append(row)
            print(f"  {format_row(row)}", flush=True)
    return rows


def _tp_same_widths(row: Row, torch_model, example, written: Path, tp_path: Path, measure) -> None:
    """Fill the Torch-Pruning column: same widths as pyprune's written model, L2 magnitude."""
    original = _prunable_modules(torch_model, example)
    widths = onnx_widths(written)
    kinds = [("Conv" if type(m).__name__ == "Conv2d" else "Linear") for m in original]
    if len(widths) != len(original) or any(
            (k == "Conv") != (op == "Conv") or (k == "Conv" and tuple(m.kernel_size) != kernel)
            for k, m, (op, _, kernel) in zip(kinds, original, widths)):
        row.extra["tp_error"] = "the written model's layers do not match the torch module's"
        return
    try:
        pruned = tp_prune_to_widths(torch_model, example, [w for _, w, _ in widths])
        figures = measure(export_for_measurement(pruned, example, tp_path))
    except Exception as error:  # a baseline failure must not lose pyprune's figures
        row.extra["tp_error"] = f"{type(error).__name__}: {error}"
        return
    row.tp_same_widths, row.tp_ratio = figures["test_accuracy"], figures["ratio"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_MODEL}, strategies {'+'.join(QUICK_STRATEGIES)}, target 0.5")
    parser.add_argument("--seed", type=int, default=0,
                        help="family member to build and prune (0: the usual one; others: never seen before)")
    parser.add_argument("--models", nargs="+", choices=list(rm.MODELS), default=list(rm.MODELS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=STRATEGIES)
    parser.add_argument("--targets", nargs="+", type=float, default=TARGETS)
    parser.add_argument("--max-drops", nargs="+", default=MAX_DROPS, help="values for --max-drop")
    parser.add_argument("--recovery-modes", default="default",
                        help="comma-separated; 'default' passes no recovery flag, any other M is passed "
                             "as --recovery M")
    parser.add_argument("--no-torch-pruning", action="store_true", help="skip the Torch-Pruning baseline")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a CLI run is stopped")
    parser.add_argument("--cache", type=Path, default=rm.CACHE, help="where the models are built")
    parser.add_argument("--pyprune", help="the pyprune executable (default: beside this interpreter)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    args = parser.parse_args()
    models, strategies, targets = args.models, args.strategies, args.targets
    if args.quick:
        models, strategies, targets = [QUICK_MODEL], QUICK_STRATEGIES, QUICK_TARGETS

    cli = find_cli(args.pyprune)
    flags = cli_flags(cli)
    modes = [m.strip() for m in args.recovery_modes.split(",") if m.strip()]
    if any(m != "default" for m in modes) and "--recovery" not in flags:
        sys.exit(f"{cli} prune has no --recovery flag; run with --recovery-modes default")
    needed = {"--strategy", "--max-drop", "--data", "--labels", "--threads", "--quiet", "--macs", "--params"}
    if needed - flags:
        sys.exit(f"{cli} prune lacks {sorted(needed - flags)}")
    version = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.strip()
    startup = startup_seconds(cli)

    load_before = os.getloadavg()[0]  # the machine may be shared: times are read against the load
    started = time.perf_counter()
    exported = rm.build_all(args.cache, args.seed, names=models)
    print(f"models ready in {time.perf_counter() - started:.0f} s (seed {args.seed}); {version} at {cli}; "
          f"CLI start-up (pyprune --version) {startup:.2f} s", flush=True)
    out = Path(args.cache) / f"seed{args.seed}" / "pruned"
    out.mkdir(parents=True, exist_ok=True)

    rows: list[Row] = []
    for name in models:
        rows += bench_model(name, exported[name], args, cli, modes, strategies, targets,
                            args.max_drops, out)

    print()
    print(f"seed {args.seed}; {version}; {THREADS} threads; test = 360 held-out images, calib = the 300 "
          f"training images the search judged with; time = CLI wall time incl. {startup:.1f} s start-up; "
          f"total {time.perf_counter() - started:.0f} s; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for r in rows:
        print(format_row(r))
    notes = [r for r in rows if r.exit_code not in (0, 1, "-") or r.extra.get("tp_error")]
    for r in notes:
        print(f"note: {r.model} {r.strategy} {r.target} {r.max_drop}: exit {r.exit_code} {r.note} "
              f"{r.extra.get('tp_error', '')}".rstrip())
    if args.json:
        args.json.write_text(json.dumps({
            "seed": args.seed, "pyprune": version, "cli": cli, "startup_seconds": startup,
            "load_average": [load_before, os.getloadavg()[0]],
            "python": platform.python_version(), "models": {n: rm.metadata(n, args.cache, args.seed) for n in models},
            "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
