"""Per-subject training from rosbags with real processes: the simulated amplifier and the
training node record a bag; ~/train builds a model from it in a separate process; the estimator
loads that model and tracks the truth on a fresh simulated stream. Also: SIGINT during recording
leaves a readable bag, and recording is refused when the disk is too full."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from emg_rcnn_ros.bags import load_bag
from emg_rcnn_ros.share import write_params

from .conftest import Launched, live_metrics, run_live, trainer_has_truth, trigger, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CC_FLOOR = 0.6  # live CC of the model trained from a 40 s recording, mean over joints


def _truth_flows(observer) -> bool:
    """The trainer itself has fresh ground truth (it refuses to record without it)."""
    return trainer_has_truth(observer, 120.0)


def _params(tmp_path: Path, acquisition: dict | None = None, **trainer: object) -> Path:
    return write_params(tmp_path / "params.yaml", acquisition=acquisition or {}, trainer={
        "data_dir": str(tmp_path / "data"), "model_dir": str(tmp_path / "models"), "train_max_steps": 60, **trainer})


def test_record_train_and_estimate(ros_env, observer, tmp_path: Path) -> None:
    from std_msgs.msg import String

    progress: list[str] = []
    observer.node.create_subscription(String, "/emg_trainer/train_progress", lambda m: progress.append(m.data), 50)
    rec = Launched(ros_env, "autostart:=true", "subject:=s07", f"params_file:={_params(tmp_path)}", graph="record")
    try:
        assert _truth_flows(observer), rec.text()
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert r.success, r.message
        time.sleep(40.0)
        r = trigger(observer, "/emg_trainer/stop_recording")
        assert r.success, r.message
        bag = Path(r.message)
        assert bag.parent == tmp_path / "data" / "s07"
        session = load_bag(bag)
        assert 35.0 < session.duration < 45.0 and session.emg.shape[1] == 8
        assert session.joint_names == ["elbow_flexion", "wrist_flexion"]
        r = trigger(observer, "/emg_trainer/train")
        assert r.success, r.message
        assert wait_for(lambda: any(p.startswith("training") for p in progress), 300.0), rec.text()
        assert progress[-1] == f"training finished: {tmp_path / 'models' / 's07'}", progress
    finally:
        rec.stop()
    got, truth, code, text = run_live(observer, ros_env, tmp_path / "models" / "s07")
    m = live_metrics(got, truth)
    assert m["mean"]["cc"] > CC_FLOOR, m


def test_sigint_while_recording_leaves_a_readable_bag(ros_env, observer, tmp_path: Path) -> None:
    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.qos import qos_profile_sensor_data

    flowing: list = []
    observer.node.create_subscription(EmgArray, "emg/raw", flowing.append, qos_profile_sensor_data)
    rec = Launched(ros_env, "autostart:=true", "subject:=s01", f"params_file:={_params(tmp_path)}", graph="record")
    try:
        assert wait_for(lambda: len(flowing) > 10, 60.0), rec.text()
        assert _truth_flows(observer), rec.text()  # the amplifier is streaming
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert r.success, r.message
        time.sleep(3.0)
    finally:
        code = rec.stop(signal.SIGINT)
    assert code == 0, rec.text()
    session = load_bag(Path(r.message))
    assert 2.0 < session.duration < 5.0


def test_recording_is_refused_when_the_disk_is_too_full(ros_env, observer, tmp_path: Path) -> None:
    params = _params(tmp_path, min_free_space=1e18)
    rec = Launched(ros_env, "subject:=s02", f"params_file:={params}", graph="record")
    try:
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
    finally:
        rec.stop()
    assert not r.success and "min_free_space" in r.message
    assert not (tmp_path / "data" / "s02").exists() or not any((tmp_path / "data" / "s02").iterdir())


def test_sigkill_while_recording_keeps_all_but_the_last_second(ros_env, observer, tmp_path: Path) -> None:
    import os
    import subprocess

    from emg_rcnn_ros_msgs.msg import EmgArray
    from rclpy.qos import qos_profile_sensor_data

    from emg_rcnn_ros.core.sessions import load_session

    from .conftest import run_cli

    flowing: list = []
    observer.node.create_subscription(EmgArray, "emg/raw", flowing.append, qos_profile_sensor_data)
    rec = Launched(ros_env, "autostart:=true", "subject:=s03", f"params_file:={_params(tmp_path)}", graph="record")
    try:
        assert wait_for(lambda: len(flowing) > 10, 60.0), rec.text()
        assert _truth_flows(observer), rec.text()
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert r.success, r.message
        t_start = time.monotonic()
        time.sleep(4.0)
        pids = subprocess.run(["pgrep", "-P", str(rec.proc.pid)], capture_output=True, text=True).stdout.split()
        trainer = [p for p in pids if b"emg_trainer" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(trainer) == 1
        os.kill(int(trainer[0]), signal.SIGKILL)
        recorded = time.monotonic() - t_start
    finally:
        rec.stop()
    bag = Path(r.message)
    assert not (bag / "metadata.yaml").exists()  # the writer never closed
    session = load_session(bag)  # read up to the last flush
    # At most the last second (one flush period, plus start-up) is lost. The bag may also hold a little
    # EMG from before the start call: chunks still queued in the subscription when recording began.
    assert recorded - 1.5 <= session.duration <= recorded + 1.0, (session.duration, recorded)
    out = tmp_path / "recovered"
    res = run_cli("recover", str(bag), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "metadata.yaml").exists()
    assert abs(load_session(out).duration - session.duration) < 1e-9


def test_full_disk_stops_recording_cleanly(ros_env, observer, tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE, as a full disk) makes writes fail mid-recording: the
    recording stops with an error, the node keeps serving, and what was written stays readable."""
    import shutil
    import subprocess

    from emg_rcnn_ros.core.sessions import load_session

    from .conftest import executable

    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    cmd = ["prlimit", "--fsize=400000", "--", executable("emg-rcnn-ros"), "launch", "record", "autostart:=true",
           "subject:=s04", f"params_file:={_params(tmp_path)}"]
    proc = subprocess.Popen(cmd, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    import threading

    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        assert _truth_flows(observer), "".join(lines)
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert r.success, r.message
        assert wait_for(lambda: any("stopped:" in ln for ln in lines), 30.0), "".join(lines)
        again = trigger(observer, "/emg_trainer/stop_recording")
        assert not again.success and again.message == "not recording"  # the node is alive and serving
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    session = load_session(Path(r.message))
    assert session.duration > 1.0


def test_guided_calibration_prompts_and_records_each_trial(ros_env, observer, tmp_path: Path) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    from emg_rcnn_ros.core.sessions import load_session

    prompts: list[str] = []
    observer.node.create_subscription(String, "/emg_trainer/prompt", lambda m: prompts.append(m.data),
                                      QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    params = _params(tmp_path, calibration_trials=["reach forward:1.5", "rotate the wrist:1.5"],
                     calibration_rest=0.5, session="cal")
    rec = Launched(ros_env, "autostart:=true", "subject:=s05", f"params_file:={params}", graph="record")
    try:
        from emg_rcnn_ros_msgs.msg import EmgArray
        from rclpy.qos import qos_profile_sensor_data

        flowing: list = []
        observer.node.create_subscription(EmgArray, "emg/raw", flowing.append, qos_profile_sensor_data)
        assert wait_for(lambda: len(flowing) > 10, 60.0), rec.text()
        assert _truth_flows(observer), rec.text()
        r = trigger(observer, "/emg_trainer/calibrate", timeout=60.0)
        assert r.success, r.message
        assert not trigger(observer, "/emg_trainer/start_recording").success  # busy while guiding
        assert wait_for(lambda: any(p.startswith("calibration done") for p in prompts), 20.0), prompts
    finally:
        rec.stop()
    assert [p.split(":")[0] for p in prompts] == ["trial 1/2 in 0.5 s", "trial 1/2", "trial 2/2 in 0.5 s",
                                                 "trial 2/2", "calibration done"]
    assert "GO - reach forward" in prompts[1]
    for k in (1, 2):
        s = load_session(tmp_path / "data" / "s05" / f"cal-trial{k}")
        assert 1.0 < s.duration < 2.0


def test_recording_needs_ground_truth_from_a_best_effort_or_reliable_publisher(ros_env, observer,
                                                                               tmp_path: Path) -> None:
    """No ground truth: recording is refused, naming the topic. A best-effort publisher (an IMU
    driver with sensor-data QoS) is then enough."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    rec = Launched(ros_env, "subject:=s06", f"params_file:={_params(tmp_path)}", graph="record")
    try:
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert not r.success and "no ground truth on /emg/ground_truth" in r.message, r.message
        pub = observer.node.create_publisher(JointState, "emg/ground_truth", qos_profile_sensor_data)
        observer.node.create_timer(0.02, lambda: pub.publish(JointState(name=["wrist"], position=[0.1])))
        assert wait_for(lambda: trigger(observer, "/emg_trainer/start_recording").success, 30.0, step=0.5)
    finally:
        assert rec.stop(signal.SIGINT) == 0, rec.text()


def test_a_drifting_amplifier_is_recorded_with_its_rate_and_aligned_angles(ros_env, observer, tmp_path: Path) -> None:
    """A serial amplifier over a pty whose clock runs 2 % slow (980 Hz for a nominal 1000 Hz), and
    a ground truth stamped in host time whose value is the host time itself (a ramp). The bag
    stores the rate the acquisition node estimated, and after 7 s a burst in the EMG still lines
    up with the angle written at the same moment. With the nominal rate it would be ~140 ms off."""
    import threading

    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from emg_rcnn_ros.drivers.protocols import encode_framed

    from .test_drivers import Pty

    true_rate, nominal, block = 980.0, 1000.0, 5
    pty = Pty(tmp_path / "ttyEMG")
    pfile = _params(tmp_path, acquisition={"channels": 2, "sample_rate": nominal, "chunk_duration": 0.01,
                                           "gain": 100.0, "vref": 2.5, "read_timeout": 0.05})
    connected: list[str] = []

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name.endswith("emg_acquisition"):
                connected.append({kv.key: kv.value for kv in st.values}.get("connected", ""))

    observer.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    truth = observer.node.create_publisher(JointState, "emg/ground_truth", 50)
    t0 = time.time_ns()
    stop = threading.Event()
    burst: dict[str, float] = {}

    def publish_truth() -> None:  # 100 Hz, value = host seconds since t0
        while not stop.is_set():
            now = time.time_ns()
            m = JointState(name=["ramp"], position=[(now - t0) * 1e-9])
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(now, 10**9)
            truth.publish(m)
            time.sleep(0.01)

    def write_emg(seconds: float, burst_at: float) -> None:
        """Frames paced on an absolute schedule at the true rate; a 50-sample burst at `burst_at`."""
        rng = np.random.default_rng(0)
        start = time.monotonic()
        for k in range(0, int(seconds * true_rate), block):
            due = start + k / true_rate
            time.sleep(max(0.0, due - time.monotonic()))
            counts = rng.integers(-100, 100, (block, 2))
            if burst_at * true_rate <= k < burst_at * true_rate + 50:
                counts = counts * 200
                burst.setdefault("host_s", (time.time_ns() - t0) * 1e-9)
            pty.write(encode_framed(k, counts, 2))

    threading.Thread(target=publish_truth, daemon=True).start()
    rec = Launched(ros_env, "autostart:=true", "subject:=drift", "driver:=serial", f"port:={pty.link}",
                   f"params_file:={pfile}", graph="record")
    try:
        assert wait_for(lambda: connected[-1:] == ["True"], 60.0), rec.text()
        writer = threading.Thread(target=write_emg, args=(10.0, 8.0), daemon=True)
        writer.start()
        time.sleep(1.0)
        r = trigger(observer, "/emg_trainer/start_recording", timeout=60.0)
        assert r.success, r.message
        writer.join(30.0)
        time.sleep(2.0)  # at least one more diagnostics period with the final estimate
        r = trigger(observer, "/emg_trainer/stop_recording")
        assert r.success, r.message
    finally:
        stop.set()
        rec.stop()
        pty.unplug()
    bag = Path(r.message)
    custom = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    rate = float(custom["estimated_sample_rate"])
    assert abs(rate / true_rate - 1) < 0.005, rate
    s = load_bag(bag)
    onset = int(np.argmax(np.abs(s.emg[:, 0]) > 20 * np.median(np.abs(s.emg[:, 0]))))
    at_truth = float(np.interp(burst["host_s"], s.joint_position[:, 0], s.joint_time))
    assert onset / nominal > 5.0  # the burst came seconds into the recording
    assert abs(onset / nominal - at_truth) < 0.04, (onset / nominal, at_truth)
