"""The training regime for small recordings (core only, no ROS): held-out folds choose the number
of optimiser steps, the final model is fitted on every window, targets are scaled robustly, and a
recalibration that cannot help keeps the model as it was."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig, from_dict
from emg_rcnn_ros.core.dataset import TARGET_SCALE_MIN, Normaliser, fold_ids, split_folds
from emg_rcnn_ros.core.errors import ConfigError
from emg_rcnn_ros.core.sessions import Session
from emg_rcnn_ros.core.sim import SimConfig, simulate_session
from emg_rcnn_ros.core.train import _predict, build_corpus, electrode_shift, train


def _session(seed: int, seconds: float, subject: int = 0) -> Session:
    d = simulate_session(SimConfig(rate=1000.0, channels=4, seed=seed, subject_seed=subject), seconds)
    return Session(d["emg"].astype(float), 1000.0, d["joint_position"], d["joint_time"],
                   list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source=f"sim{seed}")


def test_folds_hold_out_whole_recordings_or_contiguous_blocks() -> None:
    several = fold_ids(np.repeat([0, 1, 2, 3], 5), 3)
    assert [len(set(several[i * 5 : i * 5 + 5])) for i in range(4)] == [1, 1, 1, 1]  # never split
    assert sorted(set(several)) == [0, 1, 2]
    one = fold_ids(np.zeros(30, int), 3)
    assert list(one) == [0] * 10 + [1] * 10 + [2] * 10


def test_split_keeps_a_gap_between_training_and_validation_windows() -> None:
    ends = np.arange(9, 300)
    fold = (np.arange(len(ends)) * 3) // len(ends)
    for tr, va in split_folds(ends, fold, gap=20):
        assert len(tr) and len(va) and not set(tr) & set(va)
        assert np.min(np.abs(tr[:, None] - va[None, :])) >= 20
    # every window is validated once
    assert sorted(np.concatenate([va for _, va in split_folds(ends, fold, gap=20)])) == list(ends)


def test_target_scale_is_robust_and_floored() -> None:
    rng = np.random.default_rng(0)
    y = np.stack([rng.normal(0.2, 0.5, 5000), rng.normal(-0.1, 0.001, 5000)], axis=1)
    y[:50, 0] = 30.0  # a few glitches of the angle sensor (1 %)
    n = Normaliser.fit(np.zeros((5000, 1, 1)), y)
    assert n.target_std[0] == pytest.approx(0.5, rel=0.1)  # the glitches do not inflate the scale
    assert n.target_mean[0] == pytest.approx(0.2, abs=0.03)
    assert n.target_std[1] == pytest.approx(TARGET_SCALE_MIN)  # a joint that hardly moves is not blown up


def test_electrode_augmentation_scales_and_tilts_each_channel_within_its_bounds() -> None:
    g, t, B = 0.25, 0.3, 24
    plain = electrode_shift(np.random.default_rng(5), 400, 4, B, g, 0.0)
    tilted = electrode_shift(np.random.default_rng(5), 400, 4, B, g, t)
    assert plain.shape == (400, 4, 1) and tilted.shape == (400, 4, B)  # a gain moves every band alike
    assert 2 * np.log(1 - g) <= plain.min() and plain.max() <= 2 * np.log(1 + g)
    assert np.ptp(plain[:, :, 0], axis=1).min() > 0  # each channel its own gain
    # The tilt keeps each channel's gain (its centre) and adds a straight line across the bands,
    # 2 x slope in log power from the lowest band to the highest, the slope within +-t.
    centre = 0.5 * (tilted[:, :, 0] + tilted[:, :, -1])
    np.testing.assert_allclose(centre, plain[:, :, 0], atol=1e-5)
    rise = tilted[:, :, -1] - tilted[:, :, 0]
    assert np.abs(rise).max() <= 2 * t + 1e-5 and np.abs(rise).max() > 1.6 * t
    line = tilted[:, :, :1] + rise[:, :, None] * np.linspace(0, 1, B)
    np.testing.assert_allclose(tilted, line, atol=1e-5)
    with pytest.raises(ConfigError, match="tilt_jitter"):
        from_dict(TrainConfig, {"tilt_jitter": -0.1})


def test_budget_is_chosen_on_folds_then_every_window_is_trained() -> None:
    sessions = [_session(1, 14.0), _session(2, 14.0), _session(3, 14.0)]
    tcfg = TrainConfig(max_steps=150, eval_every=25, patience_steps=50, folds=3)
    corpus = build_corpus(sessions, FeatureConfig(), ModelConfig().span, tcfg.folds)
    assert len(corpus.folds) == 3
    for tr, va in corpus.folds:  # each fold holds out one whole recording
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) < len(corpus.all_ends)
    model, cfg = train(sessions, FeatureConfig(), ModelConfig(), tcfg, progress=False)
    t = cfg["training"]
    assert t["windows"] == len(corpus.all_ends)
    assert len(t["folds"]) == 3 and all(f["steps_run"] <= 150 for f in t["folds"])
    assert t["budget_steps"] == t["steps_run"] > 0  # a new model is never kept untrained
    assert t["history"][-1]["step"] == t["steps_run"]  # the final fit ran the chosen budget
    assert cfg["validation"]["mean"]["r2"] > 0.3  # held-out windows, from models that never saw them


def test_a_recording_unlike_the_others_neither_cuts_the_budget_short_nor_leaves_an_untrained_member() -> None:
    """Three recordings, the third with angles that belong to another recording: its fold never
    improves on its held-out part. The folds train in lockstep, so it cannot stop the others early,
    and every member of the ensemble is trained to the chosen step. (When each fold stopped on its
    own, this fold's model was kept at step 0, untrained, and averaged into every estimate.)"""
    first, second = _session(1, 12.0), _session(2, 12.0)
    stranger, other = _session(3, 12.0), _session(9, 12.0)
    n = min(len(stranger.joint_time), len(other.joint_time))
    stranger = replace(stranger, joint_position=other.joint_position[:n][::-1].copy(),
                       joint_time=stranger.joint_time[:n])
    tcfg = TrainConfig(max_steps=200, eval_every=25, patience_steps=75, folds=3)
    mcfg = ModelConfig()
    model, cfg = train([first, second, stranger], FeatureConfig(), mcfg, tcfg, progress=False)
    t = cfg["training"]
    assert len({f["steps_run"] for f in t["folds"]}) == 1, t["folds"]  # every fold ran to the same step
    assert t["folds"][2]["val_loss"][1] >= 0.95 * t["folds"][2]["val_loss"][0], t["folds"]  # it never helped
    assert t["best_step"] > 0 and t["budget_steps"] > 0
    corpus = build_corpus([first], FeatureConfig(), mcfg.span, 1)
    xs = Normaliser.from_dict(cfg["normaliser"]).features(corpus.feats)
    import torch

    from emg_rcnn_ros.core.models import build_torch_model

    torch.manual_seed(tcfg.seed)
    untrained = build_torch_model(mcfg, xs.shape[1], xs.shape[2], 2).eval()
    before = _predict(untrained, xs, corpus.all_ends, mcfg.offsets)
    for member in model.members:
        after = _predict(member, xs, corpus.all_ends, mcfg.offsets)
        assert np.abs(after - before).max() > 0.05  # trained, not the initial network


def test_recalibration_keeps_each_joint_on_its_own_lstm() -> None:
    """Fine-tuning a bundle's networks must keep every joint's LSTM and head apart, as training
    did: the weights between one joint's units and another's stay exactly zero. A deep copy of the
    bundle's model as the starting point dropped the masks that keep them so."""
    from pathlib import Path

    from emg_rcnn_ros.core.bundle import Bundle

    mcfg, fcfg = ModelConfig(), FeatureConfig()
    model, cfg = train([_session(1, 15.0)], fcfg, mcfg, TrainConfig(max_steps=10, folds=2), progress=False)
    base = Bundle(Path("base"), cfg, fcfg, replace(mcfg, members=len(model.members)),
                  Normaliser.from_dict(cfg["normaliser"]), model)
    from emg_rcnn_ros.core.recalibrate import RecalConfig

    tuned, out = train([_session(2, 15.0)], fcfg, mcfg, TrainConfig(), init_from=base, progress=False,
                       recal=RecalConfig(layers="all"))
    assert out["training"]["steps_run"] > 0
    for member, before in zip(tuned.members, model.members):
        assert not torch.equal(member.lstm.weight_hh_l0, before.lstm.weight_hh_l0)  # fine-tuned
        hh, head, h = member.lstm.weight_hh_l0.detach(), member.head.weight.detach(), member.lstm.hidden_size // 2
        assert hh.reshape(4, 2 * h, 2 * h)[:, :h, h:].abs().max() == 0  # joint 1's units never feed joint 0's
        assert hh.reshape(4, 2 * h, 2 * h)[:, h:, :h].abs().max() == 0
        assert head[0, h:].abs().max() == 0 and head[1, :h].abs().max() == 0


def _rig(subject: int, trials: int, seed: int, **effects) -> list[Session]:
    from emg_rcnn_ros.core.sim import SessionEffects, simulate_rig_trials

    eff = SessionEffects(**effects) if effects else None
    return [Session(d["emg"].astype(float), float(d["emg_rate"]), d["joint_position"], d["joint_time"],
                    list(map(str, d["joint_names"])), list(map(str, d["channel_names"])), source=f"rig{seed}-{i}")
            for i, d in enumerate(simulate_rig_trials(subject, trials, seed=seed, effects=eff))]


def test_on_short_clipped_drifting_trials_the_default_regime_generalises_to_a_new_trial() -> None:
    """The real-rig failure modes (short trials, 12-bit clipping, 1-degree angles, an off-nominal
    clock, gain drift, a changing movement mix): trained on three trials with the defaults, the
    estimate of a fourth trial tracks the joint that moved in training, and the ensemble of fold
    models is what is kept."""
    from pathlib import Path

    from emg_rcnn_ros.core.bundle import Bundle
    from emg_rcnn_ros.core.checks import inspect_session, mains_of
    from emg_rcnn_ros.core.evaluate import evaluate_sessions

    trials = _rig(subject=2, trials=4, seed=4)
    mains = mains_of([inspect_session(t) for t in trials[:3]])
    assert mains == 60.0  # the rig's hum is found, as `emg-rcnn train` finds it
    mcfg, fcfg = ModelConfig(), FeatureConfig(mains_hz=mains)
    model, cfg = train(trials[:3], fcfg, mcfg, TrainConfig(max_steps=600), progress=False)
    assert cfg["model"]["members"] == 4  # three fold models and the final one
    assert cfg["validation"]["mean"]["cc"] > 0.5, cfg["validation"]["mean"]  # each held-out trial
    bundle = Bundle(Path("rig"), cfg, fcfg, from_dict(ModelConfig, cfg["model"]),
                    Normaliser.from_dict(cfg["normaliser"]), model)
    result, *_ = evaluate_sessions(bundle, trials[3:])
    # The elbow, which moves through much of its range in every trial, is tracked in the new one. The
    # wrist moves little in the first trials (the movement mix) and is not: a limit of three short
    # trials that the README states, not something this test hides.
    assert result["cc"][0] > 0.7 and result["r2"][0] > 0.4, result
