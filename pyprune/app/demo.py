"""``pyprune demo``: the bundled digits classifier pruned three ways, offline, in seconds.

The model and data ship inside the package (``pyprune/assets``, made by
``examples/make_digits_models.py``): a Dense 64 -> 32 -> 10 MLP trained on scikit-learn's 8x8
digits, a calibration split the searches are judged on, and a held-out test split the table
reports. Recursive, greedy and random search each remove hidden neurons toward a MACs target
while calibration accuracy may drop by at most :data:`DEMO_MAX_DROP`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._table import format_table
from ..report import plot_search_paths

__all__ = ["run_demo", "DemoOutcome", "DemoRow", "DEMO_STRATEGIES", "DEMO_MACS", "DEMO_MAX_DROP"]

DEMO_STRATEGIES = ("recursive", "greedy", "random")
# The MLP is small and already compact (32 hidden neurons), so every neuron matters: a quarter of
# the MACs under a two-point constraint is what all three searches reach on it.
DEMO_MACS = 0.75
DEMO_MAX_DROP = 0.02
#: ``--quick``: coarser steps and fewer trials (a smaller search), besides fewer timed runs.
QUICK_SEARCH: dict[str, dict[str, Any]] = {
    "recursive": {"step": 0.25},
    "greedy": {"step": 2, "window": 1, "patience": 0},
    "random": {"trials": 30, "step": 0.2},
}


@dataclass
class DemoRow:
    """One line of the demo's table."""

    strategy: str
    accuracy: float  # on the held-out test split
    calib_accuracy: float
    params: int
    macs: int
    latency_ms: float
    evaluations: int | None
    seconds: float | None
    met: bool = True
    model_path: Path | None = None
    report_path: Path | None = None


@dataclass
class DemoOutcome:
    directory: Path
    rows: list[DemoRow] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(row.met for row in self.rows)


def _packaged(name: str) -> Path:
    """A file shipped in ``pyprune/assets`` (a real path: wheels install it as a plain file)."""
    path = resources.files("pyprune").joinpath("assets", name)
    if not path.is_file():
        raise FileNotFoundError(f"the demo's {name} is missing from the pyprune installation "
                                f"(expected at {path}); reinstall pyprune")
    return Path(str(path))


def run_demo(out: str | Path = "pyprune-demo", *, quick: bool = False, threads: int | None = None,
             quiet: bool = False) -> DemoOutcome:
    """Prune the bundled digits MLP with each of :data:`DEMO_STRATEGIES`, print the table and
    write ``<strategy>.onnx`` plus ``<strategy>/`` (its report) and ``README.md`` to ``out``."""
    from ..data import Dataset
    from ..evaluate import measure_latency, run_model
    from ..graph import load
    from ..options import PruneOptions
    from ..targets import MACs
    from .pipeline import prune_and_save

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the demo's models and report")
    out.mkdir(parents=True, exist_ok=True)
    model = load(_packaged("digits_mlp.onnx"))
    with np.load(_packaged("digits.npz")) as npz:
        calib = Dataset({"input": npz["input"]}, npz["label"], source="digits calibration split")
        test = Dataset({"input": npz["test_input"]}, npz["test_label"], source="digits test split")
    # The searches take about a second; timing dominates. The MLP runs in microseconds, so many
    # timed runs keep the medians steady; --quick takes fewer. (Fewer calibration images would
    # make every misclassified image cost more accuracy than the constraint allows.)
    runs = 20 if quick else 300

    def accuracy(m: Any, data: Dataset) -> float:
        return float((run_model(m, data, threads)[0].argmax(axis=1) == data.labels).mean())

    def row(name: str, m: Any, **extra: Any) -> DemoRow:
        return DemoRow(strategy=name, accuracy=accuracy(m, test), calib_accuracy=accuracy(m, calib),
                       params=m.params(), macs=m.macs(), latency_ms=float("nan"), **extra)

    outcome = DemoOutcome(directory=out)
    histories: dict[str, Any] = {}
    models = [model]
    outcome.rows.append(row("original", model, evaluations=None, seconds=None))
    if not quiet:
        print(f"pruning the bundled digits MLP to {DEMO_MACS:.0%} of its MACs, calibration "
              f"accuracy may drop at most {DEMO_MAX_DROP * 100:g} points ...")
    for strategy in DEMO_STRATEGIES:
        options = PruneOptions(granularity="channel", target=MACs(DEMO_MACS), importance="l2",
                               strategy=strategy, max_drop=DEMO_MAX_DROP, metric="accuracy", seed=0,
                               search=QUICK_SEARCH[strategy] if quick else {})
        start = time.perf_counter()
        run = prune_and_save(model, calib, options, output=out / f"digits_mlp.{strategy}.onnx",
                             report=out / strategy, threads=threads, quiet=True)
        seconds = time.perf_counter() - start
        outcome.rows.append(row(strategy, run.model, evaluations=run.evaluations, seconds=seconds,
                                met=run.met, model_path=run.output, report_path=run.report))
        histories[strategy] = run.result.history
        models.append(run.model)

    # Timed last, one after the other with a long warm-up, so that no model is timed while the
    # machine is still busy with a search.
    for r, m in zip(outcome.rows, models):
        r.latency_ms = measure_latency(m, threads=threads, runs=runs, warmup=50).median_ms

    table = format_demo_table(outcome.rows)
    plot_search_paths(histories, model.macs(), by="macs", metric_name="calibration accuracy",
                      baseline=outcome.rows[0].calib_accuracy, threshold=outcome.rows[0].calib_accuracy - DEMO_MAX_DROP,
                      target=DEMO_MACS, title="pyprune demo: digits MLP, neurons pruned", path=out / "search_paths.png")
    (out / "README.md").write_text(_markdown(outcome, quick))
    if not quiet:
        print(table)
        print(f"\naccuracy: held-out test split ({len(test)} images); the constraint was checked "
              f"on the calibration split ({len(calib)} images).")
        print(f"wrote the pruned models, one report per strategy and README.md to {out}/")
    return outcome


def format_demo_table(rows: list[DemoRow]) -> str:
    header = ["strategy", "accuracy", "params", "MACs", "latency (ms)", "evaluations", "time (s)"]
    body = []
    for r in rows:
        body.append([
            r.strategy + ("" if r.met else " (target not met)"),
            f"{r.accuracy:.4f}",
            f"{r.params:,}",
            f"{r.macs:,}",
            f"{r.latency_ms:.4f}",
            "-" if r.evaluations is None else str(r.evaluations),
            "-" if r.seconds is None else f"{r.seconds:.2f}",
        ])
    return format_table(header, body)


def _markdown(outcome: DemoOutcome, quick: bool) -> str:
    lines = [
        "# pyprune demo",
        "",
        f"The bundled digits MLP (Dense 64 -> 32 -> 10) pruned by neurons to {DEMO_MACS:.0%} of its "
        f"MACs, calibration accuracy allowed to drop by at most {DEMO_MAX_DROP * 100:g} points"
        + (" (quick mode)." if quick else "."),
        "Accuracy is measured on the held-out test split.",
        "",
        "| strategy | accuracy | calibration accuracy | params | MACs | latency (ms) | evaluations | time (s) "
        "| files |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    footer = [
        "",
        "Calibration accuracy along each search path (every committed step), against the MACs "
        "left; each strategy's folder holds its full report.",
        "",
        "![search paths](search_paths.png)",
    ]
    for r in outcome.rows:
        files = "-"
        if r.model_path is not None:
            files = f"[model]({r.model_path.name})"
            if r.report_path is not None:
                files += f", [report]({r.report_path.name}/)"
        lines.append(
            f"| {r.strategy}{'' if r.met else ' (target not met)'} | {r.accuracy:.4f} | "
            f"{r.calib_accuracy:.4f} | {r.params:,} | {r.macs:,} | {r.latency_ms:.4f} | "
            f"{'-' if r.evaluations is None else r.evaluations} | "
            f"{'-' if r.seconds is None else f'{r.seconds:.2f}'} | {files} |"
        )
    return "\n".join(lines + footer) + "\n"
