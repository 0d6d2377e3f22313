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
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

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


class FastSubscription:
    """A node's latency-critical subscription, served by a thread that waits on it alone.

    rclpy's Python executor rebuilds its whole wait set in Python on every wake-up: ~0.4-0.5 ms per
    message for a node woken every 10-20 ms on a 2-core machine, even for a node with nothing else
    (measured; README, latency). This thread waits on one subscription and one guard condition, the
    way rclpy's own `wait_for_message` does. (rclpy's C++ EventsExecutor spun a core and left
    services unanswered in rclpy 9.1, so it was not an option.) The subscription lives on a hidden
    helper node that no executor spins; the owner keeps its services, parameters and timers on the
    ordinary executor. The topic is resolved by the owner, so its namespace and remappings apply.

    Each wake-up takes every queued message and hands it to `on_message`; then `after_batch`
    (if given) runs once, outside any message callback. `on_idle` (if given) runs whenever
    `idle_timeout` seconds pass without a message. All of them run in this thread."""

    def __init__(self, owner: Node, msg_type: type, topic: str, qos: QoSProfile | int,
                 on_message: Callable[[object], None], after_batch: Callable[[], None] | None = None,
                 on_idle: Callable[[], None] | None = None, idle_timeout: float = 1.0) -> None:
        self.owner, self.msg_type = owner, msg_type
        self.on_message, self.after_batch, self.on_idle = on_message, after_batch, on_idle
        self._timeout_ns = int(idle_timeout * 1e9) if on_idle else -1
        self.errors = 0
        self.node = Node(f"_{owner.get_name()}_data", namespace=owner.get_namespace(), context=owner.context,
                         use_global_arguments=False, enable_rosout=False, start_parameter_services=False,
                         parameter_overrides=[Parameter("start_type_description_service", value=False)])
        self.sub = self.node.create_subscription(msg_type, owner.resolve_topic_name(topic), lambda _: None, qos)
        self._wake = self.node.create_guard_condition(lambda: None)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"{owner.get_name()}_data", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ctx = self.node.context
        ws = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, ctx.handle)
        while self._running and ctx.ok():
            ws.clear_entities()
            ws.add_subscription(self.sub.handle)
            ws.add_guard_condition(self._wake.handle)
            try:
                ws.wait(self._timeout_ns)
            except Exception as exc:  # normally the context going away (shutdown) while waiting
                if ctx.ok():
                    self.owner.get_logger().error(f"{self.sub.topic_name}: waiting failed, input stopped: {exc!r}")
                break
            if not self._running:
                break
            try:
                n = 0
                while (taken := self.sub.handle.take_message(self.msg_type, False)) is not None:
                    n += 1
                    self.on_message(taken[0])
                if n and self.after_batch is not None:
                    self.after_batch()
                elif not n and self.on_idle is not None:
                    self.on_idle()
            except Exception as exc:  # keep serving the stream; the count goes to diagnostics
                self.errors += 1
                self.owner.get_logger().error(f"{self.sub.topic_name}: {exc!r}", throttle_duration_sec=1.0)

    def close(self) -> None:
        """Stop the thread; no callback runs after this returns."""
        self._running = False
        self._wake.trigger()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


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
