"""Accuracy as the paper reports it (Pearson CC, RMSE, NRMSE) plus R2, per joint and mean;
JSON and PNG reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def metrics(y_true: np.ndarray, y_pred: np.ndarray, joint_names: list[str]) -> dict[str, Any]:
    """Per joint and mean. RMSE in radians (and degrees); NRMSE divides by the true range."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    err = y_pred - y_true
    rmse = np.sqrt(np.mean(err**2, axis=0))
    rng = np.ptp(y_true, axis=0)
    var = np.var(y_true, axis=0)
    cc = []
    for j in range(y_true.shape[1]):
        a, b = y_true[:, j], y_pred[:, j]
        denom = a.std() * b.std()
        cc.append(float(np.mean((a - a.mean()) * (b - b.mean())) / denom) if denom > 0 else 0.0)
    nrmse = np.where(rng > 0, rmse / np.where(rng > 0, rng, 1), np.nan)
    r2 = np.where(var > 0, 1 - np.mean(err**2, axis=0) / np.where(var > 0, var, 1), np.nan)
    out: dict[str, Any] = {"joints": list(joint_names), "cc": cc, "rmse": rmse.tolist(),
                           "rmse_deg": np.degrees(rmse).tolist(), "nrmse": nrmse.tolist(), "r2": r2.tolist(),
                           "samples": int(len(y_true))}
    out["mean"] = {k: float(np.nanmean(out[k])) for k in ("cc", "rmse", "rmse_deg", "nrmse", "r2")}
    return out


def plot(path: Path, times: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, joint_names: list[str],
         title: str = "") -> None:
    """Estimated vs true angle over time per joint, and the error distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    J = y_true.shape[1]
    fig, axes = plt.subplots(J, 2, figsize=(12, 2.6 * J), squeeze=False, gridspec_kw={"width_ratios": [4, 1]})
    for j in range(J):
        ax = axes[j, 0]
        ax.plot(times, np.degrees(y_true[:, j]), "k-", lw=1.0, label="true")
        ax.plot(times, np.degrees(y_pred[:, j]), "C1-", lw=1.0, label="estimated")
        ax.set_ylabel(f"{joint_names[j]} (deg)")
        ax.legend(loc="upper right", fontsize=8)
        axes[j, 1].hist(np.degrees(y_pred[:, j] - y_true[:, j]), bins=50, color="C0")
        axes[j, 1].set_xlabel("error (deg)")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(report_dir: str | Path, result: dict[str, Any], times: np.ndarray, y_true: np.ndarray,
                 y_pred: np.ndarray, title: str = "") -> None:
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(result, indent=2))
    plot(d / "estimates.png", times, y_true, y_pred, result["joints"], title)


def evaluate_sessions(bundle: Any, sessions: list, batch: int = 2048
                      ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Run a bundle over whole sessions: (metrics, times [K] s, true [K, J], estimated [K, J]).
    Times run on across sessions so that a plot shows them one after another."""
    from .dataset import check_long_enough, gather_windows, session_frames, window_ends
    from .sessions import align_sessions

    sessions = align_sessions(sessions, bundle.joint_names)
    times, trues, preds, t0 = [], [], [], 0.0
    for s in sessions:
        bundle.check_stream(s.emg_rate, s.emg.shape[1])
        check_long_enough(s, bundle.features, bundle.model_cfg.span)
        for fs in session_frames(s, bundle.features):
            ends = window_ends(len(fs.feats), bundle.model_cfg.span)
            for i in range(0, len(ends), batch):
                e = ends[i : i + batch]
                preds.append(bundle.predict(gather_windows(fs.feats, e, bundle.model_cfg.offsets)))
                trues.append(fs.targets[e])
                times.append(t0 + fs.end_index[e] / s.emg_rate)
        t0 += s.duration
    if not preds:
        from .sessions import SessionError

        raise SessionError("no complete estimation window in the given sessions")
    y_true, y_pred, t = np.concatenate(trues), np.concatenate(preds), np.concatenate(times)
    return metrics(y_true, y_pred, bundle.joint_names), t, y_true, y_pred
