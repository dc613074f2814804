"""What every search loop shares: the places it can cut, the one session that judges candidates,
cost accounting, the constraint, recovery, history, progress, Ctrl-C and the final removal.

A search works on *slots*: a channel group, a removable layer or a weight tensor. Each slot
orders its items (units, the layer itself, weight elements) from least to most important and a
search state is simply how many items of each slot are removed (a prefix of that order). Every
candidate is judged inside one ONNX Runtime session (:class:`~pyprune.evaluate.MaskedSession`)
by feeding masks; the winner is removed physically once, at the end, and the shipped model is
checked against the masked evaluation it was chosen by.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import onnx

from .. import importance as _importance
from .. import metrics as _metrics
from .._session import MaskedSession, make_session, run_batches
from .._latency import measure_latency
from ..data import DEFAULT_BATCH_SIZE, Dataset, as_model
from ..errors import TargetError
from ..graph import DependencyGraph, Group, Model
from ..graph._layer_surgery import remove_layers
from ..graph._weights import apply_weight_masks, maskable_weights, nm_masks
from ..report import Figures, History, HistoryEntry, Report
from ..surgery import remove_units
from ..targets import Constraint, Latency, MACs, Target, as_constraint
from .recovery import Recovery

__all__ = ["Limits", "Slot", "Cost", "Evaluation", "PruneResult", "Search", "GRANULARITIES"]

GRANULARITIES = ("channel", "layer", "weight", "nm")
#: Recovery passes stop once no correction (scale or shift) moves by more than this.
_SETTLED = 1e-4
#: Multiply-accumulates per batch a search aims for when no batch size is given.
_BATCH_MACS = 256_000_000
Granularity = Literal["channel", "layer", "weight", "nm"]


#: With ``round_to="auto"``, convolution groups of at least this many channels keep a multiple of
#: ``_AUTO_ROUND``: ONNX Runtime's CPU convolutions work on blocks of 8 channels (NCHWc), and other
#: counts fall back to slower kernels. Measured in benchmarks/bench_search.py on the digits CNN:
#: arbitrary counts ran 1.1-2.0x slower than the unpruned model, multiples of 8 0.67-0.95x.
_AUTO_ROUND = 8
_AUTO_MIN_SIZE = 32
_CONVOLUTIONS = frozenset({"Conv", "ConvTranspose"})


@dataclass(frozen=True)
class Limits:
    """Per-group limits.

    ``max_fraction``: never remove more than this fraction of any group (at least ``min_keep``
    units always stay). ``round_to``: the number of units kept is a multiple of this (or all);
    ``"auto"`` (the default) keeps multiples of 8 in convolution groups of 32 channels or more,
    which keeps ONNX Runtime on its fast blocked kernels, and any count elsewhere.
    ``skip``: ids of groups, layers or weights never to touch.
    """

    max_fraction: float = 1.0
    min_keep: int = 1
    round_to: int | Literal["auto"] = "auto"
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.max_fraction) <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {self.max_fraction!r}")
        if int(self.min_keep) < 1:
            raise ValueError(f"min_keep must be at least 1, got {self.min_keep!r}")
        if self.round_to != "auto" and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int)
                                        or self.round_to < 1):
            raise ValueError(f"round_to must be a positive integer or 'auto', got {self.round_to!r}")
        if isinstance(self.skip, str):
            object.__setattr__(self, "skip", (self.skip,))

    def round_for(self, group: Group) -> int:
        """The multiple ``group`` keeps its unit count at."""
        if self.round_to != "auto":
            return int(self.round_to)
        if group.op_type in _CONVOLUTIONS and group.size >= _AUTO_MIN_SIZE:
            return _AUTO_ROUND
        return 1


@dataclass
class Slot:
    """One place to cut. Items ``order[:n]`` are removed when ``n`` items are (a prefix)."""

    id: str
    kind: Literal["group", "layer", "weight", "nm"]
    size: int
    order: np.ndarray  # item indices, least important first
    scores: np.ndarray  # score of each item, by item index (normalised for groups)
    cap: int  # most items that may be removed
    round_to: int = 1
    depth: int = 0  # position of the slot's root in the graph (larger = nearer the output)
    nm_mask: np.ndarray | None = None  # for kind "nm": the keep-mask the single item applies

    def allowed(self, n: int) -> bool:
        if not 0 <= n <= self.cap:
            return False
        return n == 0 or self.round_to == 1 or (self.size - n) % self.round_to == 0

    def next_count(self, n: int, step: int) -> int | None:
        """The smallest allowed count removing at least ``step`` more items, or None."""
        m = n + max(int(step), 1)
        while m <= self.cap:
            if self.allowed(m):
                return m
            m += 1
        return None

    def count_for(self, ratio: float) -> int:
        """The largest allowed count not above ``ratio`` of the slot."""
        m = min(int(math.floor(ratio * self.size + 1e-9)), self.cap)
        while m > 0 and not self.allowed(m):
            m -= 1
        return max(m, 0)

    def removed_items(self, n: int) -> np.ndarray:
        return np.sort(self.order[:n])


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    nonzeros: int
    sparsity: float  # zeroed fraction of the prunable weight elements


@dataclass(frozen=True)
class Evaluation:
    """One candidate judged in the session."""

    metric: float
    loss: float
    passed: bool
    cost: Cost
    outputs: list[np.ndarray] = field(default_factory=list, repr=False)
    corrections: tuple | None = field(default=None, repr=False)  # recovery state it was judged with


@dataclass
class PruneResult:
    """What a search returns: the pruned model, its report and the step history."""

    model: Model
    report: Report
    history: History

    @property
    def met(self) -> bool:
        """The target was reached with the constraint holding."""
        return self.report.met

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted

    @property
    def metric(self) -> float | None:
        """The metric of the pruned model on the search data."""
        return self.report.after.metric

    @property
    def statement(self) -> str:
        return self.report.statement

    def __str__(self) -> str:
        return str(self.report)


Counts = dict[str, int]


class Search:
    """Shared machinery of the pruning loops; subclasses implement :meth:`_loop`.

    Args:
        model: the model to prune (never modified).
        data: calibration data the candidates are judged on (None: a clearly labelled
            synthetic dataset judged by agreement with the original).
        granularity: ``"channel"`` (dependency groups), ``"layer"``, ``"weight"`` (unstructured)
            or ``"nm"`` (2:4 by default, see ``nm``).
        importance: score name from :mod:`pyprune.importance`.
        target: a :class:`~pyprune.targets.Target`.
        max_drop: how far the metric may fall (a number, a
            :class:`~pyprune.targets.Constraint`, or None for no constraint).
        metric: metric name or :class:`~pyprune.metrics.Metric` (default: accuracy with
            labels, agreement without).
        loss: the smooth fidelity loss candidates are ranked by (``"kl"``, ``"mse"`` or a
            Metric; default KL of softmax outputs for classifiers, relative MSE otherwise).
        recovery: re-estimate BatchNormalization statistics / compensate biases after each
            committed step.
        limits: :class:`Limits` per group.
        reduce, normalize: how group scores are combined and normalised (see importance).
        seed: seed of random importance and random search.
        threads: ONNX Runtime and core threads (None: all cores).
        quiet: no progress bar.
        batch_size: samples per session run (None: enough for about 256 M MACs per run, at least
            the dataset's default and at most 1024).
        measure_latency: measure latency before and after for the report.
    """

    name = "search"

    def __init__(
        self,
        model: Model | onnx.ModelProto | str,
        data: Dataset | None = None,
        *,
        granularity: Granularity = "channel",
        importance: str = "l2",
        target: Target | None = None,
        max_drop: float | Constraint | None = 0.01,
        metric: str | _metrics.Metric | None = None,
        loss: str | _metrics.Metric | None = None,
        recovery: bool = True,
        limits: Limits | None = None,
        reduce: str = "sum",
        normalize: str = "mean",
        nm: tuple[int, int] = (2, 4),
        seed: int = 0,
        threads: int | None = None,
        quiet: bool = False,
        batch_size: int | None = None,
        measure_latency: bool = True,
        checkpoint: float = 0.1,
    ) -> None:
        self.started = time.perf_counter()
        self.model = as_model(model)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
        self.granularity = granularity
        self.importance = importance
        _importance.needs_data(importance)  # validates the name
        self.target = target if target is not None else MACs(0.5)
        if not isinstance(self.target, Target):
            raise TargetError(f"target must be a Sparsity, Params, MACs or Latency target, got {target!r}")
        self._check_target()
        self.constraint = as_constraint(max_drop)
        self.limits = limits or Limits()
        self.seed = int(seed)
        self.threads = threads
        self.quiet = quiet
        self.batch_size = batch_size
        self.want_latency = measure_latency
        self.checkpoint = float(checkpoint)
        self.reduce, self.normalize, self.nm = reduce, normalize, tuple(nm)

        self.dataset = data if data is not None else Dataset.synthetic(self.model, n=64, seed=self.seed)
        self.dataset.bind(self.model)
        self.metric = _metrics.get(metric if metric is not None else
                                   ("accuracy" if self.dataset.has_labels else "agreement"))
        if self.metric.needs_labels and not self.dataset.has_labels:
            raise ValueError(f"metric {self.metric.name!r} needs labels and the data has none; "
                             "use a fidelity metric such as 'agreement'")
        self.graph = DependencyGraph(self.model)
        self.frozen: dict[str, str] = {}
        self.slots: list[Slot] = self._make_slots()
        self.by_id = {s.id: s for s in self.slots}
        self._prepare_costs()

        groups = [self.graph.group(s.id) for s in self.slots if s.kind == "group"]
        self.recovery = Recovery(self.model, groups, batchnorm=recovery, bias=recovery)
        layers = [self.graph.layer(s.id) for s in self.slots if s.kind == "layer"]
        weights = [s.id for s in self.slots if s.kind in ("weight", "nm")]
        if batch_size is None:
            # Small models run the calibration data in a few large batches: per-run overheads
            # (ONNX Runtime calls, statistics updates) dominate their evaluations otherwise.
            batch_size = int(min(max(_BATCH_MACS // max(self.macs0, 1), DEFAULT_BATCH_SIZE), 1024))
            self.batch_size = batch_size
        self.session = MaskedSession(
            self.model, self.dataset, groups=groups, layers=layers, weights=weights,
            threads=threads, batch_size=batch_size, affine=self.recovery.affine_points,
            capture=self.recovery.capture,
        )
        if self.recovery.batchnorms:
            self.reference, stats = self.session.run_with_stats()
            self.recovery.calibrate(stats)
        else:
            self.reference = self.session.run()
        self.loss = self._loss_metric(loss)
        self.metric_target = self.dataset.labels if self.metric.needs_labels else self.reference
        self.baseline = self.metric(self.reference, self.metric_target)
        self.threshold = None if self.constraint is None else self.constraint.threshold(self.baseline, self.metric)
        self.evaluations = 0
        self.recovery_runs = 0
        self.counts: Counts = {s.id: 0 for s in self.slots}
        self.interrupted = False
        self.history = History()
        self._latency_ms: float | None = None
        self._last_checkpoint_macs = 1.0
        self._bar = None
        self.base_cost = self.cost(self.counts)
        self.note = ""  # why the loop stopped, when it did not reach the target
        self.current = Evaluation(self.baseline, 0.0, True, self.base_cost, list(self.reference))
        self._record("start", {}, self.baseline, 0.0)
        if self.target.kind == "latency":
            self.measure_current()  # the unpruned model may already be fast enough

    # -- setup ----------------------------------------------------------------------------------

    def _check_target(self) -> None:
        kind = self.target.kind
        if self.granularity in ("weight", "nm") and kind in ("macs", "latency"):
            raise TargetError(
                f"a {kind} target needs structured pruning (channel or layer granularity): zeroed "
                "weights do not reduce dense MACs or latency; use a sparsity or params target"
            )
        if self.granularity in ("channel", "layer") and kind == "sparsity":
            raise TargetError(
                "a sparsity target applies to weight granularity; for channels or layers use a "
                "params or MACs target"
            )

    def _make_slots(self) -> list[Slot]:
        skip = set(self.limits.skip)
        depth = {n.name: i for i, n in enumerate(self.model.nodes)}
        slots: list[Slot] = []
        if self.granularity == "channel":
            groups = []
            for g in self.graph.groups:
                if not g.prunable:
                    self.frozen[g.id] = g.frozen or "frozen"
                elif g.id in skip:
                    self.frozen[g.id] = "skipped on request"
                elif g.size < 2:
                    self.frozen[g.id] = "a single unit (a group always keeps one)"
                else:
                    groups.append(g)
            scores = _importance.all_group_scores(
                self.model, groups, self.importance, reduce=self.reduce, normalize=self.normalize,
                dataset=self.dataset, seed=self.seed, threads=self.threads)
            for g in groups:
                s = scores[g.id]
                order = np.argsort(s, kind="stable").astype(np.int64)
                keep_min = max(self.limits.min_keep, g.size - int(math.floor(self.limits.max_fraction * g.size)))
                cap = max(g.size - keep_min, 0)
                slot = Slot(g.id, "group", g.size, order, s, cap, self.limits.round_for(g), depth.get(g.root, 0))
                while slot.cap > 0 and not slot.allowed(slot.cap):
                    slot.cap -= 1
                if slot.cap > 0:
                    slots.append(slot)
                else:
                    self.frozen[g.id] = "limits leave nothing to remove"
        elif self.granularity == "layer":
            layers = []
            for layer in self.graph.layers:
                if not layer.prunable:
                    self.frozen[layer.id] = layer.frozen or "frozen"
                elif layer.id in skip:
                    self.frozen[layer.id] = "skipped on request"
                else:
                    layers.append(layer)
            scores = _importance.layer_scores(self.model, layers, self.importance, seed=self.seed)
            for layer in layers:
                d = max((depth.get(n, 0) for n in layer.nodes), default=0)
                slots.append(Slot(layer.id, "layer", 1, np.zeros(1, np.int64),
                                  np.array([scores[layer.id]]), 1, 1, d))
        else:
            chosen = [w for w in maskable_weights(self.model) if w.name not in skip]
            for w in maskable_weights(self.model):
                if w.name in skip:
                    self.frozen[w.name] = "skipped on request"
            d_of = {w.name: max(depth.get(n, 0) for n in w.nodes) for w in chosen}
            if self.granularity == "nm":
                n, m = self.nm
                for w in chosen:
                    reason = w.nm_reason(m)
                    if reason:
                        self.frozen[w.name] = reason
                        continue
                    mask = nm_masks(self.model, n, m, weights=[w.name])[w.name]
                    slots.append(Slot(w.name, "nm", 1, np.zeros(1, np.int64), np.zeros(1), 1, 1,
                                      d_of[w.name], nm_mask=mask))
            else:
                norms = None
                if _importance.needs_data(self.importance):
                    norms = self._input_norms(chosen)
                scores = _importance.weight_scores(self.model, [w.name for w in chosen], self.importance,
                                                   input_norms=norms, seed=self.seed, threads=self.threads)
                for w in chosen:
                    flat = scores[w.name].reshape(-1).astype(np.float64)
                    order = np.argsort(flat, kind="stable").astype(np.int64)
                    cap = int(math.floor(self.limits.max_fraction * w.size))
                    cap = min(cap, w.size - 1)
                    slots.append(Slot(w.name, "weight", w.size, order, flat, cap, 1, d_of[w.name]))
        unknown = sorted(skip - set(self.frozen) - {slot.id for slot in slots})
        if unknown:
            known = sorted(set(self.frozen) | {slot.id for slot in slots})
            raise ValueError(
                f"skip names {', '.join(map(repr, unknown))}, not a {self.granularity}-granularity "
                f"unit of this model; known: {', '.join(known)}"
            )
        if not slots:
            raise TargetError(
                f"nothing can be pruned at {self.granularity} granularity in this model"
                + (f" (frozen: {'; '.join(f'{k}: {v}' for k, v in self.frozen.items())})" if self.frozen else "")
            )
        return slots

    def _input_norms(self, chosen) -> dict[str, tuple[np.ndarray, int]]:
        """L2 norms of the input features of each weight (for Wanda scores)."""
        from ..evaluate import activation_stats

        wanted: dict[str, tuple[str, int, int]] = {}  # weight -> (tensor, tensor axis, weight axis)
        for w in chosen:
            node = self.model.node(w.nodes[0])
            if node.op_type in ("Conv", "ConvTranspose"):
                wanted[w.name] = (node.input[0], 1, 1)
            elif node.op_type == "Gemm":
                trans_a = any(a.name == "transA" and a.i for a in node.attribute)
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                wanted[w.name] = (node.input[0], 0 if trans_a else 1, 1 if trans_b else 0)
            else:
                rank = self.model.rank(node.input[0]) or 2
                wanted[w.name] = (node.input[0], rank - 1, len(w.shape) - 2)
        stats = activation_stats(self.model, self.dataset, {t: a for t, a, _ in wanted.values()},
                                 self.threads, self.batch_size)
        out = {}
        for name, (tensor, _, waxis) in wanted.items():
            norms = stats[tensor].l2_norm
            if self.model.weight(name).shape[waxis] == len(norms):
                out[name] = (norms, waxis)
        return out

    def _prepare_costs(self) -> None:
        m = self.model
        self.params0, self.macs0, self.nonzeros0 = m.params(), m.macs(), m.nonzeros()
        # channel accounting: (weight, axis) -> [(group id, index)]
        self._axes: dict[str, dict[int, list[tuple[str, np.ndarray]]]] = {}
        for s in self.slots:
            if s.kind != "group":
                continue
            for c in self.graph.group(s.id).couplings:
                self._axes.setdefault(c.weight, {}).setdefault(c.axis, []).append((s.id, np.asarray(c.index)))
        self._weighted_nodes = []
        for node in m.nodes:
            if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1:
                if node.input[1] in self._axes:
                    self._weighted_nodes.append((node.input[1], m.node_macs(node)))
        self._weight_size = {w: int(np.prod(m.weight(w).shape, dtype=np.int64)) for w in self._axes}
        # weight accounting
        self._prunable_total = 0
        self._zero0 = 0
        self._nz_prefix: dict[str, np.ndarray] = {}
        if self.granularity in ("weight", "nm"):
            for w in maskable_weights(m):
                arr = m.weight(w.name)
                self._prunable_total += arr.size
                self._zero0 += int(arr.size - np.count_nonzero(arr))
            for s in self.slots:
                arr = m.weight(s.id).reshape(-1)
                if s.kind == "weight":
                    self._nz_prefix[s.id] = np.concatenate([[0], np.cumsum(arr[s.order] != 0)])
                else:
                    self._nz_prefix[s.id] = np.array([0, int(np.count_nonzero(arr[~s.nm_mask.reshape(-1)]))])

    def _loss_metric(self, loss: str | _metrics.Metric | None) -> _metrics.Metric:
        if isinstance(loss, _metrics.Metric):
            return loss
        ref = np.asarray(self.reference[0])
        classifier = ref.ndim >= 2 and ref.shape[-1] > 1 and np.issubdtype(ref.dtype, np.floating)
        kind = loss or ("kl" if classifier else "mse")
        if kind in ("kl", "kl_divergence"):
            if classifier and np.all(ref >= 0) and np.allclose(ref.sum(axis=-1), 1.0, atol=1e-3):
                return _metrics.probability_kl()  # the model already outputs probabilities
            return _metrics.kl_divergence()
        return _metrics.get(kind)

    # -- state ----------------------------------------------------------------------------------

    def masks(self, counts: Mapping[str, int], orders: Mapping[str, np.ndarray] | None = None):
        """(group keep-masks, layer gates, weight keep-masks) of a state."""
        groups, gates, weights = {}, {}, {}
        for s in self.slots:
            n = counts.get(s.id, 0)
            order = orders.get(s.id, s.order) if orders else s.order
            if s.kind == "group":
                keep = np.ones(s.size, dtype=bool)
                keep[order[:n]] = False
                groups[s.id] = keep
            elif s.kind == "layer":
                gates[s.id] = 0.0 if n else 1.0
            elif s.kind == "weight":
                if n:
                    shape = self.model.weight(s.id).shape
                    keep = np.ones(s.size, dtype=bool)
                    keep[order[:n]] = False
                    weights[s.id] = keep.reshape(shape)
            else:
                if n:
                    weights[s.id] = s.nm_mask
        return groups, gates, weights

    def cost(self, counts: Mapping[str, int], orders: Mapping[str, np.ndarray] | None = None) -> Cost:
        if self.granularity == "channel":
            keeps = self.masks(counts, orders)[0]
            kept_frac: dict[str, float] = {}
            for w, axes in self._axes.items():
                frac = 1.0
                for axis, owners in axes.items():
                    keep = np.ones(len(owners[0][1]), dtype=bool)
                    for gid, index in owners:
                        owned = index >= 0
                        keep[owned] &= keeps[gid][index[owned]]
                    frac *= keep.mean()
                kept_frac[w] = frac
            params = self.params0 - sum(self._weight_size[w] * (1 - f) for w, f in kept_frac.items())
            macs = self.macs0 - sum(mc * (1 - kept_frac[w]) for w, mc in self._weighted_nodes)
            params, macs = int(round(params)), int(round(macs))
            return Cost(params, macs, self.nonzeros0 - (self.params0 - params), 0.0)
        if self.granularity == "layer":
            gone = [self.graph.layer(s.id) for s in self.slots if counts.get(s.id, 0)]
            params = self.params0 - sum(layer.params for layer in gone)
            macs = self.macs0 - sum(layer.macs for layer in gone)
            return Cost(params, macs, self.nonzeros0 - (self.params0 - params), 0.0)
        removed = sum(int(self._nz_prefix[s.id][counts.get(s.id, 0)]) for s in self.slots
                      if not orders or s.id not in orders)
        if orders:
            for sid, order in orders.items():
                n = counts.get(sid, 0)
                arr = self.model.weight(sid).reshape(-1)
                removed += int(np.count_nonzero(arr[order[:n]]))
        zeroed = self._zero0 + removed
        sparsity = zeroed / self._prunable_total if self._prunable_total else 0.0
        return Cost(self.params0, self.macs0, self.nonzeros0 - removed, sparsity)

    def achieved(self, cost: Cost) -> float:
        """The figure the target is compared with (ratio, sparsity or measured ms)."""
        kind = self.target.kind
        if kind == "params":
            return cost.params / max(self.params0, 1)
        if kind == "macs":
            return cost.macs / max(self.macs0, 1)
        if kind == "sparsity":
            return cost.sparsity
        return self._latency_ms if self._latency_ms is not None else math.inf

    def reached(self, counts: Mapping[str, int]) -> bool:
        if self.target.kind == "latency":
            return self._latency_ms is not None and self.target.reached(self._latency_ms)
        return self.target.reached(self.achieved(self.cost(counts)))

    def saving(self, before: Cost, after: Cost) -> float:
        """Cost saved between two states, in the unit the target is about."""
        kind = self.target.kind
        if kind in ("macs", "latency"):
            return float(before.macs - after.macs)
        if kind == "params":
            return float(before.params - after.params)
        return float(before.nonzeros - after.nonzeros)

    def still_needed(self, cost: Cost) -> float | None:
        """Cost still to save from ``cost`` to reach a params or MACs target (in the unit of
        :meth:`saving`); None for targets that do not map onto one count (sparsity, latency)."""
        kind = self.target.kind
        if kind == "macs":
            return float(cost.macs - self.target.value * self.macs0)
        if kind == "params":
            return float(cost.params - self.target.value * self.params0)
        return None

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, counts: Mapping[str, int], orders: Mapping[str, np.ndarray] | None = None,
                 corrections: Mapping | None = None, count: bool = True) -> Evaluation:
        """Judge one state in the session: the metric, the fidelity loss and the constraint."""
        groups, gates, weights = self.masks(counts, orders)
        affine = self.recovery.corrections if corrections is None else corrections
        return self._judge(self.session.run(groups, gates, weights, affine), counts, orders, count)

    def _judge(self, outs: list[np.ndarray], counts: Mapping[str, int],
               orders: Mapping[str, np.ndarray] | None, count: bool) -> Evaluation:
        value = self.metric(outs, self.metric_target)
        loss = self.loss(outs, self.reference)
        if count:
            self.evaluations += 1
        cost = self.cost(counts, orders)
        passed = self.threshold is None or self.metric.meets(value, self.threshold)
        self._progress(value, cost)
        return Evaluation(value, float(loss), passed, cost, outs)

    def passes(self, value: float) -> bool:
        return self.threshold is None or self.metric.meets(value, self.threshold)

    def trial(self, counts: Mapping[str, int], orders: Mapping[str, np.ndarray] | None = None,
              recover: bool = False) -> Evaluation:
        """Judge a state; with ``recover`` the recovery corrections are re-estimated for it first
        (the current corrections are left untouched; the new ones travel with the result)."""
        if not recover or not self.recovery.active:
            return self.evaluate(counts, orders)
        snap = self.recovery.snapshot()
        try:
            return self._recovered(counts, orders)
        finally:
            self.recovery.restore(snap)

    def _recovered(self, counts: Mapping[str, int], orders: Mapping[str, np.ndarray] | None = None,
                   count: bool = True) -> Evaluation:
        """Re-estimate corrections under a state's masks and judge the state with them.

        Each pass runs the data once, yielding the outputs under the corrections fed and the
        statistics for the next corrections. Later layers need earlier layers corrected first, so
        passes repeat (one per normalisation layer, up to four, plus one) until the corrections
        settle; the outputs of the settling pass are the evaluation, so a state that needs no
        correction costs one run.
        """
        groups, gates, weights = self.masks(counts, orders)
        for _ in range(min(len(self.recovery.batchnorms), 4) + 2):
            fed = self.recovery.snapshot()
            outs, stats = self.session.run_with_stats(groups, gates, weights, self.recovery.corrections)
            self.recovery_runs += 1
            if self.recovery.update(stats, groups) < _SETTLED:
                self.recovery.restore(fed)  # the corrections the outputs were computed with
                break
        else:
            outs = self.session.run(groups, gates, weights, self.recovery.corrections)
        return replace(self._judge(outs, counts, orders, count), corrections=self.recovery.snapshot())

    def commit(self, counts: Mapping[str, int], action: str, evaluation: Evaluation,
               orders: Mapping[str, np.ndarray] | None = None) -> Evaluation:
        """Make ``counts`` the current state, recover, record the step; returns its evaluation.

        Recovery is kept only when the recovered state still meets the constraint (it nearly
        always improves the metric; when it does not, the previous corrections stay).
        """
        removed = {}
        for sid, n in counts.items():
            old = self.counts.get(sid, 0)
            order = (orders or {}).get(sid, self.by_id[sid].order)
            if n > old:
                removed[sid] = np.sort(order[old:n]).tolist()
        before = self.state()
        try:
            if orders:
                for sid, order in orders.items():
                    self.by_id[sid].order = np.asarray(order)
            self.counts = dict(counts)
            if self.recovery.active:
                if evaluation.corrections is not None:
                    self.recovery.restore(evaluation.corrections)
                else:
                    snap = self.recovery.snapshot()
                    recovered = self._recovered(self.counts, None, count=False)
                    if recovered.passed or not evaluation.passed:
                        evaluation = recovered
                    else:
                        self.recovery.restore(snap)
            self.current = evaluation
            self._record(action, removed, evaluation.metric, evaluation.loss)
        except KeyboardInterrupt:
            # Ctrl-C halfway through a commit (e.g. during recovery): go back to the last whole
            # committed state, which meets the constraint, so that is what run() ships.
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

    def _checkpoint(self, cost: Cost) -> None:
        """For latency targets: remove physically and measure once MACs fell another step."""
        if self.target.kind != "latency":
            return
        ratio = cost.macs / max(self.macs0, 1)
        if ratio > self._last_checkpoint_macs - self.checkpoint and self._latency_ms is not None:
            return
        self._last_checkpoint_macs = ratio
        self.measure_current()

    def measure_current(self) -> float:
        target: Latency = self.target  # type: ignore[assignment]
        pruned = self.build(self.counts, fold=False)
        lat = measure_latency(pruned, target.batch_size, threads=target.threads or self.threads,
                              runs=target.runs, dataset=self.dataset)
        self._latency_ms = lat.median_ms
        cost = self.cost(self.counts)
        self.history.add(HistoryEntry(len(self.history), "latency checkpoint", {}, None, None, cost.params,
                                      cost.macs, cost.nonzeros, lat.median_ms, self.evaluations, self._elapsed()))
        return lat.median_ms

    def _record(self, action: str, removed: dict, metric: float, loss: float) -> None:
        cost = self.cost(self.counts)
        self.history.add(HistoryEntry(len(self.history), action, removed, float(metric), float(loss),
                                      cost.params, cost.macs, cost.nonzeros, None, self.evaluations,
                                      self._elapsed()))

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _progress(self, value: float, cost: Cost) -> None:
        if self.quiet:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=f"{self.name} search", unit="eval", leave=False, dynamic_ncols=True)
        self._bar.update(1)
        self._bar.set_postfix_str(
            f"{self.metric.name}={value:.4f} params={cost.params / max(self.params0, 1):.3f} "
            f"MACs={cost.macs / max(self.macs0, 1):.3f}", refresh=False)

    # -- running --------------------------------------------------------------------------------

    def _loop(self) -> None:
        raise NotImplementedError

    def run(self) -> PruneResult:
        """Run the loop; Ctrl-C stops it and returns the best state found that meets the constraint."""
        try:
            self._loop()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        return self.finish()

    # -- shipping -------------------------------------------------------------------------------

    def removals(self, counts: Mapping[str, int]) -> dict[str, np.ndarray]:
        return {s.id: s.removed_items(counts[s.id]) for s in self.slots
                if s.kind == "group" and counts.get(s.id, 0)}

    def build(self, counts: Mapping[str, int], fold: bool = True) -> Model:
        """The physically pruned model of a state (corrections folded into weights)."""
        base = self.recovery.fold(self.model) if fold and self.recovery.active else self.model
        groups, gates, weights = self.masks(counts)
        if self.granularity == "channel":
            removals = self.removals(counts)
            graph = DependencyGraph(base) if base is not self.model else self.graph
            return remove_units(base, removals, graph) if removals else base.copy()
        if self.granularity == "layer":
            gone = [lid for lid, g in gates.items() if g == 0.0]
            return remove_layers(base, gone) if gone else base.copy()
        return apply_weight_masks(base, weights) if weights else base.copy()

    def _figures(self, model: Model, metric: float | None) -> Figures:
        latency = None
        if self.want_latency:
            target = self.target if isinstance(self.target, Latency) else None
            latency = measure_latency(model, target.batch_size if target else 1,
                                      threads=(target.threads if target else None) or self.threads,
                                      runs=target.runs if target else 30, dataset=self.dataset).median_ms
        return Figures(model.params(), model.nonzeros(), model.macs(), model.file_size(), latency, metric)

    def finish(self) -> PruneResult:
        counts = self.counts
        masked = self.evaluate(counts, count=False)
        pruned = self.build(counts)
        onnx.checker.check_model(pruned.proto, full_check=True)
        shipped = run_batches(make_session(pruned.proto, self.threads),
                              self.dataset.batches(pruned, self.batch_size))
        errors = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
                  for a, b in zip(shipped, masked.outputs)]
        scale = max(float(np.max(np.abs(np.asarray(r, np.float64)), initial=0.0)) for r in masked.outputs)
        max_error = max(errors, default=0.0)
        verified = max_error <= 1e-3 * max(scale, 1.0)
        after_metric = self.metric(shipped, self.metric_target)
        if self.target.kind == "latency":
            self.measure_current()
        before = self._figures(self.model, self.baseline)
        after = self._figures(pruned, after_metric)
        cost = self.cost(counts)
        reached = self.reached(counts)
        holds = self.passes(after_metric)
        met = reached and holds
        statement = self._statement(reached, holds, cost, after_metric)
        report = Report(
            strategy=self.name, granularity=self.granularity, importance=self.importance,
            target=self.target.describe(), constraint=self._describe_constraint(),
            metric_name=self.metric.name, before=before, after=after, met=met, interrupted=self.interrupted,
            statement=statement, evaluations=self.evaluations, recovery_runs=self.recovery_runs,
            seconds=self._elapsed(), history=self.history, frozen=dict(self.frozen),
            removed={sid: n for sid, n in counts.items() if n},
            settings=self.settings(), verified=verified, max_output_error=max_error,
            synthetic_data=bool(getattr(self.dataset, "synthetic", False)),
        )
        return PruneResult(pruned, report, self.history)

    def settings(self) -> dict[str, Any]:
        return {
            "strategy": self.name, "granularity": self.granularity, "importance": self.importance,
            "reduce": self.reduce, "normalize": self.normalize, "seed": self.seed,
            "recovery": self.recovery.active, "loss": self.loss.name, "metric": self.metric.name,
            "limits": {"max_fraction": self.limits.max_fraction, "min_keep": self.limits.min_keep,
                       "round_to": self.limits.round_to, "skip": list(self.limits.skip)},
            "samples": len(self.dataset),
        }

    def _describe_constraint(self) -> str:
        if self.constraint is None:
            return "none"
        bound = "at least" if self.metric.direction == "higher" else "at most"
        return (f"{self.constraint.describe(self.metric)} (unpruned {self.baseline:.4g}: "
                f"{bound} {self.threshold:.4g})")

    def _describe_cost(self, cost: Cost) -> str:
        kind = self.target.kind
        if kind == "params":
            return f"params {cost.params / max(self.params0, 1):.3f} of the original"
        if kind == "sparsity":
            return f"sparsity {cost.sparsity:.3f}"
        if kind == "latency":
            ms = "not measured" if self._latency_ms is None else f"{self._latency_ms:.3f} ms"
            return f"latency {ms} (MACs {cost.macs / max(self.macs0, 1):.3f} of the original)"
        return f"MACs {cost.macs / max(self.macs0, 1):.3f} of the original"

    def _statement(self, reached: bool, holds: bool, cost: Cost, value: float) -> str:
        where = self._describe_cost(cost)
        metric = f"{self.metric.name} {value:.4f} (unpruned {self.baseline:.4f})"
        if self.interrupted:
            return (f"Interrupted: returning the best model found so far that meets the constraint: "
                    f"{where}, {metric}.")
        if reached and holds:
            return f"Target reached ({self.target.describe()}): {where}, {metric}."
        if reached:
            return (f"Target reached ({self.target.describe()}) but the constraint does not hold: {where}, "
                    f"{metric}, threshold {self.threshold:.4f}.")
        why = self.note or "no further step keeps the metric within the constraint"
        return (f"Target not reached ({self.target.describe()}): stopped at {where}, {metric}, because "
                f"{why}. This is the most pruned model found that meets the constraint.")

