"""How channel indices flow through each ONNX op: one registry, one rule per op type.

A tensor that carries prunable channels has a *channel axis* and a *label* per position along it
(the unit that position belongs to, or -1 for positions no group owns). Walking the graph in
topological order, the rule of each node reads the labels of its inputs and

* passes them on to its outputs (element-wise ops, pooling, Transpose, Flatten, Concat, ...),
* couples weight slices to them (Conv/Gemm/MatMul columns, BatchNorm and per-channel constants),
* records a mask point where the channels are mixed away (inputs of Conv, Gemm, MatMul),
* starts new labels for the units it produces (Conv output channels, Gemm/MatMul features),
* unites labels where two tensors are joined position by position (residual Add, SE Mul), or
* freezes them, with a reason naming the op and why, when it cannot prove removal is exact.

Ops without a rule freeze every channel that reaches them. If branches and Loop bodies are walked
like the main graph (``control.py``); other nested graphs freeze the channels they read. The walk
itself (labels, union-find, grouping) lives in ``_dependency.py``; this module only says what each
op does.
"""

import onnx

from .._nested import followed, subgraphs
from .._walk import Walk
from . import attention, control, elementwise, linear, normalization, shape, spatial  # noqa: F401  (each registers its rules)
from ._base import CONTRIB_RULES, RULES, Rule, freeze_all, freeze_control_flow, rule, rule_for

#: Default-domain ops whose rules handle tiled channel axes (``ChannelInfo.tiled``): they move
#: the axis as a whole. Any other op reading one freezes it.
TILED_OPS = frozenset({*elementwise._UNARY, *elementwise._BROADCAST, "Transpose", "Reshape", "MatMul",
                       "Softmax", "LogSoftmax"})


def visit(w: Walk, node: onnx.NodeProto) -> None:
    """Run the rule of one node: of the main graph, or of a body the walk follows."""
    fn = rule_for(node)
    tiled = any(info is not None and info.tiled for info in map(w.info, node.input))
    if subgraphs(node) and not followed(node):
        freeze_control_flow(w, node)
    elif fn is None:
        freeze_all(w, node)
    elif tiled and (node.domain not in ("", "ai.onnx") or node.op_type not in TILED_OPS):
        freeze_all(w, node, "reads channels merged with an axis of unknown size")
    else:
        fn(w, node)


__all__ = ["RULES", "CONTRIB_RULES", "TILED_OPS", "Rule", "rule", "rule_for", "freeze_all", "visit"]
