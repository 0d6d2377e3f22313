"""Training: sessions -> frames -> time-block split -> normalisation (training part only) ->
model (Adam + early stopping, or SVR) -> bundle config with validation metrics."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .bundle import Bundle, versions
from .config import FeatureConfig, ModelConfig, TrainConfig, to_dict
from .dataset import FrameSet, Normaliser, check_long_enough, gather_windows, session_frames, split_blocks
from .evaluate import metrics
from .frames import FrameLayout
from .models import SvrModel, build_torch_model, predict_normalised
from .sessions import Session, SessionError, align_sessions

BLOCK = 16  # consecutive windows drawn together; they share one gain augmentation


@dataclass
class Corpus:
    """Frames of several sessions that share rate, channels and joints, concatenated so that a
    window is a slice; `train_ends`/`val_ends` index windows that never cross a recording."""

    feats: np.ndarray  # [K, C, bands]
    targets: np.ndarray  # [K, J]
    train_ends: np.ndarray
    val_ends: np.ndarray
    rate: float
    channel_names: list[str]
    joint_names: list[str]
    seconds: float


def build_corpus(sessions: list[Session], fcfg: FeatureConfig, history: int, val_fraction: float,
                 joint_names: list[str] | None = None) -> Corpus:
    sessions = align_sessions(sessions, joint_names)
    sets: list[FrameSet] = []
    for s in sessions:
        check_long_enough(s, fcfg, history)
        sets.extend(session_frames(s, fcfg))
    lay = FrameLayout.build(fcfg, sessions[0].emg_rate)
    guard = int(np.ceil(lay.window_n / lay.hop_n))
    train_l, val_l = split_blocks(sets, history, val_fraction, guard)
    offsets = np.cumsum([0] + [len(fs.feats) for fs in sets])
    train = np.concatenate([e + o for e, o in zip(train_l, offsets)])
    val = np.concatenate([e + o for e, o in zip(val_l, offsets)])
    if len(train) == 0:
        raise SessionError("recordings too short: no complete training window")
    return Corpus(np.concatenate([fs.feats for fs in sets]), np.concatenate([fs.targets for fs in sets]),
                  train, val, sessions[0].emg_rate, sessions[0].channel_names, sessions[0].joint_names,
                  float(sum(s.duration for s in sessions)))


def _batches(n: int, size: int, rng: np.random.Generator | None, block: int = 1) -> list[np.ndarray]:
    """Index batches; with rng, shuffled in blocks of `block` consecutive windows (neighbouring
    windows share frames, so a block costs few frame embeddings)."""
    starts = np.arange(0, n, block)
    if rng is not None:
        starts = rng.permutation(starts)
    order = np.concatenate([np.arange(s, min(s + block, n)) for s in starts]) if n else np.zeros(0, int)
    return [order[i : i + size] for i in range(0, n, size)]


def _forward(model: torch.nn.Module, xs: np.ndarray, ends: np.ndarray, T: int, dev: torch.device,
             shift: np.ndarray | None = None, group: np.ndarray | None = None) -> torch.Tensor:
    """Model output for windows ending at `ends`. `shift` [groups, C, bands] is a log-power (gain)
    augmentation shared by the windows of a group. For the RCNN each distinct (group, frame) is
    embedded once and reused by every window that contains it: ~10x less convolution."""
    idx = ends[:, None] + np.arange(-T + 1, 1)[None, :]  # [B, T] frame indices
    group = np.zeros(len(ends), np.int64) if group is None else group
    if not hasattr(model, "embed"):
        x = xs[idx] if shift is None else xs[idx] + shift[group][:, None]
        return model(torch.from_numpy(x).to(dev))
    keys, inverse = np.unique(group[:, None] * len(xs) + idx, return_inverse=True)
    frames = xs[keys % len(xs)]
    if shift is not None:
        frames = frames + shift[keys // len(xs)]
    emb = model.embed(torch.from_numpy(frames).to(dev))
    return model.recur(emb[torch.from_numpy(inverse.reshape(idx.shape)).to(dev)])


def _fit_torch(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray, corpus: Corpus, norm: Normaliser,
               mcfg: ModelConfig, tcfg: TrainConfig, progress: bool) -> tuple[torch.nn.Module, dict]:
    dev = torch.device(tcfg.device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    rng = np.random.default_rng(tcfg.seed)
    T = mcfg.history
    val = corpus.val_ends if len(corpus.val_ends) else corpus.train_ends  # tiny data: no held-out block
    # Gain augmentation: an electrode's amplitude change by g adds 2 ln g to its log power.
    lo, hi = np.log(1 - tcfg.gain_jitter), np.log(1 + tcfg.gain_jitter)
    inv_std = (1.0 / norm.feat_std).astype(np.float32)[None]  # [1, C, bands]

    def loss_on(ends: np.ndarray) -> float:
        model.eval()
        total = 0.0
        with torch.no_grad():
            for b in _batches(len(ends), 1024, None):
                y = torch.from_numpy(ys[ends[b]]).to(dev)
                total += float(torch.nn.functional.mse_loss(_forward(model, xs, ends[b], T, dev), y, reduction="sum"))
        return total / (len(ends) * ys.shape[1])

    best, best_state, bad, history = np.inf, copy.deepcopy(model.state_dict()), 0, []
    bar = tqdm(range(tcfg.epochs), desc=f"train {mcfg.arch}", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        run = 0.0
        for b in _batches(len(corpus.train_ends), tcfg.batch_size, rng, BLOCK):
            ends = corpus.train_ends[b]
            group = np.arange(len(ends)) // BLOCK
            shift = None
            if tcfg.gain_jitter > 0:
                shift = 2 * rng.uniform(lo, hi, (group[-1] + 1, xs.shape[1], 1)).astype(np.float32) * inv_std
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(_forward(model, xs, ends, T, dev, shift, group),
                                                torch.from_numpy(ys[ends]).to(dev))
            loss.backward()
            opt.step()
            run += float(loss.detach()) * len(ends)
        vloss = loss_on(val)
        history.append({"epoch": epoch + 1, "train_loss": run / len(corpus.train_ends), "val_loss": vloss})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{vloss:.3f}")
        if vloss < best - 1e-4:
            best, best_state, bad = vloss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= tcfg.patience:
                break
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return model, {"epochs_run": len(history), "best_val_loss": float(best), "history": history}


def train(sessions: list[Session], fcfg: FeatureConfig, mcfg: ModelConfig, tcfg: TrainConfig,
          init_from: Bundle | None = None, progress: bool = True) -> tuple[torch.nn.Module | SvrModel, dict[str, Any]]:
    """Train a model; returns it with the bundle configuration (not yet written)."""
    t0 = time.perf_counter()
    torch.manual_seed(tcfg.seed)
    if tcfg.max_threads > 0:
        torch.set_num_threads(tcfg.max_threads)
    if tcfg.device == "cuda" and not torch.cuda.is_available():
        raise SessionError("--device cuda asked for, but no CUDA device is available")
    joint_names = None
    if init_from is not None:  # fine-tuning keeps the model's features, shapes and joints
        fcfg, mcfg, joint_names = init_from.features, init_from.model_cfg, init_from.joint_names
    corpus = build_corpus(sessions, fcfg, mcfg.history, tcfg.val_fraction, joint_names)
    C, B, J = corpus.feats.shape[1], corpus.feats.shape[2], corpus.targets.shape[1]
    train_frames = np.unique(np.concatenate([corpus.train_ends - k for k in range(mcfg.history)]))
    norm = Normaliser.fit(corpus.feats[train_frames], corpus.targets[train_frames])
    if init_from is not None:
        init_from.check_stream(corpus.rate, C)
        old = init_from.normaliser
        # Recalibration: electrode shift and skin/gain changes move each channel's log power, so the
        # feature statistics are re-fitted on the new session; the joint scale stays the model's.
        norm = (Normaliser(norm.feat_mean, norm.feat_std, old.target_mean, old.target_std)
                if tcfg.refit_features else old)
    xs, ys = norm.features(corpus.feats), norm.targets(corpus.targets)
    if mcfg.arch == "svr":
        ends = corpus.train_ends
        if len(ends) > mcfg.svr_max_samples:
            ends = ends[np.linspace(0, len(ends) - 1, mcfg.svr_max_samples).astype(int)]
        model: torch.nn.Module | SvrModel = SvrModel(mcfg, J).fit(gather_windows(xs, ends, mcfg.history), ys[ends])
        fit_info: dict[str, Any] = {"samples": int(len(ends))}
    else:
        model = copy.deepcopy(init_from.model) if init_from is not None else build_torch_model(mcfg, C, B, J)
        model, fit_info = _fit_torch(model, xs, ys, corpus, norm, mcfg, tcfg, progress)
    lay = FrameLayout.build(fcfg, corpus.rate)
    config = {
        "arch": mcfg.arch, "model": to_dict(mcfg), "features": to_dict(fcfg),
        "sample_rate": corpus.rate, "channels": C, "channel_names": corpus.channel_names, "bands": B,
        "band_edges": lay.band_edges.tolist(), "joint_names": corpus.joint_names,
        "normaliser": norm.to_dict(), "versions": versions(),
        "training": {"sessions": [s.source for s in sessions], "seconds": corpus.seconds,
                     "train_windows": int(len(corpus.train_ends)), "val_windows": int(len(corpus.val_ends)),
                     "train_config": to_dict(tcfg), "init_from": str(init_from.path) if init_from else None,
                     "wall_seconds": None, **fit_info},
    }
    if len(corpus.val_ends):
        if isinstance(model, SvrModel):
            pred_n = predict_normalised(model, gather_windows(xs, corpus.val_ends, mcfg.history))
        else:
            cpu = torch.device("cpu")
            with torch.inference_mode():
                pred_n = np.concatenate([_forward(model, xs, corpus.val_ends[b], mcfg.history, cpu).numpy()
                                         for b in _batches(len(corpus.val_ends), 2048, None)])
        pred = norm.untarget(pred_n)
        config["validation"] = metrics(corpus.targets[corpus.val_ends], pred, corpus.joint_names)
    config["training"]["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return model, config
