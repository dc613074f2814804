"""ONNX Runtime sessions as pyprune opens them, and running a dataset through one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..data import Batch
from ..graph import Model

__all__ = ["session_options", "make_session", "model_session", "run_batches", "join_batches", "fetched_outputs",
           "exposing"]

#: Models whose weights take at least this many bytes are handed to ONNX Runtime with their weights
#: as arrays rather than serialized into the model bytes (no serialized copy, no 2 GB limit).
_LIGHT_BYTES = 2**30


def session_options(threads: int | None = None, spin: bool = True) -> ort.SessionOptions:
    """Options every pyprune session uses: all graph optimisations, ``threads`` intra-op threads
    (None = all cores), sequential execution, quiet logging. ``spin=False``: the runtime's worker
    threads sleep as soon as a run ends instead of spinning for the next one, so numerical work
    done between runs (recovery's sums and solves) gets the cores."""
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads) if threads is not None else (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(proto: onnx.ModelProto, threads: int | None = None,
                 model: Model | None = None, spin: bool = True) -> ort.InferenceSession:
    """A CPU inference session for ``proto`` with :func:`session_options` (``spin`` as there).

    ``model``: the model ``proto`` is (an edited copy of). When its weights live in external files
    or are large, ONNX Runtime opens a model file that refers to them where they are (their
    files hard-linked into a temporary folder, weights held in memory written next to them) and
    maps them instead of reading them, with weight prepacking off: a prepacked copy would double
    the memory a large model needs (see benchmarks/bench_scale.py).
    """
    options = session_options(threads, spin)
    if model is None or not (model.external_data and model.base is not None or model.file_size() >= _LIGHT_BYTES):
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    options.add_session_config_entry("session.disable_prepacking", "1")
    with tempfile.TemporaryDirectory(prefix="pyprune-session-") as folder:
        path = model.session_file(Path(folder), proto)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model.release_mapped()  # what pyprune itself read while preparing the session
    return session


def model_session(model: Model, threads: int | None = None) -> ort.InferenceSession:
    """A session of ``model`` as it is (see :func:`make_session`)."""
    return make_session(model.proto, threads, model)


def run_batches(
    session: ort.InferenceSession,
    batches: Sequence[Batch],
    extra_feed: Mapping[str, np.ndarray] | None = None,
    output_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run every batch and join each output along the sample axis."""
    per_batch = [
        session.run(output_names, {**batch.feed, **(extra_feed or {})}) for batch in batches
    ]
    return [join_batches([outs[i] for outs in per_batch]) for i in range(len(per_batch[0]))]


def join_batches(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if parts[0].ndim == 0:
        return np.stack(parts)
    return np.concatenate(parts, axis=0)


def fetched_outputs(model: Model) -> dict[str, str]:
    """What an evaluation reads: ``{value name: the graph output it stands for}``.

    Every tensor output stands for itself. A non-tensor output made by ZipMap (skl2onnx's
    sequence of ``{class: probability}`` maps) is read through the probabilities tensor ZipMap
    takes, which holds the same numbers as an array. Other non-tensor outputs (sequences, maps,
    optionals) are not read: no metric could judge them.
    """
    fetched: dict[str, str] = {}
    for spec in model.output_specs():
        if spec.dtype is not None:
            fetched.setdefault(spec.name, spec.name)
            continue
        producer = model.producer(spec.name)
        if producer is not None and producer.op_type == "ZipMap" and producer.domain == "ai.onnx.ml":
            fetched.setdefault(producer.input[0], spec.name)
    return fetched


def exposing(proto: onnx.ModelProto, names: Sequence[str], model: Model) -> onnx.ModelProto:
    """``proto`` with the intermediate values among ``names`` added as graph outputs (edited in
    place and returned; ``model`` gives their element types)."""
    present = {v.name for v in proto.graph.output}
    for name in names:
        if name not in present:
            elem = model.elem_type(name) or onnx.TensorProto.FLOAT
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return proto
