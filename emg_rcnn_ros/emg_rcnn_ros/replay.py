"""Replay a recorded bag on the live topics with its original timing (`emg-rcnn replay`), so the
pipeline runs from a recording on a machine without `ros2 bag`."""

from __future__ import annotations

import time
from pathlib import Path

from .bags import EMG_TYPE, JOINT_TYPE


def replay(bag: Path, rate: float = 1.0, loop: bool = False, namespace: str = "", wait: float = 2.0) -> int:
    """Publish every EmgArray and JointState of the bag (as recorded, serialized) paced by the
    bag's log times scaled by `rate`, after waiting up to `wait` seconds for a subscriber on every
    topic (so that the start of a recording is not lost to discovery). Returns the number of
    messages published."""
    import rclpy
    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import JointState

    if rate <= 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.msgtype in (EMG_TYPE, JOINT_TYPE)]
        events = [(ts, c.topic, c.msgtype, bytes(raw)) for c, ts, raw in reader.messages(connections=conns)]
    if not events:
        raise ValueError(f"{bag}: no EmgArray or JointState messages")
    rclpy.init(args=[])
    node = rclpy.create_node("emg_replay", namespace=namespace or None)
    pubs = {}
    for _, topic, msgtype, _ in events:
        if topic not in pubs:
            if msgtype == EMG_TYPE:
                pubs[topic] = node.create_publisher(EmgArray, topic, qos_profile_sensor_data)
            else:
                pubs[topic] = node.create_publisher(JointState, topic, QoSProfile(depth=100))
    sent = 0
    t0 = time.monotonic()

    def matched() -> bool:
        return all(p.get_subscription_count() for p in pubs.values())

    while time.monotonic() < t0 + wait and not matched():
        time.sleep(0.02)
    # Matched here does not yet mean matched there: the subscriber may still be learning of us, and a
    # best-effort message sent meanwhile is dropped. Give the other side as long as this side took
    # (discovery is slow on a loaded machine on both sides alike), at least 0.5 s.
    if matched():
        time.sleep(min(wait, max(0.5, time.monotonic() - t0)))
    try:
        while True:
            t_bag0, t_wall0 = events[0][0], time.monotonic() + 0.1
            for ts, topic, _, raw in events:
                delay = t_wall0 + (ts - t_bag0) * 1e-9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pubs[topic].publish(raw)
                sent += 1
            if not loop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return sent
