"""The ``pyprune`` command: inspect, prune, sensitivity, bench, run and demo.

Exit codes (the same for every command):

* ``0`` — success;
* ``1`` — the target could not be reached under the constraint; the best model found is still
  saved and reported;
* ``2`` — bad usage or bad input (unknown flag, unreadable model, data that does not fit): one line
  ``pyprune: error: ...`` on stderr, no traceback unless ``--debug``;
* ``3`` — an unexpected internal error (rerun with ``--debug`` for the traceback);
* ``130`` — interrupted (Ctrl-C or SIGTERM) before anything could be saved. An interrupt during a
  search stops it and writes the best model found that meets the constraint (exit ``1``); one
  during the final checks or the writing is remembered and the files are still written whole.

Every output path is checked before any work starts: never a file the run reads (the model, its
external data, the data file, the recipe), never a folder, always a writable place.

Heavy imports (onnxruntime, the graph analysis) happen inside the commands, so ``--help`` stays
instant and a broken optional piece cannot break the whole command line.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import PyPruneError
from ..options import (
    DEFAULT_HOLDOUT,
    DEFAULT_MAX_DROP,
    EXECUTORS,
    GRANULARITIES,
    HOLDOUT_MIN_SAMPLES,
    IMPORTANCE_NAMES,
    RECOVERY_CHOICES,
    STRATEGIES,
    STRATEGY_ALIASES,
)
from ..targets import TARGET_KINDS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_NOT_MET", "EXIT_BAD_INPUT", "EXIT_INTERNAL"]

EXIT_OK = 0
EXIT_NOT_MET = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

class UsageError(PyPruneError, ValueError):
    """A command-line request that parses but makes no sense (e.g. output equal to the input)."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"pyprune: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_BAD_INPUT)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults next to options and keep the examples' line breaks.

    Unset defaults (None, False) are not shown: "(default: None)" says nothing, and options whose
    default depends on other flags describe it in their own help text.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _describe(text: str) -> str:
    """Wrap a description (the formatter keeps line breaks, for the examples in the epilog)."""
    return textwrap.fill(" ".join(text.split()), width=88)


def _examples(*lines: str) -> str:
    return "example:\n" + textwrap.indent("\n".join(lines), "  ")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def _max_drop(text: str) -> float | str | None:
    if text.strip().lower() == "none":
        return None
    if text.strip().lower() == "auto":
        return "auto"
    return _non_negative_float(text)


def _damp(text: str) -> float | None:
    return None if text.strip().lower() == "auto" else _non_negative_float(text)


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME:D0,D1,...`` (the name may itself hold colons: the sizes follow the last one)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:D0,D1,... such as image:1,3,640,640, got {text!r}")
    try:
        sizes = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integer sizes after {name}:, got {dims!r}") from None
    if any(d < 1 for d in sizes):
        raise argparse.ArgumentTypeError(f"expected positive integer sizes after {name}:, got {dims!r}")
    return name, sizes


def _dim(text: str) -> tuple[str, int]:
    """``SYMBOL=N``: the size of a symbolic dimension, by the name the model gives it."""
    name, sep, size = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected SYMBOL=N such as height=640, got {text!r}")
    try:
        value = int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer size after {name}=, got {size!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer size after {name}=, got {size!r}")
    return name, value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _holdout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _round_to(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _ratio(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _command(commands: Any, common: argparse.ArgumentParser, name: str, **details: Any) -> argparse.ArgumentParser:
    """One subcommand: the general options, defaults shown, and its help, description and example."""
    parser: argparse.ArgumentParser = commands.add_parser(name, parents=[common], formatter_class=_Formatter, **details)
    return parser
def _duration(text: str) -> float:
    from ..options import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 10m or 1h, got {text!r}") from None


def _run_options(parser: argparse.ArgumentParser) -> None:
    """Budgets and where candidates are judged (prune and sensitivity)."""
    group = parser.add_argument_group("budget and executor")
    group.add_argument("--max-evals", type=_positive_int, default=None, metavar="N",
                       help="stop after N candidate evaluations and keep the best model found so far")
    group.add_argument("--time-limit", type=_duration, default=None, metavar="T",
                       help="finish within this long (e.g. 90s, 10m, 1h), counted once the files are read: the search "
                            "stops in time to write the best model found so far; "
                            "greedy sizes its steps to reach the target in time (under a constraint, once it falls "
                            "behind in the second half)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="where candidates are judged: this process, a pool of local processes, or Ray "
                            "actors (pip install \"pyprune[ray]\"); the result is the same")
    group.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="workers of the process or ray executor (default: one per core, or per CPU of "
                            "the Ray cluster); each runs --threads threads (default 1)")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="the Ray cluster to use with --executor ray ('auto': the one this machine "
                            "belongs to; default: start Ray on this machine)")


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    return {"max_evals": args.max_evals, "time_limit": args.time_limit, "executor": args.executor,
            "workers": args.workers, "ray_address": args.ray_address}


def _common_options() -> _Parser:
    """Options every command takes (a parent parser, so they may follow the command name)."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("general options")
    group.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="threads for ONNX Runtime and the C++ core (default: all cores)")
    group.add_argument("--quiet", action="store_true", help="no progress bars or tables, errors only")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also print the search path and every frozen group with its reason")
    group.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return common


def _shape_options(parser: argparse.ArgumentParser) -> None:
    """Sizes of symbolic input dimensions, for when no data gives them (every command)."""
    group = parser.add_argument_group("input sizes (symbolic dimensions; data, when given, decides)")
    group.add_argument("--input-shape", type=_input_shape, action="append", default=[],
                       metavar="NAME:D0,D1,...",
                       help="the shape of input NAME, e.g. image:1,3,640,640 (repeat for several inputs)")
    group.add_argument("--dim", type=_dim, action="append", default=[], metavar="SYMBOL=N",
                       help="the size of a symbolic dimension by its name in the model, e.g. height=640 "
                            "(repeat for several)")


def _sizes(args: argparse.Namespace) -> dict[str, Any]:
    """``dims`` and ``input_shapes`` from --dim and --input-shape (a name given twice is refused)."""
    out: dict[str, Any] = {"dims": {}, "input_shapes": {}}
    for flag, attr, key in (("--dim", "dim", "dims"), ("--input-shape", "input_shape", "input_shapes")):
        for name, value in getattr(args, attr):
            if name in out[key] and out[key][name] != value:
                raise UsageError(f"{flag} {name} given twice with different sizes")
            out[key][name] = value
    return out


def _data_options(parser: argparse.ArgumentParser, *, required: bool, metric: bool = True) -> None:
    group = parser.add_argument_group("data and metric" if metric else "data")
    group.add_argument("--data", type=Path, metavar="FILE.npz", required=required, default=None,
                       help="arrays keyed by the model's input names (plus labels, see --labels)" if metric
                       else "arrays keyed by the model's input names: MACs are counted at their sizes")
    if not metric:
        _shape_options(parser)
        return
    group.add_argument("--labels", metavar="KEY", default=None,
                       help="key of the labels array in the data file; without labels the "
                            "metric is fidelity to the original model")
    group.add_argument("--metric", default=None, metavar="NAME",
                       help="how the model is judged: accuracy, f1, agreement, cosine, topN (top1, top5, ...), kl, "
                            "mse (default: accuracy with labels, else agreement with the "
                            "original model; cosine where the output's largest value barely stands out, "
                            "as in an embedding; mse for an output without a class axis)")
    group.add_argument("--metric-output", default=None, metavar="NAME",
                       help="the model output the metric reads (default: the first float output that is "
                            "not a label output, e.g. a classifier's probabilities rather than its labels)")
    _shape_options(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyprune`` command (exposed for documentation and tests)."""
    from .. import __version__

    common = _common_options()
    parser = _Parser(
        prog="pyprune",
        description=_describe("Prune ONNX models (weights, channels/neurons, layers), judged in ONNX Runtime."),
        formatter_class=_Formatter,
        epilog=_examples("pyprune demo",
                         "pyprune inspect model.onnx",
                         "pyprune prune model.onnx -o small.onnx --macs 0.5 --data calib.npz "
                         "--labels y --max-drop 0.01"),
    )
    parser.add_argument("--version", action="version", version=f"pyprune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    # inspect -----------------------------------------------------------------------------------
    p = _command(commands, common, "inspect",
        help="list the prunable groups and layers of a model, with totals",
        description=_describe("Show what can be pruned in MODEL: every channel/neuron group and removable "
                    "layer with its size, MACs, parameters and, when frozen, the reason; plus "
                    "model totals (params, non-zeros, MACs, file size)."),
        epilog=_examples("pyprune inspect model.onnx", "pyprune inspect model.onnx --json > groups.json"),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="ONNX model file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    _data_options(p, required=False, metric=False)
    p.set_defaults(run=_cmd_inspect)

    # prune -------------------------------------------------------------------------------------
    p = _command(commands, common, "prune",
        help="prune a model to a target under a metric constraint",
        description=_describe("Prune MODEL to a target (sparsity, params or MACs ratio, or latency) while the "
                    "metric drops at most --max-drop, and write the smaller model to OUT. Exit "
                    "code 1 means the target was not reached; the best model found is still written."),
        epilog=_examples(
            "pyprune prune model.onnx -o small.onnx --macs 0.5 --data calib.npz --labels y",
            "pyprune prune model.onnx -o sparse.onnx --granularity weight --sparsity 0.7",
            "pyprune prune model.onnx -o fast.onnx --latency 2.5 --data calib.npz --report report/",
            "pyprune prune model.onnx -o small.onnx --macs 0.5 --data calib.npz --time-limit 10m "
            "--executor process",
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="ONNX model file (never modified "
                   "unless --in-place)")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="OUT", default=None,
                     help="where to write the pruned model (required unless --in-place)")
    out.add_argument("--in-place", action="store_true", help="overwrite MODEL with the pruned model")
    out.add_argument("--report", metavar="DIR", default=None,
                     help="write a report (Markdown, JSON, plot) to this directory")
    out.add_argument("--json", action="store_true",
                     help="print the report as one JSON object on stdout instead of the summary")
    how = p.add_argument_group("what to prune and how")
    how.add_argument("--granularity", choices=GRANULARITIES, default="channel",
                     help="weights (unstructured), nm (2:4 weights), channels/neurons, or layers")
    how.add_argument("--importance", default="l2", metavar="NAME",
                     help=f"importance score: {', '.join(IMPORTANCE_NAMES)}")
    how.add_argument("--strategy", choices=STRATEGIES + tuple(STRATEGY_ALIASES), default="greedy",
                     help="search loop; oneshot_global ranks the units of every group together and cuts "
                          "them at one score (oneshot_local, the same as oneshot: the same share of each group)")
    how.add_argument("--seed", type=_seed, default=0, metavar="N",
                     help="seed of every random choice (random importance, random search); 0 by default")
    how.add_argument("--round-to", type=_round_to, default="auto", metavar="N",
                     help="channel/neuron groups keep a multiple of N units (4 leaves room for 2:4 "
                          "weights next); 'auto' keeps multiples of 8 in convolutions of 32+ "
                          "channels, which ONNX Runtime runs fastest, and any count elsewhere")
    how.add_argument("--skip", action="append", default=[], metavar="NAME",
                     help="a group, layer or weight never to touch (as `pyprune inspect` names it); "
                          "repeat for several")
    target = p.add_argument_group("target (exactly one)").add_mutually_exclusive_group(required=True)
    target.add_argument("--sparsity", type=_ratio, metavar="F", help="fraction of prunable weights to zero")
    target.add_argument("--params", type=_ratio, metavar="F", help="keep this fraction of the parameters")
    target.add_argument("--macs", type=_ratio, metavar="F", help="keep this fraction of the MACs")
    target.add_argument("--latency", type=_non_negative_float, metavar="MS",
                        help="reach this latency (milliseconds, measured here with ONNX Runtime)")
    _data_options(p, required=False)
    p.add_argument("--max-drop", type=_max_drop, metavar="F", default="auto",
                   help=f"largest allowed drop of the metric from the original (absolute, e.g. "
                        f"0.01 = one point of accuracy); 'none' prunes to the target regardless "
                        f"and reports the metric (default: {DEFAULT_MAX_DROP} with --data; without "
                        f"data, none: fidelity on random inputs is reported, not used as a constraint)")
    _run_options(p)
    rec = p.add_argument_group("recovery (no training)")
    rec.add_argument("--recovery", choices=RECOVERY_CHOICES, default="auto",
                     help="correct the layers whose input pruning changed, from the data: 'stats' matches "
                          "each layer's per-channel output mean and variance (and re-estimates BatchNorm), "
                          "'lstsq' refits their weights by least squares (OBS for single weights), 'auto' "
                          "lstsq where the data has enough rows for a layer, stats elsewhere")
    rec.add_argument("--holdout", type=_holdout, default=None, metavar="F",
                     help=f"fraction of --data held out to check the constraint on (nothing is fitted or "
                          f"ranked on it); default {DEFAULT_HOLDOUT} with at least {HOLDOUT_MIN_SAMPLES} "
                          f"samples, else 0")
    rec.add_argument("--damp", type=_damp, default=None, metavar="F",
                     help="ridge strength of the least-squares refit (its pull toward the trained weights) "
                          "and OBS dampening, relative to the mean diagonal of the input Gram matrix; "
                          "default auto: chosen per layer on calibration batches set aside")
    rec.add_argument("--block-size", type=_positive_int, default=128, metavar="N",
                     help="columns per block of the OBS update (unstructured and N:M weights)")
    p.set_defaults(run=_cmd_prune)

    # sensitivity -------------------------------------------------------------------------------
    p = _command(commands, common, "sensitivity",
        help="metric of each group/layer pruned alone at several ratios",
        description=_describe("For each prunable group (or layer), prune it alone at several ratios and "
                    "measure the metric; prints a table and optionally writes it with a plot."),
        epilog=_examples("pyprune sensitivity model.onnx --data calib.npz --labels y --report sens/"),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="ONNX model file")
    _data_options(p, required=True)
    p.add_argument("--granularity", choices=("channel", "layer"), default="channel",
                   help="analyse channel/neuron groups or whole layers")
    p.add_argument("--importance", default="l2", metavar="NAME",
                   help=f"importance score: {', '.join(IMPORTANCE_NAMES)}")
    p.add_argument("--round-to", type=_round_to, default="auto", metavar="N",
                   help="groups keep a multiple of N units, as in prune; the table shows the units "
                        "each ratio really removed")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="write the table (Markdown, JSON) and the plot to this directory")
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON object on stdout")
    _run_options(p)
    p.set_defaults(run=_cmd_sensitivity)

    # bench -------------------------------------------------------------------------------------
    p = _command(commands, common, "bench",
        help="params, non-zeros, MACs, size and latency of one or two models side by side",
        description=_describe("Measure MODEL (and OTHER, side by side with ratios): parameters, non-zero "
                    "parameters, MACs, file size and ONNX Runtime latency (median and IQR). With "
                    "--data, latency uses a real batch and the metric is reported too."),
        epilog=_examples("pyprune bench model.onnx small.onnx --data calib.npz --labels y"),
    )
    p.add_argument("model", type=Path, metavar="MODEL", help="ONNX model file")
    p.add_argument("other", type=Path, metavar="OTHER", nargs="?", default=None,
                   help="a second model (e.g. the pruned one) to compare against MODEL")
    _data_options(p, required=False)
    p.add_argument("--runs", type=_positive_int, default=50, metavar="N", help="timed runs per model")
    p.add_argument("--batch", type=_positive_int, default=1, metavar="N",
                   help="batch size for latency (where the model's batch dimension is free)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(run=_cmd_bench)

    # run ---------------------------------------------------------------------------------------
    p = _command(commands, common, "run",
        help="run a pruning pipeline described in a TOML recipe",
        description=_describe("Run the steps of RECIPE (e.g. channels greedily to 60% MACs, then 2:4 "
                    "weights), writing each step's model and report where the recipe says. Paths "
                    "in the recipe are relative to the recipe file."),
        epilog=_examples("pyprune run examples/recipe.toml"),
    )
    p.add_argument("recipe", type=Path, metavar="RECIPE.toml", help="recipe file")
    p.add_argument("--allow-outside", action="store_true",
                   help="let the recipe write outputs and reports outside its own folder")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout")
    p.set_defaults(run=_cmd_run)

    # demo --------------------------------------------------------------------------------------
    p = _command(commands, common, "demo",
        help="prune the bundled digits classifier with three search strategies",
        description=_describe("Prune the small digits classifier shipped with pyprune with recursive, greedy "
                    "and random search to a MACs target under an accuracy constraint, "
                    "print a comparison table, and write the pruned models and a report."),
        epilog=_examples("pyprune demo", "pyprune demo --out /tmp/demo --quick"),
    )
    p.add_argument("--out", type=Path, metavar="DIR", default=Path("pyprune-demo"),
                   help="directory for the pruned models and the report")
    p.add_argument("--quick", action="store_true", help="a faster, smaller run (fewer evaluations)")
    p.set_defaults(run=_cmd_demo)
    return parser


# ---------------------------------------------------------------------------------------------
# commands


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from ..graph import format_inspect, inspect_model
    from .pipeline import DataSource, load_data, load_model, sized_model

    model = load_model(_existing_model(args.model))
    sizes = _sizes(args)
    data = None if args.data is None else load_data(DataSource(args.data), model, **sizes)
    model, source = sized_model(model, data, **sizes)
    info = inspect_model(model)
    info["model"]["sizes_from"] = source
    print(json.dumps(info, indent=2) if args.json else format_inspect(info))
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    import json

    from .._files import check_output, check_report_dir
    from ..options import Limits, PruneOptions
    from ..targets import make_target
    from .pipeline import DataSource, format_outcome, load_data, load_model, outcome_json, prune_and_save

    if args.labels is not None and args.data is None:
        raise UsageError("--labels needs --data")
    model_path = _existing_model(args.model)
    reads = [("model", model_path)] + ([("data file", args.data)] if args.data is not None else [])
    output = _output_path(model_path, args.output, in_place=args.in_place, reads=reads)
    report = None
    if args.report is not None:
        report = check_report_dir(args.report, [*reads, ("output", output)], what="--report")
    # argparse guarantees exactly one of the mutually exclusive target flags
    target = next((k, getattr(args, k)) for k in TARGET_KINDS if getattr(args, k) is not None)
    sizes = _sizes(args)
    options = PruneOptions(granularity=args.granularity, target=make_target(*target),
                           importance=args.importance, strategy=args.strategy,
                           max_drop=args.max_drop, metric=args.metric, seed=args.seed,
                           limits=Limits(round_to=args.round_to, skip=tuple(args.skip)),
                           metric_output=args.metric_output, **sizes, **_run_settings(args),
                           recovery=args.recovery, holdout=args.holdout, damp=args.damp,
                           block_size=args.block_size)
    model = load_model(model_path)
    for external in model.external_files:  # known only once the model is read
        if not args.in_place:
            check_output(output, [("model's external data", external)], what="-o/--output")
    data = None
    if args.data is not None:
        data = load_data(DataSource(args.data, args.labels), model, **sizes)
    outcome = prune_and_save(model, data, options, output=output, report=report, threads=args.threads,
                             quiet=args.quiet or args.json, overwrite_input=args.in_place,
                             reads=[p for label, p in reads if not (args.in_place and label == "model")])
    if args.json:
        print(json.dumps(outcome_json(outcome), indent=2))
    elif not args.quiet:
        print(format_outcome(outcome, verbose=args.verbose))
    if not outcome.met or outcome.interrupted:
        # The statement is in the summary already; on its own (--quiet, --json) it goes here too.
        alone = args.quiet or args.json
        statement = _one_line(outcome.statement)
        if outcome.interrupted:
            text = "interrupted." + (" " + statement.removeprefix("Interrupted: ") if alone else "")
        else:
            text = statement if alone else "target not reached (see above)."
        sys.stderr.write(f"pyprune: {text} The best model found was written to {outcome.output}\n")
        return EXIT_NOT_MET
    return EXIT_OK


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from .._files import check_report_dir
    from .pipeline import DataSource, load_data, load_model, run_sensitivity

    model_path = _existing_model(args.model)
    runs = _run_settings(args)
    report = None
    if args.report is not None:
        report = check_report_dir(args.report, [("model", model_path), ("data file", args.data)],
                                  what="--report")
    model = load_model(model_path)
    sizes = _sizes(args)
    data = load_data(DataSource(args.data, args.labels), model, **sizes)
    run_sensitivity(model, data, metric=args.metric, granularity=args.granularity,
                    importance=args.importance, round_to=args.round_to, report=report, threads=args.threads,
                    quiet=args.quiet, as_json=args.json, metric_output=args.metric_output, **sizes, **runs)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from .._files import same_file
    from .bench import bench_models, format_bench

    if args.other is not None and same_file(args.model, args.other):
        raise UsageError(f"MODEL and OTHER are the same file: {args.other}")
    results = bench_models(args.model, args.other, data=args.data, labels=args.labels,
                           metric=args.metric, runs=args.runs, batch=args.batch,
                           threads=args.threads, metric_output=args.metric_output, **_sizes(args))
    if args.json:
        import json

        print(json.dumps(results, indent=2))
    else:
        print(format_bench(results))
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from .recipes import load_recipe, recipe_json, run_recipe

    recipe = load_recipe(args.recipe, allow_outside=args.allow_outside)
    outcome = run_recipe(recipe, threads=args.threads, quiet=args.quiet or args.json)
    if args.json:
        import json

        print(json.dumps(recipe_json(outcome), indent=2))
    for step, result in outcome.steps:
        if not result.met:
            why = "interrupted. " if result.interrupted else ""
            sys.stderr.write(f"pyprune: step {step.name!r}: {why}{_one_line(result.statement)}\n")
    return EXIT_OK if outcome.met else EXIT_NOT_MET


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, quick=args.quick, threads=args.threads, quiet=args.quiet)
    return EXIT_OK  # a showcase: the table says which strategy reached the target


# ---------------------------------------------------------------------------------------------
# helpers


def _existing_model(path: Path) -> Path:
    """The model file, refused with a clear message when it is a folder or missing."""
    if path.is_dir():
        raise UsageError(f"MODEL {path} is a folder; give the .onnx file")
    if not path.exists():
        raise UsageError(f"MODEL {path} does not exist")
    return path


def _output_path(model: Path, output: str | None, *, in_place: bool, reads: list[tuple[str, Path]]) -> Path:
    """Where the pruned model goes, checked before any work: refuses the input unless
    ``--in-place``, any other file the run reads, folders and unwritable places."""
    from .._files import check_output, same_file

    if in_place:
        if output is not None and not same_file(model, output):
            raise UsageError("--in-place writes to MODEL itself; do not also give -o/--output")
        return model
    if output is None:
        raise UsageError("missing -o/--output OUT (or pass --in-place to overwrite MODEL)")
    if same_file(model, output):
        raise UsageError(f"output {output} is the input model; pass --in-place to overwrite it")
    return check_output(output, reads, what="-o/--output")


def _one_line(message: object) -> str:
    """A message (or exception) on one line, so stderr stays one line per problem."""
    text = " ".join(str(message).split())
    return text or type(message).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyprune`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before anything started
        sys.stderr.write("pyprune: interrupted\n")
        return EXIT_INTERRUPTED
    try:
        from .._signals import sigterm_as_interrupt
        from .pipeline import core_threads

        with core_threads(args.threads), sigterm_as_interrupt():
            return int(args.run(args))
    except BrokenPipeError:
        # The reader went away (`pyprune inspect m.onnx | head`): not an error; silence the
        # interpreter's final flush of stdout, which would fail the same way.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("pyprune: interrupted\n")
        return EXIT_INTERRUPTED
    except (PyPruneError, ValueError, TypeError, OSError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"pyprune: error: {_one_line(exc)}\n")
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug, not bad input: say so, keep the terminal readable
        if args.debug:
            raise
        sys.stderr.write(f"pyprune: internal error: {type(exc).__name__}: {_one_line(exc)} "
                         "(rerun with --debug for the traceback)\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
