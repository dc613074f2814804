"""What a running search shows: evaluations, the metric, the target's own quantity and the pace.

On a terminal a progress bar (tqdm) redraws in place: evaluations per second, and for a run with
an evaluation budget the bar fills toward it with an estimate of the time left. When standard
error is not a terminal (a log file, CI) one plain line is written per committed step instead, so
logs hold no ``\\r`` frames.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Progress of one search (nothing at all when ``quiet``); the caller words each status.

    ``total``: the evaluation budget, when there is one (the bar then shows how much of it is
    spent and the time tqdm expects the rest to take).
    """

    def __init__(self, *, quiet: bool = False, label: str = "search", total: int | None = None) -> None:
        self.quiet = quiet
        self.label = label
        self.total = total
        self._bar: Any = None
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())

    def evaluated(self, status: str, pace: str = "") -> None:
        """One candidate was judged: on a terminal, one tick of the bar. ``pace``: evaluations
        per second and what is left of the budgets, shown after the status."""
        if self.quiet or not self._tty:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=self.label, unit="eval", leave=False, dynamic_ncols=True, total=self.total)
        self._bar.update(1)
        self._bar.set_postfix_str(f"{status} | {pace}" if pace else status, refresh=False)

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
