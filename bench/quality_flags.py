"""Signal-quality flags per minute on clean signals: the simulator at rest and in motion (10 minutes
each by default) and the real recordings in ../shared/realdata/ when that folder is there (never
copied). Each stream goes through what the feature node runs (conditioning, 10 ms chunks, the
quality tracker at the default 80 ms window) and the command path's gate (core/quality.py).

    python bench/quality_flags.py [--minutes 10] [--trip 2] [--clear 10]

Printed per source: frames, frames with any flag, frames the gate acts on (commands held), both per
minute, and which flags."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from emg_rcnn_ros.core.config import FeatureConfig
from emg_rcnn_ros.core.frames import FrameLayout
from emg_rcnn_ros.core.quality import QualityConfig, QualityGate, QualityTracker, describe
from emg_rcnn_ros.core.signal import Conditioner
from emg_rcnn_ros.core.sim import SimConfig, Simulator

DATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def stream_flags(emg: np.ndarray, rate: float, mains_hz: float, trip: int, clear: int
                 ) -> tuple[int, int, int, Counter]:
    """(frames, frames flagged, frames the gate acts on, flags seen) for one recording."""
    fcfg = FeatureConfig(mains_hz=mains_hz)
    lay = FrameLayout.build(fcfg, rate)
    cond = Conditioner(fcfg, rate, emg.shape[1])
    tr = QualityTracker(QualityConfig(mains_hz=mains_hz), rate, lay.window_n)
    gate = QualityGate(trip, clear)
    chunk = max(1, int(round(0.01 * rate)))
    frames = flagged = held = 0
    seen: Counter = Counter()
    next_end = lay.window_n - 1
    for k in range(0, len(emg), chunk):
        x = emg[k:k + chunk]
        tr.push(x, cond.process(x))
        while next_end < k + len(x):
            f = tr.frame(next_end)
            frames += 1
            flagged += bool(f.any())
            held += bool(gate.update(f).any())
            for v in f[f > 0]:
                seen[describe(int(v))] += 1
            next_end += lay.hop_n
    return frames, flagged, held, seen


def row(name: str, seconds: float, got: tuple[int, int, int, Counter]) -> None:
    frames, flagged, held, seen = got
    minutes = seconds / 60
    print(f"{name:28} {seconds:7.1f} s {frames:7d} frames  flagged {flagged:5d} ({flagged / minutes:7.1f}/min)  "
          f"held {held:5d} ({held / minutes:7.1f}/min)  {dict(seen) if seen else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--trip", type=int, default=2)
    ap.add_argument("--clear", type=int, default=10)
    a = ap.parse_args()
    secs = a.minutes * 60
    for name, cfg in (("simulator, in motion", SimConfig(seed=11)),
                      ("simulator, at rest", SimConfig(seed=12, max_emg_volts=1e-9))):
        sim = Simulator(cfg)
        emg = np.concatenate([sim.generate(int(cfg.rate * 10))[0] for _ in range(int(secs / 10))])
        row(name, secs, stream_flags(emg, cfg.rate, cfg.mains_hz, a.trip, a.clear))
    if not DATA.is_dir():
        print(f"{DATA} is not here: no real recordings")
        return 0
    from emg_rcnn_ros.core.checks import inspect_session, mains_of
    from emg_rcnn_ros.core.sessions import load_session

    total = [0, 0, 0, 0.0]
    for p in sorted(DATA.glob("*.npz")):
        s = load_session(p)
        mains = mains_of([inspect_session(s)]) or 50.0
        got = stream_flags(s.emg, s.emg_rate, mains, a.trip, a.clear)
        row(f"{p.stem.removeprefix('raw_S2WA_')} ({mains:g} Hz)", s.duration, got)
        total = [total[0] + got[0], total[1] + got[1], total[2] + got[2], total[3] + s.duration]
    m = total[3] / 60
    print(f"real recordings, all: {total[3]:.0f} s, {total[0]} frames, flagged {total[1]} ({total[1] / m:.1f}/min), "
          f"held {total[2]} ({total[2] / m:.1f}/min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
