"""The RCNN's per-joint recurrence: each joint's estimate comes from its own LSTM, during and after training."""

from __future__ import annotations

import pytest
import torch

from emg_rcnn_ros.core.config import ModelConfig
from emg_rcnn_ros.core.models import build_torch_model

C, B, T = 4, 24, 10


def _trained(cfg: ModelConfig, joints: int) -> torch.nn.Module:
    """A few Adam steps (with weight decay, as in training) on random windows and targets."""
    torch.manual_seed(0)
    model = build_torch_model(cfg, C, B, joints)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(32, T, C, B), torch.randn(32, joints)
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model.eval()


def _scramble_units(model: torch.nn.Module, units: slice) -> None:
    """Overwrite every weight that feeds or reads the given hidden units of the LSTM."""
    lstm, h = model.lstm, model.lstm.hidden_size
    rows = torch.cat([torch.arange(h)[units] + g * h for g in range(4)])
    with torch.no_grad():
        for k in range(lstm.num_layers):
            for name in (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}"):
                getattr(lstm, name)[rows] = torch.randn_like(getattr(lstm, name)[rows])


@pytest.mark.parametrize("layers", [1, 2])
def test_each_joint_has_its_own_lstm_after_training(layers: int) -> None:
    model = _trained(ModelConfig(lstm_layers=layers), joints=2)
    assert model.lstm.hidden_size == 64
    x = torch.randn(8, T, C, B)
    with torch.no_grad():
        before = model(x)
        _scramble_units(model, slice(32, 64))  # joint 1's LSTM
        after = model(x)
    torch.testing.assert_close(after[:, 0], before[:, 0])  # joint 0 reads nothing of it
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3  # and joint 1 does: the check has teeth


def test_a_shared_lstm_couples_the_joints() -> None:
    model = _trained(ModelConfig(shared_lstm=True), joints=2)
    x = torch.randn(8, T, C, B)
    with torch.no_grad():
        before = model(x)
        _scramble_units(model, slice(32, 64))
        after = model(x)
    assert (after[:, 0] - before[:, 0]).abs().max() > 1e-3


def test_units_are_split_evenly_among_the_joints() -> None:
    assert build_torch_model(ModelConfig(lstm_hidden=64), C, B, 3).lstm.hidden_size == 63  # 21 per joint
    assert build_torch_model(ModelConfig(lstm_hidden=2), C, B, 3).lstm.hidden_size == 3  # at least 1 each
