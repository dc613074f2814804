"""What the ``prune`` command, recipes and the demo share: read inputs, prune, save, report.

Everything here is a thin layer over :func:`pyprune.prune`; it adds what a command line needs
around it: files instead of objects, checks before any work starts, a one-screen summary, and the
rule that the best model is always written, even when the target was not reached or the run was
interrupted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TargetError

if TYPE_CHECKING:  # heavy imports stay inside the functions so `pyprune --help` stays instant
    from .data import Dataset
    from .graph import Model

__all__ = [
    "GRANULARITIES",
    "STRATEGIES",
    "TARGET_KINDS",
    "DataSource",
    "PruneOptions",
    "RunOutcome",
    "load_model",
    "load_data",
    "prune_and_save",
    "save_model",
    "format_table",
]

GRANULARITIES = ("weight", "nm", "channel", "layer")
STRATEGIES = ("oneshot", "recursive", "greedy", "random")
TARGET_KINDS = ("sparsity", "params", "macs", "latency")
DEFAULT_MAX_DROP = 0.01


@dataclass(frozen=True)
class DataSource:
    """A ``.npz`` file and the key of its labels array (None: no labels)."""

    path: Path
    labels: str | None = None


@dataclass(frozen=True)
class PruneOptions:
    """One pruning run's settings, checked on construction (ValueError/TypeError naming the field)."""

    granularity: str
    target: tuple[str, float]  # (kind, value), kind in TARGET_KINDS
    importance: str = "l2"
    strategy: str = "greedy"
    max_drop: float | None = DEFAULT_MAX_DROP  # None: no constraint
    metric: str | None = None  # None: accuracy with labels, agreement without
    seed: int = 0
    round_to: int | str = "auto"  # groups keep a multiple of this many units (see search.Limits)
    skip: tuple[str, ...] = ()  # ids of groups, layers or weights never to touch

    def __post_init__(self) -> None:
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("strategy", self.strategy, STRATEGIES)
        kind, _ = self.target
        _choice("target", kind, TARGET_KINDS)
        self.make_target()  # the target classes say what a valid value is
        if not isinstance(self.importance, str) or not self.importance:
            raise TypeError(f"'importance' must be a name such as 'l2', got {self.importance!r}")
        from . import importance

        importance.needs_data(self.importance)  # raises ValueError listing the known names
        if self.max_drop is not None:
            if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)):
                raise TypeError(f"'max_drop' must be a number, got {self.max_drop!r}")
            if not self.max_drop >= 0:
                raise ValueError(f"'max_drop' must be a non-negative number, got {self.max_drop!r}")
        if self.metric is not None:
            from . import metrics

            if not isinstance(self.metric, str):
                raise TypeError(f"'metric' must be a metric name, got {self.metric!r}")
            metrics.get(self.metric)  # raises ValueError listing the known names
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"'seed' must be an integer, got {self.seed!r}")
        if self.round_to != "auto":
            if isinstance(self.round_to, bool) or not isinstance(self.round_to, int):
                raise TypeError(f"'round_to' must be an integer or 'auto', got {self.round_to!r}")
            if self.round_to < 1:
                raise ValueError(f"'round_to' must be at least 1, got {self.round_to!r}")
        if isinstance(self.skip, str) or not all(isinstance(x, str) and x for x in self.skip):
            raise TypeError(f"'skip' must be a list of group, layer or weight names, got {self.skip!r}")
        object.__setattr__(self, "skip", tuple(self.skip))  # a TOML list arrives as a list

    def describe(self) -> str:
        kind, value = self.target
        goal = f"{value:g} ms latency" if kind == "latency" else f"{kind} {value:g}"
        drop = "no constraint" if self.max_drop is None else f"max drop {self.max_drop:g}"
        return (f"{self.granularity} by {self.importance}, {self.strategy} search to {goal}, "
                f"{drop}")

    def make_target(self) -> Any:
        from . import targets

        kind, value = self.target
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{kind!r} must be a number, got {value!r}")
        cls = {"sparsity": targets.Sparsity, "params": targets.Params, "macs": targets.MACs,
               "latency": targets.Latency}[kind]
        try:
            return cls(value)
        except TargetError as exc:  # name the option as the user wrote it
            raise TargetError(f"{kind!r}: {exc}") from None


@dataclass
class RunOutcome:
    """One pruning run as the command line sees it."""

    model: Model
    result: Any  # pyprune.PruneResult
    met: bool
    interrupted: bool
    metric_text: str
    params: int
    nonzeros: int
    macs: int
    output: Path | None = None
    report: Path | None = None

    @property
    def evaluations(self) -> int:
        return int(self.result.report.evaluations)

    @property
    def statement(self) -> str:
        """One sentence: what was reached, or how far the run got and why it stopped."""
        return str(self.result.statement)


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field!r} must be one of {', '.join(allowed)}; got {value!r}")


# ---------------------------------------------------------------------------------------------
# inputs


def load_model(path: str | Path) -> Model:
    from .graph import load

    return load(path)


def load_data(source: DataSource, model: Model) -> Dataset:
    """Read ``source`` and keep the arrays ``model`` takes, so one file can also carry other
    arrays (a test split, ...). Missing inputs, wrong shapes or dtypes raise DataError here,
    before any pruning starts."""
    from .data import Dataset, input_specs

    data = Dataset.from_npz(source.path, labels=source.labels)
    arrays = data.arrays
    wanted = {spec.name for spec in input_specs(model)}
    extra = sorted(set(arrays) - wanted)
    if extra and wanted <= set(arrays):
        data = Dataset({k: arrays[k] for k in wanted}, data.labels, source=data.source)
    return data.bind(model)


# ---------------------------------------------------------------------------------------------
# running


def prune_and_save(
    model: Model,
    data: Dataset | None,
    options: PruneOptions,
    *,
    output: Path | None,
    report: Path | None = None,
    threads: int | None = None,
    quiet: bool = False,
    overwrite_input: bool = False,
    original_path: Path | None = None,
) -> RunOutcome:
    """Prune ``model`` as ``options`` say; write the result to ``output`` and the report to
    ``report`` (either may be None). The best model found is written even when the target was not
    reached or the run was interrupted."""
    from ._prune import prune
    from .search import Limits

    result = prune(
        model,
        data,
        granularity=options.granularity,
        importance=options.importance,
        strategy=options.strategy,
        target=options.make_target(),
        max_drop=options.max_drop,
        metric=options.metric,
        seed=options.seed,
        limits=Limits(round_to=options.round_to, skip=options.skip),
        threads=threads,
        quiet=quiet,
    )
    outcome = RunOutcome(
        model=result.model,
        result=result,
        met=bool(result.met),
        interrupted=bool(result.interrupted),
        metric_text=_metric_text(result),
        params=result.model.params(),
        nonzeros=result.model.nonzeros(),
        macs=result.model.macs(),
    )
    if output is not None:
        outcome.output = save_model(result.model, output, overwrite_input=overwrite_input)
    if report is not None:
        outcome.report = write_report(result, report)
    return outcome


def save_model(model: Model, path: Path, *, overwrite_input: bool = False) -> Path:
    """Save atomically, creating the folder; the input model is refused unless asked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return model.save(path, overwrite_input=overwrite_input)


def write_report(result: Any, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result.report.write(directory)
    return directory


def _metric_text(result: Any) -> str:
    report = result.report
    if report.after.metric is None:
        return "-"
    return f"{report.metric_name} {report.after.metric:.4f}"


# ---------------------------------------------------------------------------------------------
# output


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with aligned columns (numbers right-aligned)."""
    cells = [header] + rows
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def numeric(text: str) -> bool:
        return bool(text) and (text[0].isdigit() or text[0] in "+-.") and text not in "-"

    lines = []
    for r, row in enumerate(cells):
        parts = [c.rjust(w) if r and numeric(c) else c.ljust(w) for c, w in zip(row, widths)]
        lines.append("  ".join(parts).rstrip())
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_outcome(outcome: RunOutcome) -> str:
    """What a finished run prints: the report's summary and where the files went."""
    lines = [str(outcome.result.report)]
    if outcome.output is not None:
        lines.append(f"pruned model: {outcome.output}")
    if outcome.report is not None:
        lines.append(f"report: {outcome.report}")
    return "\n".join(lines)


def run_sensitivity(
    model: Model,
    data: Dataset,
    *,
    metric: str | None = None,
    granularity: str = "channel",
    importance: str = "l2",
    report: Path | None = None,
    threads: int | None = None,
    quiet: bool = False,
) -> Any:
    """Sensitivity analysis of every group (or layer): print the table, write it with the plot."""
    from .search.sensitivity import sensitivity

    result = sensitivity(model, data, metric=metric, granularity=granularity,
                         importance=importance, threads=threads, quiet=quiet)
    if report is not None:
        Path(report).mkdir(parents=True, exist_ok=True)
        result.write(report)
    if not quiet:
        print(result)
    return result
