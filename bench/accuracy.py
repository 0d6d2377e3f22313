"""RCNN vs CNN vs SVR on simulated subjects, within a session and across sessions, as in
Xia et al. 2018 (who report that the RCNN is best and degrades least over time).

    python bench/accuracy.py [--subjects 0 1 2] [--out runs/accuracy.json]

Per subject: train each architecture on a 3-minute calibration session; test on a new session of
the same day (within) and on a later session with shifted electrodes, gain changes and fatigue
(across); then recalibrate the RCNN on a 40 s trial recorded in that later session after the test
minute, with the electrodes where they were (--init-from), and test again (with the feature
normalisation re-fitted on the new data when the folds allow it, the default, and kept). Until
2026-12-01 the 40 s came from another later session, whose electrode gains were drawn anew.
Test data is never used for training, early stopping or any choice."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, session_from  # noqa: E402

from emg_rcnn_ros.core.bundle import load_bundle, save_bundle  # noqa: E402
from emg_rcnn_ros.core.config import FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from emg_rcnn_ros.core.evaluate import evaluate_sessions  # noqa: E402
from emg_rcnn_ros.core.sim import SessionEffects, SimConfig, simulate_recordings  # noqa: E402
from emg_rcnn_ros.core.train import train  # noqa: E402

LATER = SessionEffects(electrode_shift=0.3, gain_change=0.2, fatigue=0.5)


def sim(subject: int, seed: int, seconds: list[float], effects: SessionEffects | None = None) -> list:
    """Recordings made one after another in one simulated session (one placement of the electrodes)."""
    cfg = SimConfig(rate=2000.0, channels=8, joints=2, seed=seed, subject_seed=subject,
                    effects=effects or SessionEffects())
    recs = simulate_recordings(cfg, seconds)
    return [session_from(d, f"subject{subject}/seed{seed}/{k}") for k, d in enumerate(recs)]


def summary(m: dict) -> dict:
    return {k: round(m["mean"][k], 4) for k in ("cc", "rmse", "rmse_deg", "nrmse", "r2")}


def run_subject(subject: int, tmp: Path, calib_s: float, test_s: float) -> dict:
    base = 1000 * (subject + 1)
    [calib] = sim(subject, base + 1, [calib_s])
    [within] = sim(subject, base + 2, [test_s])
    later, recal = sim(subject, base + 3, [test_s, 40.0], LATER)  # the test minute is the one it always was
    out: dict = {}
    for arch in ("rcnn", "cnn", "svr"):
        t = time.perf_counter()
        model, cfg = train([calib], FeatureConfig(), ModelConfig(arch=arch), TrainConfig(seed=subject), progress=False)
        path = save_bundle(tmp / f"s{subject}_{arch}", cfg, model)
        b = load_bundle(path)
        out[arch] = {"train_s": round(time.perf_counter() - t, 1),
                     "within": summary(evaluate_sessions(b, [within])[0]),
                     "across": summary(evaluate_sessions(b, [later])[0])}
    from emg_rcnn_ros.core.recalibrate import RecalConfig

    for name, recentre in (("rcnn_recalibrated", RecalConfig.recentre), ("rcnn_recalibrated_keep_normaliser", "none")):
        t = time.perf_counter()
        model, cfg = train([recal], FeatureConfig(), ModelConfig(), TrainConfig(seed=subject),
                           init_from=load_bundle(tmp / f"s{subject}_rcnn"), progress=False,
                           recal=RecalConfig(recentre=recentre))
        path = save_bundle(tmp / f"s{subject}_{name}", cfg, model)
        out[name] = {"train_s": round(time.perf_counter() - t, 1),
                     "across": summary(evaluate_sessions(load_bundle(path), [later])[0])}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--subjects", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--calibration-seconds", type=float, default=180.0)
    p.add_argument("--test-seconds", type=float, default=60.0)
    p.add_argument("--out")
    a = p.parse_args()
    res: dict = {"machine": machine(), "later_session_effects": LATER.__dict__, "subjects": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for s in a.subjects:
            res["subjects"][s] = run_subject(s, Path(tmp), a.calibration_seconds, a.test_seconds)
            print(f"subject {s}: " + ", ".join(f"{k} within CC {v['within']['cc']:.3f} across {v['across']['cc']:.3f}"
                                                for k, v in res["subjects"][s].items() if "within" in v),
                  file=sys.stderr, flush=True)
    mean: dict = {}
    for arch in ("rcnn", "cnn", "svr", "rcnn_recalibrated", "rcnn_recalibrated_keep_normaliser"):
        for split in ("within", "across"):
            vals = [r[arch][split] for r in res["subjects"].values() if split in r[arch]]
            if vals:
                mean.setdefault(arch, {})[split] = {k: round(float(np.mean([v[k] for v in vals])), 4) for k in vals[0]}
    res["mean_over_subjects"] = mean
    emit(res, a.out)


if __name__ == "__main__":
    main()
