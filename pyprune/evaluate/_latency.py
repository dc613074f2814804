"""Latency of a model in ONNX Runtime on this machine: warm-up, timed runs, median and IQR."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data import Dataset, ModelLike, as_model
from ._ort import model_session

__all__ = ["Timing", "measure_latency"]


@dataclass(frozen=True)
class Timing:
    """Wall time of one inference, in milliseconds, over ``runs`` timed runs."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    batch_size: int
    threads: int | None

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the runs."""
        return self.q3_ms - self.q1_ms

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.3f} ms median (IQR {self.iqr_ms:.3f} ms, {self.runs} runs, "
            f"batch {self.batch_size}, threads {self.threads or 'all'})"
        )


def measure_latency(
    model: ModelLike,
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    dataset: Dataset | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Timing:
    """Time ``model`` in one ONNX Runtime session (all graph optimisations, ``threads`` intra-op
    threads, None = all cores).

    Inputs are the first ``batch_size`` samples of ``dataset`` or, without one, synthetic data
    (``dims`` and ``input_shapes`` size symbolic non-batch dimensions). A model with a fixed batch dimension runs at
    that size whatever ``batch_size`` says; the result reports the size used.
    """
    if warmup < 0 or runs < 1:
        raise ValueError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    model = as_model(model)
    if dataset is None:
        dataset = Dataset.synthetic(model, n=batch_size, seed=seed, dims=dims, input_shapes=input_shapes)
    batch = dataset.batches(model, batch_size)[0]
    session = model_session(model, threads)
    for _ in range(warmup):
        session.run(None, batch.feed)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, batch.feed)
        times[i] = time.perf_counter() - start
    times *= 1e3
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Timing(
        median_ms=float(median),
        q1_ms=float(q1),
        q3_ms=float(q3),
        mean_ms=float(times.mean()),
        min_ms=float(times.min()),
        runs=runs,
        warmup=warmup,
        batch_size=batch.stop - batch.start,
        threads=threads,
    )
