"""Running the ``pyprune`` command: in-process (most tests) or as the installed console script."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pyprune.app.cli import main


def _pyprune_command() -> list[str]:
    """The console script installed next to this interpreter (how users run pyprune)."""
    beside = Path(sys.executable).with_name("pyprune")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pyprune")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from pyprune.app.cli import main; sys.exit(main())"]


PYPRUNE = _pyprune_command()


def console(*args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pyprune ARGS...`` in a subprocess and capture its output as text."""
    return subprocess.run(PYPRUNE + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``pyprune ARGS...`` through the entry point in this process (no interpreter start-up),
    with its exit code, standard output and standard error captured."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's own exits
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
