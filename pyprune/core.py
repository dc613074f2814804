"""Typed seam over the C++ pruning core (``pyprune._core``)."""

from __future__ import annotations

from . import _core

__all__ = ["get_num_threads", "set_num_threads"]


def get_num_threads() -> int:
    """Threads a kernel uses when called without ``threads=`` (default: all cores)."""
    return _core.get_num_threads()


def set_num_threads(threads: int) -> None:
    """Set the module-wide thread count; ``0`` restores the default (all cores)."""
    _core.set_num_threads(int(threads))
