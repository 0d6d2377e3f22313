"""A device in the loop, for tests: a process that takes position commands (Float64MultiArray) and
publishes its joint state at 100 Hz, as a position controller's joint_states would.

    python device_sim.py --mode follow|stuck --joints a b --start 0.5 1.5 [--lag 0.05]
                         [--commands arm/commands] [--state /arm/joint_states]

follow: each joint moves toward the last command as a first-order lag (time constant --lag s);
stuck: the joints stay at --start whatever is commanded. Runs until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["follow", "stuck"], required=True)
    ap.add_argument("--joints", nargs="+", required=True)
    ap.add_argument("--start", nargs="+", type=float, required=True)
    ap.add_argument("--lag", type=float, default=0.05)
    ap.add_argument("--commands", default="arm/commands")
    ap.add_argument("--state", default="/arm/joint_states")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    rclpy.init()
    node = rclpy.create_node("device_sim")
    pos = np.array(a.start, float)
    goal = pos.copy()
    last = [time.monotonic()]

    def on_cmd(msg: Float64MultiArray) -> None:
        if len(msg.data) == len(goal):
            goal[:] = msg.data

    def tick() -> None:
        now = time.monotonic()
        if a.mode == "follow":
            pos[:] += (goal - pos) * (1.0 - np.exp(-(now - last[0]) / a.lag))
        last[0] = now
        node_pub.publish(JointState(name=a.joints, position=[float(v) for v in pos]))

    node.create_subscription(Float64MultiArray, a.commands, on_cmd, 10)
    node_pub = node.create_publisher(JointState, a.state, 10)
    node.create_timer(0.01, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
