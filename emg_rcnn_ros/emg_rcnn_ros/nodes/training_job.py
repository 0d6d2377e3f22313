"""The trainer node's training job: `emg-rcnn train` in a child process, so the executor never
blocks, with its output relayed line by line."""

from __future__ import annotations

import os
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

    def start(self, bags: list[str], out: Path, args: list[str], nice: int = 10,
              done: Callable[[Path], None] | None = None) -> None:
        """`emg-rcnn train --data BAGS --out OUT ARGS...` at `nice` (the live nodes keep the CPU: a
        training job at normal priority beside them delayed estimates past the command watchdog);
        `done(out)` runs after a successful job."""
        # This interpreter with the module, not a console script on PATH: after `colcon build` the
        # scripts live in lib/emg_rcnn_ros/, which is not on PATH.
        cmd = [sys.executable, "-m", "emg_rcnn_ros.cli", "train", "--data", *bags, "--out", str(out), *args,
               "--quiet"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=(lambda: os.nice(nice)) if nice > 0 else None)
        threading.Thread(target=self._follow, args=(self.proc, out, done), daemon=True).start()

    def _follow(self, proc: subprocess.Popen, out: Path, done: Callable[[Path], None] | None) -> None:
        for line in proc.stdout:
            self.report(line.rstrip())
        code = proc.wait()
        self.report(f"training finished: {out}" if code == 0 else f"training failed (exit {code})")
        if code == 0 and done is not None:
            done(out)

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()
