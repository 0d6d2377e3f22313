"""Recalibration from one short trial (core/recalibrate.py) on the simulator's next-day preset: the
same subject with the electrodes placed again loses accuracy, and one 15 s trial of the new day
recovers much of it. Also: the CLI's --init-from runs it and says what it did; bad input is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.bundle import load_bundle, save_bundle
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
from emg_rcnn_ros.core.evaluate import evaluate_sessions
from emg_rcnn_ros.core.recalibrate import RecalConfig, recalibrate
from emg_rcnn_ros.core.sessions import Session, SessionError
from emg_rcnn_ros.core.sim import SimConfig, next_day, simulate_recordings
from emg_rcnn_ros.core.train import train

from .conftest import run_cli

DAY1 = SimConfig(rate=1000.0, channels=6, seed=1, subject_seed=3)


def _sessions(cfg: SimConfig, durations: list[float]) -> list[Session]:
    return [Session(d["emg"].astype(float), cfg.rate, d["joint_position"], d["joint_time"],
                    list(map(str, d["joint_names"])), list(map(str, d["channel_names"])))
            for d in simulate_recordings(cfg, durations)]


@pytest.fixture(scope="module")
def day1_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Session]]:
    train_s = _sessions(DAY1, [45.0, 45.0, 30.0])
    model, cfg = train(train_s[:2], FeatureConfig(), ModelConfig(), TrainConfig(max_steps=1500, folds=1,
                                                                                 ensemble=False), progress=False)
    return save_bundle(tmp_path_factory.mktemp("day1") / "model", cfg, model), train_s


def _r2(bundle, sessions: list[Session]) -> float:
    return evaluate_sessions(bundle, sessions)[0]["mean"]["r2"]


def test_one_next_day_trial_recovers_the_placement_loss(day1_model) -> None:
    """The loss is measured against the same new movements with the day-one placement, so that it is
    the placement's alone (the next day also moves the second joint less, which lowers R2 by itself).
    With the defaults (chosen on the real pairs: only the first convolution fine-tuned) one 15 s trial
    improves on it (a fifth to a half of the loss in the runs so far); fine-tuning the whole
    convolutional front end recovers most of it on the simulator, and was riskier on the real pairs
    (docs/recalibration.md)."""
    from emg_rcnn_ros.core.bundle import Bundle
    from emg_rcnn_ros.core.dataset import Normaliser
    from emg_rcnn_ros.core.sim import SessionEffects

    path, day1 = day1_model
    base = load_bundle(path)
    later = next_day(DAY1, seed=2)
    calib, *test = _sessions(later, [15.0, 40.0])
    same_placement = _sessions(replace(later, effects=SessionEffects()), [15.0, 40.0])[1:]
    reference, before = _r2(base, same_placement), _r2(base, test)
    after = {}
    for layers in ("first", "input"):
        model, cfg = recalibrate(base, [calib], RecalConfig(layers=layers), TrainConfig(seed=0), source=day1[:2])
        norm = Normaliser.from_dict(cfg["normaliser"])
        after[layers] = _r2(Bundle(path, cfg, base.features, base.model_cfg, norm, model), test)
        assert cfg["training"]["recalibration"]["steps"] > 0 and cfg["training"]["init_from"] == str(path)
        assert cfg["training"]["recalibration"]["rehearsed_windows"] > 0
    print(f"day-one placement {reference:.3f}, next day before {before:.3f}, after one 15 s trial {after}")
    loss = reference - before
    assert loss > 0.15, (reference, before)  # the placement does cost accuracy
    assert after["first"] - before >= 0.03, (reference, before, after)
    assert after["input"] - before >= loss / 2, (reference, before, after)


def test_cli_init_from_recalibrates_and_refuses_a_mismatch(day1_model, tmp_path: Path) -> None:
    from emg_rcnn_ros.core.sessions import save_npz

    path, _ = day1_model
    trial = _sessions(next_day(DAY1, seed=2), [12.0])[0]
    save_npz(trial, tmp_path / "trial.npz")
    r = run_cli("train", "--data", str(tmp_path / "trial.npz"), "--init-from", str(path), "--out",
                str(tmp_path / "recal"), "--quiet")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "recalibration:" in r.stdout and "fine-tuning" in r.stdout, r.stdout
    assert load_bundle(tmp_path / "recal").config["training"]["init_from"] == str(path)
    four = Session(trial.emg[:, :4], trial.emg_rate, trial.joint_position, trial.joint_time, trial.joint_names,
                   trial.channel_names[:4])
    save_npz(four, tmp_path / "four.npz")
    r = run_cli("train", "--data", str(tmp_path / "four.npz"), "--init-from", str(path), "--out",
                str(tmp_path / "bad"), "--quiet")
    assert r.returncode != 0 and "6 EMG channels, the stream has 4" in r.stderr + r.stdout, r.stderr + r.stdout
    assert not (tmp_path / "bad").exists()


def test_recalibration_refuses_an_svr_and_bad_settings(day1_model) -> None:
    path, day1 = day1_model
    with pytest.raises(Exception, match="rehearsal must be in"):
        recalibrate(load_bundle(path), day1[:1], RecalConfig(rehearsal=1.5), TrainConfig())
    svr, cfg = train(day1[:1], FeatureConfig(), ModelConfig(arch="svr"), TrainConfig(folds=1), progress=False)
    bundle_dir = save_bundle(path.parent / "svr", cfg, svr)
    with pytest.raises(SessionError, match="SVR"):
        recalibrate(load_bundle(bundle_dir), day1[:1], RecalConfig(), TrainConfig())
    assert np.isfinite(_r2(load_bundle(path), day1[2:]))
