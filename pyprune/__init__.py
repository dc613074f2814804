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
(model view, dependency groups, layers, weights), :mod:`pyprune.surgery` (physical edits),
:mod:`pyprune.importance`, :mod:`pyprune.evaluate` (masked sessions, latency, activations),
:mod:`pyprune.recovery`, :mod:`pyprune.metrics`, :mod:`pyprune.search` (the problem, spaces,
loops and shipping) and :mod:`pyprune.core` (the C++ kernels).

Names are imported on first use, so ``import pyprune`` (and ``pyprune --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module it lives in (relative to this package)
_EXPORTS: dict[str, str] = {
    # the one call and its result
    "prune": ".search",
    "PruneResult": ".search",
    "PruneOptions": ".options",
    "Limits": ".options",
    "Report": ".report",
    "STRATEGIES": ".options",
    "GRANULARITIES": ".options",
    # inputs
    "load": ".graph",
    "Model": ".graph",
    "Dataset": ".data",
    # targets and constraints
    "Sparsity": ".targets",
    "Params": ".targets",
    "MACs": ".targets",
    "Latency": ".targets",
    "Constraint": ".targets",
    "Metric": ".metrics",
    # lower-level building blocks
    "DependencyGraph": ".graph",
    "find_layers": ".graph",
    "inspect_model": ".graph",
    "remove_units": ".surgery",
    "remove_layers": ".surgery",
    "apply_weight_masks": ".surgery",
    "Evaluator": ".evaluate",
    "MaskedSession": ".evaluate",
    "complexity": ".evaluate",
    "measure_latency": ".evaluate",
    "PruningProblem": ".search",
    "sensitivity": ".search",
    # errors
    "PyPruneError": ".errors",
    "ModelLoadError": ".errors",
    "UnsupportedModelError": ".errors",
    "DataError": ".errors",
    "TargetError": ".errors",
}
_SUBMODULES = ("core", "graph", "surgery", "importance", "evaluate", "recovery", "metrics", "search",
               "options", "targets", "data", "report", "errors")

__all__ = [
    "prune",
    "PruneResult",
    "PruneOptions",
    "Limits",
    "Report",
    "STRATEGIES",
    "GRANULARITIES",
    "load",
    "Model",
    "Dataset",
    "Sparsity",
    "Params",
    "MACs",
    "Latency",
    "Constraint",
    "Metric",
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
    "PruningProblem",
    "sensitivity",
    "PyPruneError",
    "ModelLoadError",
    "UnsupportedModelError",
    "DataError",
    "TargetError",
    "core",
    "graph",
    "surgery",
    "importance",
    "evaluate",
    "recovery",
    "metrics",
    "search",
    "options",
    "targets",
    "data",
    "report",
    "errors",
    "__version__",
]


def _check_core() -> None:
    try:
        importlib.import_module("._core", __name__)
    except ImportError as exc:
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.isfile(os.path.join(root, "pyproject.toml")):
            raise ImportError(
                f"pyprune's compiled core (pyprune._core) is missing from the source tree at {root}. "
                "Python imported the source folder, which shadows the installed package: run from "
                "another folder (or `pytest`, not `python -m pytest`). To install: `pip install .` "
                "(`pip install --no-build-isolation -e .` for development)."
            ) from exc
        raise ImportError("pyprune's compiled core (pyprune._core) is missing: reinstall pyprune "
                          "with `pip install pyprune`.") from exc


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        if name == "core":
            _check_core()
        module = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        _check_core()
        module = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    else:
        raise AttributeError(f"module 'pyprune' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from . import (
        core,
        data,
        errors,
        evaluate,
        graph,
        importance,
        metrics,
        options,
        recovery,
        report,
        search,
        surgery,
        targets,
    )
    from .data import Dataset
    from .errors import DataError, ModelLoadError, PyPruneError, TargetError, UnsupportedModelError
    from .evaluate import Evaluator, MaskedSession, complexity, measure_latency
    from .graph import DependencyGraph, Model, find_layers, inspect_model, load
    from .metrics import Metric
    from .options import GRANULARITIES, STRATEGIES, Limits, PruneOptions
    from .report import Report
    from .search import PruneResult, PruningProblem

    # prune and sensitivity come from their defining modules: within the package's import cycle
    # a type checker resolves ``.search``'s names to the submodules they share a name with.
    from .search.driver import prune
    from .search.sensitivity import sensitivity
    from .surgery import apply_weight_masks, remove_layers, remove_units
    from .targets import Constraint, Latency, MACs, Params, Sparsity
