"""Judging models in ONNX Runtime: scores, fast masked candidates, latency and activations.

:class:`Evaluator` ties a model, a dataset and a metric together and caches the unpruned model's
outputs (the reference every fidelity metric compares against). :class:`MaskedSession` judges
pruning candidates inside one session, :func:`measure_latency` times a model and
:func:`activation_stats` streams per-channel statistics of intermediate tensors. Executors
(:func:`make_executor`) judge many candidates at once: in the search's session, in a local process
pool or on Ray actors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from .. import metrics as _metrics
from ..data import Dataset, ModelLike, as_model
from ..graph import Group, Layer, MaskPoint, Model
from ._activations import ChannelStats, RunningChannelStats, TensorChoice
from ._executor import (
    Checker,
    Executor,
    Job,
    JobResult,
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    ReplicaSpec,
    make_executor,
    run_job,
)
from ._latency import Timing, measure_latency
from ._ort import exposing, fetched_outputs, make_session, model_session, run_batches, session_options
from ._session import AffineKey, Check, EdgeKey, MaskedSession, OutputPoint, edge_key

__all__ = [
    "Evaluator",
    "Complexity",
    "complexity",
    "MaskedSession",
    "Check",
    "EdgeKey",
    "AffineKey",
    "OutputPoint",
    "edge_key",
    "run_model",
    "fetched_outputs",
    "measure_latency",
    "Timing",
    "activation_stats",
    "ChannelStats",
    "RunningChannelStats",
    "session_options",
    "make_session",
    "model_session",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "make_executor",
    "Job",
    "JobResult",
    "Checker",
    "ReplicaSpec",
    "run_job",
]


@dataclass(frozen=True)
class Complexity:
    """What a model costs: parameters, non-zero parameters, MACs per sample, serialized bytes and,
    when measured, ONNX Runtime latency on this machine."""

    params: int
    nonzeros: int
    macs: int
    file_size: int
    latency: Timing | None = None


def complexity(model: ModelLike, latency: bool = False, **latency_options: object) -> Complexity:
    """The figures of :class:`Complexity` (counted by :class:`~pyprune.graph.Model`); with
    ``latency=True`` also :func:`measure_latency` (``latency_options`` are passed on)."""
    model = as_model(model)
    measured = measure_latency(model, **latency_options) if latency else None  # type: ignore[arg-type]
    return Complexity(model.params(), model.nonzeros(), model.macs(), model.file_size(), measured)


def run_model(
    model: ModelLike, dataset: Dataset, threads: int | None = None, batch_size: int | None = None
) -> list[np.ndarray]:
    """The values :func:`fetched_outputs` names (the tensor outputs; a ZipMap output through its
    probabilities), over the whole dataset, each joined along the sample axis."""
    model = as_model(model)
    batches = dataset.batches(model, batch_size)
    names = list(fetched_outputs(model))
    proto = model.proto
    if not set(names) <= set(model.output_names):
        proto = onnx.ModelProto()
        proto.CopyFrom(model.proto)
        exposing(proto, names, model)
    return run_batches(make_session(proto, threads, model), batches, None, names)


def activation_stats(
    model: ModelLike,
    dataset: Dataset,
    tensors: TensorChoice,
    threads: int | None = None,
    batch_size: int | None = None,
) -> dict[str, ChannelStats]:
    """Per-channel statistics of ``tensors`` (intermediate values, graph inputs or outputs) of the
    unmodified model over ``dataset``, streamed batch by batch, keyed by tensor name.

    ``tensors``: ``{name: channel axis}``, or an iterable of MaskPoints (their tensor and axis),
    ``(name, axis)`` pairs or names (axis 1). Negative axes count from the end. For statistics
    under pruning candidates, build a :class:`MaskedSession` with ``capture=``.
    """
    session = MaskedSession(model, dataset, threads=threads, batch_size=batch_size, capture=tensors)
    return session.activation_stats()


class Evaluator:
    """A model, the data it is judged on and the metric that judges it.

    The reference outputs of the unpruned model are computed once, on first use, and shared with
    every :class:`MaskedSession` made by :meth:`session`, so a whole search runs the original
    model a single time.
    """

    def __init__(
        self,
        model: ModelLike,
        dataset: Dataset,
        metric: str | _metrics.Metric = "agreement",
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model: Model = as_model(model)
        self.dataset = dataset
        dataset.bind(self.model)  # fail on bad data before any work
        _metrics.for_data(metric, dataset.has_labels)  # and on a metric the data cannot feed
        self._requested = metric
        self._metric: _metrics.Metric | None = None
        self.threads = threads
        self.batch_size = batch_size
        self._reference: list[np.ndarray] | None = None
        self._baseline: float | None = None

    @property
    def metric(self) -> _metrics.Metric:
        """The metric, reading the output :func:`pyprune.metrics.judged_output` picks (a
        classifier's probabilities rather than its labels); resolved on the reference outputs."""
        if self._metric is None:
            outputs = dict(zip(fetched_outputs(self.model), self.reference))
            self._metric = _metrics.for_data(self._requested, self.dataset.has_labels, outputs=outputs)
        return self._metric

    @property
    def reference(self) -> list[np.ndarray]:
        """Outputs of the unpruned model over the dataset (computed once)."""
        if self._reference is None:
            self._reference = run_model(self.model, self.dataset, self.threads, self.batch_size)
        return self._reference

    @property
    def target(self) -> object:
        """What the metric compares against: the labels, or the reference outputs."""
        return self.dataset.labels if self.metric.needs_labels else self.reference

    @property
    def baseline(self) -> float:
        """The metric of the unpruned model (fidelity metrics: the model against itself)."""
        if self._baseline is None:
            self._baseline = self.metric(self.reference, self.target)
        return self._baseline

    def score(self, model: ModelLike | None = None, metric: str | _metrics.Metric | None = None) -> float:
        """The metric of ``model`` (e.g. a physically pruned copy; default: the unpruned model)."""
        if metric is None:
            metric = self.metric
        else:
            named = dict(zip(fetched_outputs(self.model), self.reference))
            metric = _metrics.for_data(metric, self.dataset.has_labels, outputs=named)
        target = self.dataset.labels if metric.needs_labels else self.reference
        outputs = self.reference if model is None else run_model(model, self.dataset, self.threads, self.batch_size)
        return metric(outputs, target)

    def session(
        self,
        groups: Iterable[Group] = (),
        layers: Iterable[Layer] = (),
        weights: Iterable[str] = (),
        affine: Iterable[MaskPoint] = (),
        capture: TensorChoice = (),
    ) -> MaskedSession:
        """A :class:`MaskedSession` over this model and data, sharing the cached reference."""
        return MaskedSession(
            self.model,
            self.dataset,
            groups=groups,
            layers=layers,
            weights=weights,
            threads=self.threads,
            batch_size=self.batch_size,
            affine=affine,
            reference=self.reference,
            capture=capture,
        )

    def latency(self, model: ModelLike | None = None, batch_size: int = 1, **options: object) -> Timing:
        """:func:`measure_latency` of ``model`` (default: the unpruned model) with these threads."""
        options.setdefault("threads", self.threads)
        return measure_latency(self.model if model is None else model, batch_size, **options)  # type: ignore[arg-type]

    def activation_stats(self, tensors: TensorChoice) -> dict[str, ChannelStats]:
        """:func:`activation_stats` of the unpruned model over this dataset."""
        return activation_stats(self.model, self.dataset, tensors, self.threads, self.batch_size)
