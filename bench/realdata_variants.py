"""One configuration change at a time on the real recordings (../shared/realdata/, not part of this
repository): the protocols of bench/realdata.py, run in-process on two workers so that a variant
costs minutes. For choosing defaults; bench/realdata.py (the real `emg-rcnn train`) reports them.

    python bench/realdata_variants.py '{"f": {"window": 0.1}}' [--archs rcnn cnn svr] [--seeds 0 1 2]

The JSON overrides FeatureConfig ("f"), ModelConfig ("m") and TrainConfig ("t") fields. Printed per
architecture: within-session mean R2 (per session, per seed) and across-session R2 before / after
recalibration."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import ACROSS, DATA, WITHIN, files  # noqa: E402


def job(arch: str, seed: int, case: str, over: dict) -> dict:
    import torch

    from emg_rcnn_ros.core.bundle import load_bundle, save_bundle
    from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig
    from emg_rcnn_ros.core.evaluate import evaluate_sessions
    from emg_rcnn_ros.core.sessions import load_session
    from emg_rcnn_ros.core.train import train

    torch.set_num_threads(1)
    fc, mc = FeatureConfig(**over.get("f", {})), ModelConfig(arch=arch, **over.get("m", {}))
    tc = TrainConfig(seed=seed, **over.get("t", {}))
    tmp = Path(tempfile.mkdtemp())

    def fit(paths: list[str], init=None):
        model, cfg = train([load_session(p) for p in paths], fc, mc, tc, init_from=init, progress=False)
        return load_bundle(save_bundle(tmp / ("r" if init else "m"), cfg, model))

    def r2(bundle, paths: list[str]) -> float:
        return evaluate_sessions(bundle, [load_session(p) for p in paths])[0]["mean"]["r2"]

    if case in WITHIN:
        train_k, test_k = WITHIN[case]
        return {"arch": arch, "seed": seed, "case": case, "r2": r2(fit(files(case, train_k)), files(case, test_k))}
    base = fit(sorted(str(p) for p in DATA.glob(f"raw_S2WA_{case}_441_ICA_*.npz")))
    test = files(f"{case}_442", [2, 3, 4])
    if arch == "svr":
        return {"arch": arch, "seed": seed, "case": case, "r2": r2(base, test), "after": float("nan")}
    recal = fit(files(f"{case}_442", [1]), base)
    t = recal.config["training"]
    chose = {**t.get("recalibration", {}), "steps": t.get("steps_run")}
    return {"arch": arch, "seed": seed, "case": case, "r2": r2(base, test), "after": r2(recal, test), "chose": chose}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--archs", nargs="+", default=["rcnn"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cases", nargs="+", choices=["within", "across"], default=["within", "across"])
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"bench/realdata_variants.py: {DATA} is not here; nothing to do")
        return 0
    over = json.loads(a.overrides)
    cases = (list(WITHIN) if "within" in a.cases else []) + (list(ACROSS) if "across" in a.cases else [])
    with ProcessPoolExecutor(a.workers) as ex:
        futures = [ex.submit(job, arch, s, c, over) for arch in a.archs for s in a.seeds for c in cases]
        rows = [f.result() for f in futures]
    for r in rows:
        if "chose" in r:
            print(f"{r['arch']} seed {r['seed']} {r['case']}: {r['r2']:.3f} -> {r['after']:.3f}, {r['chose']}")
    for arch in a.archs:
        w = [r for r in rows if r["arch"] == arch and r["case"] in WITHIN]
        x = [r for r in rows if r["arch"] == arch and r["case"] in ACROSS]
        if w:
            per = " ".join(f"{np.mean([r['r2'] for r in w if r['case'] == c]):.2f}" for c in WITHIN)
            seeds = " ".join(f"{np.mean([r['r2'] for r in w if r['seed'] == s]):.3f}" for s in a.seeds)
            print(f"{arch:5} within {np.mean([r['r2'] for r in w]):.3f} ({per}; seeds {seeds})")
        if x:
            per = " ".join(f"{c} {np.mean([r['r2'] for r in x if r['case'] == c]):.3f} / "
                           f"{np.mean([r['after'] for r in x if r['case'] == c]):.3f}" for c in ACROSS)
            print(f"{arch:5} across {np.mean([r['r2'] for r in x]):.3f} / {np.mean([r['after'] for r in x]):.3f} "
                  f"after recalibration ({per})")
    print("overrides", json.dumps(over))
    return 0


if __name__ == "__main__":
    sys.exit(main())
