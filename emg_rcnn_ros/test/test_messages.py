"""The generated messages import and cross a real process boundary through rclpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import wait_for

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent("""
    import sys, time, rclpy
    from rclpy.qos import qos_profile_sensor_data
    from emg_rcnn_ros_msgs.msg import EmgArray, EmgFeatures
    rclpy.init()
    n = rclpy.create_node("talker")
    pa = n.create_publisher(EmgArray, "emg/raw", qos_profile_sensor_data)
    pf = n.create_publisher(EmgFeatures, "emg/features", qos_profile_sensor_data)
    a = EmgArray(sample_rate=2000.0, channel_names=["c0", "c1", "c2"], num_samples=4,
                 data=[float(i) * 1e-6 for i in range(12)], sequence=123456789012)
    a.header.stamp.sec, a.header.stamp.nanosec = 17, 500
    f = EmgFeatures(sample_rate=2000.0, num_channels=2, num_bins=3, frequencies=[30.0, 60.0, 90.0],
                    data=[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], window_duration=0.2, sequence=42)
    end = time.monotonic() + 20
    while time.monotonic() < end and rclpy.ok():
        pa.publish(a); pf.publish(f)
        rclpy.spin_once(n, timeout_sec=0.05)
""")


def test_messages_round_trip_between_processes(ros_env: dict[str, str], observer) -> None:
    from emg_rcnn_ros_msgs.msg import EmgArray, EmgFeatures
    from rclpy.qos import qos_profile_sensor_data

    got: dict[str, object] = {}
    observer.node.create_subscription(EmgArray, "emg/raw", lambda m: got.setdefault("a", m), qos_profile_sensor_data)
    observer.node.create_subscription(EmgFeatures, "emg/features", lambda m: got.setdefault("f", m),
                                      qos_profile_sensor_data)
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_env)
    try:
        assert wait_for(lambda: "a" in got and "f" in got, 20.0), "no message crossed the process boundary"
    finally:
        proc.terminate()
        proc.wait(10)
    a, f = got["a"], got["f"]
    assert a.header.stamp.sec == 17 and a.header.stamp.nanosec == 500
    assert a.sample_rate == 2000.0 and list(a.channel_names) == ["c0", "c1", "c2"] and a.num_samples == 4
    assert a.sequence == 123456789012
    np.testing.assert_allclose(np.asarray(a.data).reshape(4, 3), np.arange(12).reshape(4, 3) * 1e-6, rtol=1e-6)
    assert (f.num_channels, f.num_bins, f.sequence) == (2, 3, 42)
    np.testing.assert_allclose(f.frequencies, [30, 60, 90])
    np.testing.assert_allclose(np.asarray(f.data).reshape(2, 3), -np.arange(1, 7).reshape(2, 3))
