"""Ending a process on SIGINT/SIGTERM, for the runner, the autostart helper and the nodes. Imports
nothing but the standard library's basics: a console script imports this before anything else, so
that its handlers are in place as early as possible."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import NoReturn


class Flag:
    """A stop request that a signal handler may set: a bool, no lock. threading.Event is not safe
    there: its set() holds the event's lock while it runs, and a second signal (a terminal's Ctrl-C
    plus the one `ros2 launch` or the runner forwards) handled inside the first handler's set()
    called set() again on the same thread and waited for that lock forever (bench/stop.py, the
    runner: an estimator hung until SIGKILL). Waiting polls in short sleeps, between which the
    main thread runs its handlers."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds; True as soon as the flag is set."""
        end = time.monotonic() + timeout
        while not self._set and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.02))
        return self._set


class Stop:
    """SIGINT/SIGTERM set one process-wide Flag that the runner's loops watch (shared, so that a
    signal before a command makes its own Stop() is not lost). Later signals (a terminal's Ctrl-C
    plus the one `ros2 launch` forwards) change nothing. The handler stays installed rather than
    switching to SIG_IGN: with both SIGINT and SIGTERM received before the first was handled (the
    main thread in a long native call), SIG_IGN would end the main thread with "OSError: Signal 15
    ignored due to race condition", as it did a node in CI. A process that uses Stop ends with
    exit_now: the interpreter's finalization resets Python's handlers to SIG_DFL, and a late
    Ctrl-C there would kill it with -2."""

    event = Flag()
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
    for stream in (sys.stdout, sys.stderr):
        # RuntimeError: a handler that cut into a write of this stream cannot flush it; ValueError: closed.
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            stream.flush()
    os._exit(code)
