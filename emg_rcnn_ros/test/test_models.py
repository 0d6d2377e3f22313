"""Each joint's estimate comes from its own units (the RCNN's LSTM per joint, the CNN's part of the
embedding), during and after training."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from emg_rcnn_ros.core.config import ModelConfig
from emg_rcnn_ros.core.models import build_torch_model

C, B, T = 4, 24, 10


COPIES = {"built": lambda m: m, "deep-copied": copy.deepcopy, "pickled": lambda m: pickle.loads(pickle.dumps(m))}


def _trained(cfg: ModelConfig, joints: int, copied: str = "built") -> torch.nn.Module:
    """A few Adam steps (with weight decay, as in training) on random windows and targets, given to
    the network as built, or to a copy of it."""
    torch.manual_seed(0)
    model = COPIES[copied](build_torch_model(cfg, C, B, joints))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(32, T, C, B), torch.randn(32, joints)
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model.eval()


def _scramble_units(model: torch.nn.Module, units: slice) -> None:
    """Overwrite every weight that feeds the given units: the LSTM's (rcnn) or the embedding's (cnn)."""
    with torch.no_grad():
        if hasattr(model, "lstm"):
            lstm, h = model.lstm, model.lstm.hidden_size
            rows = torch.cat([torch.arange(h)[units] + g * h for g in range(4)])
            for k in range(lstm.num_layers):
                for name in (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}"):
                    getattr(lstm, name)[rows] = torch.randn_like(getattr(lstm, name)[rows])
        else:
            embedding = model.net[-3]
            embedding.weight[units] = torch.randn_like(embedding.weight[units])
            embedding.bias[units] = torch.randn_like(embedding.bias[units])


def _change_when_joint_1_units_scrambled(cfg: ModelConfig, copied: str = "built") -> torch.Tensor:
    model = _trained(cfg, joints=2, copied=copied)
    x = torch.randn(8, T, C, B)
    with torch.no_grad():
        before = model(x)
        _scramble_units(model, slice(32, 64))  # the second half: joint 1's
        return (model(x) - before).abs().amax(dim=0)


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(lstm_layers=2), ModelConfig(arch="cnn")],
                         ids=["rcnn", "rcnn-2-layers", "cnn"])
@pytest.mark.parametrize("copied", list(COPIES))
def test_each_joint_has_its_own_units_after_training(cfg: ModelConfig, copied: str) -> None:
    """Also when a copy of the network is trained: the masks are hooks on the weights, which a copy
    replaces."""
    change = _change_when_joint_1_units_scrambled(cfg, copied)
    assert change[0] == 0  # joint 0 reads nothing of them
    assert change[1] > 1e-3  # and joint 1 does: the check has teeth


@pytest.mark.parametrize("arch", ["rcnn", "cnn"])
def test_a_shared_state_couples_the_joints(arch: str) -> None:
    assert _change_when_joint_1_units_scrambled(ModelConfig(arch=arch, shared_state=True))[0] > 1e-3


def test_units_are_split_evenly_among_the_joints() -> None:
    assert build_torch_model(ModelConfig(lstm_hidden=64), C, B, 3).lstm.hidden_size == 63  # 21 per joint
    assert build_torch_model(ModelConfig(lstm_hidden=2), C, B, 3).lstm.hidden_size == 3  # at least 1 each
    assert build_torch_model(ModelConfig(arch="cnn", embedding=64), C, B, 3).net[-1].in_features == 63
