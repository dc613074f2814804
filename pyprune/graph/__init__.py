"""The ONNX model view: weights, producers/consumers, shapes, MACs and dependency groups."""

from __future__ import annotations

from ._model import MIN_OPSET, Model, TensorSpec, load
from ._units import Coupling, Group, Layer, MaskPoint

__all__ = [
    "load",
    "Model",
    "TensorSpec",
    "MIN_OPSET",
    "MaskPoint",
    "Coupling",
    "Group",
    "Layer",
]
