"""The masked reference model: removal must equal this (the oracle of all channel surgery).

Masking unit ``u`` of a group zeroes, at every mask point of the group, the positions of that
consumer input whose index is ``u``: a ``Mul(input, mask)`` is inserted on that edge only, with a
constant mask shaped ``[1, .., C, .., 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from ..graph import DependencyGraph, Group, MaskPoint, Model, insert_before

__all__ = ["insert_masks", "mask_vectors", "keep_mask"]


def keep_mask(group: Group, keep) -> np.ndarray:
    """A boolean keep-mask of ``group.size`` from a bool mask (validated)."""
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != (group.size,):
        raise ValueError(
            f"keep mask of group {group.id!r} must be a bool array of shape ({group.size},), "
            f"got {keep.dtype} {keep.shape}"
        )
    return keep


def mask_vectors(
    graph: DependencyGraph, keep: Mapping[str, np.ndarray]
) -> dict[tuple[str, int], tuple[MaskPoint, np.ndarray]]:
    """Per consumer edge (node, input index): its mask point and the 0/1 vector along its axis.

    Edges shared by several groups (a Conv reading a Concat of two groups) get one vector.
    """
    edges: dict[tuple[str, int], tuple[MaskPoint, np.ndarray]] = {}
    for group_id, mask in keep.items():
        group = graph.group(group_id)
        mask = keep_mask(group, mask)
        for mp in group.mask_points:
            key = (mp.node, mp.input_index)
            vector = edges[key][1] if key in edges else np.ones(len(mp.index), dtype=np.float64)
            owned = mp.index >= 0
            vector[owned] *= mask[mp.index[owned]]
            edges[key] = (mp, vector)
    return edges


def insert_masks(
    model: Model, keep: Mapping[str, np.ndarray], graph: DependencyGraph | None = None
) -> Model:
    """A copy of ``model`` with ``Mul`` masks on every mask point of the given groups.

    ``keep`` maps group id -> bool array of the group's size (False = unit masked).
    """
    graph = graph or DependencyGraph(model)
    edges = mask_vectors(graph, keep)
    out = model.copy()
    inserted: dict[str, list[onnx.NodeProto]] = {}
    for (node_name, index), (mp, vector) in edges.items():
        if np.all(vector == 1):
            continue
        elem = out.elem_type(mp.tensor) or onnx.TensorProto.FLOAT
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        shape = [1] * mp.rank
        shape[mp.axis] = len(vector)
        mask = vector.astype(dtype).reshape(shape)
        mask_name = out.add_weight(out.unique_name(f"{mp.tensor}_mask"), mask)
        masked = out.unique_name(f"{mp.tensor}_masked")
        mul = helper.make_node(
            "Mul", [mp.tensor, mask_name], [masked], name=out.unique_name(f"{node_name}_mask")
        )
        out.node(node_name).input[index] = masked  # (in a body, the mask is read from the main graph)
        inserted.setdefault(node_name, []).append(mul)
        out._producers[masked] = mul  # the index knows the new value before the refresh below
        out._nodes[mul.name] = mul
    insert_before(out.proto.graph, inserted)
    out.refresh()
    return out
