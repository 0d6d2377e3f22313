"""emg_command: joint estimates -> position commands for a device worn by a person.

The one node that decides what reaches the motor, in the manner of a ros2_control safety adapter:
a reviewer reads this file and core/command.py. Lifecycle node, starts inactive.

In: `estimate_topic` (JointState from emg_estimator), `features_topic` (EmgFeatures: only each
frame's per-channel quality flags are read), `measured_state_topic` (the device's JointState).
Out: `command_topic` (Float64MultiArray in `controller_joints` order, or a one-point
JointTrajectory), /diagnostics with the reason whenever commands are stopped.

- Commands start at the device's measured position (matched by joint name) and ramp to the
  estimate under position, velocity and acceleration limits (core/command.py), one per estimate.
- They stop, with the reason, when no estimate came for `input_timeout` (monotonic clock), the
  estimate is not finite, the measured state is missing or stale, or the quality gate acts.
- The quality gate is debounced (a channel's flag acts after `quality_trip_time` of consecutive
  flagged frames) with hysteresis (it clears after `quality_clear_time` of clean frames);
  `quality_policy` hold stops, safe ramps to `safe_posture` and stops, continue only reports.
- After a stop, commands resume from the last command when the device agrees with it (within
  `resume_tolerance`), else from the measured position: no snap either way.
- Tracking fault, latched: the measured position more than `max_tracking_error` from the command
  for longer than `tracking_time` means the device is not following. Commands stop and stay stopped
  until `~/reset` (std_srvs/Trigger) or deactivate and activate."""

from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from emg_rcnn_ros_msgs.msg import EmgFeatures
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..core.command import CommandShaper, TrackingMonitor
from ..core.quality import QualityGate, describe
from .convert import to_ns
from .diagnostics import Diagnostics, Rate
from .lifecycle import guarded
from .params import declare, param
from .process import run

POLICIES = ("hold", "safe", "continue")
COMMAND_TYPES = ("position", "trajectory")
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

PARAMETERS: tuple[tuple[str, object, str], ...] = (
    ("command_topic", "emg/commands", "topic for commands to a position or joint trajectory controller"),
    ("command_qos_depth", 10, "history depth of the (reliable) command publisher"),
    ("command_type", "position", "position: std_msgs/Float64MultiArray (forward_position_controller); "
                                 "trajectory: trajectory_msgs/JointTrajectory, one point per period"),
    ("estimate_topic", "emg/joint_estimates", "JointState estimates (emg_estimator)"),
    ("features_topic", "emg/features", "EmgFeatures: the per-channel quality flags of each frame"),
    ("measured_state_topic", "/joint_states", "sensor_msgs/JointState of the device: commands start here"),
    ("controller_joints", [str], "joint order of the commands; empty: the joints of the first estimate"),
    ("command_period", 0.02, "time between estimates (s, the features' hop): the limits' time step"),
    ("position_min", [float], "lower position limit per controller joint (rad); empty: -pi"),
    ("position_max", [float], "upper position limit per controller joint (rad); empty: +pi"),
    ("max_velocity", [float], "velocity limit per controller joint (rad/s); empty: 1.0"),
    ("max_acceleration", [float], "acceleration limit per controller joint (rad/s^2); empty: 5.0"),
    ("smoothing_cutoff", 5.0, "low-pass cutoff of command targets (Hz); 0 disables"),
    ("input_timeout", 0.15, "no estimate for this long (s, monotonic clock): commands stop (resume without a snap)"),
    ("measured_state_timeout", 0.5, "a measured state older than this (s) is missing: commands stop"),
    ("require_measured_state", True, "false: start commands at the first estimate when no measured state exists "
                                     "(a jump; only for devices that tolerate it)"),
    ("resume_tolerance", 0.1, "after a stop, resume from the last command if the device is within this (rad)"),
    ("max_tracking_error", 0.25, "measured position this far (rad) from the command ..."),
    ("tracking_time", 0.3, "... for longer than this (s): tracking fault, latched until ~/reset"),
    ("quality_policy", "hold", "a channel fails the signal-quality gate: hold (stop commands), safe (ramp to "
                               "safe_posture, then stop) or continue (report only)"),
    ("quality_trip_time", 0.04, "a channel's quality flag acts after this long (s) of consecutive flagged frames"),
    ("quality_clear_time", 0.2, "and clears after this long (s) of consecutive clean frames"),
    ("safe_posture", [float], "per controller joint (rad), for quality_policy safe"),
)


class Command(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emg_command")
        for name, default, desc in PARAMETERS:
            declare(self, name, default, desc)
        self.active = False
        self.cmd_pub = None
        self.subs: list = []
        self.reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self.shaper: CommandShaper | None = None
        self.stops: dict[str, tuple[bytes, str]] = {}
        self.rate_in, self.rate_out = Rate(), Rate()
        self.sent = self.stopped = self.resumed = 0
        self.diag = Diagnostics(self, self._diag_values)
        self.timer = None

    # lifecycle -----------------------------------------------------------------------------
    @guarded
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._read_settings()
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        kind = JointTrajectory if self.trajectory else Float64MultiArray
        self.cmd_pub = self.create_lifecycle_publisher(kind, str(param(self, "command_topic")),
                                                       max(1, int(param(self, "command_qos_depth"))))
        self.subs = [
            self.create_subscription(JointState, str(param(self, "estimate_topic")), self._on_estimate,
                                     qos_profile_sensor_data),
            self.create_subscription(EmgFeatures, str(param(self, "features_topic")), self._on_frame,
                                     qos_profile_sensor_data),
            self.create_subscription(JointState, str(param(self, "measured_state_topic")), self._on_measured,
                                     qos_profile_sensor_data),
        ]
        kind = "trajectory" if self.trajectory else "position"
        self.get_logger().info(f"configured: {kind} commands on {self.cmd_pub.topic_name}, policy {self.policy}")
        return TransitionCallbackReturn.SUCCESS

    def _read_settings(self) -> None:
        """Every setting validated here, once, so that a bad one fails configure with its name."""
        kind, policy = str(param(self, "command_type")), str(param(self, "quality_policy"))
        if kind not in COMMAND_TYPES:
            raise ValueError(f"command_type '{kind}' (expected one of {', '.join(COMMAND_TYPES)})")
        if policy not in POLICIES:
            raise ValueError(f"quality_policy '{policy}' (expected one of {', '.join(POLICIES)})")
        if not str(param(self, "command_topic")):
            raise ValueError("command_topic is empty")
        self.trajectory, self.policy = kind == "trajectory", policy
        seconds = {k: float(param(self, k)) for k in ("command_period", "input_timeout", "measured_state_timeout",
                                                       "resume_tolerance", "max_tracking_error", "tracking_time",
                                                       "quality_trip_time", "quality_clear_time", "smoothing_cutoff")}
        bad = [k for k, v in seconds.items() if not (np.isfinite(v) and v >= 0)]
        if bad or seconds["command_period"] <= 0 or seconds["input_timeout"] <= 0:
            raise ValueError(f"{', '.join(bad) or 'command_period or input_timeout'} must be finite and >= 0 "
                             "(command_period and input_timeout > 0)")
        self.s = seconds
        frames = lambda t: max(1, int(round(t / seconds["command_period"])))  # noqa: E731
        self.gate = QualityGate(frames(seconds["quality_trip_time"]), frames(seconds["quality_clear_time"]))
        self.monitor = TrackingMonitor(max(seconds["max_tracking_error"], 1e-6), seconds["tracking_time"])
        self.require = bool(param(self, "require_measured_state"))
        self.joints: list[str] = list(param(self, "controller_joints"))
        self.shaper = None
        if self.joints:
            self._setup_joints(self.joints)

    def _setup_joints(self, joints: list[str]) -> None:
        n = len(joints)

        def per_joint(name: str, fill: float | None) -> np.ndarray | None:
            v = list(param(self, name))
            if v and len(v) != n:
                raise ValueError(f"{name} has {len(v)} values for {n} controller joints {joints}")
            return np.array(v, float) if v else (None if fill is None else np.full(n, fill))

        lower, upper = per_joint("position_min", -np.pi), per_joint("position_max", np.pi)
        safe = per_joint("safe_posture", None)
        if self.policy == "safe" and (safe is None or np.any(safe < lower) or np.any(safe > upper)):
            raise ValueError("quality_policy safe needs safe_posture, one value per controller joint within the limits")
        self.shaper = CommandShaper(lower, upper, per_joint("max_velocity", 1.0), per_joint("max_acceleration", 5.0),
                                    self.s["smoothing_cutoff"], self.s["command_period"])
        self.joints, self.safe = list(joints), safe

    @guarded
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._start_fresh()
        self.active = True
        # A steady clock: under use_sim_time with no /clock the watchdog must still run.
        self.timer = self.create_timer(min(0.02, self.s["input_timeout"] / 2), self._watchdog,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        return super().on_activate(state)

    def _start_fresh(self) -> None:
        """Forget every stop, the latch included: commands start again at the measured position."""
        self.stops, self.measured, self.last_cmd, self.at_safe = {}, None, None, False
        self.last_estimate = time.monotonic()
        self.last_stamp: int | None = None
        self.gate.reset()
        self.flags = np.zeros(0, np.uint8)
        self.monitor.reset()
        if self.shaper is not None:
            self.shaper.reset()

    @guarded
    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    @guarded
    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        for s in self.subs:
            self.destroy_subscription(s)
        if self.cmd_pub is not None:
            self.destroy_lifecycle_publisher(self.cmd_pub)
        self.subs, self.cmd_pub = [], None
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._halt()
        self.diag.set(ERROR, "error processing: commands stopped")
        self.get_logger().error("error processing: commands stopped")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """No command after this returns."""
        self._halt()

    def _halt(self) -> None:
        self.active = False
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        if self.shaper is not None:
            self.shaper.reset()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Clear a latched fault: commands start again at the measured position."""
        if not self.active:
            response.success, response.message = False, "not active"
            return response
        was = self.monitor.latched
        self._start_fresh()
        self.get_logger().warning("reset: commands start again at the measured position")
        response.success, response.message = True, "tracking fault cleared" if was else "no fault latched"
        return response

    # inputs ----------------------------------------------------------------------------------
    def _on_measured(self, msg: JointState) -> None:
        """The device's positions in controller order; ignored unless every joint is there."""
        if not self.active or not self.joints:
            return
        where = {n: i for i, n in enumerate(msg.name)}
        if not all(j in where and where[j] < len(msg.position) for j in self.joints):
            return
        pos = np.array([msg.position[where[j]] for j in self.joints], float)
        if np.all(np.isfinite(pos)):
            self.measured = (pos, time.monotonic())

    def _measured_now(self) -> np.ndarray | None:
        m = self.measured
        if m is None or time.monotonic() - m[1] > self.s["measured_state_timeout"]:
            return None
        return m[0]

    def _on_frame(self, msg: EmgFeatures) -> None:
        if self.active:
            self.flags = self.gate.update(np.frombuffer(bytes(msg.channel_quality), np.uint8))

    def _on_estimate(self, msg: JointState) -> None:
        if not self.active:
            return
        self.rate_in.count += 1
        now = time.monotonic()
        if not self.joints:
            try:
                self._setup_joints(list(msg.name))
            except ValueError as exc:
                self._stop("settings", ERROR, f"cannot command joints {list(msg.name)}: {exc}")
                return
        where = {n: i for i, n in enumerate(msg.name)}
        if not all(j in where and where[j] < len(msg.position) for j in self.joints):
            self._stop("estimate", ERROR, f"estimates lack controller joints {self.joints} (have {list(msg.name)})")
            return
        target = np.array([msg.position[where[j]] for j in self.joints], float)
        stamp = to_ns(msg.header.stamp)
        if self.last_stamp is not None and (stamp <= self.last_stamp
                                            or stamp - self.last_stamp > self.s["input_timeout"] * 1e9):
            self.get_logger().warning(f"estimate stamps {'went backwards' if stamp <= self.last_stamp else 'jumped'} "
                                   f"({(stamp - self.last_stamp) * 1e-9:+.3f} s): the ramp restarts")
            self._pause()
            self.at_safe = False  # the device may have been moved meanwhile: ramp to safe again from it
        self.last_stamp, self.last_estimate = stamp, now
        self.stops.pop("input", None)
        if not np.all(np.isfinite(target)):
            self._stop("estimate", ERROR, "non-finite estimate: commands stopped")
            return
        self.stops.pop("estimate", None)
        self._command(target, now)
        self._report()

    # the decision ------------------------------------------------------------------------------
    def _command(self, target: np.ndarray, now: float) -> None:
        if self.monitor.latched:
            return  # stays stopped until ~/reset or deactivate/activate; the reason is in self.stops
        quality = self._quality_text()
        to_safe = bool(quality) and self.policy == "safe"
        if quality and self.policy != "continue":
            action = ("at the safe posture: commands stopped" if self.at_safe else "ramping to the safe posture"
                      ) if to_safe else "holding"
            self.stops["quality"] = (WARN, f"signal quality ({quality}): {action}")
            if not to_safe or self.at_safe:
                self._pause()
                return
            target = self.safe
        else:
            self.at_safe = False
            if quality:
                self.stops["quality"] = (WARN, f"signal quality ({quality}): continuing (quality_policy continue)")
            else:
                self.stops.pop("quality", None)
        measured = self._measured_now()
        if measured is None and self.require:
            verb = "wait for it" if not self.shaper.started else "stopped"
            self.stops["measured"] = (WARN, f"no measured device state on {self.subs[2].topic_name} (or stale): "
                                            f"commands {verb}")
            self._pause()
            return
        if not self.shaper.started:
            try:
                first = self.shaper.resume(self.last_cmd, measured if measured is not None
                                           else np.clip(target, self.shaper.lower, self.shaper.upper),
                                           self.s["resume_tolerance"])
            except ValueError as exc:
                self.stops["measured"] = (ERROR, f"cannot start commands: {exc}")
                return
            self.stops.pop("measured", None)
            self.monitor.rearm()  # the device gets tracking_time from this start
            self.resumed += 1
            how = "the last command" if self.last_cmd is not None and np.array_equal(first, self.last_cmd) \
                else "the measured position"
            self.get_logger().info(f"commands start at {how} {np.round(first, 3).tolist()}",
                                   throttle_duration_sec=1.0)
            self._send(first)
            return
        self.stops.pop("measured", None)
        cmd = self.shaper.step(target)
        if cmd is None:
            return
        if measured is not None and self.monitor.update(now, self.last_cmd, measured):
            text = (f"tracking fault: the device is {self.monitor.error:.3f} rad from the command for more than "
                    f"{self.monitor.hold:g} s (max_tracking_error {self.monitor.max_error:g} rad): commands stopped "
                    "until ~/reset or deactivate/activate")
            self.stops["tracking"] = (ERROR, text)
            self.get_logger().error(text)
            self.shaper.reset()
            return
        self._send(cmd)
        self.at_safe = to_safe and bool(np.allclose(cmd, self.safe))

    def _quality_text(self) -> str:
        """'emg3: electrode off; ...' for the channels on which the gate acts."""
        return "; ".join(f"emg{c}: {describe(int(q))}" for c, q in enumerate(self.flags) if q)

    def _send(self, cmd: np.ndarray) -> None:
        if self.trajectory:
            point = JointTrajectoryPoint(positions=[float(v) for v in cmd])
            point.time_from_start.nanosec = int(round(self.shaper.period * 1e9))
            self.cmd_pub.publish(JointTrajectory(joint_names=self.joints, points=[point]))
        else:
            self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in cmd]))
        self.last_cmd = np.asarray(cmd, float).copy()
        self.sent += 1
        self.rate_out.count += 1

    def _pause(self) -> None:
        """Stop sending; the next command resumes (core/command.py: from the last command or the device)."""
        if self.shaper is not None and self.shaper.started:
            self.stopped += 1
            self.get_logger().warning("commands stopped", throttle_duration_sec=1.0)
            self.shaper.reset()

    def _stop(self, key: str, level: bytes, text: str) -> None:
        self.stops[key] = (level, text)
        self.get_logger().error(text, throttle_duration_sec=5.0)
        self._pause()
        self._report()

    def _watchdog(self) -> None:
        if not self.active:
            return
        silent = time.monotonic() - self.last_estimate
        if silent < self.s["input_timeout"]:
            return
        if "input" not in self.stops:
            self.get_logger().warning(f"no estimate for {silent:.3f} s: commands stopped")
        self.stops["input"] = (WARN, f"no estimate for {silent:.2f} s: commands stopped")
        self._pause()
        self.at_safe = False  # the device may have been moved meanwhile: ramp to safe again from it
        self._report()

    def _report(self) -> None:
        if not self.stops:
            self.diag.set(OK, "ok")
            return
        level = max(lv for lv, _ in self.stops.values())
        self.diag.set(level, "; ".join(text for _, text in self.stops.values()))

    def _diag_values(self) -> dict[str, object]:
        return {"estimate_rate_hz": f"{self.rate_in.take():.1f}", "command_rate_hz": f"{self.rate_out.take():.1f}",
                "commands": "sending" if self.shaper is not None and self.shaper.started else "stopped",
                "commands_sent": self.sent, "stops": self.stopped, "starts": self.resumed,
                "tracking_fault": "latched" if self.active and self.monitor.latched else "no",
                "tracking_error_rad": f"{self.monitor.error:.3f}" if self.active else "-"}


def main() -> int:
    return run(Command)
