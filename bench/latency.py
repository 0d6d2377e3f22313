"""End-to-end latency of the live pipeline through the real node processes.

    python bench/latency.py [--duration 60] [--channels 8 16] [--out runs/latency.json]

For each channel count: simulated amplifier at 2 kHz -> emg_features -> emg_estimator (a small
RCNN trained here first), started by `emg-rcnn-ros launch estimate`. A separate observer process
(this one) receives emg/joint_estimates: latency = receipt time - header stamp (the time of the
last EMG sample used). Also: output rate vs the hop rate, frames missing by stamp, stream resets,
and the CPU time of the three node processes over the measured window."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DOMAINS, emit, machine, percentiles, session_from  # noqa: E402

from emg_rcnn_ros.core.bundle import save_bundle  # noqa: E402
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from emg_rcnn_ros.core.sim import SimConfig, simulate_session  # noqa: E402
from emg_rcnn_ros.core.train import train  # noqa: E402
from emg_rcnn_ros.share import write_params  # noqa: E402

HOP = FeatureConfig().hop


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[int, str]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(p): Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[1].decode().rsplit("/", 1)[-1]
            for p in out}


def run_one(channels: int, duration: float, tmp: Path) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    s = session_from(simulate_session(SimConfig(rate=2000.0, channels=channels, seed=100), 60.0), "latency")
    # The default regime: 3 folds, so the bundle averages 4 RCNNs, as a trained model does live.
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=40), progress=False)
    model_dir = save_bundle(tmp / f"model{channels}", cfg, model)
    pfile = write_params(tmp / f"params{channels}.yaml", acquisition={"channels": channels, "sample_rate": 2000.0})

    domain = BENCH_DOMAINS["latency"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOCALHOST_ONLY="1", ROS_LOG_DIR=str(tmp / "log"))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("latency_observer", context=ctx)
    rows: list[tuple[int, int]] = []
    diag: dict[str, dict[str, str]] = {}
    stages: dict[str, list[tuple[float, float]]] = {}

    def on_diag(m: DiagnosticArray) -> None:
        for st in m.status:
            kv = {v.key: v.value for v in st.values}
            diag[st.name] = kv
            if "latency_p50_ms" in kv:
                stages.setdefault(st.name.rsplit("/", 1)[-1], []).append(
                    (float(kv["latency_p50_ms"]), float(kv["latency_p99_ms"])))
    node.create_subscription(JointState, "emg/joint_estimates",
                             lambda m: rows.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                                                    time.time_ns())), qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=lambda: _spin(ex), daemon=True).start()
    exe = str(Path(sys.executable).parent / "emg-rcnn-ros")
    proc = subprocess.Popen([exe, "launch", "estimate", "autostart:=true", f"model_path:={model_dir}",
                             f"params_file:={pfile}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 90
        while not rows and time.monotonic() < end:
            time.sleep(0.1)
        if not rows:
            raise RuntimeError("no estimates within 90 s")
        time.sleep(3.0)  # settle after start-up
        nodes = children(proc.pid)
        cpu0 = {p: cpu_seconds(p) for p in nodes}
        rows.clear()
        diag_before = {k: dict(v) for k, v in diag.items()}
        stages.clear()
        t0 = time.monotonic()
        time.sleep(duration)
        wall = time.monotonic() - t0
        got = list(rows)
        cpu = {nodes[p]: round(100 * (cpu_seconds(p) - cpu0[p]) / wall, 1) for p in nodes}
        time.sleep(1.2)  # one more diagnostics period
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    stamps = np.array([r[0] for r in got])
    lat = np.array([(r[1] - r[0]) * 1e-9 for r in got])
    span = (stamps.max() - stamps.min()) * 1e-9
    expected = int(round(span / HOP)) + 1

    def counter(name: str, key: str) -> int:
        after = {k: v for k, v in diag.items() if k.endswith(name)}
        before = {k: v for k, v in diag_before.items() if k.endswith(name)}
        a = int(next(iter(after.values()), {}).get(key, 0))
        b = int(next(iter(before.values()), {}).get(key, 0))
        return a - b

    return {"channels": channels, "rate_hz": 2000.0, "seconds": round(wall, 1), "estimates": len(got),
            "output_rate_hz": round((len(got) - 1) / span, 2), "hop_rate_hz": 1 / HOP,
            "missing_frames": max(0, expected - len(np.unique(stamps))),
            "latency": {**percentiles(lat), "max_ms": round(float(lat.max() * 1e3), 3)},
            # each node's own stamp-to-publish latency, per 1 s diagnostics interval: median p50, worst p99
            "stage_latency_ms": {k: {"p50": float(np.median([a for a, _ in v])), "p99_worst": max(b for _, b in v)}
                                 for k, v in stages.items()},
            "feature_resets": counter("emg_features", "resets"),
            "estimator_skipped_frames": counter("emg_estimator", "skipped_frames"),
            "acquisition_dropped_samples": counter("emg_acquisition", "dropped_samples"),
            "cpu_percent_of_one_core": {**cpu, "total": round(sum(cpu.values()), 1)}}


def _spin(ex) -> None:
    import contextlib

    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):
        ex.spin()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16])
    p.add_argument("--out")
    a = p.parse_args()
    res = {"machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for c in a.channels:
            res["runs"].append(run_one(c, a.duration, Path(tmp)))
    emit(res, a.out)


if __name__ == "__main__":
    main()
