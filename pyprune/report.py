"""What a pruning run did and what it cost: the step history and the report (Markdown, JSON, plot).

:class:`History` records every committed step of a search (what was removed, the metric, params,
MACs, latency where measured, evaluations and time). :class:`Report` adds the before/after
table, the frozen groups and why, the settings, the process figures and a plain statement of the
outcome; :meth:`Report.write` writes ``report.md``, ``report.json``, ``history.json`` and
``metric_vs_cost.png`` into a directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._output import atomic_write, jsonable, pyplot, save_figure
from ._table import format_table

__all__ = ["HistoryEntry", "History", "Figures", "Report", "plot_search_paths"]


@dataclass
class HistoryEntry:
    """One committed step (or a measurement) of a search."""

    step: int
    action: str  # e.g. "remove 2 units of group conv2", "start", "latency checkpoint"
    removed: dict[str, list[int]]  # slot id -> items removed in this step
    metric: float | None
    loss: float | None  # fidelity loss used for ranking (KL or MSE to the original), if computed
    params: int
    macs: int
    nonzeros: int
    latency_ms: float | None
    evaluations: int  # candidate evaluations so far
    seconds: float  # wall time since the search started
    restored: dict[str, list[int]] = field(default_factory=dict)  # items given back (rounding widths)


class History:
    """The committed steps of a search, in order."""

    def __init__(self) -> None:
        self.entries: list[HistoryEntry] = []

    def add(self, entry: HistoryEntry) -> None:
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> HistoryEntry:
        return self.entries[i]

    def to_list(self) -> list[dict[str, Any]]:
        return [jsonable(asdict(e)) for e in self.entries]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_list(), indent=indent)

    def write(self, path: str | os.PathLike) -> Path:
        return atomic_write(Path(path), self.to_json())

    @classmethod
    def from_list(cls, entries: list[dict[str, Any]]) -> History:
        """The history :meth:`to_list` describes (NaN/inf figures come back as None)."""
        history = cls()
        for e in entries:
            if not isinstance(e, dict):
                raise ValueError(f"a history entry must be a JSON object, got {e!r}")
            history.add(HistoryEntry(**{**e, "removed": {k: list(v) for k, v in e["removed"].items()},
                                        "restored": {k: list(v) for k, v in e.get("restored", {}).items()}}))
        return history

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls.from_list(json.loads(text))

    @classmethod
    def read(cls, path: str | os.PathLike) -> History:
        """Read a ``history.json`` written by :meth:`write`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Figures:
    """The complexity and quality of one model."""

    params: int
    nonzeros: int
    macs: int
    file_size: int
    latency_ms: float | None
    metric: float | None


@dataclass
class Report:
    """Everything a user needs to judge a pruning run."""

    strategy: str
    granularity: str
    importance: str
    target: str
    constraint: str
    metric_name: str
    before: Figures
    after: Figures
    met: bool  # target reached with the constraint holding
    interrupted: bool
    statement: str
    evaluations: int
    recovery_runs: int
    seconds: float
    history: History
    frozen: dict[str, str] = field(default_factory=dict)  # group/layer id -> reason
    removed: dict[str, int] = field(default_factory=dict)  # slot id -> number of items removed
    settings: dict[str, Any] = field(default_factory=dict)
    verified: bool | None = None  # the shipped model matched the masked evaluation
    max_output_error: float | None = None
    synthetic_data: bool = False
    test: dict[str, Figures] | None = None  # optional held-out figures, keyed by label
    threshold: float | None = None  # the worst metric value the constraint accepted
    target_kind: str | None = None  # "macs", "params", "sparsity" or "latency"
    target_value: float | None = None
    # what the run assumed about the model and its inputs: opset conversion, synthetic data,
    # symbolic sizes, held inputs, the output the metric judged (one sentence each)
    notes: list[str] = field(default_factory=list)

    # -- views ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "history"}
        d["history"] = self.history.to_list()
        return jsonable(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """The before/after table as Markdown."""
        rows = [
            ("parameters", self.before.params, self.after.params),
            ("non-zero parameters", self.before.nonzeros, self.after.nonzeros),
            ("MACs per sample", self.before.macs, self.after.macs),
            ("file size (bytes)", self.before.file_size, self.after.file_size),
        ]
        lines = ["| | before | after | ratio |", "|---|---:|---:|---:|"]
        for name, a, b in rows:
            lines.append(f"| {name} | {a:,} | {b:,} | {_ratio(b, a)} |")
        if self.before.latency_ms is not None and self.after.latency_ms is not None:
            t0, t1 = self.before.latency_ms, self.after.latency_ms
            lines.append(f"| latency (ms) | {t0:.3f} | {t1:.3f} | {_ratio(t1, t0)} |")
        if self.before.metric is not None and self.after.metric is not None:
            m0, m1 = self.before.metric, self.after.metric
            name = self.metric_name + (" (synthetic inputs)" if self.synthetic_data else "")
            lines.append(f"| {name} | {m0:.4f} | {m1:.4f} | {m1 - m0:+.4f} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        out = [
            f"# pyprune report: {self.strategy} search, {self.granularity} granularity",
            "",
            f"**{self.statement}**",
            "",
            f"- target: {self.target}",
            f"- constraint: {self.constraint}",
            f"- importance: {self.importance}",
            f"- metric: {self.metric_name}" + (" (on synthetic data)" if self.synthetic_data else ""),
            "",
        ]
        if self.notes:
            out += ["## Model and inputs", ""] + [f"- {note}" for note in self.notes] + [""]
        out += [
            "## Before and after",
            "",
            self.table(),
            "",
        ]
        if self.test:
            out += ["## Held-out data", "", "| | metric |", "|---|---:|"]
            out += [f"| {k} | {v.metric:.4f} |" for k, v in self.test.items() if v.metric is not None]
            out.append("")
        out += [
            "## Process",
            "",
            f"- candidate evaluations: {self.evaluations}",
            f"- recovery runs (statistics re-estimation): {self.recovery_runs}",
            f"- wall time: {self.seconds:.2f} s",
            f"- committed steps: {max(len(self.history) - 1, 0)}",
        ]
        if self.verified is not None:
            err = "" if self.max_output_error is None else f" (max output difference {self.max_output_error:.3g})"
            out.append(f"- shipped model equals the masked evaluation: {'yes' if self.verified else 'NO'}{err}")
        if self.removed:
            out += ["", "## Removed", "", "| group / layer / weight | removed |", "|---|---:|"]
            out += [f"| `{k}` | {v} |" for k, v in self.removed.items() if v]
        if self.frozen:
            out += ["", "## Frozen (not pruned)", "", "| id | reason |", "|---|---|"]
            out += [f"| `{k}` | {v} |" for k, v in self.frozen.items()]
        out += ["", "## Search path", "", "| step | action | metric | params | MACs | latency (ms) | evaluations | s |",
                "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for e in self.history:
            metric = "-" if e.metric is None else f"{e.metric:.4f}"
            lat = "-" if e.latency_ms is None else f"{e.latency_ms:.3f}"
            out.append(f"| {e.step} | {e.action} | {metric} | {e.params:,} | {e.macs:,} | {lat} | "
                       f"{e.evaluations} | {e.seconds:.2f} |")
        out += ["", "![metric vs cost](metric_vs_cost.png)", ""]
        return "\n".join(out)

    def __str__(self) -> str:
        lines = [self.statement, *(f"note: {n}" for n in self.notes), self.table(),
                 f"{self.evaluations} evaluations, {self.seconds:.2f} s"]
        if self.frozen:
            lines.append(f"{len(self.frozen)} frozen (not pruned): "
                         + "; ".join(f"{k} ({v})" for k, v in list(self.frozen.items())[:3])
                         + ("; ..." if len(self.frozen) > 3 else ""))
        steps = max(len(self.history) - 1, 0)
        lines.append(f"{steps} committed step{'s' if steps != 1 else ''}; print(report.details()) or "
                     "report.write(folder) for the search path and every frozen group")
        return "\n".join(lines)

    def details(self) -> str:
        """The summary, the search path (every committed step) and every frozen group, as text."""
        lines = [self.statement, *(f"note: {n}" for n in self.notes), self.table(),
                 f"{self.evaluations} evaluations, {self.seconds:.2f} s", "", "search path:"]
        rows = [[str(e.step), e.action, "-" if e.metric is None else f"{e.metric:.4f}", f"{e.params:,}",
                 f"{e.macs:,}", "-" if e.latency_ms is None else f"{e.latency_ms:.3f}", str(e.evaluations)]
                for e in self.history]
        lines.append(format_table(["step", "action", "metric", "params", "MACs", "latency (ms)", "evaluations"],
                                  rows, indent="  "))
        if self.frozen:
            lines += ["", "frozen (not pruned):"] + [f"  {k}: {v}" for k, v in self.frozen.items()]
        return "\n".join(lines)

    # -- files ----------------------------------------------------------------------------------

    def plot(self, path: str | os.PathLike) -> Path:
        """PNG of the metric along the search path against the cost (fraction of MACs or params),
        with the unpruned metric, the constraint's threshold and the target marked."""
        by_macs = self.target_kind != "params" and self.before.macs > 0
        return plot_search_paths(
            {self.strategy: self.history}, self.before.macs if by_macs else self.before.params,
            by="macs" if by_macs else "params", metric_name=self.metric_name, baseline=self.before.metric,
            threshold=self.threshold, target=self.target_value if self.target_kind in ("macs", "params") else None,
            title=f"{self.strategy} search ({self.granularity})", path=path)

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write report.md, report.json, history.json and metric_vs_cost.png into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return {
            "markdown": atomic_write(d / "report.md", self.markdown()),
            "json": atomic_write(d / "report.json", self.to_json()),
            "history": self.history.write(d / "history.json"),
            "plot": self.plot(d / "metric_vs_cost.png"),
        }


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.3f}" if before else "-"


def plot_search_paths(paths: dict[str, History], base: int, *, by: str, metric_name: str,
                      baseline: float | None, threshold: float | None, target: float | None, title: str,
                      path: str | os.PathLike) -> Path:
    """The one plot of search paths (a report's, the demo's): the metric at every committed step
    against the fraction of MACs (``by="macs"``) or params kept, one line per path, with the
    unpruned metric, the constraint's threshold and the target as reference lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for label, history in paths.items():
        points = [((e.macs if by == "macs" else e.params) / max(base, 1), e.metric)
                  for e in history if e.metric is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", linewidth=1, label="unpruned")
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label="constraint")
    if target is not None:
        ax.axvline(target, color="black", linestyle="--", linewidth=1, label=f"{by} target")
    ax.set_xlabel(("MACs" if by == "macs" else "parameters") + " (fraction of original)")
    ax.set_ylabel(metric_name)
    ax.set_title(title)
    ax.invert_xaxis()
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)
