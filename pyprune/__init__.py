"""pyprune: prune ONNX models (weights, channels, layers), judged in ONNX Runtime.

The short path::

    import pyprune as pp
    model = pp.load("model.onnx")
    data = pp.Dataset.from_npz("calib.npz", labels="y")
    result = pp.prune(model, data, granularity="channel", importance="l2",
                      strategy="greedy", target=pp.MACs(0.5), max_drop=0.01)
    result.model.save("model.pruned.onnx")
    print(result.report)

Lower-level pieces for composing your own loops live in the submodules: :mod:`pyprune.graph`
(model view, dependency groups, layers, weights), :mod:`pyprune.surgery` (physical removal),
:mod:`pyprune.importance`, :mod:`pyprune.evaluate` (masked sessions, latency, activations),
:mod:`pyprune.metrics`, :mod:`pyprune.search` (the strategies) and :mod:`pyprune.core` (the
C++ kernels).
"""

from __future__ import annotations

try:
    from . import _core  # noqa: F401  (compiled extension)
except ImportError as exc:  # pragma: no cover - only hit on a broken install
    raise ImportError(
        "pyprune's compiled core (pyprune._core) is missing. Install the package with "
        "`pip install .` (or `pip install --no-build-isolation -e .` for development) instead of "
        "importing it from the source tree."
    ) from exc

from . import core, evaluate, graph, importance, metrics, search, surgery
from ._prune import STRATEGIES, prune
from .data import Dataset
from .errors import DataError, ModelLoadError, PyPruneError, TargetError, UnsupportedModelError
from .evaluate import Evaluator, MaskedSession, complexity, measure_latency
from .graph import DependencyGraph, Model, find_layers, inspect_model, load
from .metrics import Metric
from .report import Report
from .search import PruneResult
from .surgery import apply_weight_masks, remove_layers, remove_units
from .targets import MACs, Constraint, Latency, Params, Sparsity

__version__ = "0.1.0"

__all__ = [
    # the one call and its result
    "prune",
    "PruneResult",
    "Report",
    "STRATEGIES",
    # inputs
    "load",
    "Model",
    "Dataset",
    # targets and constraints
    "Sparsity",
    "Params",
    "MACs",
    "Latency",
    "Constraint",
    "Metric",
    # lower-level building blocks
    "DependencyGraph",
    "find_layers",
    "inspect_model",
    "remove_units",
    "remove_layers",
    "apply_weight_masks",
    "Evaluator",
    "MaskedSession",
    "complexity",
    "measure_latency",
    # submodules
    "core",
    "graph",
    "surgery",
    "importance",
    "evaluate",
    "metrics",
    "search",
    # errors
    "PyPruneError",
    "ModelLoadError",
    "UnsupportedModelError",
    "DataError",
    "TargetError",
    "__version__",
]
