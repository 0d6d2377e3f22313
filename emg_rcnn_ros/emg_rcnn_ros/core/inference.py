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


def _stack(tensors) -> np.ndarray:
    return np.stack([_np(t) for t in tensors])


class _Conv2d:
    """Zero-padded, strided 2-D convolution of one [C_in, H, W] input per member, as a gather of
    every receptive field (indices precomputed) and one batched matrix product."""

    def __init__(self, convs: list[nn.Conv2d], shape: tuple[int, ...]) -> None:
        conv = convs[0]
        for c in convs:
            if c.groups != 1 or c.dilation != (1, 1) or c.padding_mode != "zeros" or isinstance(c.padding, str) \
                    or (c.kernel_size, c.stride, c.padding) != (conv.kernel_size, conv.stride, conv.padding):
                raise TypeError(f"unsupported convolution {c}")
        cin, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        self.h, self.w, self.ph, self.pw = h, w, ph, pw
        self.buf = np.zeros((len(convs), cin, h + 2 * ph, w + 2 * pw), np.float32)
        hp, wp = self.buf.shape[2:]
        oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        c, ky, kx = np.meshgrid(np.arange(cin), np.arange(kh), np.arange(kw), indexing="ij")
        oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        # rows in torch's weight order (c_in, ky, kx); columns are output positions, row-major
        self.idx = c.reshape(-1, 1) * hp * wp + (ky.reshape(-1, 1) + sh * oy.reshape(1, -1)) * wp \
            + kx.reshape(-1, 1) + sw * ox.reshape(1, -1)
        self.weight = _stack(k.weight for k in convs).reshape(len(convs), conv.out_channels, -1)
        self.bias = np.stack([_np(k.bias) if k.bias is not None else np.zeros(k.out_channels, np.float32)
                              for k in convs])[:, :, None]
        self.out_shape = (len(convs), conv.out_channels, oh, ow)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.buf[:, :, self.ph : self.ph + self.h, self.pw : self.pw + self.w] = x
        out = self.weight @ np.take(self.buf.reshape(len(self.buf), -1), self.idx, axis=1)
        out += self.bias
        return out.reshape(self.out_shape)


class _Linear:
    def __init__(self, lins: list[nn.Linear]) -> None:
        self.weight = _stack(k.weight for k in lins)
        self.bias = np.stack([_np(k.bias) if k.bias is not None else np.zeros(k.out_features, np.float32)
                              for k in lins])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (self.weight @ x[:, :, None])[:, :, 0] + self.bias


class _BatchNorm2d:
    """Eval-mode BatchNorm2d: a per-channel affine map with the running statistics."""

    def __init__(self, bns: list[nn.BatchNorm2d]) -> None:
        scale = _stack(b.weight for b in bns) / np.sqrt(_stack(b.running_var for b in bns) + bns[0].eps)
        self.scale = scale[:, :, None, None]
        self.shift = (_stack(b.bias for b in bns) - _stack(b.running_mean for b in bns) * scale)[:, :, None, None]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.shift


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def compile_sequential(modules: list[nn.Module], shape: tuple[int, ...]) -> tuple[list[Layer], tuple[int, ...]]:
    """Layers of eval-mode Sequentials of SoftClip / Conv2d / BatchNorm2d / ReLU / Flatten / Dropout / Linear
    (nested Sequentials included), one per member of an ensemble, all alike but for their weights. The
    layers take [members, *shape] (member k's input in row k) and compute every member at once: one
    batched product per layer instead of one per member, which at a live estimate's size is most of
    the cost. Returns them and the output shape of one member. Anything else raises TypeError rather
    than computing something different."""
    layers: list[Layer] = []
    kids = [list(m.children()) if isinstance(m, nn.Sequential) else [m] for m in modules]
    if len({len(k) for k in kids}) != 1:
        raise TypeError("ensemble members differ in their layers")
    for ms in zip(*kids):
        m = ms[0]
        if any(type(k) is not type(m) for k in ms):
            raise TypeError(f"ensemble members differ in their layers: {', '.join(type(k).__name__ for k in ms)}")
        if isinstance(m, nn.Sequential):
            sub, shape = compile_sequential(list(ms), shape)
            layers += sub
        elif isinstance(m, nn.Conv2d):
            conv = _Conv2d(list(ms), shape)
            layers.append(conv)
            shape = conv.out_shape[1:]
        elif isinstance(m, nn.BatchNorm2d) and all(k.track_running_stats and k.affine for k in ms):
            layers.append(_BatchNorm2d(list(ms)))
        elif isinstance(m, SoftClip) and len({k.limit for k in ms}) == 1:
            limit = m.limit
            layers.append(lambda x, c=limit: c * np.tanh(x / c))
        elif isinstance(m, nn.ReLU):
            layers.append(_relu)
        elif isinstance(m, nn.Flatten):
            layers.append(_flatten)
            shape = (int(np.prod(shape)),)
        elif isinstance(m, nn.Dropout):
            continue  # identity in eval mode
        elif isinstance(m, nn.Linear):
            layers.append(_Linear(list(ms)))
            shape = (m.out_features,)
        else:
            raise TypeError(f"no numpy forward for {type(m).__name__}")
    return layers, shape


def run_layers(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


class LSTMLast:
    """Eval-mode, batch-first nn.LSTMs (one per ensemble member, alike but for their weights) from
    zero state over one sequence each [members, T, E]; returns each one's last hidden state of the
    top layer [members, H], all members in one batched product per step. Gate rows are reordered
    from torch's (i, f, g, o) to (i, f, o, g) so one sigmoid covers the three gates."""

    def __init__(self, lstms: list[nn.LSTM]) -> None:
        lstm = lstms[0]
        for k in lstms:
            if k.bidirectional or k.proj_size or not k.batch_first or \
                    (k.hidden_size, k.num_layers, k.bias) != (lstm.hidden_size, lstm.num_layers, lstm.bias):
                raise TypeError(f"unsupported LSTM {k}")
        H = self.hidden = lstm.hidden_size
        order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]
        self.layers = []
        for i in range(lstm.num_layers):
            def of_all(name: str, i: int = i) -> np.ndarray:
                return _stack(getattr(k, f"{name}_l{i}") for k in lstms)

            w_ih, w_hh = of_all("weight_ih"), of_all("weight_hh")
            b = of_all("bias_ih") + of_all("bias_hh") if lstm.bias else np.zeros((len(lstms), 4 * H), np.float32)
            self.layers.append((np.ascontiguousarray(w_ih[:, order].transpose(0, 2, 1)),
                                np.ascontiguousarray(w_hh[:, order]), b[:, None, order]))

    def __call__(self, seq: np.ndarray) -> np.ndarray:
        H = self.hidden
        M, T = seq.shape[:2]
        for k, (w_ih_t, w_hh, b) in enumerate(self.layers):
            gates_in = seq @ w_ih_t + b  # [M, T, 4H]: all input projections at once
            h = np.zeros((M, H, 1), np.float32)
            c = np.zeros((M, H, 1), np.float32)
            out = np.empty((M, T, H), np.float32) if k + 1 < len(self.layers) else None
            for t in range(T):
                g = gates_in[:, t, :, None] + w_hh @ h  # [M, 4H, 1]
                s = expit(g[:, : 3 * H])
                c = s[:, H : 2 * H] * c + s[:, :H] * np.tanh(g[:, 3 * H :])
                h = s[:, 2 * H :] * np.tanh(c)
                if out is not None:
                    out[:, t] = h[:, :, 0]
            if out is not None:
                seq = out
        return h[:, :, 0]
