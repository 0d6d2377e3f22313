"""The command path with real node processes, the simulated amplifier and a device in the loop
(test/device_sim.py: a process that follows the commands with a lag, or is stuck), as a safety
reviewer would drive it. emg_command decides what reaches the motor. Every test judges the whole
command stream as published, never pieces split at restarts: commands start at the device's measured
position, no step between consecutive commands exceeds the velocity limit, they stop with a reason on
/diagnostics, resume without a snap, and a device that does not follow latches a fault that only
~/reset clears."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.share import write_params

from .conftest import Launched, transition, trigger, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

P = 0.02  # command period: one per 20 ms frame
VMAX, AMAX = 0.5, 2.0
LOWER, UPPER = [-0.6, 0.2], [0.6, 1.6]
MEASURED = [0.55, 1.55]  # far from where the estimates are
MOVED = [-0.5, 0.3]  # where the device was moved while commands were stopped


JOINTS = ["wrist_flexion", "elbow_flexion"]
DEVICE = Path(__file__).with_name("device_sim.py")


def _params(tmp_path: Path, command: dict, acquisition: dict | None = None) -> Path:
    return write_params(tmp_path / "params.yaml", acquisition=acquisition or {}, command={
        "controller_joints": JOINTS, "position_min": LOWER, "position_max": UPPER,
        "max_velocity": [VMAX, VMAX], "max_acceleration": [AMAX, AMAX], "smoothing_cutoff": 0.0,
        "measured_state_topic": "/arm/joint_states", **command})


class Device:
    """test/device_sim.py as its own process: follows the commands (first-order lag) or is stuck."""

    def __init__(self, env: dict[str, str], mode: str, start: list[float] = MEASURED, lag: float = 0.05) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, str(DEVICE), "--mode", mode, "--joints", *JOINTS,
                                      "--start", *map(str, start), "--lag", str(lag)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        self.proc.terminate()
        return self.proc.communicate(timeout=30)[0]


class Rig:
    """The test's side of the device: publishes the measured joint state, records commands and
    the command node's diagnostics."""

    def __init__(self, observer, measured: list[float] | None = MEASURED, commands: bool = True,
                 follow: bool = False) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.lock = threading.Lock()
        self.cmds: list[tuple[float, list[float]]] = []
        self.diags: list[tuple[float, int, str]] = []
        self._measured = measured
        self.follow, self.put_at = follow, 0.0
        node = observer.node
        if commands:
            node.create_subscription(Float64MultiArray, "arm/commands", self._on_cmd, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        pub = node.create_publisher(JointState, "/arm/joint_states", 10)

        def tick() -> None:
            at = self.measured
            with self.lock:  # a device that follows exactly: at the last command since it was put somewhere
                if self.follow and self.cmds and self.cmds[-1][0] > self.put_at and at is not None:
                    at = self.cmds[-1][1]
            if at is not None:  # elbow first: matched by name, not by order
                pub.publish(JointState(name=["elbow_flexion", "wrist_flexion"], position=[at[1], at[0]]))

        node.create_timer(0.01, tick)

    @property
    def measured(self) -> list[float] | None:
        return self._measured

    @measured.setter
    def measured(self, where: list[float] | None) -> None:
        """The device put somewhere by hand (None: no measured state at all)."""
        with self.lock:
            self._measured, self.put_at = where, time.monotonic()

    def _on_cmd(self, m) -> None:
        with self.lock:
            self.cmds.append((time.monotonic(), list(m.data)))

    def _on_diag(self, m) -> None:
        for s in m.status:
            if s.name.endswith("emg_command"):
                with self.lock:
                    self.diags.append((time.monotonic(), int.from_bytes(s.level, "little"), s.message))

    def commands(self) -> np.ndarray:
        with self.lock:
            return np.array([c[1] for c in self.cmds])

    def times(self) -> np.ndarray:
        with self.lock:
            return np.array([c[0] for c in self.cmds])

    def diag_since(self, t: float, text: str) -> bool:
        with self.lock:
            return any(d[0] >= t and d[1] > 0 and text in d[2] for d in self.diags)


def _check_limits(cmds: np.ndarray, moved_to: tuple[list[float], ...] = ()) -> None:
    """The whole stream as published: within the position limits, and no step between consecutive
    commands over the velocity limit, across stops and restarts too. The one exception: a start at
    a position the device was moved to by hand while commands were stopped (`moved_to`): the
    command then is where the device is."""
    assert len(cmds) > 1
    assert np.all(cmds >= np.array(LOWER) - 1e-9) and np.all(cmds <= np.array(UPPER) + 1e-9)
    step = np.abs(np.diff(cmds, axis=0)).max(axis=1)
    at_moved = np.zeros(len(cmds) - 1, bool)
    for m in moved_to:
        at_moved |= np.all(cmds[1:] == np.array(m), axis=1)
    big = (step > VMAX * P + 1e-9) & ~at_moved
    assert not big.any(), (step.max(), np.nonzero(big)[0][:5], cmds[np.nonzero(big)[0][:1] + 1])


def test_device_that_follows_gets_continuous_commands_and_a_restart_resumes_without_a_snap(
        small_model: Path, ros_env, observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    rig = Rig(observer, measured=None)  # the device process publishes the measured state
    device = Device(ros_env, "follow")
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={_params(tmp_path, {})}")
    try:
        assert wait_for(lambda: len(rig.cmds) > 20, 90.0), run.text()
        t0 = time.monotonic()
        assert wait_for(lambda: time.monotonic() - t0 > 10.0, 11.0)
        first, clean = rig.commands()[0], rig.times()
        assert np.allclose(first, MEASURED), first  # where the device is, not where the estimate is
        clean = clean[clean >= t0]
        # A clean signal and a device that follows: the commands flow. Silences are measured in this
        # process and counted against the node's own stops (its diagnostics), which must be none here.
        gaps = np.diff(clean)
        assert not rig.diag_since(t0, "signal quality"), rig.diags[-3:]
        assert gaps.max() < 0.2 or rig.diag_since(t0, "no estimate"), gaps.max()
        # The amplifier stops for 1 s and starts again: commands stop with the reason, and resume from
        # the last command (the device followed it), not from wherever a ramp would restart.
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
        t_stop = time.monotonic()
        assert wait_for(lambda: rig.diag_since(t_stop, "no estimate"), 10.0), run.text()
        n_stopped = len(rig.cmds)
        time.sleep(1.0)
        assert len(rig.cmds) <= n_stopped + 1  # stopped, not sent on
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: len(rig.cmds) > n_stopped + 50, 60.0), run.text()
        assert "commands start at the last command" in run.text(), run.text()[-3000:]
        _check_limits(rig.commands())
        assert "tracking fault" not in run.text()
    finally:
        device.stop()  # first: a failing assertion below must not leave the device process running
        assert run.stop() == 0, run.text()


def test_device_that_is_stuck_latches_a_tracking_fault_until_reset(small_model: Path, ros_env, observer,
                                                                   tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    rig = Rig(observer, measured=None)
    device = Device(ros_env, "stuck")  # stays at MEASURED
    # A small threshold: the estimates of the small model may land anywhere, and the latch, not the
    # threshold's value, is under test (the probe in bench/command_probe.py runs the defaults).
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={_params(tmp_path, {'max_tracking_error': 0.03})}")
    try:
        assert wait_for(lambda: "tracking fault" in run.text(), 90.0), run.text()
        assert wait_for(lambda: rig.diag_since(0.0, "tracking fault"), 10.0), rig.diags[-3:]
        cmds = rig.commands()
        assert np.allclose(cmds[0], MEASURED), cmds[0]
        _check_limits(cmds)
        # Latched: no restart, whatever the estimates do, also across an amplifier restart.
        n = len(rig.cmds)
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE)
        time.sleep(3.0)
        assert len(rig.cmds) == n, "commands restarted after a latched tracking fault"
        # ~/reset clears it: commands start again at the device, and latch again.
        assert trigger(observer, "/emg_command/reset").success
        assert wait_for(lambda: len(rig.cmds) > n + 5, 30.0), run.text()
        assert np.allclose(rig.commands()[n], MEASURED)
        _check_limits(rig.commands()[n:])
    finally:
        device.stop()  # first: a failing assertion below must not leave the device process running
        assert run.stop() == 0, run.text()


def test_watchdog_fires_under_use_sim_time_without_a_clock(small_model: Path, ros_env, observer,
                                                           tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    rig = Rig(observer)
    params = _params(tmp_path, {"use_sim_time": True})
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={params}")
    try:
        assert wait_for(lambda: len(rig.cmds) > 20, 90.0), run.text()
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
        t_stop = time.monotonic()
        assert wait_for(lambda: "no estimate for" in run.text(), 10.0), run.text()
        assert wait_for(lambda: rig.diag_since(t_stop, "no estimate"), 10.0), run.text()
    finally:
        assert run.stop() == 0, run.text()


@pytest.mark.parametrize("policy", ["hold", "safe"])
def test_quality_gate_stops_or_ramps_to_safe_names_the_channel_and_resumes(policy: str, small_model: Path, ros_env,
                                                                          observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    # hold: a device at the last command (commands resume from it); safe: a device that stays where it
    # is put, moved by hand during a stop (commands restart there), not tracked by this test.
    rig = Rig(observer, follow=policy == "hold")
    safe = [0.0, 0.9]
    params = _params(tmp_path, {"quality_policy": policy, "safe_posture": safe,
                                **({"max_tracking_error": 10.0} if policy == "safe" else {})})
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={params}")
    client = observer.node.create_client(SetParameters, "/emg_acquisition/set_parameters")

    def fault(text: str) -> None:
        assert client.wait_for_service(timeout_sec=30.0)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text)
        fut = client.call_async(SetParameters.Request(parameters=[Parameter(name="sim_fault", value=value)]))
        assert wait_for(fut.done, 30.0) and fut.result().results[0].successful, fut.result()

    faults = [("rail:1", "emg1: clipped"), ("flat:2", "emg2: flat line"), ("off:3", "emg3: electrode off"),
              ("mains:4", "emg4: mains hum")]
    try:
        assert wait_for(lambda: len(rig.cmds) > 40, 90.0), run.text()
        for spec, named in faults if policy == "hold" else faults[:1]:
            t_fault = time.monotonic()
            fault(spec)
            assert wait_for(lambda: rig.diag_since(t_fault, named), 10.0), (spec, rig.diags[-3:])  # noqa: B023
            if policy == "hold":
                n = len(rig.cmds)
                time.sleep(1.0)
                assert len(rig.cmds) <= n + 2, spec  # held: no new commands
            else:
                # A gap in the input, on the way or at the safe posture, and the device moved meanwhile:
                # the ramp to safe starts again from where the device is (a loaded machine makes such gaps).
                assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
                time.sleep(0.5)
                rig.measured = MOVED
                assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE)

                def moved_to_safe() -> bool:  # started again at the moved device, and ends at safe
                    cmds = rig.commands()
                    return bool(np.all(cmds == np.array(MOVED), axis=1).any()) and np.allclose(cmds[-1], safe)

                assert wait_for(moved_to_safe, 30.0), rig.commands()[-3:]
                n = len(rig.cmds)
                time.sleep(1.0)
                assert len(rig.cmds) == n  # at the safe posture, it stops
            fault("")
            n = len(rig.cmds)
            assert wait_for(lambda: len(rig.cmds) > n + 20, 30.0), (spec, run.text()[-2000:])  # noqa: B023
        _check_limits(rig.commands(), (MOVED,))
    finally:
        assert run.stop() == 0, run.text()


def test_a_raising_transition_callback_fails_the_transition_with_a_log_line(small_model: Path, ros_env,
                                                                            tmp_path: Path) -> None:
    params = _params(tmp_path, {"measured_state_topic": "not a valid topic!"})
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={params}")
    code = run.proc.wait(60)
    text = run.text()
    assert code != 0, text
    assert "configure failed" in text and "not a valid topic!" in text, text
    assert "/emg_command: transition 'configure' failed" in text


def test_trajectory_commands_for_joint_trajectory_controllers(small_model: Path, ros_env, observer,
                                                              tmp_path: Path) -> None:
    from trajectory_msgs.msg import JointTrajectory

    Rig(observer, commands=False)  # the measured state
    got: list = []
    observer.node.create_subscription(JointTrajectory, "arm/commands", got.append, 50)
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={_params(tmp_path, {'command_type': 'trajectory', 'max_tracking_error': 10.0})}")
    try:
        assert wait_for(lambda: len(got) > 30, 90.0), run.text()
    finally:
        assert run.stop() == 0, run.text()
    assert all(list(m.joint_names) == ["wrist_flexion", "elbow_flexion"] and len(m.points) == 1 for m in got)
    assert all(m.points[0].time_from_start.sec == 0 and m.points[0].time_from_start.nanosec == 20_000_000 for m in got)
    pos = np.array([list(m.points[0].positions) for m in got])
    assert np.array_equal(pos[0], MEASURED), pos[:3]
    _check_limits(pos)


def test_replay_loop_stamps_going_backwards_restart_the_ramp(small_model: Path, ros_env, observer,
                                                             tmp_path: Path) -> None:
    """`emg-rcnn replay --loop` of a 4 s recording: at every loop the stream's stamps and sequence go
    back by 4 s. The estimator restarts its history, the command node its ramp (from the last
    command or the device), and no step breaks the limits."""
    import subprocess

    from emg_rcnn_ros_msgs.msg import EmgFeatures
    from lifecycle_msgs.msg import Transition
    from rclpy.qos import qos_profile_sensor_data

    from emg_rcnn_ros.bags import write_session_bag
    from emg_rcnn_ros.core.sessions import Session
    from emg_rcnn_ros.share import executable_path

    d = simulate_session(SimConfig(rate=2000.0, channels=8, seed=5, subject_seed=0), 4.0)
    bag = write_session_bag(Session(d["emg"].astype(float), 2000.0, d["joint_position"], d["joint_time"],
                                    list(map(str, d["joint_names"])), list(map(str, d["channel_names"]))),
                            tmp_path / "bag", start_ns=10**12)
    rig = Rig(observer, follow=True)  # a device at the last command: every restart resumes from it
    loops: list[int] = []  # sequence numbers at which the feature stream went back (seen by the test)
    last: list[int] = []

    def on_features(m: EmgFeatures) -> None:
        if last and m.sequence <= last[-1]:
            loops.append(m.sequence)
        last[:] = [m.sequence]

    observer.node.create_subscription(EmgFeatures, "/emg/features", on_features, qos_profile_sensor_data)
    params = _params(tmp_path, {"command_topic": "arm/commands", "max_tracking_error": 10.0})
    procs = [subprocess.Popen([str(executable_path(exe)), "--ros-args", "--params-file", str(params), "-p",
                               f"model_path:={small_model}"], env=ros_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for exe in ("emg_features", "emg_estimator")]
    procs.append(subprocess.Popen([str(executable_path("emg_command")), "--ros-args", "--params-file", str(params)],
                                  env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    replay = None
    try:
        for node in ("/emg_estimator", "/emg_command"):
            assert transition(observer, node, Transition.TRANSITION_CONFIGURE)
            assert transition(observer, node, Transition.TRANSITION_ACTIVATE)
        replay = subprocess.Popen([str(executable_path("emg-rcnn")), "replay", str(bag), "--loop"], env=ros_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Two loops back, and runs restarted. Counting runs alone is not enough: on a loaded machine
        # a late frame also stops and restarts the commands (the input watchdog).
        assert wait_for(lambda: len(loops) >= 2 and len(rig.cmds) > 100, 60.0), (loops, len(rig.cmds))
    finally:
        if replay is not None:
            replay.terminate()
            replay.wait(30)
        for p in procs:
            p.terminate()
        out = "".join(p.communicate(timeout=30)[0] for p in procs)
    assert re.search(r"stream went backwards \(sequence \d+ -> \d+, stamp -[0-9.]+ s\)", out), out[-3000:]
    assert re.search(r"estimate stamps went backwards \(-[0-9.]+ s\): the ramp restarts", out), out[-3000:]
    _check_limits(rig.commands())
