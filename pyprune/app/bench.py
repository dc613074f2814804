"""``pyprune bench``: one or two models' complexity and ONNX Runtime latency, side by side.

The figures are the ones pyprune's reports use (``Model.params``, ``nonzeros``, ``macs``,
``file_size`` and :func:`pyprune.evaluate.measure_latency`), so a bench of a pruned model agrees with its
report. With data, the metric of each model is measured too: the task metric when the data has
labels, otherwise the second model's fidelity to the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._table import format_table

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["bench_models", "format_bench"]

_ROWS = (
    ("params", "params", "{:,}"),
    ("nonzeros", "non-zeros", "{:,}"),
    ("macs", "MACs", "{:,}"),
    ("file_size", "file size (bytes)", "{:,}"),
    ("latency_ms", "latency (ms, median)", "{:.4f}"),
    ("latency_iqr_ms", "latency IQR (ms)", "{:.4f}"),
)


def bench_models(
    model: str | Path,
    other: str | Path | None = None,
    *,
    data: str | Path | None = None,
    labels: str | None = None,
    metric: str | None = None,
    runs: int = 50,
    batch: int = 1,
    threads: int | None = None,
    metric_output: str | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Measure ``model`` (and ``other``); returns a JSON-ready dict with one entry per model.

    MACs are counted at the input sizes of the data (or of ``dims``/``input_shapes``, which also
    size the synthetic inputs timed without data); ``metric_output`` names the output judged."""
    from .. import metrics as _metrics
    from ..evaluate import fetched_outputs, measure_latency, run_model
    from .pipeline import DataSource, load_data, load_model, sized_model

    if labels is not None and data is None:
        raise ValueError("--labels needs --data")
    paths = [Path(model)] + ([Path(other)] if other is not None else [])
    models = [load_model(p) for p in paths]  # load both first: a bad file fails before timing
    datasets: list[Dataset | None] = [None] * len(models)
    if data is not None:
        datasets = [load_data(DataSource(Path(data), labels), m, dims, input_shapes) for m in models]
    models = [sized_model(m, d, dims, input_shapes)[0] for m, d in zip(models, datasets)]

    chosen = None
    if datasets[0] is not None:
        has_labels = datasets[0].has_labels
        chosen = _metrics.for_data(metric, has_labels)  # a metric needing labels is refused before timing
        if not chosen.needs_labels and other is None:
            chosen = None  # fidelity needs a second model to compare with the first

    entries: list[dict[str, Any]] = []
    for path, m, d in zip(paths, models, datasets):
        latency = measure_latency(m, batch_size=batch, threads=threads, runs=runs, dataset=d, dims=dims,
                                  input_shapes=input_shapes)
        entries.append({
            "path": str(path),
            "params": m.params(),
            "nonzeros": m.nonzeros(),
            "macs": m.macs(),
            "file_size": m.file_size(),
            "latency_ms": latency.median_ms,
            "latency_iqr_ms": latency.iqr_ms,
            "latency_batch": latency.batch_size,
        })
    result: dict[str, Any] = {"models": entries, "runs": runs, "threads": threads}
    if chosen is not None:
        judged = [d for d in datasets if d is not None]
        reference = run_model(models[0], judged[0], threads)
        names = list(fetched_outputs(models[0]))
        chosen = _metrics.for_data(metric, judged[0].has_labels, outputs=dict(zip(names, reference)),
                                   output=metric_output)
        result["metric"] = chosen.name
        if chosen.output is not None:
            result["metric_output"] = fetched_outputs(models[0])[names[chosen.output]]
        for m, d, entry in zip(models, judged, entries):
            target = d.labels if chosen.needs_labels else reference
            entry["metric"] = float(chosen(run_model(m, d, threads), target))
    if other is not None:
        first, second = entries
        result["ratios"] = {
            key: (second[key] / first[key] if first[key] else None)
            for key, _, _ in _ROWS if key != "latency_iqr_ms"
        }
    return result


def format_bench(result: dict[str, Any]) -> str:
    """The figures as a table: one column per model, plus the ratio second/first."""
    entries = result["models"]
    header = [""] + [Path(e["path"]).name for e in entries]
    ratios = result.get("ratios")
    if ratios is not None:
        header.append("ratio")
    rows = []
    for key, label, fmt in _ROWS:
        row = [label] + [fmt.format(e[key]) for e in entries]
        if ratios is not None:
            ratio = ratios.get(key)
            row.append(f"{ratio:.3f}x" if ratio is not None else "")
        rows.append(row)
    if "metric" in result:
        label = result["metric"] + (f" ({result['metric_output']})" if "metric_output" in result else "")
        row = [label] + [f"{e['metric']:.4f}" for e in entries]
        if ratios is not None:
            row.append(f"{entries[1]['metric'] - entries[0]['metric']:+.4f}")
        rows.append(row)
    batch = entries[0]["latency_batch"]
    threads = result["threads"] or "all"
    return (format_table(header, rows)
            + f"\n(latency: batch {batch}, {result['runs']} runs, threads {threads})")
