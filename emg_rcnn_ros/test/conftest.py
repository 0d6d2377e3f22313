"""Shared fixtures. ROS isolation: every test process gets its own log dir; multi-process tests
pick a domain id of their own (see ros_env)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emg_rcnn_ros.core.sim import SimConfig, simulate_session

os.environ.setdefault("ROS_LOG_DIR", str(Path(__file__).resolve().parents[2] / "build" / "ros_log"))


def executable(name: str) -> str:
    """An installed console script: beside the interpreter (venv) or on PATH (colcon install)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} is not installed")
    return found


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real `emg-rcnn` command in a real process."""
    return subprocess.run([executable("emg-rcnn"), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small simulated sessions of one subject: calibration (a) and a fresh one (b)."""
    d = tmp_path_factory.mktemp("sim")
    for name, seed, dur in (("a", 1, 90.0), ("b", 2, 40.0)):
        np.savez(d / f"{name}.npz", **simulate_session(SimConfig(seed=seed, rate=1000.0, channels=6), dur))
    return d
