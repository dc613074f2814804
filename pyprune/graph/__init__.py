"""The ONNX model view: weights, producers/consumers, shapes, MACs and dependency groups."""

from __future__ import annotations

from ._dependency import DependencyGraph
from ._masking import insert_masks
from ._model import MIN_OPSET, Model, TensorSpec, load
from ._rules import CONTRIB_RULES, RULES
from ._units import Coupling, Group, Layer, MaskPoint

__all__ = [
    "load",
    "Model",
    "TensorSpec",
    "MIN_OPSET",
    "DependencyGraph",
    "insert_masks",
    "RULES",
    "CONTRIB_RULES",
    "MaskPoint",
    "Coupling",
    "Group",
    "Layer",
]
