"""The acquisition node end to end on a pseudo-terminal: generic framed protocol and OpenBCI
Cyton, counts converted to volts, sequence and stamps, unplug and replug without a restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.drivers.protocols import cyton_scale, encode_cyton, encode_framed

from .conftest import executable, transition, wait_for
from .test_drivers import Pty

pytestmark = pytest.mark.ros


def _start(env: dict, *params: str) -> subprocess.Popen:
    """The node as a process; its output is collected in `proc.lines` (shown when a step fails)."""
    import threading

    args = [executable("emg_acquisition"), "--ros-args"]
    for p in params:
        args += ["-p", p]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.lines = []
    threading.Thread(target=lambda: proc.lines.extend(proc.stdout), daemon=True).start()
    return proc


def _raw_sub(observer, store: list) -> None:
    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    # Best effort like the publisher, deep enough for the bursts a test writes at once.
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
    observer.node.create_subscription(EmgArray, "emg/raw", store.append, qos)


def _connected_sub(observer, store: list) -> None:
    """Records the acquisition node's 'connected' diagnostic: pyserial flushes input on open, so
    bytes must be written only once the port is open."""
    from diagnostic_msgs.msg import DiagnosticArray

    def cb(msg) -> None:
        for st in msg.status:
            if st.name.endswith("emg_acquisition"):
                store.append({kv.key: kv.value for kv in st.values}.get("connected"))

    observer.node.create_subscription(DiagnosticArray, "/diagnostics", cb, 10)


def test_serial_driver_node_with_unplug_and_replug(ros_env, observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    pty = Pty(tmp_path / "ttyEMG")
    msgs: list = []
    connected: list = []
    _raw_sub(observer, msgs)
    _connected_sub(observer, connected)
    proc = _start(ros_env, "driver:=serial", f"port:={pty.link}", "channels:=2", "sample_rate:=1000.0",
                  "chunk_duration:=0.01", "gain:=100.0", "vref:=2.5", "read_timeout:=0.05",
                  "reconnect_max_backoff:=0.2")
    try:
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_CONFIGURE), "".join(proc.lines)
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE), "".join(proc.lines)
        assert wait_for(lambda: connected[-1:] == ["True"], 10.0)
        counts = np.stack([np.arange(-50, 50), np.arange(50, -50, -1)], axis=1) * 300  # 100 samples, 2 channels
        for k in range(0, 100, 5):  # paced as a device sends them: 5 samples every 5 ms
            pty.write(encode_framed(k, counts[k : k + 5], 2))
            time.sleep(0.005)
        assert wait_for(lambda: sum(m.num_samples for m in msgs) >= 100, 10.0)
        got = np.concatenate([np.asarray(m.data).reshape(m.num_samples, 2) for m in msgs])[:100]
        np.testing.assert_allclose(got, counts * 2.5 / 100.0 / 32767, rtol=1e-6)
        assert [m.sequence for m in msgs[:10]] == list(range(0, 100, 10))
        assert all(m.num_samples == 10 and m.sample_rate == 1000.0 for m in msgs[:10])
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs[:10]]
        # 10 samples at 1 kHz. The stamps come from the clock fitted to the arrivals (drivers/clock.py):
        # always increasing; while the first arrivals settle the line they may be compressed.
        steps = np.diff(stamps)
        assert np.all(steps > 0) and abs(np.median(steps) - 10_000_000) < 2_000_000, steps
        # Unplug and replug: the node keeps running and the stream resumes with a later sequence.
        pty.unplug()
        assert wait_for(lambda: connected[-1:] == ["False"], 10.0)
        assert proc.poll() is None
        pty.plug()
        n_before, last_seq = len(msgs), msgs[-1].sequence
        assert wait_for(lambda: connected[-1:] == ["True"], 10.0)
        for k in range(0, 100, 5):
            pty.write(encode_framed(k, counts[k : k + 5], 2))
        assert wait_for(lambda: len(msgs) >= n_before + 10, 10.0)
        assert msgs[n_before].sequence > last_seq
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        pty.unplug()
    out = "".join(proc.lines)
    assert "Traceback" not in out, out


def test_openbci_cyton_node_starts_the_stream_and_scales_counts(ros_env, observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    pty = Pty(tmp_path / "ttyCyton")
    msgs: list = []
    _raw_sub(observer, msgs)
    proc = _start(ros_env, "driver:=openbci_cyton", f"port:={pty.link}", "gain:=24.0", "chunk_duration:=0.02")
    try:
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_CONFIGURE), "".join(proc.lines)
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE), "".join(proc.lines)
        import os
        import select

        assert select.select([pty.master], [], [], 5.0)[0], "the node never sent the start command"
        assert b"b" in os.read(pty.master, 16)
        counts = np.arange(8) * 1000 - 3000
        pty.write(b"".join(encode_cyton(k, counts) for k in range(20)))
        assert wait_for(lambda: sum(m.num_samples for m in msgs) >= 20, 10.0)
        m = msgs[0]
        assert m.sample_rate == 250.0 and m.num_samples == 5 and len(m.channel_names) == 8
        np.testing.assert_allclose(np.asarray(m.data).reshape(5, 8)[0], counts * cyton_scale(24.0), rtol=1e-6)
    finally:
        proc.terminate()
        proc.wait(10)
        pty.unplug()
