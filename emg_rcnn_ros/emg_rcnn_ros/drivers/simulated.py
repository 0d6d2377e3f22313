"""The simulator as a real-time source: samples become available as the clock advances."""

from __future__ import annotations

import time

import numpy as np

from ..core.sim import SimConfig, Simulator
from .base import Block, SourceStats

FAULTS = ("rail", "flat", "off", "mains")


def parse_fault(text: str, channels: int) -> tuple[str, int] | None:
    """'kind:channel' (e.g. 'rail:2') or '' for none; raises ValueError naming the problem."""
    if not text:
        return None
    kind, _, ch = text.partition(":")
    if kind not in FAULTS or not ch.isdigit() or not 0 <= int(ch) < channels:
        raise ValueError(f"sim_fault '{text}': expected '' or KIND:CHANNEL with KIND one of {', '.join(FAULTS)} "
                         f"and CHANNEL 0..{channels - 1}")
    return kind, int(ch)


def apply_fault(emg: np.ndarray, first: int, rate: float, fault: tuple[str, int] | None) -> np.ndarray:
    """The electrode faults a real recording shows, on one channel of simulated samples: an offset
    that drives the amplifier into its rails (+-2 mV here) with the signal riding on it, a dead flat
    input, a disconnected input (amplifier noise only, 0.3 uV) and mains hum that swamps it: 5 mV
    at 50 Hz with the odd harmonics a lifted, high-impedance electrode picks up (150, 250, 350 Hz), which
    a notch at 50/100/150 Hz does not all remove."""
    if fault is None:
        return emg
    kind, c = fault
    out = emg.copy()
    n = len(out)
    if kind == "rail":
        out[:, c] = np.clip(out[:, c] * 50 + 1.5e-3, -2e-3, 2e-3)
    elif kind == "flat":
        out[:, c] = 0.0
    elif kind == "off":
        out[:, c] = np.random.default_rng(first).normal(0.0, 3e-7, n)
    elif kind == "mains":
        t = (first + np.arange(n)) / rate
        out[:, c] += 5e-3 * sum(a * np.sin(2 * np.pi * 50.0 * k * t) for k, a in ((1, 1.0), (3, 0.4), (5, 0.25),
                                                                                   (7, 0.15)))
    return out


class SimulatedSource:
    def __init__(self, cfg: SimConfig, max_backlog: float = 0.5) -> None:
        self.sim = Simulator(cfg)
        self.rate = cfg.rate
        self.channels = cfg.channels
        self.channel_names = self.sim.channel_names
        self.joint_names = self.sim.joint_names
        self.stats = SourceStats()
        self._max_backlog = int(max_backlog * cfg.rate)
        self._next = 0
        self._t0 = 0.0
        self._chunk = 1
        self.fault: tuple[str, int] | None = None  # set live (acquisition's sim_fault parameter)

    def start(self, chunk: int) -> None:
        """Start the stream clock now; `read` then returns `chunk` samples as each chunk completes."""
        self._t0, self._chunk, self._next = time.monotonic(), chunk, 0

    def stop(self) -> None:
        pass

    def read(self, timeout: float) -> list[Block]:
        """Sleep until the next chunk is complete (at most `timeout` s) and return what is due.
        The samples are computed before the deadline, as an amplifier digitises them as they come:
        the wait ends on the chunk's last sample, not after the simulation work."""
        boundary = (self._next // self._chunk + 1) * self._chunk  # chunks end on fixed multiples
        wake = self._t0 + boundary / self.rate + 1e-4
        delay = wake - time.monotonic()
        if delay > timeout:
            time.sleep(timeout)
            return []
        ahead = self.poll((boundary + 0.5) / self.rate) if delay > 0 else []
        delay = wake - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return ahead + self.poll(time.monotonic() - self._t0)

    def poll(self, elapsed: float) -> list[Block]:
        """Samples due `elapsed` seconds after the stream started. A backlog beyond `max_backlog`
        (the process was stalled) is skipped and counted as dropped, as an amplifier would."""
        due = int(elapsed * self.rate)
        if due - self._next > self._max_backlog:
            skip = due - self._next - self._max_backlog
            self.sim.generate(skip)
            self.stats.dropped += skip
            self.stats.gaps += 1
            self._next += skip
        n = due - self._next
        if n <= 0:
            return []
        emg, truth = self.sim.generate(n)
        block = Block(self._next, apply_fault(emg, self._next, self.rate, self.fault), truth)
        self._next = due
        self.stats.frames += n
        return [block]
