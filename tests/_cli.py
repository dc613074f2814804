"""Running the installed ``pyprune`` console script in a subprocess, as users do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _pyprune_command() -> list[str]:
    """The console script installed next to this interpreter (how users run pyprune)."""
    beside = Path(sys.executable).with_name("pyprune")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pyprune")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from pyprune.cli import main; sys.exit(main())"]


PYPRUNE = _pyprune_command()


def pyprune(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``pyprune ARGS...`` and capture its output as text."""
    return subprocess.run(PYPRUNE + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
