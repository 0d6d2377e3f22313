"""Message <-> numpy conversion, in one place.

Array fields are filled with array.array built from the numpy buffer: the generated setters take
an array.array as it is, while a numpy array would be copied element by element in Python."""

from __future__ import annotations

from array import array

import numpy as np
from builtin_interfaces.msg import Time
from emg_rcnn_ros_msgs.msg import EmgArray, EmgFeatures
from sensor_msgs.msg import JointState

from ..core.stamps import sec_nanosec, to_ns  # noqa: F401 - to_ns is the nodes' import point


def _f32(x: np.ndarray) -> array:
    return array("f", np.ascontiguousarray(x, dtype=np.float32).tobytes())


def from_ns(ns: int) -> Time:
    sec, nanosec = sec_nanosec(ns)
    return Time(sec=sec, nanosec=nanosec)


def emg_array(samples: np.ndarray, rate: float, first_seq: int, stamp_ns: int, frame_id: str,
              channel_names: list[str]) -> EmgArray:
    msg = EmgArray()
    msg.header.stamp = from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.sample_rate = float(rate)
    msg.channel_names = channel_names
    msg.num_samples = int(samples.shape[0])
    msg.data = _f32(samples)
    msg.sequence = int(first_seq)
    return msg


def emg_samples(msg: EmgArray) -> np.ndarray:
    """[num_samples, channels] volts; raises ValueError on an inconsistent message."""
    data = np.frombuffer(msg.data, dtype=np.float32)
    n = int(msg.num_samples)
    if n == 0 or data.size % n:
        raise ValueError(f"EmgArray with {data.size} values for {n} samples")
    return data.reshape(n, data.size // n)


def emg_features(feats: np.ndarray, frequencies: np.ndarray, rate: float, window: float, seq: int, stamp_ns: int,
                 frame_id: str, quality: np.ndarray) -> EmgFeatures:
    msg = EmgFeatures()
    msg.sample_rate = float(rate)
    msg.header.stamp = from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.num_channels, msg.num_bins = int(feats.shape[0]), int(feats.shape[1])
    msg.frequencies = _f32(frequencies)
    msg.data = _f32(feats)
    msg.window_duration = float(window)
    msg.sequence = int(seq)
    msg.channel_quality = bytes(np.asarray(quality, np.uint8))
    return msg


def feature_frame(msg: EmgFeatures) -> np.ndarray:
    data = np.frombuffer(msg.data, dtype=np.float32)
    if data.size != msg.num_channels * msg.num_bins:
        raise ValueError(f"EmgFeatures with {data.size} values for {msg.num_channels}x{msg.num_bins}")
    return data.reshape(msg.num_channels, msg.num_bins)


def joint_state(names: list[str], positions: np.ndarray, stamp_ns: int, frame_id: str = "") -> JointState:
    msg = JointState()
    msg.header.stamp = from_ns(stamp_ns)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = array("d", np.asarray(positions, dtype=np.float64).tobytes())
    return msg
