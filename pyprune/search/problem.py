"""The pruning problem: one model, its data, a metric and a constraint, a space of cuts, one session.

:class:`PruningProblem` is the one place that evaluates states, commits and restores them, runs
recovery and records history. Every candidate is judged inside one ONNX Runtime session
(:class:`~pyprune.evaluate.MaskedSession`) by feeding masks ("mask to search"); loops
(:mod:`pyprune.search`) only call the problem, and :func:`~pyprune.search.ship.ship` removes the
winner physically once.

Loops that judge many independent candidates at once (a greedy round, a sensitivity sweep) hand
them to :meth:`PruningProblem.trials`, which sends those judged under the current corrections to
the run's executor (the search's own session, a process pool or Ray actors; the results are the
same). Budgets (``max_evals``, ``time_limit``) are enforced in one place,
:meth:`PruningProblem.charge`, before every counted evaluation: a spent budget raises
:class:`BudgetSpent`, which the loops treat as an interrupt.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .. import metrics as _metrics
from ..data import DEFAULT_BATCH_SIZE, Dataset, as_model
from ..errors import DataError, UnsupportedModelError
from ..evaluate import (
    Checker,
    Executor,
    Job,
    JobResult,
    LocalExecutor,
    MaskedSession,
    fetched_outputs,
    make_executor,
    measure_latency,
)
from ..graph import DependencyGraph, Model
from ..options import DEFAULT_MACS, PruneOptions, format_duration
from ..recovery import Recovery
from ..report import History, HistoryEntry
from ..targets import Latency, MACs, Target, as_constraint
from ._progress import Progress
from .spaces import SPACES, Cost, Counts, Orders, Slot, Space

__all__ = ["PruningProblem", "Evaluation", "BudgetSpent", "State"]

#: A state a loop asks about: slot counts and, optionally, item orders that differ from the slots'.
State = tuple[Mapping[str, int], Orders | None]

#: Recovery passes stop once no correction moves by more than this (relative: a scale, a shift
#: in units of its channel's unpruned spread, a refitted weight against the weight's largest).
_SETTLED = 1e-3
#: Passes stop once this many in a row each came out further from the original than the pass
#: before: an iteration that keeps moving away (each layer corrected for inputs the others'
#: corrections then change) rarely turns back, and each pass costs a data run and the
#: least-squares sums. (Not "further than the best so far": a CNN whose layers are all refitted
#: at once can overshoot on the first correction and settle, several passes later, far closer
#: than it started.)
_DIVERGING = 2
#: After this many compared candidates in a row whose re-estimated corrections came no closer to
#: the original than the committed ones, candidates are judged with the committed corrections
#: (one data run instead of two or more) until the cut grows by ``_REDECIDE`` of the model.
_QUICK_TRIES = 8
#: Above this many MACs for one run over the fitted calibration samples (about a third of a
#: second on two cores), candidates can be ranked on a part of them (:attr:`rank_samples`).
_RANK_MACS = 20e9
#: A ranking part holds a quarter of the fitted samples, at least this many.
_RANK_MIN = 16
#: Shipping a state (removal, checks, the shipped model's runs and latencies, saving it) costs
#: about what setting the problem up cost (loading, analysis, the first session and its runs):
#: 1.6x on a BERT-base-sized encoder, 2.2x on a ResNet-18 (measured). A time limit keeps this
#: many times the setup back from the search, so that the whole call ends within it.
_SHIP_PER_SETUP = 2.0
#: When one way of correcting below a refit leaves less than 1/_DECISIVE of the other's loss, it
#: is kept for the rest of the search instead of both being tried on every full recovery.
_DECISIVE = 2.0
#: Otherwise it is decided again once the cut has grown by this much (a fraction of the original
#: cost) since the last decision: trying both doubles a full recovery.
_REDECIDE = 0.1
#: Once a full recovery leaves the uncorrected outputs this many times further from the original
#: than its corrections, compared candidates stop judging their uncorrected outputs too.
_HOPELESS = 4.0
#: Multiply-accumulates per batch a search aims for when no batch size is given.
_BATCH_MACS = 256_000_000
#: Samples of the synthetic inputs generated when no data is given.
_SYNTHETIC_SAMPLES = 16


@dataclass(frozen=True)
class Evaluation:
    """One state judged in the session."""

    metric: float
    loss: float
    passed: bool
    cost: Cost
    outputs: list[np.ndarray] = field(default_factory=list, repr=False)
    corrections: tuple | None = field(default=None, repr=False)  # recovery state it was judged with
    quick: bool = False  # judged with quick recovery: a commit runs the full one first
    #: The check stopped once the constraint could no longer be met: ``metric`` is the best value
    #: that was still reachable, the loss is unknown (inf) and there are no outputs.
    stopped_early: bool = False
    #: Judged on the first ``samples`` calibration samples only (a ranking judgement): ``metric``,
    #: ``loss`` and ``passed`` are about those; the state must be judged on all before a commit.
    samples: int | None = None


class BudgetSpent(KeyboardInterrupt):
    """The run's evaluation budget or time limit is spent.

    An interrupt raised by the problem itself: every loop already stops on Ctrl-C at any point
    and leaves the problem at its last state that meets the constraint, which is exactly what a
    spent budget asks for. :func:`~pyprune.search.driver.solve` then ships that state and the
    report says which budget ran out (the message).
    """


def _per_sample(value: Any, samples: int) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == samples


def _finite(outputs: list[np.ndarray]) -> bool:
    return all(np.all(np.isfinite(o)) for o in outputs if isinstance(o, np.ndarray) and o.dtype.kind == "f")


def input_notes(original: Model, judged: Model, dataset: Dataset) -> list[str]:
    """What a run assumed about the model and its inputs, one sentence each, for the report."""
    notes = []
    if original.converted_from is not None:
        notes.append(f"the model (opset {original.converted_from}) was converted to opset {original.opset} "
                     "with onnx.version_converter; the pruned model is written at opset "
                     f"{original.opset}")
    if dataset.is_synthetic:
        notes.append("no data was given: inputs are synthetic (random), so the metric is fidelity to the "
                     "original on random inputs, not accuracy")
    assumed = [f"{s.name} {_dims_text(s.shape)}" for s, o in zip(judged.input_specs(), original.input_specs())
               if s.shape != o.shape]
    if assumed:
        source = "--dim/--input-shape (dims=, input_shapes=)" if dataset.is_synthetic else "the data"
        notes.append(f"symbolic input sizes from {source}; MACs are counted at these, per sample: "
                     + "; ".join(assumed))
    notes.extend(dataset.notes)
    uncounted = judged.uncounted_macs()
    if uncounted:
        named = ", ".join(uncounted[:3]) + (", ..." if len(uncounted) > 3 else "")
        notes.append(f"the MACs of {len(uncounted)} node(s) ({named}) cannot be counted (their shapes stay "
                     "unknown): MAC figures are lower bounds")
    return notes


def _dims_text(shape: list | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_finite_weights(model: Model) -> None:
    """Refuse a model whose float weights hold NaN or Inf: no score ranks them, no metric judges
    what they compute. Names the first such weight."""
    for name in model.weight_names:
        # single values are fill constants (an attention mask's -inf), not weights a score ranks
        if model.is_param(name) and model.weight(name).size > 1:
            w = model.weight(name)
            if w.dtype.kind == "f" and not np.all(np.isfinite(w)):
                bad = int(w.size - np.count_nonzero(np.isfinite(w)))
                raise UnsupportedModelError(f"weight {name!r} holds {bad} NaN or Inf value(s); pyprune prunes "
                                            "models with finite weights only (fix or retrain the model first)")
    model.release_mapped()  # every weight was read once: mapped pages need not stay resident


class PruningProblem:
    """A model to prune, the data it is judged on, and the state of the search.

    Built from :class:`~pyprune.options.PruneOptions`; ``data`` None judges agreement with the
    original on a clearly labelled synthetic set. The model is never modified. ``fit_on_part``:
    full recoveries may be fitted on part of the data on costly models (:attr:`recovery_samples`;
    the loop's ``fits_on_part``); the state shipped is then refitted on all of it
    (:meth:`final_refit`). ``ships`` False: nothing is shipped after the search (a sensitivity
    analysis), so a time limit keeps no time back for it (:meth:`search_seconds`).
    """

    def __init__(self, model: Model | Any, data: Dataset | None, options: PruneOptions, *,
                 fit_on_part: bool = False, ships: bool = True) -> None:
        self.started = time.perf_counter()
        self.ships = ships  # a model will be shipped at the end (not so for a sensitivity analysis)
        self.options = options
        model = as_model(model)
        self.target: Target | None = options.target
        if self.target is not None:
            SPACES[options.granularity].check_target(self.target.kind)
        if data is not None and not isinstance(data, Dataset):
            raise DataError(f"data must be a pyprune.Dataset, got {type(data).__name__}; for a file use "
                            "Dataset.from_npz(path, labels=...), for arrays Dataset({input_name: array}, labels)")
        check_finite_weights(model)
        if data is None:
            data = Dataset.synthetic(model, n=_SYNTHETIC_SAMPLES, seed=options.seed, dims=options.dims,
                                     input_shapes=options.input_shapes)
        self.dataset = data.bind(model, dims=options.dims, input_shapes=options.input_shapes)
        self.constraint = as_constraint(options.resolved_max_drop(self.dataset.is_synthetic))
        _metrics.for_data(options.metric, self.dataset.has_labels)  # refuse a bad metric before any work
        # Shapes as the data feeds them: symbolic sizes (sequence length, image height and width)
        # become the data's, so MACs, and the analysis, are those of the inputs judged.
        self.model: Model = model.with_input_shapes(self.dataset.input_shapes(model))
        self.notes: list[str] = input_notes(model, self.model, self.dataset)
        # A holdout part (the last samples after a seeded shuffle) checks the constraint on data
        # that no recovery was fitted on and no candidate was ranked on (none without a constraint).
        fixed = self.dataset.batch_size_for(self.model, 1)
        self.dataset, self.fit_samples = self.dataset.with_holdout(
            options.holdout_for(len(self.dataset), self.dataset.is_synthetic, self.constraint is not None),
            options.seed, fixed)
        self.graph = DependencyGraph(self.model)
        self.space: Space = SPACES[options.granularity](self.model, self.graph, options, self.dataset)
        self.params0, self.macs0 = self.space.params0, self.space.macs0
        # Statistics of random inputs are not the model's: recovery needs real data.
        mode = "none" if self.dataset.is_synthetic else options.recovery
        if mode == "auto":
            mode = "lstsq"
        self.recovery = Recovery(self.model, self.space.sources(), self.space.groups, mode=mode,
                                 weights=self.granularity in ("weight", "nm"), damp=options.damp,
                                 block_size=options.block_size, seed=options.seed)
        self.recovery.fit_rows = self.fit_samples if self.holdout else None
        self.batch_size = options.batch_size
        if self.batch_size is None:
            # Small models run the calibration data in a few large batches: per-run overheads
            # (ONNX Runtime calls, statistics updates) dominate their evaluations otherwise.
            self.batch_size = int(min(max(_BATCH_MACS // max(self.macs0, 1), DEFAULT_BATCH_SIZE), 1024))
        ranking = None
        if self.macs0 * self.fit_samples > _RANK_MACS and self.fit_samples >= 2 * _RANK_MIN:
            # Costly runs: batches small enough that a loop can rank its candidates on the first
            # of them (whole batches; the per-run overhead of a model this size is negligible).
            ranking = max(_RANK_MIN, self.fit_samples // 4)
            if options.batch_size is None:
                self.batch_size = min(self.batch_size, ranking)
        on_part = fit_on_part and ranking is not None  # full recoveries may fit on part of the data
        # A search that fits its recoveries on all the data ends with a refit toward the residual
        # stream (`refit_stream`): calibration keeps the stream's rows and passes read it.
        self.recovery.stream_fit = not on_part
        parts = self.space.session_parts()
        parts["weights"] = list(dict.fromkeys([*parts.get("weights", []), *self.recovery.overridable]))
        self._session_arguments = dict(threads=options.threads, batch_size=self.batch_size,
                                       affine=self.recovery.affine_points, capture=self.recovery.capture,
                                       output_affine=self.recovery.output_points, split_at=self.fit_samples,
                                       **parts)
        self._session: MaskedSession | None = MaskedSession(self.model, self.dataset, **self._session_arguments)
        self._released_reference: list[np.ndarray] | None = None
        self._executor: Executor | None = None
        #: Calibration samples a loop may rank candidates on (the first batches of the fitted
        #: part; :meth:`trials` with ``samples``), None when every run covers all of them anyway.
        self.rank_samples: int | None = None
        if ranking is not None:
            covered = self.session.samples_in_first(ranking)
            self.rank_samples = covered if covered < self.fit_samples else None
        #: Calibration samples a full recovery fits its corrections on (the ranking part, or twice
        #: it where the refits need the rows), None: all of them. The state is then judged on all
        #: the data under those corrections.
        self.recovery_samples: int | None = None
        if self.recovery.active:  # the unpruned statistics come with the reference outputs
            fit_parts = [] if self.rank_samples is None or not on_part else sorted(
                {n for n in (self.rank_samples, self.session.samples_in_first(2 * self.rank_samples))
                 if n < self.fit_samples})
            self.session.reference = self.recovery.calibrate(self.session, fit_parts)
            if self.recovery.fit_rows in fit_parts:
                self.recovery_samples = self.recovery.fit_rows
        self._ranking: int | None = None  # set while judging on the first samples only
        fetched = self.session.output_names
        self.metric = _metrics.for_data(options.metric, self.dataset.has_labels,
                                        outputs=dict(zip(fetched, self.reference)), output=options.metric_output)
        self.notes.append(self._judged_note())
        if options.metric is None and self.metric.name == "cosine" and self.metric.output is not None:
            weak = _metrics.weak_top1_note(self.reference[self.metric.output])
            if weak:
                self.notes[-1] += f"; {weak}"  # why this metric, beside which output it reads
        self.loss = self._loss_metric(options.loss)
        self.metric_target = self.dataset.labels if self.metric.needs_labels else self.reference
        self.fit_baseline = self.metric(*self._part(self.reference, self.metric_target, fit=True))
        self.baseline = self.metric(*self._part(self.reference, self.metric_target, fit=False))
        self.threshold = None if self.constraint is None else self.constraint.threshold(self.baseline, self.metric)
        # A labelled metric at its best on the checked data: most likely data the model was trained on.
        if self.threshold is not None and self.metric.needs_labels and self.baseline == self.metric.best:
            where = "held-out samples" if self.holdout else "data"
            self.notes.append(f"the unpruned model scores a perfect {self.metric.name} ({self.baseline:.4f}) on the "
                              f"{where} the constraint is checked on: if it was trained on these samples, the "
                              f"constraint says little about data it has not seen (pass samples it was not "
                              f"trained on)")
        self.evaluations = 0
        self.recovery_runs = 0
        self._decided_at: float | None = None  # the saving at which recovery last chose how far to correct
        self._quick_helped: list[bool] = []  # per compared candidate: did re-estimation beat the committed
        self._quick_paused_until: float | None = None  # the cut at which re-estimating candidates resumes
        self._reestimate_helped = False  # set by each _settle
        self._part_recovery_seconds = 0.0  # the last full recovery fitted on `recovery_samples`
        self._uncorrected_hopeless = False  # set by each full _settle
        self.counts: Counts = {s.id: 0 for s in self.slots}
        self.interrupted = False  # the search was stopped before it finished
        self.stop_requested = False  # an interrupt arrived after it finished (while shipping)
        self.history = History()
        self.latency_ms: float | None = None
        self._last_checkpoint_macs = 1.0
        self.progress = Progress(quiet=options.quiet, total=options.max_evals)
        self.base_cost = self.cost(self.counts)
        self.note = ""  # why the loop stopped, when it did not reach the target
        self.current = Evaluation(self.baseline, 0.0, True, self.base_cost, list(self.reference))
        self._record("start", {}, self.baseline, 0.0)
        self._setup_seconds = self.elapsed()

    def _judged_note(self) -> str:
        """Which output the metric reads, and why (for the report)."""
        index = self.metric.output
        if index is None:
            return f"metric {self.metric.name}: reads every output"
        names = self.session.output_names
        name = names[index]
        stands_for = fetched_outputs(self.model)[name]
        via = "" if stands_for == name else f" (output {stands_for!r} through the probabilities {name!r} it maps)"
        outputs = dict(zip(names, self.reference))
        why = ("named" if self.options.metric_output is not None
               else _metrics.judged_output(outputs)[1] if len(names) > 1 else "the only output")
        return f"metric {self.metric.name} judges output {stands_for!r}{via}: {why}"

    def set_target(self, target: Target) -> None:
        """Fix the target (a loop may derive one, e.g. a one-shot cut at given ratios)."""
        self.space.check_target(target.kind)
        self.target = target

    def ensure_target(self) -> Target:
        """The target, the default (``MACs(0.5)``) when none was given; a latency target measures
        the unpruned model first (it may already be fast enough)."""
        if self.target is None:
            self.set_target(MACs(DEFAULT_MACS))
        assert self.target is not None
        if self.target.kind == "latency" and self.latency_ms is None:
            self.measure_current()
        return self.target

    @property
    def reference(self) -> list[np.ndarray]:
        """Outputs of the unpruned model on the data (kept by the session, computed once)."""
        return self.session.reference

    # -- the space, seen through the problem ----------------------------------------------------

    @property
    def slots(self) -> list[Slot]:
        return self.space.slots

    @property
    def by_id(self) -> dict[str, Slot]:
        return self.space.by_id

    @property
    def frozen(self) -> dict[str, str]:
        return self.space.frozen

    @property
    def granularity(self) -> str:
        return self.space.granularity

    @property
    def holdout(self) -> int:
        """Samples held out to check the constraint on (0: it is checked on all of them)."""
        return len(self.dataset) - self.fit_samples

    def _part(self, outputs: list[np.ndarray], target: Any, fit: bool) -> tuple[list[np.ndarray], Any]:
        """Outputs and metric target restricted to the fitted part (``fit``) or to the part the
        constraint is checked on (the holdout; everything when there is none)."""
        if self._ranking is not None:  # a ranking judgement: everything is about its samples
            part = slice(0, self._ranking)
        elif not self.holdout:
            return outputs, target
        else:
            part = slice(0, self.fit_samples) if fit else slice(self.fit_samples, None)
        cut = [np.asarray(o)[part] if _per_sample(o, len(self.dataset)) else o for o in outputs]
        if isinstance(target, np.ndarray):
            return cut, target[part]
        return cut, [np.asarray(t)[part] if _per_sample(t, len(self.dataset)) else t for t in target]

    def changed(self, counts: Mapping[str, int]) -> set[str]:
        """Slots a state cuts."""
        return {sid for sid, n in counts.items() if n}

    def cost(self, counts: Mapping[str, int], orders: Orders | None = None) -> Cost:
        """What a state keeps, as shipped: the space's count plus the biases recovery adds."""
        cost = self.space.cost(counts, orders)
        if self.recovery.active:
            added = self.recovery.added_params(self.changed(counts), self.space.kept_counter(counts, orders))
            if added:
                cost = replace(cost, params=cost.params + added, nonzeros=cost.nonzeros + added)
        return cost

    def _loss_metric(self, loss: str | _metrics.Metric | None) -> _metrics.Metric:
        if isinstance(loss, _metrics.Metric):
            return loss
        ref = np.asarray(self.reference[self.metric.output or 0])
        classifier = ref.ndim >= 2 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating)
        kind = loss or ("kl" if classifier else "mse")
        output = self.metric.output or 0
        if kind in ("kl", "kl_divergence"):
            if classifier and np.all(ref >= 0) and np.allclose(ref.sum(axis=-1), 1.0, atol=1e-3):
                return _metrics.probability_kl(output=output)  # the model already outputs probabilities
            return _metrics.kl_divergence(output=output)
        return _metrics.get(kind)

    # -- the target -----------------------------------------------------------------------------

    def achieved(self, cost: Cost) -> float:
        """The figure the target is compared with (ratio, sparsity or measured ms)."""
        kind = self.ensure_target().kind
        if kind == "params":
            return cost.params / max(self.params0, 1)
        if kind == "macs":
            return cost.macs / max(self.macs0, 1)
        if kind == "sparsity":
            return cost.sparsity
        return self.latency_ms if self.latency_ms is not None else math.inf

    def reached(self, counts: Mapping[str, int]) -> bool:
        target = self.ensure_target()
        if target.kind == "latency":
            return self.latency_ms is not None and target.reached(self.latency_ms)
        return target.reached(self.achieved(self.cost(counts)))

    def saving(self, before: Cost, after: Cost) -> float:
        """Cost saved between two states, in the unit the target is about."""
        kind = self.ensure_target().kind
        if kind in ("macs", "latency"):
            return float(before.macs - after.macs)
        if kind == "params":
            return float(before.params - after.params)
        return float(before.nonzeros - after.nonzeros)

    def still_needed(self, cost: Cost) -> float | None:
        """Cost still to save from ``cost`` to reach a params or MACs target (in the unit of
        :meth:`saving`); None for targets that do not map onto one count (sparsity, latency)."""
        target = self.ensure_target()
        if target.kind == "macs":
            return float(cost.macs - target.value * self.macs0)
        if target.kind == "params":
            return float(cost.params - target.value * self.params0)
        return None

    def describe_cost(self, cost: Cost) -> str:
        """The target's own quantity against the target (with MACs or params for context)."""
        macs = f"MACs={cost.macs / max(self.macs0, 1):.3f}"
        params = f"params={cost.params / max(self.params0, 1):.3f}"
        target = self.target
        if target is None:
            return f"{params} {macs}"
        if target.kind == "sparsity":
            return f"sparsity={cost.sparsity:.3f}/{target.value:g}"
        if target.kind == "params":
            return f"{params}/{target.value:g} {macs}"
        if target.kind == "latency":
            ms = "?" if self.latency_ms is None else f"{self.latency_ms:.3f}"
            return f"latency={ms}/{target.value:g}ms {macs}"
        return f"{macs}/{target.value:g} {params}"

    def passes(self, value: float) -> bool:
        return self.threshold is None or self.metric.meets(value, self.threshold)

    # -- budgets and executors -------------------------------------------------------------------

    def charge(self, n: int = 1) -> None:
        """Before ``n`` counted evaluations: raise :class:`BudgetSpent` when they would exceed
        ``max_evals`` or the search's share of the time limit has passed (budgets are enforced
        here and in :meth:`expect`)."""
        o = self.options
        if o.max_evals is not None and self.evaluations + n > o.max_evals:
            raise BudgetSpent(f"the evaluation budget ({o.max_evals}) ran out")
        self.expect(0.0)

    def expect(self, seconds: float) -> None:
        """Before work expected to take ``seconds``: raise :class:`BudgetSpent` when it would end
        past the search's share of the time limit (:meth:`search_seconds`). A greedy round and
        commit begun at the edge of the share ran 15-35 s past it on a BERT-base-sized encoder."""
        limit, o = self.search_seconds(), self.options
        if o.time_limit is not None and limit is not None and self.elapsed() + seconds >= limit:
            raise BudgetSpent(f"the time limit ({format_duration(o.time_limit)}) ran out")

    def search_seconds(self) -> float | None:
        """Seconds from the start of the call that the search and the final refit may use: the
        time limit less what shipping the result is expected to take (``_SHIP_PER_SETUP``), so
        that the whole call ends within the limit; at least half of it. All of it when nothing
        will be shipped (``ships``); None without a limit."""
        limit = self.options.time_limit
        if limit is None or not self.ships:
            return limit
        return max(limit - _SHIP_PER_SETUP * self._setup_seconds, limit / 2)

    def final_refit_seconds(self) -> float:
        """The expected cost of the refit on all the data that follows the search (0 when none
        will run): the last recovery fitted on the first samples, scaled to all of them."""
        part = self.recovery_samples
        return 0.0 if part is None else self._part_recovery_seconds * self.fit_samples / part

    def describe_budget(self) -> str:
        """Evaluations per second and, for budgeted runs, what is left (for the progress bar)."""
        elapsed = self.elapsed()
        parts = [f"{self.evaluations / elapsed:.2f} eval/s" if elapsed > 0 and self.evaluations else ""]
        o = self.options
        if o.max_evals is not None:
            parts.append(f"{max(o.max_evals - self.evaluations, 0)} evals left")
        if o.time_limit is not None:
            parts.append(f"{max(round(o.time_limit - elapsed), 0)}s left")  # a countdown: always seconds
        return ", ".join(p for p in parts if p)

    @property
    def executor(self) -> Executor:
        """Where batches of candidates are judged (started on first use, see ``options.executor``)."""
        if self._executor is None:
            o = self.options
            self._executor = make_executor(o.executor, self.session, self._checker(), workers=o.workers,
                                           threads=o.threads, address=o.ray_address)
        return self._executor

    def close(self) -> None:
        """Stop the executor's workers (a search's last call; the problem stays usable)."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.close()

    @property
    def session(self) -> MaskedSession:
        """The search's own masked session (built again if :meth:`release_search` let it go)."""
        if self._session is None:
            self._session = MaskedSession(self.model, self.dataset, reference=self._released_reference,
                                          **self._session_arguments)
        return self._session

    def release_search(self) -> None:
        """Let the search's session and workers go (shipping builds the pruned copy next: on a
        large model, two sessions' weights at once are what sets the peak memory)."""
        self.close()
        if self._session is not None:
            self._released_reference = self._session.reference
            self._session = None
            gc.collect()

    def _run(self, jobs: list[Job], count: bool = True) -> Iterator[JobResult]:
        """The jobs' results in order, each as soon as it is ready; for counted evaluations the
        time limit is checked before each (a long batch stops in its middle when time is up)."""
        # A single job runs in the search's own session: no worker could judge it sooner.
        if len(jobs) == 1 or self.options.executor == "local":
            results = LocalExecutor(self.session, self._checker()).map(jobs)
        else:
            results = self.executor.map(jobs)
        for _ in jobs:
            if count:
                self.charge(0)
            yield next(results)

    def _checker(self) -> Checker | None:
        if self.threshold is None:
            return None
        return Checker(self.metric, self.metric_target, self.threshold,
                       judged_from=self.fit_samples if self.holdout else 0)

    @property
    def stops_early(self) -> bool:
        """Whether a pass/fail judgement can stop before the end of the data (a constraint on a
        metric that is a mean of bounded per-sample scores)."""
        # With a holdout the constraint is about its samples only: their batches run first.
        return self.threshold is not None and self.metric.sample_fn is not None

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, counts: Mapping[str, int], orders: Orders | None = None,
                 corrections: Any = None, count: bool = True, early_stop: bool = False) -> Evaluation:
        """Judge one state in the session: the metric, the fidelity loss and the constraint.
        ``corrections``: a recovery snapshot to judge it with (default: the current corrections;
        ``"none"`` or an empty mapping: none at all)."""
        return self._judge_many([(counts, orders)], corrections, count, early_stop)[0]

    def current_on(self, samples: int | None) -> tuple[float, float]:
        """The current state's metric and fidelity loss as a ranking judgement on the first
        ``samples`` sees them (``None``: as the committed evaluation holds them), so that
        candidates judged on those samples are compared with the state they start from."""
        if samples is None:
            return self.current.metric, self.current.loss
        samples = self.session.samples_in_first(samples)
        outs = self.current.outputs
        if not outs:
            judged = self.trials([(self.counts, None)], samples=samples)[0]
            return judged.metric, judged.loss
        with self._on_part(samples):
            return self.check_metric(outs), float(self.loss(*self._part(outs, self.reference, fit=True)))

    @contextmanager
    def _on_part(self, samples: int | None) -> Iterator[None]:
        """Within the block, runs cover the first ``samples`` calibration samples only (whole
        batches) and metric and loss are about them (None: everything as usual)."""
        if samples is None:
            yield
            return
        self._ranking = samples
        try:
            with self.session.first(samples):
                yield
        finally:
            self._ranking = None

    def fit_metric(self, outs: list[np.ndarray]) -> float:
        """The metric on the fitted part of the data (all of it without a holdout)."""
        return self.metric(*self._part(outs, self.metric_target, fit=True))

    def check_metric(self, outs: list[np.ndarray]) -> float:
        """The metric the constraint is checked with: on the holdout (all data without one)."""
        return self.metric(*self._part(outs, self.metric_target, fit=False))

    def trial(self, counts: Mapping[str, int], orders: Orders | None = None, recover: bool | str = False,
              early_stop: bool = False) -> Evaluation:
        """Judge a state; with ``recover`` the recovery corrections are re-estimated for it first
        (the current corrections are left untouched; the new ones travel with the result).
        ``recover="quick"``: layers that least squares refits keep their committed weights and get
        statistics matching on top (how a loop compares many candidates cheaply; a commit then
        runs the full recovery).

        ``early_stop``: the caller needs only pass/fail for a failing state, so its judgement
        may stop once the constraint can no longer be met (``stopped_early``); a passing state
        is judged in full either way, so the results a loop acts on do not change. States judged
        with re-estimated corrections never stop early: their passes need the whole data.
        """
        return self.trials([(counts, orders)], recover, early_stop)[0]

    def trials(self, states: Sequence[State], recover: bool | str = False,
               early_stop: bool = False, samples: int | None = None) -> list[Evaluation]:
        """:meth:`trial` of several independent states, in the order given. Those judged under the
        current corrections go to the run's executor as one batch (possibly in parallel); those
        whose corrections are re-estimated run their passes in the search's own session, where the
        statistics and least-squares sums are gathered.

        ``samples``: judge them on the first ``samples`` calibration samples only (a ranking
        judgement, :attr:`rank_samples`; no early stop, no full recovery): the evaluations say so,
        and a state chosen from them is judged on all the data before it is committed."""
        if samples is not None:
            if recover is True:
                raise ValueError("a ranking judgement on part of the data runs no full recovery")
            samples = self.session.samples_in_first(samples)
            with self._on_part(samples):
                judged = self._trials(states, recover, False, samples)
            return [replace(e, samples=samples) for e in judged]
        return self._trials(states, recover, early_stop, None)

    def _trials(self, states: Sequence[State], recover: bool | str, early_stop: bool,
                samples: int | None) -> list[Evaluation]:
        quick = recover == "quick"
        if not recover or not self.recovery.active or quick and not self._quick_pays():
            return self._judge_many(states, None, True, early_stop, samples)
        judged = []
        for counts, orders in states:
            self.charge(1)
            snap = self.recovery.snapshot()
            try:
                evaluation = self._recovered(counts, orders, full=not quick, passes=2 if quick else None,
                                             settled_for=self.counts)
            finally:
                self.recovery.restore(snap)
            if quick:
                self._quick_helped.append(self._reestimate_helped)
            judged.append(replace(evaluation, quick=quick))
        return judged

    def _quick_pays(self) -> bool:
        """Whether compared candidates are worth re-estimating corrections for: not after
        ``_QUICK_TRIES`` in a row where it brought none closer to the original (statistics matching
        can move a model with no normalisation away from it), until the cut grows by another
        ``_REDECIDE`` of the model."""
        cut = self._cut_fraction(self.counts, None)
        if self._quick_paused_until is not None and cut < self._quick_paused_until:
            return False
        recent = self._quick_helped[-_QUICK_TRIES:]
        if len(recent) == _QUICK_TRIES and not any(recent):
            self._quick_paused_until, self._quick_helped = cut + _REDECIDE, []
            return False
        return True

    def _judge_many(self, states: Sequence[State], corrections: Any, count: bool,
                    early_stop: bool, samples: int | None = None) -> list[Evaluation]:
        if count:
            self.charge(len(states))
        none = isinstance(corrections, str) and corrections == "none" or (
            corrections is not None and not isinstance(corrections, str) and not corrections)
        snap = ({}, {}, {}, {}) if none else corrections
        jobs = []
        for counts, orders in states:
            masks = self.space.masks(counts, orders)
            affine, weights = self.recovery.feed(masks.weights, snap)
            jobs.append(Job(masks.groups, masks.gates, weights, affine, self._mode(early_stop), samples))
        return [self._evaluation(r, c, o, count) for r, (c, o) in zip(self._run(jobs, count), states)]

    def _mode(self, early_stop: bool) -> Literal["run", "check"]:
        return "check" if early_stop and self.stops_early else "run"

    def _evaluation(self, result: JobResult, counts: Mapping[str, int], orders: Orders | None,
                    count: bool) -> Evaluation:
        if result.outputs is None:  # a check that stopped early: failing, loss unknown
            assert result.check is not None
            if count:
                self.evaluations += 1
            cost = self.cost(counts, orders)
            value = result.check.value
            self.progress.evaluated(f"{self.metric.name}<={value:.4f} {self.describe_cost(cost)}",
                                    self.describe_budget())
            return Evaluation(value, math.inf, False, cost, [], stopped_early=True)
        return self._judge(result.outputs, counts, orders, count)

    def _judge(self, outs: list[np.ndarray], counts: Mapping[str, int], orders: Orders | None,
               count: bool) -> Evaluation:
        value = self.check_metric(outs)
        loss = self.loss(*self._part(outs, self.reference, fit=True))
        if count:
            self.evaluations += 1
        cost = self.cost(counts, orders)
        self.progress.evaluated(f"{self.metric.name}={value:.4f} {self.describe_cost(cost)}", self.describe_budget())
        return Evaluation(value, float(loss), self.passes(value), cost, outs)

    def _recovered(self, counts: Mapping[str, int], orders: Orders | None = None, count: bool = True,
                   full: bool = True, passes: int | None = None,
                   settled_for: Mapping[str, int] | None = None) -> Evaluation:
        """Re-estimate corrections under a state's masks and judge the state with them.

        Each pass runs the data once, yielding the outputs under the corrections fed and the
        statistics for the next corrections. Later layers need earlier layers corrected first, so
        passes repeat (one per normalisation layer, up to four, plus one) until the corrections
        settle; a state that needs no correction costs one run.

        Every layer below a cut is corrected from statistics measured under the previous pass's
        corrections of all the others at once. In deep residual stacks (transformer encoders:
        every projection below the cut) that iteration can move away from the original instead of
        settling. So the corrections kept are those whose outputs came closest to the original's
        on the fitted data, compared with no correction at all: recovery never judges a state
        worse than leaving it uncorrected.

        ``settled_for``: the state the current corrections were settled for (the committed one):
        only the layers below the slots whose cut differs from it are estimated again (a greedy
        step moves one slot, and the layers above it keep their inputs). None: every layer below
        a cut. A state with other item orders than the committed one is estimated in full.
        """
        masks = self.space.masks(counts, orders)
        changed = self.changed(counts)
        moved = None if settled_for is None or orders else {
            sid for sid in set(counts) | set(settled_for) if counts.get(sid, 0) != settled_for.get(sid, 0)}
        depth = len(self.recovery.batchnorms) + len(self.recovery.linears)
        passes = passes or min(depth, 4) + 2
        saving = self._cut_fraction(counts, orders) if full and self.recovery.ends_adaptive else 0.0
        if full and self.recovery.ends_adaptive and (
                self._decided_at is None or abs(saving - self._decided_at) >= _REDECIDE):
            # Whether a refit ends the correction on its path is decided on a full recovery, by
            # which brings the outputs closer to the original: correcting what lies below a
            # refit helps a CNN's head, and breaks a transformer encoder's deep stack; on a small
            # first cut the two are often close, so a close decision is taken again as the cut grows.
            # On a costly model both ways are tried on the ranking part of the data, and the
            # chosen one is then run on all of it.
            start, tried, flags = self.recovery.snapshot(), {}, {}
            part = self.rank_samples
            with self._on_part(part):
                for ends in (True, False):
                    self.recovery.refits_end_paths = ends
                    tried[ends] = self._settle(masks, changed, full, passes, moved)
                    flags[ends] = (self._uncorrected_hopeless, self._reestimate_helped)
                    self.recovery.restore(start)
            losses = {e: math.inf if r is None else r[0] for e, r in tried.items()}
            ends = min(losses, key=lambda e: losses[e])
            self.recovery.refits_end_paths = ends
            self._decided_at = saving
            if losses[not ends] > _DECISIVE * losses[ends]:
                self.recovery.ends_adaptive = False  # a clear winner stays: no second run per commit
            if part is None or part == self.recovery_samples:
                # Fitted on the recovery part already (all the data, or a part that is also the
                # ranking part): the chosen way's run is the recovery.
                best, partial = tried[ends], part is not None
                self._uncorrected_hopeless, self._reestimate_helped = flags[ends]
            else:
                best, partial = self._settle_fitted(masks, changed, full, passes, moved)
        else:
            best, partial = self._settle_fitted(masks, changed, full, passes, moved)
        if best is None:  # nothing finite: judge the uncorrected outputs (they fail the constraint)
            self.recovery.clear()
            outs = self.session.run(masks.groups, masks.gates, masks.weights, {})
        else:
            self.recovery.restore(best[1])
            outs = best[2]
            if partial:  # fitted on part of the data: judged on all of it
                outs = self._run_corrected(masks)
        return replace(self._judge(outs, counts, orders, count), corrections=self.recovery.snapshot())

    def final_refit(self) -> Evaluation:
        """The state to ship, judged under the corrections it ships with, after the one refit a
        search cannot afford per candidate: on all the calibration data where its recoveries were
        fitted on the first samples (:meth:`refit_on_all_data`), else toward the residual stream
        block by block (:meth:`refit_stream`)."""
        return self.refit_on_all_data() if self.recovery_samples is not None else self.refit_stream()

    def refit_on_all_data(self) -> Evaluation:
        """Refit the current state's corrections on all the calibration data, once.

        On a costly model every full recovery is fitted on the first samples
        (:attr:`recovery_samples`) and the state judged on all of them; the state to ship is
        refitted on all of them instead: a calibration run that keeps every batch's refit targets
        and statistics, then a recovery from the search's corrections (on a ResNet-18 cut to 0.49
        of its MACs by greedy: cosine 0.9981 -> 0.9987, 15 s). Kept when it brings the
        outputs closer to the original on the fitted data and judges no worse where the
        constraint is checked; the search's corrections stay otherwise. Skipped once a stop was
        asked for, or when the search's share of the time limit (:meth:`search_seconds`) would
        pass before it ends by :meth:`final_refit_seconds` (a lower bound: the last recovery may
        have re-estimated only the layers below one step); its passes stop there."""
        counts = dict(self.counts)
        settled = self.evaluate(counts, count=False)
        part, limit = self.recovery_samples, self.search_seconds()
        if part is None or not any(counts.values()) or self.interrupted or self.stop_requested:
            return settled
        if limit is not None and self.elapsed() + self.final_refit_seconds() >= limit:
            return settled
        start, fit_rows = self.recovery.snapshot(), self.recovery.fit_rows
        self.recovery.fit_rows = self.fit_samples if self.holdout else None
        self.recovery.calibrate(self.session)  # every batch's targets this time
        self.recovery_samples = None
        masks, changed = self.space.masks(counts), self.changed(counts)
        deadline = None if limit is None else self.started + limit
        # Two passes: one refit of every layer on all the data from the search's settled
        # corrections, and its judgement. Further passes moved away again on ResNet-18 (losses
        # 0.0426 under the search's corrections, 0.0226, 0.0290, 0.0531) and took half the time.
        best = self._settle(masks, changed, True, 2, None, deadline=deadline)
        if best is not None:
            self.recovery.restore(best[1])
            judged = replace(self._judge(best[2], counts, None, count=False), corrections=self.recovery.snapshot())
            if self._replaces(judged, settled):
                self.current = judged
                self.notes.append(f"recovery refitted on all {self.fit_samples} fitted samples on the state "
                                  f"shipped, not the first {part} ({self.metric.name} {judged.metric:.4f})")
                return judged
        self.recovery.restore(start)
        self.recovery.fit_rows, self.recovery_samples = fit_rows, part
        return settled

    def refit_stream(self) -> Evaluation:
        """Refit the current state's corrections toward the residual stream, block by block:
        one recovery pass per layer that adds to a stream, in graph order, each aiming that layer
        at the unpruned stream given the final corrections above it (:meth:`Recovery.run_pass`,
        ``stream``), from the corrections the search settled. Returns the state judged under the
        corrections it leaves (what is shipped).

        A search's own recoveries fit every layer at once, each to its own unpruned output, which
        lets the error of every block reach the output through the stream; a block-by-block pass
        per layer is too costly for every candidate, so it runs once, on the state to ship. Kept
        when it brings the outputs closer to the original on the fitted data and the state then
        judges no worse where the constraint is checked (a holdout, when there is one); the
        search's corrections stay otherwise. Skipped once a stop was asked for or the time limit
        has passed (the search's share of it, :meth:`search_seconds`)."""
        counts = dict(self.counts)
        settled = self.evaluate(counts, count=False)
        layers = self.recovery.stream_layers
        limit = self.search_seconds()
        if (not layers or not any(counts.values()) or self.interrupted or self.stop_requested
                or limit is not None and self.elapsed() >= limit):
            return settled
        masks, changed = self.space.masks(counts), self.changed(counts)
        start = self.recovery.snapshot()
        for layer in layers:
            self.recovery.run_pass(self.session, masks, changed, full=True, threads=self.options.threads,
                                   stream=layer)
            self.recovery_runs += 1
        outs = self._run_corrected(masks)
        judged = replace(self._judge(outs, counts, None, count=False), corrections=self.recovery.snapshot())
        if _finite(outs) and self._replaces(judged, settled):
            self.current = judged
            self.notes.append(f"recovery refitted {len(layers)} layer(s) toward the residual stream, block by "
                              f"block, on the state shipped ({self.metric.name} {judged.metric:.4f})")
            return judged
        self.recovery.restore(start)
        return settled

    def _replaces(self, judged: Evaluation, settled: Evaluation) -> bool:
        """Whether a last refit's state replaces the search's settled one: its outputs closer to
        the original on the fitted data, its metric no worse, and passing if the settled one did."""
        higher = self.metric.direction == "higher"
        no_worse = judged.metric >= settled.metric if higher else judged.metric <= settled.metric
        return judged.loss < settled.loss and no_worse and (judged.passed or not settled.passed)

    def _cut_fraction(self, counts: Mapping[str, int], orders: Orders | None) -> float:
        """How much of the model a state cuts: the largest fraction of MACs, parameters or
        non-zeros it removes."""
        c, b = self.cost(counts, orders), self.base_cost
        return max(1 - c.macs / max(b.macs, 1), 1 - c.params / max(b.params, 1), 1 - c.nonzeros / max(b.nonzeros, 1))

    def _run_corrected(self, masks: Any) -> list[np.ndarray]:
        """The outputs of a state's masks under the corrections recovery holds now."""
        affine, weights = self.recovery.feed(masks.weights)
        return self.session.run(masks.groups, masks.gates, weights, affine)

    def _settle_fitted(self, masks: Any, changed: set[str], full: bool, passes: int,
                       moved: set[str] | None) -> tuple[tuple[float, Any, list[np.ndarray]] | None, bool]:
        """:meth:`_settle`, a full recovery on :attr:`recovery_samples` where the problem has them;
        also whether it ran on that part only.

        A full recovery's passes each run the data with the inputs of every refitted layer
        captured; on a costly model that is most of a greedy round. Its least-squares refits keep
        only a few thousand rows per layer (half the calibration images of a ResNet hold
        several times that), and statistics of half the samples are close to those of all, so
        the corrections are fitted on half the samples and the state is then judged, once, on
        all of them (the caller runs that judgement: the outputs returned cover the part)."""
        if not full or self.recovery_samples is None or self._ranking is not None:
            return self._settle(masks, changed, full, passes, moved), False
        began = time.perf_counter()
        with self._on_part(self.recovery_samples):
            settled = self._settle(masks, changed, full, passes, moved)
        self._part_recovery_seconds = time.perf_counter() - began
        return settled, True

    def _settle(self, masks: Any, changed: set[str], full: bool, passes: int,
                moved: set[str] | None, deadline: float | None = None) -> tuple[float, Any, list[np.ndarray]] | None:
        """Run recovery passes until the corrections settle (at most ``passes``, none begun after
        ``deadline``, a ``time.perf_counter`` value): the fitted-data loss, corrections and outputs
        of the pass closest to the original, no correction included; None when no pass gave
        finite outputs."""
        best: tuple[float, Any, list[np.ndarray]] | None = None
        plain_fed = False

        def consider(outs: list[np.ndarray], snap: Any) -> float:
            nonlocal best
            if not _finite(outs):
                return math.inf
            loss = float(self.loss(*self._part(outs, self.reference, fit=True)))
            if best is None or loss < best[0]:
                best = (loss, snap, outs)
            return loss

        worse, previous = 0, math.inf
        first: float | None = None  # the loss under the corrections fed to the first pass
        for i in range(passes):
            fed = self.recovery.snapshot()
            plain_fed = plain_fed or not any(fed)
            outs, change = self.recovery.run_pass(self.session, masks, changed, full=full,
                                                  threads=self.options.threads, moved=moved)
            self.recovery_runs += 1
            loss = consider(outs, fed)
            if i == 0 and best is not None:
                first = best[0]
            worse = worse + 1 if loss > previous else 0
            previous = loss
            if change < _SETTLED or (i == passes - 1 and passes == 2) or worse >= _DIVERGING:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                break  # the corrections of the last pass are not judged: one of those judged is kept
        else:
            consider(self._run_corrected(masks), self.recovery.snapshot())
        if not plain_fed and (full or not self._uncorrected_hopeless):
            corrected = best
            plain = consider(self.session.run(masks.groups, masks.gates, masks.weights, {}), ({}, {}, {}, {}))
            self.recovery_runs += 1
            if full:
                # Compared candidates judge their uncorrected outputs too only while the last full
                # recovery did not leave those far behind (then one run of three per candidate).
                self._uncorrected_hopeless = corrected is not None and plain > _HOPELESS * corrected[0]
        self._reestimate_helped = best is not None and (first is None or best[0] < first)
        return best

    # -- state ----------------------------------------------------------------------------------

    def commit(self, counts: Mapping[str, int], action: str, evaluation: Evaluation,
               orders: Orders | None = None) -> Evaluation:
        """Make ``counts`` the current state, recover, record the step; returns its evaluation.

        Recovery is kept only when the recovered state still meets the constraint (it nearly
        always improves the metric; when it does not, the previous corrections stay). A ranking
        judgement (on part of the data) never stands for the state: it is judged on all of it
        here, and that judgement is recorded and returned, passing or not.
        """
        removed, restored = {}, {}
        for sid, n in counts.items():
            old = self.counts.get(sid, 0)
            order = (orders or {}).get(sid, self.by_id[sid].order)
            if n > old:
                removed[sid] = np.sort(order[old:n]).tolist()
            elif n < old:
                restored[sid] = np.sort(self.by_id[sid].order[n:old]).tolist()
        before = self.state()
        try:
            if orders:
                for sid, order in orders.items():
                    self.by_id[sid].order = np.asarray(order)
            self.counts = dict(counts)
            partial = evaluation.samples is not None
            if self.recovery.active:
                if evaluation.corrections is not None and not evaluation.quick and not partial:
                    self.recovery.restore(evaluation.corrections)
                else:
                    # The corrections the state was judged with: its quick ones, or the current.
                    judged = evaluation.corrections or self.recovery.snapshot()
                    recovered = self._recovered(self.counts, None, count=False, settled_for=before[0])
                    if recovered.passed or not evaluation.passed or partial:
                        evaluation = recovered
                    else:
                        self.recovery.restore(judged)
            elif partial:
                evaluation = self.evaluate(self.counts, count=False)
            self.current = evaluation
            self._record(action, removed, evaluation.metric, evaluation.loss, restored)
            budget = self.describe_budget()
            self.progress.committed(f"{action}: {self.metric.name}={evaluation.metric:.4f} "
                                    f"{self.describe_cost(evaluation.cost)} ({self.evaluations} evaluations, "
                                    f"{self.elapsed():.1f} s{'; ' + budget if budget else ''})")
        except KeyboardInterrupt:
            # Ctrl-C halfway through a commit (e.g. during recovery): go back to the last whole
            # committed state, which meets the constraint, so that is what gets shipped.
            self.restore(before)
            raise
        self._checkpoint(evaluation.cost)
        return evaluation

    def state(self) -> tuple:
        """Everything a commit changes (for :meth:`restore`)."""
        return (dict(self.counts), {s.id: s.order for s in self.slots}, self.recovery.snapshot(),
                self.current, len(self.history))

    def restore(self, state: tuple) -> None:
        """Go back to a :meth:`state`, dropping the history recorded since."""
        counts, orders, snap, self.current, length = state
        self.counts = dict(counts)
        for sid, order in orders.items():
            self.by_id[sid].order = order
        self.recovery.restore(snap)
        del self.history.entries[length:]

    # -- shipping and latency -------------------------------------------------------------------

    def build(self, counts: Mapping[str, int] | None = None, fold: bool = True) -> Model:
        """The physically pruned model of a state (recovery corrections folded into weights)."""
        counts = self.counts if counts is None else counts
        base = self.recovery.fold(self.model, changed=self.changed(counts)) if fold and self.recovery.active \
            else self.model
        pruned = self.space.remove(base, counts)
        for read in {id(m): m for m in (self.model, base)}.values():
            read.release_mapped()  # the cut read the weights it kept: drop the mapped pages
        return pruned

    def _checkpoint(self, cost: Cost) -> None:
        """For latency targets: remove physically and measure once MACs fell another step."""
        if self.target is None or self.target.kind != "latency":
            return
        ratio = cost.macs / max(self.macs0, 1)
        if ratio > self._last_checkpoint_macs - self.options.checkpoint and self.latency_ms is not None:
            return
        self._last_checkpoint_macs = ratio
        self.measure_current()

    def measure_every_commit(self) -> None:
        """Latency targets: measure after every commit (loops whose steps are already coarse)."""
        self._last_checkpoint_macs = math.inf

    def latency_of(self, model: Model) -> float:
        """Median latency of ``model`` as the target asks for it (batch, threads, runs)."""
        target = self.target if isinstance(self.target, Latency) else None
        return measure_latency(model, target.batch_size if target else 1,
                               threads=(target.threads if target else None) or self.options.threads,
                               runs=target.runs if target else 30, dataset=self.dataset).median_ms

    def measure_current(self) -> float:
        """Remove the current state physically and measure its latency (a history entry)."""
        return self.record_latency(self.latency_of(self.build(fold=False)))

    def record_latency(self, ms: float, model: Model | None = None) -> float:
        """Record a latency measured for the current state (of ``model``, when the shipped one)."""
        self.latency_ms = ms
        if model is not None:
            params, macs, nonzeros = model.params(), model.macs(), model.nonzeros()
        else:
            cost = self.cost(self.counts)
            params, macs, nonzeros = cost.params, cost.macs, cost.nonzeros
        self.history.add(HistoryEntry(len(self.history), "latency checkpoint", {}, None, None, params, macs,
                                      nonzeros, ms, self.evaluations, self.elapsed()))
        return ms

    def _record(self, action: str, removed: dict, metric: float, loss: float, restored: dict | None = None) -> None:
        cost = self.cost(self.counts)
        self.history.add(HistoryEntry(len(self.history), action, removed, float(metric), float(loss),
                                      cost.params, cost.macs, cost.nonzeros, None, self.evaluations,
                                      self.elapsed(), restored or {}))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
