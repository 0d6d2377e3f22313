"""Amplifiers on a serial port (pyserial): a reader thread parses frames into sample blocks, and
survives unplug/replug by reopening the port with exponential back-off. The node never blocks on
the port: it takes blocks from a queue with a timeout."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np
import serial

from .base import Block, SourceStats
from .clock import ClockFit
from .protocols import CYTON_RATE, CYTON_START, CYTON_STOP, CytonParser, FramedParser, SampleClock, cyton_scale

WRITE_TIMEOUT = 1.0  # s: a start/stop command to a wedged device must not hang the reader


class SerialSource:
    def __init__(self, port: str, baudrate: int, parser, rate: float, volts_per_count: float,
                 read_timeout: float = 0.1, max_backoff: float = 5.0, start_cmd: bytes = b"",
                 stop_cmd: bytes = b"") -> None:
        self.port, self.baudrate, self.parser = port, baudrate, parser
        self.rate = rate
        self.channels = parser.channels
        self.channel_names = [f"emg{i}" for i in range(self.channels)]
        self.scale = volts_per_count
        self.read_timeout, self.max_backoff = read_timeout, max_backoff
        self.start_cmd, self.stop_cmd = start_cmd, stop_cmd
        self.stats = SourceStats()
        self.clock = SampleClock(parser.wrap)
        self.host_clock = ClockFit(rate)  # stream index -> host time, from arrival times
        self.connected = False
        self.overflow = 0  # samples lost because the queue was full
        self._queue: queue.Queue[Block] = queue.Queue(maxsize=10000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, chunk: int) -> None:
        self._t0 = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"serial {self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.read_timeout + 1.0)
            self._thread = None

    def read(self, timeout: float) -> list[Block]:
        """Blocks parsed since the last call (waits up to `timeout` for the first)."""
        try:
            out = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    # reader thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.1
        first = True
        while not self._stop.is_set():
            try:
                # exclusive: a second program on the same amplifier would steal bytes from both.
                port = serial.Serial(self.port, self.baudrate, timeout=self.read_timeout,
                                     write_timeout=WRITE_TIMEOUT, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._error(f"cannot open {self.port}: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1
            if not first:
                self.stats.reconnects += 1
                # The device counter restarts; the stream index continues at the time that passed.
                self.clock.restart(max(self.clock.next_index, int((time.monotonic() - self._t0) * self.rate)))
                self.host_clock.reset()  # a new device session: its clock is fitted afresh
            first = False
            self.parser.reset()
            self.connected = True
            try:
                if self.start_cmd:
                    port.write(self.start_cmd)
                while not self._stop.is_set():
                    data = port.read(max(1, port.in_waiting))
                    if data:
                        self._consume(data, time.time())
                if self.stop_cmd:
                    port.write(self.stop_cmd)
            except (serial.SerialException, serial.SerialTimeoutException, OSError) as exc:
                self._error(f"{self.port} lost: {exc}")
            finally:
                self.connected = False
                with contextlib.suppress(serial.SerialException, OSError):
                    port.close()

    def stamp_ns(self, index: int) -> int:
        """Host time (ns since the epoch) at which stream sample `index` was acquired."""
        return int(round(self.host_clock.time_of(index) * 1e9))

    def _consume(self, data: bytes, arrival: float) -> None:
        last = None
        for frame in self.parser.feed(data):
            index = self.clock.place(frame)
            last = index + len(frame.counts) - 1
            try:
                self._queue.put_nowait(Block(index, frame.counts.astype(np.float64) * self.scale))
            except queue.Full:  # nobody is reading: count the loss rather than block the port forever
                self.overflow += len(frame.counts)
        if last is not None:
            self.host_clock.observe(last, arrival)
        st = self.stats
        ps = self.parser.stats
        st.frames, st.corrupt, st.skipped_bytes = ps.frames, ps.corrupt, ps.skipped_bytes
        st.dropped, st.gaps = self.clock.dropped + self.overflow, self.clock.gaps

    def _error(self, message: str) -> None:
        self.stats.errors.append(message)
        del self.stats.errors[:-10]


def make_serial_source(driver: str, *, port: str, baudrate: int, channels: int, rate: float, sample_format: str,
                       gain: float, vref: float, read_timeout: float, max_backoff: float) -> SerialSource:
    """The serial drivers by name, with the counts-to-volts scale of each."""
    if gain <= 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    if driver == "openbci_cyton":
        return SerialSource(port, baudrate, CytonParser(), CYTON_RATE, cyton_scale(gain), read_timeout, max_backoff,
                            start_cmd=CYTON_START, stop_cmd=CYTON_STOP)
    widths = {"int16": 2, "int24": 3}
    if sample_format not in widths:
        raise ValueError(f"sample_format must be int16 or int24, got '{sample_format}'")
    width = widths[sample_format]
    scale = vref / gain / (2 ** (8 * width - 1) - 1)
    return SerialSource(port, baudrate, FramedParser(channels, width), rate, scale, read_timeout, max_backoff)
