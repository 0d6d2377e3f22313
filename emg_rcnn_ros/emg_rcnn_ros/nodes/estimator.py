"""emg_estimator: EmgFeatures on emg/features -> sensor_msgs/JointState on emg/joint_estimates.
It only estimates; what reaches a device is decided by emg_command (nodes/command.py).

Lifecycle node, starts inactive. configure loads and validates the model bundle (and fails,
naming the reason, when it is missing, corrupt or mismatched); activate warms the model up and
subscribes. The input subscription (a FastSubscription: its own thread, see fast_subscription.py)
only stores frames; once the queued frames are taken, inference runs outside those callbacks,
feeding every stored frame to the model's history and publishing the newest estimate. Stamps that
go backwards or jump restart the model's history (logged). Setting `model_path` while configured
or active swaps in another bundle without restarting the graph (`ros2 param set /emg_estimator
model_path ...`): it is loaded and checked against the stream first, and a bundle that does not fit
is refused with the reason, the old model kept (_on_parameters)."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from emg_rcnn_ros_msgs.msg import EmgFeatures
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState

from ..core.bundle import Bundle, StreamingPredictor, load_bundle
from .convert import feature_frame, joint_state, to_ns
from .diagnostics import Diagnostics, Rate
from .fast_subscription import FastSubscription
from .lifecycle import guarded
from .params import declare, param
from .process import blas_threads, run

WARN, ERROR = DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Estimator(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emg_estimator")
        for name, default, desc in (
            ("model_path", "models/demo_rcnn", "model bundle directory"),
            ("joint_names", [str], "names in the published JointState; empty: the bundle's joint names"),
            ("input_timeout", 0.1, "no accepted features for this long (s, monotonic clock): WARN on diagnostics"),
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
        self.stops: dict[str, tuple[bytes, str]] = {}  # what is wrong now: key -> (level, text)
        self.swap_lock = threading.Lock()
        self.swap: tuple[Bundle, StreamingPredictor, str] | None = None  # a new model, handed to inference
        self.recent: collections.deque[np.ndarray] = collections.deque(maxlen=1)
        self.add_on_set_parameters_callback(self._on_parameters)

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
        except ValueError as exc:  # every reason to refuse the model or the settings, named
            self.get_logger().error(f"configure failed: {exc}")
            self.bundle = None
            return TransitionCallbackReturn.FAILURE
        self.predictor = StreamingPredictor(self.bundle)
        self.recent = collections.deque(maxlen=self.bundle.model_cfg.span)
        self.get_logger().info(f"configured: {self.bundle.model_cfg.arch} from {path}, joints {self.names}")
        return TransitionCallbackReturn.SUCCESS

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """A new model_path while configured: load the bundle and check it against the running stream
        here (the old model keeps estimating meanwhile); inference swaps it in at its next frame."""
        for p in params:
            if p.name != "model_path" or self.bundle is None:
                continue
            try:
                new = load_bundle(str(p.value))
                self._check_swap(new)
            except ValueError as exc:  # BundleError included
                text = f"model_path {p.value} refused, {self.bundle.path} stays: {exc}"
                self.get_logger().error(text)
                return SetParametersResult(successful=False, reason=text)
            predictor = StreamingPredictor(new)
            _warm(new)
            with self.swap_lock:
                self.swap = (new, predictor, str(p.value))
        return SetParametersResult(successful=True)

    def _check_swap(self, new: Bundle) -> None:
        """The frames now arriving must suit the new model as they suit the old: same feature settings
        (the feature node makes them), channels, rate and joints."""
        old = self.bundle
        if new.features != old.features:
            raise ValueError(f"its feature settings differ from the running stream's ({new.features} against "
                             f"{old.features}); restart the graph with it")
        if new.joint_names != old.joint_names:
            raise ValueError(f"it estimates joints {new.joint_names}, the running model {old.joint_names}")
        new.check_stream(*(self.stream or (old.sample_rate, old.channels)))

    @guarded
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        threads = max(1, int(param(self, "inference_threads")))
        if not blas_threads(threads) and threads != 1:
            self.get_logger().warning("threadpoolctl is not installed: BLAS stays at one thread")
        torch.set_num_threads(threads)
        _warm(self.bundle)
        self.pending: list[tuple[np.ndarray, int, bool, np.ndarray]] = []
        self.stream: tuple[float, int] | None = None
        self.hop_n = 0
        self.last_seq: int | None = None
        self.last_stamp: int | None = None
        self.restart = True
        self.timeout = float(param(self, "input_timeout"))
        self.last_accept = time.monotonic()  # the watchdog's clock: monotonic, accepted frames only
        self.stops = {}
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
        self.bundle = None
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Safe state: no input, no estimates, ERROR on diagnostics; the node ends unconfigured."""
        self._drop_input()
        self.diag.set(ERROR, "error processing: estimates stopped")
        self.get_logger().error("error processing: input closed, estimates stopped")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """No estimate after this returns. The input's helper node stays until destroy_node, so
        that a stop never waits on DDS before it has closed what matters."""
        self.active = False
        if self.data is not None:
            self.data.close()

    def _drop_input(self) -> None:
        self.close()
        if self.data is not None:
            self.data.destroy()
            self.data = None

    def destroy_node(self) -> None:
        self._drop_input()
        super().destroy_node()

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
                self.get_logger().warning(f"stream {'went backwards' if back else 'jumped'} (sequence {self.last_seq}"
                                       f" -> {seq}, stamp {(stamp - self.last_stamp) * 1e-9:+.3f} s): history and "
                                       "restarts")
        self.last_seq, self.last_stamp = seq, stamp
        self.last_accept = time.monotonic()
        self.stops.pop("rejected", None)
        if self.pending:
            self.skipped += 1
        self.pending.append((frame, stamp, reset or self.restart))
        self.restart = False

    def _reject(self, text: str) -> None:
        self.rejected += 1
        self.stops["rejected"] = (ERROR, text)
        self.get_logger().error(text, throttle_duration_sec=5.0)

    def _infer(self) -> None:
        """Feed every stored frame to the model's history; publish the estimate of the newest."""
        if not self.active or not self.pending:
            return
        pending, self.pending = self.pending, []
        with self.swap_lock:
            swap, self.swap = self.swap, None
        if swap is not None:  # the new model reads the frames the old one holds: no gap in the estimates
            self.bundle, self.predictor, path = swap
            for frame in self.recent:
                self.predictor.push(frame)
            self.get_logger().info(f"model swapped in: {path} ({len(self.recent)} frames of history carried over)")
        y = None
        for frame, _, reset in pending:
            if reset:
                self.predictor.reset()
                self.recent.clear()
            y = self.predictor.push(frame)
            self.recent.append(frame)
        stamp = pending[-1][1]
        self.stops.pop("input", None)
        if y is None:
            return
        if not np.all(np.isfinite(y)):
            self.nonfinite += 1
            self.stops["nonfinite"] = (ERROR, "non-finite estimate: not published")
            self._report()
            return
        self.stops.pop("nonfinite", None)
        self.pub.publish(joint_state(self.names, y, stamp))
        self.rate_out.count += 1
        self.diag.latency((self.get_clock().now().nanoseconds - stamp) * 1e-9)
        self._report()

    def _watchdog(self) -> None:
        """Runs when a wait ends without a frame: silence is measured on the monotonic clock since
        the last accepted frame (rejected frames do not count as input)."""
        if not self.active:
            return
        silent = time.monotonic() - self.last_accept
        if silent < self.timeout:
            return
        if "input" not in self.stops:
            self.get_logger().warning(f"no accepted EMG features for {silent:.3f} s")
        self.stops["input"] = (WARN, f"no accepted input for {silent:.2f} s")
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
                "callback_errors": self.data.errors if self.data else 0}


def _warm(b: Bundle) -> None:
    """First calls allocate and pick kernels: keep that out of live latency."""
    warm = StreamingPredictor(b)
    for _ in range(2 * b.model_cfg.span):
        warm.push(np.full((b.channels, int(b.config["bands"])), -20.0, np.float32))


def main() -> int:
    return run(Estimator)
