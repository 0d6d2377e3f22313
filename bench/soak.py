"""Long run of the live graph plus a recording, through the real node processes.

    python bench/soak.py [--duration 3600] [--block 300] [--channels 16] [--out runs/soak.json]

`emg-rcnn-ros launch estimate` (simulated amplifier at 2 kHz -> emg_features -> emg_estimator, with
the default 4-RCNN bundle trained here first) and an `emg_trainer` process recording everything into
a bag. An observer (this process) receives emg/joint_estimates. Every 10 s it samples each node's
RSS and CPU time from /proc. Per block of `--block` seconds: RSS at the end of the block, CPU % of
one core, latency p50/p99 (receipt time - header stamp), estimates missing by stamp. At the end the
bag is read back and its EMG sequence checked for gaps. Memory growth = RSS at the end minus RSS at
the end of the first block (the warm-up)."""

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
from latency import _spin, children, cpu_seconds  # noqa: E402
from recording import call  # noqa: E402

from emg_rcnn_ros.bags import load_bag  # noqa: E402
from emg_rcnn_ros.core.bundle import save_bundle  # noqa: E402
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from emg_rcnn_ros.core.sim import SimConfig, simulate_session  # noqa: E402
from emg_rcnn_ros.core.train import train  # noqa: E402
from emg_rcnn_ros.share import write_params  # noqa: E402

HOP = FeatureConfig().hop


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def block_stats(rows: list[tuple[int, int]]) -> dict:
    if len(rows) < 2:
        return {"estimates": len(rows)}
    stamps = np.array([r[0] for r in rows])
    lat = np.array([(r[1] - r[0]) * 1e-9 for r in rows])
    span = (stamps.max() - stamps.min()) * 1e-9
    return {"estimates": len(rows), "missing_by_stamp": max(0, int(round(span / HOP)) + 1 - len(np.unique(stamps))),
            "latency": {**percentiles(lat), "max_ms": round(float(lat.max() * 1e3), 3)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=3600.0)
    p.add_argument("--block", type=float, default=300.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--out")
    a = p.parse_args()
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = session_from(simulate_session(SimConfig(rate=2000.0, channels=a.channels, seed=100), 60.0), "soak")
        model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=40), progress=False)
        model_dir = save_bundle(tmp / "model", cfg, model)
        pfile = write_params(tmp / "params.yaml", acquisition={"channels": a.channels, "sample_rate": 2000.0},
                             trainer={"data_dir": str(tmp / "data"), "model_dir": str(tmp / "m"), "session": "soak",
                                      "subject": "soak"})
        domain = BENCH_DOMAINS["soak"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOCALHOST_ONLY="1", ROS_LOG_DIR=str(tmp / "log"))
        bindir = Path(sys.executable).parent
        graph = subprocess.Popen([str(bindir / "emg-rcnn-ros"), "launch", "estimate", "autostart:=true",
                                  f"model_path:={model_dir}", f"params_file:={pfile}"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        trainer = subprocess.Popen([str(bindir / "emg_trainer"), "--ros-args", "--params-file", str(pfile)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain)
        node = rclpy.create_node("soak_observer", context=ctx)
        rows: list[tuple[int, int]] = []
        lock = threading.Lock()

        def on_estimate(m: JointState) -> None:
            with lock:
                rows.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time_ns()))

        blocks, samples = [], []
        try:
            end = time.monotonic() + 120
            while not (r := call(node, "/emg_trainer/start_recording")).success:
                if "no ground truth" not in r.message or time.monotonic() > end:
                    raise RuntimeError(r.message)
                time.sleep(0.5)
            node.create_subscription(JointState, "emg/joint_estimates", on_estimate, qos_profile_sensor_data)
            ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
            ex.add_node(node)
            threading.Thread(target=lambda: _spin(ex), daemon=True).start()
            time.sleep(5.0)  # settle
            pids = {**children(graph.pid), trainer.pid: "emg_trainer"}
            with lock:
                rows.clear()
            t0 = time.monotonic()
            cpu_prev = {q: cpu_seconds(q) for q in pids}
            t_prev = t0
            next_block = t0 + a.block
            while (now := time.monotonic()) < t0 + a.duration:
                time.sleep(min(10.0, max(0.0, t0 + a.duration - now)))
                now = time.monotonic()
                samples.append({"t_s": round(now - t0, 1), "rss_mb": {pids[q]: round(rss_mb(q), 1) for q in pids}})
                if now >= next_block - 1.0 or now >= t0 + a.duration - 1.0:
                    with lock:
                        got, rows[:] = list(rows), []
                    cpu_now = {q: cpu_seconds(q) for q in pids}
                    blocks.append({"block_end_s": round(now - t0), "rss_mb": samples[-1]["rss_mb"],
                                   "cpu_percent_of_one_core": {pids[q]: round(100 * (cpu_now[q] - cpu_prev[q])
                                                                              / (now - t_prev), 1) for q in pids},
                                   **block_stats(got)})
                    print(f"block {len(blocks)}: {blocks[-1]}", file=sys.stderr, flush=True)
                    cpu_prev, t_prev, next_block = cpu_now, now, next_block + a.block
                if graph.poll() is not None or trainer.poll() is not None:
                    raise RuntimeError("a node process ended during the soak")
            r2 = call(node, "/emg_trainer/stop_recording")
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)
            for proc in (graph, trainer):
                proc.send_signal(signal.SIGINT)
            codes = [proc.wait(30) for proc in (graph, trainer)]
        bag = Path(r2.message)
        sess = load_bag(bag)
        size = sum(f.stat().st_size for f in bag.iterdir())
    first, last = blocks[0]["rss_mb"], blocks[-1]["rss_mb"]
    emit({"machine": machine(), "channels": a.channels, "rate_hz": 2000.0, "duration_s": a.duration,
          "blocks": blocks, "rss_growth_after_first_block_mb": {k: round(last[k] - first[k], 1) for k in first},
          "rss_samples": samples, "bag": {"emg_seconds": round(sess.duration, 1),
                                          "sequence_gaps": len(sess.segments) - 1, "megabytes": round(size / 1e6, 1)},
          "estimates_missing_total": sum(b.get("missing_by_stamp", 0) for b in blocks), "exit_codes": codes}, a.out)


if __name__ == "__main__":
    main()
