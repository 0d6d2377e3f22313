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


def check_long_enough(session: Session, cfg: FeatureConfig, span: int) -> None:
    """Refuse a recording too short for one estimate (`span` frames: ModelConfig.span), naming how
    long it must be."""
    lay = FrameLayout.build(cfg, session.emg_rate)
    need = lay.window_n + (span - 1) * lay.hop_n
    longest = max(b - a for a, b in session.segments)
    if longest < need:
        raise SessionError(
            f"{session.source}: recording too short: {longest / session.emg_rate:.3f} s of continuous EMG, "
            f"one estimate needs {need / session.emg_rate:.3f} s (window {cfg.window} s + {span - 1} hops)"
        )


def window_ends(n_frames: int, span: int) -> np.ndarray:
    """Indices of frames that close a full window of `span` frames (ModelConfig.span)."""
    return np.arange(span - 1, n_frames)


def gather_windows(feats: np.ndarray, ends: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """[len(ends), history, C, bands] stacks of the frames at `offsets` (ModelConfig.offsets) from
    each of `ends` (built lazily per batch)."""
    return feats[ends[:, None] + np.asarray(offsets)[None, :]]


def fold_ids(recording: np.ndarray, folds: int) -> np.ndarray:
    """Validation fold of each window, given the recording each one comes from (windows in time
    order). Several recordings: whole recordings are held out (leave-recordings-out), since a new
    trial is what the model must generalise to. One recording: `folds` contiguous blocks of it."""
    n_rec = len(np.unique(recording))
    if n_rec >= 2:
        _, rec_index = np.unique(recording, return_inverse=True)
        return rec_index % min(folds, n_rec)
    return (np.arange(len(recording)) * folds) // max(len(recording), 1)


def split_folds(ends: np.ndarray, fold: np.ndarray, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, validation) window ends per fold. Training windows closer than `gap` frames to a
    validation window are dropped: neighbouring windows share frames and samples, and without the
    gap validation would see training data."""
    out = []
    for k in np.unique(fold):
        val = ends[fold == k]
        rest = ends[fold != k]
        pos = np.clip(np.searchsorted(val, rest), 1, len(val) - 1) if len(val) > 1 else np.zeros(len(rest), int)
        near = np.minimum(np.abs(rest - val[pos]), np.abs(rest - val[np.maximum(pos - 1, 0)]))
        out.append((rest[near >= gap], val))
    return out


TARGET_SCALE_MIN = np.radians(5.0)  # rad: below this a joint's spread is mostly sensor noise


def robust_spread(y: np.ndarray) -> np.ndarray:
    """Per column, the 5-95 % range scaled to a standard deviation for normal data. Not the
    interquartile range: a wrist rests at neutral most of the time and moves in excursions, and
    the excursions are what must be learnt; a few sensor glitches beyond 95 % do not count."""
    p5, p95 = np.percentile(y, [5, 95], axis=0)
    return (p95 - p5) / 3.29


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
        """Features: mean and standard deviation. Targets: median and a robust spread (see
        robust_spread), never below TARGET_SCALE_MIN: a joint that hardly moves in training would
        otherwise have its sensor noise blown up to unit variance and dominate the loss."""
        fstd = feats.std(axis=0)
        return cls(feats.mean(axis=0), np.where(fstd > 1e-6, fstd, 1.0),
                   np.median(targets, axis=0), np.maximum(robust_spread(targets), TARGET_SCALE_MIN))

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
