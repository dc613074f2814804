"""The rules registry and the helpers every family of rules shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import onnx
from onnx import helper

from .._model import _outer_scope_reads
from .._walk import Walk

Rule = Callable[["Walk", onnx.NodeProto], None]

#: op_type -> rule, for the default ONNX domain.
RULES: dict[str, Rule] = {}

#: op_type -> rule for ONNX Runtime's "com.microsoft" ops that appear in models saved after
#: ORT's graph optimisations (fused activations with a per-channel bias).
CONTRIB_RULES: dict[str, Rule] = {}


def rule(*op_types: str, registry: dict[str, Rule] = RULES) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule of ``op_types``."""

    def register(fn: Rule) -> Rule:
        for op in op_types:
            if op in registry:
                raise RuntimeError(f"two rules for {op}")
            registry[op] = fn
        return fn

    return register


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule of a node's op (None: not understood, its channels freeze)."""
    if node.domain in ("", "ai.onnx"):
        return RULES.get(node.op_type)
    if node.domain == "com.microsoft":
        return CONTRIB_RULES.get(node.op_type)
    return None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def freeze_all(w: Walk, node: onnx.NodeProto, why: str | None = None) -> None:
    """Freeze every channel entering ``node`` (the rule of ops nobody taught pyprune)."""
    reason = f"{node.op_type} node {node.name!r} " + (why or "is not understood by pyprune")
    for name in node.input:
        info = w.info(name)
        if info is not None:
            w.freeze(info.labels, reason)


def freeze_control_flow(w: Walk, node: onnx.NodeProto, why: str | None = None) -> None:
    """Freeze every channel a control-flow node reads, as an input or inside its bodies (those of
    ops whose bodies the walk does not follow, or cannot follow)."""
    reason = f"{node.op_type} node {node.name!r} " + (
        why or f"reads it in a nested subgraph ({node.op_type} bodies are not followed)")
    for name in [*node.input, *sorted(_outer_scope_reads(node))]:
        info = w.info(name)
        if info is not None:
            w.freeze(info.labels, reason)


# -- helpers ------------------------------------------------------------------------------------


def static_size(w: Walk, name: str) -> int | None:
    shape = w.shape(name)
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def static_dim(w: Walk, name: str, axis: int) -> int:
    shape = w.shape(name)
    if shape is None or len(shape) <= axis or not isinstance(shape[axis], int):
        return 0
    return shape[axis]


def axes_of(w: Walk, node: onnx.NodeProto) -> list[int] | None | Literal[False]:
    """Axes of Squeeze/Unsqueeze from the attribute or the constant input; False if unknown."""
    axes = attr(node, "axes")
    if axes is not None:
        return list(axes)
    if len(node.input) > 1 and node.input[1]:
        value = w.const(node.input[1])
        return False if value is None else [int(a) for a in value.ravel()]
    return None


def expand_labels(labels: np.ndarray, dims: list[int], axis: int) -> np.ndarray:
    """Labels of every element of a block of ``dims`` whose axis ``axis`` carries ``labels``."""
    shape = [1] * len(dims)
    shape[axis] = len(labels)
    return np.broadcast_to(labels.reshape(shape), dims).ravel().copy()


def align_shapes(src: list, dst: list) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    """Pair up contiguous blocks of ``src`` and ``dst`` with equal element counts.

    Symbolic dimensions must match one to one (same name, same block); None when they do not.
    """
    blocks = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and isinstance(src[i], str):
            if src[i] != dst[j]:
                return None
            blocks.append(((i, i + 1), (j, j + 1)))
            i, j = i + 1, j + 1
            continue
        i0, j0 = i, j
        p = q = 1
        if i < len(src):
            p, i = src[i], i + 1
        if j < len(dst):
            if isinstance(dst[j], str):
                return None
            q, j = dst[j], j + 1
        while p != q:
            if p < q and i < len(src) and isinstance(src[i], int):
                p, i = p * src[i], i + 1
            elif q < p and j < len(dst) and isinstance(dst[j], int):
                q, j = q * dst[j], j + 1
            else:
                return None
        # trailing size-1 dims belong to the current block
        while i < len(src) and src[i] == 1 and (j >= len(dst) or dst[j] != 1):
            i += 1
        while j < len(dst) and dst[j] == 1 and (i >= len(src) or src[i] != 1):
            j += 1
        blocks.append(((i0, i), (j0, j)))
    return blocks


def aligned_block(src: list, dst: list, axis: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The block of ``src`` holding ``axis`` and the block of ``dst`` it becomes in a reshape.

    Where the whole shapes align (:func:`align_shapes`), that block. Otherwise the block is found
    by aligning from either end over known sizes only: ``[batch, seq, 768] -> [batch*seq, 768]``
    keeps the trailing 768 whatever the leading sizes are (a row-major reshape keeps the position
    within a trailing block of equal size), as transformer exports flatten tokens around a Gemm.
    """
    if None not in src and None not in dst:
        blocks = align_shapes(src, dst)
        if blocks is not None:
            return next((b for b in blocks if b[0][0] <= axis < b[0][1]), None)
    n, m = len(src), len(dst)
    for (i0, i1), (j0, j1) in _edge_blocks(src[::-1], dst[::-1]):
        if n - i1 <= axis < n - i0:
            return (n - i1, n - i0), (m - j1, m - j0)
    for (i0, i1), (j0, j1) in _edge_blocks(src, dst):
        if i0 <= axis < i1:
            return (i0, i1), (j0, j1)
    return None


def _edge_blocks(src: list, dst: list) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Blocks of equal element count paired from the start of both shapes, as long as the sizes
    are known (or the same symbol on both sides); stops at the first that cannot be paired."""
    blocks = []
    i = j = 0
    while i < len(src) and j < len(dst):
        if isinstance(src[i], str) and src[i] == dst[j]:
            blocks.append(((i, i + 1), (j, j + 1)))
            i, j = i + 1, j + 1
            continue
        if not (isinstance(src[i], int) and isinstance(dst[j], int)):
            break
        i0, j0 = i, j
        p, q = src[i], dst[j]
        i, j = i + 1, j + 1
        while p != q:
            if p < q and i < len(src) and isinstance(src[i], int):
                p, i = p * src[i], i + 1
            elif q < p and j < len(dst) and isinstance(dst[j], int):
                q, j = q * dst[j], j + 1
            else:
                return blocks
        blocks.append(((i0, i), (j0, j)))
    return blocks


def single_varying_axis(labels: np.ndarray) -> int | None:
    """The one axis along which ``labels`` changes (0 if none changes); None if several do."""
    varying = [
        a
        for a in range(labels.ndim)
        if labels.shape[a] > 1 and not np.all(labels == labels.take([0], axis=a))
    ]
    if len(varying) > 1:
        return None
    if varying:
        return varying[0]
    sized = [a for a in range(labels.ndim) if labels.shape[a] > 1]
    return sized[0] if sized else 0
