"""`emg-rcnn-ros`: the launch-equivalent runner and the live demo.

    emg-rcnn-ros launch estimate [name:=value ...]   same processes and parameters as
                                                     `ros2 launch emg_rcnn_ros estimate.launch.py`
    emg-rcnn-ros demo [--duration 20]                the main job: simulated amplifier -> live estimates
    emg-rcnn-ros autostart NODE [NODE ...]           configure and activate lifecycle nodes, then exit
                                                     (what the launch files run for autostart:=true)

The runner starts each node executable as its own process with the params file and overrides
from emg_rcnn_ros.graph, drives the lifecycle transitions when autostart:=true, stops the nodes on
SIGINT/SIGTERM (escalating per node, see launcher.py) and exits when they have."""

from __future__ import annotations

from .stopping import Stop, exit_now

Stop()  # the console script imports this module first: from here on a Ctrl-C is a clean stop

import argparse  # noqa: E402
import faulthandler  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import NoReturn  # noqa: E402

from .graph import GRAPHS, LAUNCH_ARGUMENTS, is_true  # noqa: E402
from .launcher import Launch, Stopped, change_states, log, parse_overrides  # noqa: E402


def cmd_launch(a: argparse.Namespace) -> int:
    stop = Stop()
    launch = Launch(a.graph, parse_overrides(a.args))
    code = 0
    try:
        launch.start()
        if is_true(launch.args["autostart"]):
            code = _autostart(launch.lifecycle_names(), stop)
        while not stop.event.wait(0.2):
            if exited := launch.exited():
                log(f"{', '.join(exited)}: stopping the others")
                code = code or 1
                break
    finally:
        code = max(code, launch.stop())
    return code


def cmd_autostart(a: argparse.Namespace) -> int:
    """The launch files' autostart: a short-lived process, stopped cleanly by Ctrl-C like the nodes.
    launch_ros's own ChangeState events wait on a client that launch destroys on Ctrl-C, and then
    `ros2 launch` exits 1 ("cannot use Destroyable because destruction was requested")."""
    return _autostart(a.nodes, Stop(), teardown_limit=4.5)


def _autostart(names: list[str], stop: Stop, teardown_limit: float | None = None) -> int:
    """Configure and activate the lifecycle nodes; a signal meanwhile is a clean stop. With
    `teardown_limit`, a native watchdog ends the process (exit 1) if destroying the node takes
    longer: destroying rclpy entities can block in Fast DDS (see nodes/process.py _deadline_exit)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    # One name per process: two namespaced launches may autostart at the same time.
    node = rclpy.create_node(f"emg_rcnn_launcher_{os.getpid()}", context=context)
    try:
        change_states(node, names, ["configure", "activate"], stop.event)
        print("emg-rcnn-ros: all lifecycle nodes active", flush=True)
        return 0
    except Stopped:
        return 0
    except RuntimeError as exc:
        log(str(exc))
        stop.event.set()
        return 1
    finally:
        if teardown_limit is not None:
            faulthandler.dump_traceback_later(teardown_limit, exit=True)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


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
    au = sub.add_parser("autostart", help="configure and activate lifecycle nodes, then exit")
    au.add_argument("nodes", nargs="+", help="fully qualified node names, e.g. /emg_acquisition")
    au.set_defaults(fn=cmd_autostart)
    from .demo import add_parser as add_demo

    add_demo(sub)
    return p


def main(argv: list[str] | None = None) -> NoReturn:
    """Every command ends with exit_now: its signal handler stays installed to the end (stopping.Stop)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.fn(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"emg-rcnn-ros {args.cmd}: error: {exc}", file=sys.stderr)
        code = 2
    exit_now(code)


if __name__ == "__main__":
    main()
