"""Sessions: one recording of EMG with measured joint angles, in the plain NPZ form or (through
a registered loader) a rosbag2 directory. Everything is validated on load with messages that name
the problem, because a lab's data arrives from many tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import MAX_RATE_HZ, MIN_RATE_HZ
from .errors import SessionError


@dataclass
class Session:
    """EMG [N, C] in volts at `emg_rate` Hz, joint angles [M, J] in radians at `joint_time` seconds
    on the EMG clock (sample i of emg is at i / emg_rate). `segments` are [start, stop) sample
    ranges of continuous data: no analysis window may cross a gap."""

    emg: np.ndarray
    emg_rate: float
    joint_position: np.ndarray
    joint_time: np.ndarray
    joint_names: list[str]
    channel_names: list[str]
    source: str = "<memory>"
    segments: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = [(0, len(self.emg))]

    @property
    def duration(self) -> float:
        return len(self.emg) / self.emg_rate

    def validate(self) -> None:
        src = self.source
        if self.emg.ndim != 2 or self.emg.shape[0] == 0 or self.emg.shape[1] == 0:
            raise SessionError(f"{src}: 'emg' must be a non-empty [samples, channels] array, got {self.emg.shape}")
        if not np.isfinite(self.emg).all():
            raise SessionError(f"{src}: 'emg' contains NaN or inf")
        if not (np.isfinite(self.emg_rate) and MIN_RATE_HZ <= self.emg_rate <= MAX_RATE_HZ):
            raise SessionError(f"{src}: 'emg_rate' {self.emg_rate} Hz outside {MIN_RATE_HZ:g}-{MAX_RATE_HZ:g} Hz")
        pos, t = self.joint_position, self.joint_time
        if pos.ndim != 2 or pos.shape[1] == 0 or pos.shape[0] < 2:
            raise SessionError(f"{src}: 'joint_position' must be [samples >= 2, joints], got {pos.shape}")
        if t.ndim != 1 or len(t) != len(pos):
            raise SessionError(f"{src}: 'joint_time' must be [{len(pos)}] to match 'joint_position', got {t.shape}")
        if not (np.isfinite(pos).all() and np.isfinite(t).all()):
            raise SessionError(f"{src}: 'joint_position' or 'joint_time' contains NaN or inf")
        if np.any(np.diff(t) <= 0):
            raise SessionError(f"{src}: 'joint_time' must be strictly increasing")
        if len(self.joint_names) != pos.shape[1]:
            raise SessionError(f"{src}: {len(self.joint_names)} joint_names for {pos.shape[1]} joint columns")
        if len(self.channel_names) != self.emg.shape[1]:
            raise SessionError(f"{src}: {len(self.channel_names)} channel_names for {self.emg.shape[1]} channels")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise SessionError(f"{src}: duplicate joint names {self.joint_names}")

    def targets_at(self, sample_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles interpolated at EMG sample times; (targets [K, J], mask of frames inside the
        measured joint span: no extrapolation)."""
        times = np.asarray(sample_index) / self.emg_rate
        inside = (times >= self.joint_time[0]) & (times <= self.joint_time[-1])
        out = np.stack([np.interp(times, self.joint_time, self.joint_position[:, j])
                        for j in range(self.joint_position.shape[1])], axis=1)
        return out, inside


REQUIRED_KEYS = ("emg", "emg_rate", "joint_position", "joint_time", "joint_names")


def load_npz(path: Path) -> Session:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise SessionError(f"{path}: not a readable NPZ session ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise SessionError(f"{path}: missing key(s) {', '.join(missing)} (need {', '.join(REQUIRED_KEYS)})")
    try:
        emg = np.asarray(data["emg"], dtype=np.float64)
        rate = float(np.asarray(data["emg_rate"]).reshape(-1)[0])
        pos = np.asarray(data["joint_position"], dtype=np.float64)
        t = np.asarray(data["joint_time"], dtype=np.float64)
    except (TypeError, ValueError, IndexError) as exc:
        raise SessionError(f"{path}: numeric arrays expected ({exc})") from exc
    if pos.ndim == 1:
        pos = pos[:, None]
    names = [str(n) for n in np.atleast_1d(data["joint_names"])]
    chans = ([str(n) for n in np.atleast_1d(data["channel_names"])] if "channel_names" in data
             else [f"ch{i}" for i in range(emg.shape[1] if emg.ndim == 2 else 0)])
    s = Session(emg, rate, pos, t, names, chans, source=str(path))
    s.validate()
    return s


def save_npz(session: Session, path: Path) -> None:
    """Write the NPZ form (atomically: a half-written session is never left behind)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, emg=session.emg.astype(np.float32), emg_rate=np.float64(session.emg_rate),
             joint_position=session.joint_position, joint_time=session.joint_time,
             joint_names=np.array(session.joint_names), channel_names=np.array(session.channel_names))
    tmp.replace(path)


def align_sessions(sessions: list[Session], joint_names: list[str] | None = None) -> list[Session]:
    """Check that sessions agree on rate and channels; reorder joint columns to `joint_names`
    (default: the first session's), refusing unknown or missing joints."""
    if not sessions:
        raise SessionError("no sessions given")
    ref = sessions[0]
    names = list(joint_names or ref.joint_names)
    for s in sessions:
        if abs(s.emg_rate - ref.emg_rate) > 1e-6 * ref.emg_rate:
            raise SessionError(f"{s.source}: rate {s.emg_rate:g} Hz differs from {ref.source} ({ref.emg_rate:g} Hz)")
        if s.emg.shape[1] != ref.emg.shape[1]:
            raise SessionError(f"{s.source}: {s.emg.shape[1]} channels, {ref.source} has {ref.emg.shape[1]}")
        unknown = [n for n in s.joint_names if n not in names]
        missing = [n for n in names if n not in s.joint_names]
        if unknown or missing:
            raise SessionError(f"{s.source}: unknown joint names {unknown} / missing {missing} (model joints: {names})")
        order = [s.joint_names.index(n) for n in names]
        s.joint_position, s.joint_names = s.joint_position[:, order], names
    return sessions


# Loaders for directory forms (rosbag2) register here, so every command accepts them.
DIR_LOADERS: list[tuple[Callable[[Path], bool], Callable[[Path], Session]]] = []


def load_session(path: str | Path) -> Session:
    """Any session form, chosen by what the path is."""
    p = Path(path)
    if not p.exists():
        raise SessionError(f"{p}: no such file or directory")
    if p.is_dir():
        for accepts, loader in DIR_LOADERS:
            if accepts(p):
                session = loader(p)
                session.validate()
                return session
        raise SessionError(f"{p}: a directory that no session loader recognises (expected a rosbag2 bag)")
    if p.suffix != ".npz":
        raise SessionError(f"{p}: unknown session format (expected .npz or a bag directory)")
    return load_npz(p)
