"""The trainer node's recorder: one bag at a time, written from subscription callbacks, flushed
about once a second, and never lost. Pure Python (no rclpy): the node only wires it.

A write error (disk full, file too large) stops the recording and keeps what was written (the last
flush is readable; closing may still add the rest). A path that exists is never overwritten."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from .bags import BagRecorder


class Recording:
    def __init__(self, error: Callable[[str], None]) -> None:
        self.error = error  # logs a failure loudly
        self.lock = threading.Lock()
        self.recorder: BagRecorder | None = None
        self.errors = 0

    @property
    def path(self) -> Path | None:
        rec = self.recorder
        return rec.path if rec else None

    def start(self, path: Path, storage: str, meta: dict[str, str], joint_topic: str, min_free: float,
              gate: Callable[[], str | None] = lambda: None) -> str | None:
        """Open a bag at `path`; None on success, else why not. `gate` is the caller's last word
        (no ground truth, say), asked once the storage checks have passed."""
        with self.lock:
            if self.recorder is not None:
                return f"already recording to {self.recorder.path}"
            path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path.parent).free
            if free < min_free:
                why = f"refused: {free / 1e6:.0f} MB free on {path.parent}, min_free_space is {min_free / 1e6:.0f} MB"
                self.error(why)
                return why
            if path.exists():
                return f"refused: {path} exists (nothing is overwritten)"
            if (why := gate()) is not None:
                return why
            try:
                self.recorder = BagRecorder(path, storage, meta, joint_topic)
            except (ValueError, OSError) as exc:
                return f"cannot record: {exc}"
        return None

    def write(self, topic: str, receive_ns: int, raw: bytes) -> None:
        with self.lock:
            rec = self.recorder
            if rec is None:
                return
            try:
                rec.write(topic, receive_ns, raw)
            except OSError as exc:
                self._fail(rec, exc)

    def flush(self, min_free: float) -> str | None:
        """Make what was written survive a crash. Returns why the caller should stop recording
        (disk almost full: it closes, with its description) or None; a write error stops it here."""
        with self.lock:
            rec = self.recorder
            if rec is None:
                return None
            try:
                rec.flush()
            except OSError as exc:
                self._fail(rec, exc)
                return None
        free = shutil.disk_usage(rec.path.parent).free
        if free < 0.1 * min_free:
            return f"disk almost full ({free / 1e6:.0f} MB free on {rec.path.parent}): recording stopped"
        return None

    def close(self, meta: dict[str, str] | None = None) -> BagRecorder | None:
        """Close the bag, adding `meta` to its description; the closed recorder, or None."""
        with self.lock:
            rec, self.recorder = self.recorder, None
        if rec is None:
            return None
        try:
            for k, v in (meta or {}).items():
                rec.set_meta(k, v)
            rec.close()
        except OSError as exc:
            self.error(f"closing {rec.path}: {exc}")
        return rec

    def _fail(self, rec: BagRecorder, exc: OSError) -> None:
        """Called with the lock held."""
        self.errors += 1
        self.recorder = None
        self.error(f"recording to {rec.path} stopped: {exc}")
        try:
            rec.close()
        except (OSError, ValueError) as close_exc:
            self.error(f"{rec.path} left unclosed ({close_exc}): readable up to the last flush")
