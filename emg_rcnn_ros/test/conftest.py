"""Shared fixtures. ROS isolation: every test process gets its own log dir; multi-process tests
pick a domain id of their own (see ros_env). Under pytest-xdist each worker draws domain ids from
its own range and runs BLAS/torch on one thread, so that workers neither cross on DDS nor
oversubscribe the cores (the node processes they start inherit both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.sim import SimConfig, simulate_session

os.environ.setdefault("ROS_LOG_DIR", str(Path(__file__).resolve().parents[2] / "build" / "ros_log"))

# pytest-xdist names its workers gw0, gw1, ...: one BLAS/torch thread per worker, here and in the
# processes it starts (torch reads the variable when it first builds its thread pool).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if _WORKERS > 32:  # each worker needs a few of the 100 usable domain ids (fresh_domain)
    raise RuntimeError(f"{_WORKERS} pytest-xdist workers: at most 32 can share the ROS domain ids (-n 32)")
_SLICE = 100 // _WORKERS  # domain ids 1-100, a slice of them per worker


def _domain(k: int) -> int:
    """The k-th domain id of this worker's slice, from a start that depends on the process: two test
    runs on one machine at once start at different ids (a fixed id per worker would always cross)."""
    return 1 + _WORKER * _SLICE + (os.getpid() * 7 + k * 13) % _SLICE


if _WORKERS > 1:
    from emg_rcnn_ros.nodes.process import blas_threads

    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    blas_threads(1)  # numpy's BLAS is already loaded
    os.environ["ROS_DOMAIN_ID"] = str(_domain(0))  # for tests that take the process's domain
_PROCESS_DOMAIN = int(os.environ.get("ROS_DOMAIN_ID") or 0)


def executable(name: str) -> str:
    """An installed console script: beside the interpreter (venv) or on PATH (colcon install)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} is not installed")
    return found


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `emg-rcnn` command in a real process."""
    return subprocess.run([executable("emg-rcnn"), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small simulated sessions of one subject: calibration (a) and a fresh one (b)."""
    d = tmp_path_factory.mktemp("sim")
    for name, seed, dur in (("a", 1, 90.0), ("b", 2, 40.0)):
        np.savez(d / f"{name}.npz", **simulate_session(SimConfig(seed=seed, rate=1000.0, channels=6), dur))
    return d


_domain_counter = [0]


def fresh_domain() -> int:
    """A ROS domain id for one test (1-100), so that the leftovers of the tests before it do not cross
    it: each xdist worker cycles through every id of its own slice (50 with two workers) before it
    uses one again, skipping the process's own domain."""
    while True:
        _domain_counter[0] += 1
        domain = _domain(_domain_counter[0])
        if domain != _PROCESS_DOMAIN:
            return domain


@pytest.fixture
def ros_env(tmp_path: Path) -> dict[str, str]:
    """Environment for node processes: own domain, discovery on this machine only, logs in tmp."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(fresh_domain()), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOCALHOST_ONLY="1", ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    return env


class Observer:
    """An rclpy node in the test process, spinning in a thread, on the domain of `env`."""

    def __init__(self, env: dict[str, str]) -> None:
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node("test_observer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        import contextlib

        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, Exception):
            self.executor.spin()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def observer(ros_env: dict[str, str]):
    pytest.importorskip("rclpy")
    obs = Observer(ros_env)
    yield obs
    obs.close()


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def transition(observer: Observer, node_name: str, transition_id: int, timeout: float = 30.0) -> bool:
    """Call a lifecycle transition from the observer (its executor thread completes the future)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = observer.node.create_client(ChangeState, f"{node_name}/change_state")
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"{node_name}/change_state not available")
    fut = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    if not wait_for(fut.done, timeout):
        raise TimeoutError(f"{node_name}: transition {transition_id} timed out")
    return bool(fut.result().success)


class Launched:
    """`emg-rcnn-ros launch GRAPH args...` as a real process group, its output collected."""

    def __init__(self, env: dict[str, str], *args: str, graph: str = "estimate", cwd: Path | None = None,
                 new_session: bool = False) -> None:
        import threading

        self.proc = subprocess.Popen([executable("emg-rcnn-ros"), "launch", graph, *args], env=env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=new_session)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)


def trainer_has_truth(observer: Observer, timeout: float = 60.0) -> bool:
    """Whether emg_trainer reports fresh ground truth on /diagnostics (it refuses to record without)."""
    from diagnostic_msgs.msg import DiagnosticArray

    fresh: list[bool] = []

    def cb(msg) -> None:
        for st in msg.status:
            if st.name.endswith("emg_trainer"):
                age = {kv.key: kv.value for kv in st.values}.get("ground_truth_age_s", "none")
                fresh.append(age != "none" and float(age) < 0.5)

    sub = observer.node.create_subscription(DiagnosticArray, "/diagnostics", cb, 50)
    try:
        return wait_for(lambda: any(fresh), timeout)
    finally:
        observer.node.destroy_subscription(sub)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small RCNN of simulated subject 0 (the acquisition node's default subject): for tests of
    processes and tools, not of accuracy."""
    from emg_rcnn_ros.core.bundle import save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.sessions import Session
    from emg_rcnn_ros.core.train import train

    d = simulate_session(SimConfig(rate=2000.0, channels=8, seed=100, subject_seed=0), 20.0)
    s = Session(d["emg"].astype(float), 2000.0, d["joint_position"], d["joint_time"],
                list(map(str, d["joint_names"])), list(map(str, d["channel_names"])))
    model, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=20, folds=1), progress=False)
    return save_bundle(tmp_path_factory.mktemp("small") / "model", cfg, model)


def trigger(observer: Observer, service: str, timeout: float = 30.0):
    """Call a std_srvs/Trigger service from the observer; returns the response."""
    from std_srvs.srv import Trigger

    client = observer.node.create_client(Trigger, service)
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"{service} not available")
    fut = client.call_async(Trigger.Request())
    if not wait_for(fut.done, timeout / 2):
        # Right after discovery the server's response writer may not yet know our reader, and the
        # response is lost (a DDS race, not the node's). Ask once more; a request that did run
        # shows in the second answer (e.g. "already recording"), so nothing is hidden.
        fut = client.call_async(Trigger.Request())
        if not wait_for(fut.done, timeout / 2):
            raise TimeoutError(f"{service} timed out (asked twice)")
    return fut.result()


def run_live(observer: Observer, env: dict[str, str], model: Path, seconds: float = 8.0):
    """The estimate graph with the simulated amplifier for `seconds` after the first estimate:
    (estimates [(stamp_ns, receipt_ns, positions, names)], truth [(stamp_ns, ...)], exit code, output)."""
    import time

    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    est: list = []
    truth: list = []

    def keep(store: list):
        return lambda m: store.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time_ns(),
                                       list(m.position), list(m.name)))

    observer.node.create_subscription(JointState, "emg/joint_estimates", keep(est), qos_profile_sensor_data)
    observer.node.create_subscription(JointState, "emg/ground_truth", keep(truth), 100)
    run = Launched(env, "autostart:=true", f"model_path:={model}")
    try:
        # Both streams matched before the measured seconds: estimates from before the first truth
        # message could only be scored against a guess of it (a loaded machine discovers late).
        assert wait_for(lambda: len(est) > 0 and len(truth) > 0, 60.0), run.text()
        est.clear()
        time.sleep(seconds)
        got = list(est)
    finally:
        code = run.stop()
    return got, list(truth), code, run.text()


def live_metrics(got: list, truth: list) -> dict:
    """Metrics of live estimates against the truth interpolated at the estimates' stamps."""
    import numpy as np

    from emg_rcnn_ros.core.evaluate import metrics

    ts, ty = np.array([t[0] for t in truth]), np.array([t[2] for t in truth])
    known = [e for e in got if ts[0] <= e[0] <= ts[-1]]  # only where the truth is known, not extrapolated
    assert len(known) >= 0.8 * len(got), f"{len(got) - len(known)} of {len(got)} estimates outside the truth's span"
    got = known
    stamps = np.array([e[0] for e in got])
    true_at = np.stack([np.interp(stamps, ts, ty[:, j]) for j in range(ty.shape[1])], axis=1)
    return metrics(true_at, np.array([e[2] for e in got]), got[0][3])
