"""Hyper-parameters of the pipeline, one dataclass per stage.

Xia, Hu & Peng (2018) do not publish theirs; every default here is ours, chosen from common
surface-EMG practice, and every one is configurable (YAML parameters, CLI, model bundle).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from .errors import ConfigError

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
    window: float = 0.2  # Hamming window length (s)
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
    """Network shapes. `history` frames feed one estimate (the RCNN's sequence length)."""

    arch: str = "rcnn"  # rcnn | cnn | svr
    history: int = 10
    conv_channels: tuple[int, int] = (16, 32)  # two 3x3 conv layers
    embedding: int = 64  # per-frame CNN output fed to the LSTM
    lstm_hidden: int = 64
    lstm_layers: int = 1
    dropout: float = 0.2
    svr_c: float = 1.0  # SVR (RBF) regularisation, on standardised targets
    svr_epsilon: float = 0.05
    svr_max_samples: int = 4000  # SVR fit is O(n^2): evenly spaced training windows beyond this

    def validate(self) -> None:
        if self.arch not in ("rcnn", "cnn", "svr"):
            raise ConfigError(f"unknown arch '{self.arch}' (expected rcnn, cnn or svr)")
        if self.history < 1:
            raise ConfigError(f"history must be >= 1 frame, got {self.history}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Validation is the last `val_fraction` of every recording, in time."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6  # early stopping on validation loss
    val_fraction: float = 0.2
    gain_jitter: float = 0.25  # per-channel amplitude augmentation (+-25 %): electrode/skin changes
    seed: int = 0
    device: str = "cpu"
    refit_features: bool = True  # fine-tuning (--init-from): re-fit feature normalisation on the new data
    max_threads: int = 0  # 0 = torch default

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if not 0.05 <= self.val_fraction <= 0.5:
            raise ConfigError(f"val_fraction must be within 0.05..0.5, got {self.val_fraction}")
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
