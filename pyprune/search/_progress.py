"""What a running search shows: evaluations, the metric and the target's own quantity.

On a terminal a progress bar (tqdm) redraws in place; when standard error is not a terminal
(a log file, CI) one plain line is written per committed step instead, so logs hold no ``\\r``
frames.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Progress of one search (nothing at all when ``quiet``); the caller words each status."""

    def __init__(self, *, quiet: bool = False, label: str = "search") -> None:
        self.quiet = quiet
        self.label = label
        self._bar: Any = None
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())

    def evaluated(self, status: str) -> None:
        """One candidate was judged: on a terminal, one tick of the bar."""
        if self.quiet or not self._tty:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=self.label, unit="eval", leave=False, dynamic_ncols=True)
        self._bar.update(1)
        self._bar.set_postfix_str(status, refresh=False)

    def committed(self, status: str) -> None:
        """A step was committed: on a log (not a terminal), one line."""
        if self.quiet or self._tty:
            return
        sys.stderr.write(f"pyprune: {self.label}: {status}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
