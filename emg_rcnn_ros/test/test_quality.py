"""The signal-quality measures (pure core): each electrode fault is flagged on its own channel and
named, clean simulated EMG is not, and the tracker assesses exactly each frame's window."""

from __future__ import annotations

import numpy as np

from emg_rcnn_ros.core.quality import CLIPPED, FLAT, MAINS, OFF, QualityConfig, QualityTracker, assess, describe
from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.drivers.simulated import apply_fault

RATE = 2000.0


def _emg(seconds: float = 20.0, seed: int = 1) -> np.ndarray:
    return simulate_session(SimConfig(rate=RATE, channels=6, seed=seed), seconds)["emg"].astype(np.float64)


def test_clean_simulated_emg_is_never_flagged() -> None:
    x = _emg()
    flags = np.array([assess(x[i:i + 400], RATE, QualityConfig()) for i in range(0, len(x) - 400, 40)])
    assert not flags.any()


def test_each_fault_is_flagged_on_its_channel_only() -> None:
    x = _emg(2.0)
    expected = {"rail": CLIPPED, "flat": FLAT, "off": OFF, "mains": MAINS}
    for c, (kind, bit) in enumerate(expected.items()):
        y = apply_fault(x, 0, RATE, (kind, c))[1000:1400]
        flags = assess(y, RATE, QualityConfig())
        assert flags[c] == bit, (kind, describe(int(flags[c])))
        assert not np.delete(flags, c).any(), (kind, flags)
    step = x[1000:1400].copy()
    step[200:, 5] += 5e-3  # an electrode lifting: the baseline steps by 5 mV
    assert assess(step, RATE, QualityConfig())[5] == OFF
    assert describe(CLIPPED | MAINS) == "clipped, mains hum"


def test_tracker_assesses_the_window_that_ends_at_the_frame() -> None:
    x = _emg(2.0)
    x[1500:, 2] = 0.0  # flat from sample 1500 on
    tr = QualityTracker(QualityConfig(), RATE, 400)
    for k in range(0, len(x), 20):  # 10 ms chunks
        tr.push(x[k:k + 20])
        end = k + 19
        if end >= 399:
            got = tr.frame(end)
            assert np.array_equal(got, assess(x[end - 399:end + 1], RATE, QualityConfig())), end
            assert bool(got[2] & FLAT) == (end - 399 >= 1500)
