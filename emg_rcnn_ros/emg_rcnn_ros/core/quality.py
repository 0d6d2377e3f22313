"""Per-channel signal quality of one analysis window, so that an electrode that fell off, a
channel at the rails, a dead input or mains hum is never read as muscle activity.

Each channel of a window gets a bitmask (0 = good). The measures work on the raw samples (volts,
before the band-pass), and stay cheap: one real FFT of the window for all channels.
- CLIPPED: at least `clip_fraction` of the samples sit on plateaus (3 or more equal samples) at the
  window's maximum or minimum while the signal does vary: the amplifier is saturating.
- FLAT: peak-to-peak below `flat_ptp`: a dead input or a stuck ADC.
- OFF: electrode off. Broadband (20-450 Hz) RMS below `off_rms`, the floor of an input connected to
  nothing but the amplifier (skin-electrode noise alone is several uV); or a step in the baseline
  (mean of the last quarter of the window against the first) larger than `jump_volts` (an
  electrode lifting or popping).
- MAINS: more than `mains_ratio` of the 20-450 Hz power within one FFT bin of the mains frequency
  and its third harmonic: hum swamps the muscle signal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIPPED, FLAT, OFF, MAINS = 1, 2, 4, 8
REASONS = {CLIPPED: "clipped", FLAT: "flat line", OFF: "electrode off", MAINS: "mains hum"}


@dataclass
class QualityConfig:
    clip_fraction: float = 0.02
    flat_ptp: float = 1e-7  # V
    off_rms: float = 1e-6  # V, 20-450 Hz
    jump_volts: float = 1e-3  # V
    mains_ratio: float = 0.5
    mains_hz: float = 50.0


def describe(flags: int) -> str:
    return ", ".join(text for bit, text in REASONS.items() if flags & bit)


def rail_share(emg: np.ndarray) -> np.ndarray:
    """Per channel, the share of samples on runs of 3+ equal values at the channel's own minimum or
    maximum: a saturating amplifier or ADC, not a peak of a varying signal."""
    hi, lo = emg.max(axis=0), emg.min(axis=0)
    eps = 1e-9 * np.maximum(np.abs(hi), np.abs(lo)) + 1e-15
    rail = ((emg >= hi - eps) | (emg <= lo + eps)) & (hi - lo > 1e-12)  # a constant channel is dead, not clipped
    same = np.abs(np.diff(emg, axis=0)) <= eps
    run3 = np.zeros_like(rail)
    run3[1:-1] = same[:-1] & same[1:]  # three equal in a row, centred here
    on_run = run3.copy()
    on_run[:-1] |= run3[1:]
    on_run[1:] |= run3[:-1]
    return (rail & on_run).mean(axis=0)


def assess(window: np.ndarray, rate: float, cfg: QualityConfig) -> np.ndarray:
    """Bitmask per channel of a [samples, channels] window of raw EMG in volts."""
    x = np.asarray(window, np.float64)
    n = x.shape[0]
    flags = np.zeros(x.shape[1], np.uint8)
    if n < 8:
        return flags
    hi, lo = x.max(axis=0), x.min(axis=0)
    ptp = hi - lo
    flat = ptp < cfg.flat_ptp
    flags[flat] |= FLAT

    eps = 1e-9 * np.maximum(np.abs(hi), np.abs(lo)) + 1e-15
    at_rail = (x >= hi - eps) | (x <= lo + eps)
    maybe = (at_rail.mean(axis=0) >= cfg.clip_fraction) & ~flat  # a varying signal touches its extremes once
    if maybe.any():
        c = np.flatnonzero(maybe)
        share = rail_share(x[:, c])
        flags[c[share >= cfg.clip_fraction]] |= CLIPPED

    spec = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = (freqs >= 20.0) & (freqs <= min(450.0, rate / 2))
    power = spec[band].sum(axis=0)
    rms = np.sqrt(2.0 * power) / n  # Parseval, one-sided
    hum_high = np.zeros_like(flat)
    if cfg.mains_hz > 0:
        df = freqs[1]
        near_mains = np.zeros_like(freqs, bool)
        for h in (cfg.mains_hz, 3 * cfg.mains_hz):
            near_mains |= np.abs(freqs - h) <= df * 1.01
        hum = spec[band & near_mains].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(power > 0, hum / power, 0.0)
        hum_high = (share > cfg.mains_ratio) & ~flat
        flags[hum_high] |= MAINS
    q = max(1, n // 4)
    # A baseline step between the window's first and last quarter; strong hum moves these medians
    # too, so it is not read as a step.
    jump = (np.abs(x[-q:].mean(axis=0) - x[:q].mean(axis=0)) > cfg.jump_volts) & ~hum_high
    flags[((rms < cfg.off_rms) | jump) & ~flat] |= OFF
    return flags


class QualityTracker:
    """Keeps the last samples of a stream so that each frame's own window can be assessed.
    Indices are those of the framer: sample 0 is the first sample pushed."""

    def __init__(self, cfg: QualityConfig, rate: float, window_n: int) -> None:
        self.cfg, self.rate, self.window_n = cfg, rate, window_n
        self.buf: np.ndarray | None = None
        self.start = 0  # stream index of buf[0]

    def push(self, x: np.ndarray) -> None:
        self.buf = x.copy() if self.buf is None else np.concatenate([self.buf, x])
        keep = self.window_n + len(x)
        if len(self.buf) > keep:
            self.start += len(self.buf) - keep
            self.buf = self.buf[-keep:]

    def frame(self, end: int) -> np.ndarray:
        """Flags of the window whose last sample has stream index `end`."""
        stop = end + 1 - self.start
        return assess(self.buf[max(0, stop - self.window_n):stop], self.rate, self.cfg)
