"""The ONNX model view and its analysis: weights, producers/consumers, shapes, MACs, dependency
groups, layers and maskable weights. Nothing here edits a model; every physical edit lives in
:mod:`pyprune.surgery`.

Load a model with :func:`load`; :class:`DependencyGraph` finds the channel/neuron groups (what
must be removed together) and :func:`find_layers` the removable layers; :func:`maskable_weights`
lists the weights that unstructured, N:M and block masks apply to.
"""

from __future__ import annotations

from ._dependency import ChannelInfo, DependencyGraph
from ._inspect import format_inspect, inspect_model
from ._layers import WEIGHTED_OPS, check_layer_ids, find_layers
from ._model import MAC_WEIGHTED_OPS, MIN_OPSET, Model, TensorSpec, drop_unused, load, rename_reads
from ._nested import counted_macs, enclosing, graphs, insert_before, subgraphs
from ._units import Coupling, Edit, Group, Layer, MaskPoint, ScaledNode
from ._weights import (
    FLOAT_TYPES,
    MaskableWeight,
    block_masks,
    maskable_weights,
    nm_masks,
    unstructured_masks,
)
from .rules import CONTRIB_RULES, RULES

__all__ = [
    "load",
    "Model",
    "TensorSpec",
    "MIN_OPSET",
    "MAC_WEIGHTED_OPS",
    "DependencyGraph",
    "ChannelInfo",
    "Group",
    "Coupling",
    "MaskPoint",
    "ScaledNode",
    "Edit",
    "Layer",
    "find_layers",
    "check_layer_ids",
    "WEIGHTED_OPS",
    "MaskableWeight",
    "maskable_weights",
    "unstructured_masks",
    "nm_masks",
    "block_masks",
    "FLOAT_TYPES",
    "drop_unused",
    "rename_reads",
    "graphs",
    "subgraphs",
    "insert_before",
    "counted_macs",
    "enclosing",
    "inspect_model",
    "format_inspect",
    "RULES",
    "CONTRIB_RULES",
]
