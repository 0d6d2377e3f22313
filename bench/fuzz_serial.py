"""Fuzz a running emg_acquisition over a pty, then unplug and replug it.

    python bench/fuzz_serial.py [--bursts 10000] [--replugs 20] [--out runs/fuzz_serial.json]

For each protocol (generic framed, OpenBCI Cyton): the node runs as a real process on a pty,
configured and activated. This process writes `--bursts` byte bursts: valid frames, random bytes,
truncated frames, frames with flipped bytes, and mixes of these. Counted: the node still running and
active, EmgArray messages received, any non-finite sample published, and the node's own counters
(frames, corrupt, skipped bytes) from /diagnostics. Then the pty is closed and reopened `--replugs`
times: the time from replug to the first new EmgArray is the recovery time."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emg_rcnn_ros"))
from common import BENCH_DOMAINS, emit, machine  # noqa: E402
from test.test_drivers import Pty  # noqa: E402

from emg_rcnn_ros.drivers.protocols import encode_cyton, encode_framed  # noqa: E402
from emg_rcnn_ros.share import executable_path  # noqa: E402


def valid(proto: str, counter: int, rng) -> bytes:
    if proto == "serial":
        return encode_framed(counter, rng.integers(-30000, 30000, (4, 2)), 2)
    return encode_cyton(counter % 256, rng.integers(-8_000_000, 8_000_000, 8))


def burst(proto: str, counter: int, rng) -> bytes:
    kind = rng.integers(0, 5)
    frame = valid(proto, counter, rng)
    if kind == 0:
        return frame
    if kind == 1:
        return rng.bytes(int(rng.integers(1, 200)))
    if kind == 2:
        return frame[: int(rng.integers(1, len(frame)))]
    if kind == 3:
        b = bytearray(frame)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return bytes(b)
    return rng.bytes(int(rng.integers(0, 50))) + frame + valid(proto, counter + 4, rng)[:10]


class Watch:
    def __init__(self, domain: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from emg_rcnn_ros_msgs.msg import EmgArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("fuzz_bench", context=self.ctx)
        self.reset()
        self.last_msg = 0.0
        self.diag: dict[str, str] = {}
        qos = QoSProfile(depth=5000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(EmgArray, "emg/raw", self._on_emg, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.types = (ChangeState, GetState)
        ex = SingleThreadedExecutor(context=self.ctx)
        ex.add_node(self.node)
        threading.Thread(target=ex.spin, daemon=True).start()

    def reset(self) -> None:
        self.msgs = self.nonfinite = self.samples = self.skipped = 0
        self.next_seq: int | None = None

    def _on_emg(self, m) -> None:
        self.msgs += 1
        self.samples += m.num_samples
        if self.next_seq is not None and m.sequence > self.next_seq:
            self.skipped += m.sequence - self.next_seq  # samples the stream's sequence jumps over
        self.next_seq = m.sequence + m.num_samples
        self.last_msg = time.monotonic()
        if not np.all(np.isfinite(np.asarray(m.data))):
            self.nonfinite += 1

    def _on_diag(self, m) -> None:
        for s in m.status:
            if "emg_acquisition" in s.name:
                self.diag = {kv.key: kv.value for kv in s.values}

    def call(self, client, request, timeout: float = 30.0):
        assert client.wait_for_service(timeout_sec=timeout)
        fut = client.call_async(request)
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        return fut.result()


def run_protocol(proto: str, bursts: int, replugs: int, env: dict, watch: Watch, tmp: Path) -> dict:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    name = f"emg_acquisition_{proto}"  # a name of its own: no stale endpoints of the other run answer
    watch.change = watch.node.create_client(ChangeState, f"/{name}/change_state")
    watch.get = watch.node.create_client(GetState, f"/{name}/get_state")
    pty = Pty(tmp / f"tty_{proto}")
    params = ["driver:=" + proto, f"port:={pty.link}", "read_timeout:=0.05", "reconnect_max_backoff:=0.2"]
    if proto == "serial":
        params += ["channels:=2", "sample_rate:=1000.0"]
    args = [str(executable_path("emg_acquisition")), "--ros-args", "-r", f"__node:={name}"]
    args += [x for p in params for x in ("-p", p)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rng = np.random.default_rng(0)
    out: dict = {"protocol": proto}
    try:
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            res = watch.call(watch.change, ChangeState.Request(transition=Transition(id=t)))
            if res is None or not res.success:
                proc.terminate()
                raise RuntimeError(f"{proto}: transition {t} failed: {res}\n{proc.communicate()[0][-3000:]}")
        time.sleep(1.0)  # pyserial flushes input on open
        watch.reset()
        counter = 0
        for _ in range(bursts):
            pty.write(burst(proto, counter, rng))
            counter += 4
            time.sleep(0.0005)
        time.sleep(2.0)
        state = watch.call(watch.get, GetState.Request()).current_state.label
        # Deactivating publishes the partial chunk the node still holds: then every counter can
        # be compared with what was published. Active again for the replugs.
        deactivated = watch.call(watch.change, ChangeState.Request(transition=Transition(
            id=Transition.TRANSITION_DEACTIVATE))).success
        time.sleep(2.5)  # the next diagnostics period
        c = dict(watch.diag)
        out.update(bursts=bursts, alive=proc.poll() is None, state=state, messages=watch.msgs,
                   nonfinite_messages=watch.nonfinite, counters=c)
        # Consistency of the node's counters with what it published: every sample of every accepted
        # frame is published, and the samples its counter says were dropped are the sequence's jumps.
        per_frame = 4 if proto == "serial" else 1
        unpublished = int(c.get("frames", -1)) * per_frame - watch.samples
        dropped = int(c.get("dropped_samples", -1))
        out["consistency"] = {"deactivated": deactivated, "samples_published": watch.samples,
                              "frame_samples_minus_published": unpublished,
                              "sequence_jumps_samples": watch.skipped, "dropped_samples": dropped,
                              "consistent": unpublished == 0 and watch.skipped == dropped}
        watch.call(watch.change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
        time.sleep(1.0)
        recover = []
        for _ in range(replugs):
            pty.unplug()
            time.sleep(0.3)
            pty.plug()
            t_plug = time.monotonic()
            got = False
            while time.monotonic() - t_plug < 10.0 and not got:
                before = watch.msgs
                pty.write(b"".join(valid(proto, counter + 4 * i, rng) for i in range(10)))
                counter += 40
                time.sleep(0.02)
                got = watch.msgs > before
            recover.append(time.monotonic() - t_plug if got else None)
        ok = [r for r in recover if r is not None]
        out["replug"] = {"count": replugs, "recovered": len(ok), "median_s": float(np.median(ok)) if ok else None,
                         "max_s": float(max(ok)) if ok else None}
        out["alive_at_end"] = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
        pty.unplug()
        watch.node.destroy_client(watch.change)
        watch.node.destroy_client(watch.get)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bursts", type=int, default=10000)
    ap.add_argument("--replugs", type=int, default=20)
    ap.add_argument("--protocols", nargs="+", default=["serial", "openbci_cyton"])
    ap.add_argument("--out", default="runs/fuzz_serial.json")
    a = ap.parse_args()
    domain = BENCH_DOMAINS["fuzz"]
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")  # this process too
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ROS_LOG_DIR=f"{tmp}/log")
        watch = Watch(domain)
        results = [run_protocol(p, a.bursts, a.replugs, env, watch, Path(tmp)) for p in a.protocols]
    emit({"machine": machine(), "results": results}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
