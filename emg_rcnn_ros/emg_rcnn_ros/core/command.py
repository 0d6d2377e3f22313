"""Turning joint estimates into position commands that are safe to send to a device worn by a
person. Pure numpy; the estimator node owns the clocks, the watchdog and the policy.

Invariants, per joint and for any sequence of inputs (NaN and inf included; property-tested):
- every command lies within [lower, upper];
- the first command after `start` is the measured device position (no jump);
- between consecutive commands, one command period `period` apart, the velocity
  (y_k - y_k-1) / period stays within max_velocity and its change within max_acceleration * period.
  The limits are taken per command period, never over a gap: after any gap the caller restarts.
Targets are low-pass filtered (cutoff_hz, 0 = none) and approached with a braking profile, so the
command settles on a target without overshoot."""

from __future__ import annotations

import numpy as np


class CommandShaper:
    """Per-joint limits (rad), max velocity (rad/s), max acceleration (rad/s^2), cutoff (Hz), and
    the command period (s, one step per estimate)."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, max_velocity: np.ndarray,
                 max_acceleration: np.ndarray, cutoff_hz: float, period: float) -> None:
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.vmax, self.amax = np.asarray(max_velocity, float), np.asarray(max_acceleration, float)
        n = len(self.lower)
        if not (len(self.upper) == len(self.vmax) == len(self.amax) == n):
            raise ValueError(f"limit arrays differ in length: {n}, {len(self.upper)}, {len(self.vmax)}, "
                             f"{len(self.amax)}")
        finite = np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))
        if not (finite and np.all(self.lower <= self.upper)):
            raise ValueError("need finite lower <= upper for every joint")
        if not (np.all(self.vmax > 0) and np.all(self.amax > 0) and np.all(np.isfinite(self.vmax))
                and np.all(np.isfinite(self.amax))):
            raise ValueError("need finite max_velocity > 0 and max_acceleration > 0 for every joint")
        if not (period > 0 and np.isfinite(period)) or not (cutoff_hz >= 0):
            raise ValueError(f"need period > 0 and cutoff_hz >= 0, got {period}, {cutoff_hz}")
        self.period = float(period)
        self.alpha = 1.0 - np.exp(-2 * np.pi * cutoff_hz * period) if cutoff_hz > 0 else 1.0
        self.reset()

    @property
    def started(self) -> bool:
        return self._y is not None

    def reset(self) -> None:
        """Forget the state: the next command must come from `start` (the measured position)."""
        self._y: np.ndarray | None = None
        self._v = np.zeros_like(self.lower)
        self._target = None

    def resume(self, last: np.ndarray | None, measured: np.ndarray, tolerance: float) -> np.ndarray:
        """Start again after a stop: from the last command sent when the device agrees with it (every
        joint within `tolerance`), so a short input stop does not snap the command back to where a
        lagging device happens to be; else from the measured position. At rest either way."""
        m = np.asarray(measured, float)
        if last is not None and m.shape == np.shape(last) and np.all(np.abs(m - last) <= tolerance):
            return self.start(last)
        return self.start(m)

    def start(self, measured: np.ndarray) -> np.ndarray:
        """Begin at the device's measured position, at rest. Raises ValueError if it is not finite
        or outside the limits (a command there would break them; moving it in would be a jump)."""
        m = np.asarray(measured, float)
        if m.shape != self.lower.shape or not np.all(np.isfinite(m)):
            raise ValueError(f"measured position {m} is not a finite vector of {len(self.lower)} joints")
        if np.any(m < self.lower) or np.any(m > self.upper):
            raise ValueError(f"measured position {np.round(m, 3).tolist()} is outside the limits "
                             f"[{np.round(self.lower, 3).tolist()}, {np.round(self.upper, 3).tolist()}]")
        self._y, self._v, self._target = m.copy(), np.zeros_like(m), m.copy()
        return m.copy()

    def step(self, target: np.ndarray) -> np.ndarray | None:
        """The next command toward `target`, one period after the last; None (state unchanged) for a
        target that is not finite or not started."""
        x = np.asarray(target, float)
        if self._y is None or x.shape != self.lower.shape or not np.all(np.isfinite(x)):
            return None
        self._target = self._target + self.alpha * (np.clip(x, self.lower, self.upper) - self._target)
        P, a = self.period, self.amax
        err = self._target - self._y
        # The fastest speed now from which the command can still stop exactly at the target, braking
        # by a*P per period: v = m*aP + r (0 <= r < aP) covers P*((m+1)*r + aP*m*(m+1)/2).
        d, aP = np.abs(err), a * P
        m = np.floor((-1 + np.sqrt(1 + 8 * d / (aP * P))) / 2)
        r = (d / P - aP * m * (m + 1) / 2) / (m + 1)
        v_stop = m * aP + np.clip(r, 0.0, aP)
        v_want = np.sign(err) * np.minimum(np.minimum(v_stop, np.abs(err) / P), self.vmax)
        v = np.clip(v_want, self._v - a * P, self._v + a * P)
        v = np.clip(v, -self.vmax, self.vmax)
        # Never beyond the limits; with the braking above this binds only by rounding.
        v = np.clip(v, (self.lower - self._y) / P, (self.upper - self._y) / P)
        self._y = np.clip(self._y + v * P, self.lower, self.upper)
        self._v = v
        return self._y.copy()


class TrackingMonitor:
    """Latches when the device does not follow: the measured position stays more than `max_error`
    (rad, any joint) from the last command for longer than `hold` seconds. Once latched it stays
    latched until reset(): re-ramping into a device that does not move builds a saw-tooth."""

    def __init__(self, max_error: float, hold: float) -> None:
        if not (max_error > 0 and hold >= 0):
            raise ValueError(f"need max_error > 0 and hold >= 0, got {max_error}, {hold}")
        self.max_error, self.hold = float(max_error), float(hold)
        self.reset()

    def reset(self) -> None:
        self.latched = False
        self.since: float | None = None  # when the error first exceeded max_error
        self.error = 0.0

    def rearm(self) -> None:
        """Commands (re)start: the device gets the whole `hold` from now (a latch stays)."""
        self.since = None

    def update(self, now: float, command: np.ndarray, measured: np.ndarray) -> bool:
        """Feed the last command and the measured position at `now` (s, monotonic); True once latched."""
        if self.latched:
            return True
        self.error = float(np.max(np.abs(np.asarray(measured, float) - np.asarray(command, float))))
        if self.error <= self.max_error:
            self.since = None
        elif self.since is None:
            self.since = now
        elif now - self.since > self.hold:
            self.latched = True
        return self.latched
