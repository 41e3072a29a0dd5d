"""Ctrl-C (SIGINT) and SIGTERM end a command the same way: as :class:`Interrupted`.

Python turns SIGINT into ``KeyboardInterrupt`` but lets SIGTERM (what ``kill``, ``timeout``,
Docker and CI runners send) end the process on the spot, skipping every ``finally`` block and
leaving staging directories behind. :func:`handle_signals` makes both raise
:class:`Interrupted`, a ``KeyboardInterrupt``, so the same cleanup runs for either.

A library deep inside a command may catch and swallow the exception; the signal is also
recorded, and :func:`raise_if_interrupted` (called before anything is committed to its final
place) raises it again. Signal handlers are process-wide by nature, hence the one module-level
record here.

Ground floor: standard library only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """The user (SIGINT) or the system (SIGTERM) asked the command to stop."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(self.signum)


def _raise(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise Interrupted(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; the previous handlers
    come back afterwards. Outside the main thread (where Python cannot install handlers) it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    _received.clear()
    for s in HANDLED:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        _received.clear()


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived inside :func:`handle_signals`, even when the
    exception it raised was swallowed on the way."""
    if _received:
        raise Interrupted(_received[-1])
