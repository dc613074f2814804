"""Data a model is judged on: loading, synthetic generation, validation and batching.

A :class:`Dataset` holds one array per model input plus optional labels. Most inputs are *sample
inputs*: their arrays share a leading sample axis and are split into batches. Some inputs are not
samples (a scalar sample rate, a recurrent state without a batch axis, one attention mask for
every sample): those are *held* — one value fed with every batch (see :class:`HeldInput` and
:func:`input_roles`). The data is checked against the model *before* any inference runs, so data
that does not fit raises a :class:`~pyprune.errors.DataError` naming the input and what was
expected, instead of an ONNX Runtime error half-way through a search.

Symbolic dimensions (sequence length, image height and width) take their size from the data; with
no data (synthetic inputs), from ``dims`` (``{symbol: size}``, ``--dim SYMBOL=N`` on the command
line) or ``input_shapes`` (``{input: shape}``, ``--input-shape NAME:D0,D1,...``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import DataError
from .graph import Model, TensorSpec, load
from .graph._model import Dim

__all__ = ["Dataset", "Batch", "HeldInput", "input_specs", "input_roles", "DEFAULT_BATCH_SIZE",
           "HELD_DEFAULTS"]

#: Batch size used for inputs whose batch dimension is symbolic, unless told otherwise.
DEFAULT_BATCH_SIZE = 32

#: What an input the data does not give is held at. Integer or boolean inputs named like an
#: attention mask (``*mask*``) are held at 1 (every position attended), token type / segment ids
#: at 0 (one segment); any other input that is not a sample input (a scalar, a state without a
#: batch axis) at 0, the start of a recurrent state. Give the real value in the data to override.
HELD_DEFAULTS = {"mask": 1, "token_type": 0, "segment": 0, "other": 0}

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


@dataclass(frozen=True)
class HeldInput:
    """An input fed the same value with every batch instead of being split into samples.

    ``per_sample``: ``value`` is one sample (no batch axis), repeated along a new first axis to
    each batch's size (one attention mask for every sample); otherwise ``value`` is fed as it is
    (a scalar, a state without a batch axis). ``source`` says where it came from: ``"data"`` or
    ``"default"`` (:data:`HELD_DEFAULTS`).
    """

    name: str
    value: np.ndarray
    per_sample: bool = False
    source: str = "data"

    def feed(self, batch: int) -> np.ndarray:
        if not self.per_sample:
            return self.value
        return np.ascontiguousarray(np.broadcast_to(self.value, (batch, *self.value.shape)))

    def describe(self) -> str:
        shape = ("[batch, " if self.per_sample else "[") + ", ".join(map(str, self.value.shape)) + "]"
        shape = shape.replace(", ]", "]")
        if self.source == "default":
            what = "a mask" if _default_kind(self.name) == "mask" else "an input that is not a sample"
            fill = HELD_DEFAULTS[_default_kind(self.name)]
            return (f"input {self.name!r} {shape} is not in the data: held at {fill} (the default for "
                    f"{what}; give its value in the data to change it)")
        return f"input {self.name!r} {shape} is not split into samples: its one value is fed with every batch"


def input_roles(model: ModelLike) -> dict[str, str]:
    """``"sample"`` or ``"held"`` for each input, from the model's declared shapes alone.

    Scalars are held. When some input has a symbolic first axis, that axis is the batch: inputs
    whose first axis is symbolic are sample inputs, inputs with a fixed first axis (a recurrent
    state ``[2, 64]``) are held. When every first axis is fixed, the first input's gives the batch
    size and inputs with another first axis are held. Data can still hand a sample input one
    value for every sample (see :meth:`Dataset.bind`).
    """
    specs = as_model(model).input_specs()
    shaped = [s for s in specs if s.shape]
    symbolic = any(not isinstance(s.shape[0], int) for s in shaped if s.shape)
    batch = None if symbolic or not shaped or not shaped[0].shape else shaped[0].shape[0]
    roles = {}
    for s in specs:
        if s.shape is not None and len(s.shape) == 0:
            roles[s.name] = "held"
        elif not s.shape:
            roles[s.name] = "sample"
        elif symbolic:
            roles[s.name] = "sample" if not isinstance(s.shape[0], int) else "held"
        else:
            roles[s.name] = "sample" if s.shape[0] == batch else "held"
    return roles


def _default_kind(name: str) -> str:
    low = name.lower()
    for kind in ("mask", "token_type", "segment"):
        if kind in low:
            return kind
    return "other"


def _describe(spec: TensorSpec) -> str:
    if spec.shape is None:
        return f"{spec.dtype} [unknown shape]"
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype} [{dims}]"


class Dataset:
    """Inputs (one array per model input) and optional labels.

    Build one from arrays (``Dataset({"x": x}, labels=y)`` or ``Dataset(x)`` for a single-input
    model), from a ``.npz`` file (:meth:`from_npz`), from any iterable of feed dicts or arrays
    (:meth:`from_batches`), or generate random data from the model's input specs
    (:meth:`synthetic`, flagged ``is_synthetic`` so reports can say so). Arrays of sample inputs
    share a leading sample axis; an input that is not a sample (a scalar, a state without a batch
    axis, one mask for every sample) holds its one value (see :meth:`bind`).
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
        for name, array in arrays.items():
            label = repr(name or "<unnamed>")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise DataError(f"input {label} holds {bad} NaN or Inf value(s); the model cannot be judged on them")
        if "" in arrays and arrays[""].ndim == 0:
            raise DataError("input '<unnamed>' is a scalar; expected an array whose first axis indexes samples")
        self._arrays = arrays
        self._held: dict[str, HeldInput] = {}
        self._notes: list[str] = []
        self._bound = False
        # Until the data is bound to a model, arrays that disagree on their first axis may still
        # be held values (a state without a batch axis): the count is settled by bind().
        sizes = {k: len(v) for k, v in arrays.items() if v.ndim}
        self._n: int | None = next(iter(sizes.values())) if len(set(sizes.values())) == 1 else None
        if not sizes:
            self._n = 1
        if self._n == 0:
            raise DataError("the dataset has no samples (its arrays are empty)")
        self._labels = None if labels is None else np.asarray(labels)
        if self._labels is not None and self._n is not None:
            self._labels = _check_labels(self._labels, self._n)
        self.is_synthetic = bool(synthetic)
        self.source = source

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_npz(cls, path: str | os.PathLike, labels: str | None = None,
                 inputs: Iterable[str] | None = None, optional: bool = False) -> Dataset:
        """Arrays keyed by input name; ``labels`` names the labels array, if there is one.

        ``inputs``: the names to read (e.g. a model's input names); other arrays in the file (a
        test split of another size, ...) are then ignored. Without it every array is an input.
        A name of ``inputs`` the file lacks is an error, unless ``optional``: :meth:`bind` then
        decides (inputs that are not samples take their defaults, others are refused there).
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
        if missing and (not optional or not set(arrays) - {labels}):
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
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> Dataset:
        """Random inputs that fit ``model``: floats uniform in ``[low, high)``, integers (e.g.
        token ids) uniform in ``[int_low, int_high)`` (and below the size of the embedding table
        they index, when the graph shows one), booleans fair coin flips.

        Sample inputs hold ``n`` samples; inputs that are not samples (:func:`input_roles`) and
        attention masks or token type ids are held at :data:`HELD_DEFAULTS`. Symbolic dimensions
        take their size from ``dims`` (keyed by the dimension's name) or ``input_shapes`` (keyed
        by input name, whole shapes). The result is flagged ``is_synthetic``.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if not low < high:
            raise ValueError(f"low must be below high, got low={low}, high={high}")
        if not int_low < int_high:
            raise ValueError(f"int_low must be below int_high, got {int_low}, {int_high}")
        model = as_model(model)
        rng = np.random.default_rng(seed)
        roles = input_roles(model)
        arrays = {}
        sizes = _SizeTable(dims, input_shapes)
        for spec in model.input_specs():
            if spec.shape is None:
                raise DataError(f"input {spec.name!r} has no declared shape; cannot generate data for it")
            if spec.dtype is None:
                raise DataError(f"input {spec.name!r} is not a tensor; cannot generate data for it")
            held = roles[spec.name] == "held"
            shape = sizes.resolve(spec, sample_axis=not held)
            kind = _default_kind(spec.name)
            if held or (kind != "other" and spec.dtype.kind in "iub"):
                fill = HELD_DEFAULTS[kind]
                arrays[spec.name] = np.full(shape if held else [n, *shape[1:]], fill, dtype=spec.dtype)
            elif spec.dtype == np.bool_:
                arrays[spec.name] = rng.integers(0, 2, size=[n, *shape[1:]]).astype(np.bool_)
            elif np.issubdtype(spec.dtype, np.integer):
                top = max(min(int_high, _index_bound(model, spec.name) or int_high), int_low + 1)
                arrays[spec.name] = rng.integers(int_low, top, size=[n, *shape[1:]]).astype(spec.dtype)
            elif np.issubdtype(spec.dtype, np.floating):
                arrays[spec.name] = rng.uniform(low, high, size=[n, *shape[1:]]).astype(spec.dtype)
            else:
                raise DataError(f"input {spec.name!r}: cannot generate data of dtype {spec.dtype}")
        source = (
            f"synthetic (n={n}, seed={seed}, floats in [{low}, {high}), "
            f"integers in [{int_low}, {int_high}))"
        )
        return cls(arrays, synthetic=True, source=source)

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        if self._n is None:
            raise DataError(self._disagreement(dict(self._arrays)))
        return self._n

    def __repr__(self) -> str:
        names = ", ".join(f"{k or '<unnamed>'}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        held = "".join(f", {h.name}: held {h.value.dtype}{list(h.value.shape)}" for h in self._held.values())
        labels = "" if self._labels is None else f", labels {list(self._labels.shape)}"
        flag = ", synthetic" if self.is_synthetic else ""
        return f"Dataset({names}{held}{labels}{flag})"

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The input arrays by name (a bare single-input array is keyed by ``""``); after
        :meth:`bind`, the sample inputs only (held inputs are in :attr:`held`)."""
        return dict(self._arrays)

    @property
    def held(self) -> dict[str, HeldInput]:
        """Inputs fed one value with every batch (known once bound to a model)."""
        return dict(self._held)

    @property
    def notes(self) -> list[str]:
        """What binding assumed about the inputs (held values, defaults), one sentence each."""
        return list(self._notes)

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    # -- fitting to a model ---------------------------------------------------------------------

    def bind(self, model: ModelLike, dims: Mapping[str, int] | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> Dataset:
        """Check the data against ``model``'s inputs and return it keyed by the model's names.

        Inputs that are not samples are held (:class:`HeldInput`): a scalar; an input the model
        declares without a batch axis (:func:`input_roles`) whose array has exactly its shape; an
        array one axis short of its input, or with a first axis of 1 while the other inputs hold
        several samples (one value for every sample). Held inputs the data lacks take
        :data:`HELD_DEFAULTS`, as do attention masks and token type ids; ``dims`` and
        ``input_shapes`` size their symbolic dimensions where the data does not.

        Raises :class:`DataError` for a missing or extra input, a wrong dtype, a wrong rank, a
        wrong size on a fixed dimension, inputs that disagree on the sample count, a sample count
        the fixed batch size does not divide, or ``dims``/``input_shapes`` the data contradicts.
        """
        model = as_model(model)
        arrays: dict[str, np.ndarray | HeldInput] = dict(self._arrays)
        if self._bound and set(self._arrays) | set(self._held) == set(model.input_names):
            arrays.update(self._held)
        specs = model.input_specs()
        if "" in arrays:
            if len(specs) != 1:
                raise DataError(
                    f"an unnamed array fits single-input models only; this model has inputs "
                    f"{[s.name for s in specs]}: pass a dict keyed by input name"
                )
            arrays = {specs[0].name: arrays.pop("")}
        expected = {s.name for s in specs}
        extra = sorted(set(arrays) - expected)
        if extra:
            raise DataError(f"data has input(s) {extra} the model does not take; it takes {sorted(expected)}")
        roles = input_roles(model)
        held: dict[str, HeldInput] = {}
        samples: dict[str, np.ndarray] = {}
        for spec in specs:
            value = arrays.get(spec.name)
            if isinstance(value, HeldInput):
                held[spec.name] = value
            elif value is not None:
                samples[spec.name] = value
        counts = {k: len(v) for k, v in samples.items() if v.ndim}
        several = max(counts.values(), default=1) > 1
        for spec in specs:
            array = samples.get(spec.name)
            if array is None or spec.shape is None:
                continue
            rank = len(spec.shape)
            static = all(isinstance(d, int) for d in spec.shape)
            if rank == 0 or array.ndim == 0:
                if array.size != 1 or rank:
                    raise DataError(f"input {spec.name!r}: expected {_describe(spec)}, got a "
                                    f"{'scalar' if array.ndim == 0 else f'array of shape {list(array.shape)}'}")
                held[spec.name] = HeldInput(spec.name, array.reshape(()))
            elif roles[spec.name] == "held" and static and list(array.shape) == list(spec.shape):
                held[spec.name] = HeldInput(spec.name, array)
            elif array.ndim == rank - 1 and roles[spec.name] == "sample" and _fits(spec.shape[1:], array.shape):
                held[spec.name] = HeldInput(spec.name, array, per_sample=True)
            elif (several and array.ndim == rank and len(array) == 1 and len(set(counts.values())) > 1
                  and not isinstance(spec.shape[0], int)):
                held[spec.name] = HeldInput(spec.name, array[0], per_sample=True)
            else:
                continue
            del samples[spec.name]
        counts = {k: len(v) for k, v in samples.items()}
        if len(set(counts.values())) > 1:
            raise DataError(self._disagreement(samples))
        n = next(iter(counts.values()), 1)
        if n == 0:
            raise DataError("the dataset has no samples (its arrays are empty)")
        labels = None if self._labels is None else _check_labels(self._labels, n)
        sizes = _SizeTable(dims, input_shapes)
        sizes.learn(specs, samples, held)
        missing = []
        for spec in specs:
            if spec.name in samples or spec.name in held:
                continue
            kind = _default_kind(spec.name)
            is_held = roles[spec.name] == "held"
            defaulted = is_held or (kind != "other" and spec.dtype is not None and spec.dtype.kind in "iub")
            if spec.dtype is None or spec.shape is None or not defaulted:
                missing.append(spec)
                continue
            shape = sizes.resolve(spec, sample_axis=not is_held)
            fill = np.full(shape if is_held else shape[1:], HELD_DEFAULTS[kind], dtype=spec.dtype)
            held[spec.name] = HeldInput(spec.name, fill, per_sample=not is_held, source="default")
        if missing:
            raise DataError(
                "missing input "
                + ", ".join(f"{s.name!r} (expected {_describe(s)})" for s in missing)
                + f"; the data has {sorted(arrays)}"
            )
        for spec in specs:
            if spec.name in samples:
                _check_array(spec, samples[spec.name], n)
                sizes.check(spec, samples[spec.name].shape[1:], sample_axis=True)
            else:
                h = held[spec.name]
                _check_held(spec, h)
                sizes.check(spec, h.value.shape, sample_axis=h.per_sample)
        bound = Dataset.__new__(Dataset)
        bound._arrays = {s.name: samples[s.name] for s in specs if s.name in samples}
        bound._held = {s.name: held[s.name] for s in specs if s.name in held}
        bound._notes = [h.describe() for h in bound._held.values()]
        bound._bound = True
        bound._n, bound._labels = n, labels
        bound.is_synthetic, bound.source = self.is_synthetic, self.source
        return bound

    def _disagreement(self, arrays: Mapping[str, np.ndarray]) -> str:
        listing = ", ".join(f"{k or '<unnamed>'!r}: {len(v)}" for k, v in arrays.items() if np.ndim(v))
        return f"inputs disagree on the number of samples (first axis): {listing}"

    def input_shapes(self, model: ModelLike) -> dict[str, list[Dim]]:
        """The shape of each input as this (bound) data feeds it: the model's first axis for
        sample inputs (their batch), every other size from the data."""
        model = as_model(model)
        shapes: dict[str, list[Dim]] = {}
        for spec in model.input_specs():
            if spec.name in self._arrays:
                first: Dim = spec.shape[0] if spec.shape else None
                shapes[spec.name] = [first, *self._arrays[spec.name].shape[1:]]
            elif spec.name in self._held:
                h = self._held[spec.name]
                lead: list[Dim] = [spec.shape[0] if spec.shape else None] if h.per_sample else []
                shapes[spec.name] = [*lead, *h.value.shape]
        return shapes

    def batch_size_for(self, model: ModelLike, batch_size: int | None = None) -> int:
        """Samples per run: the fixed batch dimension if the model has one, else ``batch_size``."""
        held = set(self._held)
        fixed = {s.shape[0] for s in input_specs(model)
                 if s.shape and isinstance(s.shape[0], int) and s.name not in held}
        if len(fixed) > 1:
            raise DataError(f"model inputs disagree on the fixed batch size: {sorted(fixed)}")
        if fixed:
            return fixed.pop()
        size = DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size)
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return size

    def batches(self, model: ModelLike, batch_size: int | None = None, split_at: int | None = None) -> list[Batch]:
        """Validate against ``model`` and split into runs that fit it (see :meth:`bind`).
        ``split_at``: no run straddles this sample (a holdout part begins there)."""
        model = as_model(model)
        bound = self.bind(model)
        size = bound.batch_size_for(model, batch_size)
        n = len(bound) or 1
        if split_at is None or not 0 < split_at < n:
            return list(bound._iter_batches(size, 0, n))
        return list(bound._iter_batches(size, 0, split_at)) + list(bound._iter_batches(size, split_at, n))

    def with_holdout(self, fraction: float, seed: int = 0, multiple: int = 1) -> tuple[Dataset, int]:
        """The same samples in a seeded random order, and where its holdout part begins: the last
        ``fraction`` of them (rounded to a ``multiple``, e.g. a fixed batch size), which a search
        checks its constraint on and fits nothing to."""
        n = len(self)
        hold = int(round(n * fraction / multiple)) * multiple
        if hold <= 0 or hold >= n:
            return self, n
        order = np.random.default_rng(seed).permutation(n)
        out = copy.copy(self)  # held inputs, binding and source stay; the samples are reordered
        out._arrays = {k: v[order] for k, v in self._arrays.items()}
        out._labels = None if self._labels is None else self._labels[order]
        return out, n - hold

    def _iter_batches(self, size: int, begin: int, end: int) -> Iterator[Batch]:
        for start in range(begin, end, size):
            stop = min(start + size, end)
            feed = {k: np.ascontiguousarray(v[start:stop]) for k, v in self._arrays.items()}
            feed.update({k: h.feed(stop - start) for k, h in self._held.items()})
            labels = None if self._labels is None else self._labels[start:stop]
            yield Batch(feed, labels, start, stop)


class _SizeTable:
    """Sizes of symbolic dimensions: given (``dims``, ``input_shapes``), learnt from the data."""

    def __init__(self, dims: Mapping[str, int] | None, input_shapes: Mapping[str, Sequence[int]] | None):
        self.given = {str(k): int(v) for k, v in (dims or {}).items()}
        self.shapes = {str(k): [int(d) for d in v] for k, v in (input_shapes or {}).items()}
        self.seen: dict[str, tuple[int, str]] = {}

    def learn(self, specs: Sequence[TensorSpec], samples: Mapping[str, np.ndarray],
              held: Mapping[str, HeldInput]) -> None:
        for spec in specs:
            if spec.shape is None:
                continue
            if spec.name in samples:
                dims, sizes = spec.shape[1:], samples[spec.name].shape[1:]
            elif spec.name in held:
                h = held[spec.name]
                dims, sizes = (spec.shape[1:] if h.per_sample else spec.shape), h.value.shape
            else:
                continue
            for d, size in zip(dims, sizes):
                if isinstance(d, str) and d not in self.seen:
                    self.seen[d] = (int(size), spec.name)

    def resolve(self, spec: TensorSpec, sample_axis: bool) -> list[int]:
        """Concrete sizes for ``spec`` (axis 0 left as 1 when it is the sample axis)."""
        assert spec.shape is not None
        given = self.shapes.get(spec.name)
        if given is not None:
            if len(given) != len(spec.shape):
                raise DataError(f"--input-shape {spec.name}:{','.join(map(str, given))} (input_shapes=) has "
                                f"{len(given)} dimensions; input {spec.name!r} has {len(spec.shape)}: "
                                f"{_describe(spec)}")
        shape = []
        for axis, dim in enumerate(spec.shape):
            if axis == 0 and sample_axis:
                shape.append(1)
            elif given is not None:
                shape.append(given[axis])
            elif isinstance(dim, int):
                shape.append(dim)
            elif dim and dim in self.given:
                shape.append(self.given[dim])
            elif dim and dim in self.seen:
                shape.append(self.seen[dim][0])
            else:
                named = f"({dim})" if dim else "(unnamed)"
                how = f"--dim {dim}=N" + " or " if dim else ""
                api = f"dims={{{dim!r}: N}}" if dim else f"input_shapes={{{spec.name!r}: [...]}}"
                raise DataError(
                    f"input {spec.name!r}: axis {axis} is symbolic {named}; give its size: {how}--input-shape "
                    f"{spec.name}:{','.join('N' if not isinstance(d, int) else str(d) for d in spec.shape)} "
                    f"on the command line, {api} in Python, or give data"
                )
        return shape

    def check(self, spec: TensorSpec, sizes: Sequence[int], sample_axis: bool) -> None:
        """The data must agree with the sizes given for this input. ``sizes``: the data's sizes of
        the input's dimensions, without the sample axis when ``sample_axis``."""
        if spec.shape is None:
            return
        given = self.shapes.get(spec.name)
        if given is not None and list(given[1:] if sample_axis else given) != list(sizes):
            have = ", ".join(["batch"] * sample_axis + [str(d) for d in sizes])
            raise DataError(f"--input-shape {spec.name}:{','.join(map(str, given))} (input_shapes=) "
                            f"disagrees with the data, which feeds {spec.name!r} as [{have}]")
        for d, size in zip(spec.shape[1:] if sample_axis else spec.shape, sizes):
            if isinstance(d, str) and d in self.given and self.given[d] != size:
                raise DataError(f"--dim {d}={self.given[d]} (dims=) disagrees with the data: input "
                                f"{spec.name!r} has {d} = {size}")


def _index_bound(model: Model, name: str) -> int | None:
    """Rows of the constant table an integer input indexes (token ids into an embedding), if the
    graph shows one: ids at or above it would make the Gather fail."""
    bounds = []
    stack, seen = [name], set[str]()
    while stack:
        value = stack.pop()
        if value in seen or len(seen) > 32:
            continue
        seen.add(value)
        for node, i in model.consumers(value):
            if node.op_type in ("Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten") and i == 0:
                stack.extend(o for o in node.output if o)
            elif node.op_type == "Gather" and i == 1 and model.is_weight(node.input[0]):
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                bounds.append(int(model.weight(node.input[0]).shape[axis]))
            elif node.op_type in ("EmbedLayerNormalization",) and model.is_weight(node.input[2] if i == 0 else ""):
                bounds.append(int(model.weight(node.input[2]).shape[0]))
    return min(bounds) if bounds else None


def _fits(dims: Sequence[Dim], sizes: Sequence[int]) -> bool:
    """``sizes`` match ``dims`` wherever those are fixed."""
    return len(dims) == len(sizes) and all(not isinstance(d, int) or d == s for d, s in zip(dims, sizes))


def _check_held(spec: TensorSpec, held: HeldInput) -> None:
    value = held.value
    if spec.dtype is None:
        raise DataError(f"input {spec.name!r} is not a tensor; pyprune feeds tensors only")
    if value.dtype != spec.dtype:
        raise DataError(
            f"input {spec.name!r}: expected dtype {spec.dtype}, got {value.dtype} "
            f"(convert with .astype(np.{spec.dtype.name}))"
        )
    if spec.shape is None:
        return
    dims = spec.shape[1:] if held.per_sample else spec.shape
    if value.ndim != len(dims):
        raise DataError(f"input {spec.name!r}: expected {_describe(spec)}, got shape {list(value.shape)}")
    for axis, (dim, size) in enumerate(zip(dims, value.shape)):
        if isinstance(dim, int) and dim > 0 and size != dim:
            raise DataError(
                f"input {spec.name!r}: expected size {dim} on axis {axis + held.per_sample} ({_describe(spec)}), "
                f"got {size} (shape {list(value.shape)})"
            )


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
