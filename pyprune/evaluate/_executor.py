"""Where candidates are judged: the search's own session, a local process pool, or Ray actors.

An executor runs session *jobs*. A job is one candidate as a :class:`MaskedSession` takes it —
group keep-masks, layer gates, weight keep-masks and per-edge scale/shift vectors — never a
model. Each worker builds one replica of the search's session when it starts (the model, the
data and the session's arguments are sent to it once, :class:`ReplicaSpec`) and from then on
receives only jobs. Results come back in the order the jobs were given, each as soon as it and
those before it are done, and are the same whichever executor ran them: the same session graph,
the same feeds, the same batches.

* :class:`LocalExecutor` runs the jobs one after another in the search's own session.
* :class:`ProcessExecutor` spreads them over a pool of local processes (``spawn``: no ONNX
  Runtime thread pool is ever forked).
* :class:`RayExecutor` spreads them over Ray actors, on a cluster (``address``) or on a Ray
  instance started on this machine; needs ``pip install "pyprune[ray]"``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import onnx

from .. import metrics as _metrics
from ..data import Dataset
from ..graph import Model
from ._activations import ChannelStats
from ._session import AffineKey, Check, MaskedSession

__all__ = ["Job", "JobResult", "Checker", "ReplicaSpec", "Executor", "LocalExecutor", "ProcessExecutor",
           "RayExecutor", "make_executor", "run_job"]

#: What a job asks for: the outputs, the outputs and the captured statistics (one pass over the
#: data, for recovery), or a pass/fail check of the constraint that may stop early.
Mode = Literal["run", "stats", "check"]


@dataclass(frozen=True)
class Job:
    """One candidate's feeds (the arguments of :meth:`MaskedSession.run`) and what to compute."""

    groups: Mapping[str, np.ndarray] = field(default_factory=dict)
    gates: Mapping[str, float] = field(default_factory=dict)
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    affine: Mapping[AffineKey, tuple[Any, Any]] = field(default_factory=dict)
    mode: Mode = "run"
    samples: int | None = None  # judge only the first samples (whole batches; "run" jobs)


@dataclass(frozen=True)
class JobResult:
    """``outputs`` over the whole dataset (None when a check stopped early), ``stats`` of the
    captured tensors (``"stats"`` jobs) and the ``check`` (``"check"`` jobs)."""

    outputs: list[np.ndarray] | None
    stats: dict[str, ChannelStats] | None = None
    check: Check | None = None


@dataclass(frozen=True)
class Checker:
    """What ``"check"`` jobs are judged by: the metric, what it compares against (labels or the
    unpruned outputs), the threshold and the rounding tolerance of the early stop."""

    metric: _metrics.Metric
    target: Any
    threshold: float
    tolerance: float = 1e-9
    judged_from: int = 0  # the threshold is about samples from here on (a holdout part)


def run_job(session: MaskedSession, job: Job, checker: Checker | None = None) -> JobResult:
    """Run one job in ``session`` (the one function every executor's workers call)."""
    if job.mode == "stats":
        outputs, stats = session.run_with_stats(job.groups, job.gates, job.weights, job.affine)
        return JobResult(outputs, stats)
    if job.mode == "check":
        if checker is None:
            raise ValueError("a check job needs a Checker (metric, target, threshold)")
        check = session.check(checker.metric, checker.threshold, job.groups, job.gates, job.weights, job.affine,
                              early_stop=True, target=checker.target, tolerance=checker.tolerance,
                              judged_from=checker.judged_from)
        return JobResult(check.outputs, None, check)
    with session.first(job.samples) if job.samples is not None else nullcontext():
        return JobResult(session.run(job.groups, job.gates, job.weights, job.affine))


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a worker needs to build its replica of a session, sent once per worker."""

    model: bytes  # the serialized model the session was built from
    dataset: Dataset
    arguments: dict[str, Any]  # MaskedSession keyword arguments (MaskedSession.replica_arguments)
    checker: Checker | None = None

    @classmethod
    def of(cls, session: MaskedSession, checker: Checker | None = None, threads: int | None = None) -> ReplicaSpec:
        """The spec of ``session``'s replicas, each running ``threads`` ONNX Runtime threads."""
        try:
            model = session.model.proto.SerializeToString()
        except Exception as exc:  # protobuf refuses messages of 2 GB or more
            raise ValueError(f"the model cannot be sent to workers ({exc}); models over 2 GB are judged with "
                             "the local executor") from None
        return cls(model, session.dataset, {**session.replica_arguments(), "threads": threads}, checker)

    def build(self) -> MaskedSession:
        return MaskedSession(Model(onnx.load_model_from_string(self.model)), self.dataset, **self.arguments)


class Executor:
    """Runs jobs and returns their results in order (see the module docstring)."""

    kind: ClassVar[str] = ""
    #: How many jobs run at the same time.
    workers: int = 1

    def map(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        """The results of ``jobs`` in order, each as soon as it is ready (stopping the iteration
        early leaves the rest unjudged, or judged and dropped)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (the executor cannot be used afterwards)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """The jobs one after another in ``session`` (the search's own)."""

    kind = "local"

    def __init__(self, session: MaskedSession, checker: Checker | None = None) -> None:
        self.session, self.checker, self.workers = session, checker, 1

    def map(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        for job in jobs:  # lazily: a job runs when its result is asked for
            yield run_job(self.session, job, self.checker)


# -- a local process pool ---------------------------------------------------------------------

_worker: tuple[MaskedSession, Checker | None] | None = None  # the replica of a pool process


def _start_worker(spec: ReplicaSpec) -> None:
    global _worker
    _worker = (spec.build(), spec.checker)


def _run_in_worker(job: Job) -> JobResult:
    assert _worker is not None, "the worker process was not started with its replica"
    return run_job(_worker[0], job, _worker[1])


class ProcessExecutor(Executor):
    """``workers`` local processes, each with a replica of the session (see the module docstring)."""

    kind = "process"

    def __init__(self, spec: ReplicaSpec, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            pickle.dumps(spec.checker)
        except Exception as exc:
            raise ValueError(f"the process executor sends the metric to its workers, and it cannot be "
                             f"pickled ({exc}); use a built-in metric, a picklable function, or executor "
                             "'local' or 'ray'") from None
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(spec,))

    def map(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        return self._pool.map(_run_in_worker, jobs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- Ray --------------------------------------------------------------------------------------


class _RayWorker:
    """A Ray actor holding one replica of the session."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.session, self.checker = spec.build(), spec.checker

    def run(self, job: Job) -> JobResult:
        return run_job(self.session, job, self.checker)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError('the ray executor needs Ray: pip install "pyprune[ray]"') from None
    return ray


def _connect_ray(ray: Any, address: str | None) -> None:
    """``ray.init`` from the folder that holds the pyprune this process imported.

    Ray puts the driver's working directory first on its workers' ``sys.path``. Started from a
    source checkout (a repository root, where ``pyprune/`` has no compiled core), the workers
    would import that folder instead of the installed package; from the imported package's own
    parent folder they import exactly what the driver runs.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(_metrics.__file__)))
    previous = os.getcwd()
    os.chdir(package_parent)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        os.chdir(previous)


class RayExecutor(Executor):
    """``workers`` Ray actors, each with a replica of the session and ``threads`` CPUs.

    Connects to the cluster at ``address`` (``"auto"``: the one this machine belongs to) or,
    without one, uses the Ray instance already running in this process or starts one here (and
    stops it on :meth:`close`). ``workers`` None: as many as the cluster's CPUs allow.
    """

    kind = "ray"

    def __init__(self, spec: ReplicaSpec, workers: int | None = None, address: str | None = None,
                 threads: int = 1) -> None:
        ray = _import_ray()
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            _connect_ray(ray, address)
            self._started = True
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        self.workers = workers
        actor = ray.remote(num_cpus=threads)(_RayWorker)
        shared = ray.put(spec)  # sent once to the object store, read by every actor
        self._actors = [actor.remote(shared) for _ in range(workers)]

    def map(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        ray = self._ray
        ready: dict[int, JobResult] = {}
        free = list(self._actors)
        pending: dict[Any, tuple[int, Any]] = {}
        queue: Iterator[tuple[int, Job]] = iter(enumerate(jobs))
        following = 0
        # One job per actor at a time, the next one as soon as an actor is free: the round's slow
        # candidates do not hold the others back.
        while True:
            for i, job in queue:
                who = free.pop()
                pending[who.run.remote(job)] = (i, who)
                if not free:
                    break
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            index, who = pending.pop(done[0])
            ready[index] = ray.get(done[0])
            free.append(who)
            while following in ready:
                yield ready.pop(following)
                following += 1

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()


def make_executor(kind: str, session: MaskedSession, checker: Checker | None = None, *, workers: int | None = None,
                  threads: int | None = None, address: str | None = None) -> Executor:
    """The executor ``kind`` (``"local"``, ``"process"``, ``"ray"``) for ``session``'s candidates.

    Workers of the process and Ray executors run ``threads`` ONNX Runtime threads each (default
    1); a process pool has ``workers`` processes (default: one per core).
    """
    if kind == "local":
        return LocalExecutor(session, checker)
    per_worker = threads or 1
    spec = ReplicaSpec.of(session, checker, per_worker)
    if kind == "process":
        return ProcessExecutor(spec, workers or max(1, (os.cpu_count() or 1) // per_worker))
    if kind == "ray":
        return RayExecutor(spec, workers, address, per_worker)
    raise ValueError(f"unknown executor {kind!r}; known: local, process, ray")
