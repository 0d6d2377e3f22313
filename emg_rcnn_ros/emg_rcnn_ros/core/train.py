"""Training: sessions -> frames -> held-out folds choose the number of optimiser steps -> one fit on
every window (Adam, or SVR) -> the fold models averaged with it -> bundle config with the held-out
metrics. Recalibration (init_from) chooses its feature statistics and its fine-tuning on folds too."""

from __future__ import annotations

import copy
import dataclasses
import time
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


def build_corpus(sessions: list[Session], fcfg: FeatureConfig, history: int, folds: int,
                 joint_names: list[str] | None = None) -> Corpus:
    sessions = align_sessions(sessions, joint_names)
    sets: list[FrameSet] = []
    origin: list[int] = []
    for i, s in enumerate(sessions):
        check_long_enough(s, fcfg, history)
        got = session_frames(s, fcfg)
        sets.extend(got)
        origin.extend([i] * len(got))
    lay = FrameLayout.build(fcfg, sessions[0].emg_rate)
    offsets = np.cumsum([0] + [len(fs.feats) for fs in sets])
    local = [window_ends(len(fs.feats), history) for fs in sets]
    every = np.concatenate([e + o for e, o in zip(local, offsets)])
    if len(every) == 0:
        raise SessionError("recordings too short: no complete training window")
    recording = np.concatenate([np.full(len(e), i) for e, i in zip(local, origin)])
    gap = history + int(np.ceil(lay.window_n / lay.hop_n))
    split = split_folds(every, fold_ids(recording, folds), gap) if folds > 1 and len(every) >= 8 * gap else []
    return Corpus(np.concatenate([fs.feats for fs in sets]), np.concatenate([fs.targets for fs in sets]),
                  every, [(t, v) for t, v in split if len(t) and len(v)], sessions[0].emg_rate,
                  sessions[0].channel_names, sessions[0].joint_names, float(sum(s.duration for s in sessions)), lay)


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
    if not getattr(model, "embeds_frames", False):
        x = xs[idx] if shift is None else xs[idx] + shift[group][:, None]
        return model(torch.from_numpy(x).to(dev))
    keys, inverse = np.unique(group[:, None] * len(xs) + idx, return_inverse=True)
    frames = xs[keys % len(xs)]
    if shift is not None:
        frames = frames + shift[keys // len(xs)]
    emb = model.embed(torch.from_numpy(frames).to(dev))
    return model.recur(emb[torch.from_numpy(inverse.reshape(idx.shape)).to(dev)])


def _fit_torch(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray, fit_ends: np.ndarray,
               val_ends: np.ndarray | None, steps: int, norm: Normaliser, mcfg: ModelConfig, tcfg: TrainConfig,
               progress: bool, lr: float) -> tuple[torch.nn.Module, dict]:
    """Adam for up to `steps` optimiser steps on windows ending at `fit_ends`. With `val_ends`,
    the validation loss is read at the start and every `eval_every` steps, training stops `patience_steps` after its
    best, and the best state is kept; without, the last state is. Steps, not epochs: a short
    recording has few batches per epoch, so epochs would make the budget depend on its length."""
    dev = torch.device(tcfg.device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=tcfg.weight_decay)
    rng = np.random.default_rng(tcfg.seed)
    T = mcfg.history
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
        model.train()
        return total / (len(ends) * ys.shape[1])

    best, best_step, best_state, history = np.inf, 0, copy.deepcopy(model.state_dict()), []
    step, run, seen = 0, 0.0, 0
    if val_ends is not None:  # step 0 is a candidate: fine-tuning that never helps is not kept
        best = loss_on(val_ends)
        history.append({"step": 0, "val_loss": best})
    bar = tqdm(total=steps, desc=f"train {mcfg.arch}", unit="step", disable=not progress, leave=False)
    model.train()
    while step < steps:
        for b in _batches(len(fit_ends), tcfg.batch_size, rng, BLOCK):
            ends = fit_ends[b]
            group = np.arange(len(ends)) // BLOCK
            shift = None
            if tcfg.gain_jitter > 0:
                shift = 2 * rng.uniform(lo, hi, (group[-1] + 1, xs.shape[1], 1)).astype(np.float32) * inv_std
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(_forward(model, xs, ends, T, dev, shift, group),
                                                torch.from_numpy(ys[ends]).to(dev))
            loss.backward()
            opt.step()
            step += 1
            run += float(loss.detach()) * len(ends)
            seen += len(ends)
            bar.update(1)
            if step % tcfg.eval_every == 0 or step == steps:
                entry = {"step": step, "train_loss": run / seen}
                run, seen = 0.0, 0
                if val_ends is not None:
                    entry["val_loss"] = loss_on(val_ends)
                    if entry["val_loss"] < best - 1e-4:
                        best, best_step, best_state = entry["val_loss"], step, copy.deepcopy(model.state_dict())
                history.append(entry)
                bar.set_postfix({k: f"{v:.3f}" for k, v in entry.items() if k != "step"})
            if step >= steps or (val_ends is not None and step - best_step >= tcfg.patience_steps):
                break
        if val_ends is not None and step - best_step >= tcfg.patience_steps:
            break
    bar.close()
    if val_ends is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    info = {"steps_run": step, "history": history}
    if val_ends is not None:
        info.update(best_step=best_step, best_val_loss=float(best))
    return model, info


def _predict(model: torch.nn.Module, xs: np.ndarray, ends: np.ndarray, T: int) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([_forward(model, xs, ends[b], T, torch.device("cpu")).numpy()
                               for b in _batches(len(ends), 2048, None)])


def _recalibration_normaliser(init_from: Bundle, corpus: Corpus, new: Normaliser, T: int, refit: bool
                              ) -> tuple[Normaliser, dict[str, Any]]:
    """The feature statistics to recalibrate with: the model's own, or re-fitted on the new data.
    Electrode shift and skin/gain changes move each channel's log power, so re-fitted statistics
    may suit the new session better (the joint scale stays the model's). Fitted on the whole
    recording they always look better on it, since they remove its own offset; so each fold fits
    them on its training part and judges them on its held-out part, against the model's own. The
    model's own statistics are what it was trained with: re-fitted ones replace them only when they
    win on every held-out block (a majority of three blocks of a few seconds is weak evidence)."""
    old = init_from.normaliser
    if not refit or isinstance(init_from.model, SvrModel) or not corpus.folds:
        return old, {}
    ratios = []
    for tr, va in corpus.folds:
        frames = np.unique(np.concatenate([tr - k for k in range(T)]))
        part = Normaliser.fit(corpus.feats[frames], corpus.targets[frames])
        y = old.targets(corpus.targets[va])
        loss = [float(np.mean((_predict(init_from.model, n.features(corpus.feats), va, T) - y) ** 2))
                for n in (old, Normaliser(part.feat_mean, part.feat_std, old.target_mean, old.target_std))]
        ratios.append(loss[1] / max(loss[0], 1e-12))
    better = max(ratios) < 1.0
    info = {"normaliser": "refitted" if better else "kept", "held_out_loss_ratio": [round(r, 4) for r in ratios]}
    return (Normaliser(new.feat_mean, new.feat_std, old.target_mean, old.target_std) if better else old), info


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
    corpus = build_corpus(sessions, fcfg, mcfg.history, tcfg.folds, joint_names)
    C, B, J = corpus.feats.shape[1], corpus.feats.shape[2], corpus.targets.shape[1]
    every = corpus.all_ends
    norm = Normaliser.fit(*(a[np.unique(np.concatenate([every - k for k in range(mcfg.history)]))]
                            for a in (corpus.feats, corpus.targets)))
    recal: dict[str, Any] = {}
    if init_from is not None:
        init_from.check_stream(corpus.rate, C)
        norm, recal = _recalibration_normaliser(init_from, corpus, norm, mcfg.history, tcfg.refit_features)
    xs, ys = norm.features(corpus.feats), norm.targets(corpus.targets)
    val_true, val_pred = [], []
    if mcfg.arch == "svr":
        def svr_on(ends: np.ndarray) -> SvrModel:
            if len(ends) > mcfg.svr_max_samples:
                ends = ends[np.linspace(0, len(ends) - 1, mcfg.svr_max_samples).astype(int)]
            return SvrModel(mcfg, J).fit(gather_windows(xs, ends, mcfg.history), ys[ends])

        for tr, va in corpus.folds:
            val_pred.append(predict_normalised(svr_on(tr), gather_windows(xs, va, mcfg.history)))
            val_true.append(va)
        model: torch.nn.Module | SvrModel = svr_on(every)
        fit_info: dict[str, Any] = {"samples": int(min(len(every), mcfg.svr_max_samples))}
    else:
        def fresh() -> torch.nn.Module:
            torch.manual_seed(tcfg.seed)
            if init_from is not None:
                return copy.deepcopy(init_from.model)
            return build_torch_model(dataclasses.replace(mcfg, members=1), C, B, J)

        lr = tcfg.finetune_lr if init_from is not None else tcfg.lr
        curves, fold_models, fit_info = [], [], {"folds": []}
        for tr, va in corpus.folds:
            fold_model, info = _fit_torch(fresh(), xs, ys, tr, va, tcfg.max_steps, norm, mcfg, tcfg, progress, lr)
            curves.append(info["history"])
            fit_info["folds"].append({k: info[k] for k in ("steps_run", "best_step", "best_val_loss")})
            val_pred.append(_predict(fold_model, xs, va, mcfg.history))
            val_true.append(va)
            fold_models.append(fold_model)
        steps = tcfg.max_steps
        if curves:
            # The budget where the held-out loss, relative to where each fold started and taken as the
            # median over folds, is lowest: one trial unlike the others (a posture never trained on)
            # must not decide it alone. Scaled to all of the data (the same number of passes over
            # it), then one fit on everything. A new model is never kept untrained.
            n = min(len(c) for c in curves)
            loss = np.array([[h["val_loss"] for h in c[:n]] for c in curves])
            mean_curve = np.median(loss / loss[:, :1], axis=0)
            first = 0 if init_from is not None else min(1, n - 1)
            best = first + int(np.argmin(mean_curve[first:]))
            if init_from is not None and not np.all(loss[:, best] < loss[:, 0]):
                best = 0  # fine-tuning must help on every held-out block, or the model stays as it is
            steps = round(curves[0][best]["step"] * len(every) / np.mean([len(t) for t, _ in corpus.folds]))
            fit_info.update(budget_steps=steps, mean_val_curve=[round(float(v), 4) for v in mean_curve])
        if steps > 0:
            model, info = _fit_torch(fresh(), xs, ys, every, None, steps, norm, mcfg, tcfg, progress, lr)
            fit_info["history"] = info["history"]
        else:  # recalibration where no fine-tuning beat the model as it was: keep it, re-normalised
            model = fresh().eval()
        fit_info["steps_run"] = steps
        if tcfg.ensemble and init_from is None and fold_models:
            model = Ensemble([*fold_models, model]).eval()
            mcfg = dataclasses.replace(mcfg, members=len(model.members))
    config = {
        "arch": mcfg.arch, "model": to_dict(mcfg), "features": to_dict(fcfg),
        "sample_rate": corpus.rate, "channels": C, "channel_names": corpus.channel_names, "bands": B,
        "band_edges": corpus.layout.band_edges.tolist(), "joint_names": corpus.joint_names,
        "normaliser": norm.to_dict(), "versions": versions(),
        "training": {"sessions": [s.source for s in sessions], "seconds": corpus.seconds,
                     "windows": int(len(every)), "train_config": to_dict(tcfg),
                     "init_from": str(init_from.path) if init_from else None, "wall_seconds": None, **fit_info,
                     **({"recalibration": recal} if recal else {})},
    }
    if val_true:  # every held-out window, estimated by the model of the fold that did not see it
        ends = np.concatenate(val_true)
        config["validation"] = metrics(corpus.targets[ends], norm.untarget(np.concatenate(val_pred)),
                                       corpus.joint_names)
    config["training"]["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return model, config
