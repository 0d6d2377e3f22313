"""emg_acquisition: publishes EmgArray chunks on emg/raw from the chosen amplifier driver.

Lifecycle node, starts inactive: configure opens the source, activate starts streaming. Stamps
are acquisition times on one clock: stream start + sample index / rate."""

from __future__ import annotations

import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from emg_rcnn_ros_msgs.msg import EmgArray
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState

from ..core.sim import SimConfig, next_day
from ..drivers.base import Block, Chunker
from ..drivers.simulated import SimulatedSource, parse_fault
from .convert import emg_array, joint_state
from .diagnostics import Diagnostics, Rate
from .lifecycle import guarded
from .params import declare, param
from .process import run

DRIVERS = ("simulated", "serial", "openbci_cyton")


class Acquisition(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emg_acquisition")
        for name, default, desc in (
            ("driver", "simulated", "EMG source: simulated | serial | openbci_cyton"),
            ("sample_rate", 2000.0, "sampling rate (Hz); fixed 250 Hz for openbci_cyton"),
            ("channels", 8, "number of EMG channels"),
            ("chunk_duration", 0.01, "samples per EmgArray message (s)"),
            ("frame_id", "emg", "header.frame_id of published messages"),
            ("channel_names", [str], "channel names; empty: emg0, emg1, ..."),
            ("sim_seed", 7, "simulated: movement and noise seed"),
            ("sim_subject", 0, "simulated: anatomy seed (same subject = same value)"),
            ("sim_joints", 2, "simulated: number of joints (1-3)"),
            ("sim_next_day", 0.0, "simulated: the subject on another day, electrodes placed again (core/sim.py "
                                  "next_day): 0 = the same day, 1 = the preset, 2 = moved twice as far"),
            ("mains_hz", 50.0, "simulated: mains interference frequency (Hz)"),
            ("sim_fault", "", "simulated, live: electrode fault on channel C: '' | rail:C | flat:C | off:C | mains:C"),
            ("port", "/dev/ttyUSB0", "serial port of the amplifier"),
            ("baudrate", 921600, "serial baud rate"),
            ("sample_format", "int16", "serial: int16 | int24 sample encoding"),
            ("gain", 1.0, "amplifier gain; input volts = ADC volts / gain"),
            ("vref", 2.5, "serial: ADC reference voltage (V); counts full scale = +-vref"),
            ("read_timeout", 0.1, "serial read timeout (s)"),
            ("reconnect_max_backoff", 5.0, "longest wait between reconnection attempts (s)"),
        ):
            declare(self, name, default, desc)
        self.source = None
        self.running: threading.Event | None = None
        self.pump: threading.Thread | None = None
        self.rate_out = Rate()
        self.diag: Diagnostics | None = None
        self.fault: str | None = None
        self._fault_signal = self.create_guard_condition(self._on_fault)
        self.add_on_set_parameters_callback(self._on_params)

    # lifecycle -----------------------------------------------------------------------------
    @guarded
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self.fault = None
        if self.diag is not None:
            self.diag.set(DiagnosticStatus.OK, "ok")
        driver = str(param(self, "driver"))
        try:
            self.source = self._make_source(driver)
        except (ValueError, OSError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        names = list(param(self, "channel_names")) or list(self.source.channel_names)
        if len(names) != self.source.channels:
            self.get_logger().error(f"{len(names)} channel_names for {self.source.channels} channels")
            return TransitionCallbackReturn.FAILURE
        self.channel_names = names
        self.frame_id = str(param(self, "frame_id"))
        self.chunk_n = max(1, int(round(float(param(self, "chunk_duration")) * self.source.rate)))
        if self.diag is None:  # publishers outlive cleanup/configure cycles: made once
            self.pub = self.create_lifecycle_publisher(EmgArray, "emg/raw", qos_profile_sensor_data)
            self.truth_pub = self.create_lifecycle_publisher(JointState, "emg/ground_truth", 10)
            self.diag = Diagnostics(self, self._diag_values)
        self.get_logger().info(f"configured: {driver}, {self.source.channels} channels at {self.source.rate:g} Hz, "
                               f"{self.chunk_n} samples per message")
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start the source and a pump thread that publishes each chunk as soon as it is complete
        (a ROS timer would add its own jitter to every sample's latency)."""
        self.chunker = Chunker(self.chunk_n)
        self.running = threading.Event()
        self.running.set()
        self.t0_ns = self.get_clock().now().nanoseconds  # stream clock: sample i at t0 + i / rate
        self.source.start(self.chunk_n)
        self.pump = threading.Thread(target=self._pump, name="acquisition", daemon=True)
        self.pump.start()
        return super().on_activate(state)

    def _on_params(self, params: list) -> SetParametersResult:
        """sim_fault applies at once to a running simulated source (the others at configure)."""
        for p in params:
            if p.name == "sim_fault":
                channels = self.source.channels if self.source is not None else int(param(self, "channels"))
                try:
                    fault = parse_fault(str(p.value), channels)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                if isinstance(self.source, SimulatedSource):
                    self.source.fault = fault
                    self.get_logger().warning(f"simulated electrode fault: {p.value or 'none'}")
        return SetParametersResult(successful=True)

    def _on_fault(self) -> None:
        if self.fault is not None and self._state_machine.current_state[1] == "active":
            self.trigger_deactivate()  # on_deactivate answers ERROR: error processing follows

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Safe state: nothing streams, the port is released; the node ends unconfigured."""
        self.close()  # the source object stays, so its counters and errors remain in diagnostics
        self.get_logger().error(f"error processing: source closed ({self.fault or 'transition failed'})")
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        if self.fault is not None:
            return TransitionCallbackReturn.ERROR
        self._stop_pump()
        for block in self.chunker.flush():
            self._publish(block)
        return super().on_deactivate(state)

    @guarded
    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    @guarded
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self._stop_pump()

    def _stop_pump(self) -> None:
        if self.running is not None:
            self.running.clear()
        if self.pump is not None:
            self.pump.join(timeout=2.0)
            self.pump = None
        if self.source is not None:
            self.source.stop()

    # streaming -----------------------------------------------------------------------------
    def _make_source(self, driver: str):
        if driver == "simulated":
            cfg = SimConfig(rate=float(param(self, "sample_rate")), channels=int(param(self, "channels")),
                            joints=int(param(self, "sim_joints")), seed=int(param(self, "sim_seed")),
                            subject_seed=int(param(self, "sim_subject")), mains_hz=float(param(self, "mains_hz")))
            if float(param(self, "sim_next_day")) > 0:
                cfg = next_day(cfg, cfg.seed, float(param(self, "sim_next_day")))
            src = SimulatedSource(cfg)
            src.fault = parse_fault(str(param(self, "sim_fault")), cfg.channels)
            return src
        if driver in ("serial", "openbci_cyton"):
            from ..drivers.serial_source import make_serial_source

            return make_serial_source(
                driver, port=str(param(self, "port")), baudrate=int(param(self, "baudrate")),
                channels=int(param(self, "channels")), rate=float(param(self, "sample_rate")),
                sample_format=str(param(self, "sample_format")), gain=float(param(self, "gain")),
                vref=float(param(self, "vref")), read_timeout=float(param(self, "read_timeout")),
                max_backoff=float(param(self, "reconnect_max_backoff")),
            )
        raise ValueError(f"unknown driver '{driver}' (expected one of {', '.join(DRIVERS)})")

    def _pump(self) -> None:
        """Any failure here is a fault of the node: it is logged, reported as ERROR, and takes the
        node through the lifecycle's error processing (which releases the port), never silently."""
        try:
            while self.running.is_set():
                for block in self.source.read(0.1):
                    for chunk in self.chunker.push(block):
                        self._publish(chunk)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the lifecycle
            if isinstance(exc, RCLError) and not rclpy.ok():  # shutting down: the context went away
                return
            self.fault = f"acquisition stopped: {exc!r}"
            self.get_logger().error(self.fault)
            if self.diag is not None:
                self.diag.set(DiagnosticStatus.ERROR, self.fault)
            self._fault_signal.trigger()  # the executor's thread drives the error transition

    def _publish(self, chunk: Block) -> None:
        rate = self.source.rate
        # A serial amplifier's samples are stamped through its fitted clock (drivers/clock.py); the
        # simulator's clock is exact: activation time + index / rate.
        stamp_of = getattr(self.source, "stamp_ns", None)
        stamp = stamp_of(chunk.first) if stamp_of else self.t0_ns + int(round(chunk.first * 1e9 / rate))
        self.pub.publish(emg_array(chunk.samples, rate, chunk.first, stamp, self.frame_id, self.channel_names))
        self.rate_out.count += 1
        if chunk.truth is not None:
            self.truth_pub.publish(joint_state(self.source.joint_names, np.asarray(chunk.truth[0]), stamp))
        if self.diag is not None:
            end_ns = stamp + int(round((len(chunk.samples) - 1) * 1e9 / rate))
            self.diag.latency((self.get_clock().now().nanoseconds - end_ns) * 1e-9)

    def _diag_values(self) -> dict[str, object]:
        values: dict[str, object] = {"output_rate_hz": f"{self.rate_out.take():.1f}",
                                     "connected": getattr(self.source, "connected", self.pump is not None)}
        if self.fault is not None:
            values["fault"] = self.fault
        host_clock = getattr(self.source, "host_clock", None)
        if host_clock is not None:
            values["estimated_rate_hz"] = f"{host_clock.rate:.3f}"
        return {**values, **self.source.stats.as_dict()}


def main() -> int:
    return run(Acquisition)
