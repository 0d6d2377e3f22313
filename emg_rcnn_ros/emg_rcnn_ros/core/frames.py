"""Hamming-windowed short-time Fourier frames (channels x frequency bands).

One implementation serves streaming and offline use: `extract_features` is the streaming
extractor fed the whole recording at once. Frame k covers samples
[k*hop, k*hop + window) and is stamped by its LAST sample (causal: no future EMG)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ConfigError, FeatureConfig
from .signal import Conditioner, effective_band


@dataclass(frozen=True)
class FrameLayout:
    """Sample-domain framing derived from a FeatureConfig at one sample rate."""

    rate: float
    window_n: int
    hop_n: int
    nfft: int
    band_edges: np.ndarray  # (bands + 1,) Hz
    band_index: np.ndarray  # (nfft//2+1,) band of each FFT bin, -1 when outside

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.band_edges[:-1] + self.band_edges[1:])

    @classmethod
    def build(cls, cfg: FeatureConfig, rate: float) -> FrameLayout:
        low, high = effective_band(cfg, rate)
        window_n = int(round(cfg.window * rate))
        hop_n = max(1, int(round(cfg.hop * rate)))
        if window_n < 8:
            raise ConfigError(f"window {cfg.window} s is only {window_n} samples at {rate:g} Hz")
        nfft = 1 << (window_n - 1).bit_length()
        freqs = np.fft.rfftfreq(nfft, 1.0 / rate)
        edges = np.linspace(low, high, cfg.bands + 1)
        index = np.searchsorted(edges, freqs, side="right") - 1
        index[(freqs < low) | (freqs >= high)] = -1
        counts = np.bincount(index[index >= 0], minlength=cfg.bands)
        if (counts == 0).any():
            raise ConfigError(
                f"{cfg.bands} bands over {low:g}-{high:g} Hz are finer than the FFT resolution "
                f"({rate / nfft:.2f} Hz): use fewer bands or a longer window"
            )
        return cls(rate, window_n, hop_n, nfft, edges, index)


class Framer:
    """Streaming framer: push chunks of any size, get every frame whose window completed.

    The FFT is evaluated only at the bins inside the band, as one matrix product with a
    Hamming-windowed DFT basis: the same numbers as rfft, several times faster for ~100 of 257 bins.
    Samples are held channel-major in float32 so that each window is a contiguous row."""

    def __init__(self, cfg: FeatureConfig, rate: float, channels: int) -> None:
        self.cfg = cfg
        self.layout = FrameLayout.build(cfg, rate)
        self.channels = channels
        lay = self.layout
        window = np.hamming(lay.window_n)
        bins = np.nonzero(lay.band_index >= 0)[0]
        phase = 2 * np.pi * np.outer(np.arange(lay.window_n), bins) / lay.nfft
        self._basis = np.concatenate([np.cos(phase), -np.sin(phase)], axis=1) * window[:, None]
        self._basis = self._basis.astype(np.float32)  # [W, 2 * bins]
        # Average |X|^2 of bins into bands, scaled to a one-sided PSD (V^2/Hz) so features do not
        # depend on the FFT length.
        pool = np.zeros((len(bins), cfg.bands))
        pool[np.arange(len(bins)), lay.band_index[bins]] = 1.0
        pool /= pool.sum(axis=0, keepdims=True)
        self._pool = (pool * 2.0 / (rate * np.sum(window**2))).astype(np.float32)
        self._nb = len(bins)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros((self.channels, 0), np.float32)
        self._buf_start = 0  # stream index of the first sample held
        self._next_end = self.layout.window_n - 1  # stream index of the next frame's last sample

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add conditioned samples [n, C]; returns (features [K, C, bands] float32, end_index [K])."""
        lay = self.layout
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32).T], axis=1)
        buf_end = self._buf_start + self._buf.shape[1]  # one past the last index held
        if self._next_end >= buf_end:
            return np.zeros((0, self.channels, self.cfg.bands), np.float32), np.zeros(0, np.int64)
        ends = np.arange(self._next_end, buf_end, lay.hop_n, dtype=np.int64)
        starts = ends - lay.window_n + 1 - self._buf_start
        views = np.lib.stride_tricks.sliding_window_view(self._buf, lay.window_n, axis=1)  # [C, n', W]
        spec = views[:, starts].reshape(-1, lay.window_n) @ self._basis  # [C*K, 2 * bins]
        power = spec[:, : self._nb] ** 2 + spec[:, self._nb :] ** 2
        feats = np.log(power @ self._pool + np.float32(self.cfg.log_floor))
        feats = feats.reshape(self.channels, len(ends), self.cfg.bands).transpose(1, 0, 2)
        self._next_end = int(ends[-1]) + lay.hop_n
        keep_from = self._next_end - lay.window_n + 1  # first index the next frame needs
        drop = max(0, min(self._buf.shape[1], keep_from - self._buf_start))
        self._buf = self._buf[:, drop:]
        self._buf_start += drop
        return np.ascontiguousarray(feats, dtype=np.float32), ends


class FeatureExtractor:
    """Conditioning + framing, streaming. What the feature node runs and what training uses."""

    def __init__(self, cfg: FeatureConfig, rate: float, channels: int) -> None:
        self.conditioner = Conditioner(cfg, rate, channels)
        self.framer = Framer(cfg, rate, channels)

    @property
    def layout(self) -> FrameLayout:
        return self.framer.layout

    def reset(self) -> None:
        self.conditioner.reset()
        self.framer.reset()

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.framer.push(self.conditioner.process(x))


def extract_features(
    emg: np.ndarray, rate: float, cfg: FeatureConfig, block: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a whole recording [N, C]: (features [K, C, bands], index of each frame's last sample).

    Fed to the streaming extractor in blocks only to bound memory; the result does not depend on it."""
    ext = FeatureExtractor(cfg, rate, emg.shape[1])
    parts = [ext.process(emg[i : i + block]) for i in range(0, len(emg), block)]
    if not parts:
        return np.zeros((0, emg.shape[1], cfg.bands), np.float32), np.zeros(0, np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
