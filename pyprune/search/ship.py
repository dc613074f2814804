"""Shipping a search: remove once, fold recovery in, verify, and take every figure from the result.

:func:`ship` turns the problem's final state into the model a user gets: units, layers or weight
elements removed physically, recovery corrections folded into weights and biases (no extra
nodes), then checked — ``onnx.checker`` full check, a fresh ONNX Runtime session, and its outputs
against the masked evaluation the state was chosen by. Every figure of the report (params,
MACs, non-zeros, file size, latency, the metric) is measured on that shipped model, and whether the
target was reached is decided on the shipped model's own counts, never on the search's estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..evaluate import run_model
from ..graph import Model, maskable_weights
from ..report import Figures, History, Report
from ._loop import Loop
from .problem import PruningProblem
from .spaces import Cost

__all__ = ["PruneResult", "ship", "shipped_sparsity"]

#: Outputs of the shipped model may differ from the masked evaluation by this much (relative to
#: the largest output value): float reassociation in a smaller graph, nothing more.
_TOLERANCE = 1e-3


@dataclass
class PruneResult:
    """What a search returns: the pruned model, its report and the step history."""

    model: Model
    report: Report
    history: History

    @property
    def met(self) -> bool:
        """The target was reached (by the shipped model) with the constraint holding."""
        return self.report.met

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted

    @property
    def metric(self) -> float | None:
        """The metric of the shipped model on the search data."""
        return self.report.after.metric

    @property
    def statement(self) -> str:
        return self.report.statement

    def __str__(self) -> str:
        return str(self.report)


def shipped_sparsity(model: Model) -> float:
    """Zeroed fraction of the elements of ``model``'s maskable weights."""
    total = zeros = 0
    for w in maskable_weights(model):
        arr = model.weight(w.name)
        total += arr.size
        zeros += int(arr.size - np.count_nonzero(arr))
    return zeros / total if total else 0.0


def _figures(p: PruningProblem, model: Model, metric: float | None) -> Figures:
    latency = None
    wanted = p.options.measure_latency or (p.target is not None and p.target.kind == "latency")
    if wanted and not (p.interrupted or p.stop_requested):  # who asked to stop does not wait for timings
        latency = p.latency_of(model)
    if model is p.model:  # counted when the search started: no second pass over every weight
        return Figures(p.params0, p.space.nonzeros0, p.macs0, model.file_size(), latency, metric)
    return Figures(model.params(), model.nonzeros(), model.macs(), model.file_size(), latency, metric)


def _shipped_value(p: PruningProblem, kind: str, model: Model, after: Figures) -> float:
    """The figure the target is about, measured on the shipped model."""
    if kind == "params":
        return after.params / max(p.params0, 1)
    if kind == "macs":
        return after.macs / max(p.macs0, 1)
    if kind == "sparsity":
        return shipped_sparsity(model)
    return after.latency_ms if after.latency_ms is not None else float("inf")


def _estimate(p: PruningProblem, kind: str, cost: Cost) -> float:
    if kind == "latency":
        return p.latency_ms if p.latency_ms is not None else float("inf")
    return p.achieved(cost)


def _describe(kind: str, value: float, p: PruningProblem, after: Figures) -> str:
    if kind == "params":
        return f"params {value:.3f} of the original"
    if kind == "sparsity":
        return f"sparsity {value:.3f}"
    if kind == "latency":
        return f"latency {value:.3f} ms (MACs {after.macs / max(p.macs0, 1):.3f} of the original)"
    return f"MACs {value:.3f} of the original"


def ship(p: PruningProblem, loop: Loop) -> PruneResult:
    """The shipped model of ``p``'s current state and its report (see the module docstring)."""
    target = p.ensure_target()
    counts = dict(p.counts)
    masked = p.final_refit()  # the state judged under the corrections it ships with
    plain = _uncorrected(p, counts)  # judged before the search's session goes: never built twice
    p.release_search()  # the search's session and workers are done: their memory goes before the copy's
    # The original's figures first: on a large model its latency session and the pruned copy
    # are then never in memory together.
    before = _figures(p, p.model, p.baseline)
    pruned = p.build(counts)
    pruned.check()
    outputs = run_model(pruned, p.dataset, p.options.threads, p.batch_size)
    errors = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
              for a, b in zip(outputs, masked.outputs) if _numeric(a)]
    scale = max((float(np.max(np.abs(np.asarray(r, np.float64)), initial=0.0)) for r in masked.outputs
                 if _numeric(r)), default=0.0)
    max_error = max(errors, default=0.0)
    verified = max_error <= _TOLERANCE * max(scale, 1.0)
    after_metric = p.check_metric(outputs)
    after = _figures(p, pruned, after_metric)
    if target.kind == "latency" and after.latency_ms is not None:
        p.record_latency(after.latency_ms, pruned)  # the shipped model, measured

    kind = target.kind
    value = _shipped_value(p, kind, pruned, after)
    estimate = _estimate(p, kind, p.cost(counts))
    reached = target.reached(value)
    holds = p.passes(after_metric)
    where = _describe(kind, value, p, after)
    if kind != "latency" and abs(estimate - value) > 1e-6:
        where += f"; the search estimated {estimate:.3f}"
    on = " on synthetic inputs" if p.dataset.is_synthetic else ""
    metric_text = f"{p.metric.name}{on} {after_metric:.4f} (unpruned {p.baseline:.4f})"
    fails = "" if holds else f" It does not meet the constraint (threshold {p.threshold:.4f})."
    if p.interrupted:
        found = " that meets the constraint" if holds else ""
        statement = f"Interrupted: returning the best model found so far{found}: {where}, {metric_text}.{fails}"
    elif reached and holds:
        statement = f"Target reached ({target.describe()}): {where}, {metric_text}."
    elif reached:
        statement = (f"Target reached ({target.describe()}) but the constraint does not hold: {where}, "
                     f"{metric_text}, threshold {p.threshold:.4f}.")
    else:
        why = p.note or "no further step keeps the metric within the constraint"
        if kind != "latency":
            most = p.achieved(p.cost({sl.id: sl.cap for sl in p.slots}))
            if not target.reached(most):
                frozen = "; ".join(f"{k}: {v}" for k, v in list(p.frozen.items())[:5])
                why = (f"{p.note or 'even removing everything the limits allow does not reach it'}: at most "
                       f"{_describe(kind, most, p, after).split(' (')[0]} can be reached at {p.granularity} granularity"
                       + (f" (not prunable: {frozen}{'; ...' if len(p.frozen) > 5 else ''})" if frozen else ""))
        statement = (f"Target not reached ({target.describe()}): stopped at {where}, {metric_text}, because "
                     f"{why}. " + ("This is the most pruned model found that meets the constraint." if holds
                                   else fails.strip()))
    statement += _recovery_text(p, plain, after_metric)
    if p.stop_requested and not p.interrupted:
        statement += " (Interrupted while the result was checked: it is complete; latency was not measured.)"
    report = Report(
        strategy=loop.label, granularity=p.granularity, importance=p.options.importance,
        target=target.describe(), constraint=_describe_constraint(p), metric_name=p.metric.name,
        before=before, after=after, met=reached and holds, interrupted=p.interrupted or p.stop_requested,
        statement=statement,
        evaluations=p.evaluations, recovery_runs=p.recovery_runs, seconds=p.elapsed(), history=p.history,
        frozen=dict(p.frozen), removed={sid: n for sid, n in counts.items() if n},
        settings=_settings(p, loop), verified=verified, max_output_error=max_error,
        synthetic_data=p.dataset.is_synthetic, threshold=p.threshold, target_kind=kind, target_value=target.value,
        notes=list(p.notes),
        test=_parts(p, outputs, after),
    )
    return PruneResult(pruned, report, p.history)


def _parts(p: PruningProblem, outputs: list[np.ndarray], after: Figures) -> dict[str, Figures] | None:
    """With a holdout: the metric on the fitted (calibration) part and on the holdout, unpruned
    and shipped (the constraint was checked on the holdout)."""
    if not p.holdout:
        return None
    fit, hold = f"calibration ({p.fit_samples} samples)", f"holdout ({p.holdout} samples)"
    return {f"{fit}, unpruned": replace(after, metric=p.fit_baseline),
            f"{fit}, pruned": replace(after, metric=p.fit_metric(outputs)),
            f"{hold}, unpruned": replace(after, metric=p.baseline),
            f"{hold}, pruned": replace(after, metric=p.check_metric(outputs))}


def _uncorrected(p: PruningProblem, counts: dict[str, int]) -> float | None:
    """The metric of the state judged without any recovery correction (None: recovery did nothing)."""
    if not p.recovery.active or not any(counts.values()) or not any(p.recovery.snapshot()):
        return None
    return p.evaluate(counts, corrections="none", count=False).metric


def _recovery_text(p: PruningProblem, plain: float | None, metric: float) -> str:
    """Which recovery ran and what it bought: the same state judged without any correction."""
    if plain is None:
        return ""
    kinds = p.recovery.describe()["layers"]
    what = ", ".join(f"{len(v)} layer{'s' if len(v) != 1 else ''} by {k}" for k, v in kinds.items())
    where = " on the holdout" if p.holdout else ""
    return (f" Recovery ({p.recovery.mode}: {what}): {p.metric.name} {metric:.4f} with it, {plain:.4f} "
            f"without it{where}.")


def _numeric(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.dtype.kind in "fiub"


def _describe_constraint(p: PruningProblem) -> str:
    if p.constraint is None:
        return "none"
    bound = "at least" if p.metric.direction == "higher" else "at most"
    return f"{p.constraint.describe(p.metric)} (unpruned {p.baseline:.4g}: {bound} {p.threshold:.4g})"


def _settings(p: PruningProblem, loop: Loop) -> dict[str, Any]:
    o = p.options
    return {
        "strategy": loop.label, "granularity": p.granularity, "importance": o.importance,
        "reduce": o.reduce, "normalize": o.normalize, "seed": o.seed, "recovery": p.recovery.describe(),
        "holdout": p.holdout,
        "loss": p.loss.name, "metric": p.metric.name,
        "limits": {"max_fraction": o.limits.max_fraction, "min_keep": o.limits.min_keep,
                   "round_to": o.limits.round_to, "skip": list(o.limits.skip)},
        "search": {k: v for k, v in vars(loop).items() if not k.startswith("_") and k != "attempt"},
        "samples": len(p.dataset),
    }
