"""The live estimator's numpy forward pass equals the torch model it is compiled from, for every
architecture, and refuses layers it cannot compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emg_rcnn_ros.core.bundle import Bundle, StreamingPredictor
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig
from emg_rcnn_ros.core.dataset import Normaliser
from emg_rcnn_ros.core.inference import compile_sequential
from emg_rcnn_ros.core.models import SvrModel, build_torch_model

C, B, J, T = 6, 24, 2, 10


def _bundle(model_cfg: ModelConfig) -> Bundle:
    rng = np.random.default_rng(1)
    norm = Normaliser(rng.normal(-20, 1, (C, B)).astype(np.float32), rng.uniform(0.5, 2, (C, B)).astype(np.float32),
                      np.array([0.3, -0.2], np.float32), np.array([0.5, 0.8], np.float32))
    if model_cfg.arch == "svr":
        model = SvrModel(model_cfg, J).fit(rng.normal(0, 1, (60, T, C, B)).astype(np.float32),
                                           rng.normal(0, 1, (60, J)).astype(np.float32))
    else:
        torch.manual_seed(0)
        model = build_torch_model(model_cfg, C, B, J)
        with torch.no_grad():  # weights far from their initialisation: every ReLU and gate is exercised
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
            for m in model.modules():  # BatchNorm's running statistics are not the identity either
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        model.eval()
    config = {"channels": C, "bands": B, "sample_rate": 1000.0, "joint_names": ["a", "b"]}
    return Bundle(Path("unused"), config, FeatureConfig(), model_cfg, norm, model)


@pytest.mark.parametrize("model_cfg", [ModelConfig(arch="rcnn"), ModelConfig(arch="rcnn", shared_state=True),
                                       ModelConfig(arch="rcnn", lstm_layers=2),
                                       ModelConfig(arch="rcnn", members=3), ModelConfig(arch="cnn"),
                                       ModelConfig(arch="cnn", members=2),
                                       ModelConfig(arch="rcnn", batch_norm=False, input_clip=0.0),
                                       ModelConfig(arch="rcnn", history_stride=1),
                                       ModelConfig(arch="cnn", history_stride=3),
                                       ModelConfig(arch="svr")],
                         ids=["rcnn", "rcnn-shared-state", "rcnn-2-layers", "rcnn-ensemble", "cnn", "cnn-ensemble",
                              "rcnn-plain", "rcnn-consecutive", "cnn-stride-3", "svr"])
def test_streaming_equals_the_torch_model_on_each_window(model_cfg: ModelConfig) -> None:
    bundle = _bundle(model_cfg)
    frames = np.random.default_rng(2).normal(-20, 2, (50, C, B)).astype(np.float32)
    sp = StreamingPredictor(bundle)
    got = [sp.push(f) for f in frames]
    n, s = model_cfg.span, model_cfg.history_stride
    assert n == (T - 1) * s + 1
    assert all(g is None for g in got[: n - 1])
    # each window: every s-th frame of the last n, ending with the newest (T frames)
    want = bundle.predict(np.stack([frames[i - n + 1 : i + 1 : s] for i in range(n - 1, len(frames))]))
    # float32 rounding differs between the two, so compare at the scale of the outputs
    np.testing.assert_allclose(np.stack(got[n - 1 :]), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert np.ptp(want, axis=0).min() > 1e-3  # the windows give different answers: the check has teeth
    sp.reset()
    assert sp.push(frames[0]) is None


def test_unknown_layers_are_refused_not_approximated() -> None:
    with pytest.raises(TypeError, match="MaxPool2d"):
        compile_sequential([nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2))], (1, C, B))
    with pytest.raises(TypeError, match="unsupported convolution"):
        compile_sequential([nn.Conv2d(1, 2, 3, dilation=2)], (1, C, B))
    with pytest.raises(TypeError, match="members differ"):  # computed together, members must be alike
        compile_sequential([nn.Sequential(nn.Flatten(), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Tanh())], (1, C, B))
    with pytest.raises(TypeError, match="unsupported convolution"):
        compile_sequential([nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1, stride=2)], (1, C, B))
