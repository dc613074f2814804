"""The ONNX model view: weights, producers/consumers, shapes, MACs, dependency groups, layers.

Load a model with :func:`load`; :class:`DependencyGraph` finds the channel/neuron groups (what
must be removed together) and :func:`find_layers` the removable layers; :func:`maskable_weights`
lists the weights that unstructured, N:M and block masks apply to. Physical removal lives in
:mod:`pyprune.surgery`.
"""

from __future__ import annotations

from ._dependency import ChannelInfo, DependencyGraph
from ._inspect import format_inspect, inspect_model
from ._layers import find_layers, gate_layers
from ._masking import insert_masks, keep_mask, mask_vectors
from ._model import MIN_OPSET, Model, TensorSpec, load
from ._rules import CONTRIB_RULES, RULES
from ._units import Coupling, Group, Layer, MaskPoint
from ._weights import (
    MaskableWeight,
    apply_weight_masks,
    block_masks,
    maskable_weights,
    nm_masks,
    unstructured_masks,
)

__all__ = [
    "load",
    "Model",
    "TensorSpec",
    "MIN_OPSET",
    "DependencyGraph",
    "ChannelInfo",
    "Group",
    "Coupling",
    "MaskPoint",
    "Layer",
    "find_layers",
    "gate_layers",
    "insert_masks",
    "mask_vectors",
    "keep_mask",
    "MaskableWeight",
    "maskable_weights",
    "unstructured_masks",
    "nm_masks",
    "block_masks",
    "apply_weight_masks",
    "inspect_model",
    "format_inspect",
    "RULES",
    "CONTRIB_RULES",
]
