"""What every EMG source hands to the acquisition node: blocks of samples with the stream index
of their first sample, re-cut here into fixed-size chunks (one EmgArray each)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Block:
    first: int  # stream index of samples[0]
    samples: np.ndarray  # [n, C] volts
    truth: np.ndarray | None = None  # [n, J] joint angles (simulator only)


@dataclass
class SourceStats:
    frames: int = 0
    corrupt: int = 0  # frames rejected (bad CRC, header or footer)
    skipped_bytes: int = 0  # bytes discarded while resynchronising
    dropped: int = 0  # samples missing according to the sample counter
    gaps: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"frames": self.frames, "corrupt": self.corrupt, "skipped_bytes": self.skipped_bytes,
                "dropped_samples": self.dropped,
                "gaps": self.gaps, "reconnects": self.reconnects, "last_error": self.errors[-1] if self.errors else ""}


class Chunker:
    """Re-cut blocks into chunks of `size` samples; a jump in the sample index starts a new chunk
    (the partial one before the gap is emitted as it is, so nothing recorded is lost)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be >= 1 sample, got {size}")
        self.size = size
        self._parts: list[Block] = []
        self._next: int | None = None

    def push(self, block: Block) -> list[Block]:
        out: list[Block] = []
        if self._next is not None and block.first != self._next:
            out.extend(self.flush())
        self._parts.append(block)
        self._next = block.first + len(block.samples)
        held = sum(len(p.samples) for p in self._parts)
        if held >= self.size:
            merged = self._merge()
            n_full = (len(merged.samples) // self.size) * self.size
            for i in range(0, n_full, self.size):
                out.append(Block(merged.first + i, merged.samples[i : i + self.size],
                                 None if merged.truth is None else merged.truth[i : i + self.size]))
            rest = merged.samples[n_full:]
            self._parts = [Block(merged.first + n_full, rest, None if merged.truth is None else merged.truth[n_full:])
                           ] if len(rest) else []
        return out

    def flush(self) -> list[Block]:
        if not self._parts:
            return []
        merged = self._merge()
        self._parts = []
        return [merged] if len(merged.samples) else []

    def _merge(self) -> Block:
        first = self._parts[0].first
        samples = np.concatenate([p.samples for p in self._parts])
        truth = None if self._parts[0].truth is None else np.concatenate([p.truth for p in self._parts])
        return Block(first, samples, truth)
