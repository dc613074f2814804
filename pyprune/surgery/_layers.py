"""Physical removal of whole layers: bypass them, then drop what nothing reads any more."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from ..graph import Layer, Model, check_layer_ids, drop_unused, find_layers, rename_reads

__all__ = ["remove_layers"]


def remove_layers(model: Model, layer_ids: Sequence[str]) -> Model:
    """A new model without the given layers (ids from :func:`find_layers`); ``model`` is unchanged.

    Every reader of a removed layer's output reads its input instead (``y = x``); graph outputs
    keep their names through an ``Identity``. Nodes and initializers left without readers are
    dropped and shapes are inferred again. A layer nested inside another removed layer goes with
    it. Unknown or frozen layer ids raise ``ValueError``.
    """
    by_id = {layer.id: layer for layer in find_layers(model)}
    check_layer_ids(by_id, layer_ids)
    chosen = [by_id[i] for i in dict.fromkeys(layer_ids)]
    # Outer layers first, so that a layer inside an already removed one is recognised as gone.
    chosen.sort(key=lambda layer: len(layer.nodes), reverse=True)
    removed: set[str] = set()
    replace: dict[str, str] = {}
    rewrite: list[Layer] = []  # fused joins that stay, without their branch
    for layer in chosen:
        if set(layer.nodes) <= removed:
            continue
        removed.update(layer.nodes)
        if layer.kind == "skip_norm":
            rewrite.append(layer)
            continue
        x, y = layer.bypass
        replace[y] = x

    def resolve(value: str) -> str:
        # Consecutive removed layers chain: the input of one is the output of the previous.
        seen = set()
        while value in replace and value not in seen:
            seen.add(value)
            value = replace[value]
        return value

    alias = {y: resolve(y) for y in replace}
    new = model.copy()
    graph = new.proto.graph
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name in removed:
            continue
        fused = next((layer for layer in rewrite if layer.gate.node == node.name), None)
        kept.extend(_without_branch(new, node, fused.gate.input_index) if fused else [node])
    for node in kept:
        for i, value in enumerate(node.input):
            if value in alias:
                node.input[i] = alias[value]
    del graph.node[:]
    graph.node.extend(kept)
    rename_reads(graph, alias)
    # Graph outputs keep their names (the model's interface never changes).
    for out in graph.output:
        if out.name in alias:
            graph.node.append(
                helper.make_node(
                    "Identity", [alias[out.name]], [out.name], name=new.unique_name(f"{out.name}_bypass")
                )
            )
    drop_unused(graph)
    produced = {o for n in graph.node for o in n.output} | {v.name for v in graph.input}
    infos = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    new.refresh()
    return new


def _without_branch(model: Model, join: onnx.NodeProto, branch: int) -> list[onnx.NodeProto]:
    """A fused ``Norm(branch + skip + bias)`` join rewritten as ``Norm(skip + bias)``.

    ``SkipLayerNormalization`` becomes ``LayerNormalization`` (``SkipSimplifiedLayerNormalization``
    ``RMSNormalization``) over the last axis with the join's epsilon; its sum output, if read,
    is the sum without the branch.
    """
    skip = join.input[1 - branch]
    simplified = join.op_type == "SkipSimplifiedLayerNormalization"
    gamma = join.input[2]
    beta = join.input[3] if not simplified and len(join.input) > 3 else ""
    bias = join.input[3 if simplified else 4] if len(join.input) > (3 if simplified else 4) else ""
    epsilon = next((a.f for a in join.attribute if a.name == "epsilon"), 1e-12)
    nodes = []
    total = skip
    if bias:
        total = model.unique_name(f"{join.name}_skip_bias")
        nodes.append(helper.make_node("Add", [skip, bias], [total], name=model.unique_name(f"{join.name}_add")))
    norm_inputs = [total, gamma] + ([beta] if beta else [])
    nodes.append(helper.make_node("RMSNormalization" if simplified else "LayerNormalization", norm_inputs,
                                  [join.output[0]], name=join.name, axis=-1, epsilon=epsilon))
    sum_index = 3
    if len(join.output) > sum_index and join.output[sum_index]:
        nodes.append(helper.make_node("Identity", [total], [join.output[sum_index]],
                                      name=model.unique_name(f"{join.name}_sum")))
    return nodes
