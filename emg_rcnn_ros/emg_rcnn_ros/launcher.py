"""The launch-equivalent runner as a library: start the node executables of a graph with the
params file and overrides from emg_rcnn_ros.graph, drive their lifecycle, stop them.

Stopping escalates per node, as `ros2 launch` does, and says what it had to do: SIGINT, then (after
`sigint_timeout`) a stack dump (SIGUSR1, faulthandler in every node) and SIGTERM, then (after
`sigterm_timeout`) SIGKILL. Every node is meant to exit within 2 s of SIGINT (nodes/process.py)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

from .graph import GRAPHS, NodeSpec, lifecycle_names
from .share import default_params_file, executable_path
from .stopping import Flag


def node_command(spec: NodeSpec, args: dict[str, str]) -> list[str]:
    params_file = args["params_file"] or str(default_params_file())
    cmd = [str(executable_path(spec.executable)), "--ros-args", "-r", f"__node:={spec.name}",
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


def log(text: str) -> None:
    print(f"emg-rcnn-ros: {text}", file=sys.stderr, flush=True)


class Launch:
    """The processes of one graph."""

    def __init__(self, graph: str, overrides: dict[str, str]) -> None:
        if graph not in GRAPHS:
            raise ValueError(f"unknown launch '{graph}' (known: {', '.join(GRAPHS)})")
        self.specs, self.args = GRAPHS[graph](overrides)
        self.procs: list[tuple[NodeSpec, subprocess.Popen]] = []

    def start(self) -> None:
        """Start every node; if one cannot be started, the ones already running are stopped."""
        try:
            for spec in self.specs:
                self.procs.append((spec, subprocess.Popen(node_command(spec, self.args))))
        except BaseException:
            self.stop()
            raise

    def lifecycle_names(self) -> list[str]:
        return lifecycle_names(self.specs, self.args["namespace"])

    def exited(self) -> list[str]:
        return [f"{spec.name} (exit {p.returncode})" for spec, p in self.procs if p.poll() is not None]

    def stop(self, sigint_timeout: float = 5.0, sigterm_timeout: float = 3.0) -> int:
        """Stop every node; returns 0 if all exited cleanly on SIGINT, else the worst exit code
        (1 for a node that had to be terminated or killed)."""
        escalated = False
        for sig, timeout in ((signal.SIGINT, sigint_timeout), (signal.SIGTERM, sigterm_timeout),
                             (signal.SIGKILL, 5.0)):
            alive = [(spec, p) for spec, p in self.procs if p.poll() is None]
            if not alive:
                break
            for spec, p in alive:
                if sig != signal.SIGINT:
                    escalated = True
                    log(f"{spec.name} (pid {p.pid}) did not exit; {'stack dump and ' * (sig == signal.SIGTERM)}"
                        f"{sig.name}")
                    if sig == signal.SIGTERM:
                        p.send_signal(signal.SIGUSR1)
                        time.sleep(0.3)  # faulthandler writes the stacks to the node's stderr
                p.send_signal(sig)
            deadline = time.monotonic() + timeout
            for _, p in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(max(0.0, deadline - time.monotonic()))
        # -SIGINT: the node was still starting (interpreter start-up, before its handlers were in).
        bad = [(spec.name, p.returncode) for spec, p in self.procs if p.returncode not in (0, -signal.SIGINT)]
        for name, code in bad:
            log(f"{name} exited with {code}")
        worst = max((abs(code) for _, code in bad), default=0)
        return max(worst, 1) if escalated else worst


class Stopped(Exception):  # noqa: N818 - a request, not an error
    """The runner was asked to stop while it was waiting."""


def change_states(node, names: list[str], transitions: list[str], stop: Flag,
                  timeout: float = 60.0) -> None:
    """Drive lifecycle transitions through each node's change_state service. Raises RuntimeError
    on failure and Stopped as soon as `stop` is set. The caller's rclpy must not own the signals
    (rclpy.init(signal_handler_options=NO)): a signal is `stop`, not a dead context."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        for name in names:
            _change_state(node, executor, name, transitions, stop, timeout)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)


ASK_AFTER = 5.0  # s without an answer to a transition before asking the node's state


def _change_state(node, executor, name: str, transitions: list[str], stop: Flag, timeout: float) -> None:
    from lifecycle_msgs.srv import ChangeState, GetState

    clients = [node.create_client(kind, f"{name}/{srv}") for kind, srv in ((ChangeState, "change_state"),
                                                                           (GetState, "get_state"))]
    try:
        deadline = time.monotonic() + timeout
        for client in clients:
            while not client.wait_for_service(timeout_sec=0.1):
                if stop.is_set():
                    raise Stopped
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: lifecycle service not available after {timeout:g} s")
        for t in transitions:
            _transition(executor, *clients, name, t, stop, timeout)
    finally:
        for client in clients:
            node.destroy_client(client)


def _transition(executor, change, get, name: str, t: str, stop: Flag, timeout: float) -> None:
    """One transition that survives a lost request or answer. Fast DDS drops a service's answer
    when it has not matched the client's reader within 100 ms (rclpy only warns "failed to send
    response (timeout)"), which a loaded machine just after discovery can cause: the transition
    happens and the caller waits for nothing (the likely cause of an autostart stuck for 60 s, once
    in 40 start-ups under bench/stop.py). So after ASK_AFTER s without an answer, ask the node's
    state: at the goal, done; still at the start, send the request again; in between (a slow
    transition), wait on. A failed answer is checked the same way, as it may answer a repeated
    request."""
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    tid, start, goal = {"configure": (Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_UNCONFIGURED,
                                      State.PRIMARY_STATE_INACTIVE),
                        "activate": (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_INACTIVE,
                                     State.PRIMARY_STATE_ACTIVE)}[t]
    deadline = time.monotonic() + timeout
    pending = [change.call_async(ChangeState.Request(transition=Transition(id=tid)))]
    while True:
        answer = _answer(pending, executor, stop, min(ASK_AFTER, deadline - time.monotonic()))
        if answer is not None and answer.success:
            return
        got = _answer([get.call_async(GetState.Request())], executor, stop, ASK_AFTER)
        state = got.current_state.id if got is not None else None
        if state == goal:
            return
        if answer is not None:
            raise RuntimeError(f"{name}: transition '{t}' failed (see that node's log)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: transition '{t}' got no answer in {timeout:g} s")
        if state == start:
            pending.append(change.call_async(ChangeState.Request(transition=Transition(id=tid))))


def _answer(futures: list, executor, stop: Flag, limit: float):
    """The first answer among `futures` (removed from the list) within `limit` s, else None."""
    end = time.monotonic() + max(limit, 0.0)
    while True:
        for fut in futures:
            if fut.done():
                futures.remove(fut)
                return fut.result()
        if stop.is_set():
            raise Stopped
        if time.monotonic() >= end:
            return None
        executor.spin_once(timeout_sec=0.1)
