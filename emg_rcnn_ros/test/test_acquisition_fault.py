"""A fault in the acquisition node's pump thread is never silent: ERROR on /diagnostics, the
lifecycle goes through error processing to unconfigured, and the serial port is released (another
program can open it exclusively). Real rclpy and a real pty; the fault is injected into the
driver's read (as a broken driver would raise), not into the node under test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial

from .conftest import wait_for
from .test_drivers import Pty

pytestmark = pytest.mark.ros


def test_pump_thread_death_is_an_error_transition_that_releases_the_port(monkeypatch, tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from lifecycle_msgs.msg import State
    from rclpy.executors import SingleThreadedExecutor

    from emg_rcnn_ros.nodes.acquisition import Acquisition

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    pty = Pty(tmp_path / "ttyEMG")
    rclpy.init(args=["--ros-args", "-p", "driver:=serial", "-p", f"port:={pty.link}", "-p", "channels:=2",
                     "-p", "sample_rate:=1000.0"])
    try:
        node = Acquisition()
        diags: list[DiagnosticStatus] = []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.extend(m.status), 10)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        assert node.trigger_configure() is not None and _label(node) == "inactive"
        node.trigger_activate()
        assert _label(node) == "active"
        assert wait_for(lambda: node.source.connected, 5.0)
        with pytest.raises(serial.SerialException):  # ours, exclusively
            serial.Serial(str(pty.link), exclusive=True).close()

        def broken(timeout: float):
            raise RuntimeError("driver bug")

        node.source.read = broken
        end = time.monotonic() + 10.0
        while time.monotonic() < end and _label(node) != "unconfigured":
            ex.spin_once(timeout_sec=0.1)
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        end = time.monotonic() + 5.0
        while time.monotonic() < end and not any(d.level == DiagnosticStatus.ERROR for d in diags):
            ex.spin_once(timeout_sec=0.1)
        err = [d for d in diags if d.level == DiagnosticStatus.ERROR]
        assert err and "driver bug" in err[-1].message, [d.message for d in diags]
        serial.Serial(str(pty.link), exclusive=True).close()  # released
        node.trigger_configure()
        assert _label(node) == "inactive"  # and it can be configured again
        ex.shutdown(timeout_sec=0)
        node.close()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        pty.unplug()


def _label(node) -> str:
    return node._state_machine.current_state[1]
