"""What the ``prune`` command, recipes and the demo share: read inputs, prune, save, report.

Everything here is a thin layer over :func:`pyprune.prune`; it adds what a command line needs
around it: files instead of objects, a one-screen summary, and the rule that the best model is
always written, even when the target was not reached or the run was interrupted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._signals import deferred_interrupts

if TYPE_CHECKING:  # heavy imports stay inside the functions so `pyprune --help` stays instant
    from ..data import Dataset
    from ..graph import Model
    from ..options import PruneOptions

__all__ = [
    "DataSource",
    "PruneOutcome",
    "load_model",
    "load_data",
    "sized_model",
    "prune_and_save",
    "save_model",
    "write_report",
    "format_outcome",
    "outcome_json",
    "run_sensitivity",
    "core_threads",
]


@dataclass(frozen=True)
class DataSource:
    """A ``.npz`` file and the key of its labels array (None: no labels)."""

    path: Path
    labels: str | None = None


@dataclass
class PruneOutcome:
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


@contextlib.contextmanager
def core_threads(threads: int | None) -> Iterator[None]:
    """The C++ core's default thread count for one command or recipe, restored after (so the
    entry point called in-process leaves no global setting behind)."""
    if threads is None:
        yield
        return
    from .. import core

    core.set_num_threads(threads)
    try:
        yield
    finally:
        core.set_num_threads(0)  # back to the default: all cores


# ---------------------------------------------------------------------------------------------
# inputs


def load_model(path: str | Path) -> Model:
    from ..graph import load

    return load(path)


def load_data(source: DataSource, model: Model, dims: Mapping[str, int] | None = None,
              input_shapes: Mapping[str, Sequence[int]] | None = None) -> Dataset:
    """Read the arrays ``model`` takes from ``source`` (plus the labels), so one file can also
    carry other arrays (a test split of another size, ...): they are ignored. Inputs that are not
    samples and are missing take their documented defaults (``dims``/``input_shapes`` size them
    where the data does not). Other missing inputs, wrong shapes or dtypes raise DataError here,
    before any pruning starts."""
    from ..data import Dataset, input_specs

    names = [spec.name for spec in input_specs(model)]
    return Dataset.from_npz(source.path, labels=source.labels, inputs=names, optional=True).bind(
        model, dims=dims, input_shapes=input_shapes)


def sized_model(model: Model, data: Dataset | None = None, dims: Mapping[str, int] | None = None,
                input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[Model, str]:
    """``model`` seen at the input sizes a command assumes, and where they came from: the data's
    when given, else ``dims``/``input_shapes`` (--dim, --input-shape), else the model's own."""
    from ..data import Dataset

    if data is not None:
        return model.with_input_shapes(data.bind(model).input_shapes(model)), "the data"
    if dims or input_shapes:
        synthetic = Dataset.synthetic(model, n=1, dims=dims, input_shapes=input_shapes)
        bound = synthetic.bind(model, dims=dims, input_shapes=input_shapes)
        return model.with_input_shapes(bound.input_shapes(model)), "--input-shape/--dim"
    return model, "the model's declared shapes"


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
    reads: Sequence[Path] = (),
) -> PruneOutcome:
    """Prune ``model`` as ``options`` say; write the result to ``output`` and the report to
    ``report`` (either may be None). The best model found is written even when the target was not
    reached or the run was interrupted; an interrupt while writing is remembered, not obeyed, so
    the files are whole. ``reads``: other files the run reads, never to be written over."""
    from ..search import prune

    result = prune(model, data, options=options.with_(threads=threads, quiet=quiet))
    outcome = PruneOutcome(
        model=result.model,
        result=result,
        met=bool(result.met),
        interrupted=bool(result.interrupted),
        metric_text=_metric_text(result),
        # Measured on the shipped model already (the report's figures): counting again would
        # read every weight of a large model once more.
        params=result.report.after.params,
        nonzeros=result.report.after.nonzeros,
        macs=result.report.after.macs,
    )
    with deferred_interrupts() as caught:
        if output is not None:
            outcome.output = save_model(result.model, output, overwrite_input=overwrite_input, protect=reads)
        if report is not None:
            outcome.report = write_report(result, report)
    if caught:
        outcome.interrupted = True
        outcome.met = False
    return outcome


def save_model(model: Model, path: Path, *, overwrite_input: bool = False, protect: Sequence[Path] = ()) -> Path:
    """Save atomically, creating the folder; the input model, its external data and ``protect``
    are refused unless asked (the input only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return model.save(path, overwrite_input=overwrite_input, protect=protect)


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


def format_outcome(outcome: PruneOutcome, *, verbose: bool = False) -> str:
    """What a finished run prints: the report's summary (with ``verbose``, the search path and the
    frozen groups too) and where the files went."""
    report = outcome.result.report
    lines = [report.details() if verbose else str(report)]
    if outcome.output is not None:
        lines.append(f"pruned model: {outcome.output}")
    if outcome.report is not None:
        lines.append(f"report: {outcome.report}")
    return "\n".join(lines)


def outcome_json(outcome: PruneOutcome) -> dict[str, Any]:
    """The run as one JSON object: the report, and where the files went."""
    d = outcome.result.report.to_dict()
    d["output"] = None if outcome.output is None else str(outcome.output)
    d["report_dir"] = None if outcome.report is None else str(outcome.report)
    d["interrupted"] = outcome.interrupted
    d["met"] = outcome.met
    return d


def run_sensitivity(
    model: Model,
    data: Dataset,
    *,
    metric: str | None = None,
    granularity: Literal["channel", "layer"] = "channel",
    importance: str = "l2",
    round_to: int | Literal["auto"] = "auto",
    report: Path | None = None,
    threads: int | None = None,
    quiet: bool = False,
    as_json: bool = False,
    metric_output: str | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    **runs: Any,
) -> Any:
    """Sensitivity analysis of every group (or layer): print the table (or, ``as_json``, one JSON
    object), write it with the plot. ``runs``: budgets and executor (``max_evals``,
    ``time_limit``, ``executor``, ``workers``, ``ray_address``)."""

    from ..search import sensitivity

    result = sensitivity(model, data, metric=metric, granularity=granularity,
                         importance=importance, round_to=round_to, threads=threads, quiet=quiet or as_json,
                         metric_output=metric_output, dims=dims or {}, input_shapes=input_shapes or {}, **runs)
    if report is not None:
        with deferred_interrupts():
            Path(report).mkdir(parents=True, exist_ok=True)
            result.write(report)
    if as_json:
        print(result.to_json())
    elif not quiet:
        print(result)
    return result
