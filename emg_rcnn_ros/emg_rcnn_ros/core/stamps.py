"""builtin_interfaces/Time <-> integer nanoseconds, for rclpy messages and rosbags ones alike."""

from __future__ import annotations

from typing import Any

NS = 1_000_000_000


def to_ns(stamp: Any) -> int:
    """Any object with `sec` and `nanosec` (a header stamp) as nanoseconds since the epoch."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def sec_nanosec(ns: int) -> tuple[int, int]:
    return int(ns // NS), int(ns % NS)
