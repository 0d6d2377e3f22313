"""Stopping, with real processes: every node exits cleanly (exit 0, no traceback) on SIGINT or
SIGTERM, while starting and while running, also when the signal comes twice (a terminal's Ctrl-C
plus the launcher's); the runner stops cleanly when signalled during autostart, and takes two
signals received together as one; a node that
ignores SIGINT is named, stack-dumped and terminated by the runner.

Exit times are bounded loosely here (a loaded CI machine); bench/stop.py measures them."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emg_rcnn_ros.graph import NodeSpec
from emg_rcnn_ros.launcher import Launch
from emg_rcnn_ros.share import executable_path

from .conftest import Launched, wait_for

pytestmark = pytest.mark.ros

EXIT_BOUND = 8.0  # s; each node's own budget is 1.8 s (nodes/process.py), this leaves room for load


def _node(env: dict[str, str], exe: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(executable_path(exe)), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop_and_check(proc: subprocess.Popen, sig: int, twice: bool) -> str:
    t = time.monotonic()
    proc.send_signal(sig)
    if twice:
        time.sleep(0.05)
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    took = time.monotonic() - t
    assert proc.returncode == 0, (proc.returncode, out)
    assert "Traceback" not in out and "still running" not in out, out
    assert took < EXIT_BOUND, (took, out)
    return out


def _exits_cleanly(script: str, env: dict[str, str]) -> str:
    """Run a Python script as a process; it must exit 0. Returns its output."""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 0, (done.returncode, out)
    return out


@pytest.mark.parametrize("exe", ["emg_acquisition", "emg_features", "emg_estimator", "emg_trainer"])
def test_node_stops_cleanly_while_running(exe: str, ros_env, observer, tmp_path: Path) -> None:
    proc = _node(ros_env, exe, "--ros-args", "-p", f"data_dir:={tmp_path}" if exe == "emg_trainer" else "x:=0")
    try:
        assert wait_for(lambda: exe in observer.node.get_node_names(), 60.0), "node never appeared"
    finally:
        if proc.poll() is None:
            _stop_and_check(proc, signal.SIGINT, twice=exe != "emg_features")


@pytest.mark.parametrize(("exe", "sig"), [("emg_estimator", signal.SIGTERM), ("emg_features", signal.SIGINT)])
def test_node_stops_cleanly_while_starting(exe: str, sig: int, ros_env) -> None:
    proc = _node(ros_env, exe)
    # As soon as the process catches SIGTERM (only our handler does), it is importing rclpy and torch.
    assert wait_for(lambda: _catches(proc.pid, signal.SIGTERM) or proc.poll() is not None, 30.0, step=0.002)
    assert proc.poll() is None
    out = _stop_and_check(proc, sig, twice=True)
    assert "configured" not in out


_CUT_SHORT = """
import importlib.abc, os, signal, sys, time
from emg_rcnn_ros.nodes.process import main_of

class CutShort(importlib.abc.MetaPathFinder):
    # The first import of rclpy receives a real SIGINT; a second one fails, as a C extension whose
    # initialisation a signal cut short does (yaml: "partially initialized module").
    tries = 0

    def find_spec(self, name, path=None, target=None):
        if name != "rclpy":
            return None
        CutShort.tries += 1
        if CutShort.tries > 1:
            raise ImportError("rclpy imported again after its import was cut short")
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises as this returns
        time.sleep(5)
        return None

sys.meta_path.insert(0, CutShort())
main_of("emg_rcnn_ros.nodes.features:Features")
"""


def test_node_signalled_while_importing_rclpy_exits_cleanly(ros_env) -> None:
    """A signal that lands inside rclpy's import ends the node with 0 and no traceback; the
    teardown does not import rclpy again (found by signalling nodes at random moments)."""
    out = _exits_cleanly(_CUT_SHORT, ros_env)
    assert "Traceback" not in out and "failed" not in out, out


_CONVERTED = """
import os, signal, sys, time, types
from emg_rcnn_ros.nodes.process import main_of

def converts():
    # The node's construction (rclpy up) receives a real SIGINT and turns the interruption into
    # ImportError, as a C extension's initialisation (pybind11) does.
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises as this returns
        time.sleep(5)
    except BaseException as exc:
        raise ImportError("initialization failed") from exc

sys.modules["converts"] = types.SimpleNamespace(Node=converts)
main_of("converts:Node")
"""


def test_node_signalled_while_a_c_extension_initialises_exits_cleanly(ros_env) -> None:
    """A signal whose interruption an extension's initialisation turns into ImportError is still a
    clean stop (exit 0, no traceback); found as "ImportError: initialization failed" from scipy,
    then death by the second SIGINT (-2), under bench/stop.py."""
    out = _exits_cleanly(_CONVERTED, ros_env)
    assert "Traceback" not in out and "start-up interrupted" in out, out


_FRAGILE_IMPORT = """
import importlib.abc, os, signal, sys, time
from emg_rcnn_ros.nodes.process import main_of

class Fragile(importlib.abc.MetaPathFinder):
    # The node's module receives a real SIGINT while it imports, and does not survive an
    # exception raised there (os.abort), as an extension interrupted mid-initialisation may not.
    def find_spec(self, name, path=None, target=None):
        if name != "emg_rcnn_ros.nodes.features":
            return None
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:
            os.abort()
        return None

sys.meta_path.insert(0, Fragile())
main_of("emg_rcnn_ros.nodes.features:Features")
"""


def test_node_signalled_while_importing_its_module_exits_at_once(ros_env) -> None:
    """Before rclpy starts there is nothing to close, so a signal ends the process there and then
    (exit 0), and nothing is raised into the import (bench/stop.py: a node importing torch died)."""
    out = _exits_cleanly(_FRAGILE_IMPORT, ros_env)
    assert "Traceback" not in out and "Fatal" not in out, out


_WEDGED = """
import ctypes, sys, types
from emg_rcnn_ros.nodes.process import main_of

def wedged():
    from rclpy.node import Node

    class Wedged(Node):
        def destroy_node(self):
            # A native call that blocks and keeps the GIL, as a stuck DDS entity deletion does.
            ctypes.PyDLL(None).sleep(60)

    node = Wedged("emg_wedged")
    # Said from the executor's thread, so that the node is past its start-up when signalled.
    once = node.create_timer(0.5, lambda: (print("ready", flush=True), once.cancel()))
    return node

sys.modules["wedge"] = types.SimpleNamespace(wedged=wedged)
main_of("wedge:wedged")
"""


def test_node_whose_teardown_holds_the_gil_still_exits(ros_env) -> None:
    """A teardown stuck in native code with the GIL held stops every Python thread, the node's own
    deadline timer included; the native watchdog still ends the process, with exit code 1 and the
    stack of the stuck call, long before `ros2 launch` would kill it (10 s)."""
    proc = subprocess.Popen([sys.executable, "-c", _WEDGED], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, (proc.returncode, out)
    assert "in destroy_node" in out, out
    assert time.monotonic() - t < EXIT_BOUND, out


_TGKILL = {"x86_64": 234, "aarch64": 131}  # syscall numbers


@pytest.mark.skipif(platform.machine() not in _TGKILL, reason="tgkill syscall number unknown here")
def test_node_stops_when_the_signal_lands_on_another_thread(ros_env, observer) -> None:
    """The kernel may deliver a process's SIGINT to any thread (an executor or DDS thread); the main
    thread must still run the handler promptly. Sent here with tgkill to each non-main thread."""
    import ctypes

    proc = _node(ros_env, "emg_features")
    try:
        assert wait_for(lambda: "emg_features" in observer.node.get_node_names(), 60.0), "node never appeared"
        # Threads the kernel could pick: not the main one, SIGINT not blocked (SigBlk).
        others = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")
                  if int(t) != proc.pid and not _blocked(proc.pid, int(t), signal.SIGINT)]
        assert others
        libc = ctypes.CDLL(None, use_errno=True)
        for tid in others:  # tgkill(2); the first thread still there receives it
            if libc.syscall(_TGKILL[platform.machine()], proc.pid, tid, int(signal.SIGINT)) == 0:
                break
        out, _ = proc.communicate(timeout=EXIT_BOUND)
    finally:
        proc.kill()
    assert proc.returncode == 0, (proc.returncode, out)
    assert "Traceback" not in out and "still running" not in out, out


_BOTH_PENDING = """
import os, signal, time
from emg_rcnn_ros.stopping import Stop, exit_now
Stop()
both = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, both)  # as if the main thread were in a long native call
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # both now received, neither handled yet
time.sleep(0.2)
print("stopped" if Stop.event.is_set() else "running", flush=True)
os.kill(os.getpid(), signal.SIGINT)  # one more, as the process ends
exit_now(0)
"""


def test_runner_takes_two_signals_received_together_as_one_stop() -> None:
    """The runner and the autostart helper (launcher.Stop): SIGINT and SIGTERM both received before
    the first is handled (`ros2 launch` escalates while the main thread is in a native call) are one
    stop request, and a signal as the process ends changes nothing; no "OSError: Signal 15 ignored
    due to race condition", no death by signal."""
    out = _exits_cleanly(_BOTH_PENDING, dict(os.environ))
    assert out.strip() == "stopped", out


_NESTED = """
import faulthandler, os, signal, sys
faulthandler.dump_traceback_later(30, exit=True)  # a process that hangs fails, with its stacks
if sys.argv[1] == "runner":
    from emg_rcnn_ros.stopping import Stop
    Stop()
    def fresh():
        Stop.event = type(Stop.event)()
        return Stop.event
else:
    from emg_rcnn_ros.nodes.process import _Signals
    signals = _Signals()
    signals.importing = signals.starting = False  # running: the phase a Ctrl-C usually finds
    def fresh():
        signals.stop = type(signals.stop)()
        return signals.stop
reached = 0
for k in range(1, 120):
    flag, seen = fresh(), [0]
    def hook(frame, event, arg, k=k):
        seen[0] += 1
        if seen[0] == k:  # the second signal, handled right here: inside the first one's handling
            os.kill(os.getpid(), signal.SIGINT)
        return hook
    sys.setprofile(hook)
    sys.settrace(hook)
    os.kill(os.getpid(), signal.SIGINT)
    flag.wait(0.05)
    sys.settrace(None)
    sys.setprofile(None)
    assert flag.is_set(), k
    reached = max(reached, min(seen[0], k))
print("positions", reached)
"""


@pytest.mark.parametrize("who", ["runner", "node"])
def test_a_second_signal_anywhere_in_the_first_ones_handling_is_one_stop(who: str) -> None:
    """A second SIGINT handled at any point of the first one's handler and of the main thread's
    wait (each Python line, call and return, and each C call's return, in turn) changes nothing: the
    stop is requested and the process goes on to end. The runner forwards a Ctrl-C that its
    children also get from the terminal, so two signals a few ms apart are the usual case; with a
    threading.Event the second handler waited for the lock the first one held, for ever (an
    estimator under the runner, bench/stop.py, killed at 8 s)."""
    done = subprocess.run([sys.executable, "-c", _NESTED, who], capture_output=True, text=True, timeout=90)
    out = done.stdout + done.stderr
    assert done.returncode == 0, (done.returncode, out)
    assert int(out.split("positions")[1]) >= 10, out  # the hook reached well into the handling


def _sig_bit(status: str, field: str, sig: int, default: bool) -> bool:
    """Bit `sig` of a signal mask line (SigBlk, SigCgt) of a /proc status file; `default` if gone."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith(field + ":"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return default


def _blocked(pid: int, tid: int, sig: int) -> bool:
    """Whether thread `tid` blocks `sig`; a thread that is gone counts as blocking it."""
    return _sig_bit(f"/proc/{pid}/task/{tid}/status", "SigBlk", sig, True)


def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for `sig`."""
    return _sig_bit(f"/proc/{pid}/status", "SigCgt", sig, False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runner_stops_cleanly_when_signalled_during_autostart(sig: int, small_model: Path, ros_env,
                                                              observer) -> None:
    """The signal comes as soon as the lifecycle services exist, while configure/activate are
    being driven; SIGINT goes to the whole process group, as a terminal's Ctrl-C does."""
    from lifecycle_msgs.srv import GetState

    run = Launched(ros_env, "autostart:=true", f"model_path:={small_model}", new_session=True)
    client = observer.node.create_client(GetState, "/emg_acquisition/get_state")
    assert client.wait_for_service(timeout_sec=60.0), run.text()
    if sig == signal.SIGINT:
        os.killpg(run.proc.pid, sig)
    else:
        run.proc.send_signal(sig)
    code = run.proc.wait(30)
    text = run.text()
    assert code == 0, text
    assert "did not exit" not in text and "exited with" not in text and "Traceback" not in text, text


def test_runner_names_dumps_and_terminates_a_node_that_ignores_sigint(tmp_path: Path) -> None:
    """The launcher's escalation, against a process that ignores SIGINT (as a hung node would)."""
    stubborn = ("import faulthandler, signal, sys, time\n"
                "faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
                "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "def wedged():\n    time.sleep(120)\n"
                "wedged()\n")
    launch = Launch("estimate", {})
    err = tmp_path / "stderr"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, stderr=f, text=True)
        assert proc.stdout.readline().strip() == "ready"
        launch.procs.append((NodeSpec("emg_stubborn", "none", False), proc))
        result = subprocess.CompletedProcess([], 0)
        t = time.monotonic()
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            result.returncode = launch.stop(sigint_timeout=1.0, sigterm_timeout=2.0)
    assert time.monotonic() - t < 20.0
    assert result.returncode == signal.SIGTERM  # terminated, and reported as a failure
    assert "emg_stubborn (pid" in buf.getvalue() and "did not exit" in buf.getvalue(), buf.getvalue()
    dump = err.read_text()
    assert "in wedged" in dump, dump  # the stack dump came before SIGTERM
