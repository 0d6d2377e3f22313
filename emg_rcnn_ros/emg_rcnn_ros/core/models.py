"""The three estimators compared in Xia et al. 2018, behind one shape: a window of normalised
frames [batch, history, channels, bands] in, normalised joint angles [batch, joints] out.

- rcnn: a CNN reads each frame (channels x bands as an image), an LSTM per joint reads the sequence
  of frame embeddings, a linear head regresses all joints at once (simultaneous, proportional).
- cnn: the same convolutional stack with the history frames stacked as input planes, no recurrence;
  each joint read from its own part of the embedding.
- svr: scikit-learn RBF SVR per joint on flattened features (last frame and history mean).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import ModelConfig


class SoftClip(nn.Module):
    """c * tanh(x / c): the identity for inputs within a few standard deviations, bounded beyond.
    A displaced electrode or a skin change moves a channel's log power by many training standard
    deviations; bounded, it cannot drive the network far outside what it was trained on."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = float(limit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.limit * torch.tanh(x / self.limit)


def _conv_stack(in_planes: int, cfg: ModelConfig, channels: int, bands: int) -> tuple[nn.Sequential, int]:
    """Two 3x3 conv layers with ReLU, each halving the frequency axis by its stride (channel
    positions are electrode sites, not a translation-invariant axis, so they are kept). Strided
    convolutions instead of max-pooling: the same receptive field at 2.3x less training time here.
    BatchNorm after each convolution keeps the activations' scale in the network's hands."""
    c1, c2 = cfg.conv_channels
    layers: list[nn.Module] = [SoftClip(cfg.input_clip)] if cfg.input_clip > 0 else []
    for cin, cout in ((in_planes, c1), (c1, c2)):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, stride=(1, 2)))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
    stack = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        flat = stack.eval()(torch.zeros(1, in_planes, channels, bands)).shape[1]
    stack.train()
    return stack, flat


def _per_joint(units: int, joints: int) -> int:
    """Units of a layer split evenly among the joints (at least one each)."""
    return max(1, units // joints) * joints


class _KeepsBlocks(nn.Module):
    """A network whose named weights are held to a block structure (one joint's units read by that
    joint alone). The mask is applied to each weight's gradient by a hook; a hook lives on the
    Parameter object, which a copy or an unpickled network replaces, so the masks are installed
    again whenever the network is rebuilt from its state (copy.deepcopy, pickle)."""

    def _keep_blocks(self, name: str, mask: torch.Tensor) -> None:
        """Zero weight `name` outside `mask` and keep it so: its gradient is masked, and Adam (weight
        decay included) moves a weight with zero gradient and zero value nowhere."""
        with torch.no_grad():
            self.get_parameter(name).mul_(mask)
        self._block_masks = {**getattr(self, "_block_masks", {}), name: mask}
        self._hook(name, mask)

    def _hook(self, name: str, mask: torch.Tensor) -> None:
        self.get_parameter(name).register_hook(lambda grad: grad * mask.to(grad.device))

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for name, mask in getattr(self, "_block_masks", {}).items():
            self._hook(name, mask)


def _per_joint_head(head: nn.Linear, joints: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Head [joints, units] reading joint j only from the j-th block of units, initialised as a
    layer of that block's size would be; returns the joint of each unit and the head's mask. Why: a
    state shared by all joints learns how they moved together in training, and people do not repeat
    that mix (a trial that moves both at once after trials that moved one at a time); a state per
    joint cannot carry it."""
    size = head.in_features // joints
    unit = torch.arange(head.in_features) // size
    bound = size ** -0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound)
        head.bias.uniform_(-bound, bound)
    return unit, (torch.arange(joints)[:, None] == unit[None, :]).float()


class RCNN(_KeepsBlocks):
    embeds_frames = True  # training may embed each frame once and reuse it (see embed)

    def __init__(self, cfg: ModelConfig, channels: int, bands: int, joints: int) -> None:
        super().__init__()
        conv, flat = _conv_stack(1, cfg, channels, bands)
        self.frame_cnn = nn.Sequential(conv, nn.Dropout(cfg.dropout), nn.Linear(flat, cfg.embedding), nn.ReLU())
        hidden = cfg.lstm_hidden if cfg.shared_state else _per_joint(cfg.lstm_hidden, joints)
        self.lstm = nn.LSTM(cfg.embedding, hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        self.head = nn.Linear(hidden, joints)
        if not cfg.shared_state:
            self._split_lstm_by_joint(joints)

    def _split_lstm_by_joint(self, joints: int) -> None:
        """One LSTM made into `joints` independent ones, each reading the whole frame embedding and
        feeding only its own joint: block-diagonal recurrent (and deeper layers' input) weights. One
        LSTM of the same total size keeps the bundle format and the live numpy path as they are."""
        unit, head_mask = _per_joint_head(self.head, joints)
        self._keep_blocks("head.weight", head_mask)
        rows = unit.repeat(4)  # gate rows i, f, g, o: each a copy of the hidden units
        bound = (self.lstm.hidden_size // joints) ** -0.5  # PyTorch's LSTM initialisation for the per-joint size
        with torch.no_grad():
            for p in self.lstm.parameters():
                p.uniform_(-bound, bound)
        block = (rows[:, None] == unit[None, :]).float()
        for k in range(self.lstm.num_layers):
            self._keep_blocks(f"lstm.weight_hh_l{k}", block)
            if k > 0:
                self._keep_blocks(f"lstm.weight_ih_l{k}", block)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, C, F] frames -> [N, embedding]. Training embeds each frame once and reuses it in
        every window that contains it (a frame sits in `history` windows)."""
        return self.frame_cnn(frames.unsqueeze(1))

    def recur(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, T, embedding] -> [B, joints]."""
        out, _ = self.lstm(emb)
        return self.head(out[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, f = x.shape
        return self.recur(self.embed(x.reshape(b * t, c, f)).reshape(b, t, -1))


class CNN(_KeepsBlocks):
    def __init__(self, cfg: ModelConfig, channels: int, bands: int, joints: int) -> None:
        super().__init__()
        conv, flat = _conv_stack(cfg.history, cfg, channels, bands)
        units = cfg.embedding if cfg.shared_state else _per_joint(cfg.embedding, joints)
        head = nn.Linear(units, joints)
        mask = None if cfg.shared_state else _per_joint_head(head, joints)[1]  # drawn before the embedding
        self.net = nn.Sequential(conv, nn.Dropout(cfg.dropout), nn.Linear(flat, units), nn.ReLU(), head)
        if mask is not None:  # each joint read from its own part of the embedding, as in the RCNN
            self._keep_blocks(f"net.{len(self.net) - 1}.weight", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Ensemble(nn.Module):
    """The mean estimate of several networks of one architecture. On a few minutes of data one
    network's estimate depends on its seed and on which data chose its budget; the mean of
    several varies less."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def embeds_frames(self) -> bool:
        return all(getattr(m, "embeds_frames", False) for m in self.members)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Every member's frame embeddings side by side (RCNN members)."""
        return torch.cat([m.embed(frames) for m in self.members], dim=-1)

    def recur(self, emb: torch.Tensor) -> torch.Tensor:
        parts = emb.chunk(len(self.members), dim=-1)
        return torch.stack([m.recur(e) for m, e in zip(self.members, parts)]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The networks a model averages: an ensemble's members, or the network itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def build_torch_model(cfg: ModelConfig, channels: int, bands: int, joints: int) -> nn.Module:
    cls = {"rcnn": RCNN, "cnn": CNN}[cfg.arch]
    if cfg.members > 1:
        return Ensemble([cls(cfg, channels, bands, joints) for _ in range(cfg.members)])
    return cls(cfg, channels, bands, joints)


def svr_features(windows: np.ndarray) -> np.ndarray:
    """[N, T, C, F] -> [N, 2*C*F]: the newest frame and the mean over the history."""
    n = len(windows)
    return np.concatenate([windows[:, -1].reshape(n, -1), windows.mean(axis=1).reshape(n, -1)], axis=1)


class SvrModel:
    """One RBF SVR per joint (scikit-learn), on standardised features and targets."""

    def __init__(self, cfg: ModelConfig, joints: int) -> None:
        from sklearn.svm import SVR  # imported here: scikit-learn costs ~2 s to import

        self.regs = [SVR(C=cfg.svr_c, epsilon=cfg.svr_epsilon, gamma="scale") for _ in range(joints)]

    def fit(self, windows: np.ndarray, targets: np.ndarray) -> SvrModel:
        x = svr_features(windows)
        for j, reg in enumerate(self.regs):
            reg.fit(x, targets[:, j])
        return self

    def predict(self, windows: np.ndarray) -> np.ndarray:
        x = svr_features(windows)
        return np.stack([reg.predict(x) for reg in self.regs], axis=1).astype(np.float32)


def predict_normalised(model: nn.Module | SvrModel, x: np.ndarray) -> np.ndarray:
    """Normalised windows [N, T, C, F] -> normalised targets [N, J], for any architecture."""
    if isinstance(model, SvrModel):
        return model.predict(x)
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()
