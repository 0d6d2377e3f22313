"""Amplifier sample clock -> host time (pure core): a device 2 % off its nominal rate, whose data
arrive in USB-like bursts with random delays and rare stalls, for 10 minutes of simulated time.
After the first second, every stamp is within 2 ms of the sample's true acquisition time; after
10 s the rate estimate is within 50 ppm of the true rate."""

from __future__ import annotations

import numpy as np
import pytest

from emg_rcnn_ros.drivers.clock import ClockFit


@pytest.mark.parametrize("off", [0.02, -0.03])
def test_stamps_follow_a_drifting_bursty_clock(off: float) -> None:
    rng = np.random.default_rng(1)
    nominal, seconds, t0 = 2000.0, 600.0, 1.0e9
    true = nominal * (1 + off)
    fit = ClockFit(nominal)
    errors, times, rates = [], [], []
    k, t, last = 0, 0.0, 0.0
    while t < seconds:
        t += 0.016  # a USB read returns every 16 ms what has arrived
        last = max(last, t + 2e-4 + rng.exponential(2e-3) + (0.05 if rng.random() < 0.002 else 0.0))
        acquired = int(t * true)  # samples taken by time t
        if acquired <= k:
            continue
        fit.observe(acquired - 1, t0 + last)
        errors.append(fit.time_of(k) - (t0 + k / true))  # the stamp of the first new sample
        times.append(t)
        rates.append(fit.rate)
        k = acquired
    errors, times, rates = np.array(errors), np.array(times), np.array(rates)
    settled = times >= 1.0
    assert np.abs(errors[settled]).max() < 2e-3, np.abs(errors[settled]).max()
    assert np.abs(rates[times >= 10.0] / true - 1).max() < 50e-6
    assert np.all(np.diff([fit.time_of(i) for i in range(k, k + 100)]) > 0)


def test_reset_keeps_the_old_line_until_the_next_arrival() -> None:
    fit = ClockFit(1000.0)
    with pytest.raises(RuntimeError):
        fit.time_of(0)
    for i in range(1, 400):
        fit.observe(i * 10, 100.0 + i * 0.01)
    assert fit.time_of(3990) == pytest.approx(103.99, abs=1e-6)
    fit.reset()  # a reconnect: samples still queued keep the old line
    assert fit.time_of(3995) == pytest.approx(103.995, abs=1e-6)
    fit.observe(9000, 500.0)  # the new session's first arrival re-bases the line
    assert fit.time_of(9000) == pytest.approx(500.0)
