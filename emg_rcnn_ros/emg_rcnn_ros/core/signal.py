"""Causal EMG conditioning: band-pass (which also removes DC) and mains notches, as SOS filters
whose state is carried across chunks, so filtering a stream chunk by chunk equals filtering it whole."""

from __future__ import annotations

import numpy as np
from scipy import signal

from .config import MAX_RATE_HZ, MIN_RATE_HZ, ConfigError, FeatureConfig


def effective_band(cfg: FeatureConfig, rate: float) -> tuple[float, float]:
    """The pass band actually used at this rate: the upper edge is kept below Nyquist."""
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise ConfigError(f"sample rate {rate:g} Hz outside the supported {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
    high = min(cfg.band_high, 0.45 * rate)
    if high <= cfg.band_low:
        raise ConfigError(f"band_low {cfg.band_low:g} Hz leaves no pass band at {rate:g} Hz")
    return cfg.band_low, high


def design_sos(cfg: FeatureConfig, rate: float) -> np.ndarray:
    """Band-pass Butterworth followed by notches at the mains frequency and its harmonics."""
    low, high = effective_band(cfg, rate)
    sections = [signal.butter(cfg.filter_order, [low, high], btype="bandpass", fs=rate, output="sos")]
    for k in range(1, cfg.mains_harmonics + 1):
        f0 = cfg.mains_hz * k
        if cfg.mains_hz <= 0 or f0 >= 0.5 * rate * 0.98:
            break
        b, a = signal.iirnotch(f0, cfg.notch_q, fs=rate)
        sections.append(signal.tf2sos(b, a))
    return np.vstack(sections)


class Conditioner:
    """Streaming multi-channel filter. The first sample seeds the state (step response removed),
    so a large electrode offset does not ring through the first second."""

    def __init__(self, cfg: FeatureConfig, rate: float, channels: int) -> None:
        self.sos = design_sos(cfg, rate)
        self.channels = channels
        self._zi_unit = signal.sosfilt_zi(self.sos)  # (sections, 2) for a unit step
        self._zi: np.ndarray | None = None

    def reset(self) -> None:
        self._zi = None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter samples x [n, channels] (volts); returns float64 [n, channels]."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected samples x {self.channels} channels, got shape {x.shape}")
        if len(x) == 0:
            return x.copy()
        if self._zi is None:
            self._zi = self._zi_unit[:, :, None] * x[0][None, None, :]
        y, self._zi = signal.sosfilt(self.sos, x, axis=0, zi=self._zi)
        return y
