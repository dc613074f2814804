"""Weight-level pruning: unstructured, N:M and block masks on Conv/Gemm/MatMul weights.

Masks are computed by the C++ core (:mod:`pyprune.core`) and applied to the initializers in place
of their old values: a masked model holds exactly the tensors the original held, so its file is
never larger. N:M groups run along the reduction axis, the one a sparse kernel sums over: input
channels of Conv (per output channel and kernel position), K of Gemm/MatMul.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import helper

from .. import core
from ._model import Model
from ._nested import nested_nodes

__all__ = [
    "MaskableWeight",
    "maskable_weights",
    "unstructured_masks",
    "nm_masks",
    "block_masks",
]

#: Element types weight masks apply to.
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16})


@dataclass(frozen=True)
class MaskableWeight:
    """A weight operand of Conv, ConvTranspose, Gemm or MatMul that masks can be applied to.

    ``reduction_axis`` is the axis the consuming op sums over (None when the weight is shared by
    nodes that disagree on it, so N:M cannot be defined). ``matrix`` is the 2-D view block masks
    tile: Conv/ConvTranspose ``[shape[0], prod(rest)]`` (one row per filter), Gemm/MatMul the
    stored matrix (leading batch dims folded into rows).
    """

    name: str
    nodes: tuple[str, ...]  # consuming weighted nodes
    op_type: str
    shape: tuple[int, ...]
    reduction_axis: int | None
    matrix: tuple[int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def nm_reason(self, m: int) -> str | None:
        """Why N:M with group size ``m`` cannot apply to this weight (None when it can)."""
        if self.reduction_axis is None:
            return "shared by nodes that reduce over different axes"
        size = self.shape[self.reduction_axis]
        if size % m:
            return f"reduction axis {self.reduction_axis} has size {size}, not a multiple of {m}"
        return None


def maskable_weights(model: Model) -> list[MaskableWeight]:
    """The float weight operands of Conv, ConvTranspose, Gemm and MatMul nodes, in the main graph
    or inside If/Loop/Scan bodies (and of ONNX Runtime's fused ``Attention``, whose packed QKV
    weight is a MatMul's)."""
    found: dict[str, list[tuple[str, str, int]]] = {}
    for node in [*model.nodes, *(inner for inner, _ in nested_nodes(model.graph))]:
        if node.domain not in ("", "ai.onnx") and not _fused_attention(node):
            continue
        for name, axis in _weight_operands(model, node):
            if model.elem_type(name) in FLOAT_TYPES and model.weight(name).size:
                found.setdefault(name, []).append((node.name, node.op_type, axis))
    result = []
    for name, uses in found.items():
        shape = tuple(int(d) for d in model.weight(name).shape)
        axes = {axis for _, _, axis in uses}
        ops = {op for _, op, _ in uses}
        op_type = uses[0][1] if len(ops) == 1 else "/".join(sorted(ops))
        if uses[0][1] in ("Conv", "ConvTranspose"):
            matrix = (shape[0], int(np.prod(shape[1:], dtype=np.int64)))
        else:
            matrix = (int(np.prod(shape[:-1], dtype=np.int64)), shape[-1])
        result.append(
            MaskableWeight(
                name=name,
                nodes=tuple(n for n, _, _ in uses),
                op_type=op_type,
                shape=shape,
                reduction_axis=axes.pop() if len(axes) == 1 else None,
                matrix=matrix,
            )
        )
    return result


def _fused_attention(node: onnx.NodeProto) -> bool:
    """ONNX Runtime's ``Attention``: a MatMul of its input by the packed QKV weight, fused."""
    return node.domain == "com.microsoft" and node.op_type == "Attention"


def _weight_operands(model: Model, node: onnx.NodeProto) -> list[tuple[str, int]]:
    """(weight name, reduction axis) of the constant weight operands of one node."""
    inputs = list(node.input)

    def const(i: int) -> bool:
        return len(inputs) > i and bool(inputs[i]) and model.is_weight(inputs[i])

    op = node.op_type
    if _fused_attention(node):
        # the packed Q, K, V projection [hidden, 3 * heads * d], summed over its rows
        return [(inputs[1], 0)] if const(1) and model.weight(inputs[1]).ndim == 2 else []
    if op in ("Conv", "ConvTranspose") and const(1) and model.weight(inputs[1]).ndim >= 3:
        # Conv W [O, I/g, k...] sums over axis 1; ConvTranspose W [I, O/g, k...] over axis 0.
        return [(inputs[1], 1 if op == "Conv" else 0)]
    if op == "Gemm":
        out = []
        if const(1) and model.weight(inputs[1]).ndim == 2:
            out.append((inputs[1], 1 if _attr(node, "transB", 0) else 0))
        if const(0) and model.weight(inputs[0]).ndim == 2:
            out.append((inputs[0], 0 if _attr(node, "transA", 0) else 1))
        return out
    if op == "MatMul":
        out = []
        if const(1) and model.weight(inputs[1]).ndim >= 2:
            out.append((inputs[1], model.weight(inputs[1]).ndim - 2))
        if const(0) and model.weight(inputs[0]).ndim >= 2:
            out.append((inputs[0], model.weight(inputs[0]).ndim - 1))
        return out
    return []


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _select(
    model: Model, weights: Iterable[str] | None
) -> tuple[list[MaskableWeight], bool]:
    """The weights to mask and whether the caller named them (then no silent skipping)."""
    table = {w.name: w for w in maskable_weights(model)}
    if weights is None:
        return list(table.values()), False
    if isinstance(weights, str):
        raise TypeError("weights must be a list of weight names, not a single string")
    chosen = []
    for name in dict.fromkeys(weights):
        if name not in table:
            raise ValueError(
                f"{name!r} is not a weight of a Conv, ConvTranspose, Gemm or MatMul node "
                "in this model"
            )
        chosen.append(table[name])
    return chosen, True


def _check_fraction(sparsity: float) -> float:
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return s


def unstructured_masks(
    model: Model,
    sparsity: float,
    *,
    weights: Iterable[str] | None = None,
    scope: Literal["global", "layer"] = "global",
    scores: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Keep-masks dropping the ``sparsity`` fraction of lowest-scoring weight elements.

    ``scope="global"`` ranks all selected weights together (the core's exact-k global
    selection); ``"layer"`` drops the same fraction of every weight. Scores default to ``|w|``;
    ``scores`` may give others per weight (e.g. Wanda ``|W|*‖X‖``), of the weight's shape.
    ``weights`` restricts the masking to the named weights (default: every maskable weight).
    """
    s = _check_fraction(sparsity)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    chosen, _ = _select(model, weights)
    if not chosen:
        return {}
    score_list = [_scores(model, w, scores) for w in chosen]
    if scope == "global":
        total = sum(a.size for a in score_list)
        masks = core.global_masks(score_list, int(np.floor(s * total + 0.5)))
    else:
        masks = [core.global_masks([a], int(np.floor(s * a.size + 0.5)))[0] for a in score_list]
    return {w.name: np.asarray(m, dtype=bool) for w, m in zip(chosen, masks)}


def nm_masks(
    model: Model,
    n: int = 2,
    m: int = 4,
    *,
    weights: Iterable[str] | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """N:M keep-masks: in every ``m`` consecutive elements along the reduction axis keep ``n``.

    Weights whose reduction axis is not a multiple of ``m`` (e.g. a first Conv over 3 colour
    channels, a depthwise Conv) are skipped; naming one in ``weights`` raises ``ValueError``.
    """
    chosen, named = _select(model, weights)
    masks = {}
    for w in chosen:
        reason = w.nm_reason(m)
        if reason is not None:
            if named:
                raise ValueError(f"cannot apply {n}:{m} to {w.name!r}: {reason}")
            continue
        assert w.reduction_axis is not None  # nm_reason gave no reason, so the axis is known
        score = None if scores is None or w.name not in scores else _scores(model, w, scores)
        masks[w.name] = core.nm_mask(model.weight(w.name), n, m, w.reduction_axis, scores=score)
    return masks


def block_masks(
    model: Model,
    block: tuple[int, int],
    sparsity: float,
    *,
    weights: Iterable[str] | None = None,
    ord: Literal["l1", "l2"] = "l2",
) -> dict[str, np.ndarray]:
    """Keep-masks dropping the ``sparsity`` fraction of lowest-norm ``block`` tiles per weight.

    Tiles are laid over each weight's :attr:`MaskableWeight.matrix` view. Weights the block does
    not tile are skipped; naming one in ``weights`` raises ``ValueError``.
    """
    s = _check_fraction(sparsity)
    r, c = block
    chosen, named = _select(model, weights)
    masks = {}
    for w in chosen:
        rows, cols = w.matrix
        if rows % r or cols % c:
            if named:
                raise ValueError(
                    f"block {tuple(block)} does not tile {w.name!r} (matrix view {rows}x{cols})"
                )
            continue
        mat = model.weight(w.name).reshape(rows, cols)
        masks[w.name] = core.block_mask(mat, (r, c), sparsity=s, ord=ord).reshape(w.shape)
    return masks


def _scores(model: Model, w: MaskableWeight, scores: Mapping[str, np.ndarray] | None) -> np.ndarray:
    if scores is not None and w.name in scores:
        a = np.asarray(scores[w.name])
        if a.shape != w.shape:
            raise ValueError(f"scores for {w.name!r} have shape {a.shape}, the weight {w.shape}")
        return a
    return core.element_scores(model.weight(w.name))
