"""Sensitivity analysis: how much the metric suffers when one group (or layer) alone is pruned.

Every prunable group is cut at each ratio (its least important units first, in the order the
searches use) while every other group stays whole; at layer granularity each layer is removed on
its own. All candidates are judged in the one masked ONNX Runtime session of a search, so the whole
table costs about ``groups x ratios`` plain inferences over the data; they are independent, so
they go to the run's executor in batches (several groups' ratios at a time) and a process pool
or Ray actors judge them in parallel.

The result prints as a table, writes ``sensitivity.md``, ``sensitivity.json`` and
``sensitivity.png``, and :meth:`Sensitivity.allocate` turns it into per-group ratios for a one-shot
cut (``prune(..., strategy="oneshot", ratios=...)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import metrics as _metrics
from .._output import atomic_write, jsonable, pyplot, save_figure
from .._table import format_table
from ..data import Dataset
from ..graph import Model
from ..options import Limits, PruneOptions, parse_duration
from ..targets import Constraint, as_constraint
from ._progress import Progress
from .problem import BudgetSpent, PruningProblem

__all__ = ["sensitivity", "Sensitivity", "SensitivityRow", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SensitivityRow:
    """One group (or layer) of the table.

    ``counts[i]`` units were removed for ``ratios[i]`` (the largest allowed count not above the
    ratio; several ratios can map to one count in a small group), giving ``values[i]`` and
    ``macs[i]``/``params[i]`` (fractions of the unpruned model's MACs and parameters).
    """

    id: str
    kind: Literal["group", "layer"]
    size: int
    counts: tuple[int, ...]
    values: tuple[float, ...]
    macs: tuple[float, ...]
    params: tuple[float, ...]


@dataclass
class Sensitivity:
    """The metric with each group (or layer) pruned alone; see the module docstring."""

    metric_name: str
    direction: Literal["higher", "lower"]
    baseline: float
    granularity: Literal["channel", "layer"]
    importance: str
    ratios: tuple[float, ...]
    rows: list[SensitivityRow]
    frozen: dict[str, str] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    samples: int = 0
    synthetic_data: bool = False
    interrupted: bool = False  # Ctrl-C: the rows measured until then
    stopped: str = ""  # a budget that ran out (the rows measured until then)

    def row(self, slot_id: str) -> SensitivityRow:
        for r in self.rows:
            if r.id == slot_id:
                return r
        raise KeyError(f"no group or layer {slot_id!r} in the analysis; it has {[r.id for r in self.rows]}")

    def drop(self, value: float) -> float:
        """How much worse ``value`` is than the baseline (positive = worse, for either direction)."""
        return self.baseline - value if self.direction == "higher" else value - self.baseline

    # -- allocation -----------------------------------------------------------------------------

    def allocate(self, max_drop: float | Constraint, relative: bool = False) -> dict[str, float]:
        """Per-group ratios for a one-shot cut: for each group, the largest analysed ratio up to
        which the metric stays within ``max_drop`` of the baseline (every smaller ratio too, so a
        lucky value past a failing one is not trusted). Groups that fail already at the smallest
        ratio get 0. At layer granularity a layer gets 1 (remove) or 0 (keep).

        The drops are measured one group at a time; pruning several groups together usually costs
        more, which the one-shot search checks (and backs off from) when given a constraint.
        """
        constraint = as_constraint(max_drop, relative)
        if constraint is None:
            raise ValueError("allocate needs a max_drop (a number or a Constraint)")
        metric = _metrics.Metric(self.metric_name, lambda o, t: 0.0, self.direction)
        threshold = constraint.threshold(self.baseline, metric)
        out: dict[str, float] = {}
        for r in self.rows:
            chosen = 0.0
            for ratio, value in sorted(zip(self.ratios, r.values)):
                if not metric.meets(value, threshold):
                    break
                chosen = ratio
            out[r.id] = chosen
        return out

    # -- views ----------------------------------------------------------------------------------

    def _header(self) -> list[str]:
        unit = "layer" if self.granularity == "layer" else "group"
        if self.granularity == "layer":
            return [unit, "params", "MACs", "removed"]
        return [unit, "units"] + [f"{r:.0%}" for r in self.ratios]

    def _cells(self, r: SensitivityRow) -> list[str]:
        if self.granularity == "layer":
            return [r.id, f"{1 - r.params[0]:.1%}", f"{1 - r.macs[0]:.1%}"] + [f"{v:.4f}" for v in r.values]
        # Each cell says how many units the ratio really removed: a group keeps one unit, and
        # round_to keeps multiples, so "30%" of a group can mean fewer units (or none).
        return [r.id, str(r.size)] + [f"{v:.4f} ({n})" for v, n in zip(r.values, r.counts)]

    def describe(self) -> str:
        what = "layer removed" if self.granularity == "layer" else "group pruned"
        data = "synthetic data" if self.synthetic_data else f"{self.samples} samples"
        units = "" if self.granularity == "layer" else "; in brackets the units each ratio removed"
        return (f"Sensitivity: {self.metric_name} with one {what} alone ({self.importance} importance, "
                f"{data}); unpruned {self.baseline:.4f}{units}")

    def __str__(self) -> str:
        lines = [self.describe(), "", format_table(self._header(), [self._cells(r) for r in self.rows])]
        if self.frozen:
            lines += ["", "not analysed: " + "; ".join(f"{k} ({v})" for k, v in self.frozen.items())]
        lines.append(f"{self.evaluations} evaluations, {self.seconds:.2f} s" + self._partial())
        return "\n".join(lines)

    def _partial(self) -> str:
        if self.interrupted:
            return " (interrupted: the groups not listed were not measured)"
        if self.stopped:
            return f" (stopped: {self.stopped}; the groups not listed were not measured)"
        return ""

    def markdown(self) -> str:
        header = self._header()
        out = [f"# {self.describe()}", "", "| " + " | ".join(header) + " |",
               "|" + "---|" + "---:|" * (len(header) - 1)]
        out += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        if self.frozen:
            out += ["", "## Not analysed", "", "| id | reason |", "|---|---|"]
            out += [f"| `{k}` | {v} |" for k, v in self.frozen.items()]
        if self.interrupted or self.stopped:
            out += ["", f"**{self._partial().strip(' ()').capitalize()}.**"]
        out += ["", f"{self.evaluations} evaluations, {self.seconds:.2f} s", "",
                "![sensitivity](sensitivity.png)", ""]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "metric": self.metric_name, "direction": self.direction, "baseline": self.baseline,
            "granularity": self.granularity, "importance": self.importance, "ratios": list(self.ratios),
            "rows": [{"id": r.id, "kind": r.kind, "size": r.size, "counts": list(r.counts),
                      "values": list(r.values), "macs": list(r.macs), "params": list(r.params)}
                     for r in self.rows],
            "frozen": dict(self.frozen), "evaluations": self.evaluations, "seconds": self.seconds,
            "samples": self.samples, "synthetic_data": self.synthetic_data, "interrupted": self.interrupted,
            "stopped": self.stopped,
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        """The analysis :meth:`to_dict` describes (e.g. read back to :meth:`allocate` later)."""
        try:
            rows = [SensitivityRow(r["id"], r["kind"], int(r["size"]), tuple(r["counts"]),
                                   *(tuple(float("nan") if v is None else float(v) for v in r[k])
                                     for k in ("values", "macs", "params")))
                    for r in d["rows"]]
            return cls(d["metric"], d["direction"], float(d["baseline"]), d["granularity"], d["importance"],
                       tuple(float(r) for r in d["ratios"]), rows, dict(d.get("frozen", {})),
                       int(d.get("evaluations", 0)), float(d.get("seconds", 0.0)), int(d.get("samples", 0)),
                       bool(d.get("synthetic_data", False)), bool(d.get("interrupted", False)),
                       str(d.get("stopped", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a sensitivity analysis: {exc!r}") from None

    @classmethod
    def read(cls, path: str | os.PathLike) -> Sensitivity:
        """Read a ``sensitivity.json`` written by :meth:`write`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def plot(self, path: str | os.PathLike) -> Path:
        """PNG: the metric against the pruned ratio, one line per group (bars for layers)."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        if self.granularity == "layer":
            ax.barh([r.id for r in self.rows], [r.values[0] for r in self.rows], color="tab:blue")
            ax.axvline(self.baseline, color="grey", linestyle=":", linewidth=1, label="unpruned")
            ax.set_xlabel(f"{self.metric_name} with the layer removed")
        else:
            for r in self.rows:
                ax.plot([0.0, *self.ratios], [self.baseline, *r.values], marker="o", markersize=3, label=r.id)
            ax.axhline(self.baseline, color="grey", linestyle=":", linewidth=1, label="unpruned")
            ax.set_xlabel("fraction of the group pruned")
            ax.set_ylabel(self.metric_name)
        ax.set_title(f"Sensitivity ({self.importance} importance)")
        ax.grid(True, alpha=0.3)
        if len(self.rows) <= 12:
            ax.legend(loc="best", fontsize="small")
        return save_figure(fig, path)

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write sensitivity.md, sensitivity.json and sensitivity.png into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return {
            "markdown": atomic_write(d / "sensitivity.md", self.markdown()),
            "json": atomic_write(d / "sensitivity.json", self.to_json()),
            "plot": self.plot(d / "sensitivity.png"),
        }


def sensitivity(
    model: Model | Any,
    data: Dataset | None = None,
    *,
    metric: str | _metrics.Metric | None = None,
    granularity: Literal["channel", "layer"] = "channel",
    importance: str = "l2",
    ratios: Sequence[float] = DEFAULT_RATIOS,
    reduce: str = "sum",
    normalize: str = "mean",
    skip: Sequence[str] = (),
    round_to: int | Literal["auto"] = "auto",
    seed: int = 0,
    threads: int | None = None,
    batch_size: int | None = None,
    quiet: bool = False,
    metric_output: str | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    max_evals: int | None = None,
    time_limit: float | str | None = None,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
) -> Sensitivity:
    """The metric with each prunable group (or layer) pruned alone at each of ``ratios``.

    ``data`` and ``metric`` work as in :func:`pyprune.prune`: accuracy when the dataset has
    labels, agreement with the unpruned model otherwise (no data: a clearly labelled synthetic
    set). ``ratios`` are fractions of each group's units, in [0, 1] (0: the unpruned model); a group
    always keeps one unit, and with ``round_to`` the count removed is the largest allowed one not
    above the ratio (the table says what was removed).
    ``skip``: group or layer ids to leave out. ``metric_output``, ``dims`` and ``input_shapes``
    as in :class:`~pyprune.options.PruneOptions`. A progress bar shows unless ``quiet``; Ctrl-C
    stops the analysis and returns the groups measured so far (``interrupted`` is then True), and
    so does a spent budget (``max_evals``, ``time_limit``; ``stopped`` then says which).
    ``executor``, ``workers``, ``ray_address``: where the candidates are judged, as in
    :func:`pyprune.prune`.
    """
    if granularity not in ("channel", "layer"):
        raise ValueError(f"sensitivity granularity must be 'channel' or 'layer', got {granularity!r}")
    ratios = _check_ratios(ratios) if granularity == "channel" else (1.0,)
    options = PruneOptions(granularity=granularity, importance=importance, max_drop=None, metric=metric,
                           recovery="none", holdout=0.0, limits=Limits(skip=tuple(skip), round_to=round_to),
                           reduce=reduce,
                           normalize=normalize, seed=seed, threads=threads, batch_size=batch_size,
                           measure_latency=False, quiet=True, metric_output=metric_output,
                           dims=dict(dims or {}), input_shapes={k: tuple(v) for k, v in (input_shapes or {}).items()},
                           max_evals=max_evals, time_limit=None if time_limit is None else parse_duration(time_limit),
                           executor=executor, workers=workers, ray_address=ray_address)
    problem = PruningProblem(model, data, options, ships=False)
    plan = [(s, [s.count_for(r) for r in ratios]) for s in problem.slots]
    progress = Progress(quiet=quiet, label="sensitivity", total=max_evals)
    rows = []
    interrupted, stopped = False, ""
    try:
        # Several groups per batch, so every worker has candidates (about four each) while a
        # stop (Ctrl-C, a budget) still keeps the rows measured before it.
        wanted = 4 * (problem.executor.workers if executor != "local" else 1)
        chunk = max(1, -(-wanted // max(len(ratios), 1)))
        for start in range(0, len(plan), chunk):
            part = plan[start:start + chunk]
            todo = [(slot, n) for slot, counts in part for n in dict.fromkeys(counts) if n != 0]
            evaluations = problem.trials([({slot.id: n}, None) for slot, n in todo])
            judged: dict[tuple[str, int], tuple[float, float, float]] = {}
            for (slot, n), evaluation in zip(todo, evaluations):
                cost = evaluation.cost
                judged[slot.id, n] = (evaluation.metric, cost.macs / max(problem.macs0, 1),
                                      cost.params / max(problem.params0, 1))
                progress.evaluated(f"{slot.id} {n}/{slot.size}: {problem.metric.name}={evaluation.metric:.4f}",
                                   problem.describe_budget())
            for slot, counts in part:
                values = [judged.get((slot.id, n), (problem.baseline, 1.0, 1.0)) for n in counts]
                rows.append(SensitivityRow(slot.id, "layer" if granularity == "layer" else "group", slot.size,
                                           tuple(counts), *(tuple(v[i] for v in values) for i in range(3))))
                progress.committed(f"{slot.id}: " + ", ".join(f"{v[0]:.4f} ({n} removed)"
                                                              for v, n in zip(values, counts)))
    except BudgetSpent as spent:
        stopped = str(spent)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        problem.close()
    return Sensitivity(
        metric_name=problem.metric.name, direction=problem.metric.direction, baseline=float(problem.baseline),
        granularity=granularity, importance=importance, ratios=ratios, rows=rows, frozen=dict(problem.frozen),
        evaluations=problem.evaluations, seconds=problem.elapsed(), samples=len(problem.dataset),
        synthetic_data=problem.dataset.is_synthetic, interrupted=interrupted, stopped=stopped,
    )


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise TypeError(f"ratios must be a non-empty sequence of fractions, got {ratios!r}")
    out = []
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"each ratio must be a fraction in [0, 1], got {r!r}")
        out.append(float(r))
    if len(set(out)) != len(out):
        raise ValueError(f"ratios must be distinct, got {list(ratios)}")
    return tuple(sorted(out))
