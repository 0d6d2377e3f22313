"""Recalibration of a person's model to a new session from one short calibration trial.

Electrodes placed again move each channel's gain (an additive offset in log power), shift what each
electrode picks up, and change the skin. The defaults, chosen on the shared real session pairs over
three seeds (docs/recalibration.md), act on one trial in three steps:
1. Re-centring (no angles needed): the feature means, per channel and band, moved to the trial's.
2. Fine-tuning of the first convolution and its batch norm only (`layers` first), where a new
   electrode placement acts; the rest of the network, which maps muscle activity to this person's
   angles, stays. A fixed, data-scaled budget (`passes` over the trial's windows), no held-out block
   of the one trial deciding anything: blocks of a 10 s trial are too short to judge.
3. Rehearsal: half of each batch from the recordings the model was trained on, where they are still
   on disk, so that what the model knew is not overwritten by one trial's movements.
Re-estimating batch-norm statistics (AdaBN), fine-tuning every layer, and a pull toward the source
weights (L2-SP) are options; none did better on the real pairs."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bundle import Bundle
from .config import TrainConfig
from .dataset import Normaliser
from .errors import ConfigError
from .models import SvrModel, build_torch_model, members_of
from .sessions import Session, SessionError
from .train import BLOCK, _batches, _forward, build_corpus, electrode_shift


@dataclass(frozen=True)
class RecalConfig:
    """How a model is adapted to a new session (defaults: docs/recalibration.md)."""

    recentre: str = "band"  # none | channel (one offset per channel) | band (per channel and band)
    adapt_bn: bool = False  # re-estimate batch-norm statistics on the new frames
    passes: float = 10.0  # fine-tuning budget: passes over the trial's windows (0 = none)
    min_steps: int = 40
    max_steps: int = 400
    lr: float = 3e-4
    l2sp: float = 0.0  # weight of the mean squared distance to the source weights (L2-SP)
    batch_size: int = 64
    rehearsal: float = 0.5  # share of each batch drawn from the source session's windows (0 = none)
    layers: str = "first"  # all | input (the convolutions and their batch norms) | first (the first of them)

    def validate(self) -> None:
        if self.recentre not in ("none", "channel", "band"):
            raise ConfigError(f"recentre must be none, channel or band, got '{self.recentre}'")
        if self.passes < 0 or self.lr <= 0 or self.l2sp < 0 or self.batch_size < 1:
            raise ConfigError("passes and l2sp must be >= 0, lr > 0, batch_size >= 1")
        if self.layers not in ("all", "input", "first"):
            raise ConfigError(f"layers must be all, input or first, got '{self.layers}'")
        if not 0 <= self.rehearsal < 1:
            raise ConfigError(f"rehearsal must be in [0, 1), got {self.rehearsal}")
        if not 0 <= self.min_steps <= self.max_steps:
            raise ConfigError(f"need 0 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")


def source_sessions(bundle: Bundle) -> list[Session]:
    """The recordings a bundle was trained on, where they are still on disk (for rehearsal); the
    others are skipped. A recalibrated bundle names its own source's."""
    from .sessions import load_session

    t = bundle.config.get("training", {})
    out = []
    for p in t.get("source_training") or t.get("sessions") or []:
        try:
            out.append(load_session(p))
        except (OSError, ValueError):  # moved, deleted or unreadable: rehearse the rest
            continue
    return out


def recentred(old: Normaliser, feats: np.ndarray, how: str) -> Normaliser:
    """The source normaliser with its feature means moved to the new frames' level."""
    if how == "none":
        return old
    delta = feats.mean(axis=0) - old.feat_mean  # [C, bands]
    if how == "channel":
        delta = np.broadcast_to(delta.mean(axis=1, keepdims=True), delta.shape)
    return Normaliser((old.feat_mean + delta).astype(np.float32), old.feat_std, old.target_mean, old.target_std)


def _bn_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: torch.nn.Module, xs: np.ndarray, frames: np.ndarray, offs: tuple[int, ...]) -> None:
    """Batch-norm running statistics re-estimated over the given frames (cumulative average), in place.
    The RCNN's convolutions read one frame at a time, so every frame counts once; the CNN reads windows."""
    bns = _bn_layers(model)
    if not bns:
        return
    saved = [(b.momentum, b.training) for b in bns]
    model.eval()
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    with torch.no_grad():
        if getattr(model, "embeds_frames", False):
            for i in range(0, len(frames), 512):
                model.embed(torch.from_numpy(xs[frames[i : i + 512]]))
        else:
            ends = frames[frames >= -min(offs)]
            for i in range(0, len(ends), 256):
                _forward(model, xs, ends[i : i + 256], offs, torch.device("cpu"))
    for b, (mom, _) in zip(bns, saved):
        b.momentum = mom
        b.eval()


def fine_tune(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray, ends: np.ndarray, steps: int,
              rcfg: RecalConfig, tcfg: TrainConfig, offs: tuple[int, ...], source_ends: np.ndarray | None = None
              ) -> list[float]:
    """`steps` Adam steps on the windows ending at `ends` (with `rcfg.l2sp` > 0 pulled toward the
    starting weights); batch-norm statistics stay as they are (a batch of one trial's windows is not the session).
    With `source_ends` (windows of the source session in the same arrays), `rcfg.rehearsal` of each
    batch comes from them, so that what the model knew is rehearsed while it adapts."""
    trained = tuned_parameters(model, rcfg.layers)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    source = [p.detach().clone() for p in trained]
    opt = torch.optim.Adam(trained, lr=rcfg.lr)
    rng = np.random.default_rng(tcfg.seed)
    inv_std = None
    model.train()
    for b in _bn_layers(model):
        b.eval()
    queue: list[np.ndarray] = []
    src_queue: list[np.ndarray] = []
    n_src = int(round(rcfg.batch_size * rcfg.rehearsal)) if source_ends is not None and len(source_ends) else 0
    losses = []
    n_weights = sum(p.numel() for p in source)
    for _ in range(steps):
        if not queue:
            queue = _batches(len(ends), rcfg.batch_size - n_src, rng, BLOCK)
        batch = ends[queue.pop(0)]
        if n_src:
            if not src_queue:
                src_queue = _batches(len(source_ends), n_src, rng, BLOCK)
            batch = np.concatenate([batch, source_ends[src_queue.pop(0)]])
        group = np.arange(len(batch)) // BLOCK
        shift = None
        if tcfg.gain_jitter > 0:
            if inv_std is None:
                inv_std = (1.0 / np.maximum(xs.std(axis=0), 1e-6)).astype(np.float32)[None]
            shift = electrode_shift(rng, group[-1] + 1, *xs.shape[1:], tcfg.gain_jitter, 0.0) * inv_std
        out = _forward(model, xs, batch, offs, torch.device("cpu"), shift, group)
        loss = torch.nn.functional.mse_loss(out, torch.from_numpy(ys[batch]))
        pull = sum(((p - s) ** 2).sum() for p, s in zip(trained, source)) / n_weights
        opt.zero_grad()
        (loss + rcfg.l2sp * pull).backward()
        opt.step()
        losses.append(float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def tuned_parameters(model: torch.nn.Module, layers: str) -> list[torch.nn.Parameter]:
    """The parameters fine-tuning moves: all of them, or only the convolutional front end that
    reads the electrodes (`input`: every convolution and batch norm; `first`: the first of each)
    of every member, where a new electrode placement acts; the recurrence and the head, which map
    muscle activity to angles for this person, stay."""
    if layers == "all":
        return list(model.parameters())
    out: list[torch.nn.Parameter] = []
    for member in (model.members if hasattr(model, "members") else [model]):
        convs = [m for m in member.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
        if layers == "first":
            convs = convs[:2] if len(convs) > 1 and isinstance(convs[1], torch.nn.BatchNorm2d) else convs[:1]
        out.extend(p for m in convs for p in m.parameters())
    return out


def recalibrate(bundle: Bundle, sessions: list[Session], rcfg: RecalConfig, tcfg: TrainConfig,
                source: list[Session] | None = None) -> tuple[torch.nn.Module | SvrModel, dict[str, Any]]:
    """The bundle's model adapted to `sessions` (a calibration trial of the new session); returns the
    model and the bundle configuration to save, with what was done under training.recalibration.
    `source`: recordings the model was trained on, for rehearsal (rcfg.rehearsal)."""
    rcfg.validate()
    if isinstance(bundle.model, SvrModel):
        raise SessionError("recalibration needs a network (rcnn or cnn); the SVR baseline has no fine-tuning")
    mcfg = bundle.model_cfg
    corpus = build_corpus(sessions, bundle.features, mcfg.span, 1, bundle.joint_names)
    bundle.check_stream(corpus.rate, corpus.feats.shape[1])
    torch.manual_seed(tcfg.seed)
    old = bundle.normaliser
    norm = recentred(old, corpus.feats, rcfg.recentre)
    xs, ys = norm.features(corpus.feats), norm.targets(corpus.targets)
    model = build_torch_model(dataclasses.replace(mcfg, members=len(members_of(bundle.model))), xs.shape[1],
                              xs.shape[2], ys.shape[1])
    model.load_state_dict(copy.deepcopy(bundle.model.state_dict()))
    ends = corpus.all_ends
    frames = np.unique(ends[:, None] + np.asarray(mcfg.offsets)[None, :])
    if rcfg.adapt_bn:
        adapt_batchnorm(model, xs, frames, mcfg.offsets)
    steps = 0
    if rcfg.passes > 0:
        steps = int(np.clip(round(rcfg.passes * len(ends) / rcfg.batch_size), rcfg.min_steps, rcfg.max_steps))
    source_ends = None
    if source and rcfg.rehearsal > 0 and steps:  # the source windows, normalised as the model was trained
        src = build_corpus(source, bundle.features, mcfg.span, 1, bundle.joint_names)
        xs = np.concatenate([xs, old.features(src.feats)])
        ys = np.concatenate([ys, old.targets(src.targets)])
        source_ends = src.all_ends + len(corpus.feats)
    losses = fine_tune(model, xs, ys, ends, steps, rcfg, tcfg, mcfg.offsets, source_ends) if steps else []
    shift = norm.feat_mean - old.feat_mean
    info = {"recalibration": {**dataclasses.asdict(rcfg), "steps": steps, "windows": int(len(ends)),
                              "seconds": round(corpus.seconds, 2),
                              "rehearsed_windows": int(len(source_ends)) if source_ends is not None else 0,
                              "mean_shift_per_channel": np.round(shift.mean(axis=1), 3).tolist(),
                              "first_loss": round(losses[0], 4) if losses else None,
                              "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None}}
    src_t = bundle.config.get("training", {})
    config = copy.deepcopy(bundle.config)
    config.pop("validation", None)  # measured on the source session: not this model's
    for k in ("weights", "weights_sha256", "format"):
        config.pop(k, None)
    config["normaliser"] = norm.to_dict()
    config["training"] = {"sessions": [s.source for s in sessions], "seconds": corpus.seconds,
                          "windows": int(len(ends)), "init_from": str(bundle.path),
                          "source_training": src_t.get("source_training") or src_t.get("sessions"),
                          "train_config": dataclasses.asdict(tcfg), "steps_run": steps, **info}
    return model.eval(), config
