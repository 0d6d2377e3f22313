"""Helpers shared by the benchmark scripts (not part of the product)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

# The tests take ROS domains 1-100 (test/conftest.py). Each benchmark has a domain of its own
# outside that range (101, and 215-232, which are also safe on Linux), so that one run beside
# the tests or beside another benchmark never shares a graph with it.
BENCH_DOMAINS = {"soak": 101, "latency": 215, "recording": 216, "fuzz": 217, "stop": 218}


def percentiles(values_s: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values_s) * 1e3
    return {"p50_ms": round(float(np.percentile(v, 50)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3),
            "n": int(v.size)}


def machine() -> dict[str, object]:
    import os

    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def session_from(d: dict, source: str):
    from emg_rcnn_ros.core.sessions import Session

    return Session(d["emg"].astype(np.float64), float(d["emg_rate"]), d["joint_position"], d["joint_time"],
                   list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source=source)


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
