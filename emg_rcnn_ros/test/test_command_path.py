"""The command path with real node processes and the simulated amplifier, as a safety reviewer
would drive it: the device's measured state (published here, as a controller's joint_states would
be) starts far from the estimate; the amplifier stops and restarts; the watchdog runs under
use_sim_time with no /clock; electrode faults are injected into the simulated stream; a
transition callback raises. Commands must start at the measured position, keep the velocity and
acceleration limits between consecutive commands, stop with a reason on /diagnostics, and resume
from the measured position."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.share import write_params

from .conftest import Launched, transition, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

P = 0.02  # command period: one per 20 ms frame
VMAX, AMAX = 0.5, 2.0
LOWER, UPPER = [-0.6, 0.2], [0.6, 1.6]
MEASURED = [0.55, 1.55]  # far from where the estimates are
MOVED = [-0.5, 0.3]  # where the device was moved while commands were stopped


def _params(tmp_path: Path, estimator: dict, acquisition: dict | None = None) -> Path:
    return write_params(tmp_path / "params.yaml", acquisition=acquisition or {}, estimator={
        "controller_joints": ["wrist_flexion", "elbow_flexion"], "position_min": LOWER, "position_max": UPPER,
        "max_velocity": [VMAX, VMAX], "max_acceleration": [AMAX, AMAX], "smoothing_cutoff": 0.0,
        "measured_state_topic": "/arm/joint_states", **estimator})


class Rig:
    """The test's side of the device: publishes the measured joint state, records commands and
    the estimator's diagnostics."""

    def __init__(self, observer, measured: list[float] | None = MEASURED, commands: bool = True) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.lock = threading.Lock()
        self.cmds: list[tuple[float, list[float]]] = []
        self.diags: list[tuple[float, int, str]] = []
        self.measured = measured
        node = observer.node
        if commands:
            node.create_subscription(Float64MultiArray, "arm/commands", self._on_cmd, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        pub = node.create_publisher(JointState, "/arm/joint_states", 10)

        def tick() -> None:
            if self.measured is not None:  # elbow first: matched by name, not by order
                pub.publish(JointState(name=["elbow_flexion", "wrist_flexion"],
                                       position=[self.measured[1], self.measured[0]]))

        node.create_timer(0.01, tick)

    def _on_cmd(self, m) -> None:
        with self.lock:
            self.cmds.append((time.monotonic(), list(m.data)))

    def _on_diag(self, m) -> None:
        for s in m.status:
            if s.name.endswith("emg_estimator"):
                with self.lock:
                    self.diags.append((time.monotonic(), int.from_bytes(s.level, "little"), s.message))

    def commands(self) -> np.ndarray:
        with self.lock:
            return np.array([c[1] for c in self.cmds])

    def diag_since(self, t: float, text: str) -> bool:
        with self.lock:
            return any(d[0] >= t and d[1] > 0 and text in d[2] for d in self.diags)


def _check_limits(cmds: np.ndarray) -> None:
    """Within the position limits; between consecutive commands within the velocity limit, and the
    velocity changes within the acceleration limit (each run starts at rest)."""
    assert np.all(cmds >= np.array(LOWER) - 1e-9) and np.all(cmds <= np.array(UPPER) + 1e-9)
    v = np.diff(cmds, axis=0) / P
    assert np.all(np.abs(v) <= VMAX + 1e-6), np.abs(v).max(axis=0)
    a = np.diff(np.vstack([np.zeros((1, 2)), v]), axis=0) / P
    assert np.all(np.abs(a) <= AMAX + 1e-4), np.abs(a).max(axis=0)


def _runs(rig: Rig, starts: list[list[float]]) -> list[np.ndarray]:
    """The rig's commands, split into runs (see _split)."""
    return _split(rig.commands(), starts)


def _split(data: np.ndarray, starts: list[list[float]]) -> list[np.ndarray]:
    """Commands split where a run starts again at a measured position (a stop and a restart): the
    same values as published, exactly. Arrival times are not used: a loaded machine bunches them."""
    if not len(data):
        return []
    at_start = np.zeros(len(data), bool)
    for m in starts:
        at_start |= np.all(data == np.array(m), axis=1)
    # A start right after another start at a different position is a restart too: a run stopped after
    # its first command (stale measured state, then an input stop) restarts where the device now is.
    cut = [i for i in range(1, len(data))
           if at_start[i] and (not at_start[i - 1] or not np.array_equal(data[i], data[i - 1]))]
    return np.split(data, cut)


def test_commands_start_at_the_device_ramp_within_limits_and_survive_a_restart(small_model: Path, ros_env,
                                                                             observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition

    rig = Rig(observer)
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={_params(tmp_path, {})}")
    try:
        assert wait_for(lambda: len(rig.cmds) > 60, 90.0), run.text()
        first = rig.commands()[0]
        assert np.allclose(first, MEASURED), first  # where the device is, not where the estimate is
        assert "commands start at the measured position" in run.text()
        # The amplifier stops: commands stop, with the reason on /diagnostics.
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
        t_stop = time.monotonic()
        assert wait_for(lambda: rig.diag_since(t_stop, "no accepted input"), 10.0), run.text()
        n = len(rig.cmds)
        time.sleep(2.0)  # a 2 s gap; then the stream restarts at sequence 0 (backwards) with a jump in stamps
        assert len(rig.cmds) <= n + 1
        rig.measured = MOVED  # the device was moved meanwhile
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: len(rig.cmds) > n + 60, 60.0), run.text()
        runs = _runs(rig, [MEASURED, MOVED])
        assert len(runs) >= 2 and np.array_equal(runs[-1][0], MOVED), runs[-1][:3]  # restarts at the device
        for r in runs:
            _check_limits(r)
        # The estimator itself is cycled: inactive, it sends nothing; active again, it starts at the device.
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_DEACTIVATE)
        n = len(rig.cmds)
        time.sleep(1.0)
        assert len(rig.cmds) <= n + 1
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: len(rig.cmds) > n + 20, 60.0), run.text()
        assert np.array_equal(_runs(rig, [MEASURED, MOVED])[-1][0], MOVED)
        # No measured state: commands stop, and say why.
        rig.measured = None
        t_gone = time.monotonic()
        assert wait_for(lambda: rig.diag_since(t_gone, "measured device state"), 10.0), run.text()
        n = len(rig.cmds)
        time.sleep(1.0)
        assert len(rig.cmds) <= n + 1
    finally:
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
        assert wait_for(lambda: "no accepted EMG features" in run.text(), 10.0), run.text()
        assert wait_for(lambda: rig.diag_since(t_stop, "no accepted input"), 10.0), run.text()
    finally:
        assert run.stop() == 0, run.text()


@pytest.mark.parametrize("policy", ["hold", "safe"])
def test_quality_gate_stops_or_ramps_to_safe_names_the_channel_and_resumes(policy: str, small_model: Path, ros_env,
                                                                          observer, tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    rig = Rig(observer)
    safe = [0.0, 0.9]
    params = _params(tmp_path, {"quality_policy": policy, "safe_posture": safe})
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

                def moved_to_safe() -> bool:  # the newest run starts at the moved device and ends at safe
                    last = _runs(rig, [MEASURED, MOVED])[-1]
                    return np.array_equal(last[0], MOVED) and np.allclose(last[-1], safe)

                assert wait_for(moved_to_safe, 30.0), rig.commands()[-3:]
                n = len(rig.cmds)
                time.sleep(1.0)
                assert len(rig.cmds) == n  # at the safe posture, it stops
            fault("")
            n = len(rig.cmds)
            assert wait_for(lambda: len(rig.cmds) > n + 20, 30.0), (spec, run.text()[-2000:])  # noqa: B023
        for r in _runs(rig, [MEASURED, MOVED]):
            _check_limits(r)
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
    assert "/emg_estimator: transition 'configure' failed" in text


def test_trajectory_commands_for_joint_trajectory_controllers(small_model: Path, ros_env, observer,
                                                              tmp_path: Path) -> None:
    from trajectory_msgs.msg import JointTrajectory

    Rig(observer, commands=False)  # the measured state
    got: list = []
    observer.node.create_subscription(JointTrajectory, "arm/commands", got.append, 50)
    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", "command_topic:=arm/commands",
                   f"params_file:={_params(tmp_path, {'command_type': 'trajectory'})}")
    try:
        assert wait_for(lambda: len(got) > 30, 90.0), run.text()
    finally:
        assert run.stop() == 0, run.text()
    assert all(list(m.joint_names) == ["wrist_flexion", "elbow_flexion"] and len(m.points) == 1 for m in got)
    assert all(m.points[0].time_from_start.sec == 0 and m.points[0].time_from_start.nanosec == 20_000_000 for m in got)
    pos = np.array([list(m.points[0].positions) for m in got])
    # Under load the watchdog may stop and restart the commands: every run starts at the device.
    runs = _split(pos, [MEASURED])
    assert np.array_equal(pos[0], MEASURED), pos[:3]
    for r in runs:
        _check_limits(r)


def test_replay_loop_stamps_going_backwards_restart_the_ramp(small_model: Path, ros_env, observer,
                                                             tmp_path: Path) -> None:
    """`emg-rcnn replay --loop` of a 4 s recording: at every loop the stream's stamps and sequence go
    back by 4 s. Each time the estimator says so, commands start again at the device, and no step
    breaks the limits; the command is never frozen while diagnostics say OK."""
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
    rig = Rig(observer)
    loops: list[int] = []  # sequence numbers at which the feature stream went back (seen by the test)
    last: list[int] = []

    def on_features(m: EmgFeatures) -> None:
        if last and m.sequence <= last[-1]:
            loops.append(m.sequence)
        last[:] = [m.sequence]

    observer.node.create_subscription(EmgFeatures, "/emg/features", on_features, qos_profile_sensor_data)
    params = _params(tmp_path, {"model_path": str(small_model), "command_topic": "arm/commands"})
    procs = [subprocess.Popen([str(executable_path(exe)), "--ros-args", "--params-file", str(params), "-p",
                               f"model_path:={small_model}"], env=ros_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for exe in ("emg_features", "emg_estimator")]
    replay = None
    try:
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_CONFIGURE)
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_ACTIVATE)
        replay = subprocess.Popen([str(executable_path("emg-rcnn")), "replay", str(bag), "--loop"], env=ros_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Two loops back, and runs restarted. Counting runs alone is not enough: on a loaded machine
        # a late frame also stops and restarts the commands (the input watchdog).
        assert wait_for(lambda: len(loops) >= 2 and len(_runs(rig, [MEASURED])) >= 3, 60.0), (loops, len(rig.cmds))
    finally:
        if replay is not None:
            replay.terminate()
            replay.wait(30)
        for p in procs:
            p.terminate()
        out = "".join(p.communicate(timeout=30)[0] for p in procs)
    assert re.search(r"stream went backwards \(sequence \d+ -> \d+, stamp -[0-9.]+ s\)", out), out[-3000:]
    for r in _runs(rig, [MEASURED]):
        _check_limits(r)
