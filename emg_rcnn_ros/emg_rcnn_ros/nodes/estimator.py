"""emg_estimator: EmgFeatures on emg/features -> sensor_msgs/JointState on emg/joint_estimates,
and optionally Float64MultiArray commands for a ros2_control forward_position_controller.

Lifecycle node, starts inactive. configure loads and validates the model bundle (and fails,
naming the reason, when it is missing, corrupt or mismatched); activate warms the model up and
subscribes. The subscription (a FastSubscription: its own thread, see common.py) only stores frames;
once the queued frames are taken, inference runs outside those callbacks, feeding every stored
frame to the model's history and publishing the newest estimate. The input watchdog is the same
thread's wait timing out: no timer wakes the node while frames flow."""

from __future__ import annotations

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from emg_rcnn_ros_msgs.msg import EmgFeatures
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from ..core.bundle import Bundle, StreamingPredictor, load_bundle
from ..core.command import CommandShaper
from ..core.frames import FrameLayout
from .convert import feature_frame, joint_state, to_ns
from .diagnostics import Diagnostics, Rate
from .fast_subscription import FastSubscription
from .params import declare, param
from .process import blas_threads, run


class Estimator(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emg_estimator")
        for name, default, desc in (
            ("model_path", "models/demo_rcnn", "model bundle directory"),
            ("joint_names", [str], "names in the published JointState; empty: the bundle's joint names"),
            ("command_topic", "", "topic for Float64MultiArray commands; empty: none"),
            ("controller_joints", [str], "joint order of the command array; empty: the model's joints"),
            ("position_min", [float], "lower position limit per controller joint (rad); empty: -pi"),
            ("position_max", [float], "upper position limit per controller joint (rad); empty: +pi"),
            ("max_velocity", [float], "velocity limit per controller joint (rad/s); empty: 3.0"),
            ("smoothing_cutoff", 5.0, "low-pass cutoff of commands (Hz); 0 disables"),
            ("input_timeout", 0.1, "no features for this long (s): stop commands and report it"),
            ("inference_threads", 1, "BLAS and torch CPU threads for inference (the nodes share the cores)"),
        ):
            declare(self, name, default, desc)
        self.bundle: Bundle | None = None
        self.active = False
        self.rate_in, self.rate_out = Rate(), Rate()
        self.gaps = self.skipped = self.rejected = self.nonfinite = 0
        self.diag: Diagnostics | None = None
        self.data: FastSubscription | None = None

    # lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = str(param(self, "model_path"))
        try:
            self.bundle = load_bundle(path)
            names = list(param(self, "joint_names")) or self.bundle.joint_names
            if len(names) != len(self.bundle.joint_names):
                raise ValueError(f"{len(names)} joint_names for a model of {len(self.bundle.joint_names)} joints")
            self.names = names
            self.shaper, self.cmd_index = self._command_setup()
        except Exception as exc:  # any reason to refuse the model must fail the transition, with the reason
            self.get_logger().error(f"configure failed: {exc}")
            self.bundle = None
            return TransitionCallbackReturn.FAILURE
        self.predictor = StreamingPredictor(self.bundle)
        self.pending: list[tuple[np.ndarray, int, bool]] = []
        self.stream: tuple[float, int] | None = None
        self.restart = False
        self.hop_n = 0
        self.last_seq: int | None = None
        self.last_input_ns = 0
        self.timed_out = False
        if self.diag is None:  # publishers outlive cleanup/configure cycles: made once
            self.pub = self.create_lifecycle_publisher(JointState, "emg/joint_estimates", qos_profile_sensor_data)
            topic = str(param(self, "command_topic"))
            self.cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topic, 1) if topic else None
            self.diag = Diagnostics(self, self._diag_values)
        self.get_logger().info(f"configured: {self.bundle.model_cfg.arch} from {path}, joints {self.names}")
        return TransitionCallbackReturn.SUCCESS

    def _command_setup(self) -> tuple[CommandShaper | None, list[int]]:
        if not str(param(self, "command_topic")):
            return None, []
        joints = list(param(self, "controller_joints")) or list(self.names)
        unknown = [j for j in joints if j not in self.names]
        if unknown:
            raise ValueError(f"controller_joints {unknown} are not estimated (model joints: {self.names})")
        n = len(joints)

        def per_joint(name: str, fill: float) -> np.ndarray:
            v = list(param(self, name))
            if v and len(v) != n:
                raise ValueError(f"{name} has {len(v)} values for {n} controller joints")
            return np.array(v if v else [fill] * n, float)

        shaper = CommandShaper(per_joint("position_min", -np.pi), per_joint("position_max", np.pi),
                               per_joint("max_velocity", 3.0), float(param(self, "smoothing_cutoff")))
        return shaper, [self.names.index(j) for j in joints]

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        b = self.bundle
        threads = max(1, int(param(self, "inference_threads")))
        if not blas_threads(threads) and threads != 1:
            self.get_logger().warn("threadpoolctl is not installed: BLAS stays at one thread")
        torch.set_num_threads(threads)
        warm = StreamingPredictor(b)
        for _ in range(2 * b.history):  # first calls allocate and pick kernels: keep that out of live latency
            warm.push(np.full((b.channels, int(b.config["bands"])), -20.0, np.float32))
        self.active = True
        depth1 = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                            durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
        self.data = FastSubscription(self, EmgFeatures, "emg/features", depth1, self._on_frame, self._infer,
                                     on_idle=self._watchdog, idle_timeout=max(float(param(self, "input_timeout")),
                                                                              0.001))
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active = False
        self.data.close()
        self.data = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.bundle = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self.active = False
        if self.data is not None:
            self.data.close()
            self.data = None

    # data path -----------------------------------------------------------------------------
    def _on_frame(self, msg: EmgFeatures) -> None:
        """Store only: validate the frame, extend the history, hand the newest window to inference."""
        self.rate_in.count += 1
        self.last_input_ns = self.get_clock().now().nanoseconds
        if self.timed_out:
            self.timed_out = False
            self.diag.set(DiagnosticStatus.OK, "ok")
            self.get_logger().info("EMG features are back: commands resume")
        key = (float(msg.sample_rate), int(msg.num_channels))
        if key != self.stream:
            try:
                self.bundle.check_stream(*key)
                layout = FrameLayout.build(self.bundle.features, key[0])
                if int(msg.num_bins) != len(layout.centres) or not np.allclose(msg.frequencies, layout.centres,
                                                                               atol=1e-3):
                    raise ValueError(f"frames have {msg.num_bins} bands at other frequencies than the model's")
                if abs(msg.window_duration - layout.window_n / key[0]) > 1e-6:
                    raise ValueError(f"frames use a {msg.window_duration:g} s window, the model "
                                     f"{layout.window_n / key[0]:g} s")
            except ValueError as exc:
                self.rejected += 1
                self.get_logger().error(f"frames rejected: {exc}", throttle_duration_sec=5.0)
                return
            self.stream = key
            self.hop_n = layout.hop_n
            self.last_seq = None
            self.pending = []
            self.restart = True  # the history is cleared by inference, which owns the predictor
        try:
            frame = feature_frame(msg)
        except ValueError:
            self.rejected += 1
            return
        seq = int(msg.sequence)
        reset = False
        if self.last_seq is not None and seq != self.last_seq + self.hop_n:
            # A few frames lost (depth-1 queue) keep the history; reordered or distant frames start anew.
            self.gaps += 1
            reset = seq <= self.last_seq or seq - self.last_seq >= self.hop_n * self.bundle.history
        self.last_seq = seq
        if self.pending:
            self.skipped += 1
        self.pending.append((frame, to_ns(msg.header.stamp), reset or self.restart))
        self.restart = False

    def _infer(self) -> None:
        """Feed every stored frame to the model's history; publish the estimate of the newest."""
        if not self.active or not self.pending:
            return
        pending, self.pending = self.pending, []
        y = None
        for frame, _, reset in pending:
            if reset:
                self.predictor.reset()
            y = self.predictor.push(frame)
        stamp = pending[-1][1]
        if y is None:
            return
        if not np.all(np.isfinite(y)):
            self.nonfinite += 1
            return
        self.pub.publish(joint_state(self.names, y, stamp))
        self.rate_out.count += 1
        self.diag.latency((self.get_clock().now().nanoseconds - stamp) * 1e-9)
        if self.shaper is not None and not self.timed_out:
            cmd = self.shaper.step(y[self.cmd_index], stamp * 1e-9)
            if cmd is not None:
                self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in cmd]))

    def _watchdog(self) -> None:
        """Runs when input_timeout passes without a frame."""
        silent = (self.get_clock().now().nanoseconds - self.last_input_ns) * 1e-9
        if not self.last_input_ns or silent < float(param(self, "input_timeout")):
            return
        if not self.timed_out:
            self.timed_out = True
            if self.shaper is not None:
                self.shaper.reset()
            self.get_logger().warn(f"no EMG features for {silent:.3f} s: commands stopped")
        self.diag.set(DiagnosticStatus.WARN, f"no input for {silent:.2f} s: commands stopped")

    def _diag_values(self) -> dict[str, object]:
        return {"input_rate_hz": f"{self.rate_in.take():.1f}", "output_rate_hz": f"{self.rate_out.take():.1f}",
                "frame_gaps": self.gaps, "skipped_frames": self.skipped, "rejected_frames": self.rejected,
                "nonfinite_estimates": self.nonfinite, "commands_stopped": self.timed_out,
                "callback_errors": self.data.errors if self.data else 0}


def main() -> int:
    return run(Estimator)
