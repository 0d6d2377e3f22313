"""FastSubscription, the nodes' latency-critical input: real rclpy, real messages. It honours the
owner's namespace and remapping, delivers in order, runs the batch and idle hooks when it should,
survives a failing callback, delivers nothing once closed, and leaves its subscription until destroyed."""

from __future__ import annotations

import threading
import time

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.ros


def test_delivery_hooks_and_close(observer) -> None:
    import rclpy
    from std_msgs.msg import Int64

    from emg_rcnn_ros.nodes.fast_subscription import FastSubscription

    owner = rclpy.create_node("owner", namespace="/ns", context=observer.context,
                              cli_args=["--ros-args", "-r", "chat:=renamed"])
    got: list[int] = []
    batches: list[int] = []
    idles: list[float] = []
    threads: set[str] = set()

    def on_message(m: Int64) -> None:
        threads.add(threading.current_thread().name)
        if m.data == 13:
            raise ValueError("unlucky")
        got.append(m.data)

    fs = FastSubscription(owner, Int64, "chat", 50, on_message,  # reliable, deep: this is about delivery
                          after_batch=lambda: batches.append(len(got)),
                          on_idle=lambda: idles.append(time.monotonic()), idle_timeout=0.2)
    assert fs.sub.topic_name == "/ns/renamed"
    pub = observer.node.create_publisher(Int64, "/ns/renamed", 50)
    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
        assert wait_for(lambda: len(idles) >= 2, 5.0)  # silence: the idle hook runs, about every 0.2 s
        assert 0.15 < idles[1] - idles[0] < 1.0
        t_first = time.monotonic()
        for i in range(30):
            pub.publish(Int64(data=i))
            time.sleep(0.005)
        t_last = time.monotonic()
        assert wait_for(lambda: len(got) >= 29, 5.0)
        assert got == [i for i in range(30) if i != 13]  # in order; the failing message is skipped
        assert fs.errors == 1
        assert batches and batches[-1] == 29 and batches == sorted(batches)
        assert threads == {"owner_data"}  # not the executor's thread
        assert not [t for t in idles if t_first + 0.2 < t < t_last]  # never silent for 0.2 s meanwhile
    finally:
        fs.close()
    for i in range(100, 110):
        pub.publish(Int64(data=i))
    time.sleep(0.3)
    assert max(got) < 100
    # close() leaves the DDS entities to destroy(): a stopping node closes first, destroys last
    assert pub.get_subscription_count() == 1
    fs.destroy()
    fs.destroy()  # once is enough; again is harmless
    assert wait_for(lambda: pub.get_subscription_count() == 0, 10.0)
    owner.destroy_node()
