"""Accuracy on real forearm EMG (../shared/realdata/, not part of this repository), both protocols.

    python bench/realdata.py [--archs rcnn cnn svr] [--seeds 0 1 2] [--protocols within across]
                             [--out runs/realdata]

The recordings have no licence: they are read from ../shared/realdata/ where that folder exists and
never copied. Training runs the real `emg-rcnn train` command (defaults, `--seed`), as the kept-aside
recordings are judged; evaluation uses the same code as `emg-rcnn evaluate`.
- within a session: train on the first trials (ICA_1..3; YAO_441: ICA_1, 2), evaluate on ICA_4;
- across sessions, every shared pair of one person's sessions (PAIRS: 401->402 and 441->442 for each
  person): train on every trial of the first, evaluate on ICA_2..4 of the second as is, then after a
  recalibration on its ICA_1 alone (`--init-from`), and again.
Printed: per-session R2 (mean over joints), the means of R2, CC and RMSE (degrees), training and
recalibration wall time, and the lag of the estimate behind the truth (the shift that maximises
the correlation). A PNG of estimate vs truth for the worst within-session case goes to --out."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "realdata"
WITHIN = {"BEN_441": ([1, 2, 3], [4]), "BEN_442": ([1, 2, 3], [4]), "YAO_441": ([1, 2], [4]),
          "YAO_442": ([1, 2, 3], [4])}
ACROSS = {"BEN": "BEN", "YAO": "YAO"}  # bench/realdata_variants.py: the 441 -> 442 pairs
# Same person, electrodes placed again: (first session, later session).
PAIRS = [("BEN_401", "BEN_402"), ("YAO_401", "YAO_402"), ("BEN_441", "BEN_442"), ("YAO_441", "YAO_442")]


def files(session: str, trials: list[int]) -> list[str]:
    return [str(DATA / f"raw_S2WA_{session}_ICA_{k}.npz") for k in trials]


def cli(*args: str) -> float:
    """Run `emg-rcnn ...`; returns its wall time (s); raises with its output on failure."""
    exe = Path(sys.executable).parent / "emg-rcnn"
    t = time.perf_counter()
    r = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"emg-rcnn {' '.join(args)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.perf_counter() - t


def evaluate(model: Path, data: list[str]) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    from emg_rcnn_ros.core.bundle import load_bundle
    from emg_rcnn_ros.core.evaluate import evaluate_sessions
    from emg_rcnn_ros.core.sessions import load_session

    return evaluate_sessions(load_bundle(model), [load_session(p) for p in data])


def lag_ms(t: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, max_ms: float = 500.0) -> float:
    """Shift of the estimate (ms, positive = late) that maximises the mean correlation with the truth."""
    hop = float(np.median(np.diff(t))) if len(t) > 1 else 0.02
    best, best_c = 0.0, -np.inf
    for k in range(-int(max_ms / 1e3 / hop), int(max_ms / 1e3 / hop) + 1):
        a, b = (y_true[: len(y_true) - k], y_pred[k:]) if k >= 0 else (y_true[-k:], y_pred[: len(y_pred) + k])
        if len(a) < 10:
            continue
        c = np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1]) if a[:, j].std() > 0])
        if c > best_c:
            best, best_c = k * hop * 1e3, c
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["rcnn", "cnn", "svr"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", choices=["within", "across"], default=["within", "across"])
    ap.add_argument("--out", default="runs/realdata")
    a = ap.parse_args()
    within = WITHIN if "within" in a.protocols else {}
    across = "across" in a.protocols
    if not DATA.is_dir():
        print(f"bench/realdata.py: {DATA} is not here (real recordings are not part of the repository); nothing to do")
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    worst: tuple[float, str, np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            for seed in a.seeds:
                for session, (train_k, test_k) in within.items():
                    model = Path(tmp) / f"{arch}-{seed}-{session}"
                    secs = cli("train", "--data", *files(session, train_k), "--out", str(model), "--arch", arch,
                               "--seed", str(seed), "--quiet")
                    m, t, yt, yp = evaluate(model, files(session, test_k))
                    rows.append({"protocol": "within", "arch": arch, "seed": seed, "case": session,
                                 "r2": m["mean"]["r2"], "cc": m["mean"]["cc"], "rmse_deg": m["mean"]["rmse_deg"],
                                 "train_s": secs, "lag_ms": lag_ms(t, yt, yp)})
                    if arch == "rcnn" and (worst is None or m["mean"]["r2"] < worst[0]):
                        worst = (m["mean"]["r2"], f"{arch} seed {seed} {session}", t, yt, yp, m["joints"])
                for src, dst in (PAIRS if across else []):
                    base = Path(tmp) / f"{arch}-{seed}-{src}"
                    every = sorted(str(p) for p in DATA.glob(f"raw_S2WA_{src}_ICA_*.npz"))
                    secs = cli("train", "--data", *every, "--out", str(base),
                               "--arch", arch, "--seed", str(seed), "--quiet")
                    test = files(dst, [2, 3, 4])
                    before, *_ = evaluate(base, test)
                    row = {"protocol": "across", "arch": arch, "seed": seed, "case": f"{src}->{dst}",
                           "r2": before["mean"]["r2"], "cc": before["mean"]["cc"],
                           "rmse_deg": before["mean"]["rmse_deg"], "train_s": secs}
                    if arch != "svr":  # the SVR baseline has no fine-tuning
                        recal = Path(tmp) / f"{arch}-{seed}-{dst}"
                        row["recal_s"] = cli("train", "--data", *files(dst, [1]), "--out", str(recal),
                                             "--arch", arch, "--seed", str(seed), "--init-from", str(base), "--quiet")
                        after, *_ = evaluate(recal, test)
                        row.update(r2_after=after["mean"]["r2"], cc_after=after["mean"]["cc"],
                                   rmse_deg_after=after["mean"]["rmse_deg"])
                    rows.append(row)
                print(f"{arch} seed {seed} done", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    report(rows)
    if worst is not None:
        from emg_rcnn_ros.core.evaluate import plot

        plot(out / "worst.png", worst[2], worst[3], worst[4], worst[5], title=f"worst within-session: {worst[1]}")
        print(f"plot of the worst within-session case ({worst[1]}, R2 {worst[0]:.2f}): {out / 'worst.png'}")
    return 0


def report(rows: list[dict]) -> None:
    def mean(xs: list[float]) -> float:
        return float(np.mean(xs)) if xs else float("nan")

    archs = sorted({r["arch"] for r in rows}, key=["rcnn", "cnn", "svr"].index)
    if any(r["protocol"] == "within" for r in rows):
        print("\nwithin a session: mean R2 over joints (mean over seeds)")
        cases = list(WITHIN)
        print(f"{'arch':6} " + " ".join(f"{c:>8}" for c in cases) + "   mean R2  mean CC  RMSE deg  train s  lag ms")
        for arch in archs:
            w = [r for r in rows if r["protocol"] == "within" and r["arch"] == arch]
            per = [mean([r["r2"] for r in w if r["case"] == c]) for c in cases]
            print(f"{arch:6} " + " ".join(f"{v:8.3f}" for v in per)
                  + f"   {mean([r['r2'] for r in w]):7.3f}  {mean([r['cc'] for r in w]):7.3f}"
                  f"  {mean([r['rmse_deg'] for r in w]):8.1f}  {mean([r['train_s'] for r in w]):7.1f}"
                  f"  {mean([r['lag_ms'] for r in w]):6.0f}")
    if any(r["protocol"] == "across" for r in rows):
        print("\nacross sessions (first session -> ICA_2..4 of the later one): mean R2 before / after recalibration "
              "on the later one's ICA_1; worst change; recalibration wall time (the whole `emg-rcnn train` process)")
        for arch in archs:
            x = [r for r in rows if r["protocol"] == "across" and r["arch"] == arch]
            parts = []
            for c in sorted({r["case"] for r in x}):
                rc = [r for r in x if r["case"] == c]
                after = [r["r2_after"] for r in rc if "r2_after" in r]
                parts.append(f"{c}: {mean([r['r2'] for r in rc]):.3f}" + (f" / {mean(after):.3f}" if after else ""))
            after = [r["r2_after"] for r in x if "r2_after" in r]
            recal = [r["recal_s"] for r in x if "recal_s" in r]
            worst = float("nan")
            if after:
                cases = {r["case"] for r in x}
                worst = min(mean([r["r2_after"] - r["r2"] for r in x if r["case"] == c]) for c in cases)
            print(f"{arch:6} " + "; ".join(parts) + f"; mean {mean([r['r2'] for r in x]):.3f}"
                  + (f" / {mean(after):.3f}, worst {worst:+.3f}, recalibration {mean(recal):.1f} s "
                     f"(max {max(recal):.1f})" if after else ""))


if __name__ == "__main__":
    sys.exit(main())
