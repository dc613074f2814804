"""Interrupts that keep the work: Ctrl-C and SIGTERM as a request to stop, never a lost result.

While a search runs, Ctrl-C (and, under the command line, SIGTERM: ``timeout``, ``docker stop``,
a CI time limit) raises ``KeyboardInterrupt``; the loop stops and the best state found is shipped.
Shipping and writing the result run under :func:`deferred_interrupts`: a signal arriving then is
remembered instead of raised, so a finished search is still written, and the caller learns that
the user asked to stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["deferred_interrupts", "sigterm_as_interrupt"]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred_interrupts(on_interrupt: Callable[[], None] | None = None) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are recorded (in the yielded list) and
    ``on_interrupt`` is called, instead of interrupting; the previous handlers come back after.
    Outside the main thread (where Python cannot take signals) nothing changes."""
    caught: list[int] = []
    if not _main_thread():
        yield caught
        return

    def remember(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        if on_interrupt is not None:
            on_interrupt()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, remember)
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises ``KeyboardInterrupt``, like Ctrl-C (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
