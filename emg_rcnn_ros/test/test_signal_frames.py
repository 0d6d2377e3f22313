"""Conditioning filters and time-frequency frames: streaming equals offline, and the numbers agree
with independent references (scipy's filter response and Welch PSD)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from emg_rcnn_ros.core.config import ConfigError, FeatureConfig
from emg_rcnn_ros.core.frames import FeatureExtractor, FrameLayout, extract_features
from emg_rcnn_ros.core.signal import Conditioner, design_sos

RATE = 2000.0


def _chunks(n: int, rng: np.random.Generator) -> list[slice]:
    out, i = [], 0
    while i < n:
        k = int(rng.integers(1, 97))
        out.append(slice(i, min(n, i + k)))
        i += k
    return out


def test_streaming_filter_equals_whole_recording() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-4, (6000, 4)) + 3e-3  # with a DC offset
    whole = Conditioner(FeatureConfig(), RATE, 4).process(x)
    stream = Conditioner(FeatureConfig(), RATE, 4)
    parts = np.concatenate([stream.process(x[s]) for s in _chunks(len(x), rng)])
    assert np.max(np.abs(parts - whole)) <= 1e-5 * np.std(whole)


def test_streaming_frames_equal_offline_frames() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2e-4, (9000, 5))
    cfg = FeatureConfig()
    feats, ends = extract_features(x, RATE, cfg)
    ext = FeatureExtractor(cfg, RATE, 5)
    got = [ext.process(x[s]) for s in _chunks(len(x), rng)]
    sfeats = np.concatenate([g[0] for g in got])
    sends = np.concatenate([g[1] for g in got])
    np.testing.assert_array_equal(sends, ends)
    np.testing.assert_allclose(sfeats, feats, atol=1e-5)


def test_frame_timing_is_causal_and_in_seconds() -> None:
    cfg = FeatureConfig(window=0.2, hop=0.02)
    for rate in (1000.0, 2000.0, 4000.0):
        lay = FrameLayout.build(cfg, rate)
        x = np.random.default_rng(2).normal(0, 1e-4, (int(rate * 2), 2))
        feats, ends = extract_features(x, rate, cfg)
        # The first frame closes when the first window is full; then one frame per hop, in seconds.
        assert ends[0] == lay.window_n - 1
        np.testing.assert_allclose(np.diff(ends) / rate, 0.02)
        # Changing samples after a frame's last sample never changes that frame.
        y = x.copy()
        y[ends[5] + 1 :] *= 10
        np.testing.assert_allclose(extract_features(y, rate, cfg)[0][:6], feats[:6], atol=1e-6)


def test_filter_response_passband_notch_and_dc() -> None:
    sos = design_sos(FeatureConfig(mains_hz=50.0), RATE)
    f, h = signal.sosfreqz(sos, worN=[0.5, 50.0, 80.0, 150.0, 220.0], fs=RATE)
    gain_db = 20 * np.log10(np.abs(h))
    assert gain_db[0] < -60  # DC gone
    assert gain_db[1] < -30 and gain_db[3] < -30  # mains and its 3rd harmonic notched
    assert abs(gain_db[2]) < 1.0 and abs(gain_db[4]) < 1.0  # EMG band kept
    sos60 = design_sos(FeatureConfig(mains_hz=60.0), RATE)
    assert 20 * np.log10(abs(signal.sosfreqz(sos60, worN=[60.0], fs=RATE)[1][0])) < -30


def test_band_power_matches_welch_psd() -> None:
    """White noise: our band values equal the log of Welch's Hamming-window PSD averaged over the band."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1e-4, (int(RATE * 30), 1))
    cfg = FeatureConfig(mains_hz=0.0)
    y = Conditioner(cfg, RATE, 1).process(x)
    lay = FrameLayout.build(cfg, RATE)
    feats, _ = extract_features(x, RATE, cfg)
    f, p = signal.welch(y[:, 0], fs=RATE, window="hamming", nperseg=lay.window_n,
                        noverlap=lay.window_n - lay.hop_n, nfft=lay.nfft, detrend=False)
    ref = [np.log(p[(f >= lo) & (f < hi)].mean()) for lo, hi in zip(lay.band_edges[:-1], lay.band_edges[1:])]
    np.testing.assert_allclose(np.log(np.exp(feats[:, 0]).mean(axis=0)), ref, atol=0.01)  # log units


def test_sine_lands_in_its_band() -> None:
    t = np.arange(int(RATE)) / RATE
    x = (1e-3 * np.sin(2 * np.pi * 123.0 * t))[:, None]
    cfg = FeatureConfig(mains_hz=0.0)
    feats, _ = extract_features(x, RATE, cfg)
    lay = FrameLayout.build(cfg, RATE)
    peak = np.argmax(feats[-1, 0])
    assert lay.band_edges[peak] <= 123.0 < lay.band_edges[peak + 1]


def test_impossible_settings_are_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="band_low"):
        FeatureConfig(band_low=500, band_high=450).validate()
    with pytest.raises(ConfigError, match="FFT resolution"):
        FrameLayout.build(FeatureConfig(window=0.02, hop=0.01, bands=64), RATE)
    with pytest.raises(ConfigError, match="sample rate"):
        FrameLayout.build(FeatureConfig(), 50.0)
    # A slow amplifier (OpenBCI Cyton, 250 Hz) keeps the band below Nyquist.
    assert FrameLayout.build(FeatureConfig(bands=8), 250.0).band_edges[-1] <= 0.45 * 250.0
