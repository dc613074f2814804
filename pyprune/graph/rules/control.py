"""Control flow: the branches of If and the body of Loop are walked like the main graph.

Inside a body every op has its own rule, and a body reads the outer graph's values (their channels
included) by name. What crosses a body's boundary couples: an If output is one branch's output or
the other's, so the channels of the two branch outputs are the same units (both branches are cut
the same way, the output has one shape); a Loop-carried state enters the body as the initial value
or as the last iteration's output, so the initial value, the body's input and output and the final
state are the same units. A Loop's scan outputs stack the body output along a new first axis. The
shapes the bodies declare for their inputs and outputs follow the kept channels (``Walk.edit_dim``).
"""

from __future__ import annotations

import onnx

from .._nested import subgraphs
from .._walk import ChannelInfo, Walk
from ._base import freeze_control_flow, rule


def _walk_body(w: Walk, graph: onnx.GraphProto) -> None:
    from . import visit  # the dispatch of every rule, this one included

    for node in graph.node:
        visit(w, node)


def _joined(w: Walk, node: onnx.NodeProto, values: list[str], why: str):
    """The labels shared by ``values`` (one per body, all on one axis of equal rank), united across
    them; None (and every labelled one frozen with ``why``) when they differ or only some carry
    channels; also None when none does."""
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
        info = w.info(node.input[2 + k])
        if info is not None and not info.tiled:
            w.set(body.input[2 + k].name, info.axis, info.labels)
        elif info is not None:
            w.freeze(info.labels, f"Loop node {node.name!r} carries channels merged with an axis of unknown size")
    _walk_body(w, body)
    for k in range(states):
        given, returned = body.input[2 + k].name, body.output[1 + k].name
        joined = _joined(w, node, [given, returned],
                         f"carries state {k} into the next iteration with other channels than it starts with")
        if joined is None:
            continue
        w.edit_dim(node, "body", given, joined.axis, joined.labels)
        w.edit_dim(node, "body", returned, joined.axis, joined.labels)
        if k < len(node.output) and node.output[k]:
            w.set(node.output[k], joined.axis, joined.labels)
    for k in range(states, len(body.output) - 1):
        info = w.info(body.output[1 + k].name)
        if info is None:
            continue
        if info.tiled:
            w.freeze(info.labels, f"Loop node {node.name!r} stacks channels merged with an axis of unknown size")
            continue
        w.edit_dim(node, "body", body.output[1 + k].name, info.axis, info.labels)
        if k < len(node.output) and node.output[k]:
            w.set(node.output[k], info.axis + 1, info.labels)  # scan outputs stack the iterations first
