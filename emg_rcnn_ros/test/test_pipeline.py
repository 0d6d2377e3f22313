"""The live pipeline with real node processes: simulated amplifier -> features -> estimator.

Estimates arrive at the hop rate and track the simulator's true angles; lifecycle nodes stay
inactive until activated; a bad model path fails configure; commands respect limits and stop when
the amplifier stops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import Launched, live_metrics, run_live, transition, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CC_FLOOR = 0.6  # live CC against the truth, mean over joints (demo-size model, 8 s of data)


@pytest.fixture(scope="module")
def live_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RCNN of simulated subject 0 (the acquisition node's default subject)."""
    from emg_rcnn_ros.core.bundle import save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.sessions import Session
    from emg_rcnn_ros.core.sim import SimConfig, simulate_session
    from emg_rcnn_ros.core.train import train

    d = simulate_session(SimConfig(rate=2000.0, channels=8, seed=100, subject_seed=0), 60.0)
    s = Session(d["emg"].astype(float), 2000.0, d["joint_position"], d["joint_time"],
                list(map(str, d["joint_names"])), list(map(str, d["channel_names"])))
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(epochs=6), progress=False)
    return save_bundle(tmp_path_factory.mktemp("live") / "model", cfg, model)


def _joint_sub(observer, topic: str, store: list, sensor: bool = True) -> None:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    def cb(m) -> None:
        store.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time_ns(), list(m.position),
                      list(m.name)))

    observer.node.create_subscription(JointState, topic, cb, qos_profile_sensor_data if sensor else 50)


def test_live_estimates_track_truth_at_hop_rate(live_model: Path, ros_env, observer) -> None:
    got, truth, code, text = run_live(observer, ros_env, live_model)
    assert code == 0, text
    # One estimate per 20 ms hop, read from the EMG stamps (not from arrival times, which a loaded
    # machine bunches): every step is a whole number of hops, and most are exactly one.
    steps = np.diff([e[0] for e in got]) * 1e-9
    hops = steps / 0.02
    assert np.all(np.abs(hops - np.round(hops)) < 1e-3) and np.all(hops >= 1 - 1e-3), steps
    assert np.median(hops) == pytest.approx(1.0) and np.mean(np.round(hops) == 1) > 0.8, np.bincount(
        np.round(hops).astype(int))
    assert got[0][3] == ["elbow_flexion", "wrist_flexion"]
    m = live_metrics(got, truth)
    assert m["mean"]["cc"] > CC_FLOOR, m
    assert np.all(np.isfinite([e[2] for e in got]))


def test_lifecycle_nodes_start_inactive(live_model: Path, ros_env, observer) -> None:
    from lifecycle_msgs.srv import GetState

    est: list = []
    _joint_sub(observer, "emg/joint_estimates", est)
    run = Launched(ros_env, f"model_path:={live_model}")
    try:
        for name in ("emg_acquisition", "emg_estimator"):
            client = observer.node.create_client(GetState, f"/{name}/get_state")
            assert client.wait_for_service(timeout_sec=30.0), run.text()
            fut = client.call_async(GetState.Request())
            assert wait_for(fut.done, 10.0)
            assert fut.result().current_state.label == "unconfigured"
        time.sleep(2.0)
        assert est == []  # nothing flows until activated
    finally:
        run.stop()


def test_configure_fails_on_a_bad_model_path(ros_env, tmp_path: Path) -> None:
    run = Launched(ros_env, "autostart:=true", f"model_path:={tmp_path / 'missing'}")
    code = run.proc.wait(60)
    text = run.text()
    assert code != 0
    assert "emg_estimator" in text and "transition 'configure' failed" in text
    assert "no model bundle here" in text


def test_commands_respect_limits_and_stop_with_the_amplifier(live_model: Path, ros_env, observer,
                                                             tmp_path: Path) -> None:
    from lifecycle_msgs.msg import Transition
    from std_msgs.msg import Float64MultiArray

    params = tmp_path / "p.yaml"
    params.write_text(
        "/**/emg_estimator:\n  ros__parameters:\n"
        "    controller_joints: [wrist_flexion, elbow_flexion]\n"
        "    position_min: [-0.2, 0.5]\n    position_max: [0.2, 1.0]\n"
        "    max_velocity: [0.5, 0.5]\n    smoothing_cutoff: 0.0\n    input_timeout: 0.1\n"
    )
    cmds: list = []
    observer.node.create_subscription(Float64MultiArray, "arm_controller/commands",
                                      lambda m: cmds.append((time.monotonic(), list(m.data))), 10)
    run = Launched(ros_env, "autostart:=true", f"model_path:={live_model}", "command_topic:=arm_controller/commands",
                   f"params_file:={_with_estimator_params(tmp_path, params)}")
    try:
        assert wait_for(lambda: len(cmds) > 100, 60.0), run.text()
        data = np.array([c[1] for c in cmds])
        assert data.shape[1] == 2
        assert np.all(data[:, 0] >= -0.2 - 1e-9) and np.all(data[:, 0] <= 0.2 + 1e-9)
        assert np.all(data[:, 1] >= 0.5 - 1e-9) and np.all(data[:, 1] <= 1.0 + 1e-9)
        assert np.all(np.abs(np.diff(data, axis=0)) <= 0.5 * 0.02 * 3 + 1e-9)  # velocity limit (stamps 20 ms apart)
        # The amplifier stops (deactivated): commands stop within the input timeout.
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_DEACTIVATE)
        assert wait_for(lambda: "commands stopped" in run.text(), 10.0), run.text()
        n_stopped = len(cmds)
        time.sleep(1.0)  # ten input timeouts: not one command more (one may have been in flight)
        assert len(cmds) <= n_stopped + 1, f"{len(cmds) - n_stopped} commands after the watchdog stopped them"
        # It comes back: commands resume.
        assert transition(observer, "/emg_acquisition", Transition.TRANSITION_ACTIVATE)
        t_back = time.monotonic()
        assert wait_for(lambda: len([c for c in cmds if c[0] > t_back]) > 20, 30.0), run.text()
        assert "commands resume" in run.text()
        # The estimator itself is cycled: inactive, it publishes nothing; active again, it does.
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_DEACTIVATE)
        n_off = len(cmds)
        time.sleep(1.0)
        assert len(cmds) <= n_off + 1, f"{len(cmds) - n_off} commands from an inactive estimator"
        assert transition(observer, "/emg_estimator", Transition.TRANSITION_ACTIVATE)
        t_on = time.monotonic()
        assert wait_for(lambda: len([c for c in cmds if c[0] > t_on]) > 20, 30.0), run.text()
    finally:
        run.stop()


def _with_estimator_params(tmp_path: Path, extra: Path) -> Path:
    """The package params file with the estimator's command settings replaced."""
    import yaml

    from emg_rcnn_ros.share import default_params_file

    data = yaml.safe_load(default_params_file().read_text())
    data["/**/emg_estimator"]["ros__parameters"].update(yaml.safe_load(extra.read_text())["/**/emg_estimator"]
                                                        ["ros__parameters"])
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(data))
    return out
