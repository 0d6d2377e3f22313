"""Model bundles: round trip, atomic replacement, and refusal of corrupt or mismatched bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emg_rcnn_ros.core.bundle import BundleError, load_bundle, save_bundle
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
from emg_rcnn_ros.core.sessions import load_session
from emg_rcnn_ros.core.train import train


@pytest.fixture(scope="module")
def trained(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    model, cfg = train([load_session(sim_dir / "b.npz")], FeatureConfig(), ModelConfig(),
                       TrainConfig(max_steps=8, eval_every=4, folds=2), progress=False)
    path = save_bundle(tmp_path_factory.mktemp("bundle") / "model", cfg, model)
    x = np.random.default_rng(0).normal(-20, 1, (3, 10, 6, 24)).astype(np.float32)
    return path, x


def test_round_trip_gives_identical_estimates(trained: tuple[Path, np.ndarray]) -> None:
    path, x = trained
    a, b = load_bundle(path), load_bundle(path)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    cfg = json.loads((path / "config.json").read_text())
    for key in ("features", "sample_rate", "channel_names", "joint_names", "normaliser", "versions", "training",
                "validation", "band_edges"):
        assert key in cfg
    assert cfg["sample_rate"] == 1000.0 and cfg["channels"] == 6


def test_stream_mismatch_is_refused_with_the_reason(trained: tuple[Path, np.ndarray]) -> None:
    b = load_bundle(trained[0])
    b.check_stream(1000.0, 6)
    with pytest.raises(BundleError, match="expects 6 EMG channels, the stream has 8"):
        b.check_stream(1000.0, 8)
    with pytest.raises(BundleError, match="not supported"):
        b.check_stream(20000.0, 6)
    with pytest.raises(BundleError, match="gives bands"):
        b.check_stream(500.0, 6)  # Nyquist cuts the band the model was trained on


def test_corrupt_bundles_are_refused(trained: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained[0], bad)
    w = bad / "weights.pt"
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(bad)
    (bad / "config.json").unlink()
    with pytest.raises(BundleError, match="config.json missing"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="directory missing"):
        load_bundle(tmp_path / "none")


def test_bundles_from_before_the_history_stride_read_consecutive_frames_with_a_shared_state(
        trained: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    import shutil

    assert load_bundle(trained[0]).model_cfg.history_stride == ModelConfig().history_stride
    old = tmp_path / "old"
    shutil.copytree(trained[0], old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["model"]["history_stride"], cfg["model"]["shared_state"]  # as written before the options existed
    (old / "config.json").write_text(json.dumps(cfg))
    b = load_bundle(old)
    assert b.model_cfg.history_stride == 1 and b.model_cfg.span == b.history
    assert b.model_cfg.shared_state and not ModelConfig().shared_state


def test_save_replaces_atomically(trained: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    b = load_bundle(trained[0])
    target = tmp_path / "m"
    save_bundle(target, b.config, b.model)
    before = (target / "config.json").read_text()
    save_bundle(target, {**b.config, "note": "second"}, b.model)
    assert (target / "config.json").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or backup left
    # A failure while writing leaves the old bundle untouched.
    with pytest.raises(TypeError):
        save_bundle(target, {**b.config, "bad": object()}, b.model)
    assert json.loads((target / "config.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
