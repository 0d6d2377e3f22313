"""The trainer node's training job: `emg-rcnn train` in a child process, so the executor never
blocks, with its output relayed line by line."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path


class TrainingJob:
    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report  # called with each output line, then with the outcome
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, bags: list[str], out: Path, arch: str, max_steps: int) -> None:
        # This interpreter with the module, not a console script on PATH: after `colcon build` the
        # scripts live in lib/emg_rcnn_ros/, which is not on PATH.
        cmd = [sys.executable, "-m", "emg_rcnn_ros.cli", "train", "--data", *bags, "--out", str(out),
               "--arch", arch, "--max-steps", str(max_steps), "--quiet"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._follow, args=(self.proc, out), daemon=True).start()

    def _follow(self, proc: subprocess.Popen, out: Path) -> None:
        for line in proc.stdout:
            self.report(line.rstrip())
        code = proc.wait()
        self.report(f"training finished: {out}" if code == 0 else f"training failed (exit {code})")

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()
