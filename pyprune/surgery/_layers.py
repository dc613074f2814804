"""Physical removal of whole layers: bypass them, then drop what nothing reads any more."""

from __future__ import annotations

from collections.abc import Sequence

from onnx import helper

from ..graph import Model, check_layer_ids, drop_unused, find_layers, rename_reads

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
    for layer in chosen:
        if set(layer.nodes) <= removed:
            continue
        removed.update(layer.nodes)
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
    kept = [node for node in graph.node if node.name not in removed]
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
