"""The units pyprune can prune, as seen by the rest of the package.

These records are the contract between the graph analysis (which finds them), surgery (which
removes them), the evaluator (which masks them inside one ONNX Runtime session) and the searches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MaskPoint", "Coupling", "ScaledNode", "Group", "Layer", "Edit"]


@dataclass(frozen=True)
class MaskPoint:
    """Where a group's channels enter a consumer that mixes channels (Conv, Gemm, MatMul, ...).

    Masking unit ``u`` of a group means multiplying input ``input_index`` of node ``node`` by 0 at
    every position ``p`` along ``axis`` with ``index[p] == u``. ``index`` has one entry per position
    along ``axis`` of that input (its static size); ``-1`` marks positions this group does not own
    (e.g. the other inputs of a Concat). Zeroing exactly these positions is equivalent to removing
    the units physically (the oracle the tests check).
    """

    node: str  # name of the consuming node (every node is given a unique name on load)
    input_index: int
    tensor: str  # name of the value flowing into that input
    axis: int  # non-negative axis of the channel dimension in that tensor
    rank: int  # rank of that tensor, so the mask can be shaped [1, .., C, .., 1]
    index: np.ndarray  # int64, shape [size along axis], unit id or -1


@dataclass(frozen=True)
class Coupling:
    """One weight slice set a group controls: ``weight`` indices along ``axis`` map to units."""

    weight: str  # initializer name
    axis: int
    index: np.ndarray  # int64, shape [weight.shape[axis]], unit id or -1
    role: str  # "out" (producer rows), "in" (consumer columns), "param" (bias/BN/scale ...)
    node: str = ""  # a node reading the weight through this slice (the one that coupled it)


@dataclass(frozen=True)
class ScaledNode:
    """A node without weights whose work shrinks with a group's units (the products of queries
    and keys, of attention and values: one slice per head). Its MACs scale with the fraction of
    positions along ``index`` that are kept (``-1``: positions this group does not own)."""

    node: str
    index: np.ndarray  # int64, one entry per position along the scaled axis, unit id or -1


@dataclass
class Group:
    """The smallest set of coupled slices that must be removed together."""

    id: str
    root: str  # name of the node whose output units define the group
    op_type: str
    size: int  # number of units
    couplings: list[Coupling] = field(default_factory=list)
    mask_points: list[MaskPoint] = field(default_factory=list)
    scaled: list[ScaledNode] = field(default_factory=list)  # weight-free nodes whose MACs shrink
    params_per_unit: np.ndarray | None = None  # parameters removed with each unit
    macs_per_unit: np.ndarray | None = None  # MACs removed with each unit (per sample)
    frozen: str | None = None  # reason the group cannot be pruned, None when prunable

    @property
    def prunable(self) -> bool:
        return self.frozen is None


@dataclass
class Layer:
    """A removable layer: a residual branch ``y = x + f(x)`` or a shape-preserving single path."""

    id: str
    kind: str  # "residual" or "path"
    nodes: list[str]  # nodes removed with the layer
    gate: MaskPoint  # the branch input (residual) / path output to gate with a scalar 0/1
    bypass: tuple[str, str]  # (value that replaces, value replaced) when the layer is removed
    params: int = 0
    macs: int = 0
    frozen: str | None = None

    @property
    def prunable(self) -> bool:
        return self.frozen is None


@dataclass
class Edit:
    """A shape constant, attribute or side input that must follow the kept channels on removal.

    ``kind``: ``"attr"`` (integer attribute = kept count of ``labels[0]``), ``"const"``
    (element ``element`` of input ``input_index`` = kept count of ``labels[0]``), ``"split"``
    (split sizes = kept counts of each ``labels[i]``), ``"slice"`` (start/end of entry
    ``element`` of the Slice bounds; ``labels[0]`` is the sliced axis, ``span`` the slice),
    ``"dim"`` (dimension ``element`` of the declared shape of input or output ``name`` of the body
    ``graph`` of control-flow node ``node`` = kept count of ``labels[0]``), ``"gather"`` (input
    ``input_index`` of ``node``, a computed tensor lined up with the channels ``labels[0]`` on axis
    ``element``, is read through a Gather of its kept positions).
    Labels are global unit ids (``DependencyGraph.unit_offset(group) + unit``), -1 = kept.
    """

    kind: str
    node: str
    labels: list[np.ndarray]
    name: str = ""
    input_index: int = -1
    element: int = -1
    span: tuple[int, int] = (0, 0)
    graph: str = ""
