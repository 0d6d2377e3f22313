"""From sessions to supervised examples: frames, their targets, history windows and the
time-block train/validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FeatureConfig
from .frames import FrameLayout, extract_features
from .sessions import Session, SessionError


@dataclass
class FrameSet:
    """Consecutive frames of one continuous stretch of a recording."""

    feats: np.ndarray  # [K, C, bands] log band power
    targets: np.ndarray  # [K, J] radians, at each frame's last EMG sample
    end_index: np.ndarray  # [K] sample index of each frame's last sample


def session_frames(session: Session, cfg: FeatureConfig) -> list[FrameSet]:
    """Frames of every continuous segment; frames outside the measured joint span are dropped."""
    out: list[FrameSet] = []
    for a, b in session.segments:
        feats, ends = extract_features(session.emg[a:b], session.emg_rate, cfg)
        ends = ends + a
        targets, inside = session.targets_at(ends)
        if not inside.any():
            continue
        # Split at frames without a target so that every FrameSet stays contiguous in time.
        idx = np.nonzero(inside)[0]
        for run in np.split(idx, np.nonzero(np.diff(idx) > 1)[0] + 1):
            out.append(FrameSet(feats[run], targets[run].astype(np.float32), ends[run]))
    return out


def check_long_enough(session: Session, cfg: FeatureConfig, history: int) -> None:
    """Refuse a recording too short for one estimate, naming how long it must be."""
    lay = FrameLayout.build(cfg, session.emg_rate)
    need = lay.window_n + (history - 1) * lay.hop_n
    longest = max(b - a for a, b in session.segments)
    if longest < need:
        raise SessionError(
            f"{session.source}: recording too short: {longest / session.emg_rate:.3f} s of continuous EMG, "
            f"one estimate needs {need / session.emg_rate:.3f} s (window {cfg.window} s + {history - 1} hops)"
        )


def window_ends(n_frames: int, history: int) -> np.ndarray:
    """Indices of frames that close a full history window."""
    return np.arange(history - 1, n_frames)


def gather_windows(feats: np.ndarray, ends: np.ndarray, history: int) -> np.ndarray:
    """[len(ends), history, C, bands] stacks of the frames ending at `ends` (built lazily per batch)."""
    return feats[ends[:, None] + np.arange(-history + 1, 1)[None, :]]


def split_blocks(sets: list[FrameSet], history: int, val_fraction: float, guard: int
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per frame set: window ends for training (the earlier part) and validation (the last
    `val_fraction`, in time). `guard` frames between them are dropped because neighbouring frames
    share samples: without it validation would see training data."""
    train, val = [], []
    for fs in sets:
        ends = window_ends(len(fs.feats), history)
        n_val = int(round(len(ends) * val_fraction))
        if len(ends) < 4 * (guard + history) or n_val == 0:
            train.append(ends)
            val.append(ends[:0])
            continue
        train.append(ends[: len(ends) - n_val - guard - history])
        val.append(ends[len(ends) - n_val:])
    return train, val


@dataclass
class Normaliser:
    """Per channel and band standardisation of log features, and of targets; fitted on training
    frames only and stored in the model bundle."""

    feat_mean: np.ndarray  # [C, bands]
    feat_std: np.ndarray
    target_mean: np.ndarray  # [J]
    target_std: np.ndarray

    @classmethod
    def fit(cls, feats: np.ndarray, targets: np.ndarray) -> Normaliser:
        fstd = feats.std(axis=0)
        tstd = targets.std(axis=0)
        return cls(feats.mean(axis=0), np.where(fstd > 1e-6, fstd, 1.0),
                   targets.mean(axis=0), np.where(tstd > 1e-6, tstd, 1.0))

    def features(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.feat_mean) / self.feat_std).astype(np.float32)

    def targets(self, y: np.ndarray) -> np.ndarray:
        return ((y - self.target_mean) / self.target_std).astype(np.float32)

    def untarget(self, y: np.ndarray) -> np.ndarray:
        return y * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, list]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64).tolist()
                for k in ("feat_mean", "feat_std", "target_mean", "target_std")}

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        keys = ("feat_mean", "feat_std", "target_mean", "target_std")
        return cls(*(np.asarray(d[k], dtype=np.float32) for k in keys))
