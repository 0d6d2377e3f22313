"""Hyper-parameters of the pipeline, one dataclass per stage.

Xia, Hu & Peng (2018) do not publish theirs; every default here is ours, chosen from common
surface-EMG practice, and every one is configurable (YAML parameters, CLI, model bundle).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import BundleError, ConfigError

T = TypeVar("T")

MIN_RATE_HZ = 200.0
MAX_RATE_HZ = 10000.0


@dataclass(frozen=True)
class FeatureConfig:
    """Conditioning filters and time-frequency framing. Times in seconds, frequencies in hertz."""

    band_low: float = 20.0  # band-pass lower edge; also removes DC and motion artefacts
    band_high: float = 450.0  # upper edge; clamped to 0.45 x sample rate for slow amplifiers
    filter_order: int = 4  # Butterworth order of the band-pass
    mains_hz: float = 50.0  # 50 (Europe/Asia) or 60 (Americas); 0 disables the notch
    mains_harmonics: int = 3  # notch the fundamental and this many harmonics in total
    notch_q: float = 30.0
    window: float = 0.08  # Hamming window length (s); a whole number of hops, so frames end on the hop grid (README)
    hop: float = 0.02  # frame period (s): one estimate per hop
    bands: int = 24  # FFT bins between band_low and band_high pooled into this many bands
    log_floor: float = 1e-14  # V^2 added before the log so silence stays finite

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        if not 0 < self.band_low < self.band_high:
            raise ConfigError(f"band_low ({self.band_low}) must be > 0 and below band_high ({self.band_high})")
        if self.filter_order < 1:
            raise ConfigError(f"filter_order must be >= 1, got {self.filter_order}")
        if self.mains_hz < 0 or self.mains_harmonics < 0:
            raise ConfigError("mains_hz and mains_harmonics must be >= 0")
        if not 0 < self.hop <= self.window:
            raise ConfigError(f"hop ({self.hop} s) must be > 0 and not longer than window ({self.window} s)")
        if self.bands < 1:
            raise ConfigError(f"bands must be >= 1, got {self.bands}")


@dataclass(frozen=True)
class ModelConfig:
    """Network shapes. `history` frames feed one estimate (the RCNN's sequence length), each
    `history_stride` frames after the one before it."""

    arch: str = "rcnn"  # rcnn | cnn | svr
    history: int = 10
    history_stride: int = 2  # frames (hops) between the frames of one window; 1 = consecutive
    conv_channels: tuple[int, int] = (16, 32)  # two 3x3 conv layers
    embedding: int = 64  # per-frame CNN output fed to the LSTM
    lstm_hidden: int = 64
    lstm_layers: int = 1
    shared_state: bool = False  # False: each joint read from its own units (rcnn: an LSTM each; cnn: embedding)
    dropout: float = 0.2
    batch_norm: bool = True  # after each convolution
    input_clip: float = 4.0  # soft bound on normalised inputs (standard deviations); 0 = none
    members: int = 1  # networks averaged (set by training: the fold models and the final one)
    svr_c: float = 1.0  # SVR (RBF) regularisation, on standardised targets
    svr_epsilon: float = 0.05
    svr_max_samples: int = 4000  # SVR fit is O(n^2): evenly spaced training windows beyond this

    def validate(self) -> None:
        if self.arch not in ("rcnn", "cnn", "svr"):
            raise ConfigError(f"unknown arch '{self.arch}' (expected rcnn, cnn or svr)")
        if self.members < 1:
            raise ConfigError(f"members must be >= 1, got {self.members}")
        if self.history < 1:
            raise ConfigError(f"history must be >= 1 frame, got {self.history}")
        if self.history_stride < 1:
            raise ConfigError(f"history_stride must be >= 1 frame, got {self.history_stride}")

    @property
    def span(self) -> int:
        """Frames from the oldest to the newest frame of one window, both included."""
        return (self.history - 1) * self.history_stride + 1

    @property
    def offsets(self) -> tuple[int, ...]:
        """Index of each frame of a window relative to its newest frame, oldest first."""
        return tuple(self.history_stride * k for k in range(1 - self.history, 1))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. The number of optimiser steps is chosen on held-out data (`folds` folds:
    whole recordings when there are several, contiguous blocks of one otherwise), then the model is
    trained once more on all of the data for that budget, so no part of any recording is lost."""

    max_steps: int = 3000  # optimiser steps at most, per fold
    eval_every: int = 25  # steps between validation readings
    patience_steps: int = 200  # a fold stops this many steps after its best validation loss
    folds: int = 3  # 1 = no held-out data: train for max_steps
    ensemble: bool = True  # keep the fold models too: the bundle averages them with the final model
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gain_jitter: float = 0.25  # per-channel amplitude augmentation (+-25 %): electrode/skin changes
    tilt_jitter: float = 0.0  # per-channel spectral tilt augmentation (log amplitude across the band); 0 = none
    seed: int = 0
    device: str = "cpu"
    max_threads: int = 0  # 0 = torch default

    def validate(self) -> None:
        if self.max_steps < 1 or self.eval_every < 1 or self.patience_steps < 1:
            raise ConfigError("max_steps, eval_every and patience_steps must be >= 1")
        if self.folds < 1:
            raise ConfigError(f"folds must be >= 1, got {self.folds}")
        if not 0 <= self.gain_jitter < 1 or self.tilt_jitter < 0:
            raise ConfigError(f"gain_jitter must be in [0, 1) and tilt_jitter >= 0, got {self.gain_jitter}, "
                              f"{self.tilt_jitter}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got '{self.device}'")


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build a config dataclass from a dict, refusing unknown keys (a typo is an error, not a default)."""
    data = dict(data or {})
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    if "conv_channels" in data:
        data["conv_channels"] = tuple(int(v) for v in data["conv_channels"])
    obj = cls(**data)
    obj.validate()  # type: ignore[attr-defined]
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    out = asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


BUNDLE_FORMAT = "emg_rcnn_ros.bundle/1"
BUNDLE_CONFIG = "config.json"
BUNDLE_REQUIRED = ("format", "arch", "model", "features", "sample_rate", "channels", "channel_names", "bands",
                   "band_edges", "joint_names", "normaliser", "weights", "weights_sha256")


def read_bundle_config(path: str | Path) -> tuple[dict[str, Any], FeatureConfig]:
    """A bundle's config.json, validated, and its feature settings. Without torch: the feature node
    needs these settings and nothing else of the model."""
    path = Path(path)
    cfile = path / BUNDLE_CONFIG
    if not path.is_dir():
        raise BundleError(f"{path}: no model bundle here (directory missing)")
    if not cfile.is_file():
        raise BundleError(f"{path}: not a model bundle ({BUNDLE_CONFIG} missing)")
    try:
        cfg = json.loads(cfile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: {BUNDLE_CONFIG} is corrupt ({exc})") from exc
    if not isinstance(cfg, dict):
        raise BundleError(f"{path}: {BUNDLE_CONFIG} is not a JSON object")
    missing = [k for k in BUNDLE_REQUIRED if k not in cfg]
    if missing:
        raise BundleError(f"{path}: {BUNDLE_CONFIG} lacks {', '.join(missing)}")
    if cfg["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format '{cfg['format']}', this version reads '{BUNDLE_FORMAT}'")
    try:
        return cfg, from_dict(FeatureConfig, cfg["features"])
    except (ConfigError, TypeError) as exc:
        raise BundleError(f"{path}: invalid configuration ({exc})") from exc
