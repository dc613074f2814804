"""Graphs nested in If/Loop/Scan nodes, seen as parts of one model.

On load (:func:`normalise_bodies`) every value and node inside a nested graph gets a name unique in
the whole model, and the constants of nested graphs (initializers, ``Constant`` nodes) move to the
main graph, whose values nested graphs read by name. Every weight is then an initializer of the
main graph (scored, coupled and cut like any other), and a name says which value it is wherever it
is read. The analysis walks the bodies of the ops in :data:`FOLLOWED` as it walks the main graph;
the helpers here say where a node lives, how often :meth:`Model.macs` counts it, and insert nodes
into whichever graph holds their reader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ._model import Model, _constant_value, _defined_in, _graphs, body_counts, rename_reads

__all__ = ["FOLLOWED", "subgraphs", "followed", "graphs", "nested_nodes", "normalise_bodies", "insert_before",
           "enclosing", "mac_multipliers", "counted_macs"]

#: Control-flow ops whose bodies the dependency analysis walks (their channels can be pruned).
FOLLOWED = frozenset({"If", "Loop", "Scan"})


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """The graphs a node holds in its attributes, with the attribute names."""
    found = []
    for a in node.attribute:
        if a.HasField("g"):
            found.append((a.name, a.g))
        found.extend((a.name, g) for g in a.graphs)
    return found


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every graph nested in it, at any depth."""
    yield from _graphs(graph)


def followed(node: onnx.NodeProto) -> bool:
    """Whether the analysis walks this node's bodies (see :data:`FOLLOWED`)."""
    return node.op_type in FOLLOWED and node.domain in ("", "ai.onnx") and bool(subgraphs(node))


def nested_nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Every node inside the graphs nested in ``graph``'s nodes, at any depth, with the
    control-flow node whose attribute holds the graph it is in."""
    for node in graph.node:
        for _, sub in subgraphs(node):
            for inner in sub.node:
                yield inner, node
            yield from nested_nodes(sub)


def enclosing(graph: onnx.GraphProto) -> dict[str, str]:
    """Nested node name -> name of the node of ``graph`` whose body holds it (at any depth)."""
    return {inner.name: node.name for node in graph.node for _, sub in subgraphs(node)
            for g in _graphs(sub) for inner in g.node}


# -- normalisation on load ------------------------------------------------------------------------


def normalise_bodies(proto: onnx.ModelProto) -> None:
    """Unique names inside nested graphs; their constants moved to the main graph.

    Run after the main graph's nodes are named. Values a nested graph defines under a name used
    anywhere else (sibling branches often both write ``out``) are renamed in that graph and the
    graphs nested in it; nodes without a name, or with one taken, get one. Initializers and
    ``Constant`` nodes of nested graphs become initializers of the main graph (unless the nested
    graph lists them as its own inputs or outputs).
    """
    graph = proto.graph
    if not any(subgraphs(n) for n in graph.node):
        return
    values = _defined_in(graph) | {v.name for v in graph.output}
    nodes = {n.name for n in graph.node}
    for node in graph.node:
        for _, sub in subgraphs(node):
            _normalise_graph(sub, graph, values, nodes)


def _normalise_graph(sub: onnx.GraphProto, main: onnx.GraphProto, values: set[str], nodes: set[str]) -> None:
    alias: dict[str, str] = {}
    for name in sorted(_defined_in(sub)):
        if name in values:
            alias[name] = _fresh(name, values)
        values.add(alias.get(name, name))
    if alias:
        for v in [*sub.input, *sub.output, *sub.value_info]:
            v.name = alias.get(v.name, v.name)
        for t in sub.initializer:
            t.name = alias.get(t.name, t.name)
        for node in sub.node:
            for i, n in enumerate(node.input):
                node.input[i] = alias.get(n, n)
            for i, n in enumerate(node.output):
                node.output[i] = alias.get(n, n)
        rename_reads(sub, alias)
    for node in sub.node:
        if not node.name or node.name in nodes:
            node.name = _fresh(node.name or node.op_type, nodes)
        nodes.add(node.name)
    interface = {v.name for v in [*sub.input, *sub.output]}
    kept_inits = [t for t in sub.initializer if t.name in interface]
    for t in sub.initializer:
        if t.name not in interface:
            main.initializer.append(t)
    if len(kept_inits) != len(sub.initializer):
        del sub.initializer[:]
        sub.initializer.extend(kept_inits)
    kept_nodes = []
    for node in sub.node:
        value = _constant_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is None or node.output[0] in interface:
            kept_nodes.append(node)
        else:
            main.initializer.append(numpy_helper.from_array(np.asarray(value[0]), node.output[0]))
    if len(kept_nodes) != len(sub.node):
        del sub.node[:]
        sub.node.extend(kept_nodes)
    for node in sub.node:
        for _, inner in subgraphs(node):
            _normalise_graph(inner, main, values, nodes)


def _fresh(base: str, used: set[str]) -> str:
    k = 1
    while f"{base}_{k}" in used:
        k += 1
    used.add(f"{base}_{k}")
    return f"{base}_{k}"


# -- edits ----------------------------------------------------------------------------------------


def insert_before(graph: onnx.GraphProto, inserted: Mapping[str, list[onnx.NodeProto]]) -> None:
    """Put ``inserted[name]`` right before the node called ``name``, in whichever graph (the main
    one or a nested one) holds that node."""
    if not inserted:
        return
    for g in _graphs(graph):
        if not any(n.name in inserted for n in g.node):
            continue
        nodes: list[onnx.NodeProto] = []
        for node in g.node:
            nodes.extend(inserted.get(node.name, ()))
            nodes.append(node)
        del g.node[:]
        g.node.extend(nodes)


# -- MACs -----------------------------------------------------------------------------------------


def mac_multipliers(model: Model) -> dict[str, int]:
    """How many runs of each nested node :meth:`Model.macs` counts (by node name): a Loop body's
    nodes once per trip of a constant count, the nodes of an If's costlier branch once and those of
    the other branch not at all; nested bodies multiply."""
    found: dict[str, int] = {}

    def visit(graph: onnx.GraphProto, times: int) -> None:
        for node in graph.node:
            if not subgraphs(node):
                continue
            counts = body_counts(model, node)
            for name, sub in subgraphs(node):
                inner = times * counts.get(name, 0)
                for n in sub.node:
                    found[n.name] = inner
                visit(sub, inner)

    visit(model.proto.graph, 1)
    return found


def counted_macs(model: Model) -> Iterator[tuple[onnx.NodeProto, int]]:
    """Every node without a nested graph, in the main graph or nested, with the MACs
    :meth:`Model.macs` counts for it (its own times its multiplier, see :func:`mac_multipliers`)."""
    times = mac_multipliers(model)
    for node in model.nodes:
        if not subgraphs(node):
            yield node, model.node_macs(node)
    for node, _ in nested_nodes(model.proto.graph):
        if not subgraphs(node):
            yield node, model.node_macs(node) * times.get(node.name, 1)
