"""`emg-rcnn`: simulate sessions, train models, evaluate them (no ROS needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .core.config import FeatureConfig, ModelConfig, TrainConfig
from .core.errors import BundleError, ConfigError, SessionError
from .core.sessions import load_session

# Importing the bag loader registers the bag form of a session.
from . import bags  # noqa: F401,E402  isort: skip

# torch-based modules are imported inside the commands that need them, so that a bad argument or
# a bad session is reported in a fraction of a second.

USER_ERRORS = (SessionError, BundleError, ConfigError, ValueError, OSError)


def _fmt(m: dict) -> str:
    rows = [f"  {n:<18} CC {cc:6.3f}  RMSE {r:6.3f} rad ({d:5.1f} deg)  NRMSE {nr:6.3f}  R2 {r2:6.3f}"
            for n, cc, r, d, nr, r2 in zip(m["joints"], m["cc"], m["rmse"], m["rmse_deg"], m["nrmse"], m["r2"])]
    mm = m["mean"]
    rows.append(f"  {'mean':<18} CC {mm['cc']:6.3f}  RMSE {mm['rmse']:6.3f} rad ({mm['rmse_deg']:5.1f} deg)  "
                f"NRMSE {mm['nrmse']:6.3f}  R2 {mm['r2']:6.3f}")
    return "\n".join(rows)


def cmd_simulate(a: argparse.Namespace) -> int:
    from .core.sim import SessionEffects, SimConfig, simulate_session

    eff = SessionEffects(electrode_shift=a.electrode_shift, gain_change=a.gain_change, fatigue=a.fatigue)
    cfg = SimConfig(rate=a.rate, channels=a.channels, joints=a.joints, seed=a.seed, subject_seed=a.subject,
                    mains_hz=a.mains_hz, effects=eff)
    if a.next_day:
        from .core.sim import next_day

        cfg = next_day(cfg, a.seed, a.next_day)
    if a.duration <= 0:
        raise ValueError(f"--duration must be > 0, got {a.duration}")
    data = simulate_session(cfg, a.duration)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(out)
    print(f"wrote {out}: {a.duration:g} s, {a.channels} channels at {a.rate:g} Hz, joints {list(data['joint_names'])}")
    return 0


def _checked(paths: list[str], mains_hz: float | None, fcfg: FeatureConfig, span: int
             ) -> tuple[list, dict[str, list[dict]], float | None]:
    """Load sessions, refuse one too short to use, and print the data checks' warnings. Returns the
    sessions, the findings, and the mains frequency found in them (for a notch that follows it)."""
    from .core.checks import inspect_session, mains_of
    from .core.dataset import check_long_enough

    loaded = [load_session(p) for p in paths]
    for s in loaded:
        check_long_enough(s, fcfg, span)
    sessions, found, every = [], {}, []
    for p, s in zip(paths, loaded):
        findings = inspect_session(s, mains_hz)
        for f in findings:
            if f.level == "warn":
                print(f"warning: {p}: {f.message}", file=sys.stderr)
        sessions.append(s)
        every.append(findings)
        found[str(p)] = [f.to_dict() for f in findings]
    return sessions, found, mains_of(every)


def cmd_inspect(a: argparse.Namespace) -> int:
    from .core.checks import inspect_session, plot_session, report

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    warned = 0
    for p in a.sessions:
        s = load_session(p)
        findings = inspect_session(s, a.mains_hz)
        warned += any(f.level == "warn" for f in findings)
        print(report(findings, f"{p} ({s.duration:.1f} s, {s.emg.shape[1]} channels at {s.emg_rate:g} Hz)"))
        png = out / f"{Path(p).name.removesuffix('.npz')}.png"
        plot_session(png, s)
        print(f"  plot: {png}")
    return 0 if not (a.strict and warned) else 1


def cmd_train(a: argparse.Namespace) -> int:
    mcfg = ModelConfig(arch=a.arch, history=a.history, history_stride=a.history_stride,
                       shared_state=a.shared_state)
    mcfg.validate()
    sessions, found, hum = _checked(a.data, a.mains_hz, FeatureConfig(window=a.window, hop=a.hop, bands=a.bands),
                                    mcfg.span)
    mains = a.mains_hz if a.mains_hz is not None else (hum or FeatureConfig.mains_hz)
    if a.mains_hz is None:
        print(f"mains notch at {mains:g} Hz ({'the hum found in the data' if hum else 'no hum found: the default'})")
    fcfg = FeatureConfig(window=a.window, hop=a.hop, bands=a.bands, mains_hz=mains)
    fcfg.validate()
    tcfg = TrainConfig(max_steps=a.max_steps, folds=a.folds, seed=a.seed, device=a.device, batch_size=a.batch_size,
                       lr=a.lr, patience_steps=a.patience_steps, gain_jitter=a.gain_jitter, tilt_jitter=a.tilt_jitter)
    tcfg.validate()
    from .core.bundle import load_bundle, save_bundle
    from .core.recalibrate import RecalConfig
    from .core.train import train

    init = load_bundle(a.init_from) if a.init_from else None
    recal = RecalConfig(recentre="none" if a.keep_normaliser else RecalConfig.recentre)
    model, config = train(sessions, fcfg, mcfg, tcfg, init_from=init, progress=not a.quiet, recal=recal)
    config["data_checks"] = found
    path = save_bundle(a.out, config, model)
    print(f"wrote model {path} ({config['arch']}, {config['training']['wall_seconds']} s)")
    done = config["training"].get("recalibration")
    if done:
        print(f"recalibration: feature means re-centred ({done['recentre']}), batch-norm statistics "
              f"{'re-estimated' if done['adapt_bn'] else 'kept'}, fine-tuning {done['steps']} steps on "
              f"{done['seconds']:g} s, {done['rehearsed_windows']} source windows rehearsed")
    if "validation" in config:
        print("validation (each held-out recording or block, by the fold model that did not see it):")
        print(_fmt(config["validation"]))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .core.bundle import load_bundle
    from .core.evaluate import evaluate_sessions, write_report

    bundle = load_bundle(a.model)
    sessions, _, _ = _checked(a.data, bundle.features.mains_hz, bundle.features, bundle.model_cfg.span)
    result, t, y_true, y_pred = evaluate_sessions(bundle, sessions)
    result["model"], result["data"] = str(a.model), [str(p) for p in a.data]
    if a.report:
        write_report(a.report, result, t, y_true, y_pred, title=f"{bundle.model_cfg.arch}: {Path(a.model).name}")
    if a.json:
        print(json.dumps({k: result[k] for k in ("joints", "cc", "rmse", "nrmse", "r2", "mean")}))
    else:
        print(_fmt(result))
        if a.report:
            print(f"report written to {a.report}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .core.sessions import save_npz

    session = load_session(a.bag)
    save_npz(session, Path(a.out))
    print(f"wrote {a.out}: {session.duration:.1f} s of {session.emg.shape[1]} channels at {session.emg_rate:g} Hz, "
          f"{len(session.segments)} segment(s), joints {session.joint_names}")
    return 0


def _refuse_existing(out: str) -> None:
    """Bags are recordings: a command never writes over one."""
    if Path(out).exists():
        raise ValueError(f"{out} exists (nothing is overwritten)")


def cmd_import(a: argparse.Namespace) -> int:
    from .bags import write_session_bag

    session = load_session(a.session)
    _refuse_existing(a.out)
    write_session_bag(session, a.out, storage=a.storage, joint_topic=a.joint_topic)
    print(f"wrote bag {a.out} ({a.storage}) from {a.session}")
    return 0


def cmd_recover(a: argparse.Namespace) -> int:
    from .bags import is_partial_bag, recover

    bag = Path(a.bag)
    if not is_partial_bag(bag):
        raise ValueError(f"{bag}: not an unclosed recording (needs recording.json and no metadata.yaml)")
    _refuse_existing(a.out)
    recover(bag, Path(a.out))
    session = load_session(a.out)
    print(f"recovered {session.duration:.1f} s of EMG from {bag} into {a.out}")
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from .replay import replay

    n = replay(Path(a.bag), rate=a.rate, loop=a.loop, namespace=a.namespace, wait=a.wait)
    print(f"replayed {n} messages from {a.bag}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emg-rcnn", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = FeatureConfig()
    m = ModelConfig()
    t = TrainConfig()

    s = sub.add_parser("simulate", help="write a simulated session (NPZ)")
    s.add_argument("--out", required=True)
    s.add_argument("--duration", type=float, default=60.0, help="seconds")
    s.add_argument("--channels", type=int, default=8)
    s.add_argument("--rate", type=float, default=2000.0, help="Hz")
    s.add_argument("--joints", type=int, default=2, help="1-3")
    s.add_argument("--seed", type=int, default=0, help="movement and noise")
    s.add_argument("--subject", type=int, default=0, help="anatomy: same subject, same value")
    s.add_argument("--mains-hz", type=float, default=50.0)
    s.add_argument("--electrode-shift", type=float, default=0.0, help="0..1, later-session effect")
    s.add_argument("--gain-change", type=float, default=0.0, help="std of per-channel log gain")
    s.add_argument("--fatigue", type=float, default=0.0, help="0..1, lowers median frequency")
    s.add_argument("--next-day", type=float, nargs="?", const=1.0, default=0.0, metavar="STRENGTH",
                   help="the same subject on another day: electrodes placed again (2 = twice as far), gains, skin "
                        "and movement mix changed (core/sim.py NEXT_DAY; replaces the three options above)")
    s.set_defaults(fn=cmd_simulate)

    tr = sub.add_parser("train", help="train a model bundle from sessions")
    tr.add_argument("--data", nargs="+", required=True, help="sessions (.npz or bag directories)")
    tr.add_argument("--out", required=True, help="model bundle directory")
    tr.add_argument("--arch", choices=["rcnn", "cnn", "svr"], default=m.arch)
    tr.add_argument("--max-steps", type=int, default=t.max_steps, help="optimiser steps at most, per fold")
    tr.add_argument("--folds", type=int, default=t.folds,
                    help="held-out folds that choose the number of steps (1: none, train max-steps)")
    tr.add_argument("--seed", type=int, default=t.seed)
    tr.add_argument("--device", choices=["cpu", "cuda"], default=t.device)
    tr.add_argument("--init-from", help="recalibrate this bundle to a new session from --data (one short trial "
                                        "is enough; docs/recalibration.md); its feature and model settings stay")
    tr.add_argument("--keep-normaliser", action="store_true",
                    help="with --init-from: keep the bundle's feature means instead of re-centring them on --data")
    tr.add_argument("--window", type=float, default=d.window, help="s")
    tr.add_argument("--hop", type=float, default=d.hop, help="s")
    tr.add_argument("--bands", type=int, default=d.bands)
    tr.add_argument("--mains-hz", type=float, default=None,
                    help="mains notch (Hz); default: the hum found in the recordings, else 50")
    tr.add_argument("--history", type=int, default=m.history, help="frames per estimate")
    tr.add_argument("--history-stride", type=int, default=m.history_stride,
                    help="hops between the frames of one estimate (1 = consecutive frames)")
    tr.add_argument("--shared-state", action="store_true",
                    help="read every joint from all units (one LSTM for all joints, one cnn embedding) instead of "
                         "each joint from its own")
    tr.add_argument("--batch-size", type=int, default=t.batch_size)
    tr.add_argument("--lr", type=float, default=t.lr)
    tr.add_argument("--patience-steps", type=int, default=t.patience_steps)
    tr.add_argument("--gain-jitter", type=float, default=t.gain_jitter,
                    help="augmentation: each channel's amplitude scaled by 1 +- this (0 = none)")
    tr.add_argument("--tilt-jitter", type=float, default=t.tilt_jitter,
                    help="augmentation: each channel's spectrum tilted by up to +- this log amplitude from the "
                         "lowest to the highest band (0 = none)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser("evaluate", help="accuracy of a bundle on sessions")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", nargs="+", required=True)
    ev.add_argument("--report", help="directory for metrics.json and estimates.png")
    ev.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    ev.set_defaults(fn=cmd_evaluate)

    ins = sub.add_parser("inspect", help="data checks of recordings, and a plot of each, before training")
    ins.add_argument("sessions", nargs="+", help="sessions (.npz or bag directories)")
    ins.add_argument("--out", default="runs/inspect", help="directory for one PNG per session")
    ins.add_argument("--mains-hz", type=float, default=None,
                     help="the notch you will train with (default: follow the hum)")
    ins.add_argument("--strict", action="store_true", help="exit 1 when any session has a warning")
    ins.set_defaults(fn=cmd_inspect)

    ex = sub.add_parser("export", help="bag directory -> NPZ session")
    ex.add_argument("bag")
    ex.add_argument("--out", required=True)
    ex.set_defaults(fn=cmd_export)

    im = sub.add_parser("import", help="NPZ session -> bag directory")
    im.add_argument("session")
    im.add_argument("--out", required=True)
    im.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    im.add_argument("--joint-topic", default="emg/ground_truth")
    im.set_defaults(fn=cmd_import)

    rc = sub.add_parser("recover", help="a killed recording (no metadata.yaml) -> a complete bag")
    rc.add_argument("bag")
    rc.add_argument("--out", required=True)
    rc.set_defaults(fn=cmd_recover)

    rp = sub.add_parser("replay", help="publish a bag's EMG and ground truth with the original timing")
    rp.add_argument("bag")
    rp.add_argument("--rate", type=float, default=1.0)
    rp.add_argument("--loop", action="store_true")
    rp.add_argument("--namespace", default="")
    rp.add_argument("--wait", type=float, default=2.0, help="seconds to wait for subscribers before starting")
    rp.set_defaults(fn=cmd_replay)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as exc:
        print(f"emg-rcnn {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emg-rcnn {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
