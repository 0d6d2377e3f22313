"""Bad input ends with one clear line and a non-zero exit, never a traceback (real CLI process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli


def _session(**over: object) -> dict:
    rate, n = 1000.0, 3000
    base = {"emg": np.random.default_rng(0).normal(0, 1e-4, (n, 4)), "emg_rate": rate,
            "joint_position": np.zeros((30, 2)), "joint_time": np.arange(30) * 0.1,
            "joint_names": np.array(["elbow", "wrist"])}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


CASES = {
    "missing_key": (_session(joint_time=None), "missing key(s) joint_time"),
    "wrong_shape": (_session(joint_time=np.arange(10) * 0.1), "'joint_time' must be [30]"),
    "nan": (_session(emg=np.full((3000, 4), np.nan)), "NaN"),
    "too_short": (_session(emg=np.zeros((100, 4))), "recording too short"),
    "bad_rate": (_session(emg_rate=5.0), "'emg_rate'"),
    "names_mismatch": (_session(joint_names=np.array(["elbow"])), "1 joint_names for 2 joint columns"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_session_gives_one_clear_line(tmp_path: Path, case: str) -> None:
    data, message = CASES[case]
    np.savez(tmp_path / "s.npz", **data)
    r = run_cli("train", "--data", str(tmp_path / "s.npz"), "--out", str(tmp_path / "m"), "--quiet")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_unknown_joint_names_are_refused(tmp_path: Path, sim_dir: Path) -> None:
    with np.load(sim_dir / "b.npz") as z:
        data = dict(z)
    data["joint_names"] = np.array(["knee", "ankle"])
    np.savez(tmp_path / "other.npz", **data)
    r = run_cli("train", "--data", str(sim_dir / "b.npz"), str(tmp_path / "other.npz"), "--out",
                str(tmp_path / "m"), "--quiet")
    assert r.returncode != 0 and "unknown joint names" in r.stderr and "Traceback" not in r.stderr


def test_missing_file_and_not_a_bundle(tmp_path: Path) -> None:
    r = run_cli("evaluate", "--model", str(tmp_path / "nope"), "--data", str(tmp_path / "x.npz"))
    assert r.returncode != 0 and "no model bundle here" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.txt").write_text("x")
    r = run_cli("train", "--data", str(tmp_path / "junk.txt"), "--out", str(tmp_path / "m"))
    assert r.returncode != 0 and "unknown session format" in r.stderr
