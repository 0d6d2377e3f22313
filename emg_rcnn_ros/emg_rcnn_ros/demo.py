"""The main job: a live EMG -> joint angle demo without hardware.

Makes a model if none is there (simulated calibration session of subject 0, a small RCNN), starts
the real node processes with the simulated amplifier (same subject, new movements), prints
estimated vs true angles once a second, then a summary (live CC and RMSE against the ground truth,
output rate, latency, drops) and a PNG plot."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .core.stamps import to_ns
from .share import write_params


def ensure_model(path: Path, rate: float, channels: int, seconds: float, max_steps: int) -> None:
    from .core.bundle import load_bundle
    from .core.errors import BundleError

    try:
        b = load_bundle(path)
        b.check_stream(rate, channels)
        print(f"demo: using model {path}", flush=True)
        return
    except BundleError as exc:
        print(f"demo: no usable model ({exc}); training one", flush=True)
    from .core.bundle import save_bundle
    from .core.config import FeatureConfig, ModelConfig, TrainConfig
    from .core.sessions import Session
    from .core.sim import SimConfig, simulate_session
    from .core.train import train

    t0 = time.perf_counter()
    d = simulate_session(SimConfig(rate=rate, channels=channels, seed=100, subject_seed=0), seconds)
    s = Session(d["emg"].astype(np.float64), float(d["emg_rate"]), d["joint_position"], d["joint_time"],
                list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source="simulated calibration")
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=max_steps), progress=True)
    save_bundle(path, cfg, model)
    v = cfg["validation"]["mean"]
    print(f"demo: trained {path} on {seconds:g} s in {time.perf_counter() - t0:.0f} s; held-out validation "
          f"CC {v['cc']:.3f}, RMSE {v['rmse_deg']:.1f} deg", flush=True)


class Monitor:
    """Collects estimates and ground truth from the live topics."""

    def __init__(self, node, namespace: str) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        prefix = namespace.rstrip("/") + "/" if namespace else ""
        self.node = node
        self.lock = threading.Lock()
        self.est: list[tuple[int, int, list[float]]] = []
        self.truth: list[tuple[int, list[float]]] = []
        self.names: list[str] = []
        node.create_subscription(JointState, f"{prefix}emg/joint_estimates", self._on_est, qos_profile_sensor_data)
        node.create_subscription(JointState, f"{prefix}emg/ground_truth", self._on_truth, 100)

    def _on_est(self, msg) -> None:
        recv = time.time_ns()
        with self.lock:
            self.names = list(msg.name)
            self.est.append((to_ns(msg.header.stamp), recv, list(msg.position)))

    def _on_truth(self, msg) -> None:
        with self.lock:
            self.truth.append((to_ns(msg.header.stamp), list(msg.position)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with self.lock:
            est, truth = list(self.est), list(self.truth)
        if not est or len(truth) < 2:
            z = np.zeros(0)
            return z, z, np.zeros((0, 0)), z, np.zeros((0, 0))
        es = np.array([e[0] for e in est])
        er = np.array([e[1] for e in est])
        ts = np.array([t[0] for t in truth])
        order = np.argsort(ts)
        return es, er, np.array([e[2] for e in est]), ts[order], np.array([t[1] for t in truth])[order]


def run_demo(a: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from .core.evaluate import metrics, plot
    from .launcher import Launch, Stopped, change_states
    from .stopping import Stop

    model = Path(a.model)
    stop = Stop()
    Stop.interrupt = True  # training the demo's model, when there is none, takes minutes: Ctrl-C ends it
    try:
        if stop.event.is_set():
            raise KeyboardInterrupt
        ensure_model(model, a.rate, a.channels, a.calibration_seconds, a.max_steps)
    except KeyboardInterrupt:
        print("demo: stopped before going live", file=sys.stderr)
        return 0
    finally:
        Stop.interrupt = False
    # The simulated amplifier streams what the model was trained on: the package's parameters with
    # the demo's rate and channel count.
    pfile = write_params(Path(a.plot).with_name("demo_params.yaml"),  # beside the plot, for the record
                         acquisition={"sample_rate": float(a.rate), "channels": int(a.channels)})
    launch = Launch("estimate", {"driver": "simulated", "model_path": str(model.resolve()), "autostart": "true",
                                 "namespace": a.namespace, "params_file": str(pfile)})
    ns = launch.args["namespace"]  # made absolute by the graph, as launch_ros does
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("emg_rcnn_demo")
    mon = Monitor(node, ns)
    code = 0
    executor = rclpy.executors.SingleThreadedExecutor()
    try:
        launch.start()
        change_states(node, launch.lifecycle_names(), ["configure", "activate"], stop.event)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        print(f"demo: live for {a.duration:g} s (simulated amplifier, {a.channels} channels at {a.rate:g} Hz)",
              flush=True)
        t_start = time.monotonic()
        next_line = t_start + 1.0
        while not stop.event.is_set() and time.monotonic() - t_start < a.duration:
            time.sleep(0.05)
            if exited := launch.exited():
                print(f"demo: {', '.join(exited)} exited early", file=sys.stderr)
                code = 1
                break
            if time.monotonic() >= next_line:
                next_line += 1.0
                _print_line(mon, time.monotonic() - t_start)
    except Stopped:
        pass
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        code = max(code, launch.stop())
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    es, er, ey, ts, ty = mon.arrays()
    if len(es) < 10 or len(ts) < 2:
        print("demo: too few estimates received to summarise", file=sys.stderr)
        return code or 1
    truth_at = np.stack([np.interp(es, ts, ty[:, j]) for j in range(ty.shape[1])], axis=1)
    inside = (es >= ts[0]) & (es <= ts[-1])
    m = metrics(truth_at[inside], ey[inside], mon.names)
    lat = (er - es) * 1e-6
    span = (es[-1] - es[0]) * 1e-9
    hop = 0.02
    expected = int(round(span / hop)) + 1
    print("\nsummary (live, against the simulator's true angles)")
    for j, n in enumerate(m["joints"]):
        print(f"  {n:<16} CC {m['cc'][j]:.3f}  RMSE {m['rmse_deg'][j]:.1f} deg ({m['rmse'][j]:.3f} rad)")
    print(f"  mean             CC {m['mean']['cc']:.3f}  RMSE {m['mean']['rmse_deg']:.1f} deg")
    print(f"  estimates {len(es)} over {span:.1f} s: {len(es) / max(span, 1e-9):.1f} Hz "
          f"(hop rate {1 / hop:.0f} Hz), missing {max(0, expected - len(es))}")
    print(f"  latency EMG stamp -> estimate received: p50 {np.percentile(lat, 50):.2f} ms, "
          f"p99 {np.percentile(lat, 99):.2f} ms")
    out = Path(a.plot)
    plot(out, (es - es[0]) * 1e-9, truth_at, ey, m["joints"], title="live estimates vs simulator truth")
    print(f"  plot: {out}")
    return code


def _print_line(mon: Monitor, t: float) -> None:
    with mon.lock:
        est = mon.est[-1] if mon.est else None
        truth = mon.truth[-1] if mon.truth else None
        names = list(mon.names)
    if est is None or truth is None:
        print(f"t={t:5.1f} s  waiting for estimates...", flush=True)
        return
    parts = [f"{n} est {np.degrees(e):6.1f} true {np.degrees(g):6.1f} deg"
             for n, e, g in zip(names, est[2], truth[1])]
    print(f"t={t:5.1f} s  " + " | ".join(parts), flush=True)


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="live demo on the simulated amplifier (trains a model first if needed)")
    d.add_argument("--model", default="models/demo_rcnn", help="model bundle (made if missing)")
    d.add_argument("--duration", type=float, default=20.0, help="seconds of live estimation")
    d.add_argument("--plot", default="runs/demo.png")
    d.add_argument("--rate", type=float, default=2000.0)
    d.add_argument("--channels", type=int, default=8)
    d.add_argument("--namespace", default="")
    d.add_argument("--calibration-seconds", type=float, default=120.0)
    d.add_argument("--max-steps", type=int, default=1500, help="training steps at most, per fold")
    d.set_defaults(fn=run_demo)
