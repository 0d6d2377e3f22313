"""Lifecycle transitions that fail loudly: a transition callback that raises is logged with its
traceback and fails the transition (rclpy would otherwise print to stderr and move on to error
processing without saying which node or why)."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable

from rclpy.lifecycle import State, TransitionCallbackReturn


def guarded(fn: Callable[[object, State], TransitionCallbackReturn]) -> Callable:
    @functools.wraps(fn)
    def wrapper(self, state: State) -> TransitionCallbackReturn:
        try:
            return fn(self, state)
        except Exception as exc:  # noqa: BLE001 - any failure must fail the transition, named and logged
            name = fn.__name__.removeprefix("on_")
            self.get_logger().error(f"{name} failed: {exc!r}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR if name == "error" else TransitionCallbackReturn.FAILURE
    return wrapper
