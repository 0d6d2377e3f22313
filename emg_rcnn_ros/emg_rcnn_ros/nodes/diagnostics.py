"""Diagnostics on /diagnostics, published by every node about once a second."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node


class Rate:
    """Messages per second over the diagnostics interval."""

    def __init__(self) -> None:
        self.count, self._last, self._t = 0, 0, time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        r = (self.count - self._last) / max(now - self._t, 1e-9)
        self._last, self._t = self.count, now
        return r


class Diagnostics:
    """Publishes one DiagnosticStatus on /diagnostics about once a second: rates, latency from
    EMG stamp to publication (p50/p99 over the interval), and counters given by the node."""

    def __init__(self, node: Node, values: Callable[[], dict[str, object]], period: float = 1.0) -> None:
        self.node = node
        self.values = values
        self.latencies: collections.deque[float] = collections.deque(maxlen=10000)
        self.level, self.message = DiagnosticStatus.OK, "ok"
        self._lock = threading.Lock()
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A steady clock: with use_sim_time and no /clock, diagnostics must still be published.
        self._timer = node.create_timer(period, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def set(self, level: bytes, message: str) -> None:
        self.level, self.message = level, message

    def publish(self) -> None:
        with self._lock:
            lat = np.array(self.latencies)
            self.latencies.clear()
        kv = self.values()
        if lat.size:
            kv["latency_p50_ms"] = f"{np.percentile(lat, 50) * 1e3:.2f}"
            kv["latency_p99_ms"] = f"{np.percentile(lat, 99) * 1e3:.2f}"
        status = DiagnosticStatus(level=self.level, name=f"{self.node.get_fully_qualified_name()}",
                                  message=self.message, hardware_id="emg",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in kv.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(msg)
