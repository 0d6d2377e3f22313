"""Recalibration variants on the real recordings' session pairs (../shared/realdata/, not part of this
repository), in-process on two workers. For choosing the recalibration defaults; bench/realdata.py
(the real `emg-rcnn train --init-from`) reports them.

    python bench/recal_variants.py '[{"passes": 0}, {"l2sp": 0.1}]' [--seeds 0 1 2] [--cache /tmp/recal]

Each JSON object overrides RecalConfig fields ("t" overrides TrainConfig). Per pair (BEN/YAO,
401->402 and 441->442): a model trained on every trial of the first session (cached per seed),
evaluated on ICA_2..4 of the second as is, and after a recalibration on its ICA_1 alone. Printed:
R2 per pair before / after (mean over seeds), the mean, the worst pair's change, the wall time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import DATA, PAIRS, files  # noqa: E402


def base_model(cache: Path, seed: int, src: str) -> Path:
    """The source session's model for a seed, trained once and kept in `cache`."""
    from emg_rcnn_ros.core.bundle import save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.sessions import load_session
    from emg_rcnn_ros.core.train import train

    path = cache / f"base-{src}-{seed}"
    if not (path / "config.json").is_file():
        paths = sorted(str(p) for p in DATA.glob(f"raw_S2WA_{src}_ICA_*.npz"))
        model, cfg = train([load_session(p) for p in paths], FeatureConfig(), ModelConfig(), TrainConfig(seed=seed),
                           progress=False)
        save_bundle(path, cfg, model)
    return path


def job(cache: Path, seed: int, pair: tuple[str, str], variants: list[dict]) -> list[dict]:
    import torch

    from emg_rcnn_ros.core.bundle import load_bundle
    from emg_rcnn_ros.core.config import TrainConfig
    from emg_rcnn_ros.core.evaluate import evaluate_sessions
    from emg_rcnn_ros.core.recalibrate import RecalConfig, recalibrate
    from emg_rcnn_ros.core.sessions import load_session

    torch.set_num_threads(1)
    src, dst = pair
    base = load_bundle(base_model(cache, seed, src))
    calib = [load_session(p) for p in files(dst, [1])]
    source = [load_session(p) for p in sorted(str(p) for p in DATA.glob(f"raw_S2WA_{src}_ICA_*.npz"))]
    test = [load_session(p) for p in files(dst, [2, 3, 4])]
    before = evaluate_sessions(base, test)[0]["mean"]["r2"]
    rows = []
    for i, v in enumerate(variants):
        v = dict(v)
        tcfg = TrainConfig(seed=seed, **v.pop("t", {}))
        t0 = time.perf_counter()
        model, cfg = recalibrate(base, calib, RecalConfig(**v), tcfg, source=source)
        secs = time.perf_counter() - t0
        from emg_rcnn_ros.core.bundle import Bundle
        from emg_rcnn_ros.core.dataset import Normaliser

        b = Bundle(base.path, cfg, base.features, base.model_cfg, Normaliser.from_dict(cfg["normaliser"]), model)
        after = evaluate_sessions(b, test)[0]["mean"]["r2"]
        rows.append({"variant": i, "seed": seed, "pair": f"{src}->{dst}", "before": before, "after": after,
                     "seconds": secs, "steps": cfg["training"]["steps_run"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="?", default="[{}]")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="runs/recal_cache")
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"bench/recal_variants.py: {DATA} is not here; nothing to do")
        return 0
    variants = json.loads(a.variants)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(a.workers) as ex:
        futures = [ex.submit(job, cache, s, p, variants) for s in a.seeds for p in PAIRS]
        rows = [r for f in futures for r in f.result()]
    pairs = [f"{s}->{d}" for s, d in PAIRS]
    print(f"{'variant':60} " + " ".join(f"{p:>17}" for p in pairs) + "   mean before/after  worst d   s")
    for i, v in enumerate(variants):
        x = [r for r in rows if r["variant"] == i]
        per = [(np.mean([r["before"] for r in x if r["pair"] == p]), np.mean([r["after"] for r in x if r["pair"] == p]))
               for p in pairs]
        print(f"{json.dumps(v):60.60} " + " ".join(f"{b:7.3f} / {f:7.3f}" for b, f in per)
              + f"   {np.mean([b for b, _ in per]):.3f} / {np.mean([f for _, f in per]):.3f}"
              f"  {min(f - b for b, f in per):+.3f}  {np.mean([r['seconds'] for r in x]):.1f}")
    Path(cache / "last.json").write_text(json.dumps({"variants": variants, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
