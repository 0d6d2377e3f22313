"""Recording headroom and per-subject training time, through the real processes.

    python bench/recording.py [--seconds 300] [--channels 16] [--out runs/recording.json]

The simulated amplifier (16 channels at 2 kHz) streams to emg_trainer, which records a bag for
`--seconds`; the bag is then checked sample by sample (sequence continuity: no message lost) and a
per-subject RCNN is trained from it with `emg-rcnn train`, timed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DOMAINS, emit, machine  # noqa: E402
from latency import children, cpu_seconds  # noqa: E402

from emg_rcnn_ros.bags import load_bag  # noqa: E402
from emg_rcnn_ros.share import write_params  # noqa: E402


def call(node, service: str, timeout: float = 60.0):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"{service} not available")
    fut = client.call_async(Trigger.Request())
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    rclpy.spin_until_future_complete(node, fut, executor=executor, timeout_sec=timeout)
    executor.remove_node(node)
    return fut.result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--out")
    a = p.parse_args()
    import rclpy

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pfile = write_params(tmp / "params.yaml", acquisition={"channels": a.channels, "sample_rate": 2000.0},
                             trainer={"data_dir": str(tmp / "data"), "model_dir": str(tmp / "m"), "session": "bench"})
        domain = BENCH_DOMAINS["recording"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOCALHOST_ONLY="1", ROS_LOG_DIR=str(tmp / "log"))
        exe = str(Path(sys.executable).parent / "emg-rcnn-ros")
        proc = subprocess.Popen([exe, "launch", "record", "autostart:=true", "subject:=bench",
                                 f"params_file:={pfile}"], env=env, stdout=subprocess.DEVNULL)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain)
        node = rclpy.create_node("recording_bench", context=ctx)
        try:
            time.sleep(5.0)
            end = time.monotonic() + 60.0
            while not (r := call(node, "/emg_trainer/start_recording")).success:
                # The trainer refuses until its ground truth flows (the amplifier is still starting).
                if "no ground truth" not in r.message or time.monotonic() > end:
                    raise RuntimeError(r.message)
                time.sleep(0.5)
            nodes = children(proc.pid)
            cpu0 = {p: cpu_seconds(p) for p in nodes}
            t0 = time.monotonic()
            time.sleep(a.seconds)
            r2 = call(node, "/emg_trainer/stop_recording")
            wall = time.monotonic() - t0
            cpu = {nodes[p]: round(100 * (cpu_seconds(p) - cpu0[p]) / wall, 1) for p in nodes}
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        bag = Path(r2.message)
        s = load_bag(bag)
        size = sum(f.stat().st_size for f in bag.iterdir())
        t = time.perf_counter()
        train = subprocess.run([str(Path(sys.executable).parent / "emg-rcnn"), "train", "--data", str(bag), "--out",
                                str(tmp / "m" / "bench"), "--quiet"], capture_output=True, text=True)
        train_s = time.perf_counter() - t
        cfg = json.loads((tmp / "m" / "bench" / "config.json").read_text()) if train.returncode == 0 else {}
    emit({"machine": machine(), "channels": a.channels, "rate_hz": 2000.0, "recorded_wall_s": round(wall, 1),
          "emg_seconds_in_bag": round(s.duration, 2), "sequence_gaps": len(s.segments) - 1,
          "bag_megabytes": round(size / 1e6, 1), "cpu_percent_of_one_core": cpu,
          "train_from_bag_s": round(train_s, 1), "train_exit": train.returncode,
          "train_steps_run": cfg.get("training", {}).get("steps_run"),
          "train_val_mean_cc": cfg.get("validation", {}).get("mean", {}).get("cc")}, a.out)


if __name__ == "__main__":
    main()
