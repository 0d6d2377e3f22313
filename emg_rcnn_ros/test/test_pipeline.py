"""The live pipeline with real node processes: simulated amplifier -> features -> estimator.

Estimates arrive at the hop rate and track the simulator's true angles; lifecycle nodes stay
inactive until activated; a bad model path fails configure. (Commands: test_command_path.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import Launched, live_metrics, run_live, wait_for

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
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=150, folds=1), progress=False)
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
    truth_stamps = np.array([t[0] for t in truth])
    assert np.all(np.diff(truth_stamps) > 0), "the ground truth comes from more than one stream"
    m = live_metrics(got, truth)
    assert m["mean"]["cc"] > CC_FLOOR, (m, len(got), len(truth))
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
