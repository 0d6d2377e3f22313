"""Commands to a device worn by a person: they start where the device is, stay within the position
limits, never step faster than the velocity limit nor change speed faster than the acceleration
limit, settle on the target without overshoot, and never carry NaN. The invariants are checked
over arbitrary estimate sequences (hypothesis), NaN and inf included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emg_rcnn_ros.core.command import CommandShaper

P = 0.02
TOL = 1e-9


def _check(cmds: np.ndarray, s: CommandShaper) -> None:
    assert np.all(np.isfinite(cmds))
    assert np.all(cmds >= s.lower - TOL) and np.all(cmds <= s.upper + TOL)
    v = np.diff(cmds, axis=0) / P
    assert np.all(np.abs(v) <= s.vmax * (1 + 1e-9) + TOL), np.abs(v).max(axis=0)
    a = np.diff(np.vstack([np.zeros((1, cmds.shape[1])), v]), axis=0) / P  # starts at rest
    assert np.all(np.abs(a) <= s.amax * (1 + 1e-6) + 1e-6), np.abs(a).max(axis=0)


def test_starts_at_the_measured_position_and_ramps_to_a_far_estimate() -> None:
    s = CommandShaper([-1.0, -2.0], [1.0, 2.0], [0.5, 1.0], [2.0, 4.0], cutoff_hz=0.0, period=P)
    first = s.start([0.8, -1.5])
    assert np.allclose(first, [0.8, -1.5])  # where the device is, not where the estimate is
    out = [first] + [s.step([-0.9, 1.8]) for _ in range(400)]
    cmds = np.array(out)
    _check(cmds, s)
    assert np.allclose(cmds[1], first, atol=4.0 * P * P + 1e-12)  # the first step is tiny
    assert np.allclose(cmds[-1], [-0.9, 1.8])  # it gets there, and settles
    assert np.all(np.diff(cmds[:, 0]) <= TOL) and np.all(np.diff(cmds[:, 1]) >= -TOL)  # no overshoot


def test_refuses_to_start_outside_the_limits_or_without_a_position() -> None:
    s = CommandShaper([0.0], [1.0], [1.0], [1.0], 0.0, P)
    with pytest.raises(ValueError, match="outside the limits"):
        s.start([1.5])
    with pytest.raises(ValueError, match="finite"):
        s.start([np.nan])
    assert not s.started and s.step([0.5]) is None  # no command before a start


def test_low_pass_smooths_a_step() -> None:
    s = CommandShaper([-10.0], [10.0], [100.0], [1e6], cutoff_hz=2.0, period=P)
    s.start([0.0])
    y = [float(s.step([1.0])[0]) for _ in range(100)]
    tau = 1 / (2 * np.pi * 2.0)
    assert abs(y[int(round(tau / P)) - 1] - (1 - np.exp(-1))) < 0.05  # first-order response
    assert np.all(np.diff(y) >= -TOL) and y[-1] > 0.99


finite = st.floats(-10.0, 10.0, allow_nan=False)
value = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")))


@settings(max_examples=300, deadline=None)
@given(lo=st.floats(-3.0, 0.0), span=st.floats(0.0, 4.0), vmax=st.floats(0.01, 20.0), amax=st.floats(0.01, 500.0),
       cutoff=st.sampled_from([0.0, 0.5, 5.0, 50.0]), start_frac=st.floats(0.0, 1.0),
       targets=st.lists(st.lists(value, min_size=2, max_size=2), min_size=1, max_size=300))
def test_property_limits_velocity_acceleration(lo, span, vmax, amax, cutoff, start_frac, targets) -> None:
    lower, upper = np.array([lo, lo - 1.0]), np.array([lo + span, lo + span + 1.0])
    s = CommandShaper(lower, upper, [vmax, 2 * vmax], [amax, amax / 2], cutoff, P)
    out = [s.start(np.clip(lower + start_frac * (upper - lower), lower, upper))]  # not 1 ulp past a limit
    for t in targets:
        y = s.step(t)
        if y is None:
            assert not np.all(np.isfinite(t))  # only a non-finite estimate gives no command
            continue
        out.append(y)
    _check(np.array(out), s)
