"""emg_trainer: records EMG with ground-truth joint angles into rosbag2 bags and trains
per-subject models from them. The node wires three jobs, each in a module of its own: the recorder
(recording.py), the guided-calibration plan (core/calibration.py) and the training job
(nodes/training_job.py).

Services (std_srvs/Trigger): ~/start_recording, ~/stop_recording, ~/calibrate, ~/train,
~/recalibrate (a new session of a known subject: one guided trial of `recalibration_seconds`,
recorded, then `emg-rcnn train --init-from` the subject's current model into a new bundle, which is
swapped into `swap_node`'s model_path when that is set). Bags go to
<data_dir>/<subject>/<session>/ (mcap, or sqlite3), self-described in custom_data, including the
amplifier's rate as estimated by the acquisition node's clock fit (`estimated_sample_rate`, from
its diagnostics). Training runs `emg-rcnn train` as a separate process over all of the subject's
bags; its progress is published on ~/train_progress and logged; the bundle goes to
<model_dir>/<subject>/.

Nothing recorded is lost: SIGINT/SIGTERM close the bag; the recorder is flushed every second;
recording is refused below `min_free_space` bytes free and stopped cleanly (keeping what was
written) when the disk fills."""

from __future__ import annotations

import json
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from emg_rcnn_ros_msgs.msg import EmgArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..bags import EMG_TOPIC, is_bag
from ..core.calibration import Step, parse_trials, plan
from ..recording import Recording
from .diagnostics import Diagnostics
from .params import declare, param
from .process import run
from .training_job import TrainingJob


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
            ("recalibration_seconds", 15.0, "~/recalibrate: length of the one calibration trial (s)"),
            ("recalibration_prompt", "move both joints freely", "~/recalibrate: what the person is asked to do"),
            ("recalibrate_from", "", "~/recalibrate: the model to adapt; empty: <model_dir>/<subject>"),
            ("swap_node", "", "~/recalibrate: node whose model_path is set to the new bundle (e.g. emg_estimator); "
                              "empty: none"),
            ("train_nice", 10, "niceness of training jobs: the live nodes keep the CPU (0 = normal priority)"),
        ):
            declare(self, name, default, desc)
        self.recording = Recording(lambda text: self.get_logger().error(text))
        self.job = TrainingJob(self._report)
        self.first_emg: EmgArray | None = None
        self.estimated_rate = ""  # the acquisition node's clock fit, from its diagnostics
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
        self.create_service(Trigger, "~/recalibrate", self._recalibrate)
        self.after_plan: Path | None = None  # the recalibration trial's bag, once its plan has played out
        self.swap_client = None
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.prompt = self.create_publisher(String, "~/prompt", latched)
        self.plan: list[Step] = []
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
        meta = {"subject": str(param(self, "subject")), "session": path.name,
                "ground_truth_topic": self.joint_topic, "notes": str(param(self, "notes")),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.first_emg is not None:
            meta.update(sample_rate=repr(self.first_emg.sample_rate),
                        channel_names=json.dumps(list(self.first_emg.channel_names)))
        why = self.recording.start(path, str(param(self, "storage")), meta, self.joint_topic,
                                   float(param(self, "min_free_space")), self._no_ground_truth)
        if why is not None:
            response.success, response.message = False, why
            return response
        self.get_logger().info(f"recording to {path}")
        response.success, response.message = True, str(path)
        return response

    def _no_ground_truth(self) -> str | None:
        silent = time.monotonic() - self.last_joint
        if silent <= float(param(self, "ground_truth_timeout")):
            return None
        why = (f"refused: no ground truth on {self.resolve_topic_name(self.joint_topic)} "
               f"{'yet' if silent == float('inf') else f'for {silent:.1f} s'}: "
               "a recording without angles cannot train a model")
        self.get_logger().error(why)
        return why

    def _stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self._close("stopped")
        response.success = path is not None
        response.message = str(path) if path else "not recording"
        return response

    def _close(self, why: str) -> Path | None:
        meta = {"estimated_sample_rate": self.estimated_rate} if self.estimated_rate else None
        rec = self.recording.close(meta)
        if rec is None:
            return None
        self.get_logger().info(f"recording {why}: {rec.path} ({rec.counts})")
        return rec.path

    def _on_emg(self, raw: bytes) -> None:
        if self.first_emg is None:
            self.first_emg = deserialize_message(raw, EmgArray)
        self.recording.write(EMG_TOPIC, self.get_clock().now().nanoseconds, raw)

    def _on_joint(self, raw: bytes) -> None:
        self.last_joint = time.monotonic()
        self.recording.write(self.joint_topic, self.get_clock().now().nanoseconds, raw)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        """The acquisition node of this namespace (another arm's amplifier has its own clock)."""
        mine = f"{self.get_namespace().rstrip('/')}/emg_acquisition"
        for status in msg.status:
            if status.name == mine:
                for kv in status.values:
                    if kv.key == "estimated_rate_hz":
                        self.estimated_rate = kv.value

    def _flush(self) -> None:
        if (why := self.recording.flush(float(param(self, "min_free_space")))) is not None:
            self.get_logger().error(why)
            self._close(why)

    # guided calibration --------------------------------------------------------------------
    def _calibrate(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Plan rest / trial / rest / trial ... with prompts; each trial is recorded as a session."""
        if self.recording.path is not None or self.plan:
            response.success, response.message = False, "busy: recording or calibrating"
            return response
        try:
            trials = parse_trials(list(param(self, "calibration_trials")))
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            return response
        base = str(param(self, "session")) or time.strftime("%Y%m%d-%H%M%S")
        self.plan = plan(trials, float(param(self, "calibration_rest")), base, time.monotonic())
        response.success = True
        response.message = f"{len(trials)} trials, {self.plan[-1].at - time.monotonic():.0f} s"
        return response

    def _guide(self) -> None:
        if not self.plan and self.after_plan is not None:
            bag, self.after_plan = self.after_plan, None
            self._start_recalibration(bag)
        while self.plan and self.plan[0].at <= time.monotonic():
            step = self.plan.pop(0)
            text = step.prompt
            self._close("trial over")
            if step.session is not None:
                path = Path(str(param(self, "data_dir"))) / str(param(self, "subject")) / step.session
                res = self._start_at(path)
                if not res.success:
                    self.plan.clear()
                    text = f"calibration stopped: {res.message}"
            self.prompt.publish(String(data=text))
            self.get_logger().info(f"prompt: {text}")

    # recalibration -------------------------------------------------------------------------
    def _source_model(self) -> Path:
        given = str(param(self, "recalibrate_from"))
        return Path(given) if given else Path(str(param(self, "model_dir"))) / str(param(self, "subject"))

    def _recalibrate(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """One guided trial, then recalibration of the subject's current model on it."""
        source = self._source_model()
        if self.recording.path is not None or self.plan or self.job.running:
            response.success, response.message = False, "busy: recording, calibrating or training"
            return response
        if not (source / "config.json").is_file():
            response.success, response.message = False, f"no model to recalibrate at {source} (train one first)"
            return response
        secs = float(param(self, "recalibration_seconds"))
        if not secs > 0:
            response.success, response.message = False, f"recalibration_seconds must be > 0, got {secs}"
            return response
        base = f"{str(param(self, 'session')) or time.strftime('%Y%m%d-%H%M%S')}-recal"
        self.plan = plan([(str(param(self, "recalibration_prompt")), secs)], float(param(self, "calibration_rest")),
                         base, time.monotonic())
        self.plan[-1] = Step(self.plan[-1].at, "recalibration trial recorded: adapting the model", None)
        self.after_plan = Path(str(param(self, "data_dir"))) / str(param(self, "subject")) / f"{base}-trial1"
        response.success = True
        response.message = f"one {secs:g} s trial, then recalibration of {source}"
        return response

    def _start_recalibration(self, bag: Path) -> None:
        if not is_bag(bag):
            self._report(f"recalibration failed: the trial was not recorded ({bag})")
            return
        source = self._source_model()
        out = source.with_name(f"{source.name}-{bag.name.removesuffix('-trial1')}")
        self._report(f"recalibrating {source} on {bag}")
        self.job.start([str(bag)], out, ["--init-from", str(source)], int(param(self, "train_nice")), self._swap)

    def _swap(self, bundle: Path) -> None:
        """Hand the new bundle to the estimator (it checks the bundle against the stream first)."""
        node = str(param(self, "swap_node"))
        if not node:
            return
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        name = node if node.startswith("/") else f"{self.get_namespace().rstrip('/')}/{node}"
        if self.swap_client is None:
            self.swap_client = self.create_client(SetParameters, f"{name}/set_parameters")
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(bundle.resolve()))
        future = self.swap_client.call_async(SetParameters.Request(parameters=[Parameter(name="model_path",
                                                                                           value=value)]))

        def answered(f) -> None:
            r = f.result().results[0] if f.result() is not None else None
            self._report(f"swapped into {name}: {bundle}" if r is not None and r.successful
                         else f"swap into {name} refused: {r.reason if r is not None else 'no answer'}")

        future.add_done_callback(answered)

    # training ------------------------------------------------------------------------------
    def _train(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.job.running:
            response.success, response.message = False, "training already running"
            return response
        subject = str(param(self, "subject"))
        sdir = Path(str(param(self, "data_dir"))) / subject
        bags = sorted(str(p) for p in sdir.iterdir() if is_bag(p)) if sdir.is_dir() else []
        if not bags:
            response.success, response.message = False, f"no recorded sessions in {sdir}"
            return response
        out = Path(str(param(self, "model_dir"))) / subject
        self.job.start(bags, out, ["--arch", str(param(self, "train_arch")), "--max-steps",
                                   str(int(param(self, "train_max_steps")))], int(param(self, "train_nice")))
        response.success, response.message = True, f"training {len(bags)} session(s) into {out}"
        self.get_logger().info(response.message)
        return response

    def _report(self, line: str) -> None:
        self.progress.publish(String(data=line))
        self.get_logger().info(f"train: {line}")

    def _diag_values(self) -> dict[str, object]:
        rec = self.recording.recorder
        age = time.monotonic() - self.last_joint
        return {"recording": str(rec.path) if rec else "", "messages": json.dumps(rec.counts) if rec else "{}",
                "ground_truth_age_s": f"{age:.2f}" if age != float("inf") else "none",
                "estimated_sample_rate": self.estimated_rate or "unknown",
                "write_errors": self.recording.errors, "training": "running" if self.job.running else "idle"}

    def close(self) -> None:
        self._close("closed on shutdown")
        self.job.stop()


def main() -> int:
    return run(Trainer)
