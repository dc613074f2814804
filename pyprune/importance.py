"""Which units matter least: per-unit scores of groups, layers and weight elements.

Every score is computed by the C++ core (:mod:`pyprune.core`). A group's unit is a set of coupled
slices (the producer's rows, the consumer's columns, ...); its score is the score of each coupled
tensor's slices, reduced over the tensors (``reduce``: sum, mean or max) and then normalised per
group (``normalize``: none, mean, max or LAMP) so that units of different groups can be ranked
against each other in a global search. Lower scores are removed first.

Importance names:

* ``"l1"``, ``"l2"``, ``"linf"``: magnitude of the weight slices a unit owns;
* ``"fpgm"``: distance of the unit's filter to the others (near the geometric median = redundant);
* ``"random"``: seeded uniform scores (a baseline);
* ``"wanda"``: activation-aware ``|W| * ||X||``: the consumer's weight columns weighted by the
  L2 norm of the activation that feeds them (needs data);
* ``"mean_activation"``: mean absolute activation of the unit where it enters its consumers;
* ``"apoz"``: one minus the average percentage of zeros of that activation;
* ``"reconstruction"``: the error a unit's removal leaves in its consumers' outputs after the
  least-squares refit of the rest (the OBS saliency of the unit's input columns,
  ``Σ_o w_oB [(H⁻¹)_BB]⁻¹ w_oBᵀ`` with ``H`` the consumer's input Gram matrix on the data): the
  units that recovery by least squares repairs best go first (needs data);
* ``"output_norm"``: the L2 norm of everything the unit feeds its consumers over the data (for an
  attention head: the norm of its context vectors);
* ``"attention_entropy"``: for attention heads, how focused their attention is (the inverse of
  the perplexity ``exp(entropy)`` of each query's attention distribution, averaged): heads that
  spread their attention evenly matter least; other units (and heads inside fused attention ops,
  whose probabilities are internal) are scored by ``wanda``;
* ``"ablation"``: a loss-change proxy: how much the model's outputs move (relative squared error)
  when the unit alone is masked, measured on up to 64 calibration samples for groups of at most
  64 units (attention heads); larger groups fall back to ``wanda``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper

from . import core
from .data import Dataset
from .evaluate import ChannelStats, MaskedSession, activation_stats
from .graph import Coupling, Group, Layer, MaskableWeight, Model
from .reconstruct import conv_rows

__all__ = [
    "Importance",
    "REGISTRY",
    "IMPORTANCES",
    "DATA_IMPORTANCES",
    "REDUCTIONS",
    "NORMALIZATIONS",
    "register",
    "get",
    "needs_data",
    "group_scores",
    "all_group_scores",
    "layer_scores",
    "weight_scores",
    "weight_input_norms",
    "normalize_scores",
    "group_activation_stats",
]

REDUCTIONS = ("sum", "mean", "max")
NORMALIZATIONS = ("none", "mean", "max", "lamp")

_ALIASES = {"magnitude": "l1", "taylor_free": "l2", "mean": "mean_activation", "activation": "mean_activation"}

#: Per-unit scores of one group before normalisation:
#: ``fn(model, group, reduce, stats, seed, threads) -> float64 array of group.size``.
UnitScores = Callable[[Model, Group, str, "Mapping[str, ChannelStats] | None", int, "int | None"], np.ndarray]
#: Per-element scores of one weight: ``fn(weight, input_norms, seed, threads) -> array of its shape``.
ElementScores = Callable[[np.ndarray, "tuple[np.ndarray, int] | None", int, "int | None"], np.ndarray]
#: How a layer is scored: a slice norm of its weights (:func:`pyprune.core.slice_norms`) per
#: parameter, or "random" (seeded draws).
LayerNorm = Literal["l1", "l2", "linf", "mean", "random"]


#: What a data-aware measure measures before scoring: ``fn(model, groups, dataset, threads) ->
#: mapping`` handed to its unit scores as ``stats`` (by default the activation statistics at the
#: groups' mask points, :func:`group_activation_stats`).
Collect = Callable[[Model, Dataset, Sequence[Group], "int | None"], Mapping[str, Any]]


@dataclass(frozen=True)
class Importance:
    """One importance measure: how it scores a group's units, a weight's elements (when it can)
    and a layer, and whether (and what) it needs from data."""

    name: str
    units: UnitScores
    elements: ElementScores | None = None
    layer_norm: LayerNorm = "l2"  # slice norm of a layer's weights per parameter; "random" draws instead
    needs_data: bool = False
    #: What it reads from the data: ``collect(model, dataset, groups, threads)`` (default: the
    #: activation statistics where the groups' channels enter their consumers).
    collect: Collect | None = None


#: Importance measures by name, in the order they are listed to users (one registry, like the
#: op rules: a new measure is one registered function).
REGISTRY: dict[str, Importance] = {}


def register(name: str, *, elements: ElementScores | None = None, layer_norm: LayerNorm = "l2",
             needs_data: bool = False, collect: Collect | None = None) -> Callable[[UnitScores], UnitScores]:
    """Register the decorated function as the unit scores of importance ``name``."""

    def add(fn: UnitScores) -> UnitScores:
        if name in REGISTRY:
            raise RuntimeError(f"two importance measures named {name!r}")
        REGISTRY[name] = Importance(name, fn, elements, layer_norm, needs_data or collect is not None, collect)
        return fn

    return add


def get(importance: str) -> Importance:
    """The measure named ``importance`` (aliases such as ``"magnitude"`` accepted)."""
    if not isinstance(importance, str):
        raise TypeError(f"importance must be a name such as 'l2', got {importance!r}")
    key = importance.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ValueError(f"unknown importance {importance!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def needs_data(importance: str) -> bool:
    """True for the activation-aware scores, which need activation statistics."""
    return get(importance).needs_data


def _seed_for(seed: int, key: str) -> int:
    """A per-group seed that depends only on the run's seed and the group's id (stable order)."""
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) & 0x7FFFFFFF


def group_activation_stats(
    model: Model, dataset: Dataset, groups: Iterable[Group], threads: int | None = None
) -> dict[str, ChannelStats]:
    """Statistics of every tensor where the given groups' channels enter their consumers (those of
    the main graph: a tensor computed inside a control-flow body is not measured)."""
    points = {mp.tensor: mp.axis for g in groups for mp in g.mask_points if _measurable(model, mp.tensor)}
    if not points:
        return {}
    return activation_stats(model, dataset, points, threads)


def _per_unit(values: np.ndarray, index: np.ndarray, size: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-position ``values`` into per-unit scores (``how``: sum, sumsq-root or max).

    Returns the scores and how many positions each unit owns (0 = not covered by this tensor).
    """
    owned = index >= 0
    idx, vals = index[owned], np.asarray(values, dtype=np.float64)[owned]
    counts = np.bincount(idx, minlength=size).astype(np.float64)
    out: np.ndarray
    if how == "max":
        out = np.zeros(size, dtype=np.float64)
        np.maximum.at(out, idx, vals)
    elif how == "l2":
        out = np.sqrt(np.bincount(idx, weights=vals * vals, minlength=size))
    else:
        out = np.bincount(idx, weights=vals, minlength=size)
    return out, counts


def _reduce(parts: list[tuple[np.ndarray, np.ndarray]], size: int, reduce: str) -> np.ndarray:
    if not parts:
        return np.zeros(size, dtype=np.float64)
    values = np.stack([p[0] for p in parts])
    covered = np.stack([p[1] > 0 for p in parts])
    if reduce == "sum":
        return values.sum(axis=0)
    if reduce == "max":
        return np.where(covered, values, -np.inf).max(axis=0).clip(min=0.0)
    n = np.maximum(covered.sum(axis=0), 1)
    return values.sum(axis=0) / n


def normalize_scores(scores: np.ndarray, normalize: str = "mean") -> np.ndarray:
    """Scale a group's scores so groups can be ranked together.

    ``"mean"``/``"max"`` divide by the group's mean/max; ``"lamp"`` is the LAMP score
    ``s_i^2 / sum_{s_j >= s_i} s_j^2`` (each unit relative to the units that would survive it);
    ``"none"`` leaves them.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    s = np.asarray(scores, dtype=np.float64)
    if normalize == "none" or s.size == 0:
        return s.copy()
    if normalize == "lamp":
        sq = s * s
        # sum of the squares at or above each value; equal scores share it, so ties stay ties
        values, inverse, counts = np.unique(sq, return_inverse=True, return_counts=True)
        tail = np.cumsum((values * counts)[::-1])[::-1][inverse]
        return sq / np.where(tail > 0, tail, 1.0)
    scale = s.mean() if normalize == "mean" else s.max()
    return s / scale if scale > 0 else s.copy()


# -- the measures --------------------------------------------------------------------------------


def _magnitude(kind: Literal["l1", "l2", "linf"]) -> UnitScores:
    combine = {"l1": "sum", "l2": "l2", "linf": "max"}[kind]

    def units(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
        parts = []
        for c in group.couplings:
            if c.role not in ("out", "in") or _is_bias(model, c):
                continue
            norms = core.slice_norms(model.weight(c.weight), c.axis, kind, nan="max", threads=threads)
            parts.append(_per_unit(norms, c.index, group.size, combine))
        return _reduce(parts, group.size, reduce)

    return units


def _abs(w, norms, seed, threads):
    return core.element_scores(w, "abs", nan="max", threads=threads)


def _square(w, norms, seed, threads):
    return core.element_scores(w, "square", nan="max", threads=threads)


register("l1", elements=_abs, layer_norm="l1")(_magnitude("l1"))
register("l2", elements=_square, layer_norm="l2")(_magnitude("l2"))
register("linf", elements=_abs, layer_norm="linf")(_magnitude("linf"))


@register("fpgm")
def _fpgm(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    parts = []
    for c in group.couplings:
        if c.role != "out" or _is_bias(model, c):
            continue
        w = model.weight(c.weight)
        if w.shape[c.axis] < 2:
            continue
        parts.append(_per_unit(core.fpgm_scores(w, c.axis, nan="max", threads=threads), c.index, group.size, "sum"))
    return _reduce(parts, group.size, reduce)


def _random_elements(w, norms, seed, threads):
    return core.random_scores(w.shape, seed, threads=threads)


@register("random", elements=_random_elements, layer_norm="random")
def _random(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    return core.random_scores(group.size, _seed_for(seed, group.id), threads=threads).astype(np.float64)


def _measurable(model: Model, tensor: str) -> bool:
    """Whether a session can fetch ``tensor``: a value of the main graph, not one computed inside
    a control-flow body."""
    return model.producer(tensor) is not None or tensor in model.input_names


def _stats_of(model: Model, group: Group, stats, name: str):
    """(mask point, statistics) of the group's mask points that can be measured."""
    if stats is None:
        raise ValueError(f"importance {name!r} needs activation statistics (pass stats=...)")
    for mp in group.mask_points:
        st = stats.get(mp.tensor)
        if st is None and _measurable(model, mp.tensor):
            raise ValueError(f"no activation statistics for tensor {mp.tensor!r} of group {group.id!r}")
        if st is not None:
            yield mp, st


def _or_magnitude(parts: list, model: Model, group: Group, reduce: str, seed: int, threads: int | None
                  ) -> np.ndarray:
    """The parts reduced; the L2 magnitude of the group's weights when there are none (every
    channel of the group enters its consumers inside control-flow bodies, where nothing is measured)."""
    if not parts:
        return REGISTRY["l2"].units(model, group, reduce, None, seed, threads)
    return _reduce(parts, group.size, reduce)


def _wanda_elements(w, norms, seed, threads):
    if norms is None:
        raise ValueError("wanda scores need the norms of its input features")
    values, axis = norms
    return core.wanda_scores(w, values, axis, nan="max", threads=threads)


@register("wanda", elements=_wanda_elements, needs_data=True)
def _wanda(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    """The consumer's columns that read each edge, scaled by the activation norms there."""
    size, parts = group.size, []
    for mp, st in _stats_of(model, group, stats, "wanda"):
        columns = [c for c in group.couplings if c.role == "in" and c.node == mp.node]
        if not columns:
            parts.append(_per_unit(st.l2_norm, mp.index, size, "sum"))
        for c in columns:
            w = model.weight(c.weight)
            if w.shape[c.axis] != len(st.l2_norm):
                parts.append(_per_unit(st.l2_norm, mp.index, size, "sum"))
                continue
            scored = core.wanda_scores(w, st.l2_norm, c.axis, nan="max", threads=threads)
            per_position = core.slice_norms(scored, c.axis, "l1", nan="max", threads=threads)
            parts.append(_per_unit(per_position, c.index, size, "sum"))
    return _or_magnitude(parts, model, group, reduce, seed, threads)


def _activation_measure(name: str, of: Callable[[ChannelStats], np.ndarray]) -> UnitScores:
    def units(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
        parts = [_per_unit(of(st), mp.index, group.size, "sum") for mp, st in _stats_of(model, group, stats, name)]
        # positions per unit differ (a flattened channel owns H*W positions): average them
        return _or_magnitude([(v / np.maximum(n, 1), n) for v, n in parts], model, group, reduce, seed, threads)

    return units


register("mean_activation", needs_data=True)(_activation_measure("mean_activation", lambda st: st.mean_abs))
register("apoz", needs_data=True)(_activation_measure("apoz", lambda st: 1.0 - st.zero_fraction))

#: Rows of a convolution's im2col a Gram matrix for "reconstruction" reads at most.
_GRAM_ROWS = 16384


def _reconstructable(model: Model, node_name: str, input_index: int) -> tuple[np.ndarray, tuple | None] | None:
    """The consumer's weight as rows (outputs x input columns) and its convolution geometry, or
    None when its output is not a linear function of this input that a refit could redo."""
    node = model.node(node_name)
    if input_index != 0 or len(node.input) < 2 or not model.is_weight(node.input[1]):
        return None
    w = model.weight(node.input[1]).astype(np.float64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    plain_pads = attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")
    if node.op_type == "Conv" and attrs.get("group", 1) == 1 and plain_pads:
        spatial = w.ndim - 2
        geometry = (tuple(w.shape[2:]), tuple(attrs.get("strides", [1] * spatial)),
                    tuple(attrs.get("pads", [0] * 2 * spatial)), tuple(attrs.get("dilations", [1] * spatial)))
        return w.reshape(w.shape[0], -1), geometry
    if node.op_type == "Gemm" and not attrs.get("transA", 0) and w.ndim == 2:
        return (w if attrs.get("transB", 0) else w.T), None
    if node.op_type == "MatMul" and w.ndim == 2:
        return w.T, None
    return None


def consumer_grams(model: Model, dataset: Dataset, groups: Sequence[Group],
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """``XᵀX`` of the input of every linear consumer of the groups' channels (keyed by node
    name), streamed through the C++ core; convolutions use their im2col rows (a fixed sample of
    at most ``_GRAM_ROWS``)."""
    consumers = {}
    for g in groups:
        for mp in g.mask_points:
            found = _reconstructable(model, mp.node, mp.input_index)
            if found is not None and _measurable(model, mp.tensor):
                consumers[mp.node] = (mp.tensor, found[1])
    if not consumers:
        return {}
    session = MaskedSession(model, dataset, threads=threads, capture={t: 1 for t, _ in consumers.values()})
    grams: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    per_batch = max(1, _GRAM_ROWS // max(len(session.batches), 1))

    def visit(_batch: Any, values: dict[str, np.ndarray]) -> None:
        for name, (tensor, geometry) in consumers.items():
            x = values[tensor]
            rows = conv_rows(x, *geometry) if geometry else x.reshape(-1, x.shape[-1])
            if rows.shape[0] > per_batch:
                rows = rows[np.sort(rng.choice(rows.shape[0], per_batch, replace=False))]
            grams[name] = core.gram_accumulate(np.ascontiguousarray(rows), None, grams.get(name), threads=threads)[0]

    session.stream(visit, outputs=False)
    return grams


def _damped_inverse(gram: np.ndarray, damp: float) -> np.ndarray:
    """``H⁻¹`` of the ridge-damped Gram matrix ``H = G + damp · mean(diag G) · I``."""
    return np.linalg.inv(gram + damp * max(float(np.mean(np.diag(gram))), 1e-12) * np.eye(gram.shape[0]))


def _saliency(rows: np.ndarray, gram: np.ndarray, channels: int, damp: float = 0.01) -> np.ndarray:
    """Per input channel (a block of columns): the output error its removal leaves after the
    other columns are refitted by least squares, ``Σ_o w_oB [(H⁻¹)_BB]⁻¹ w_oBᵀ``."""
    p = gram.shape[0]
    hinv = _damped_inverse(gram, damp)
    per = p // channels
    out = np.empty(channels)
    for c in range(channels):
        block = slice(c * per, (c + 1) * per)
        w = rows[:, block]
        out[c] = float(np.sum((w @ np.linalg.inv(hinv[block, block])) * w))
    return out


#: ``"obs"`` removes about this many steps' worth of units per group (one unit per step in
#: groups of at most this many units): the refit order of a 3,072-neuron layer in 64 updates.
_OBS_STEPS = 64


def _removal_costs(rows: np.ndarray, gram: np.ndarray, channels: int, damp: float = 0.01) -> np.ndarray:
    """Per input channel: the price of removing it in the order Optimal Brain Surgeon removes them
    one after another, each removal refitting the remaining columns by least squares (ZipLM's
    structured OBS). A unit's score is the largest marginal error any removal up to and including
    its own added, so ranking by score cuts exactly a prefix of that order, and ranks across groups
    by the error the last unit cut adds (the marginal cost a global threshold should equalise)."""
    p = gram.shape[0]
    per = p // channels
    hinv = _damped_inverse(gram, damp)
    w = rows.astype(np.float64, copy=True)
    blocks = np.arange(p).reshape(channels, per)
    alive = list(range(channels))
    costs = np.empty(channels)
    level = 0.0
    per_step = max(1, channels // _OBS_STEPS)
    while alive:
        if per == 1:
            cols = np.array(alive)
            now = np.sum(w[:, cols] ** 2, 0) / np.diag(hinv)[cols]
        else:
            now = np.array([float(np.sum((w[:, blocks[c]] @ np.linalg.inv(hinv[np.ix_(blocks[c], blocks[c])]))
                                         * w[:, blocks[c]])) for c in alive])
        picked = np.argsort(now, kind="stable")[:per_step]
        for i in picked:
            level = max(level, float(now[i]))
            costs[alive[i]] = level
        gone = blocks[[alive[i] for i in picked]].ravel()
        # the OBS update: remove the columns `gone`, refitting the rest (weights and inverse Hessian)
        inner = np.linalg.inv(hinv[np.ix_(gone, gone)])
        across = inner @ hinv[gone]
        w -= w[:, gone] @ across
        hinv -= hinv[:, gone] @ across
        taken = set(int(i) for i in picked)
        alive = [c for k, c in enumerate(alive) if k not in taken]
    return costs


def _consumer_scores(name: str, saliency: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> UnitScores:
    """Unit scores read from the Gram matrix of each linear consumer's input by ``saliency``."""

    def units(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
        if stats is None:
            raise ValueError(f"importance {name!r} needs the consumers' input Gram matrices (pass stats=...)")
        parts = []
        for mp in group.mask_points:
            found = _reconstructable(model, mp.node, mp.input_index)
            gram = stats.get(mp.node)
            if found is None or gram is None:
                continue
            rows, _ = found
            channels = len(mp.index)
            if gram.shape[0] % channels or gram.shape[0] != rows.shape[1]:
                continue
            parts.append(_per_unit(saliency(rows, gram, channels), mp.index, group.size, "sum"))
        if not parts:  # no consumer a refit could redo: fall back to the magnitude of the weights
            return REGISTRY["l2"].units(model, group, reduce, None, seed, threads)
        return _reduce(parts, group.size, reduce)

    units.__doc__ = saliency.__doc__
    return units


#: The least-squares reconstruction error each unit's removal alone leaves in its consumers.
register("reconstruction", collect=consumer_grams)(_consumer_scores("reconstruction", _saliency))
#: The same error along the order in which units are removed one after another, the rest refitted.
register("obs", collect=consumer_grams)(_consumer_scores("obs", _removal_costs))


def _output_norm(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    """The norm of all a unit feeds its consumers: sqrt of the summed squared norms of its positions."""
    parts = [_per_unit(st.l2_norm, mp.index, group.size, "l2")
             for mp, st in _stats_of(model, group, stats, "output_norm")]
    return _or_magnitude(parts, model, group, reduce, seed, threads)


register("output_norm", needs_data=True)(_output_norm)


# -- attention heads -----------------------------------------------------------------------------

_PASSING = ("Cast", "Where", "Identity", "Dropout")


def attention_probabilities(model: Model, group: Group) -> tuple[str, int] | None:
    """The softmax output a head group's ``P @ V`` products read and its head axis (None: the
    group has none, e.g. neurons, or heads inside a fused attention op)."""
    for scaled in group.scaled:
        node = model.node(scaled.node)
        value = node.input[0] if node.op_type == "MatMul" else ""
        producer = model.producer(value) if value else None
        while producer is not None and producer.op_type in _PASSING:
            data = [i for i in producer.input if i and not model.is_weight(i) and model.rank(i) == model.rank(value)]
            value = data[-1] if data else ""
            producer = model.producer(value) if value else None
        rank = model.rank(value) if value else None
        if producer is not None and producer.op_type == "Softmax" and rank is not None and rank >= 3:
            return value, rank - 3  # [..., heads, queries, keys]
    return None


def _entropy_stats(model: Model, dataset: Dataset, groups: Sequence[Group], threads: int | None) -> dict[str, Any]:
    """The activation statistics at every group's mask points and, per head group with
    attention probabilities, ``entropy:<group>``: each head's mean entropy ``-sum p log p``
    over the keys, measured on a copy of the model that computes it as an extra output."""
    stats: dict[str, Any] = dict(group_activation_stats(model, dataset, groups, threads))
    probs = {g.id: found for g in groups if (found := attention_probabilities(model, g)) is not None}
    if not probs:
        return stats
    copy = model.copy()
    entropy_of: dict[str, str] = {}  # probabilities -> their (negated) entropy per row
    for value, _ in probs.values():
        if value not in entropy_of:
            entropy_of[value] = _append_entropy(copy, value)
    copy.refresh()
    measured = activation_stats(copy, dataset, {entropy_of[v]: axis for v, axis in probs.values()}, threads)
    for gid, (value, _) in probs.items():
        stats[f"entropy:{gid}"] = -measured[entropy_of[value]].mean
    return stats


def _append_entropy(model: Model, probs: str) -> str:
    """Nodes computing ``sum p log p`` over the last axis of ``probs``; returns that value."""
    tiny = model.add_weight(model.unique_name(f"{probs}_tiny"), np.array(1e-12, np.float32))
    p, floor, log, plogp, total = (model.unique_name(f"{probs}_{k}") for k in ("p", "floor", "log", "plogp", "sum"))
    nodes = [helper.make_node("Cast", [probs], [p], to=onnx.TensorProto.FLOAT),
             helper.make_node("Max", [p, tiny], [floor]),
             helper.make_node("Log", [floor], [log]),
             helper.make_node("Mul", [p, log], [plogp])]
    if model.opset >= 13:
        axes = model.add_weight(model.unique_name(f"{probs}_axes"), np.array([-1], np.int64))
        nodes.append(helper.make_node("ReduceSum", [plogp, axes], [total], keepdims=0))
    else:
        nodes.append(helper.make_node("ReduceSum", [plogp], [total], axes=[-1], keepdims=0))
    for node in nodes:
        node.name = model.unique_name(f"{probs}_{node.op_type}")
        model.proto.graph.node.append(node)
    return total


@register("attention_entropy", collect=_entropy_stats)
def _attention_entropy(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    entropy = stats.get(f"entropy:{group.id}") if stats is not None else None
    found = attention_probabilities(model, group) if entropy is not None else None
    if entropy is None or found is None:
        return _wanda(model, group, reduce, stats, seed, threads)
    # head h of the probabilities is unit index[h] of the group (the scaled product's positions)
    index = next(sc.index for sc in group.scaled if len(sc.index) == len(entropy))
    focus = 1.0 / np.exp(np.asarray(entropy, dtype=np.float64))  # 1 / perplexity: attended keys
    values, counts = _per_unit(focus, index, group.size, "sum")
    return values / np.maximum(counts, 1)


#: Units per group up to which ``ablation`` masks each unit alone; samples it judges them on.
ABLATION_MAX_UNITS = 64
ABLATION_SAMPLES = 64


def _ablation_stats(model: Model, dataset: Dataset, groups: Sequence[Group], threads: int | None) -> dict[str, Any]:
    """``ablation:<group>`` per group of at most :data:`ABLATION_MAX_UNITS` units: the relative
    squared change of the outputs when each unit alone is masked; the activation statistics of
    the larger groups (for their Wanda scores)."""
    small = [g for g in groups if g.size <= ABLATION_MAX_UNITS]
    large = [g for g in groups if g.size > ABLATION_MAX_UNITS]
    stats: dict[str, Any] = dict(group_activation_stats(model, dataset, large, threads)) if large else {}
    if not small:
        return stats
    arrays = dataset.bind(model).arrays
    subset = Dataset({k: v[:ABLATION_SAMPLES] for k, v in arrays.items()})
    session = MaskedSession(model, subset, groups=small, threads=threads)
    reference = [np.asarray(r, np.float64) for r in session.run() if np.asarray(r).dtype.kind == "f"]
    scale = sum(float(np.sum(r * r)) for r in reference) or 1.0
    for g in small:
        scores = np.zeros(g.size, dtype=np.float64)
        for u in range(g.size):
            keep = np.ones(g.size, dtype=bool)
            keep[u] = False
            outputs = [np.asarray(o, np.float64) for o in session.run({g.id: keep}) if np.asarray(o).dtype.kind == "f"]
            scores[u] = sum(float(np.sum((o - r) ** 2)) for o, r in zip(outputs, reference)) / scale
        stats[f"ablation:{g.id}"] = scores
    return stats


@register("ablation", collect=_ablation_stats)
def _ablation(model: Model, group: Group, reduce: str, stats, seed: int, threads: int | None) -> np.ndarray:
    scores = stats.get(f"ablation:{group.id}") if stats is not None else None
    if scores is None:
        return _wanda(model, group, reduce, stats, seed, threads)
    return np.asarray(scores, dtype=np.float64)


#: Names of every measure; those that need data.
IMPORTANCES = tuple(REGISTRY)
DATA_IMPORTANCES = frozenset(name for name, m in REGISTRY.items() if m.needs_data)


# -- applying them -------------------------------------------------------------------------------


def group_scores(
    model: Model,
    group: Group,
    importance: str = "l2",
    *,
    reduce: str = "sum",
    normalize: str = "mean",
    stats: Mapping[str, ChannelStats] | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> np.ndarray:
    """One score per unit of ``group`` (float64, lower = less important).

    Magnitude scores read the weight slices the group couples as producer rows (``"out"``) and
    consumer columns (``"in"``); biases and normalisation parameters do not describe how much a
    unit contributes and are left out. Activation-aware scores need ``stats`` from
    :func:`group_activation_stats`.
    """
    measure = get(importance)
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    return normalize_scores(measure.units(model, group, reduce, stats, seed, threads), normalize)


def _is_bias(model: Model, coupling: Coupling) -> bool:
    """The producer's bias is coupled with its output units too, but says nothing about how much
    a unit contributes (a dead unit can carry a large bias)."""
    if not coupling.node:
        return False
    node = model.node(coupling.node)
    # (ONNX Runtime's fused Attention takes its packed QKV bias as input 2 too)
    return (node.op_type in ("Gemm", "Conv", "ConvTranspose", "Attention") and len(node.input) > 2
            and node.input[2] == coupling.weight and node.input[1] != coupling.weight)


def all_group_scores(
    model: Model,
    groups: Sequence[Group],
    importance: str = "l2",
    *,
    reduce: str = "sum",
    normalize: str = "mean",
    dataset: Dataset | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """:func:`group_scores` of every group, collecting activation statistics once when needed."""
    stats = None
    measure = get(importance)
    if measure.needs_data:
        if dataset is None:
            raise ValueError(f"importance {importance!r} needs data; pass a dataset")
        collect = get(importance).collect or group_activation_stats
        stats = collect(model, dataset, groups, threads)
    return {
        g.id: group_scores(model, g, importance, reduce=reduce, normalize=normalize, stats=stats,
                           seed=seed, threads=threads)
        for g in groups
    }


def layer_scores(model: Model, layers: Sequence[Layer], importance: str = "l2", *, seed: int = 0) -> dict[str, float]:
    """One score per layer: the magnitude of its weights per parameter (``random``: seeded).

    Layers are whole branches, so the only data-free signal is how large their weights are; a
    search that evaluates candidates (greedy, recursive) judges layers by their effect instead.
    """
    measure = get(importance)
    out: dict[str, float] = {}
    for layer in layers:
        if measure.layer_norm == "random":
            out[layer.id] = float(core.random_scores(1, _seed_for(seed, layer.id))[0])
            continue
        total, count = 0.0, 0
        for name in _layer_weights(model, layer):
            w = model.weight(name)
            if w.dtype.kind != "f" or w.size == 0:
                continue
            total += float(core.slice_norms(w.reshape(1, -1), 0, measure.layer_norm, nan="max")[0])
            count += w.size
        out[layer.id] = total / count if count else 0.0
    return out


def _layer_weights(model: Model, layer: Layer) -> list[str]:
    names: list[str] = []
    for node_name in layer.nodes:
        node = model.node(node_name)
        names.extend(i for i in node.input if i and model.is_weight(i))
    return list(dict.fromkeys(names))


def weight_scores(
    model: Model,
    names: Sequence[str],
    importance: str = "l1",
    *,
    input_norms: Mapping[str, tuple[np.ndarray, int]] | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-element scores of the named weights (float32, the weight's shape).

    ``"l1"``/``"linf"``: ``|w|``; ``"l2"``: ``w**2``; ``"random"``: seeded; ``"wanda"``:
    ``|w| * ||x||`` with ``input_norms[name] = (norms, axis)`` (the input-feature axis of the
    weight). Other importances are defined for units, not single weights.
    """
    measure = get(importance)
    if measure.elements is None:
        raise ValueError(f"importance {measure.name!r} scores units, not single weights; use "
                         + ", ".join(n for n, m in REGISTRY.items() if m.elements is not None))
    out: dict[str, np.ndarray] = {}
    for name in names:
        norms = None if input_norms is None else input_norms.get(name)
        if measure.needs_data and norms is None:
            raise ValueError(f"{measure.name} scores of {name!r} need the norms of its input features")
        out[name] = measure.elements(model.weight(name), norms, _seed_for(seed, name), threads)
    return out


def weight_input_norms(model: Model, weights: Sequence[MaskableWeight], dataset: Dataset,
                       threads: int | None = None, batch_size: int | None = None) -> dict[str, tuple[np.ndarray, int]]:
    """L2 norms of the input features of each weight over ``dataset`` (for Wanda scores):
    ``{weight: (norms, the weight's input-feature axis)}``; weights whose input does not line
    up with one axis are left out."""
    wanted: dict[str, tuple[str, int, int]] = {}  # weight -> (tensor, tensor axis, weight axis)
    for w in weights:
        node = model.node(w.nodes[0])
        if node.op_type in ("Conv", "ConvTranspose"):
            wanted[w.name] = (node.input[0], 1, 1)
        elif node.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            wanted[w.name] = (node.input[0], 0 if trans_a else 1, 1 if trans_b else 0)
        else:
            rank = model.rank(node.input[0]) or 2
            wanted[w.name] = (node.input[0], rank - 1, len(w.shape) - 2)
    stats = activation_stats(model, dataset, {t: a for t, a, _ in wanted.values()}, threads, batch_size)
    out = {}
    for name, (tensor, _, waxis) in wanted.items():
        norms = stats[tensor].l2_norm
        if model.weight(name).shape[waxis] == len(norms):
            out[name] = (norms, waxis)
    return out
