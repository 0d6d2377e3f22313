"""Training: sessions -> frames -> held-out folds choose the number of optimiser steps -> one fit on
every window (Adam, or SVR) -> the fold models averaged with it -> bundle config with the held-out
metrics. Recalibration of an existing model (init_from) is core/recalibrate.py."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .bundle import Bundle, versions
from .config import FeatureConfig, ModelConfig, TrainConfig, to_dict
from .dataset import (
    FrameSet,
    Normaliser,
    check_long_enough,
    fold_ids,
    gather_windows,
    session_frames,
    split_folds,
    window_ends,
)
from .evaluate import metrics
from .frames import FrameLayout
from .models import Ensemble, SvrModel, build_torch_model, predict_normalised
from .sessions import Session, SessionError, align_sessions

BLOCK = 16  # consecutive windows drawn together; they share one gain augmentation


@dataclass
class Corpus:
    """Frames of several sessions that share rate, channels and joints, concatenated so that a
    window is a slice; window ends (`all_ends`, `folds`) never cross a recording."""

    feats: np.ndarray  # [K, C, bands]
    targets: np.ndarray  # [K, J]
    all_ends: np.ndarray  # every window: the final fit uses all of the data
    folds: list[tuple[np.ndarray, np.ndarray]]  # (training, validation) window ends: choosing the budget
    rate: float
    channel_names: list[str]
    joint_names: list[str]
    seconds: float
    layout: FrameLayout
    recordings: int  # sessions given (a recording split by gaps is still one)


def build_corpus(sessions: list[Session], fcfg: FeatureConfig, span: int, folds: int,
                 joint_names: list[str] | None = None) -> Corpus:
    sessions = align_sessions(sessions, joint_names)
    sets: list[FrameSet] = []
    origin: list[int] = []
    for i, s in enumerate(sessions):
        check_long_enough(s, fcfg, span)
        got = session_frames(s, fcfg)
        sets.extend(got)
        origin.extend([i] * len(got))
    lay = FrameLayout.build(fcfg, sessions[0].emg_rate)
    offsets = np.cumsum([0] + [len(fs.feats) for fs in sets])
    local = [window_ends(len(fs.feats), span) for fs in sets]
    every = np.concatenate([e + o for e, o in zip(local, offsets)])
    if len(every) == 0:
        raise SessionError("recordings too short: no complete training window")
    recording = np.concatenate([np.full(len(e), i) for e, i in zip(local, origin)])
    gap = span + int(np.ceil(lay.window_n / lay.hop_n))
    split = split_folds(every, fold_ids(recording, folds), gap) if folds > 1 and len(every) >= 8 * gap else []
    return Corpus(np.concatenate([fs.feats for fs in sets]), np.concatenate([fs.targets for fs in sets]),
                  every, [(t, v) for t, v in split if len(t) and len(v)], sessions[0].emg_rate,
                  sessions[0].channel_names, sessions[0].joint_names, float(sum(s.duration for s in sessions)), lay,
                  len(sessions))


def _batches(n: int, size: int, rng: np.random.Generator | None, block: int = 1) -> list[np.ndarray]:
    """Index batches; with rng, shuffled in blocks of `block` consecutive windows (neighbouring
    windows share frames, so a block costs few frame embeddings)."""
    starts = np.arange(0, n, block)
    if rng is not None:
        starts = rng.permutation(starts)
    order = np.concatenate([np.arange(s, min(s + block, n)) for s in starts]) if n else np.zeros(0, int)
    return [order[i : i + size] for i in range(0, n, size)]


def electrode_shift(rng: np.random.Generator, groups: int, channels: int, bands: int, gain_jitter: float,
                    tilt_jitter: float) -> np.ndarray:
    """Log-power offsets [groups, channels, bands] (bands 1 without tilt) that model what a new
    electrode placement, skin or fatigue does to each channel: its amplitude scaled by a gain in
    1 +- gain_jitter (2 ln g on every band), and its spectrum tilted (its log amplitude rising or
    falling by up to tilt_jitter from the lowest band to the highest, unchanged at the centre):
    tissue between muscle and electrode low-passes the signal, and fatigue moves power to lower
    frequencies."""
    shift = rng.uniform(np.log(1 - gain_jitter), np.log(1 + gain_jitter), (groups, channels, 1))
    if tilt_jitter > 0:  # drawn after the gains, and only when asked: a seed's gains stay what they were
        slope = rng.uniform(-tilt_jitter, tilt_jitter, (groups, channels, 1))
        shift = shift + slope * (np.linspace(-0.5, 0.5, bands) if bands > 1 else np.zeros(1))
    return (2 * shift).astype(np.float32)


def _forward(model: torch.nn.Module, xs: np.ndarray, ends: np.ndarray, offs: tuple[int, ...], dev: torch.device,
             shift: np.ndarray | None = None, group: np.ndarray | None = None) -> torch.Tensor:
    """Model output for windows ending at `ends`. `shift` [groups, C, bands] is a log-power (electrode_shift)
    augmentation shared by the windows of a group. For the RCNN each distinct (group, frame) is
    embedded once and reused by every window that contains it: ~10x less convolution."""
    idx = ends[:, None] + np.asarray(offs)[None, :]  # [B, T] frame indices
    group = np.zeros(len(ends), np.int64) if group is None else group
    if not getattr(model, "embeds_frames", False):
        x = xs[idx] if shift is None else xs[idx] + shift[group][:, None]
        return model(torch.from_numpy(x).to(dev))
    keys, inverse = np.unique(group[:, None] * len(xs) + idx, return_inverse=True)
    frames = xs[keys % len(xs)]
    if shift is not None:
        frames = frames + shift[keys // len(xs)]
    emb = model.embed(torch.from_numpy(frames).to(dev))
    return model.recur(emb[torch.from_numpy(inverse.reshape(idx.shape)).to(dev)])


class _Run:
    """One network under Adam on windows ending at `fit_ends`, advanced a few optimiser steps at a
    time, so that the fold models can train in lockstep and be judged together. Steps, not epochs:
    a short recording has few batches per epoch, so epochs would make the budget depend on its length."""

    def __init__(self, model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray, fit_ends: np.ndarray,
                 norm: Normaliser, mcfg: ModelConfig, tcfg: TrainConfig, lr: float) -> None:
        self.dev = torch.device(tcfg.device)
        self.model = model.to(self.dev).train()
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=tcfg.weight_decay)
        self.xs, self.ys, self.fit_ends, self.tcfg, self.offs = xs, ys, fit_ends, tcfg, mcfg.offsets
        self.rng = np.random.default_rng(tcfg.seed)
        self.inv_std = (1.0 / norm.feat_std).astype(np.float32)[None]  # [1, C, bands]
        self.step = 0
        self._queue: list[np.ndarray] = []

    def advance(self, n: int) -> float:
        """n optimiser steps; returns their mean training loss."""
        total, seen = 0.0, 0
        for _ in range(n):
            if not self._queue:
                self._queue = _batches(len(self.fit_ends), self.tcfg.batch_size, self.rng, BLOCK)
            ends = self.fit_ends[self._queue.pop(0)]
            group = np.arange(len(ends)) // BLOCK
            shift = None
            if self.tcfg.gain_jitter > 0 or self.tcfg.tilt_jitter > 0:  # in normalised units
                shift = electrode_shift(self.rng, group[-1] + 1, *self.xs.shape[1:], self.tcfg.gain_jitter,
                                        self.tcfg.tilt_jitter) * self.inv_std
            self.opt.zero_grad()
            loss = torch.nn.functional.mse_loss(_forward(self.model, self.xs, ends, self.offs, self.dev, shift, group),
                                                torch.from_numpy(self.ys[ends]).to(self.dev))
            loss.backward()
            self.opt.step()
            self.step += 1
            total += float(loss.detach()) * len(ends)
            seen += len(ends)
        return total / max(seen, 1)

    def loss_on(self, ends: np.ndarray) -> float:
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for b in _batches(len(ends), 1024, None):
                y = torch.from_numpy(self.ys[ends[b]]).to(self.dev)
                out = _forward(self.model, self.xs, ends[b], self.offs, self.dev)
                total += float(torch.nn.functional.mse_loss(out, y, reduction="sum"))
        self.model.train()
        return total / (len(ends) * self.ys.shape[1])

    def done(self) -> torch.nn.Module:
        return self.model.to("cpu").eval()


def _fit_torch(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray, ends: np.ndarray, steps: int,
               norm: Normaliser, mcfg: ModelConfig, tcfg: TrainConfig, progress: bool, lr: float
               ) -> tuple[torch.nn.Module, list[dict]]:
    """Train for exactly `steps` optimiser steps; returns the model and its training-loss history."""
    run, history = _Run(model, xs, ys, ends, norm, mcfg, tcfg, lr), []
    bar = tqdm(total=steps, desc=f"train {mcfg.arch}", unit="step", disable=not progress, leave=False)
    while run.step < steps:
        n = min(tcfg.eval_every, steps - run.step)
        history.append({"step": run.step + n, "train_loss": run.advance(n)})
        bar.update(n)
    bar.close()
    return run.done(), history


def _fit_folds(make: Callable[[], torch.nn.Module], xs: np.ndarray, ys: np.ndarray,
               folds: list[tuple[np.ndarray, np.ndarray]], norm: Normaliser, mcfg: ModelConfig,
               tcfg: TrainConfig, progress: bool, lr: float) -> tuple[list[torch.nn.Module], int, dict]:
    """The fold models trained in lockstep, each read on its held-out part every `eval_every` steps.
    The budget is the step where the median over folds of the held-out loss, relative to each
    fold's start, is lowest; training stops `patience_steps` after it. All folds run to the same
    step, so one fold that never improves cannot cut the others' curves short, and every fold
    model is returned at the chosen step (never untrained)."""
    runs = [_Run(make(), xs, ys, tr, norm, mcfg, tcfg, lr) for tr, _ in folds]
    vals = [va for _, va in folds]
    loss = [[r.loss_on(v)] for r, v in zip(runs, vals)]
    steps, curve = [0], [1.0]
    start = [copy.deepcopy(r.model.state_dict()) for r in runs]
    best, best_i, states = np.inf, 0, start  # a new model is never kept at step 0
    bar = tqdm(total=tcfg.max_steps, desc=f"folds {mcfg.arch}", unit="step", disable=not progress, leave=False)
    while steps[-1] < tcfg.max_steps and steps[-1] - steps[best_i] < tcfg.patience_steps:
        n = min(tcfg.eval_every, tcfg.max_steps - steps[-1])
        for r, v, hist in zip(runs, vals, loss):
            r.advance(n)
            hist.append(r.loss_on(v))
        steps.append(steps[-1] + n)
        curve.append(float(np.median([h[-1] / max(h[0], 1e-12) for h in loss])))
        bar.update(n)
        if curve[-1] < best - 1e-4:
            best, best_i, states = curve[-1], len(steps) - 1, [copy.deepcopy(r.model.state_dict()) for r in runs]
    bar.close()
    for r, st in zip(runs, states):
        r.model.load_state_dict(st)
    info = {"folds": [{"steps_run": steps[-1], "val_loss": [round(float(v), 4) for v in (h[0], h[best_i])]}
                      for h in loss],
            "best_step": steps[best_i], "mean_val_curve": [round(v, 4) for v in curve]}
    return [r.done() for r in runs], steps[best_i], info


def _predict(model: torch.nn.Module, xs: np.ndarray, ends: np.ndarray, offs: tuple[int, ...]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([_forward(model, xs, ends[b], offs, torch.device("cpu")).numpy()
                               for b in _batches(len(ends), 2048, None)])


def _fit_normaliser(corpus: Corpus, ends: np.ndarray, offs: tuple[int, ...]) -> Normaliser:
    """Statistics of every frame that a window ending at `ends` reads (each frame once)."""
    frames = np.unique(ends[:, None] + np.asarray(offs)[None, :])
    return Normaliser.fit(corpus.feats[frames], corpus.targets[frames])


def train(sessions: list[Session], fcfg: FeatureConfig, mcfg: ModelConfig, tcfg: TrainConfig,
          init_from: Bundle | None = None, progress: bool = True, recal: Any = None
          ) -> tuple[torch.nn.Module | SvrModel, dict[str, Any]]:
    """Train a model; returns it with the bundle configuration (not yet written). With `init_from`,
    recalibrate that model instead (core/recalibrate.py; `recal` a RecalConfig, fcfg and mcfg are the
    bundle's): its source recordings are rehearsed where they are still on disk."""
    t0 = time.perf_counter()
    if init_from is not None:
        from .recalibrate import RecalConfig, recalibrate, source_sessions

        model, config = recalibrate(init_from, sessions, recal or RecalConfig(), tcfg, source_sessions(init_from))
        config["training"]["wall_seconds"] = round(time.perf_counter() - t0, 2)
        return model, config
    torch.manual_seed(tcfg.seed)
    if tcfg.max_threads > 0:
        torch.set_num_threads(tcfg.max_threads)
    if tcfg.device == "cuda" and not torch.cuda.is_available():
        raise SessionError("--device cuda asked for, but no CUDA device is available")
    corpus = build_corpus(sessions, fcfg, mcfg.span, tcfg.folds)
    C, B, J = corpus.feats.shape[1], corpus.feats.shape[2], corpus.targets.shape[1]
    every = corpus.all_ends
    norm = _fit_normaliser(corpus, every, mcfg.offsets)
    xs, ys = norm.features(corpus.feats), norm.targets(corpus.targets)
    val_true, val_pred = [], []
    if mcfg.arch == "svr":
        def svr_on(ends: np.ndarray) -> SvrModel:
            if len(ends) > mcfg.svr_max_samples:
                ends = ends[np.linspace(0, len(ends) - 1, mcfg.svr_max_samples).astype(int)]
            return SvrModel(mcfg, J).fit(gather_windows(xs, ends, mcfg.offsets), ys[ends])

        for tr, va in corpus.folds:
            val_pred.append(predict_normalised(svr_on(tr), gather_windows(xs, va, mcfg.offsets)))
            val_true.append(va)
        model: torch.nn.Module | SvrModel = svr_on(every)
        fit_info: dict[str, Any] = {"samples": int(min(len(every), mcfg.svr_max_samples))}
    else:
        made = 0

        def fresh() -> torch.nn.Module:
            """The k-th network of this training (fold models first, then the final fit) draws its
            initial weights from seed + 1000 k: the averaged networks then differ by initialisation
            as well as by data (deep ensembles), which varies less from seed to seed than networks
            that all start from one draw (real recordings, twelve seeds: standard deviation of the
            within-session mean R2 0.019 against 0.032; docs/realdata_experiments.md)."""
            nonlocal made
            torch.manual_seed(tcfg.seed + 1000 * made)
            made += 1
            return build_torch_model(dataclasses.replace(mcfg, members=1), C, B, J)

        lr = tcfg.lr
        fold_models: list[torch.nn.Module] = []
        fit_info = {}
        steps = tcfg.max_steps
        if corpus.folds:
            fold_models, best, fit_info = _fit_folds(fresh, xs, ys, corpus.folds, norm, mcfg, tcfg, progress, lr)
            for m, (_, va) in zip(fold_models, corpus.folds):
                val_pred.append(_predict(m, xs, va, mcfg.offsets))
                val_true.append(va)
            # Scaled to all of the data (the same number of passes over it), then one fit on everything.
            steps = round(best * len(every) / np.mean([len(t) for t, _ in corpus.folds]))
            fit_info["budget_steps"] = steps
        model, fit_info["history"] = _fit_torch(fresh(), xs, ys, every, steps, norm, mcfg, tcfg, progress, lr)
        fit_info["steps_run"] = steps
        if tcfg.ensemble and fold_models:
            model = Ensemble([*fold_models, model]).eval()
            mcfg = dataclasses.replace(mcfg, members=len(model.members))
    config = {
        "arch": mcfg.arch, "model": to_dict(mcfg), "features": to_dict(fcfg),
        "sample_rate": corpus.rate, "channels": C, "channel_names": corpus.channel_names, "bands": B,
        "band_edges": corpus.layout.band_edges.tolist(), "joint_names": corpus.joint_names,
        "normaliser": norm.to_dict(), "versions": versions(),
        "training": {"sessions": [s.source for s in sessions], "seconds": corpus.seconds,
                     "windows": int(len(every)), "train_config": to_dict(tcfg),
                     "init_from": None, "wall_seconds": None, **fit_info},
    }
    if val_true:  # every held-out window, estimated by the model of the fold that did not see it
        ends = np.concatenate(val_true)
        config["validation"] = metrics(corpus.targets[ends], norm.untarget(np.concatenate(val_pred)),
                                       corpus.joint_names)
    config["training"]["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return model, config
