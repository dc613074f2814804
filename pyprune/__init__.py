"""pyprune: prune ONNX models (weights, channels, layers), judged in ONNX Runtime."""

from __future__ import annotations

try:
    from . import _core  # noqa: F401  (compiled extension)
except ImportError as exc:  # pragma: no cover - only hit on a broken install
    raise ImportError(
        "pyprune's compiled core (pyprune._core) is missing. Install the package with "
        "`pip install .` (or `pip install --no-build-isolation -e .` for development) instead of "
        "importing it from the source tree."
    ) from exc

from . import core
from .errors import DataError, ModelLoadError, PyPruneError, TargetError, UnsupportedModelError

__version__ = "0.1.0"

__all__ = [
    "core",
    "PyPruneError",
    "ModelLoadError",
    "UnsupportedModelError",
    "DataError",
    "TargetError",
    "__version__",
]
