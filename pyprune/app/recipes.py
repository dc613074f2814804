"""Pruning pipelines written down as TOML recipes, so the same pruning repeats in CI.

A recipe names an input model, the data it is judged on, and a list of steps; each step is one
:func:`pyprune.prune` call on the previous step's model (e.g. channels greedily to 60% of the
MACs, then 2:4 weights). Every step may write its own model and report; the last model goes to
``output``. A step's ``max_drop`` is measured against the model the step starts from. Paths are
relative to the recipe file. Example::

    model = "model.onnx"
    output = "out/model.pruned.onnx"
    data = { path = "calib.npz", labels = "label" }
    metric = "accuracy"          # default for every step
    max_drop = 0.01              # default for every step ("none": no constraint)
    input_shapes = { image = [1, 3, 640, 640] }   # optional: sizes of symbolic dimensions
    dims = { height = 640 }                       # (the data's sizes win where it has them)
    metric_output = "probabilities"               # optional: the output the metric reads
    time_limit = "10m"           # per step; also max_evals, executor, workers, ray_address

    [[step]]
    name = "channels"
    granularity = "channel"
    strategy = "greedy"
    macs = 0.6                   # the target: one of sparsity, params, macs, latency
    report = "out/channels"

    [[step]]
    name = "2:4 weights"
    granularity = "nm"
    strategy = "oneshot"
    sparsity = 0.5
    max_drop = 0.02

The whole recipe is checked (keys, types, values, that the files exist, that no output is the
input model) before any work starts; a mistake raises :class:`RecipeError` naming the file, the
step and the key.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import OutputError, check_output, check_report_dir
from .._signals import deferred_interrupts
from .._table import format_table
from ..errors import PyPruneError
from ..options import GRANULARITIES, PruneOptions
from ..targets import TARGET_KINDS, make_target
from .pipeline import (
    DataSource,
    PruneOutcome,
    core_threads,
    load_data,
    load_model,
    outcome_json,
    prune_and_save,
    save_model,
)

__all__ = ["Recipe", "RecipeStep", "RecipeError", "RecipeOutcome", "load_recipe", "run_recipe", "recipe_json"]

# Keys a step may set; the pipeline-level ones of the same name are defaults for every step.
_STEP_OPTION_KEYS = ("importance", "strategy", "max_drop", "metric", "seed", "round_to", "skip",
                     "metric_output", "dims", "input_shapes", "max_evals", "time_limit", "executor", "workers",
                     "ray_address", "recovery", "holdout", "damp", "block_size")
_TOP_KEYS = frozenset({"model", "output", "data", "report", "threads", "step", *_STEP_OPTION_KEYS})
_STEP_KEYS = frozenset({"name", "granularity", "output", "report", "data", *_STEP_OPTION_KEYS,
                        *TARGET_KINDS})
_DATA_KEYS = frozenset({"path", "labels"})


class RecipeError(PyPruneError, ValueError):
    """A recipe file that cannot be read or does not describe a valid pipeline."""


@dataclass(frozen=True)
class RecipeStep:
    """One pruning step: what to prune and how, and where its model and report go (optional)."""

    name: str
    options: PruneOptions
    data: DataSource | None = None  # None: the recipe's data
    output: Path | None = None
    report: Path | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; paths are already resolved against the recipe's folder."""

    path: Path
    model: Path
    output: Path
    steps: tuple[RecipeStep, ...]
    data: DataSource | None = None
    report: Path | None = None
    threads: int | None = None


@dataclass
class RecipeOutcome:
    """What a run did: one outcome per step that ran, and whether every step met its target."""

    steps: list[tuple[RecipeStep, PruneOutcome]] = field(default_factory=list)
    output: Path | None = None
    interrupted: bool = False

    @property
    def met(self) -> bool:
        return not self.interrupted and all(o.met for _, o in self.steps)


# ---------------------------------------------------------------------------------------------
# reading and validation


def load_recipe(path: str | Path, *, allow_outside: bool = False) -> Recipe:
    """Read and validate a recipe file; raise :class:`RecipeError` naming any bad key or value.
    Outputs and reports must stay inside the recipe's folder unless ``allow_outside``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {str(path)!r}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    return parse_recipe(raw, path, allow_outside=allow_outside)


def parse_recipe(raw: dict[str, Any], path: Path, *, allow_outside: bool = False) -> Recipe:
    """Validate the parsed TOML of the recipe at ``path`` (relative paths resolve against it).

    Everything the recipe writes is checked here, before any work: outputs and reports stay in
    the recipe's folder (unless ``allow_outside``), none is a folder or a file the run reads (the
    recipe, the model, its data), and no two outputs are the same file."""
    where = str(path)
    base = path.parent
    _check_keys(raw, _TOP_KEYS, where)

    model = _required_path(raw, "model", base, where, must_exist=True)
    output = _required_path(raw, "output", base, where)
    data = _data(raw.get("data"), base, f"{where}: data") if "data" in raw else None
    report = _path(raw, "report", base, where)
    threads = raw.get("threads")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise RecipeError(f"{where}: 'threads' must be a positive integer, got {threads!r}")
    defaults = {k: raw[k] for k in _STEP_OPTION_KEYS if k in raw}

    raw_steps = raw.get("step")
    if raw_steps is None:
        raise RecipeError(f"{where}: no steps; add at least one [[step]] table")
    if not isinstance(raw_steps, list) or not all(isinstance(s, dict) for s in raw_steps):
        raise RecipeError(f"{where}: 'step' must be a list of tables, written [[step]]")
    if not raw_steps:
        raise RecipeError(f"{where}: no steps; add at least one [[step]] table")

    steps = []
    for number, raw_step in enumerate(raw_steps, start=1):
        steps.append(_step(raw_step, number, defaults, base, where))

    names = [s.name for s in steps]
    for name in names:
        if names.count(name) > 1:
            raise RecipeError(f"{where}: two steps are named {name!r}; step names must be unique")
    if data is None and any(s.data is None for s in steps):
        missing = next(s.name for s in steps if s.data is None)
        raise RecipeError(f"{where}: step {missing!r} has no data; set 'data' at the top of the "
                          "recipe or in the step")

    reads = [("recipe", path), ("input model", model)]
    reads += [("data file", d.path) for d in {data, *(st.data for st in steps)} if d is not None]
    written = [("output", output)] + [(f"step {st.name!r} output", st.output) for st in steps if st.output]
    reports = [("report", report)] + [(f"step {st.name!r} report", st.report) for st in steps if st.report]
    for label, target in [*written, *reports]:
        if target is not None and not allow_outside and not _inside(target, base):
            raise RecipeError(f"{where}: {label} {str(target)!r} is outside the recipe's folder {str(base)!r}; "
                              "keep outputs beside the recipe or run with --allow-outside")
    for label, target in written:
        assert target is not None
        if _same_path(target, model):
            raise RecipeError(f"{where}: {label} {str(target)!r} is the input model; the input "
                              "is never overwritten, choose another file")
        try:
            check_output(target, reads, what=label)
        except OutputError as exc:
            raise RecipeError(f"{where}: {exc}") from None
    for label, target in reports:
        if target is not None:
            try:
                check_report_dir(target, reads, what=label)
            except OutputError as exc:
                raise RecipeError(f"{where}: {exc}") from None
    seen: dict[str, str] = {}
    for label, target in written:
        assert target is not None
        key = os.path.realpath(target)
        if key in seen:
            raise RecipeError(f"{where}: {label} and {seen[key]} are the same file {str(target)!r}")
        seen[key] = label
    return Recipe(path=path, model=model, output=output, steps=tuple(steps), data=data,
                  report=report, threads=threads)


def _step(raw: dict[str, Any], number: int, defaults: dict[str, Any], base: Path, where: str) -> RecipeStep:
    name = raw.get("name", f"step{number}")
    if not isinstance(name, str) or not name.strip():
        raise RecipeError(f"{where}: step {number}: 'name' must be a non-empty string, got {name!r}")
    label = f"{where}: step {number} ({name!r})"
    _check_keys(raw, _STEP_KEYS, label)

    granularity = raw.get("granularity")
    if granularity is None:
        raise RecipeError(f"{label}: missing 'granularity' (one of {', '.join(GRANULARITIES)})")
    targets = {k: raw[k] for k in TARGET_KINDS if k in raw}
    if len(targets) != 1:
        found = f"got {', '.join(sorted(targets))}" if targets else "got none"
        raise RecipeError(f"{label}: give exactly one target key of {', '.join(TARGET_KINDS)} ({found})")
    ((kind, value),) = targets.items()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecipeError(f"{label}: {kind!r} must be a number, got {value!r}")

    values = {**defaults, **{k: raw[k] for k in _STEP_OPTION_KEYS if k in raw}}
    if "skip" in values and not isinstance(values["skip"], list):
        raise RecipeError(f"{label}: 'skip' must be a list of group, layer or weight names, got {values['skip']!r}")
    if isinstance(values.get("max_drop"), str) and values["max_drop"].strip().lower() == "none":
        values["max_drop"] = None  # TOML has no null: "none" means no constraint
    for key in ("dims", "input_shapes"):
        if key in values and not isinstance(values[key], dict):
            raise RecipeError(f"{label}: {key!r} must be a table such as "
                              + ("{ height = 640 }" if key == "dims" else "{ image = [1, 3, 640, 640] }")
                              + f", got {values[key]!r}")
    try:
        options = PruneOptions.from_settings({"granularity": granularity, "target": make_target(kind, value), **values})
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{label}: {exc}") from None
    data = _data(raw["data"], base, f"{label}: data") if "data" in raw else None
    return RecipeStep(name=name, options=options, data=data,
                      output=_path(raw, "output", base, label),
                      report=_path(raw, "report", base, label))


def _data(value: Any, base: Path, where: str) -> DataSource:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: expected a file name or a table {{ path = ..., labels = ... }}, "
                          f"got {value!r}")
    _check_keys(value, _DATA_KEYS, where)
    path = _required_path(value, "path", base, where, must_exist=True)
    labels = value.get("labels")
    if labels is not None and not isinstance(labels, str):
        raise RecipeError(f"{where}: 'labels' must be the name of an array in the data file, got {labels!r}")
    return DataSource(path, labels)


def _path(raw: dict[str, Any], key: str, base: Path, where: str, *, required: bool = False,
          must_exist: bool = False) -> Path | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise RecipeError(f"{where}: missing {key!r}")
        return None
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}: {key!r} must be a path (a string), got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if must_exist and not path.is_file():
        raise RecipeError(f"{where}: {key!r} file {value!r} does not exist (looked for {path})")
    return path


def _required_path(raw: dict[str, Any], key: str, base: Path, where: str, *, must_exist: bool = False) -> Path:
    path = _path(raw, key, base, where, required=True, must_exist=must_exist)
    assert path is not None  # required: a missing key raised
    return path


def _check_keys(table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise RecipeError(f"{where}: unknown key {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved, symlinks followed) lies inside ``folder``."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _same_path(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# running


def run_recipe(recipe: Recipe, *, threads: int | None = None, quiet: bool = False) -> RecipeOutcome:
    """Run every step in order; write step outputs, reports and the final model.

    A step that does not reach its target still hands its best model to the next step (the
    outcome's ``met`` is then False). Ctrl-C inside a step keeps that step's best model, writes it
    as the final output and stops the pipeline.
    """
    if threads is None:
        threads = recipe.threads
    with core_threads(threads):
        return _run_steps(recipe, threads, quiet)


def _run_steps(recipe: Recipe, threads: int | None, quiet: bool) -> RecipeOutcome:
    outcome = RecipeOutcome()
    model = load_model(recipe.model)
    datasets: dict[DataSource, Any] = {}
    total = len(recipe.steps)
    reads = [recipe.path, recipe.model] + [d.path for d in {recipe.data, *(st.data for st in recipe.steps)} if d]
    for number, step in enumerate(recipe.steps, start=1):
        source = step.data or recipe.data
        assert source is not None  # parse_recipe guarantees a data source per step
        if source not in datasets:
            datasets[source] = load_data(source, model, step.options.dims, step.options.input_shapes)
        if not quiet:
            print(f"[{number}/{total}] {step.name}: {step.options.describe()}")
        report = step.report
        if report is None and recipe.report is not None:
            report = recipe.report / _slug(step.name)
        result = prune_and_save(model, datasets[source], step.options, output=step.output,
                                report=report, threads=threads, quiet=quiet, reads=reads)
        outcome.steps.append((step, result))
        model = result.model
        if result.interrupted:
            outcome.interrupted = True
            break
    with deferred_interrupts() as caught:
        outcome.output = save_model(model, recipe.output, protect=reads)
    outcome.interrupted = outcome.interrupted or bool(caught)
    if not quiet:
        print(format_outcome(outcome))
    return outcome


def recipe_json(outcome: RecipeOutcome) -> dict[str, Any]:
    """The outcome as one JSON object: each step's report and outputs, the final model."""
    return {
        "met": outcome.met,
        "interrupted": outcome.interrupted,
        "output": None if outcome.output is None else str(outcome.output),
        "steps": [{"name": step.name, **outcome_json(result)} for step, result in outcome.steps],
    }


def format_outcome(outcome: RecipeOutcome) -> str:
    """A table of the steps that ran: metric, params, non-zeros, MACs, whether the target was met."""
    rows = []
    for step, result in outcome.steps:
        rows.append([step.name, result.metric_text, f"{result.params:,}", f"{result.nonzeros:,}",
                     f"{result.macs:,}", "yes" if result.met else "NO", str(step.output or "-")])
    table = format_table(["step", "metric", "params", "non-zeros", "MACs", "target met", "output"], rows)
    tail = f"final model: {outcome.output}"
    if outcome.interrupted:
        tail += " (interrupted: later steps did not run)"
    return f"{table}\n{tail}"


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip().lower())
    return keep.strip("-") or "step"
