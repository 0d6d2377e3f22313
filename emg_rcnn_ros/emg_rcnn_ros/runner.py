"""`emg-rcnn-ros`: the launch-equivalent runner and the live demo.

    emg-rcnn-ros launch estimate [name:=value ...]   same processes and parameters as
                                                     `ros2 launch emg_rcnn_ros estimate.launch.py`
    emg-rcnn-ros demo [--duration 20]                the main job: simulated amplifier -> live estimates

The runner starts each node executable as its own process with the params file and overrides
from emg_rcnn_ros.graph, drives the lifecycle transitions when autostart:=true, forwards
SIGINT/SIGTERM to the nodes and exits when they have."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .graph import GRAPHS, LAUNCH_ARGUMENTS, NodeSpec, is_true
from .share import default_params_file


def find_executable(name: str) -> str:
    """A node's console script: colcon puts it in <prefix>/lib/emg_rcnn_ros, pip beside python."""
    candidates = [Path(sys.executable).parent / name]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "lib" / "emg_rcnn_ros" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"node executable {name} not found (is emg_rcnn_ros installed?)")


def node_command(spec: NodeSpec, args: dict[str, str]) -> list[str]:
    params_file = args["params_file"] or str(default_params_file())
    cmd = [find_executable(spec.executable), "--ros-args", "-r", f"__node:={spec.name}",
           "--params-file", params_file]
    if args["namespace"]:
        cmd += ["-r", f"__ns:={args['namespace']}"]
    for k, v in spec.parameters.items():
        cmd += ["-p", f"{k}:={json.dumps(v)}"]  # JSON strings are YAML strings: "" stays a string
    return cmd


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"launch arguments are name:=value, got '{item}'")
        k, v = item.split(":=", 1)
        out[k] = v
    return out


class Launch:
    """The processes of one graph."""

    def __init__(self, graph: str, overrides: dict[str, str]) -> None:
        if graph not in GRAPHS:
            raise ValueError(f"unknown launch '{graph}' (known: {', '.join(GRAPHS)})")
        self.specs, self.args = GRAPHS[graph](overrides)
        self.procs: list[tuple[NodeSpec, subprocess.Popen]] = []

    def start(self) -> None:
        for spec in self.specs:
            self.procs.append((spec, subprocess.Popen(node_command(spec, self.args))))

    def lifecycle_names(self) -> list[str]:
        ns = self.args["namespace"].rstrip("/")
        return [f"{ns}/{s.name}" if ns else f"/{s.name}" for s in self.specs if s.lifecycle]

    def alive(self) -> bool:
        return all(p.poll() is None for _, p in self.procs)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT every node, wait, then escalate. Returns the worst exit code."""
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        codes = [p.returncode for _, p in self.procs]
        return max((abs(c) for c in codes if c not in (0, -signal.SIGINT)), default=0)


def change_states(node, names: list[str], transitions: list[str], timeout: float = 20.0) -> None:
    """Drive lifecycle transitions through each node's change_state service; raise on failure."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE}
    for name in names:
        client = node.create_client(ChangeState, f"{name}/change_state")
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"{name}: lifecycle service not available after {timeout:g} s")
        for t in transitions:
            fut = client.call_async(ChangeState.Request(transition=Transition(id=ids[t])))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
            if not fut.done() or not fut.result().success:
                raise RuntimeError(f"{name}: transition '{t}' failed (see that node's log)")
        node.destroy_client(client)


class Stop:
    """SIGINT/SIGTERM set a flag that the runner's loops watch."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())


def cmd_launch(a: argparse.Namespace) -> int:
    launch = Launch(a.graph, parse_overrides(a.args))
    stop = Stop()
    launch.start()
    code = 0
    try:
        if is_true(launch.args["autostart"]):
            import rclpy

            rclpy.init(args=[])
            node = rclpy.create_node("emg_rcnn_launcher")
            try:
                change_states(node, launch.lifecycle_names(), ["configure", "activate"])
                print("emg-rcnn-ros: all lifecycle nodes active", flush=True)
            except RuntimeError as exc:
                print(f"emg-rcnn-ros: {exc}", file=sys.stderr, flush=True)
                code = 1
                stop.event.set()
            finally:
                node.destroy_node()
                rclpy.try_shutdown()
        while not stop.event.wait(0.2):
            if not launch.alive():
                print("emg-rcnn-ros: a node exited; stopping the others", file=sys.stderr, flush=True)
                code = code or 1
                break
    finally:
        code = max(code, launch.stop())
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emg-rcnn-ros", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    la = sub.add_parser("launch", help="start a graph like ros2 launch",
                        epilog="arguments: " + "; ".join(f"{k} ({v[1]}, default '{v[0]}')"
                                                         for k, v in LAUNCH_ARGUMENTS.items()))
    la.add_argument("graph", choices=sorted(GRAPHS))
    la.add_argument("args", nargs="*", help="name:=value")
    la.set_defaults(fn=cmd_launch)
    from .demo import add_parser as add_demo

    add_demo(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"emg-rcnn-ros {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
