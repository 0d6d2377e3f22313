"""Speed of the core on this machine.

    python bench/speed.py [--out runs/speed.json] [--device cuda]

- inference of one estimate (batch 1, 10 frames, 8 channels) on one CPU thread, p50/p99, for one
  RCNN, the default ensemble of 4 RCNNs and one CNN:
  the whole window (Bundle.predict, torch) and the live path (StreamingPredictor.push: one new
  frame, numpy), hot and paced at 50 Hz, beside the same streaming step in torch;
- framing throughput (conditioning + Hamming STFT + bands) for 16 channels at 2 kHz, as a multiple
  of real time, offline and streaming in 10 ms chunks;
- training time of the default RCNN on 5 minutes of simulated 8-channel 2 kHz data."""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, percentiles, session_from  # noqa: E402

from emg_rcnn_ros.core.bundle import Bundle, StreamingPredictor  # noqa: E402
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from emg_rcnn_ros.core.dataset import Normaliser  # noqa: E402
from emg_rcnn_ros.core.frames import FeatureExtractor, extract_features  # noqa: E402
from emg_rcnn_ros.core.models import build_torch_model  # noqa: E402
from emg_rcnn_ros.core.sim import SimConfig, simulate_session  # noqa: E402
from emg_rcnn_ros.core.train import train  # noqa: E402


def _timed(step, inputs, warm: int = 50, pause: float = 0.0) -> dict:
    """p50/p99 of step(x) over inputs after `warm` calls; `pause` s of sleep before each call
    models a node woken once per frame (caches cold), 0 a hot loop."""
    times = []
    for i, x in enumerate(inputs):
        if pause:
            time.sleep(pause)
        t = time.perf_counter()
        step(x)
        if i >= warm:
            times.append(time.perf_counter() - t)
    return percentiles(times)


def inference(arch: str, members: int = 1, n: int = 3000, n_paced: int = 300) -> dict:
    """One estimate, batch 1, one thread: the whole window through torch (Bundle.predict), the live
    path (StreamingPredictor.push, numpy) and, for reference, the same streaming step in torch;
    hot and paced at the 50 Hz frame rate. members > 1: an ensemble, as a trained bundle is (the
    fold models and the final one)."""
    torch.set_num_threads(1)
    mcfg, fcfg, C, B, J = ModelConfig(arch=arch, members=members), FeatureConfig(), 8, 24, 2
    model = build_torch_model(mcfg, C, B, J).eval()
    norm = Normaliser(np.zeros((C, B), np.float32), np.ones((C, B), np.float32), np.zeros(J, np.float32),
                      np.ones(J, np.float32))
    b = Bundle(Path("-"), {"bands": B, "channels": C}, fcfg, mcfg, norm, model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 10, C, B)).astype(np.float32)
    frames = rng.normal(size=(n + 50, C, B)).astype(np.float32)
    history: collections.deque = collections.deque(maxlen=mcfg.span)

    @torch.inference_mode()
    def torch_push(f: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(b.normaliser.features(f)[None])
        if arch == "rcnn":
            history.append(model.embed(t))
            return model.recur(torch.cat(tuple(history)[:: mcfg.history_stride])[None]).numpy() \
                if len(history) == history.maxlen else None
        history.append(t)
        return model(torch.cat(tuple(history)[:: mcfg.history_stride])[None]).numpy() \
            if len(history) == history.maxlen else None

    sp = StreamingPredictor(b)
    paced = frames[: n_paced + 50]
    return {"window_predict_torch": _timed(lambda _: b.predict(x), range(n + 50)),
            "streaming_push": _timed(sp.push, frames), "streaming_push_at_50hz": _timed(sp.push, paced, pause=0.02),
            "torch_streaming_reference": _timed(torch_push, frames),
            "torch_streaming_reference_at_50hz": _timed(torch_push, paced, pause=0.02)}


def framing(seconds: float = 60.0) -> dict:
    rate, C = 2000.0, 16
    x = simulate_session(SimConfig(rate=rate, channels=C, seed=3), seconds)["emg"].astype(np.float64)
    cfg = FeatureConfig()
    extract_features(x[:4000], rate, cfg)  # warm
    t = time.perf_counter()
    extract_features(x, rate, cfg)
    offline = time.perf_counter() - t
    ext = FeatureExtractor(cfg, rate, C)
    t = time.perf_counter()
    for i in range(0, len(x), 20):
        ext.process(x[i : i + 20])
    streaming = time.perf_counter() - t
    return {"channels": C, "rate_hz": rate, "seconds_of_emg": seconds,
            "offline_x_realtime": round(seconds / offline, 1),
            "streaming_10ms_chunks_x_realtime": round(seconds / streaming, 1)}


def training(device: str, minutes: float = 5.0) -> dict:
    s = session_from(simulate_session(SimConfig(rate=2000.0, channels=8, seed=11), minutes * 60), "speed")
    t = time.perf_counter()
    _, cfg = train([s], FeatureConfig(), ModelConfig(), TrainConfig(device=device), progress=False)
    wall = time.perf_counter() - t
    return {"device": device, "minutes_of_emg": minutes, "wall_s": round(wall, 1),
            "steps_run": cfg["training"]["steps_run"], "val_mean_cc": round(cfg["validation"]["mean"]["cc"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-training", action="store_true")
    a = p.parse_args()
    threadpool_limits(1)  # as in the nodes
    res = {"machine": machine(), "threads_inference": 1,
           "inference_rcnn": inference("rcnn"), "inference_rcnn_4_members": inference("rcnn", members=4),
           "inference_cnn": inference("cnn"), "framing": framing()}
    if not a.skip_training:
        torch.set_num_threads(torch.get_num_threads() if a.device == "cuda" else 2)
        res["training"] = training(a.device)
    emit(res, a.out)


if __name__ == "__main__":
    main()
