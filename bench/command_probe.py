"""The command path as a lab meets it (issue #37's probe): `emg-rcnn-ros launch estimate` with the
simulated amplifier and `command_topic`, and a device process (emg_rcnn_ros/test/device_sim.py) that
follows the commands with a 50 ms lag, or is stuck away from the estimates, for 25 s each.

    python bench/command_probe.py [--model DIR] [--seconds 25]

Printed per mode: commands, the longest silence between commands (arrival here), the largest step
between consecutive commands, the number of starts and stops the node counted, and where the last
command is against the last estimate (follow) or whether commands restarted after a fault (stuck)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "emg_rcnn_ros" / "test" / "device_sim.py"
JOINTS = ["elbow_flexion", "wrist_flexion"]


def small_model(out: Path) -> Path:
    from emg_rcnn_ros.core.bundle import save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.sessions import Session
    from emg_rcnn_ros.core.sim import SimConfig, simulate_session
    from emg_rcnn_ros.core.train import train

    if (out / "config.json").is_file():
        return out
    d = simulate_session(SimConfig(rate=2000.0, channels=8, seed=100, subject_seed=0), 60.0)
    s = Session(d["emg"].astype(float), 2000.0, d["joint_position"], d["joint_time"], JOINTS,
                list(map(str, d["channel_names"])))
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=600, folds=1, ensemble=False),
                       progress=False)
    return save_bundle(out, cfg, model)


def probe(mode: str, model: Path, seconds: float, env: dict[str, str], tmp: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from emg_rcnn_ros.share import write_params

    params = write_params(tmp / f"{mode}.yaml", command={"measured_state_topic": "/arm/joint_states",
                                                         "controller_joints": JOINTS})
    start = [1.5, 0.8] if mode == "stuck" else [1.0, 0.0]
    device = subprocess.Popen([sys.executable, str(DEVICE), "--mode", mode, "--joints", *JOINTS, "--start",
                               *map(str, start), "--commands", "/arm/commands"], env=env)
    launch = subprocess.Popen([str(Path(sys.executable).parent / "emg-rcnn-ros"), "launch", "estimate",
                               "autostart:=true", f"model_path:={model}", "command_topic:=/arm/commands",
                               f"params_file:={params}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(launch.stdout), daemon=True).start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("command_probe", context=ctx)
    cmds: list[tuple[float, list[float]]] = []
    est: list[list[float]] = []
    diag: dict[str, str] = {}
    node.create_subscription(Float64MultiArray, "/arm/commands", lambda m: cmds.append((time.monotonic(),
                                                                                         list(m.data))), 100)
    node.create_subscription(JointState, "emg/joint_estimates", lambda m: est.append(list(m.position)),
                             qos_profile_sensor_data)

    def on_diag(m) -> None:
        for st in m.status:
            if st.name.endswith("emg_command"):
                diag.update({kv.key: kv.value for kv in st.values}, message=st.message)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    t_end = time.monotonic() + 120.0
    while not cmds and time.monotonic() < t_end:
        time.sleep(0.05)
    t0 = time.monotonic()
    time.sleep(seconds)
    got = [c for c in cmds if c[0] >= t0 - 1e-9] if mode == "follow" else list(cmds)
    launch.terminate()
    device.terminate()
    launch.wait(30)
    device.wait(30)
    ex.shutdown(timeout_sec=1.0)
    rclpy.try_shutdown(context=ctx)
    if len(got) < 2:
        return {"mode": mode, "commands": len(got), "log": "".join(lines)[-2000:]}
    t = np.array([c[0] for c in got])
    y = np.array([c[1] for c in got])
    out = {"mode": mode, "commands": len(got), "max_silence_s": round(float(np.diff(t).max()), 3),
           "max_step_rad": round(float(np.abs(np.diff(y, axis=0)).max()), 4),
           "first_command": np.round(y[0], 3).tolist(), "node_starts": diag.get("starts"),
           "node_stops": diag.get("stops"), "diagnostics": diag.get("message")}
    if mode == "follow" and est:
        out["end_distance_to_estimate_rad"] = round(float(np.abs(y[-1] - np.array(est[-1])).max()), 3)
        recent = np.array(est[-25:]).mean(axis=0)  # the last half second of estimates
        out["end_distance_to_mean_estimate_rad"] = round(float(np.abs(y[-1] - recent).max()), 3)
    if mode == "stuck":
        fault = next((i for i, ln in enumerate(lines) if "tracking fault" in ln), None)
        out["tracking_fault"] = fault is not None
        out["starts_logged"] = sum("commands start at" in ln for ln in lines)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/probe_model")
    ap.add_argument("--seconds", type=float, default=25.0)
    a = ap.parse_args()
    model = small_model(Path(a.model))
    env = dict(os.environ, ROS_DOMAIN_ID=str(60 + os.getpid() % 30), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("follow", "stuck"):
            print(probe(mode, model, a.seconds, env, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
