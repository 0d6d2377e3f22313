"""Turning joint estimates into controller commands that are safe to send to an exoskeleton:
position limits, a velocity limit and first-order low-pass smoothing. Pure numpy; the estimator
node owns the watchdog timer and calls `reset` when input stops."""

from __future__ import annotations

import numpy as np


class CommandShaper:
    """Per-joint limits (rad), maximum velocity (rad/s), low-pass cutoff (Hz, 0 = none)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray, cutoff_hz: float) -> None:
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.max_velocity = np.asarray(max_velocity, float)
        n = len(self.lower)
        if not (len(self.upper) == len(self.max_velocity) == n):
            raise ValueError(f"limit arrays differ in length: {n}, {len(self.upper)}, {len(self.max_velocity)}")
        if np.any(self.lower > self.upper) or np.any(self.max_velocity <= 0):
            raise ValueError("need lower <= upper and max_velocity > 0 for every joint")
        self.cutoff_hz = float(cutoff_hz)
        self.reset()

    def reset(self) -> None:
        """Forget the previous command (after a timeout the next estimate starts afresh)."""
        self._y: np.ndarray | None = None
        self._t = 0.0

    def step(self, target: np.ndarray, t: float) -> np.ndarray | None:
        """Next command for estimate `target` at time t (s); None for a non-finite estimate."""
        x = np.asarray(target, float)
        if x.shape != self.lower.shape or not np.all(np.isfinite(x)):
            return None
        x = np.clip(x, self.lower, self.upper)
        if self._y is None:
            self._y, self._t = x, t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            return self._y.copy()
        y = x
        if self.cutoff_hz > 0:
            alpha = 1.0 - np.exp(-2 * np.pi * self.cutoff_hz * dt)
            y = self._y + alpha * (x - self._y)
        step = np.clip(y - self._y, -self.max_velocity * dt, self.max_velocity * dt)
        self._y = np.clip(self._y + step, self.lower, self.upper)
        self._t = t
        return self._y.copy()
