"""Byte-level amplifier protocols as pure parsers: feed bytes, get frames. No I/O here, so the
parsers are tested with byte strings built from the protocol definitions.

Every parser resynchronises after corrupt bytes (skipping to the next plausible frame start),
counts corrupt frames and skipped bytes, and reports sample-counter gaps. Frames carry counts;
`to_volts` turns them into volts with the amplifier's scale."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Generic framed protocol (docs/serial_protocol.md)
SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<BBBI")  # width code, channels, samples per frame, sample counter
MAX_CHANNELS = 64


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    import binascii

    return binascii.crc_hqx(data, crc)


@dataclass
class Frame:
    counter: int  # device sample counter of the first sample (modulo the protocol's wrap)
    counts: np.ndarray  # [samples, channels] int32


@dataclass
class ParseStats:
    frames: int = 0
    corrupt: int = 0  # frames with a bad CRC/footer/header
    skipped_bytes: int = 0


class _ByteParser:
    """What both parsers share: the byte buffer across reads and the counters."""

    def __init__(self) -> None:
        self.stats = ParseStats()
        self._buf = bytearray()

    def reset(self) -> None:
        """Forget partial bytes (after a reconnection the stream starts afresh)."""
        self._buf.clear()


class FramedParser(_ByteParser):
    """Parser of the generic framed protocol; `channels`/`width` (bytes per sample, 2 or 3) are
    what the node was configured for: frames that disagree are counted corrupt, not trusted."""

    wrap = 1 << 32

    def __init__(self, channels: int, width: int) -> None:
        if width not in (2, 3):
            raise ValueError(f"sample width must be 2 (int16) or 3 (int24) bytes, got {width}")
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
        super().__init__()
        self.channels, self.width = channels, width

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.stats.skipped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if i:
                self.stats.skipped_bytes += i
                del buf[:i]
            if len(buf) < 2 + HEADER.size:
                break
            width, channels, samples, counter = HEADER.unpack_from(buf, 2)
            if width != self.width or channels != self.channels or samples == 0:
                self.stats.corrupt += 1
                del buf[:1]  # not a frame we can trust: look for the next sync
                continue
            n = 2 + HEADER.size + samples * channels * width + 2
            if len(buf) < n:
                break
            body = bytes(buf[2 : n - 2])
            if crc16_ccitt(body) != struct.unpack_from("<H", buf, n - 2)[0]:
                self.stats.corrupt += 1
                del buf[:1]
                continue
            payload = np.frombuffer(body, np.uint8, offset=HEADER.size).reshape(samples * channels, width)
            out.append(Frame(counter, _signed_le(payload).reshape(samples, channels)))
            self.stats.frames += 1
            del buf[:n]
        return out


def _signed_le(b: np.ndarray) -> np.ndarray:
    """[n, width] little-endian bytes -> signed int32."""
    v = np.zeros(len(b), np.int32)
    for k in range(b.shape[1]):
        v |= b[:, k].astype(np.int32) << (8 * k)
    bits = 8 * b.shape[1]
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v).astype(np.int32)


def encode_framed(counter: int, counts: np.ndarray, width: int) -> bytes:
    """One frame of the generic protocol (for amplifier firmware authors, simulators and tests)."""
    samples, channels = counts.shape
    payload = b"".join(int(v).to_bytes(width, "little", signed=True) for v in counts.ravel())
    body = HEADER.pack(width, channels, samples, counter % (1 << 32)) + payload
    return SYNC + body + struct.pack("<H", crc16_ccitt(body))


# ---------------------------------------------------------------------------------------------
# OpenBCI Cyton (8 channels, 250 Hz, 33-byte packets)
CYTON_HEADER, CYTON_LEN, CYTON_CHANNELS, CYTON_RATE = 0xA0, 33, 8, 250.0
CYTON_START, CYTON_STOP = b"b", b"s"


def cyton_scale(gain: float) -> float:
    """Volts per count: 4.5 V reference / gain / (2^23 - 1)."""
    return 4.5 / gain / (2**23 - 1)


class CytonParser(_ByteParser):
    """0xA0 | sample number | 8 x int24 big-endian | 6 aux bytes | 0xC0-0xCF footer."""

    wrap = 256
    channels = CYTON_CHANNELS

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        buf = self._buf
        out: list[Frame] = []
        while len(buf) >= CYTON_LEN:
            if buf[0] != CYTON_HEADER or not 0xC0 <= buf[CYTON_LEN - 1] <= 0xCF:
                if buf[0] == CYTON_HEADER:
                    self.stats.corrupt += 1
                nxt = buf.find(bytes([CYTON_HEADER]), 1)
                skip = nxt if nxt > 0 else len(buf)
                self.stats.skipped_bytes += skip
                del buf[:skip]
                continue
            raw = np.frombuffer(bytes(buf[2:26]), np.uint8).reshape(CYTON_CHANNELS, 3)
            v = (raw[:, 0].astype(np.int32) << 16) | (raw[:, 1].astype(np.int32) << 8) | raw[:, 2]
            v = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.int32)
            out.append(Frame(buf[1], v[None, :]))
            self.stats.frames += 1
            del buf[:CYTON_LEN]
        return out


def encode_cyton(sample_number: int, counts: np.ndarray, footer: int = 0xC0) -> bytes:
    body = b"".join(int(v).to_bytes(3, "big", signed=True) for v in counts)
    return bytes([CYTON_HEADER, sample_number % 256]) + body + bytes(6) + bytes([footer])


class SampleClock:
    """Turns wrapping device counters into stream indices and counts the samples lost between
    frames (a jump of the counter beyond the previous frame's length)."""

    def __init__(self, wrap: int) -> None:
        self.wrap = wrap
        self.next_counter: int | None = None
        self.next_index = 0
        self.dropped = 0
        self.gaps = 0

    def restart(self, index: int) -> None:
        """After a reconnection: the device counter restarts; the stream index continues at `index`."""
        self.next_counter, self.next_index = None, index

    def place(self, frame: Frame) -> int:
        """Stream index of the frame's first sample."""
        n = len(frame.counts)
        if self.next_counter is not None:
            missing = (frame.counter - self.next_counter) % self.wrap
            if missing and (self.wrap <= 256 or missing < self.wrap // 2):
                self.dropped += missing
                self.gaps += 1
                self.next_index += missing
            elif missing:  # the counter went backwards: the device restarted; keep the index running
                self.gaps += 1
        index = self.next_index
        self.next_counter = (frame.counter + n) % self.wrap
        self.next_index = index + n
        return index
