"""What every node shares: parameter declaration with descriptions, diagnostics, and a main()
that shuts down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import collections
import gc
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter

ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
               int: Parameter.Type.INTEGER_ARRAY}


def declare(node: Node, name: str, default: object, description: str) -> None:
    """Declare with a description. A list default names its element type: [str] declares a string
    array that may be left empty ([] in YAML carries no type)."""
    desc = ParameterDescriptor(description=description)
    if isinstance(default, list) and len(default) == 1 and isinstance(default[0], type):
        node.declare_parameter(name, ARRAY_TYPES[default[0]], desc)
    else:
        node.declare_parameter(name, default, desc)


def param(node: Node, name: str) -> object:
    """Value of a declared parameter; [] for an array left empty."""
    try:
        return node.get_parameter(name).value
    except rclpy.exceptions.ParameterUninitializedException:
        return []


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
        self._timer = node.create_timer(period, self.publish)

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


def run(make_node: Callable[[], Node], executor_cls: type | None = None) -> int:
    """Spin until SIGINT/SIGTERM, then shut down cleanly.

    BLAS is limited to one thread: the nodes work on small arrays per message, and OpenBLAS's
    spinning worker threads would otherwise burn a core each and add jitter to every callback."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    rclpy.init(args=sys.argv)
    node = None
    try:
        node = make_node()
        # Everything allocated so far (torch, numpy, messages' type support) lives for the whole
        # run: freezing it keeps the cyclic GC's full collections short on the message path.
        gc.collect()
        gc.freeze()
        executor = (executor_cls or rclpy.executors.SingleThreadedExecutor)()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
