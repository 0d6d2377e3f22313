"""`emg-rcnn replay` publishes a bag with its original timing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.bags import write_session_bag
from emg_rcnn_ros.core.sessions import Session

from .conftest import executable, wait_for

pytestmark = pytest.mark.ros


def test_replay_keeps_the_recorded_intervals(ros_env, observer, tmp_path: Path) -> None:
    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    rate, seconds = 2000.0, 3.0
    t = np.arange(0, seconds, 0.01)
    s = Session(np.random.default_rng(0).normal(0, 1e-4, (int(rate * seconds), 4)), rate,
                np.stack([np.sin(t)], axis=1), t, ["elbow"], ["a", "b", "c", "d"])
    write_session_bag(s, tmp_path / "bag", start_ns=1_000_000_000)
    got: list[tuple[int, int]] = []
    joints: list = []
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
    observer.node.create_subscription(EmgArray, "emg/raw", lambda m: got.append((time.monotonic_ns(), m.sequence)),
                                      qos)
    observer.node.create_subscription(JointState, "emg/ground_truth", joints.append, 100)
    proc = subprocess.run([executable("emg-rcnn"), "replay", str(tmp_path / "bag")], env=ros_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(lambda: len(got) >= 300, 5.0), len(got)
    seqs = [g[1] for g in got]
    assert seqs == list(range(0, int(rate * seconds), 20))  # every chunk, in order
    assert len(joints) == len(t)
    # Recorded: one chunk every 10 ms. Replayed: the same pace (the median interval, which a busy
    # moment on a loaded machine does not move) and the same length overall.
    gaps_ms = np.diff([g[0] for g in got]) * 1e-6
    assert abs(np.median(gaps_ms) - 10.0) < 1.0, np.percentile(gaps_ms, [5, 50, 95])
    assert abs(gaps_ms.sum() - 2990.0) < 150.0, gaps_ms.sum()  # 299 intervals of 10 ms
