"""The main command's job, `emg-rcnn-ros demo`, as a real process: it trains a model when there is
none, runs the live graph, and prints its summary. (Its accuracy is test_pipeline.py's concern.)"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import executable

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_trains_runs_live_and_summarises(ros_env: dict[str, str], tmp_path: Path) -> None:
    model, png = tmp_path / "model", tmp_path / "demo.png"
    r = subprocess.run([executable("emg-rcnn-ros"), "demo", "--model", str(model), "--plot", str(png),
                        "--duration", "6", "--calibration-seconds", "30", "--max-steps", "25", "--channels", "4",
                        "--rate", "1000", "--namespace", "demo_test"],
                       env=ros_env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "training one" in out and (model / "config.json").is_file()  # no model: it made one
    assert "Traceback" not in out, out[-3000:]
    got = re.search(r"estimates (\d+) over ([\d.]+) s: ([\d.]+) Hz", out)
    assert got, out[-3000:]
    assert int(got[1]) >= 10 and float(got[3]) > 0
    assert png.is_file() and png.stat().st_size > 0


def test_demo_stops_on_ctrl_c_while_training_its_model(ros_env: dict[str, str], tmp_path: Path) -> None:
    """The first run trains a model for minutes; Ctrl-C then ends the demo (exit 0), and leaves no
    model behind, rather than being noted and acted on only when training is over."""
    model = tmp_path / "model"
    proc = subprocess.Popen([executable("emg-rcnn-ros"), "demo", "--model", str(model), "--plot",
                             str(tmp_path / "demo.png"), "--calibration-seconds", "120", "--max-steps", "100000"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "training one" in line:
                break
        time.sleep(2.0)  # inside training
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "stopped before going live" in out and "Traceback" not in out, out[-3000:]
    assert not model.exists()
