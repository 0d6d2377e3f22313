"""emg_features as a real process, fed EmgArray chunks from here: one lost chunk is concealed
(frames continue on the hop grid, no reset, the gap counted on /diagnostics); a gap longer than
conceal_max resets the stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

from emg_rcnn_ros.core.config import FeatureConfig
from emg_rcnn_ros.core.frames import FrameLayout
from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.share import executable_path

from .conftest import wait_for

pytestmark = pytest.mark.ros

RATE, CHUNK, HOP = 2000.0, 20, 40


def test_a_lost_chunk_is_concealed_and_a_long_gap_resets(ros_env, observer) -> None:
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray
    from emg_rcnn_ros_msgs.msg import EmgArray, EmgFeatures
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from emg_rcnn_ros.nodes.convert import emg_array

    x = simulate_session(SimConfig(rate=RATE, channels=4, seed=3), 3.0)["emg"]
    frames: list[int] = []
    diags: dict[str, str] = {}

    def on_diag(m) -> None:
        for s in m.status:
            if s.name.endswith("emg_features"):
                diags.update({kv.key: kv.value for kv in s.values})

    qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.BEST_EFFORT)
    observer.node.create_subscription(EmgFeatures, "emg/features", lambda m: frames.append(int(m.sequence)), qos)
    observer.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    pub = observer.node.create_publisher(EmgArray, "emg/raw", QoSProfile(depth=500))
    proc = subprocess.Popen([str(executable_path("emg_features"))], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0, 60.0)
        time.sleep(0.5)
        lost = {40, 90, 91, 92, 93, 94, 95}  # chunk 40 (10 ms) alone; chunks 90-95 (60 ms > conceal_max 50 ms)
        for k in range(len(x) // CHUNK):
            if k not in lost:
                pub.publish(emg_array(x[k * CHUNK:(k + 1) * CHUNK], RATE, k * CHUNK, 10**9 + k * 10**7, "emg",
                                      ["a", "b", "c", "d"]))
            # At the amplifier's own pace (10 ms a chunk): the node's 50-chunk queue then covers
            # 0.5 s of starvation on a loaded machine. Faster, a starved node lost runs of chunks
            # longer than conceal_max, each another reset (4 instead of 1 in a loaded CI run).
            time.sleep(CHUNK / RATE)
        # The dropped chunk, and any the best-effort transport lost on a loaded machine, are concealed.
        assert wait_for(lambda: int(diags.get("concealed_gaps", 0)) >= 1 and diags.get("resets") == "1", 10.0), diags
    finally:
        proc.terminate()
        proc.wait(30)
    # Read against the sample index of each frame's last sample, so that a frame the observer's
    # best-effort subscription loses on a loaded machine cannot fail the test.
    seq = np.unique(frames)
    window = FrameLayout.build(FeatureConfig(), RATE).window_n  # the default window: a reset waits for a new one
    assert np.all(np.diff(seq[seq < 90 * CHUNK]) % HOP == 0)  # one hop grid through the concealed chunk
    # Frames continue over the lost chunk (samples 800-819); a reset would leave none before 1219.
    assert len(seq[(seq >= 40 * CHUNK) & (seq < 40 * CHUNK + 4 * HOP)]) >= 2, seq
    # The 60 ms gap (samples 1800-1919) is not concealed: nothing ends in it or in the new window.
    assert not np.any((seq >= 90 * CHUNK) & (seq < 96 * CHUNK + window - 1)), seq
    assert np.any(seq >= 96 * CHUNK + window - 1)  # and the stream resumes after it
    assert diags["resets"] == "1", diags
    concealed = int(diags["concealed_samples"])
    assert concealed >= CHUNK and concealed % CHUNK == 0, diags  # whole 10 ms chunks
