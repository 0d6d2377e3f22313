"""emg_features: EmgArray on emg/raw -> one EmgFeatures frame per hop on emg/features.

Runs the core's streaming conditioning and framer, and the signal-quality measures of each
frame's window. A few lost samples (up to `conceal_max`, a best-effort chunk or two) are concealed:
the filters carry on over the last sample held for the gap, counted and logged, so a 10 ms loss
does not cost a window of estimates. A longer gap, reordering, or a change of rate or channel count
resets the filters and the frame history (counted), because a window must not join samples that
were far apart."""

from __future__ import annotations

import numpy as np
from emg_rcnn_ros_msgs.msg import EmgArray, EmgFeatures
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from ..core.config import FeatureConfig, from_dict, read_bundle_config, to_dict
from ..core.errors import BundleError, ConfigError
from ..core.frames import FeatureExtractor
from ..core.quality import QualityConfig, QualityTracker
from .convert import emg_features, emg_samples, to_ns
from .diagnostics import Diagnostics, Rate
from .fast_subscription import FastSubscription
from .params import declare, param
from .process import run


class Features(Node):
    def __init__(self) -> None:
        super().__init__("emg_features")
        declare(self, "model_path", "", "model bundle; when set, its feature settings are used (one source of truth)")
        declare(self, "conceal_max", 0.05, "lost samples up to this long (s) are concealed (filters carried over held "
                                           "samples); a longer gap restarts the filters and the frame history")
        defaults = to_dict(FeatureConfig())
        descriptions = {
            "band_low": "band-pass lower edge (Hz)", "band_high": "band-pass upper edge (Hz)",
            "filter_order": "Butterworth order", "mains_hz": "mains frequency to notch (Hz), 0 = none",
            "mains_harmonics": "number of notched mains harmonics", "notch_q": "notch quality factor",
            "window": "Hamming window length (s)", "hop": "frame period (s)", "bands": "frequency bands per channel",
            "log_floor": "power floor added before the log (V^2/Hz)",
        }
        for k, v in defaults.items():
            declare(self, k, v, descriptions[k])
        qdesc = {
            "clip_fraction": "signal quality: share of samples on plateaus at the window's extremes: clipped",
            "flat_ptp": "signal quality: peak-to-peak below this is a flat line (V)",
            "off_rms": "signal quality: 20-450 Hz RMS below this is an electrode off (V)",
            "jump_volts": "signal quality: a baseline step larger than this within a window is an electrode off (V)",
            "mains_ratio": "signal quality: share of the notched signal's 20-450 Hz power on mains lines that "
                           "flags hum (what the notch leaves) ...",
            "mains_volts": "signal quality: ... and above this RMS on the mains lines (V)",
            "mains_period": "signal quality: seconds between mains tests (0 = every frame)",
            "mains_window": "signal quality: seconds of notched signal the mains test reads (resolution 1/this Hz)",
        }
        qdefaults = QualityConfig()
        for k, desc in qdesc.items():
            declare(self, f"quality.{k}", float(getattr(qdefaults, k)), desc)
        self.cfg = self._feature_config()
        self.qcfg = QualityConfig(**{k: float(param(self, f"quality.{k}")) for k in qdesc},
                                  mains_hz=self.cfg.mains_hz or 50.0)
        self.quality: QualityTracker | None = None
        self.extractor: FeatureExtractor | None = None
        self.key: tuple[float, int] | None = None
        self.expected: int | None = None
        self.base = 0  # stream index of the extractor's sample 0
        self.resets = self.bad = self.concealed = self.concealed_samples = 0
        self.conceal_max = float(param(self, "conceal_max"))
        self.rate_in, self.rate_out = Rate(), Rate()
        self.pub = self.create_publisher(EmgFeatures, "emg/features", qos_profile_sensor_data)
        # Best effort like every sensor stream, with half a second of queue: a busy moment must not
        # cost samples.
        raw_qos = QoSProfile(depth=50, reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
        self.diag = Diagnostics(self, lambda: {
            "input_rate_hz": f"{self.rate_in.take():.1f}", "output_rate_hz": f"{self.rate_out.take():.1f}",
            "resets": self.resets, "concealed_gaps": self.concealed, "concealed_samples": self.concealed_samples,
            "bad_messages": self.bad, "callback_errors": self.data.errors})
        self.data = FastSubscription(self, EmgArray, "emg/raw", raw_qos, self._on_emg)  # last: it starts at once

    def close(self) -> None:
        """No frame is published after this returns; the input's helper node goes in destroy_node."""
        self.data.close()

    def destroy_node(self) -> None:
        self.data.destroy()
        super().destroy_node()

    def _feature_config(self) -> FeatureConfig:
        """The bundle's settings when model_path names a readable bundle, else the parameters
        (the estimator refuses frames whose layout does not match its model)."""
        path = str(param(self, "model_path"))
        if path:
            try:
                cfg = read_bundle_config(path)[1]
                self.get_logger().info(f"feature settings from the bundle {path}")
                return cfg
            except BundleError as exc:
                self.get_logger().warning(f"cannot read feature settings ({exc}); using parameters")
        try:
            return from_dict(FeatureConfig, {k: param(self, k) for k in to_dict(FeatureConfig())})
        except ConfigError as exc:
            raise SystemExit(f"emg_features: {exc}") from exc

    def _on_emg(self, msg: EmgArray) -> None:
        self.rate_in.count += 1
        try:
            x = emg_samples(msg)
        except ValueError as exc:
            self.bad += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        key = (float(msg.sample_rate), x.shape[1])
        gap = int(msg.sequence) - self.expected if key == self.key else 0
        if 0 < gap <= self.conceal_max * key[0]:
            # A few lost chunks (best-effort transport): carry the filters across them on held samples
            # instead of restarting, which would cost a whole window of estimates. Counted and logged.
            self.concealed += 1
            self.concealed_samples += gap
            self.get_logger().warning(f"{gap} samples lost before sequence {msg.sequence}: concealed",
                                   throttle_duration_sec=1.0)
            self._frames(np.repeat(self.last_sample, gap, axis=0), msg, key)
        if key != self.key or msg.sequence != self.expected:
            if self.key is not None:
                self.resets += 1
                self.get_logger().warning(f"stream reset: sequence {msg.sequence} (expected {self.expected}), "
                                       f"{key[1]} channels at {key[0]:g} Hz", throttle_duration_sec=1.0)
            try:
                self.extractor = FeatureExtractor(self.cfg, key[0], key[1])
            except (ConfigError, ValueError) as exc:
                self.bad += 1
                self.get_logger().error(f"cannot frame this stream: {exc}", throttle_duration_sec=5.0)
                self.key = None
                return
            self.key, self.base, self.expected = key, int(msg.sequence), int(msg.sequence)
            self.quality = QualityTracker(self.qcfg, key[0], self.extractor.layout.window_n)
        self._frames(x, msg, key)

    def _frames(self, x: np.ndarray, msg: EmgArray, key: tuple[float, int]) -> None:
        """Push samples that follow the stream's last one; publish the frames they complete."""
        self.expected += len(x)
        self.last_sample = x[-1:]
        conditioned = self.extractor.conditioner.process(x)
        self.quality.push(x, conditioned)
        feats, ends = self.extractor.framer.push(conditioned)
        if not len(ends):
            return
        t0 = to_ns(msg.header.stamp) - int(round((msg.sequence - self.base) * 1e9 / key[0]))  # stamp of sample 0
        lay = self.extractor.layout
        now = self.get_clock().now().nanoseconds
        for f, e in zip(feats, ends):
            stamp = t0 + int(round(e * 1e9 / key[0]))
            self.pub.publish(emg_features(f, lay.centres, key[0], lay.window_n / key[0], self.base + int(e), stamp,
                                          msg.header.frame_id, self.quality.frame(int(e))))
            self.rate_out.count += 1
            self.diag.latency((now - stamp) * 1e-9)


def main() -> int:
    return run(Features)
