"""The signal-quality measures (pure core): each electrode fault is flagged on its own channel and
named, clean simulated EMG is not (at the default 80 ms window, at rest and in motion, at the
simulator's hum), the tracker assesses exactly each frame's window, and the gate debounces."""

from __future__ import annotations

import numpy as np

from emg_rcnn_ros.core.config import FeatureConfig
from emg_rcnn_ros.core.quality import (
    CLIPPED,
    FLAT,
    MAINS,
    OFF,
    QualityConfig,
    QualityGate,
    QualityTracker,
    assess,
    describe,
)
from emg_rcnn_ros.core.signal import Conditioner
from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.drivers.simulated import apply_fault

RATE = 2000.0
WINDOW_N = int(round(FeatureConfig().window * RATE))  # the default 80 ms window
HOP_N = int(round(FeatureConfig().hop * RATE))


def _emg(seconds: float = 20.0, seed: int = 1, **kw: object) -> np.ndarray:
    return simulate_session(SimConfig(rate=RATE, channels=6, seed=seed, **kw), seconds)["emg"].astype(np.float64)


def _flags(x: np.ndarray, cfg: QualityConfig | None = None) -> np.ndarray:
    """Flags of every frame of a stream, as the feature node computes them (10 ms chunks)."""
    cfg = cfg or QualityConfig()
    cond = Conditioner(FeatureConfig(), RATE, x.shape[1])
    tr = QualityTracker(cfg, RATE, WINDOW_N)
    out = []
    for k in range(0, len(x), 20):
        tr.push(x[k:k + 20], cond.process(x[k:k + 20]))
        out.extend(tr.frame(e) for e in range(k, k + 20) if e >= WINDOW_N - 1 and (e + 1 - WINDOW_N) % HOP_N == 0)
    return np.array(out)


def test_clean_simulated_emg_is_never_flagged_at_rest_or_in_motion() -> None:
    moving = _flags(_emg(30.0))
    rest = _emg(10.0, max_emg_volts=1e-9)  # no muscle activity: amplifier noise and the simulator's hum
    hum = _emg(10.0, mains_volts=1e-3)  # 50 times the simulator's hum, all of it removed by the notch
    for name, x in (("moving", moving), ("rest", _flags(rest)), ("hum", _flags(hum))):
        assert len(x) > 400, name
        assert not x.any(), (name, [describe(int(f)) for f in np.unique(x[x > 0])])


def test_each_fault_is_flagged_on_its_channel_only() -> None:
    x = _emg(2.0)
    expected = {"rail": CLIPPED, "flat": FLAT, "off": OFF, "mains": MAINS}
    for c, (kind, bit) in enumerate(expected.items()):
        flags = _flags(apply_fault(x, 0, RATE, (kind, c)))[-20:]  # the filters settled
        assert np.all(flags[:, c] == bit), (kind, [describe(int(f)) for f in flags[:, c]])
        assert not np.delete(flags, c, axis=1).any(), (kind, flags)
    step = x[1000:1000 + WINDOW_N].copy()
    step[WINDOW_N // 2:, 5] += 5e-3  # an electrode lifting: the baseline steps by 5 mV
    assert assess(step, RATE, QualityConfig())[5] == OFF
    assert describe(CLIPPED | MAINS) == "clipped, mains hum"


def test_tracker_assesses_the_window_that_ends_at_the_frame() -> None:
    x = _emg(2.0)
    x[1500:, 2] = 0.0  # flat from sample 1500 on
    cond = Conditioner(FeatureConfig(), RATE, x.shape[1]).process(x)
    tr = QualityTracker(QualityConfig(mains_period=0.0), RATE, 400)  # the mains test at every frame
    for k in range(0, len(x), 20):  # 10 ms chunks
        tr.push(x[k:k + 20], cond[k:k + 20])
        end = k + 19
        if end >= 999:
            got = tr.frame(end)
            settled = end + 1 >= QualityConfig().mains_settle * RATE
            want = assess(x[end - 399:end + 1], RATE, QualityConfig(), cond[end - 999:end + 1] if settled else None)
            assert np.array_equal(got, want), end
            assert bool(got[2] & FLAT) == (end - 399 >= 1500)


def test_gate_acts_after_trip_frames_and_clears_after_clear_frames() -> None:
    gate = QualityGate(trip=2, clear=3)
    seq = [0, OFF, 0, OFF, OFF, 0, 0, OFF, 0, 0, 0, 0]
    got = [int(gate.update(np.array([f, 0], np.uint8))[0]) for f in seq]
    # one odd frame does nothing; two in a row act; it holds until three clean frames in a row
    assert got == [0, 0, 0, 0, OFF, OFF, OFF, OFF, OFF, OFF, 0, 0]
    assert not gate.update(np.array([0, 0], np.uint8)).any()
    gate.reset()
    assert int(gate.update(np.array([MAINS, 0], np.uint8))[0]) == 0


def test_electrode_off_acts_through_the_gate_within_100_ms() -> None:
    """Onset anywhere between frames; the default gate (two frames to trip) acts within 100 ms of the
    electrode coming off, measured to the end of the frame that trips it. The other faults' times
    are printed for the docs."""
    x = _emg(4.0, seed=3)
    times: dict[str, list[float]] = {}
    for kind in ("off", "rail", "flat", "mains"):
        for onset in range(5000, 5040, 7):
            y = x.copy()
            y[onset:] = apply_fault(x, 0, RATE, (kind, 1))[onset:]
            gate = QualityGate(trip=2, clear=10)
            acting = [int(gate.update(f)[1]) for f in _flags(y)]
            ends = WINDOW_N - 1 + HOP_N * np.arange(len(acting))
            first = next(e for e, a in zip(ends, acting) if a and e >= onset)
            assert not any(a for e, a in zip(ends, acting) if e < onset), kind
            times.setdefault(kind, []).append((first - onset) / RATE)
    print({k: f"{min(v) * 1e3:.0f}-{max(v) * 1e3:.0f} ms" for k, v in times.items()})
    assert max(times["off"]) <= 0.1, times["off"]
