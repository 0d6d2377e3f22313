"""Commands to a controller respect position limits and the velocity limit, and never carry NaN."""

from __future__ import annotations

import numpy as np

from emg_rcnn_ros.core.command import CommandShaper


def test_limits_velocity_and_smoothing() -> None:
    s = CommandShaper(np.array([0.0, -1.0]), np.array([2.0, 1.0]), np.array([1.0, 4.0]), cutoff_hz=0.0)
    assert np.allclose(s.step(np.array([5.0, -5.0]), 0.0), [2.0, -1.0])  # clamped to limits
    out = [s.step(np.array([0.0, 1.0]), 0.02 * k) for k in range(1, 51)]
    steps = np.abs(np.diff(np.array(out), axis=0))
    assert np.all(steps[:, 0] <= 1.0 * 0.02 + 1e-12) and np.all(steps[:, 1] <= 4.0 * 0.02 + 1e-12)
    assert np.allclose(out[-1], [1.0, 1.0])  # 1 rad/s for 1 s from 2.0; joint 2 reached its target
    assert s.step(np.array([np.nan, 0.0]), 2.0) is None
    assert s.step(np.array([np.inf, 0.0]), 2.0) is None


def test_low_pass_smooths_a_step() -> None:
    s = CommandShaper(np.array([-10.0]), np.array([10.0]), np.array([100.0]), cutoff_hz=2.0)
    s.step(np.array([0.0]), 0.0)
    y = [float(s.step(np.array([1.0]), 0.02 * k)[0]) for k in range(1, 101)]
    tau = 1 / (2 * np.pi * 2.0)
    assert abs(y[int(round(tau / 0.02)) - 1] - (1 - np.exp(-1))) < 0.05  # first-order response
    assert np.all(np.diff(y) >= 0) and y[-1] > 0.99
