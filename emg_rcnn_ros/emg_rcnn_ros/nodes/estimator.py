"""emg_estimator: EmgFeatures on emg/features -> sensor_msgs/JointState on emg/joint_estimates,
and optionally commands for a position controller (Float64MultiArray, or a one-point
JointTrajectory) on a device worn by a person.

Lifecycle node, starts inactive. configure loads and validates the model bundle (and fails,
naming the reason, when it is missing, corrupt or mismatched) and sets up the command path;
activate warms the model up and subscribes. The input subscription (a FastSubscription: its own
thread, see fast_subscription.py) only stores frames; once the queued frames are taken, inference
runs outside those callbacks, feeding every stored frame to the model's history and publishing
the newest estimate.

The command path (core/command.py shapes the numbers; this node decides whether to send them):
- commands start at the device's measured position (`measured_state_topic`, matched by joint
  name) and ramp to the estimate under velocity and acceleration limits, one step per frame;
- they stop, with the reason on /diagnostics (WARN or ERROR), when no frame was accepted for
  `input_timeout` on the monotonic clock, frames are rejected, the estimate is not finite, the
  measured state is missing or stale, or the signal-quality gate objects (`quality_policy`: hold,
  or ramp to `safe_posture` and stop; `continue` only reports);
- stamps that go backwards or jump restart the model history and the command ramp (logged);
- after any stop, commands start again from the measured position."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from emg_rcnn_ros_msgs.msg import EmgFeatures
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..core.bundle import Bundle, StreamingPredictor, load_bundle
from ..core.command import CommandShaper
from ..core.quality import describe
from .convert import feature_frame, joint_state, to_ns
from .diagnostics import Diagnostics, Rate
from .fast_subscription import FastSubscription
from .lifecycle import guarded
from .params import declare, param
from .process import blas_threads, run

POLICIES = ("hold", "safe", "continue")
COMMAND_TYPES = ("position", "trajectory")
WARN, ERROR = DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Estimator(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emg_estimator")
        for name, default, desc in (
            ("model_path", "models/demo_rcnn", "model bundle directory"),
            ("joint_names", [str], "names in the published JointState; empty: the bundle's joint names"),
            ("command_topic", "", "topic for commands to a position controller; empty: none"),
            ("command_type", "position", "position: std_msgs/Float64MultiArray (forward_position_controller); "
                                         "trajectory: trajectory_msgs/JointTrajectory, one point per period"),
            ("controller_joints", [str], "joint order of the commands; empty: the model's joints"),
            ("position_min", [float], "lower position limit per controller joint (rad); empty: -pi"),
            ("position_max", [float], "upper position limit per controller joint (rad); empty: +pi"),
            ("max_velocity", [float], "velocity limit per controller joint (rad/s); empty: 1.0"),
            ("max_acceleration", [float], "acceleration limit per controller joint (rad/s^2); empty: 5.0"),
            ("smoothing_cutoff", 5.0, "low-pass cutoff of command targets (Hz); 0 disables"),
            ("input_timeout", 0.1, "no accepted features for this long (s, monotonic clock): stop commands"),
            ("measured_state_topic", "/joint_states", "sensor_msgs/JointState of the device: commands start here"),
            ("measured_state_timeout", 0.5, "a measured state older than this (s) is missing: commands stop"),
            ("require_measured_state", True, "false: start commands at the first estimate when no measured "
                                             "state exists (a jump; only for devices that tolerate it)"),
            ("quality_policy", "hold", "a channel fails the signal-quality gate: hold (stop commands), safe "
                                       "(ramp to safe_posture, then stop) or continue (report only)"),
            ("safe_posture", [float], "per controller joint (rad), for quality_policy safe"),
            ("inference_threads", 1, "BLAS and torch CPU threads for inference (the nodes share the cores)"),
        ):
            declare(self, name, default, desc)
        self.bundle: Bundle | None = None
        self.active = False
        self.rate_in, self.rate_out = Rate(), Rate()
        self.gaps = self.skipped = self.rejected = self.nonfinite = self.restarts = 0
        self.diag = Diagnostics(self, self._diag_values)
        self.data: FastSubscription | None = None
        self.pub = self.create_lifecycle_publisher(JointState, "emg/joint_estimates", qos_profile_sensor_data)
        self.cmd_pub = None
        self.measured_sub = None
        self.shaper: CommandShaper | None = None
        self.lock = threading.Lock()
        self.measured: tuple[np.ndarray, float] | None = None  # positions (controller order), monotonic time
        self.stops: dict[str, tuple[bytes, str]] = {}  # why commands are stopped: key -> (level, text)

    # lifecycle -----------------------------------------------------------------------------
    @guarded
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = str(param(self, "model_path"))
        try:
            self.bundle = load_bundle(path)
            names = list(param(self, "joint_names")) or self.bundle.joint_names
            if len(names) != len(self.bundle.joint_names):
                raise ValueError(f"{len(names)} joint_names for a model of {len(self.bundle.joint_names)} joints")
            self.names = names
            self._command_setup()
        except ValueError as exc:  # every reason to refuse the model or the settings, named
            self.get_logger().error(f"configure failed: {exc}")
            self.bundle = None
            return TransitionCallbackReturn.FAILURE
        self.predictor = StreamingPredictor(self.bundle)
        self.get_logger().info(f"configured: {self.bundle.model_cfg.arch} from {path}, joints {self.names}")
        return TransitionCallbackReturn.SUCCESS

    def _command_setup(self) -> None:
        """Re-read at every configure, so that settings changed after cleanup take effect."""
        self._command_teardown()
        topic = str(param(self, "command_topic"))
        if not topic:
            return
        kind = str(param(self, "command_type"))
        policy = str(param(self, "quality_policy"))
        if kind not in COMMAND_TYPES:
            raise ValueError(f"command_type '{kind}' (expected one of {', '.join(COMMAND_TYPES)})")
        if policy not in POLICIES:
            raise ValueError(f"quality_policy '{policy}' (expected one of {', '.join(POLICIES)})")
        joints = list(param(self, "controller_joints")) or list(self.names)
        unknown = [j for j in joints if j not in self.names]
        if unknown:
            raise ValueError(f"controller_joints {unknown} are not estimated (model joints: {self.names})")
        n = len(joints)

        def per_joint(name: str, fill: float | None) -> np.ndarray | None:
            v = list(param(self, name))
            if v and len(v) != n:
                raise ValueError(f"{name} has {len(v)} values for {n} controller joints")
            return np.array(v, float) if v else (None if fill is None else np.full(n, fill))

        lower, upper = per_joint("position_min", -np.pi), per_joint("position_max", np.pi)
        safe = per_joint("safe_posture", None)
        if policy == "safe" and (safe is None or np.any(safe < lower) or np.any(safe > upper)):
            raise ValueError("quality_policy safe needs safe_posture, one value per controller joint within the limits")
        self.shaper = CommandShaper(lower, upper, per_joint("max_velocity", 1.0), per_joint("max_acceleration", 5.0),
                                    float(param(self, "smoothing_cutoff")), self.bundle.features.hop)
        self.cmd_joints, self.cmd_index, self.policy, self.safe = joints, [self.names.index(j) for j in joints], \
            policy, safe
        self.trajectory = kind == "trajectory"
        self.cmd_pub = self.create_lifecycle_publisher(JointTrajectory if self.trajectory else Float64MultiArray,
                                                       topic, 1)
        self.measured = None
        self.measured_sub = self.create_subscription(JointState, str(param(self, "measured_state_topic")),
                                                     self._on_measured, qos_profile_sensor_data)
        if not bool(param(self, "require_measured_state")):
            self.get_logger().warn("require_measured_state is false: without a measured state the first command "
                                   "is the estimate itself, wherever the device is")

    def _command_teardown(self) -> None:
        if self.cmd_pub is not None:
            self.destroy_lifecycle_publisher(self.cmd_pub)
        if self.measured_sub is not None:
            self.destroy_subscription(self.measured_sub)
        self.cmd_pub = self.measured_sub = self.shaper = None

    @guarded
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        b = self.bundle
        threads = max(1, int(param(self, "inference_threads")))
        if not blas_threads(threads) and threads != 1:
            self.get_logger().warn("threadpoolctl is not installed: BLAS stays at one thread")
        torch.set_num_threads(threads)
        warm = StreamingPredictor(b)
        for _ in range(2 * b.model_cfg.span):  # first calls allocate and pick kernels: keep that out of live latency
            warm.push(np.full((b.channels, int(b.config["bands"])), -20.0, np.float32))
        self.pending: list[tuple[np.ndarray, int, bool, np.ndarray]] = []
        self.stream: tuple[float, int] | None = None
        self.hop_n = 0
        self.last_seq: int | None = None
        self.last_stamp: int | None = None
        self.restart = True
        self.timeout = float(param(self, "input_timeout"))
        self.last_accept = time.monotonic()  # the watchdog's clock: monotonic, accepted frames only
        self.stops = {}
        self._stop_commands()
        self.at_safe = False
        self.active = True
        depth1 = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                            durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
        self.data = FastSubscription(self, EmgFeatures, "emg/features", depth1, self._on_frame, self._infer,
                                     on_idle=self._watchdog, idle_timeout=max(self.timeout, 0.001))
        return super().on_activate(state)

    @guarded
    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._drop_input()
        return super().on_deactivate(state)

    @guarded
    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._command_teardown()
        self.bundle = None
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Safe state: no input, no commands, ERROR on diagnostics; the node ends unconfigured."""
        self._drop_input()
        self.diag.set(ERROR, "error processing: commands stopped")
        self.get_logger().error("error processing: input closed, commands stopped")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """No estimate and no command after this returns. The input's helper node stays until
        destroy_node, so that a stop never waits on DDS before it has closed what matters."""
        self.active = False
        if self.data is not None:
            self.data.close()
        if self.shaper is not None:
            self.shaper.reset()

    def _drop_input(self) -> None:
        self.close()
        if self.data is not None:
            self.data.destroy()
            self.data = None

    def destroy_node(self) -> None:
        self._drop_input()
        super().destroy_node()

    # device state ----------------------------------------------------------------------------
    def _on_measured(self, msg: JointState) -> None:
        """The device's joint positions, in controller order; ignored unless every joint is there."""
        where = {n: i for i, n in enumerate(msg.name)}
        if not all(j in where and where[j] < len(msg.position) for j in self.cmd_joints):
            return
        pos = np.array([msg.position[where[j]] for j in self.cmd_joints], float)
        if np.all(np.isfinite(pos)):
            with self.lock:
                self.measured = (pos, time.monotonic())

    def _measured_now(self) -> np.ndarray | None:
        with self.lock:
            m = self.measured
        if m is None or time.monotonic() - m[1] > float(param(self, "measured_state_timeout")):
            return None
        return m[0]

    # data path -----------------------------------------------------------------------------
    def _on_frame(self, msg: EmgFeatures) -> None:
        """Store only: validate the frame, extend the history, hand the newest window to inference."""
        self.rate_in.count += 1
        key = (float(msg.sample_rate), int(msg.num_channels))
        if key != self.stream:
            try:
                layout = self.bundle.check_stream(*key)
                if int(msg.num_bins) != len(layout.centres) or not np.allclose(msg.frequencies, layout.centres,
                                                                               atol=1e-3):
                    raise ValueError(f"frames have {msg.num_bins} bands at other frequencies than the model's")
                if abs(msg.window_duration - layout.window_n / key[0]) > 1e-6:
                    raise ValueError(f"frames use a {msg.window_duration:g} s window, the model "
                                     f"{layout.window_n / key[0]:g} s")
            except ValueError as exc:
                self._reject(f"frames rejected: {exc}")
                return
            self.stream = key
            self.hop_n = layout.hop_n
            self.last_seq = self.last_stamp = None
            self.pending = []
            self.restart = True  # the history is cleared by inference, which owns the predictor
        try:
            frame = feature_frame(msg)
        except ValueError as exc:
            self._reject(f"frame rejected: {exc}")
            return
        seq, stamp = int(msg.sequence), to_ns(msg.header.stamp)
        reset = False
        if self.last_seq is not None:
            hop_ns = self.hop_n / key[0] * 1e9
            back = seq <= self.last_seq or stamp <= self.last_stamp
            far = seq - self.last_seq >= self.hop_n * self.bundle.model_cfg.span or stamp - self.last_stamp > max(
                self.timeout * 1e9, 2 * hop_ns)
            if seq != self.last_seq + self.hop_n:
                self.gaps += 1
            if back or far:  # a restarted stream, a replay loop, a clock reset, or a long gap
                reset = True
                self.restarts += 1
                self.get_logger().warn(f"stream {'went backwards' if back else 'jumped'} (sequence {self.last_seq}"
                                       f" -> {seq}, stamp {(stamp - self.last_stamp) * 1e-9:+.3f} s): history and "
                                       "commands restart")
        self.last_seq, self.last_stamp = seq, stamp
        self.last_accept = time.monotonic()
        self.stops.pop("rejected", None)
        if self.pending:
            self.skipped += 1
        quality = bytes(msg.channel_quality)
        self.pending.append((frame, stamp, reset or self.restart, self._quality_text(quality) if any(quality) else ""))
        self.restart = False

    def _quality_text(self, quality: bytes) -> str:
        """'emg3: electrode off; ...' for the flagged channels, named as the model knows them."""
        names = list(self.bundle.config["channel_names"])
        return "; ".join(f"{names[c] if c < len(names) else c}: {describe(q)}" for c, q in enumerate(quality) if q)

    def _reject(self, text: str) -> None:
        self.rejected += 1
        self.stops["rejected"] = (ERROR, text)
        self.get_logger().error(text, throttle_duration_sec=5.0)

    def _infer(self) -> None:
        """Feed every stored frame to the model's history; publish the estimate of the newest."""
        if not self.active or not self.pending:
            return
        pending, self.pending = self.pending, []
        y = None
        for frame, _, reset, _ in pending:
            if reset:
                self.predictor.reset()
                self.at_safe = False  # the device may have been moved meanwhile
                self._stop_commands()  # the ramp restarts from the measured position
            y = self.predictor.push(frame)
        stamp, quality = pending[-1][1], pending[-1][3]
        self.stops.pop("input", None)
        if y is None:
            return
        if not np.all(np.isfinite(y)):
            self.nonfinite += 1
            self.stops["nonfinite"] = (ERROR, "non-finite estimate: commands stopped")
            self._stop_commands()
            return
        self.stops.pop("nonfinite", None)
        self.pub.publish(joint_state(self.names, y, stamp))
        self.rate_out.count += 1
        self.diag.latency((self.get_clock().now().nanoseconds - stamp) * 1e-9)
        if self.shaper is not None:
            self._command(y[self.cmd_index], quality)
        self._report()

    def _command(self, target: np.ndarray, quality: str) -> None:
        """Decide whether to send, and what: the policy above the shaper."""
        to_safe = bool(quality) and self.policy == "safe"
        if quality and self.policy != "continue":
            action = ("at the safe posture: commands stopped" if self.at_safe else "ramping to the safe posture"
                      ) if to_safe else "holding"
            self.stops["quality"] = (WARN, f"signal quality ({quality}): {action}")
            if not to_safe or self.at_safe:
                self._stop_commands()
                return
            target = self.safe  # a ramp stopped by a gap resumes from the measured position, below
        else:
            self.at_safe = False
            if quality:
                self.stops["quality"] = (WARN, f"signal quality ({quality}): continuing (quality_policy continue)")
            else:
                self.stops.pop("quality", None)
        if not self.shaper.started:
            measured = self._measured_now()
            if measured is None and bool(param(self, "require_measured_state")):
                self.stops["measured"] = (WARN, f"no measured device state on {self.measured_sub.topic_name}: "
                                                "commands wait for it")
                return
            try:
                first = self.shaper.start(measured if measured is not None else
                                          np.clip(target, self.shaper.lower, self.shaper.upper))
            except ValueError as exc:
                self.stops["measured"] = (ERROR, f"cannot start commands: {exc}")
                return
            self.stops.pop("measured", None)
            self.get_logger().info(f"commands start at the measured position {np.round(first, 3).tolist()}")
            self._send(first)
            return
        if self._measured_now() is None and bool(param(self, "require_measured_state")):
            self.stops["measured"] = (WARN, f"measured device state on {self.measured_sub.topic_name} is stale: "
                                            "commands stopped")
            self._stop_commands()
            return
        cmd = self.shaper.step(target)
        self._send(cmd)
        self.at_safe = to_safe and cmd is not None and bool(np.allclose(cmd, self.safe))

    def _send(self, cmd: np.ndarray | None) -> None:
        if cmd is None:
            return
        if self.trajectory:
            point = JointTrajectoryPoint(positions=[float(v) for v in cmd])
            point.time_from_start.nanosec = int(round(self.shaper.period * 1e9))
            self.cmd_pub.publish(JointTrajectory(joint_names=self.cmd_joints, points=[point]))
        else:
            self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in cmd]))

    def _stop_commands(self) -> None:
        if self.shaper is not None and self.shaper.started:
            self.get_logger().warn("commands stopped")
            self.shaper.reset()

    def _watchdog(self) -> None:
        """Runs when a wait ends without a frame: silence is measured on the monotonic clock since
        the last accepted frame (rejected frames do not count as input)."""
        if not self.active:
            return
        silent = time.monotonic() - self.last_accept
        if silent < self.timeout:
            return
        if "input" not in self.stops:
            self.get_logger().warn(f"no accepted EMG features for {silent:.3f} s: commands stopped")
        self.stops["input"] = (WARN, f"no accepted input for {silent:.2f} s: commands stopped")
        self._stop_commands()
        self._report()

    def _report(self) -> None:
        if not self.stops:
            self.diag.set(DiagnosticStatus.OK, "ok")
            return
        level = max(lv for lv, _ in self.stops.values())
        self.diag.set(level, "; ".join(text for _, text in self.stops.values()))

    def _diag_values(self) -> dict[str, object]:
        return {"input_rate_hz": f"{self.rate_in.take():.1f}", "output_rate_hz": f"{self.rate_out.take():.1f}",
                "frame_gaps": self.gaps, "skipped_frames": self.skipped, "rejected_frames": self.rejected,
                "nonfinite_estimates": self.nonfinite, "stream_restarts": self.restarts,
                "commands": "sending" if self.shaper is not None and self.shaper.started else "stopped",
                "callback_errors": self.data.errors if self.data else 0}


def main() -> int:
    return run(Estimator)
