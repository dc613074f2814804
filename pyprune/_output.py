"""Writing results: text files written atomically, values made JSON-ready, figures saved as PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ._files import atomic_text

__all__ = ["atomic_write", "jsonable", "pyplot", "save_figure"]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG atomically (temp file + rename) and close it."""
    from matplotlib import pyplot as plt

    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, NaN/inf as None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write(path: Path, text: str) -> Path:
    """Write a text file atomically (see :func:`pyprune._files.atomic_text`)."""
    return atomic_text(path, text)
