"""Recalibration from ROS, live, with real processes and the simulated amplifier: the subject's
model from day one meets a next-day electrode placement (sim_next_day); the trainer records one
guided trial (~/recalibrate), recalibrates the model on it in a child process, and swaps the new
bundle into the running estimator (its model_path), which checks it against the stream first. After
the swap the live estimates track the truth better than the day-one model does on the very same
live frames (recorded here and run through it), and the new model takes over the old one's frame
history, so the estimates do not restart for the swap. A
bundle that does not fit the stream is refused with the reason, and the old model keeps estimating."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from emg_rcnn_ros.core.bundle import StreamingPredictor, load_bundle
from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.share import executable_path, write_params

from .conftest import live_metrics, transition, trigger, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _model(out: Path, channels: int, seconds: float, steps: int) -> Path:
    from emg_rcnn_ros.core.bundle import save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.sessions import Session
    from emg_rcnn_ros.core.train import train

    d = simulate_session(SimConfig(rate=2000.0, channels=channels, seed=100, subject_seed=0), seconds)
    s = Session(d["emg"].astype(float), 2000.0, d["joint_position"], d["joint_time"],
                list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source=str(out) + ".npz")
    from emg_rcnn_ros.core.sessions import save_npz

    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(s, Path(s.source))  # on disk, so that recalibration can rehearse it
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=steps, folds=1, ensemble=False),
                       progress=False)
    return save_bundle(out, cfg, model)


def test_recalibrate_and_swap_into_the_running_estimator(ros_env, observer, tmp_path: Path) -> None:
    from emg_rcnn_ros_msgs.msg import EmgFeatures
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from emg_rcnn_ros.nodes.convert import feature_frame

    day1 = _model(tmp_path / "models" / "s01", 8, 60.0, 600)
    # Electrodes moved twice as far as the preset: the day-one model clearly suffers (the preset itself
    # costs less than an 8 s window's spread of live scores).
    params = write_params(tmp_path / "params.yaml", acquisition={"sim_next_day": 2.0}, trainer={
        "subject": "s01", "model_dir": str(tmp_path / "models"), "data_dir": str(tmp_path / "data"),
        "swap_node": "emg_estimator", "recalibration_seconds": 15.0, "calibration_rest": 0.5})
    est: list = []
    truth: list = []
    progress: list[str] = []
    lock = threading.Lock()

    def keep(store: list):
        def cb(m) -> None:
            with lock:
                store.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time_ns(), list(m.position),
                              list(m.name)))
        return cb

    node = observer.node
    node.create_subscription(JointState, "emg/joint_estimates", keep(est), qos_profile_sensor_data)
    node.create_subscription(JointState, "emg/ground_truth", keep(truth), 100)
    node.create_subscription(String, "/emg_trainer/train_progress", lambda m: progress.append(m.data), 50)
    frames: list = []  # the live feature frames, to run the day-one model over the same data

    def on_frame(m) -> None:
        with lock:
            frames.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, feature_frame(m)))

    node.create_subscription(EmgFeatures, "emg/features", on_frame, qos_profile_sensor_data)
    procs = {exe: subprocess.Popen([str(executable_path(exe)), "--ros-args", "--params-file", str(params), "-p",
                                    f"model_path:={day1}"], env=ros_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
             for exe in ("emg_acquisition", "emg_features", "emg_estimator", "emg_trainer")}

    def measure(seconds: float) -> tuple[dict, dict]:
        """Live metrics of the running model, and of the day-one model on the same frames."""
        with lock:
            est.clear()
            frames.clear()
        time.sleep(seconds)
        with lock:
            live, seen = list(est), list(frames)
        day_one = StreamingPredictor(load_bundle(day1))
        replayed = [(t, 0, list(y), live[0][3]) for t, f in seen if (y := day_one.push(f)) is not None]
        return live_metrics(live, list(truth))["mean"], live_metrics(replayed, list(truth))["mean"]

    try:
        for name in ("/emg_acquisition", "/emg_estimator"):
            assert transition(observer, name, Transition.TRANSITION_CONFIGURE, 60.0)
            assert transition(observer, name, Transition.TRANSITION_ACTIVATE, 60.0)
        assert wait_for(lambda: len(est) > 50 and len(truth) > 50, 60.0)
        before, replayed = measure(10.0)
        assert abs(before["cc"] - replayed["cc"]) < 0.05, (before, replayed)  # the replay is what ran live
        # A bundle for another amplifier (4 channels) is refused, and the day-one model stays.
        other = _model(tmp_path / "other", 4, 10.0, 10)
        client = node.create_client(SetParameters, "/emg_estimator/set_parameters")
        assert client.wait_for_service(timeout_sec=30.0)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(other))
        fut = client.call_async(SetParameters.Request(parameters=[Parameter(name="model_path", value=value)]))
        assert wait_for(fut.done, 30.0)
        refused = fut.result().results[0]
        assert not refused.successful and "model expects 4 EMG channels, the stream has 8" in refused.reason, refused
        assert str(day1) in refused.reason  # the old model stays, and it says which
        # One guided trial, recalibration, swap.
        answer = trigger(observer, "/emg_trainer/recalibrate")
        assert answer.success, answer.message
        t0 = time.monotonic()
        assert wait_for(lambda: any("swapped into" in p for p in progress), 240.0), progress[-10:]
        took = time.monotonic() - t0
        after, day_one = measure(10.0)
        print(f"live CC before {before['cc']:.3f} (R2 {before['r2']:.3f}); after the swap {after['cc']:.3f} "
              f"(R2 {after['r2']:.3f}) against the day-one model's {day_one['cc']:.3f} (R2 {day_one['r2']:.3f}) on "
              f"the same frames; trial + recalibration + swap {took:.1f} s")
        assert after["cc"] > day_one["cc"] + 0.03, (after, day_one, progress[-5:])
        assert any("recalibration: feature means re-centred" in p for p in progress), progress
    finally:
        for p in procs.values():
            p.terminate()
        out = {k: p.communicate(timeout=30)[0] for k, p in procs.items()}
    # The new model took over the old one's frame history: no restart, no gap in the estimates.
    span = load_bundle(day1).model_cfg.span
    assert f"({span} frames of history carried over)" in out["emg_estimator"], out["emg_estimator"][-3000:]
    assert (tmp_path / "models" / "s01").is_dir()  # the day-one model is kept
