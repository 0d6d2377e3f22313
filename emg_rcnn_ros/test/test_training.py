"""Training learns something real: each architecture beats a shuffled-target control on a session
it never saw; fine-tuning starts from the given model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow


def _evaluate(model: Path, data: Path) -> dict:
    r = run_cli("evaluate", "--model", str(model), "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shuffled(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibration session with its joint trajectory cut into 2 s blocks and shuffled: same
    EMG, same target distribution, no relation between them."""
    with np.load(sim_dir / "a.npz") as z:
        data = dict(z)
    pos = data["joint_position"]
    blocks = np.array_split(np.arange(len(pos)), len(pos) // 200)
    order = np.random.default_rng(0).permutation(len(blocks))
    data["joint_position"] = pos[np.concatenate([blocks[i] for i in order])]
    path = tmp_path_factory.mktemp("ctrl") / "shuffled.npz"
    np.savez(path, **data)
    return path


@pytest.mark.parametrize("arch", ["rcnn", "cnn", "svr"])
def test_learns_beyond_shuffled_control(arch: str, sim_dir: Path, shuffled: Path, tmp_path: Path) -> None:
    common = ["--arch", arch, "--max-steps", "150", "--folds", "1", "--quiet"]
    r = run_cli("train", "--data", str(sim_dir / "a.npz"), "--out", str(tmp_path / "real"), *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--data", str(shuffled), "--out", str(tmp_path / "ctrl"), *common)
    assert r.returncode == 0, r.stderr
    real = _evaluate(tmp_path / "real", sim_dir / "b.npz")
    ctrl = _evaluate(tmp_path / "ctrl", sim_dir / "b.npz")
    assert set(real) == {"joints", "cc", "rmse", "nrmse", "r2", "mean"}
    assert real["mean"]["r2"] > 0.5, real
    assert real["mean"]["r2"] > ctrl["mean"]["r2"] + 0.4, (real, ctrl)
    assert real["mean"]["cc"] > 0.75


def test_fine_tune_and_report(sim_dir: Path, tmp_path: Path) -> None:
    r = run_cli("train", "--data", str(sim_dir / "b.npz"), "--out", str(tmp_path / "base"), "--max-steps", "20",
                "--folds", "2",
                "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--data", str(sim_dir / "a.npz"), "--out", str(tmp_path / "tuned"), "--max-steps", "20",
                "--folds", "2",
                "--init-from", str(tmp_path / "base"), "--quiet")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert cfg["training"]["init_from"] == str(tmp_path / "base")
    # Re-centred on the new recording, fine-tuned, and it says so.
    assert cfg["training"]["recalibration"]["recentre"] == "band" and cfg["training"]["steps_run"] > 0
    assert "recalibration: feature means re-centred (band)" in r.stdout, r.stdout
    r = run_cli("evaluate", "--model", str(tmp_path / "tuned"), "--data", str(sim_dir / "b.npz"), "--report",
                str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert len(m["cc"]) == 2 and len(m["rmse_deg"]) == 2
    png = (tmp_path / "rep" / "estimates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
