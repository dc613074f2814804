"""The search loops side by side on two small digits classifiers, at MACs targets of 50% and 30%.

Models: the Dense 64 -> 32 -> 10 MLP shipped as ``pyprune/assets/digits_mlp.onnx`` and the small
BatchNorm CNN of ``benchmarks/models/digits_cnn.onnx``, both trained on scikit-learn's bundled
digits by ``examples/make_digits_models.py``. Every search is judged on the 360-image calibration
split (labels, accuracy, at most 1 point below the unpruned model's calibration accuracy); the
shipped model is then scored on the 360 held-out test images it never saw.

Rows per model and target: one-shot local and global (each also cut straight to the target with
no constraint, to show what the constraint protects against), recursive, greedy (also with no
constraint: how far its least-loss path goes at the target itself), random, greedy with
recovery off, and recursive and greedy with any channel count (``Limits(round_to=1)``; the
default ``round_to="auto"`` keeps multiples of 8 in convolutions of 32 channels or more, the
layout ONNX Runtime's blocked convolution kernels run fastest). Every search runs with pyprune's
defaults (importance L2, recovery on, 2 threads). Columns: whether the target was met with the
constraint holding, MACs and params of the shipped model relative to the original, calibration and test accuracy, ONNX Runtime latency
(batch 1, 2 intra-op threads; the median of five blocks of 200 timed runs, each block alternating
with one of the unpruned model, whose median the ratio divides by), candidate evaluations and the
search's wall time.

    python benchmarks/bench_search.py                 # both models, both targets
    python benchmarks/bench_search.py --quick         # smoke run: the MLP at 50%, seconds
    python benchmarks/bench_search.py --json out.json # also write every figure as JSON
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pyprune import Dataset, MACs, load, prune
from pyprune.evaluate import measure_latency, run_model
from pyprune.options import Limits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "pyprune" / "assets" / "digits.npz"
MODELS = {
    "mlp": (ROOT / "pyprune" / "assets" / "digits_mlp.onnx", (-1, 64)),
    "cnn": (ROOT / "benchmarks" / "models" / "digits_cnn.onnx", (-1, 1, 8, 8)),
}
THREADS = 2
MAX_DROP = 0.01

#: (row name, strategy, options, constraint on?)
RUNS = [
    ("oneshot-local, no constraint", "oneshot_local", {}, False),
    ("oneshot-local", "oneshot_local", {}, True),
    ("oneshot-global, no constraint", "oneshot_global", {}, False),
    ("oneshot-global", "oneshot_global", {}, True),
    ("recursive", "recursive", {}, True),
    ("greedy", "greedy", {}, True),
    ("greedy, no constraint", "greedy", {}, False),
    ("greedy, recovery off", "greedy", {"recovery": False}, True),
    ("recursive, round_to=1", "recursive", {"limits": Limits(round_to=1)}, True),
    ("greedy, round_to=1", "greedy", {"limits": Limits(round_to=1)}, True),
    ("random", "random", {}, True),
]


@dataclass
class Row:
    model: str
    target: float
    run: str
    met: bool
    macs: float  # of the original
    params: float  # of the original
    calib_accuracy: float
    test_accuracy: float
    latency_ms: float
    latency_ratio: float  # to the unpruned model's, timed alternately
    evaluations: int
    seconds: float


def splits(shape: tuple[int, ...]) -> tuple[Dataset, np.ndarray, np.ndarray]:
    with np.load(DATA) as npz:
        calib = Dataset({"input": npz["input"].reshape(shape)}, labels=npz["label"])
        return calib, npz["test_input"].reshape(shape), npz["test_label"]


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    out = run_model(model, Dataset({"input": x}), threads=THREADS, batch_size=len(x))[0]
    return float(np.mean(np.argmax(out, axis=1) == y))


def latency(model, original, calib: Dataset, runs: int, blocks: int = 5) -> tuple[float, float]:
    """Median ms of ``model`` and its ratio to ``original``'s, timed in alternating blocks (the
    machine is shared, so both see the same load)."""
    ms, base = [], []
    for _ in range(blocks):
        ms.append(measure_latency(model, 1, threads=THREADS, warmup=20, runs=runs, dataset=calib).median_ms)
        base.append(measure_latency(original, 1, threads=THREADS, warmup=20, runs=runs, dataset=calib).median_ms)
    return float(np.median(ms)), float(np.median(ms) / np.median(base))


def bench(name: str, targets: list[float], runs: list, timed_runs: int, quick: bool) -> list[Row]:
    path, shape = MODELS[name]
    calib, x_test, y_test = splits(shape)
    original = load(path)
    base_calib = accuracy(original, calib.arrays["input"], calib.labels)
    rows = [Row(name, 1.0, "unpruned", True, 1.0, 1.0, base_calib, accuracy(original, x_test, y_test),
                *latency(original, original, calib, timed_runs), 0, 0.0)]
    print(f"{name}: unpruned calibration accuracy {base_calib:.4f}, test {rows[0].test_accuracy:.4f}",
          flush=True)
    for target in targets:
        for label, strategy, options, constrained in runs:
            options = dict(options)
            if quick and strategy == "random":
                options.setdefault("trials", 20)
            start = time.perf_counter()
            result = prune(original, calib, strategy=strategy, target=MACs(target),
                           max_drop=MAX_DROP if constrained else None, threads=THREADS, quiet=True,
                           measure_latency=False, **options)
            seconds = time.perf_counter() - start
            report = result.report
            met = result.met if constrained else report.after.macs <= target * report.before.macs
            row = Row(name, target, label, met,
                      report.after.macs / report.before.macs, report.after.params / report.before.params,
                      float(result.metric), accuracy(result.model, x_test, y_test),
                      *latency(result.model, original, calib, timed_runs), report.evaluations, seconds)
            rows.append(row)
            print(f"  {format_row(row)}", flush=True)
    return rows


HEADER = ("| model | MACs target | search | met | MACs | params | calib acc | test acc | latency ms | "
          "latency ratio | evaluations | time s |")


def format_row(r: Row) -> str:
    target = "-" if r.run == "unpruned" else f"{r.target:.2f}"
    return (f"| {r.model} | {target} | {r.run} | {'yes' if r.met else 'no'} | {r.macs:.3f} | {r.params:.3f} | "
            f"{r.calib_accuracy:.4f} | {r.test_accuracy:.4f} | {r.latency_ms:.4f} | {r.latency_ratio:.2f} | "
            f"{r.evaluations} | "
            f"{r.seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: the MLP at MACs 0.5 only")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "cnn"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.3])
    parser.add_argument("--json", type=Path, help="write the rows to this file as JSON")
    args = parser.parse_args()
    models, targets = (["mlp"], [0.5]) if args.quick else (args.models, args.targets)
    timed_runs = 20 if args.quick else 200
    started = time.perf_counter()
    rows: list[Row] = []
    for name in models:
        rows += bench(name, targets, RUNS, timed_runs, args.quick)
    print()
    print(f"Searches judged on the calibration split (max_drop={MAX_DROP}), scored on the test split; "
          f"{THREADS} threads; total {time.perf_counter() - started:.0f} s")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for r in rows:
        print(format_row(r))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
