"""Exceptions pyprune raises for bad input. Every one derives from :class:`PyPruneError`."""

from __future__ import annotations

__all__ = ["PyPruneError", "ModelLoadError", "UnsupportedModelError", "DataError", "TargetError"]


class PyPruneError(Exception):
    """Base class of every error pyprune raises on purpose."""


class ModelLoadError(PyPruneError):
    """A model file could not be read or is not a valid ONNX model."""


class UnsupportedModelError(PyPruneError):
    """The model uses something the analysis cannot handle (and it cannot be frozen away)."""


class DataError(PyPruneError, ValueError):
    """Data does not fit the model's inputs (names, dtypes, ranks, fixed sizes, label lengths)."""


class TargetError(PyPruneError, ValueError):
    """A pruning target or constraint is malformed or impossible to express."""
