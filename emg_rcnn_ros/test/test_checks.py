"""Data checks of a recording before training (core/checks.py, `emg-rcnn inspect`), on the
simulated rig preset with the failure modes of real lab recordings injected one at a time."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.checks import inspect_session, mains_of
from emg_rcnn_ros.core.sessions import Session
from emg_rcnn_ros.core.sim import SessionEffects, SimConfig, simulate_recordings, simulate_rig_trials, simulate_session

from .conftest import run_cli


def _session(d: dict, name: str = "trial") -> Session:
    return Session(d["emg"].astype(float), float(d["emg_rate"]), d["joint_position"], d["joint_time"],
                   list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source=name)


@pytest.fixture(scope="module")
def trial() -> Session:
    return _session(simulate_rig_trials(subject=3, trials=1, seed=1)[0])


def _warned(s: Session, mains_hz: float | None = 50.0) -> set[tuple[str, str]]:
    return {(f.check, f.where) for f in inspect_session(s, mains_hz) if f.level == "warn"}


def test_the_rig_preset_has_its_failure_modes() -> None:
    trials = simulate_rig_trials(subject=0, trials=4, seed=0)
    durations = [len(d["emg"]) / d["emg_rate"] for d in trials]
    assert all(4.5 <= t <= 15.5 for t in durations), durations
    for d in trials:
        counts = d["emg"] * 1000.0 * 4096 / 3.3 + 2048  # back to ADC counts: whole numbers within 0..4095
        assert np.allclose(counts, np.round(counts), atol=1e-2) and counts.min() >= 0 and counts.max() <= 4095
        assert np.allclose(np.degrees(d["joint_position"]), np.round(np.degrees(d["joint_position"])))
        assert 350 <= (len(d["joint_time"]) - 1) / np.ptp(d["joint_time"]) <= 450  # ~400 Hz IMU
    assert any((np.abs(d["emg"]) >= 3.3 / 2 / 1000 - 1e-6).any() for d in trials)  # strong contractions clip
    spreads = np.array([np.ptp(d["joint_position"], axis=0) for d in trials])
    assert np.ptp(spreads[:, 0] / spreads[:, 1]) > 0.3  # the movement mix changes between trials


def test_recordings_of_one_session_keep_its_electrodes() -> None:
    """A recalibration trial and the trials it is judged on come from one placement of the
    electrodes: each channel's level relative to the others stays, where a new session moves it."""
    cfg = SimConfig(rate=1000.0, channels=4, seed=3, effects=SessionEffects(gain_change=0.5))
    first, second = simulate_recordings(cfg, [20.0, 20.0])
    assert np.array_equal(first["emg"], simulate_session(cfg, 20.0)["emg"])  # the same session, continued
    assert second["joint_time"][0] == 0.0 and not np.array_equal(first["emg"], second["emg"])
    other = simulate_session(replace(cfg, seed=4), 20.0)

    def profile(d: dict) -> np.ndarray:
        level = np.log(d["emg"].std(axis=0))
        return level - level.mean()

    assert np.abs(profile(second) - profile(first)).max() < 0.5 * np.abs(profile(other) - profile(first)).max()


def test_a_clean_trial_has_no_dead_channel_or_still_joint(trial: Session) -> None:
    assert not {w for w in _warned(trial) if w[0] in ("dead", "still_joint", "sample_rate")}


def test_clipping_is_found_on_the_channel_that_clips(trial: Session) -> None:
    before = _warned(trial)
    c = next(i for i, n in enumerate(trial.channel_names) if ("clipping", n) not in before)
    emg = trial.emg.copy()
    rail = np.percentile(np.abs(emg[:, c]), 98)
    emg[:, c] = np.clip(emg[:, c], -rail, rail)  # 2 % of the samples held at the rails
    assert ("clipping", trial.channel_names[c]) in _warned(replace(trial, emg=emg))


def test_a_dead_channel_and_a_still_joint_are_named(trial: Session) -> None:
    emg = trial.emg.copy()
    emg[:, 2] = 1e-4 + np.random.default_rng(0).normal(0, 1e-8, len(emg))  # connected to nothing
    pos = trial.joint_position.copy()
    pos[:, 0] = pos[0, 0] + np.radians(np.random.default_rng(1).integers(-1, 2, len(pos)))  # +-1 deg jitter
    got = _warned(replace(trial, emg=emg, joint_position=pos))
    assert ("dead", "emg2") in got and ("still_joint", trial.joint_names[0]) in got


def test_mains_hum_is_found_with_its_frequency(trial: Session) -> None:
    t = np.arange(len(trial.emg)) / trial.emg_rate
    hummed = replace(trial, emg=trial.emg + 2e-4 * np.sin(2 * np.pi * 60.0 * t)[:, None])  # well over the rig's own
    assert ("mains", "") in _warned(hummed, mains_hz=50.0)  # the notch is at the wrong frequency
    assert ("mains", "") not in _warned(hummed, mains_hz=60.0)
    assert mains_of([inspect_session(hummed, None)]) == 60.0
    assert mains_of([inspect_session(trial, None)]) == 60.0  # the rig preset's own hum
    clean = _session(simulate_session(SimConfig(rate=1000.0, channels=4, mains_volts=0.0), 10.0))
    assert mains_of([inspect_session(clean, None)]) is None  # no hum: the notch is left alone


def test_a_wrong_sample_rate_is_flagged(trial: Session) -> None:
    """Samples at 1 kHz stated as 4 kHz put the EMG's median frequency near 500 Hz."""
    wrong = replace(trial, emg_rate=4 * trial.emg_rate, joint_time=trial.joint_time / 4)
    assert ("sample_rate", "") in _warned(wrong)


def test_inspect_prints_and_plots_and_train_stores_the_checks(tmp_path: Path) -> None:
    paths = []
    for i, d in enumerate(simulate_rig_trials(subject=1, trials=2, seed=2)):
        d = dict(d)
        if i == 0:
            d["emg"] = d["emg"].copy()
            d["emg"][:, 3] = 0.0  # an unplugged lead
        paths.append(tmp_path / f"t{i}.npz")
        np.savez(paths[-1], **d)
    r = run_cli("inspect", *map(str, paths), "--out", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr
    assert "t0.npz" in r.stdout and "emg3" in r.stdout and "dead input" in r.stdout, r.stdout
    png = (tmp_path / "plots" / "t0.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert run_cli("inspect", *map(str, paths), "--out", str(tmp_path / "plots"), "--strict").returncode == 1
    r = run_cli("train", "--data", *map(str, paths), "--out", str(tmp_path / "m"), "--arch", "svr", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "emg3" in r.stderr and "dead input" in r.stderr  # warned while training
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    stored = cfg["data_checks"][str(paths[0])]
    assert any(f["check"] == "dead" and f["where"] == "emg3" for f in stored)
