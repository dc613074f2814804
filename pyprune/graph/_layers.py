"""Whole layers that can be removed: residual branches and shape-preserving single paths.

Two kinds of candidate are found in the main graph:

* ``residual``: ``y = Add(x, f(x))`` where ``f`` is the region of nodes between ``x`` and the
  join (it may also read values that do not depend on ``x``: constants, an attention mask) and
  nobody outside reads its values. Removing it makes ``y = x``.
* ``path``: a weighted node (Conv, ConvTranspose, Gemm, MatMul with a constant weight) followed by
  the shape-preserving single-consumer ops that only post-process its output (bias, BatchNorm,
  activations), when the input and the output have the same shape and element type. Removing it
  replaces the path by the identity.

A candidate whose removal cannot be proven to keep the model valid (shapes unknown) is still
listed, with ``frozen`` saying why. Nodes with nested subgraphs (If, Loop, Scan) may sit inside a
residual branch: removing the branch drops them whole, which is always safe.

The oracle the tests check: removing a layer equals gating it with 0 (``pyprune.surgery.gate_layers``), i.e.
multiplying the residual branch by 0 on its edge into the join, or blending a path's output back
to its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ._model import Model, _outer_scope_reads
from ._units import Layer, MaskPoint

__all__ = ["find_layers", "check_layer_ids", "WEIGHTED_OPS", "SKIP_NORMS"]

#: Ops whose constant operand is a weight matrix / filter bank; a path layer starts at one.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# Joins that make ``x + f(x)``: with one branch gone, the output is the other input.
_RESIDUAL_JOINS = frozenset({"Add", "Sum"})

#: ONNX Runtime's fused ``LayerNorm(input + skip + bias)`` (``com.microsoft``): residual joins
#: whose layers are removed by rewriting the join (layer kind ``"skip_norm"``).
SKIP_NORMS = frozenset({"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"})


def find_layers(model: Model) -> list[Layer]:
    """Every layer-removal candidate of the main graph, in graph order.

    Residual layers are identified as ``residual:<join node>``, path layers as
    ``path:<weighted node>``. A residual branch may contain path layers and other residual
    layers (nested blocks); removing the outer one removes them too.

    ``Layer.gate`` is a scalar gate (``index == [0]``, one unit): for a residual layer it is the
    branch's edge into the join (gating with 0 gives ``y = x``); for a path layer it is the output
    of the path's last node (``input_index == -1`` marks an output edge), and gating with ``g``
    means ``y -> g*y + (1-g)*x``. ``pyprune.surgery.gate_layers`` builds exactly these gates.
    """
    layers: list[Layer] = []
    position = {node.name: i for i, node in enumerate(model.nodes)}
    for node in model.nodes:
        if _default_domain(node) and node.op_type in _RESIDUAL_JOINS:
            layer = _residual_layer(model, node, position)
            if layer is not None:
                layers.append(layer)
        if node.domain == "com.microsoft" and node.op_type in SKIP_NORMS:
            layer = _skip_norm_layer(model, node, position)
            if layer is not None:
                layers.append(layer)
        if _default_domain(node) and node.op_type in WEIGHTED_OPS:
            layer = _path_layer(model, node)
            if layer is not None:
                layers.append(layer)
    return layers


# -- residual branches -------------------------------------------------------------------------


def _residual_layer(model: Model, join: onnx.NodeProto, position: dict[str, int]) -> Layer | None:
    dynamic = [(i, v) for i, v in enumerate(join.input) if v and not model.is_weight(v)]
    if len(dynamic) != 2 or len(join.input) != 2 or dynamic[0][1] == dynamic[1][1]:
        return None
    y = join.output[0]
    for (_, x), (b_index, b) in (dynamic, dynamic[::-1]):
        # The branch output must feed the join alone, or removing the branch breaks its reader.
        if model.is_graph_output(b) or [c.name for c, _ in model.consumers(b)] != [join.name]:
            continue
        region = _region(model, x, b, position)
        if region is None:
            continue
        nodes = [*region, join.name]
        frozen = _shape_reason(model, x, y)
        if frozen == _DIFFERENT:
            continue  # x is broadcast up to y: there is no y = x to fall back on
        frozen = frozen or _region_reason(model, nodes, x, y)
        gate = _scalar_gate(model, join.name, b_index, b)
        return _make_layer(model, f"residual:{join.name}", "residual", nodes, gate, x, y, frozen)
    return None


def _skip_norm_layer(model: Model, join: onnx.NodeProto, position: dict[str, int]) -> Layer | None:
    """``y = LayerNorm(f(x) + x + bias)`` fused by ONNX Runtime into one SkipLayerNormalization.

    The join stays when the branch goes: it becomes ``LayerNorm(x + bias)``
    (``pyprune.surgery.remove_layers``), which is what gating the branch with 0 computes.
    """
    if len(join.input) < 3 or not all(join.input[:2]) or join.input[0] == join.input[1]:
        return None
    y = join.output[0]
    for b_index in (0, 1):
        b, x = join.input[b_index], join.input[1 - b_index]
        if model.is_weight(b) or model.is_weight(x) or model.is_graph_output(b):
            continue
        if [c.name for c, _ in model.consumers(b)] != [join.name]:
            continue
        region = _region(model, x, b, position)
        fused = model.producer(x)
        if (region is None and fused is not None and fused.op_type in SKIP_NORMS
                and len(fused.output) > 3 and fused.output[3] == x):
            # pre-norm blocks: the previous join's sum output is x and its normalised output,
            # LayerNorm(x), is where the branch starts
            region = _region(model, fused.output[0], b, position)
        if region is None:
            continue
        frozen = None
        if join.op_type == "SkipLayerNormalization" and model.opset < 17:
            frozen = "removing it needs LayerNormalization (opset 17 or newer)"
        elif join.op_type == "SkipSimplifiedLayerNormalization" and model.opset < 23:
            frozen = "removing it needs RMSNormalization (opset 23 or newer)"
        elif any(o and (model.consumers(o) or model.is_graph_output(o)) for o in join.output[1:3]):
            frozen = f"{join.op_type} node {join.name!r} also outputs its statistics"
        gate = _scalar_gate(model, join.name, b_index, b)
        return _make_layer(model, f"residual:{join.name}", "skip_norm", region, gate, x, y, frozen)
    return None


def _region(
    model: Model, entry: str, exit_: str, position: dict[str, int]
) -> list[str] | None:
    """The nodes between ``entry`` and ``exit_``: descendants of ``entry`` that ``exit_`` needs.

    Values the region reads that do not depend on ``entry`` (constants, other graph inputs such
    as an attention mask, side computations made outside) stay where they are. None when
    ``exit_`` does not depend on ``entry`` (then it is a computed bias, not a branch), or when a
    value inside the region is read outside it (other than ``exit_``) or is a graph output.
    """
    start = model.producer(exit_)
    if start is None:
        return None
    # Nodes are in topological order: only those up to exit_'s producer can lie in between.
    downstream = _descendants(model, entry, position, position[start.name])
    if start.name not in downstream:
        return None
    members: dict[str, onnx.NodeProto] = {}
    stack = [start]
    while stack:
        node = stack.pop()
        if node.name in members:
            continue
        members[node.name] = node
        for value in _reads(node):
            producer = model.producer(value)
            if producer is not None and producer.name in downstream:
                stack.append(producer)
    for node in members.values():
        for out in node.output:
            if not out or out == exit_:
                continue
            if model.is_graph_output(out):
                return None
            if any(c.name not in members for c, _ in model.consumers(out)):
                return None
    return sorted(members, key=position.__getitem__)


def _descendants(model: Model, value: str, position: dict[str, int], last: int) -> set[str]:
    """Names of the nodes up to position ``last`` that (transitively) read ``value``, reads
    from nested subgraphs included.

    ``Shape``/``Size`` of ``value`` itself do not depend on its values, and ``value`` stays when
    the layer goes (``y = x``): exporters share such shape computations between layers, so they
    are left out of the region (they stay in the graph, reading ``x``).
    """
    seen: set[str] = set()
    stack = [value]
    while stack:
        current = stack.pop()
        for node, _ in model.consumers(current):
            if current == value and node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx"):
                continue
            if node.name not in seen and position[node.name] <= last:
                seen.add(node.name)
                stack.extend(o for o in node.output if o)
    return seen


def _reads(node: onnx.NodeProto) -> set[str]:
    """Values a node reads: its inputs and what its nested subgraphs read from outside."""
    reads = {v for v in node.input if v}
    if _has_subgraph(node):
        reads |= _outer_scope_reads(node)
    return reads


# -- single paths --------------------------------------------------------------------------------


def _path_layer(model: Model, node: onnx.NodeProto) -> Layer | None:
    data = _data_input(model, node)
    if data is None or _changes_width(model, node):
        return None
    x = data
    chain = [node]
    current = node
    while True:
        used = _used_outputs(model, current)
        if len(used) != 1:
            return None if current is node else _finish_path(model, chain, x)
        out = used[0]
        consumers = model.consumers(out)
        if model.is_graph_output(out) or len(consumers) != 1:
            break
        nxt, index = consumers[0]
        if (
            index < 0
            or nxt.op_type in WEIGHTED_OPS
            or _has_subgraph(nxt)
            or sum(1 for v in nxt.input if v and not model.is_weight(v)) != 1
            or len(_used_outputs(model, nxt)) != 1
            or not _same_shape(model, out, _used_outputs(model, nxt)[0])
        ):
            break
        chain.append(nxt)
        current = nxt
    return _finish_path(model, chain, x)


def _finish_path(model: Model, chain: list[onnx.NodeProto], x: str) -> Layer | None:
    used = _used_outputs(model, chain[-1])
    if len(used) != 1:
        return None
    y = used[0]
    frozen = _shape_reason(model, x, y)
    if frozen == _DIFFERENT:
        return None
    nodes = [n.name for n in chain]
    frozen = frozen or _region_reason(model, nodes, x, y)
    gate = _scalar_gate(model, chain[-1].name, -1, y)
    return _make_layer(model, f"path:{chain[0].name}", "path", nodes, gate, x, y, frozen)


def _data_input(model: Model, node: onnx.NodeProto) -> str | None:
    """The one non-constant input of a weighted node whose weight operand is constant."""
    inputs = list(node.input)
    if node.op_type in ("Conv", "ConvTranspose"):
        if len(inputs) < 2 or not model.is_weight(inputs[1]) or model.is_weight(inputs[0]):
            return None
        if len(inputs) > 2 and inputs[2] and not model.is_weight(inputs[2]):
            return None
        return inputs[0]
    operands = inputs[:2]
    dynamic = [v for v in operands if v and not model.is_weight(v)]
    if len(dynamic) != 1 or len(operands) != 2:
        return None
    if node.op_type == "Gemm" and len(inputs) > 2 and inputs[2] and not model.is_weight(inputs[2]):
        return None
    return dynamic[0]


def _changes_width(model: Model, node: onnx.NodeProto) -> bool:
    """Whether the weight alone shows the node changes the channel/feature count.

    This rules a node out even where shape inference gave up (no shapes needed).
    """
    inputs = list(node.input)
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        w = model.weight(inputs[1]).shape
        group = _int_attr(node, "group", 1)
        width_in, width_out = (w[1] * group, w[0]) if op == "Conv" else (w[0], w[1] * group)
        return width_in != width_out
    if model.is_weight(inputs[1]):
        w = model.weight(inputs[1]).shape
        if len(w) < 2:
            return False
        if op == "Gemm" and _int_attr(node, "transB", 0):
            return w[0] != w[1]
        return w[-2] != w[-1]
    w = model.weight(inputs[0]).shape  # constant left operand: rows change from K to M
    if len(w) < 2:
        return False
    return w[-2] != w[-1]


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def _used_outputs(model: Model, node: onnx.NodeProto) -> list[str]:
    return [o for o in node.output if o and (model.consumers(o) or model.is_graph_output(o))]


# -- shared checks -------------------------------------------------------------------------------

_DIFFERENT = "__different__"  # shapes known and different: not a candidate at all


def _shape_reason(model: Model, x: str, y: str) -> str | None:
    """None when ``x`` and ``y`` provably have one shape and type, else a reason to freeze."""
    sx, sy = model.shape(x), model.shape(y)
    if sx is None or sy is None or any(d is None for d in [*sx, *sy]):
        if sx is not None and sy is not None and len(sx) != len(sy):
            return _DIFFERENT
        if _known_different(sx, sy):
            return _DIFFERENT
        return (
            f"shapes of {x!r} ({_fmt(sx)}) and {y!r} ({_fmt(sy)}) are not fully known, so "
            "replacing one by the other cannot be proven shape-preserving"
        )
    if sx != sy:
        return _DIFFERENT
    tx, ty = model.elem_type(x), model.elem_type(y)
    if tx is None or ty is None:
        return f"element types of {x!r} and {y!r} are not known"
    if tx != ty:
        return _DIFFERENT
    return None


def _known_different(sx: list | None, sy: list | None) -> bool:
    if sx is None or sy is None or len(sx) != len(sy):
        return False
    return any(
        isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(sx, sy)
    )


def _same_shape(model: Model, a: str, b: str) -> bool:
    sa, sb = model.shape(a), model.shape(b)
    return sa is not None and sa == sb and all(d is not None for d in sa)


def _region_reason(model: Model, nodes: list[str], x: str, y: str) -> str | None:
    if model.is_graph_input(x) and model.is_graph_output(y) and len(model.graph.node) == len(nodes):
        return "the layer is the whole model"
    return None


def _scalar_gate(model: Model, node: str, input_index: int, tensor: str) -> MaskPoint:
    rank = model.rank(tensor)
    return MaskPoint(
        node=node,
        input_index=input_index,
        tensor=tensor,
        axis=0,
        rank=0 if rank is None else rank,
        index=np.zeros(1, dtype=np.int64),
    )


def _make_layer(
    model: Model,
    layer_id: str,
    kind: str,
    nodes: list[str],
    gate: MaskPoint,
    x: str,
    y: str,
    frozen: str | None,
) -> Layer:
    members = set(nodes)
    macs = sum(model.node_macs(model.node(n)) for n in nodes)
    # Parameters that go with the layer: weights read by its nodes and by nobody else.
    weights = {v for n in nodes for v in model.node(n).input if v and model.is_weight(v)}
    params = sum(
        model.weight(w).size
        for w in weights
        if all(c.name in members for c, _ in model.consumers(w)) and not model.is_graph_output(w)
    )
    return Layer(
        id=layer_id,
        kind=kind,
        nodes=nodes,
        gate=gate,
        bypass=(x, y),
        params=int(params),
        macs=int(macs),
        frozen=frozen,
    )


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _fmt(shape: list | None) -> str:
    return "unknown rank" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_layer_ids(by_id: dict[str, Layer], layer_ids: Sequence[str]) -> None:
    if isinstance(layer_ids, str):
        raise TypeError("layer_ids must be a list of layer ids, not a single string")
    for layer_id in layer_ids:
        layer = by_id.get(layer_id)
        if layer is None:
            known = ", ".join(sorted(by_id)) or "none"
            raise ValueError(f"no layer {layer_id!r} in this model (layers: {known})")
        if layer.frozen is not None:
            raise ValueError(f"layer {layer_id!r} is frozen: {layer.frozen}")
