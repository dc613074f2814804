"""Data a model is judged on: loading, synthetic generation, validation and batching.

A :class:`Dataset` holds one array per model input, all sharing a leading sample axis, plus
optional labels. It is checked against the model *before* any inference runs, so data that does
not fit raises a :class:`~pyprune.errors.DataError` naming the input and what was expected,
instead of an ONNX Runtime error half-way through a search.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import DataError
from .graph import Model, TensorSpec, load

__all__ = ["Dataset", "Batch", "input_specs", "DEFAULT_BATCH_SIZE"]

#: Batch size used for inputs whose batch dimension is symbolic, unless told otherwise.
DEFAULT_BATCH_SIZE = 32

ModelLike = Model | onnx.ModelProto | str | os.PathLike


@dataclass(frozen=True)
class Batch:
    """One run's worth of data: the feed dict, its labels (or None) and its sample range."""

    feed: dict[str, np.ndarray]
    labels: np.ndarray | None
    start: int
    stop: int


def as_model(model: ModelLike) -> Model:
    """A pyprune :class:`~pyprune.graph.Model` for a Model, an ``onnx.ModelProto`` or a path."""
    return model if isinstance(model, Model) else load(model)


def input_specs(model: ModelLike) -> list[TensorSpec]:
    """The model's real inputs (graph inputs that are not overridable initializers)."""
    return as_model(model).input_specs()


def _describe(spec: TensorSpec) -> str:
    if spec.shape is None:
        return f"{spec.dtype} [unknown shape]"
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype} [{dims}]"


class Dataset:
    """Inputs (one array per model input, leading sample axis) and optional labels.

    Build one from arrays (``Dataset({"x": x}, labels=y)`` or ``Dataset(x)`` for a single-input
    model), from a ``.npz`` file (:meth:`from_npz`), from any iterable of feed dicts or arrays
    (:meth:`from_batches`), or generate random data from the model's input specs
    (:meth:`synthetic`, flagged ``is_synthetic`` so reports can say so).
    """

    def __init__(
        self,
        inputs: Mapping[str, Any] | np.ndarray,
        labels: Any = None,
        *,
        synthetic: bool = False,
        source: str = "arrays",
    ) -> None:
        if isinstance(inputs, Mapping):
            arrays = {str(k): np.asarray(v) for k, v in inputs.items()}
        else:
            # A bare array belongs to the model's single input; the name is resolved on binding.
            arrays = {"": np.asarray(inputs)}
        if not arrays:
            raise DataError("dataset has no input arrays")
        sizes = {}
        for name, array in arrays.items():
            label = repr(name or "<unnamed>")
            if array.ndim == 0:
                raise DataError(
                    f"input {label} is a scalar; expected an array whose first axis indexes samples"
                )
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise DataError(f"input {label} holds {bad} NaN or Inf value(s); the model cannot be judged on them")
            sizes[name] = array.shape[0]
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{k or '<unnamed>'!r}: {v}" for k, v in sizes.items())
            raise DataError(f"inputs disagree on the number of samples (first axis): {listing}")
        self._arrays = arrays
        self._n = next(iter(sizes.values()))
        if self._n == 0:
            raise DataError("the dataset has no samples (its arrays are empty)")
        self._labels = None if labels is None else _check_labels(np.asarray(labels), self._n)
        self.is_synthetic = bool(synthetic)
        self.source = source

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_npz(cls, path: str | os.PathLike, labels: str | None = None,
                 inputs: Iterable[str] | None = None) -> Dataset:
        """Arrays keyed by input name; ``labels`` names the labels array, if there is one.

        ``inputs``: the names to read (e.g. a model's input names); other arrays in the file (a
        test split of another size, ...) are then ignored. Without it every array is an input.
        """
        path = Path(path)
        where = f"dataset {str(path)!r}"
        if path.is_dir():
            raise DataError(f"{where} is a folder; give an .npz file")
        if not path.is_file():
            raise DataError(f"{where} does not exist")
        if path.stat().st_size == 0:
            raise DataError(f"{where} is empty (0 bytes)")
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:  # a text file, a truncated archive, pickled objects, ...
            with open(path, "rb") as f:
                zipped = f.read(4) == b"PK\x03\x04"
            why = ("it holds Python objects (pickles), which are not read" if zipped and "pickle" in str(exc)
                   else str(exc) if zipped else "save the arrays with numpy.savez(path, input_name=array, ...)")
            raise DataError(f"{where} is not a readable .npz archive of arrays: {why}") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{where} holds a single array (an .npy file); save the arrays by input name "
                            "with numpy.savez(path, input_name=array, labels=...)")
        try:
            with loaded as npz:
                wanted = None if inputs is None else set(inputs) | ({labels} if labels else set())
                arrays = {k: npz[k] for k in npz.files if wanted is None or k in wanted}
                held = list(npz.files)
        except Exception as exc:  # a damaged member, an object array inside
            raise DataError(f"{where} is not a readable .npz archive of arrays: {exc}") from None
        missing = [name for name in (inputs or ()) if name not in arrays]
        if missing:
            raise DataError(f"missing input {', '.join(map(repr, missing))}; {where} holds {sorted(held)}")
        label_values = None
        if labels is not None:
            if labels not in arrays:
                raise DataError(f"{where} has no labels array {labels!r}; it holds {sorted(held)}")
            label_values = arrays.pop(labels)
        if not arrays:
            named = f" named {sorted(inputs)}" if inputs is not None else ""
            raise DataError(f"{where} holds no input arrays{named}; it holds {sorted(held)}")
        return cls(arrays, label_values, source=str(path))

    @classmethod
    def from_batches(
        cls, batches: Iterable[Mapping[str, Any] | np.ndarray], labels: Any = None
    ) -> Dataset:
        """Concatenate an iterable of feed dicts (or arrays, for single-input models).

        Every item carries a leading sample axis; items are joined along it.
        """
        parts: dict[str, list[np.ndarray]] = {}
        kinds = set()
        for i, item in enumerate(batches):
            if isinstance(item, Mapping):
                kinds.add("dict")
                entries = {str(k): np.asarray(v) for k, v in item.items()}
            else:
                kinds.add("array")
                entries = {"": np.asarray(item)}
            if len(kinds) > 1:
                raise DataError(f"batch {i}: mixes feed dicts and bare arrays")
            if parts and set(entries) != set(parts):
                raise DataError(
                    f"batch {i}: has inputs {sorted(entries)}, earlier batches have {sorted(parts)}"
                )
            for name, array in entries.items():
                if array.ndim == 0:
                    raise DataError(f"batch {i}: input {name or '<unnamed>'!r} is a scalar")
                parts.setdefault(name, []).append(array)
        if not parts:
            raise DataError("no batches given")
        arrays = {}
        for name, chunks in parts.items():
            tails = {c.shape[1:] for c in chunks}
            if len(tails) > 1:
                raise DataError(
                    f"input {name or '<unnamed>'!r}: batches differ beyond the first axis "
                    f"({sorted(tails)}); pad them to one shape"
                )
            dtypes = {c.dtype for c in chunks}
            if len(dtypes) > 1:
                raise DataError(f"input {name or '<unnamed>'!r}: batches mix dtypes {dtypes}")
            arrays[name] = np.concatenate(chunks, axis=0)
        return cls(arrays if "" not in arrays else arrays[""], labels, source="batches")

    @classmethod
    def synthetic(
        cls,
        model: ModelLike,
        n: int = 32,
        seed: int = 0,
        low: float = -1.0,
        high: float = 1.0,
        int_low: int = 0,
        int_high: int = 100,
        dims: Mapping[str, int] | None = None,
    ) -> Dataset:
        """Random inputs that fit ``model``: floats uniform in ``[low, high)``, integers (e.g.
        token ids) uniform in ``[int_low, int_high)``, booleans fair coin flips.

        The leading axis holds ``n`` samples. Other symbolic dimensions take their size from
        ``dims`` (keyed by the dimension's name). The result is flagged ``is_synthetic``.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if not low < high:
            raise ValueError(f"low must be below high, got low={low}, high={high}")
        if not int_low < int_high:
            raise ValueError(f"int_low must be below int_high, got {int_low}, {int_high}")
        dims = dict(dims or {})
        rng = np.random.default_rng(seed)
        arrays = {}
        for spec in input_specs(model):
            if not spec.shape:
                what = "has no declared shape" if spec.shape is None else "is a scalar"
                raise DataError(f"input {spec.name!r} {what}; cannot generate data for it")
            shape = [n]
            for axis, dim in enumerate(spec.shape[1:], start=1):
                if isinstance(dim, int):
                    shape.append(dim)
                elif dim in dims:
                    shape.append(int(dims[dim]))
                else:
                    raise DataError(
                        f"input {spec.name!r}: axis {axis} is symbolic ({dim or 'unnamed'}); "
                        f"give its size with dims={{{dim or 'name'!r}: size}}"
                    )
            if spec.dtype == np.bool_:
                arrays[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            elif np.issubdtype(spec.dtype, np.integer):
                arrays[spec.name] = rng.integers(int_low, int_high, size=shape).astype(spec.dtype)
            elif np.issubdtype(spec.dtype, np.floating):
                arrays[spec.name] = rng.uniform(low, high, size=shape).astype(spec.dtype)
            else:
                raise DataError(f"input {spec.name!r}: cannot generate data of dtype {spec.dtype}")
        source = (
            f"synthetic (n={n}, seed={seed}, floats in [{low}, {high}), "
            f"integers in [{int_low}, {int_high}))"
        )
        return cls(arrays, synthetic=True, source=source)

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        names = ", ".join(f"{k or '<unnamed>'}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        labels = "" if self._labels is None else f", labels {list(self._labels.shape)}"
        flag = ", synthetic" if self.is_synthetic else ""
        return f"Dataset({names}{labels}{flag})"

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The input arrays by name (a bare single-input array is keyed by ``""``)."""
        return dict(self._arrays)

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    # -- fitting to a model ---------------------------------------------------------------------

    def bind(self, model: ModelLike) -> Dataset:
        """Check the data against ``model``'s inputs and return it keyed by the model's names.

        Raises :class:`DataError` for a missing or extra input, a wrong dtype, a wrong rank, a
        wrong size on a fixed dimension, or a sample count the fixed batch size does not divide.
        """
        specs = as_model(model).input_specs()
        arrays = dict(self._arrays)
        if "" in arrays:
            if len(specs) != 1:
                raise DataError(
                    f"an unnamed array fits single-input models only; this model has inputs "
                    f"{[s.name for s in specs]}: pass a dict keyed by input name"
                )
            arrays = {specs[0].name: arrays.pop("")}
        expected = {s.name for s in specs}
        missing = [s for s in specs if s.name not in arrays]
        if missing:
            raise DataError(
                "missing input "
                + ", ".join(f"{s.name!r} (expected {_describe(s)})" for s in missing)
                + f"; the data has {sorted(arrays)}"
            )
        extra = sorted(set(arrays) - expected)
        if extra:
            raise DataError(f"data has input(s) {extra} the model does not take; it takes {sorted(expected)}")
        for spec in specs:
            _check_array(spec, arrays[spec.name], self._n)
        bound = Dataset.__new__(Dataset)
        bound._arrays = {s.name: arrays[s.name] for s in specs}
        bound._n, bound._labels = self._n, self._labels
        bound.is_synthetic, bound.source = self.is_synthetic, self.source
        return bound

    def batch_size_for(self, model: ModelLike, batch_size: int | None = None) -> int:
        """Samples per run: the fixed batch dimension if the model has one, else ``batch_size``."""
        fixed = {s.shape[0] for s in input_specs(model) if s.shape and isinstance(s.shape[0], int)}
        if len(fixed) > 1:
            raise DataError(f"model inputs disagree on the fixed batch size: {sorted(fixed)}")
        if fixed:
            return fixed.pop()
        size = DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size)
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return size

    def batches(self, model: ModelLike, batch_size: int | None = None) -> list[Batch]:
        """Validate against ``model`` and split into runs that fit it (see :meth:`bind`)."""
        model = as_model(model)
        bound = self.bind(model)
        size = bound.batch_size_for(model, batch_size)
        return list(bound._iter_batches(size))

    def _iter_batches(self, size: int) -> Iterator[Batch]:
        for start in range(0, self._n, size):
            stop = min(start + size, self._n)
            feed = {k: np.ascontiguousarray(v[start:stop]) for k, v in self._arrays.items()}
            labels = None if self._labels is None else self._labels[start:stop]
            yield Batch(feed, labels, start, stop)


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim == 0 or len(labels) != n:
        got = "a scalar" if labels.ndim == 0 else f"{len(labels)} labels"
        raise DataError(f"labels: expected {n} labels (one per sample), got {got}")
    if labels.dtype.kind not in "biuf":
        raise DataError(f"labels have dtype {labels.dtype}; give class indices (integers) or numeric targets, "
                        "e.g. encode strings with numpy.unique(labels, return_inverse=True)")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise DataError("labels hold NaN or Inf values")
    return labels


def _check_array(spec: TensorSpec, array: np.ndarray, n: int) -> None:
    if spec.dtype is None:
        raise DataError(f"input {spec.name!r} is not a tensor; pyprune feeds tensors only")
    if array.dtype != spec.dtype:
        raise DataError(
            f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype} "
            f"(convert with .astype(np.{spec.dtype.name}))"
        )
    if spec.shape is None:  # the model declares no shape: nothing more to check
        return
    if array.ndim != len(spec.shape):
        raise DataError(
            f"input {spec.name!r}: expected rank {len(spec.shape)} ({_describe(spec)}), "
            f"got rank {array.ndim} with shape {list(array.shape)}"
        )
    for axis, dim in enumerate(spec.shape):
        if axis == 0:
            if isinstance(dim, int) and dim > 0 and n % dim:
                raise DataError(
                    f"input {spec.name!r}: the model's batch dimension is fixed at {dim}, "
                    f"but {n} samples cannot be split into batches of {dim}"
                )
            continue
        if isinstance(dim, int) and dim > 0 and array.shape[axis] != dim:
            raise DataError(
                f"input {spec.name!r}: expected size {dim} on axis {axis} ({_describe(spec)}), "
                f"got {array.shape[axis]} (shape {list(array.shape)})"
            )
