"""The amplifier's sample clock mapped to host time.

A cheap board's crystal runs 1-3 % off its nominal rate, and USB delivers its bytes in bursts, so
neither `start + index / nominal_rate` nor the arrival time of a sample is its acquisition time.
The samples' true times lie on a line, time = offset + index / rate; every arrival is that time
plus a delay that is never negative. So the fit keeps, for each short bin of arrival time, the
arrival least delayed against the nominal line, fits a line through those (least squares), and
lowers it until no arrival comes before it. Old points leave the window, so the estimate follows
slow drift; a reconnect starts it afresh."""

from __future__ import annotations

import collections

import numpy as np


class ClockFit:
    def __init__(self, nominal_rate: float, window: float = 30.0, bin_width: float = 0.25) -> None:
        if nominal_rate <= 0:
            raise ValueError(f"nominal_rate must be > 0, got {nominal_rate}")
        self.nominal = float(nominal_rate)
        self.window, self.bin_width = window, bin_width
        # Per bin of arrival time: [bin id, index, arrival] of the least delayed arrival.
        self.bins: collections.deque[list] = collections.deque()
        self.slope = 1.0 / self.nominal  # s per sample
        self.offset: float | None = None
        self._last = -np.inf
        self._fresh = False

    def reset(self) -> None:
        """Fit afresh from the next arrival on (a reconnect). Until then the old line still answers,
        so samples already queued keep their stamps."""
        self._fresh = True

    @property
    def rate(self) -> float:
        """The estimated true sample rate (Hz)."""
        return 1.0 / self.slope

    def observe(self, index: int, arrival: float) -> None:
        """Sample `index` (the newest received) had arrived by host time `arrival` (s). O(1) per call
        but once per bin, when the line is fitted again through at most window / bin_width points."""
        if self._fresh:
            self._fresh = False
            self.bins.clear()
            self.slope, self.offset = 1.0 / self.nominal, None
        b = int(arrival // self.bin_width)
        delay = arrival - index * self.slope
        if self.bins and self.bins[-1][0] >= b:  # (a host clock step back stays in the newest bin)
            last = self.bins[-1]
            if delay < last[2] - last[1] * self.slope:
                last[1], last[2] = index, arrival
        else:
            self.bins.append([b, index, arrival])
            while arrival - self.bins[0][2] > self.window:
                self.bins.popleft()
            if len(self.bins) >= 3:  # the newest bin is still filling: fit the complete ones
                n = np.array([x[1] for x in self.bins], np.float64)[:-1]
                t = np.array([x[2] for x in self.bins], np.float64)[:-1]
                slope = np.polyfit(n - n[0], t - t[0], 1)[0]
                if 0.5 / self.nominal < slope < 2.0 / self.nominal:
                    self.slope = float(slope)
            self.offset = min(x[2] - x[1] * self.slope for x in self.bins)
        self.offset = delay if self.offset is None else min(self.offset, arrival - index * self.slope)

    def time_of(self, index: int) -> float:
        """Host time (s) at which sample `index` was acquired. Successive answers increase by at least
        half a nominal sample period: while the first arrivals are still lowering the line, stamps are
        compressed rather than repeated or sent backwards."""
        if self.offset is None:
            raise RuntimeError("no arrival observed yet")
        t = max(self.offset + index * self.slope, self._last + 0.5 / self.nominal)
        self._last = t
        return t
