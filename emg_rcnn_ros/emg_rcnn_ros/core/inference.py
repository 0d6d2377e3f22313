"""Batch-1 forward passes in numpy, compiled from a trained torch module, for the live estimator.

Why: one live estimate is about a hundred tiny operations (a 3x3 conv stack on one frame, ten LSTM
steps). At that size PyTorch's per-operation dispatch dominates, and it grows when a node wakes
every 20 ms with cold caches: StreamingPredictor.push through torch measured p50 0.48 ms in a loop
but 2.0 ms at 50 Hz on the 2-core reference machine. The same arithmetic as plain matrix products
in numpy costs a fraction of that (bench/speed.py). Weights come from the torch module, which stays
the one definition of the model; tests hold the two equal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit
from torch import nn

from .models import SoftClip

Layer = Callable[[np.ndarray], np.ndarray]


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


class _Conv2d:
    """Zero-padded, strided 2-D convolution of one [C_in, H, W] input, as a gather of every
    receptive field (indices precomputed) and one matrix product."""

    def __init__(self, conv: nn.Conv2d, shape: tuple[int, ...]) -> None:
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TypeError(f"unsupported convolution {conv}")
        cin, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        self.h, self.w, self.ph, self.pw = h, w, ph, pw
        self.buf = np.zeros((cin, h + 2 * ph, w + 2 * pw), np.float32)
        hp, wp = self.buf.shape[1:]
        oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        c, ky, kx = np.meshgrid(np.arange(cin), np.arange(kh), np.arange(kw), indexing="ij")
        oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        # rows in torch's weight order (c_in, ky, kx); columns are output positions, row-major
        idx = c.reshape(-1, 1) * hp * wp + (ky.reshape(-1, 1) + sh * oy.reshape(1, -1)) * wp \
            + kx.reshape(-1, 1) + sw * ox.reshape(1, -1)
        self.idx = idx
        self.weight = _np(conv.weight).reshape(conv.out_channels, -1)
        self.bias = (_np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels, np.float32))[:, None]
        self.out_shape = (conv.out_channels, oh, ow)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.buf[:, self.ph : self.ph + self.h, self.pw : self.pw + self.w] = x
        out = self.weight @ self.buf.ravel().take(self.idx)
        out += self.bias
        return out.reshape(self.out_shape)


class _Linear:
    def __init__(self, lin: nn.Linear) -> None:
        self.weight = _np(lin.weight)
        self.bias = _np(lin.bias) if lin.bias is not None else np.zeros(lin.out_features, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.weight @ x + self.bias


class _BatchNorm2d:
    """Eval-mode BatchNorm2d: a per-channel affine map with the running statistics."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        scale = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
        self.scale = scale[:, None, None]
        self.shift = (_np(bn.bias) - _np(bn.running_mean) * scale)[:, None, None]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.shift


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _ravel(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1)


def compile_sequential(module: nn.Module, shape: tuple[int, ...]) -> tuple[list[Layer], tuple[int, ...]]:
    """Layers of an eval-mode Sequential of SoftClip / Conv2d / BatchNorm2d / ReLU / Flatten / Dropout / Linear (nested
    Sequentials included) for one unbatched input of `shape`; returns them and the output shape.
    Anything else raises TypeError rather than computing something different."""
    layers: list[Layer] = []
    for m in module.children() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(m, nn.Sequential):
            sub, shape = compile_sequential(m, shape)
            layers += sub
        elif isinstance(m, nn.Conv2d):
            conv = _Conv2d(m, shape)
            layers.append(conv)
            shape = conv.out_shape
        elif isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.affine:
            layers.append(_BatchNorm2d(m))
        elif isinstance(m, SoftClip):
            limit = m.limit
            layers.append(lambda x, c=limit: c * np.tanh(x / c))
        elif isinstance(m, nn.ReLU):
            layers.append(_relu)
        elif isinstance(m, nn.Flatten):
            layers.append(_ravel)
            shape = (int(np.prod(shape)),)
        elif isinstance(m, nn.Dropout):
            continue  # identity in eval mode
        elif isinstance(m, nn.Linear):
            layers.append(_Linear(m))
            shape = (m.out_features,)
        else:
            raise TypeError(f"no numpy forward for {type(m).__name__}")
    return layers, shape


def run_layers(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


class LSTMLast:
    """An eval-mode, batch-first nn.LSTM from zero state over one sequence [T, E]; returns the last
    hidden state of the top layer [H]. Gate rows are reordered from torch's (i, f, g, o) to
    (i, f, o, g) so one sigmoid covers the three gates."""

    def __init__(self, lstm: nn.LSTM) -> None:
        if lstm.bidirectional or lstm.proj_size or not lstm.batch_first:
            raise TypeError(f"unsupported LSTM {lstm}")
        H = self.hidden = lstm.hidden_size
        order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]
        self.layers = []
        for k in range(lstm.num_layers):
            w_ih, w_hh = _np(getattr(lstm, f"weight_ih_l{k}")), _np(getattr(lstm, f"weight_hh_l{k}"))
            b = _np(getattr(lstm, f"bias_ih_l{k}")) + _np(getattr(lstm, f"bias_hh_l{k}")) if lstm.bias \
                else np.zeros(4 * H, np.float32)
            self.layers.append((np.ascontiguousarray(w_ih[order].T), np.ascontiguousarray(w_hh[order]), b[order]))

    def __call__(self, seq: np.ndarray) -> np.ndarray:
        H = self.hidden
        for k, (w_ih_t, w_hh, b) in enumerate(self.layers):
            gates_in = seq @ w_ih_t + b  # [T, 4H]: all input projections at once
            h = np.zeros(H, np.float32)
            c = np.zeros(H, np.float32)
            out = np.empty((len(seq), H), np.float32) if k + 1 < len(self.layers) else None
            for t in range(len(seq)):
                g = gates_in[t] + w_hh @ h
                s = expit(g[: 3 * H])
                c = s[H : 2 * H] * c + s[:H] * np.tanh(g[3 * H :])
                h = s[2 * H :] * np.tanh(c)
                if out is not None:
                    out[t] = h
            if out is not None:
                seq = out
        return h
