"""emg_trainer: records EMG with ground-truth joint angles into rosbag2 bags and trains
per-subject models from them.

Services (std_srvs/Trigger): ~/start_recording, ~/stop_recording, ~/train. Bags go to
<data_dir>/<subject>/<session>/ (mcap, or sqlite3), self-described in custom_data. Training runs
`emg-rcnn train` as a separate process over all of the subject's bags, so the executor never
blocks; its progress is published on ~/train_progress and logged; the bundle goes to
<model_dir>/<subject>/.

Nothing recorded is lost: SIGINT/SIGTERM close the bag; the recorder is flushed every second;
recording is refused below `min_free_space` bytes free and stopped cleanly (keeping what was
written) when the disk fills."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from emg_rcnn_ros_msgs.msg import EmgArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..bags import EMG_TOPIC, BagRecorder, is_bag
from .diagnostics import Diagnostics
from .params import declare, param
from .process import run


class Trainer(Node):
    def __init__(self) -> None:
        super().__init__("emg_trainer")
        for name, default, desc in (
            ("data_dir", "data", "root directory of recordings: <data_dir>/<subject>/<session>/"),
            ("model_dir", "models", "root directory of per-subject models: <model_dir>/<subject>/"),
            ("subject", "subject01", "subject id"),
            ("session", "", "session name of the next recording; empty: generated from the time"),
            ("ground_truth_topic", "emg/ground_truth", "sensor_msgs/JointState topic with measured angles"),
            ("ground_truth_timeout", 1.0, "refuse to start recording when no ground truth arrived for this long (s)"),
            ("storage", "mcap", "bag storage: mcap | sqlite3"),
            ("min_free_space", 500e6, "refuse to record with less free disk space than this (bytes)"),
            ("notes", "", "free text stored in each bag's metadata"),
            ("train_arch", "rcnn", "architecture trained by ~/train: rcnn | cnn | svr"),
            ("train_max_steps", 3000, "~/train: optimiser steps at most, per held-out fold"),
            ("calibration_trials", ["elbow flexion and extension:20", "wrist flexion and extension:20",
                                    "elbow and wrist together, freely:30"],
             "guided calibration (~/calibrate): 'prompt:seconds' per trial, each recorded as its own session"),
            ("calibration_rest", 5.0, "guided calibration: rest before each trial (s)"),
        ):
            declare(self, name, default, desc)
        self.recorder: BagRecorder | None = None
        self.first_emg: EmgArray | None = None
        self.lock = threading.Lock()
        self.errors = 0
        self.train_proc: subprocess.Popen | None = None
        self.joint_topic = str(param(self, "ground_truth_topic"))
        # Best effort matches both best-effort and reliable publishers: EMG is sensor data, and
        # ground truth may come from either kind of driver (IMU, encoders, motion capture). A deep
        # queue stands in for reliability on this machine.
        qos = QoSProfile(depth=2000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.create_subscription(EmgArray, EMG_TOPIC, self._on_emg, qos, raw=True)
        self.create_subscription(JointState, self.joint_topic, self._on_joint, qos, raw=True)
        self.last_joint = -float("inf")  # monotonic time of the last ground-truth message
        self.progress = self.create_publisher(String, "~/train_progress", 10)
        self.create_service(Trigger, "~/start_recording", self._start)
        self.create_service(Trigger, "~/stop_recording", self._stop)
        self.create_service(Trigger, "~/train", self._train)
        self.create_service(Trigger, "~/calibrate", self._calibrate)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.prompt = self.create_publisher(String, "~/prompt", latched)
        self.plan: list[tuple[float, str, str | None]] = []  # (time, prompt, session to start or None: stop)
        self.create_timer(0.05, self._guide)
        self.create_timer(1.0, self._flush)
        self.diag = Diagnostics(self, self._diag_values)

    # recording -----------------------------------------------------------------------------
    def _session_dir(self) -> Path:
        name = str(param(self, "session")) or time.strftime("%Y%m%d-%H%M%S")
        return Path(str(param(self, "data_dir"))) / str(param(self, "subject")) / name

    def _start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.plan:
            response.success, response.message = False, "busy: guided calibration running"
            return response
        return self._start_at(self._session_dir(), response)

    def _start_at(self, path: Path, response: Trigger.Response | None = None) -> Trigger.Response:
        response = response or Trigger.Response()
        with self.lock:
            if self.recorder is not None:
                response.success, response.message = False, f"already recording to {self.recorder.path}"
                return response
            root = path.parent
            root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(root).free
            need = float(param(self, "min_free_space"))
            if free < need:
                response.success = False
                response.message = f"refused: {free / 1e6:.0f} MB free on {root}, min_free_space is {need / 1e6:.0f} MB"
                self.get_logger().error(response.message)
                return response
            if path.exists():
                response.success, response.message = False, f"refused: {path} exists (nothing is overwritten)"
                return response
            silent = time.monotonic() - self.last_joint
            if silent > float(param(self, "ground_truth_timeout")):
                response.success = False
                response.message = (f"refused: no ground truth on {self.resolve_topic_name(self.joint_topic)} "
                                    f"{'yet' if silent == float('inf') else f'for {silent:.1f} s'}: "
                                    "a recording without angles cannot train a model")
                self.get_logger().error(response.message)
                return response
            meta = {"subject": str(param(self, "subject")), "session": path.name,
                    "ground_truth_topic": self.joint_topic, "notes": str(param(self, "notes")),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if self.first_emg is not None:
                meta.update(sample_rate=repr(self.first_emg.sample_rate),
                            channel_names=json.dumps(list(self.first_emg.channel_names)))
            try:
                self.recorder = BagRecorder(path, str(param(self, "storage")), meta, self.joint_topic)
            except (ValueError, OSError) as exc:
                response.success, response.message = False, f"cannot record: {exc}"
                return response
        self.get_logger().info(f"recording to {path}")
        response.success, response.message = True, str(path)
        return response

    def _stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self._close("stopped")
        response.success = path is not None
        response.message = str(path) if path else "not recording"
        return response

    def _close(self, why: str) -> Path | None:
        with self.lock:
            rec, self.recorder = self.recorder, None
        if rec is None:
            return None
        try:
            rec.close()
        except OSError as exc:
            self.get_logger().error(f"closing {rec.path}: {exc}")
        self.get_logger().info(f"recording {why}: {rec.path} ({rec.counts})")
        return rec.path

    def _write(self, topic: str, raw: bytes) -> None:
        with self.lock:
            rec = self.recorder
            if rec is None:
                return
            try:
                rec.write(topic, self.get_clock().now().nanoseconds, raw)
            except OSError as exc:
                self._fail(rec, exc)

    def _fail(self, rec: BagRecorder, exc: OSError) -> None:
        """A write error (disk full, file too large): stop recording, keep what was written (the
        last flush is readable; closing may still add the rest). Called with the lock held."""
        self.errors += 1
        self.recorder = None
        self.get_logger().error(f"recording to {rec.path} stopped: {exc}")
        try:
            rec.close()
        except (OSError, ValueError) as close_exc:
            self.get_logger().error(f"{rec.path} left unclosed ({close_exc}): readable up to the last flush")

    def _on_emg(self, raw: bytes) -> None:
        if self.first_emg is None:
            self.first_emg = deserialize_message(raw, EmgArray)
        self._write(EMG_TOPIC, raw)

    def _on_joint(self, raw: bytes) -> None:
        self.last_joint = time.monotonic()
        self._write(self.joint_topic, raw)

    def _flush(self) -> None:
        with self.lock:
            rec = self.recorder
            if rec is None:
                return
            try:
                rec.flush()
            except OSError as exc:
                self._fail(rec, exc)
                return
        root = rec.path.parent
        if shutil.disk_usage(root).free < 0.1 * float(param(self, "min_free_space")):
            self.get_logger().error("disk almost full: recording stopped")
            self._close("stopped: disk almost full")

    # guided calibration --------------------------------------------------------------------
    def _calibrate(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Plan rest / trial / rest / trial ... with prompts; each trial is recorded as a session."""
        if self.recorder is not None or self.plan:
            response.success, response.message = False, "busy: recording or calibrating"
            return response
        trials = []
        for item in param(self, "calibration_trials"):
            prompt, _, secs = str(item).rpartition(":")
            try:
                trials.append((prompt.strip(), float(secs)))
            except ValueError:
                response.success, response.message = False, f"calibration_trials entry '{item}' is not 'prompt:seconds'"
                return response
        rest = float(param(self, "calibration_rest"))
        base = str(param(self, "session")) or time.strftime("%Y%m%d-%H%M%S")
        t = time.monotonic()
        for k, (prompt, secs) in enumerate(trials, 1):
            self.plan.append((t, f"trial {k}/{len(trials)} in {rest:g} s: {prompt} ({secs:g} s) - relax now", None))
            t += rest
            self.plan.append((t, f"trial {k}/{len(trials)}: GO - {prompt}", f"{base}-trial{k}"))
            t += secs
        self.plan.append((t, f"calibration done: {len(trials)} trials recorded; call ~/train", None))
        response.success, response.message = True, f"{len(trials)} trials, {t - time.monotonic():.0f} s"
        return response

    def _guide(self) -> None:
        while self.plan and self.plan[0][0] <= time.monotonic():
            _, text, session = self.plan.pop(0)
            self._close("trial over")
            if session is not None:
                path = Path(str(param(self, "data_dir"))) / str(param(self, "subject")) / session
                res = self._start_at(path)
                if not res.success:
                    self.plan.clear()
                    text = f"calibration stopped: {res.message}"
            self.prompt.publish(String(data=text))
            self.get_logger().info(f"prompt: {text}")

    # training ------------------------------------------------------------------------------
    def _train(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.train_proc is not None and self.train_proc.poll() is None:
            response.success, response.message = False, "training already running"
            return response
        subject = str(param(self, "subject"))
        sdir = Path(str(param(self, "data_dir"))) / subject
        bags = sorted(str(p) for p in sdir.iterdir() if is_bag(p)) if sdir.is_dir() else []
        if not bags:
            response.success, response.message = False, f"no recorded sessions in {sdir}"
            return response
        out = Path(str(param(self, "model_dir"))) / subject
        # This interpreter with the module, not a console script on PATH: after `colcon build` the
        # scripts live in lib/emg_rcnn_ros/, which is not on PATH.
        cmd = [sys.executable, "-m", "emg_rcnn_ros.cli", "train", "--data", *bags, "--out", str(out),
               "--arch", str(param(self, "train_arch")),
               "--max-steps", str(int(param(self, "train_max_steps"))), "--quiet"]
        self.train_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._follow, args=(self.train_proc, out), daemon=True).start()
        response.success, response.message = True, f"training {len(bags)} session(s) into {out}"
        self.get_logger().info(response.message)
        return response

    def _follow(self, proc: subprocess.Popen, out: Path) -> None:
        for line in proc.stdout:
            self.progress.publish(String(data=line.rstrip()))
            self.get_logger().info(f"train: {line.rstrip()}")
        code = proc.wait()
        done = f"training finished: {out}" if code == 0 else f"training failed (exit {code})"
        self.progress.publish(String(data=done))
        self.get_logger().info(done)

    def _diag_values(self) -> dict[str, object]:
        rec = self.recorder
        age = time.monotonic() - self.last_joint
        return {"recording": str(rec.path) if rec else "", "messages": json.dumps(rec.counts) if rec else "{}",
                "ground_truth_age_s": f"{age:.2f}" if age != float("inf") else "none",
                "write_errors": self.errors,
                "training": "running" if self.train_proc is not None and self.train_proc.poll() is None else "idle"}

    def close(self) -> None:
        self._close("closed on shutdown")
        if self.train_proc is not None and self.train_proc.poll() is None:
            self.train_proc.terminate()


def main() -> int:
    return run(Trainer)
