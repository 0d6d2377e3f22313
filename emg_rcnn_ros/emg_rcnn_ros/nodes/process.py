"""The process around every node: start-up, spinning, and a shutdown that finishes within
`STOP_BUDGET` seconds of the first SIGINT or SIGTERM, whatever the node was doing.

Why not rclpy's own signal handlers: they shut the context down under whatever is running (a
lifecycle transition, a runner's service wait) and are uninstalled on shutdown, so a second
SIGINT (a terminal's Ctrl-C reaches the node and `ros2 launch` forwards another) kills the process
mid-teardown with -2. Here the main thread owns the signals: during start-up (imports of torch,
node construction) a signal aborts at once; once running, the executor spins in a thread and the
main thread waits, so a signal is seen immediately and starts an ordered teardown (executor,
node's own threads, node, context); later signals change nothing. If teardown is stuck past the
budget, every thread's stack is dumped to stderr and the process exits anyway, after the node's
`close()` (which is where a node puts what must not be lost, e.g. closing a bag).

This module imports nothing heavy at load time: the console scripts point here, so that a signal
during the seconds of importing torch is already handled. SIGUSR1 dumps all threads' stacks
(faulthandler), which the runner asks for before it kills a node that did not stop."""

from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import NoReturn

from ..stopping import Flag, exit_now

STOP_BUDGET = 1.8  # s from the first signal to the process exit, whatever happens
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(BaseException):
    """Raised by the signal handler while the node is still starting."""


class _Signals:
    """Main-thread signal handling with four phases: importing (exit at once), starting (raise),
    running (set the flag), stopping (nothing more)."""

    def __init__(self) -> None:
        self.stop = Flag()  # set by the handler: no lock there (see Flag)
        self.importing = True  # nothing started yet: no context, no node
        self.starting = True
        self.failed = False  # the executor died: exit non-zero
        for sig in _SIGNALS:
            signal.signal(sig, self._handle)
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        faulthandler.enable(all_threads=True)  # a crash in native code prints every thread's stack

    def _handle(self, signum: int, frame: object) -> None:
        # A second signal (a terminal's Ctrl-C plus the one launch forwards) returns here and
        # changes nothing. The handler stays installed rather than SIG_IGN: a signal already
        # received but not yet handled would then end the main thread with "OSError: Signal 15
        # ignored due to race condition" (seen in CI). The process ends with os._exit, so the
        # interpreter's finalization never resets the handlers under a late signal. Nothing here
        # takes a lock (a signal handled inside this handler would wait for it forever): the main
        # thread arms the shutdown deadline once it sees the flag.
        if self.stop.is_set():
            return
        self.stop.set()
        if self.importing:
            # Nothing to close yet: end here rather than raise into an import that may not survive
            # it (torch's or scipy's extensions initialising; bench/stop.py, Ctrl-C 1-4 s after start).
            exit_now(0)
        if self.starting:
            raise _Interrupted


_closed = threading.Event()  # set once the node's close() has run: a forced exit then loses nothing


NATIVE_GRACE = 2.7  # s after the budget: the native backstop, before `ros2 launch` escalates (5 s)


_arming = threading.Lock()  # taken once, never released: the deadline is armed once per process


def _deadline_exit(budget: float) -> None:
    """A daemon timer that ends the process if the orderly teardown has not within `budget`, armed once
    per process (later calls change nothing). Behind it, faulthandler's native watchdog ends it
    NATIVE_GRACE later with exit code 1 and every thread's stack: a native call (rclpy into Fast
    DDS, e.g. destroying a publisher) that blocks while holding the GIL stops every Python thread,
    this timer included, and the node would stay until `ros2 launch` kills it (seen once in 42
    Ctrl-Cs: silent until SIGKILL at 10 s). Such calls usually return within a few seconds, and the
    timer then ends the process with 0; the watchdog waits that long before it calls the stop a
    failure."""
    if not _arming.acquire(blocking=False):  # atomic test-and-set: two threads may stop at once
        return
    faulthandler.dump_traceback_later(budget + NATIVE_GRACE, exit=True)

    def expire() -> None:
        print(f"[{os.path.basename(sys.argv[0])}] shutdown still running after {budget:g} s; "
              "thread stacks follow, then exit", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(0 if _closed.is_set() else 1)

    t = threading.Timer(budget, expire)
    t.daemon = True
    t.start()


def blas_threads(n: int) -> bool:
    """Limit BLAS/OpenMP threads to n. threadpoolctl does it at run time where it is installed (it has
    no rosdep key); without it, the variables set at import of this module hold BLAS to one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(n)
    return True


# Before numpy or torch load a BLAS: one thread unless the user asked otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def run(make_node: Callable[[], object] | str) -> int:
    """Spin `make_node()` until SIGINT/SIGTERM, then shut down in order. Returns the exit code.
    A 'module:Class' is imported first, before rclpy starts: a signal until then ends the process.

    BLAS is limited to one thread: the nodes work on small arrays per message, and OpenBLAS's
    spinning worker threads would otherwise burn a core each and add jitter to every callback."""
    signals = _Signals()
    node = executor = spinner = None
    context_up = False
    try:
        import gc

        import rclpy
        from rclpy.signals import SignalHandlerOptions

        blas_threads(1)
        if isinstance(make_node, str):
            module, cls = make_node.split(":")
            make_node = getattr(importlib.import_module(module), cls)
        signals.importing = False
        rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
        context_up = True
        node = make_node()
        # Built: from here a signal only sets the flag, and the wait below ends at once. Raised
        # into rclpy's constructors it left a half-built executor whose __del__ printed a traceback
        # (CI, a node signalled as soon as it appeared).
        signals.starting = False
        # Everything allocated so far (torch, numpy, messages' type support) lives for the whole
        # run: freezing it keeps the cyclic GC's full collections short on the message path.
        gc.collect()
        gc.freeze()
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, node, signals), name="executor", daemon=True)
        spinner.start()
        # In short waits: a signal that the kernel delivers to another thread (an executor or DDS
        # thread) only flags it, and the main thread runs the handler when it next runs Python
        # code; blocked in one long wait it did not (a node stopped only when a later SIGTERM
        # reached the main thread, 5 s on, in CI).
        while not signals.stop.wait(0.1):
            pass
    except _Interrupted:
        pass
    except Exception as exc:
        if not signals.stop.is_set():
            raise
        # Stopped while starting, and the interruption came back as another exception: a C
        # extension's initialisation (pybind11, e.g. scipy's HiGHS) turns it into "ImportError:
        # initialization failed" (a node signalled 3.5 s after `ros2 launch`, bench/stop.py).
        print(f"[{os.path.basename(sys.argv[0])}] start-up interrupted ({exc!r})", file=sys.stderr, flush=True)
    finally:
        signals.starting = False
        _deadline_exit(STOP_BUDGET)
        _teardown(node, executor, spinner, context_up)
    return 1 if signals.failed else 0


def _spin(executor, node, signals: _Signals) -> None:
    """The executor's thread. An exception here ends the process the same way a signal does."""
    try:
        executor.spin()
    except Exception as exc:  # noqa: BLE001 - reported, then the node stops as on a signal
        if not signals.stop.is_set():
            node.get_logger().fatal(f"executor stopped: {exc!r}")
            signals.failed = True
            signals.stop.set()
            _deadline_exit(STOP_BUDGET)


def _teardown(node, executor, spinner: threading.Thread | None, context_up: bool) -> None:
    """Each step runs even if an earlier one failed; none waits without a bound."""
    def attempt(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the next steps must still run
            print(f"shutdown: {what} failed: {exc!r}", file=sys.stderr, flush=True)

    if executor is not None:
        attempt("executor shutdown", lambda: executor.shutdown(timeout_sec=0))
    if spinner is not None:
        spinner.join(timeout=1.0)  # a running callback (e.g. a transition) finishes or is left behind
    if node is not None:
        close = getattr(node, "close", None)
        if close is not None:
            attempt("close", close)
    _closed.set()
    if node is not None and (spinner is None or not spinner.is_alive()):
        attempt("destroy_node", node.destroy_node)
    if context_up:  # rclpy was imported in full. An import that a signal cut short is not tried
        import rclpy  # again: a C extension left half-initialised fails it (yaml: "partially initialized")

        attempt("rclpy shutdown", rclpy.try_shutdown)


def main_of(target: str) -> NoReturn:
    """Run 'module:Class' as a node process; signals are handled before the module is imported.
    The process ends with os._exit once the ordered teardown is done (the node closed, the context
    shut down): the interpreter's finalization would then destroy rclpy's native objects in no set
    order, beside an executor thread that may still be in a callback, and a node signalled during
    autostart once died there with SIGSEGV in CI. An exception that escapes is printed and ends the
    process (1) the same way: finalization also resets the signal handlers to SIG_DFL, and a second
    Ctrl-C then killed a node with -2."""
    try:
        code = run(target)
    except BaseException:  # noqa: BLE001 - reported; the process still ends by exit_now
        traceback.print_exc()
        code = 1
    exit_now(code)


def _entry(target: str) -> Callable[[], NoReturn]:
    def main() -> NoReturn:
        main_of(target)

    return main


acquisition = _entry("emg_rcnn_ros.nodes.acquisition:Acquisition")
features = _entry("emg_rcnn_ros.nodes.features:Features")
estimator = _entry("emg_rcnn_ros.nodes.estimator:Estimator")
command = _entry("emg_rcnn_ros.nodes.command:Command")
trainer = _entry("emg_rcnn_ros.nodes.trainer:Trainer")
