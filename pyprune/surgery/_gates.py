"""Layer gates: a scalar input per layer that keeps it (1) or removes it (0) inside one session.

This is the oracle of layer removal and the way searches judge layers without a rebuild: residual
branches are multiplied by the gate on their edge into the join; path outputs become
``g*y + (1-g)*x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ..graph import Model
from ..graph._layers import check_layer_ids, find_layers

__all__ = ["gate_layers"]


def gate_layers(model: Model, layer_ids: Sequence[str]) -> tuple[Model, dict[str, str]]:
    """A copy of ``model`` with one scalar gate input per layer; returns it and the input names.

    Feeding 1 to a gate computes the original layer, 0 the model with that layer removed:
    residual branches are multiplied by the gate on their edge into the join; path outputs
    become ``g*y + (1-g)*x``. The gate inputs have shape ``[]`` and the layer's element type, so
    one ONNX Runtime session can judge every combination of removals.
    """
    by_id = {layer.id: layer for layer in find_layers(model)}
    check_layer_ids(by_id, layer_ids)
    new = model.copy()
    graph = new.proto.graph
    gates: dict[str, str] = {}
    added: list[tuple[int, list[onnx.NodeProto]]] = []  # (insert before position, nodes)
    position = {n.name: i for i, n in enumerate(graph.node)}
    names: set[str] = set()

    def fresh(base: str) -> str:
        name = new.unique_name(base)
        while name in names:
            name = new.unique_name(f"{base}_{len(names)}")
        names.add(name)
        return name

    for layer_id in dict.fromkeys(layer_ids):
        layer = by_id[layer_id]
        x, y = layer.bypass
        elem = new.elem_type(layer.gate.tensor) or onnx.TensorProto.FLOAT
        g = fresh(f"gate:{layer_id}")
        graph.input.append(helper.make_tensor_value_info(g, elem, []))
        gates[layer_id] = g
        if layer.kind in ("residual", "skip_norm"):
            join = new.node(layer.gate.node)
            gated = fresh(f"{layer.gate.tensor}_gated")
            mul = helper.make_node("Mul", [layer.gate.tensor, g], [gated], name=fresh(f"{join.name}_gate"))
            join.input[layer.gate.input_index] = gated
            added.append((position[join.name], [mul]))
        else:
            last = new.node(layer.gate.node)
            raw = fresh(f"{y}_ungated")
            for i, out in enumerate(last.output):
                if out == y:
                    last.output[i] = raw
            one = fresh(f"{g}_one")
            dtype = helper.tensor_dtype_to_np_dtype(elem)
            new.add_weight(one, np.ones((), dtype=dtype))
            names.add(one)
            kept, rest, keep_x, blended = fresh(f"{y}_kept"), fresh(f"{g}_rest"), fresh(f"{y}_bypass"), y
            nodes = [
                helper.make_node("Mul", [raw, g], [kept], name=fresh(f"{last.name}_gate_keep")),
                helper.make_node("Sub", [one, g], [rest], name=fresh(f"{last.name}_gate_rest")),
                helper.make_node("Mul", [x, rest], [keep_x], name=fresh(f"{last.name}_gate_bypass")),
                helper.make_node("Add", [kept, keep_x], [blended], name=fresh(f"{last.name}_gate_blend")),
            ]
            added.append((position[last.name] + 1, nodes))
    ordered: list[onnx.NodeProto] = []
    inserts: dict[int, list[onnx.NodeProto]] = {}
    for at, nodes in added:
        inserts.setdefault(at, []).extend(nodes)
    for i, node in enumerate(list(graph.node)):
        ordered.extend(inserts.get(i, []))
        ordered.append(node)
    ordered.extend(inserts.get(len(graph.node), []))
    del graph.node[:]
    graph.node.extend(ordered)
    # Stale inferred shapes of renamed values would contradict the new graph.
    kept_info = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    new.refresh()
    return new, gates
