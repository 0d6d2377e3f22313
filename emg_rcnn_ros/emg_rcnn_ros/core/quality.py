"""Per-channel signal quality of one analysis window, so that an electrode that fell off, a
channel at the rails, a dead input or mains hum is never read as muscle activity.

Each channel of a window gets a bitmask (0 = good). The measures work on the raw samples (volts,
before the band-pass), and stay cheap: one real FFT of the window for all channels.
- CLIPPED: at least `clip_fraction` of the samples sit on plateaus (3 or more equal samples) at the
  window's maximum or minimum while the signal does vary: the amplifier is saturating.
- FLAT: peak-to-peak below `flat_ptp`: a dead input or a stuck ADC.
- OFF: electrode off. Broadband (20-450 Hz) RMS below `off_rms`, over the window or over its newest
  quarter, the floor of an input connected to nothing but the amplifier (skin-electrode noise alone
  is several uV); or a step in the baseline (mean of the window's last stretch against its first,
  each a whole number of mains periods) larger than `jump_volts` (an electrode lifting or popping).
- MAINS: hum that swamps the muscle signal after the notch. Judged on the conditioned signal (band-
  passed and notched, what the features are made of) over the last `mains_window` seconds: more
  than `mains_ratio` of its 20-450 Hz power stands on narrow lines at the mains frequency and its
  harmonics, above the broadband level beside them (mains_share), and that hum is above
  `mains_volts` RMS (the level of a moderate contraction: a resting channel's few microvolts of
  residual hum are most of its power but swamp nothing; on the real recordings the lines stayed
  under 0.15 mV, docs/command_path.md). Hum the notch removes is not a fault. Not on the raw 80 ms
  window: its 12.5 Hz bins around 50 and 150 Hz hold much of a resting muscle's broadband power,
  and clean signals were flagged there (issue #37)."""

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
    mains_volts: float = 2.5e-4  # V RMS on the lines as well: hum at the level of a moderate contraction
    mains_window: float = 0.5  # s of conditioned signal for the mains test (2 Hz resolution)
    mains_settle: float = 1.5  # s after a (re)start before the mains test: the notch's start-up transient
    mains_period: float = 0.1  # s between mains tests (hum builds slowly; the test costs ~1 ms); 0 = every frame
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


def mains_share(conditioned: np.ndarray, rate: float, mains_hz: float) -> np.ndarray:
    """Per channel, the share of a conditioned segment's 20-450 Hz power that stands on lines at mains
    and its harmonics: at each harmonic, the power within +-2 bins of a Hann-windowed spectrum (a
    steady line's main lobe) above the level of the bins 4-10 away (the broadband EMG there). A
    spectrum that is merely strong near 50 Hz (a resting muscle, movement) has no such excess."""
    x = np.asarray(conditioned, np.float64)
    n = x.shape[0]
    if n < 64 or mains_hz <= 0:
        return np.zeros(x.shape[1])
    spec = np.abs(np.fft.rfft((x - x.mean(axis=0)) * np.hanning(n)[:, None], axis=0)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    df = freqs[1]
    top = min(450.0, rate / 2)
    band = (freqs >= 20.0) & (freqs <= top)
    excess = np.zeros(x.shape[1])
    for h in np.arange(mains_hz, top + 1e-9, mains_hz):
        dist = np.abs(freqs - h) / df
        line, near = band & (dist <= 2.01), band & (dist >= 3.99) & (dist <= 10.01)
        if line.any() and near.any():
            excess += np.maximum(spec[line].sum(axis=0) - line.sum() * np.median(spec[near], axis=0), 0.0)
    power = spec[band].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(power > 0, excess / power, 0.0)


def mains_hum(conditioned: np.ndarray, rate: float, cfg: QualityConfig) -> np.ndarray:
    """Per channel, whether hum that the notch leaves swamps it (see the module's MAINS)."""
    share = mains_share(conditioned, rate, cfg.mains_hz)
    line_rms = np.sqrt(share * np.asarray(conditioned, np.float64).var(axis=0))
    return (share > cfg.mains_ratio) & (line_rms > cfg.mains_volts)


def assess(window: np.ndarray, rate: float, cfg: QualityConfig, conditioned: np.ndarray | None = None) -> np.ndarray:
    """Bitmask per channel of a [samples, channels] window of raw EMG in volts; the mains test runs
    on `conditioned` (the band-passed, notched signal ending with the window) when given."""
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
    # The newest quarter alone as well: an electrode that came off is seen one hop after it did,
    # not once the whole window is past it.
    m = max(8, n // 4)
    tail = np.abs(np.fft.rfft(x[-m:] - x[-m:].mean(axis=0), axis=0)) ** 2
    tf = np.fft.rfftfreq(m, 1.0 / rate)
    rms_tail = np.sqrt(2.0 * tail[(tf >= 20.0) & (tf <= min(450.0, rate / 2))].sum(axis=0)) / m
    if conditioned is not None and cfg.mains_hz > 0:
        flags[mains_hum(conditioned, rate, cfg) & ~flat] |= MAINS
    # A baseline step between the window's first and last stretch (an electrode lifting). Each
    # stretch is a whole number of mains periods where the window allows, so that hum and its
    # harmonics average out of both means instead of reading as a step.
    q = max(1, n // 4)
    if cfg.mains_hz > 0:
        period = rate / cfg.mains_hz
        q = max(q, min(n // 2, int(round(period * max(1, round(q / period))))))
    jump = np.abs(x[-q:].mean(axis=0) - x[:q].mean(axis=0)) > cfg.jump_volts
    flags[((rms < cfg.off_rms) | (rms_tail < cfg.off_rms) | jump) & ~flat] |= OFF
    return flags


class QualityTracker:
    """Keeps the last raw and conditioned samples of a stream so that each frame's own window (and
    the mains test's longer stretch) can be assessed. Indices are those of the framer: sample 0 is
    the first sample pushed."""

    def __init__(self, cfg: QualityConfig, rate: float, window_n: int) -> None:
        self.cfg, self.rate, self.window_n = cfg, rate, window_n
        self.mains_n = max(window_n, int(round(cfg.mains_window * rate)))
        self.settle_n = int(round(cfg.mains_settle * rate))
        self.period_n = int(round(cfg.mains_period * rate))
        self.hum: tuple[int, np.ndarray] | None = None  # (end of the stretch tested, channels with hum)
        self.buf: np.ndarray | None = None
        self.cond: np.ndarray | None = None
        self.start = 0  # stream index of buf[0] and cond[0]

    def push(self, x: np.ndarray, conditioned: np.ndarray) -> None:
        """Raw samples and the same samples conditioned (band-pass and notch)."""
        if self.buf is None:
            self.buf, self.cond = x.copy(), np.asarray(conditioned, np.float64).copy()
        else:
            self.buf, self.cond = np.concatenate([self.buf, x]), np.concatenate([self.cond, conditioned])
        keep = self.mains_n + len(x)
        if len(self.buf) > keep:
            self.start += len(self.buf) - keep
            self.buf, self.cond = self.buf[-keep:], self.cond[-keep:]

    def frame(self, end: int) -> np.ndarray:
        """Flags of the window whose last sample has stream index `end`."""
        stop = end + 1 - self.start
        flags = assess(self.buf[max(0, stop - self.window_n):stop], self.rate, self.cfg)
        if end + 1 < self.settle_n or self.cfg.mains_hz <= 0:  # a notch that is still ringing in is not hum
            return flags
        if self.hum is None or not 0 <= end - self.hum[0] < max(self.period_n, 1):
            self.hum = (end, mains_hum(self.cond[max(0, stop - self.mains_n):stop], self.rate, self.cfg))
        flags[self.hum[1] & (flags & FLAT == 0)] |= MAINS
        return flags


class QualityGate:
    """Debounce and hysteresis of the per-channel flags, so that one odd frame neither stops a
    person's device nor restarts it: a channel's fault acts once it has been flagged for `trip`
    consecutive frames, and clears after `clear` consecutive clean frames. Detection time: `trip`
    frame periods after the first flagged frame."""

    def __init__(self, trip: int, clear: int) -> None:
        if trip < 1 or clear < 1:
            raise ValueError(f"trip and clear must be >= 1 frame, got {trip}, {clear}")
        self.trip, self.clear = trip, clear
        self.reset()

    def reset(self) -> None:
        self.bad: np.ndarray | None = None  # consecutive flagged frames per channel
        self.good: np.ndarray | None = None  # consecutive clean frames per channel
        self.active: np.ndarray | None = None  # flags acting now, per channel

    def update(self, flags: np.ndarray) -> np.ndarray:
        """The flags acting after this frame's flags (per channel; 0 = channel trusted). A tripped
        channel reports its newest flags (an electrode coming off reads "electrode off" before the
        whole window is flat); through the hysteresis it keeps the last ones."""
        f = np.asarray(flags, np.uint8)
        if self.active is None or self.active.shape != f.shape:
            self.bad, self.good = np.zeros(f.shape, int), np.zeros(f.shape, int)
            self.active = np.zeros(f.shape, np.uint8)
        flagged = f != 0
        self.bad = np.where(flagged, self.bad + 1, 0)
        self.good = np.where(flagged, 0, self.good + 1)
        self.active = np.where(self.bad >= self.trip, f, self.active).astype(np.uint8)
        self.active[self.good >= self.clear] = 0
        return self.active.copy()
