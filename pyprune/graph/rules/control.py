"""Control flow: the branches of If and the bodies of Loop and Scan are walked like the main graph.

Inside a body every op has its own rule, and a body reads the outer graph's values (their channels
included) by name. What crosses a body's boundary couples: an If output is one branch's output or
the other's, so the channels of the two branch outputs are the same units (both branches are cut
the same way, the output has one shape); a Loop-carried state enters the body as the initial value
or as the last iteration's output, so the initial value, the body's input and output and the final
state are the same units (Scan's states likewise). A Loop's scan outputs stack the body output along
a new first axis, a Scan's along the axis it names; a scanned input enters a Scan body without its
scan axis (scanning along the channel axis freezes). The shapes the bodies declare for their inputs
and outputs follow the kept channels (``Walk.edit_dim``).
"""

from __future__ import annotations

import onnx

from .._nested import subgraphs
from .._walk import ChannelInfo, Walk
from ._base import attr, freeze_control_flow, rule


def _walk_body(w: Walk, graph: onnx.GraphProto) -> None:
    from . import visit  # the dispatch of every rule, this one included

    for node in graph.node:
        visit(w, node)


def _joined(w: Walk, node: onnx.NodeProto, values: list[str], why: str):
    """The labels shared by ``values`` (an output of each branch, or a state as it enters and
    leaves a body; all on one axis of equal rank), united across them; None (and every labelled one
    frozen with ``why``) when they differ or only some carry channels; also None when none does."""
    infos = [w.info(v) if v else None for v in values]
    labelled = [i for i in infos if i is not None]
    if not labelled:
        return None
    ranks = {w.rank(v) for v in values}
    if (len(labelled) < len(infos) or len(ranks) > 1 or any(i.tiled for i in labelled)
            or len({(i.axis, len(i.labels)) for i in labelled}) > 1):
        for i in labelled:
            w.freeze(i.labels, f"{node.op_type} node {node.name!r} {why}")
        return None
    labels = labelled[0].labels
    for i in labelled[1:]:
        labels = w.union(labels, i.labels, node)
    return ChannelInfo(labelled[0].axis, labels)


@rule("If")
def if_(w: Walk, node: onnx.NodeProto) -> None:
    branches = [(name, g) for name, g in subgraphs(node) if name in ("then_branch", "else_branch")]
    if len(branches) != 2 or any(len(g.output) != len(node.output) for _, g in branches):
        return freeze_control_flow(w, node, "has branches whose outputs do not match its own")
    for _, g in branches:
        _walk_body(w, g)
    for k, out in enumerate(node.output):
        values = [g.output[k].name for _, g in branches]
        joined = _joined(w, node, values, f"gets output {k} from branches that give it different channels")
        if joined is None:
            continue
        for (body, _), value in zip(branches, values):
            w.edit_dim(node, body, value, joined.axis, joined.labels)
        if out:
            w.set(out, joined.axis, joined.labels)


@rule("Loop")
def loop(w: Walk, node: onnx.NodeProto) -> None:
    body = dict(subgraphs(node)).get("body")
    states = len(node.input) - 2
    if body is None or states < 0 or len(body.input) != states + 2 or len(body.output) < states + 1:
        return freeze_control_flow(w, node, "has a body whose inputs and outputs do not match its states")
    for name in node.input[:2]:
        info = w.info(name)
        if info is not None:
            w.freeze(info.labels, f"Loop node {node.name!r} reads channel data as its trip count or condition")
    for k in range(states):
        _enter(w, node, node.input[2 + k], body.input[2 + k].name)
    _walk_body(w, body)
    for k in range(states):
        _carry(w, node, k, body.input[2 + k].name, body.output[1 + k].name, _output(node, k))
    for k in range(states, len(body.output) - 1):
        _stack(w, node, body.output[1 + k].name, _output(node, k), 0)


@rule("Scan")
def scan(w: Walk, node: onnx.NodeProto) -> None:
    """Scan (opset 9 on): states as in Loop; each scanned input enters the body without its scan
    axis, each scan output leaves it stacked along its own."""
    body = dict(subgraphs(node)).get("body")
    scans = int(attr(node, "num_scan_inputs", 0))
    states = len(node.input) - scans
    if body is None or scans < 1 or states < 0 or len(body.input) != len(node.input) or len(body.output) < states:
        return freeze_control_flow(w, node, "has a body whose inputs and outputs do not match its states and scans")
    outputs = len(body.output) - states
    in_axes = list(attr(node, "scan_input_axes", None) or [0] * scans)
    out_axes = list(attr(node, "scan_output_axes", None) or [0] * outputs)
    for k in range(states):
        _enter(w, node, node.input[k], body.input[k].name)
    for j in range(scans):
        name, inner = node.input[states + j], body.input[states + j].name
        info, rank = w.info(name), w.rank(name)
        if info is None:
            continue
        if rank is None or info.tiled:
            w.freeze(info.labels, f"Scan node {node.name!r} scans {name!r}, whose channel axis it cannot place")
            continue
        if info.axis == in_axes[j] % rank:
            w.freeze(info.labels, f"Scan node {node.name!r} scans input {name!r} along its channel axis")
            continue
        axis = info.axis - int(info.axis > in_axes[j] % rank)
        w.set(inner, axis, info.labels)
        w.edit_dim(node, "body", inner, axis, info.labels)
    _walk_body(w, body)
    for k in range(states):
        _carry(w, node, k, body.input[k].name, body.output[k].name, _output(node, k))
    for k in range(outputs):
        _stack(w, node, body.output[states + k].name, _output(node, states + k), out_axes[k])


def _output(node: onnx.NodeProto, k: int) -> str:
    return node.output[k] if k < len(node.output) else ""


def _enter(w: Walk, node: onnx.NodeProto, given: str, inner: str) -> None:
    """A state's first value enters the body as its input ``inner``."""
    info = w.info(given)
    if info is not None and not info.tiled:
        w.set(inner, info.axis, info.labels)
    elif info is not None:
        w.freeze(info.labels, f"{node.op_type} node {node.name!r} carries channels merged with an axis of "
                              "unknown size")


def _carry(w: Walk, node: onnx.NodeProto, k: int, given: str, returned: str, final: str) -> None:
    """State ``k`` enters the body as ``given`` (its first value, or the last iteration's
    ``returned``) and leaves the node as ``final``: one set of units throughout."""
    joined = _joined(w, node, [given, returned],
                     f"carries state {k} into the next iteration with other channels than it starts with")
    if joined is None:
        return
    w.edit_dim(node, "body", given, joined.axis, joined.labels)
    w.edit_dim(node, "body", returned, joined.axis, joined.labels)
    if final:
        w.set(final, joined.axis, joined.labels)


def _stack(w: Walk, node: onnx.NodeProto, value: str, stacked: str, axis: int) -> None:
    """A body output every iteration appends to ``stacked`` along ``axis`` of the result."""
    info, rank = w.info(value), w.rank(value)
    if info is None:
        return
    if info.tiled or rank is None:
        w.freeze(info.labels, f"{node.op_type} node {node.name!r} stacks channels it cannot place")
        return
    w.edit_dim(node, "body", value, info.axis, info.labels)
    if stacked:
        w.set(stacked, info.axis + int(info.axis >= axis % (rank + 1)), info.labels)
