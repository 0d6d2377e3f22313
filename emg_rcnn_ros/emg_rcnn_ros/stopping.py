"""Ending a process on SIGINT/SIGTERM, for the runner, the autostart helper and the nodes. Imports
nothing but the standard library's basics: a console script imports this before anything else, so
that its handlers are in place as early as possible."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn


class Stop:
    """SIGINT/SIGTERM set one process-wide event that the runner's loops watch (shared, so that a
    signal before a command makes its own Stop() is not lost). Later signals (a terminal's Ctrl-C
    plus the one `ros2 launch` forwards) change nothing. The handler stays installed rather than
    switching to SIG_IGN: with both SIGINT and SIGTERM received before the first was handled (the
    main thread in a long native call), SIG_IGN would end the main thread with "OSError: Signal 15
    ignored due to race condition", as it did a node in CI. A process that uses Stop ends with
    exit_now: the interpreter's finalization resets Python's handlers to SIG_DFL, and a late
    Ctrl-C there would kill it with -2."""

    event = threading.Event()
    interrupt = False  # also raise KeyboardInterrupt: a long computation with nothing to save is under way

    def __init__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, Stop._handle)

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        first = not Stop.event.is_set()
        Stop.event.set()
        if first and Stop.interrupt:
            raise KeyboardInterrupt


def exit_now(code: int) -> NoReturn:
    """Flush stdio and end the process without the interpreter's finalization (see Stop)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
