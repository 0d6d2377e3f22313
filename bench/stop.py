"""Start/Ctrl-C cycles of the estimate graph under the real `ros2 launch` (or the runner).

    python bench/stop.py [--cycles 20] [--launcher ros2|runner] [--out runs/stop.json]

Each cycle starts `ros2 launch emg_rcnn_ros estimate.launch.py autostart:=true` in a session of its
own and sends SIGINT to its process group, as a terminal's Ctrl-C does. Even cycles stop once
estimates flow; odd cycles stop at a random moment in the first 12 s (during start-up and
autostart). Counted per cycle: the exit code, nodes that launch reports as died, nodes that launch
had to escalate (SIGTERM/SIGKILL), tracebacks, service answers rclpy could not send ("failed to send
response", which the autostart recovers from), and the time from SIGINT to the whole group gone.
The output's tail is kept in the JSON for every cycle that failed.
Needs ros2 on PATH (a ROS 2 install, or `source .venv/ros2-tools/env.sh`) for --launcher ros2."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DOMAINS, emit, machine, session_from  # noqa: E402

from emg_rcnn_ros.core.bundle import save_bundle  # noqa: E402
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from emg_rcnn_ros.core.sim import SimConfig, simulate_session  # noqa: E402
from emg_rcnn_ros.core.train import train  # noqa: E402


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def cycle(cmd: list[str], env: dict[str, str], stop_at: float | None, observer) -> dict:
    est: list[int] = []
    observer.on_estimate = lambda: est.append(1)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    t0 = time.monotonic()
    if stop_at is None:
        while len(est) < 50 and time.monotonic() - t0 < 120:
            time.sleep(0.05)
    else:
        time.sleep(stop_at)
    flowing = len(est) > 0
    t_int = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(60)
    while group_alive(proc.pid) and time.monotonic() - t_int < 60:
        time.sleep(0.01)
    gone = time.monotonic() - t_int
    text = "".join(lines)
    escalated = sum(text.count(f"sending signal '{sig}'") for sig in ("SIGTERM", "SIGKILL"))
    return {"stop_after_s": round(t_int - t0, 2), "estimates_flowing": flowing, "rc": code,
            "died": text.count("process has died"), "escalated": escalated,
            "killed_by_runner": text.count("did not exit"), "tracebacks": text.count("Traceback"),
            "clean": text.count("process has finished cleanly"), "group_gone_s": round(gone, 3),
            "lost_answers": text.count("failed to send response"),
            "tail": text[-4000:] if code or "process has died" in text or "Traceback" in text else ""}


class Observer:
    def __init__(self, domain: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        self.on_estimate = lambda: None
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("stop_bench", context=self.ctx)
        self.node.create_subscription(JointState, "emg/joint_estimates", lambda _: self.on_estimate(),
                                      qos_profile_sensor_data)
        ex = SingleThreadedExecutor(context=self.ctx)
        ex.add_node(self.node)
        threading.Thread(target=ex.spin, daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--launcher", choices=["ros2", "runner"], default="ros2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/stop.json")
    a = ap.parse_args()
    if a.launcher == "ros2" and not shutil.which("ros2"):
        print("bench/stop.py: ros2 is not on PATH (source .venv/ros2-tools/env.sh, or a ROS 2 install)")
        return 1
    rng = random.Random(a.seed)
    domain = BENCH_DOMAINS["stop"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        env.update(TMPDIR=tmp, ROS_LOG_DIR=f"{tmp}/log")
        d = simulate_session(SimConfig(rate=2000.0, channels=8, seed=100, subject_seed=0), 20.0)
        model, cfg = train([session_from(d, "bench")], FeatureConfig(), ModelConfig(),
                           TrainConfig(max_steps=20, folds=1), progress=False)
        bundle = save_bundle(Path(tmp) / "model", cfg, model)
        args = [f"model_path:={bundle}", "autostart:=true"]
        cmd = (["ros2", "launch", "emg_rcnn_ros", "estimate.launch.py", *args] if a.launcher == "ros2"
               else [str(Path(sys.executable).parent / "emg-rcnn-ros"), "launch", "estimate", *args])
        obs = Observer(domain)
        results = []
        for i in range(a.cycles):
            r = cycle(cmd, env, None if i % 2 == 0 else rng.uniform(0.5, 12.0), obs)
            results.append(r)
            print(f"cycle {i + 1}: {r['stop_after_s']} s, flowing {r['estimates_flowing']}, rc {r['rc']}, "
                  f"died {r['died']}, escalated {r['escalated']}, group gone in {r['group_gone_s']} s", flush=True)
            if r["tail"]:
                print(r["tail"], flush=True)
    gone = np.array([r["group_gone_s"] for r in results])
    summary = {"launcher": a.launcher, "cycles": len(results), "rc_nonzero": sum(r["rc"] != 0 for r in results),
               "nodes_died": sum(r["died"] for r in results), "escalations": sum(r["escalated"] for r in results),
               "killed_by_runner": sum(r["killed_by_runner"] for r in results),
               "tracebacks": sum(r["tracebacks"] for r in results),
               "lost_answers": sum(r["lost_answers"] for r in results),
               "group_gone_s": {"median": float(np.median(gone)), "max": float(gone.max())}}
    emit({"machine": machine(), "summary": summary, "cycles": results}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
