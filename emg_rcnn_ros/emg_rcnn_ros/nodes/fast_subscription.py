"""A latency-critical subscription served by a thread of its own (see FastSubscription)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

POLL_NS = 200_000_000  # longest single wait (ns)


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
    (if given) runs once, outside any message callback. `on_idle` (if given) runs whenever a wait
    of min(`idle_timeout`, 0.2 s) ends without a message (it checks the time itself). All of them
    run in this thread."""

    def __init__(self, owner: Node, msg_type: type, topic: str, qos: QoSProfile | int,
                 on_message: Callable[[object], None], after_batch: Callable[[], None] | None = None,
                 on_idle: Callable[[], None] | None = None, idle_timeout: float = 1.0) -> None:
        self.owner, self.msg_type = owner, msg_type
        self.on_message, self.after_batch, self.on_idle = on_message, after_batch, on_idle
        # The wait is always bounded, so the loop sees close() even if a wake-up were lost.
        self._timeout_ns = min(int(idle_timeout * 1e9), POLL_NS) if on_idle else POLL_NS
        self.errors = 0
        self.node = Node(f"_{owner.get_name()}_data", namespace=owner.get_namespace(), context=owner.context,
                         use_global_arguments=False, enable_rosout=False, start_parameter_services=False,
                         parameter_overrides=[Parameter("start_type_description_service", value=False)])
        self.sub = self.node.create_subscription(msg_type, owner.resolve_topic_name(topic), lambda _: None, qos)
        self._wake = self.node.create_guard_condition(lambda: None)
        self._running = self._node_up = True
        self._thread = threading.Thread(target=self._loop, name=f"{owner.get_name()}_data", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ctx = self.node.context
        ws = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, ctx.handle)
        # Holding the handles keeps the subscription and guard condition alive while this thread
        # may be waiting on them: destroy_node() defers their destruction until the loop has ended.
        with self.sub.handle, self._wake.handle:
            while self._running and ctx.ok():
                ws.clear_entities()
                ws.add_subscription(self.sub.handle)
                ws.add_guard_condition(self._wake.handle)
                try:
                    ws.wait(self._timeout_ns)
                except Exception as exc:  # normally the context going away (shutdown) while waiting
                    if ctx.ok() and self._running:
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
        """Stop the thread; no callback runs after this returns. The helper node stays until
        destroy(): destroying DDS entities can stall for seconds in Fast DDS, and a process that is
        stopping has then already closed everything that matters (process.py's shutdown deadline)."""
        self._running = False
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._wake.trigger()
            self._thread.join()  # bounded: the wait times out every POLL_NS at most

    def destroy(self) -> None:
        """close(), then destroy the helper node and its subscription (once)."""
        self.close()
        if self._node_up:
            self._node_up = False
            self.node.destroy_node()
