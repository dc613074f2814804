"""Files a run reads and writes: never the same ones, writes that are atomic, no debris.

Every output path is checked before any work (:func:`check_output`): not a folder, its folder
writable, and not any file the run reads — the model, the model's external-data files, data files,
a recipe — compared by real path, so symlinks, hard links and ``..`` do not get around it.
Model files are written through a private temporary folder in the target's folder (renamed into
place, so a crash never leaves half a file); such folders are named after the writing process, so
one left behind by a killed process is removed the next time anything is written there
(:func:`clean_stale_temporaries`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import PyPruneError

__all__ = ["OutputError", "same_file", "check_output", "check_report_dir", "temporary_folder",
           "clean_stale_temporaries", "atomic_text", "TEMP_PREFIX"]

#: Prefix of the temporary folders writes go through (``.pyprune-<pid>-<random>``).
TEMP_PREFIX = ".pyprune-"


class OutputError(PyPruneError, ValueError):
    """An output path that cannot or must not be written (checked before any work)."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file: same real path, or (existing) the same inode."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return os.path.realpath(pa) == os.path.realpath(pb)


def check_output(path: str | os.PathLike[str], reads: Iterable[tuple[str, str | os.PathLike[str]]] = (),
                 *, what: str = "output") -> Path:
    """Refuse an output path before any work: a folder (or a name ending in a separator), a
    folder that does not exist and cannot be made, one that is not writable, or any file in
    ``reads`` (``(description, path)`` pairs: what the run reads). Returns the path."""
    text = os.fspath(path)
    if text.endswith((os.sep, "/")):
        raise OutputError(f"{what} {text} names a folder; give a file name inside it")
    out = Path(text)
    if out.is_dir():
        raise OutputError(f"{what} {out} is a folder; give a file name inside it")
    for label, read in reads:
        if same_file(out, read):
            raise OutputError(f"{what} {out} is the {label} this run reads; choose another file")
    _check_folder(out.parent, what)
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError(f"{what} {out} exists and is not writable")
    return out


def check_report_dir(path: str | os.PathLike[str], reads: Iterable[tuple[str, str | os.PathLike[str]]] = (),
                     *, what: str = "report folder") -> Path:
    """Refuse a report folder that is an existing file, sits in an unwritable place, or is a
    file the run reads."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {out} is an existing file; give a folder")
    for label, read in reads:
        if same_file(out, read):
            raise OutputError(f"{what} {out} is the {label} this run reads")
    _check_folder(out if out.is_dir() else out.parent, what)
    return out


def _check_folder(folder: Path, what: str) -> None:
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what}: {existing} is a file, so the folder {folder} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: the folder {existing} is not writable")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary folders a killed pyprune process left in ``folder`` (their process is
    gone); returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir():
            continue
        pid = entry.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def temporary_folder(folder: str | os.PathLike[str]) -> Path:
    """A fresh private folder inside ``folder`` (same file system, so renames out of it are atomic)."""
    clean_stale_temporaries(folder)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=folder))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically, with the permissions of a normally created file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is as readable as a model
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
