"""Checks of a whole recording before it is trained on, so that whoever recorded a person learns
that a channel clipped, an input was dead, mains hum swamped the signal, a joint hardly moved or
the stated sample rate cannot be right while they can still record again.

Thresholds are sane defaults from surface-EMG practice (SENIAM; De Luca 1997), not fitted to any
data set: surface EMG has its power between 20 and 450 Hz with a median frequency of roughly
50-150 Hz, so a median far outside 30-250 Hz means the samples are not at the stated rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import welch

from .dataset import TARGET_SCALE_MIN, robust_spread
from .quality import rail_share
from .sessions import Session

CLIP_SHARE = 0.001  # samples on plateaus at a channel's extremes, as a share of all samples
DEAD_RMS = 1e-6  # V, 20-450 Hz: an input connected to nothing but the amplifier
MAINS_SHARE = 0.2  # of the 20-450 Hz power within 1 Hz of the mains frequency and its harmonics
MEDIAN_HZ = (30.0, 250.0)  # plausible median frequency of surface EMG
HUM_FOUND = 0.05  # median share over channels above which a recording's mains frequency is known (a short
# recording's spectrum is noisy: a few percent come from chance alone)


@dataclass(frozen=True)
class Finding:
    level: str  # "warn" or "info"
    check: str  # clipping | dead | mains | still_joint | sample_rate
    where: str  # channel or joint name, or "" for the recording
    value: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def spectrum(emg: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density [freqs], [freqs, channels] with 1 Hz resolution or finer."""
    n = min(len(emg), int(2 ** np.ceil(np.log2(rate))))
    return welch(emg - emg.mean(axis=0), fs=rate, nperseg=n, axis=0)


def _hum_share(f: np.ndarray, p: np.ndarray, hz: float) -> np.ndarray:
    """Per channel, the power of lines at `hz` and its 2nd and 3rd harmonics above the spectrum
    around them (5-15 Hz away): a line, not broadband EMG that happens to lie there. +-2 Hz: an
    amplifier clock a few percent off moves the line that far."""
    df = f[1] - f[0]
    total = np.zeros(p.shape[1])
    for k in (1, 2, 3):
        d = np.abs(f - k * hz)
        line, side = d <= max(2.0, df), (d >= 5.0) & (d <= 15.0)
        if line.any() and side.any():
            floor = np.median(p[side], axis=0)
            total += np.clip(p[line] - floor, 0.0, None).sum(axis=0) * df
    return total


def inspect_session(s: Session, mains_hz: float | None = None) -> list[Finding]:
    """Every finding of one recording, warnings first. `mains_hz`: the notch that will be used, or
    None when it will follow the hum found here (see mains_of)."""
    out: list[Finding] = []
    names = s.channel_names
    for c, share in enumerate(rail_share(s.emg)):
        if share > CLIP_SHARE:
            out.append(Finding("warn", "clipping", names[c], float(share),
                               f"{names[c]}: {100 * share:.2f} % of samples at the rails (clipping): lower the gain"))
    f, p = spectrum(s.emg, s.emg_rate)
    band = (f >= 20.0) & (f <= min(450.0, 0.45 * s.emg_rate))
    power = np.trapezoid(p[band], f[band], axis=0) if band.sum() > 1 else np.zeros(p.shape[1])
    rms = np.sqrt(np.maximum(power, 0.0))
    hums = {hz: _hum_share(f, p, hz) / np.maximum(power, 1e-30) for hz in (50.0, 60.0)}
    found = max(hums, key=lambda hz: float(np.median(hums[hz])))
    for c in range(s.emg.shape[1]):
        if rms[c] < DEAD_RMS:
            out.append(Finding("warn", "dead", names[c], float(rms[c]),
                               f"{names[c]}: {rms[c] * 1e6:.2f} uV RMS in 20-450 Hz: a dead input or an electrode off"))
        elif hums[found][c] > MAINS_SHARE:
            out.append(Finding("warn", "mains", names[c], float(hums[found][c]),
                               f"{names[c]}: {100 * hums[found][c]:.0f} % of the EMG-band power is {found:g} Hz mains "
                               "hum: check the reference electrode and the skin preparation"))
    share = float(np.median(hums[found]))
    if share > HUM_FOUND:
        if mains_hz is not None and mains_hz > 0 and found != mains_hz:
            out.append(Finding("warn", "mains", "", found, f"mains hum is at {found:g} Hz, the notch is set to "
                                                           f"{mains_hz:g} Hz: set mains_hz to {found:g}"))
        else:
            out.append(Finding("info", "mains", "", found, f"mains hum at {found:g} Hz ({100 * share:.1f} % of the "
                                                           "EMG-band power): notched"))
    live = rms >= DEAD_RMS
    if live.any():
        cum = np.cumsum(p[:, live].mean(axis=1))
        median = float(f[np.searchsorted(cum, cum[-1] / 2)])
        level = "info" if MEDIAN_HZ[0] <= median <= MEDIAN_HZ[1] else "warn"
        text = f"median frequency {median:.0f} Hz at the stated {s.emg_rate:g} Hz"
        if level == "warn":
            text += f": surface EMG lies around {MEDIAN_HZ[0]:g}-{MEDIAN_HZ[1]:g} Hz; is the sample rate right?"
        out.append(Finding(level, "sample_rate", "", median, text))
    spreads = robust_spread(s.joint_position)
    for j, name in enumerate(s.joint_names):
        spread = float(spreads[j])
        if spread < TARGET_SCALE_MIN:
            out.append(Finding("warn", "still_joint", name, spread,
                               f"{name} hardly moves ({np.degrees(spread):.1f} deg spread): it cannot be learnt "
                               "from this recording"))
    return sorted(out, key=lambda x: x.level != "warn")


def mains_of(findings: list[list[Finding]]) -> float | None:
    """The mains frequency found in most recordings, or None where none showed hum."""
    found = [f.value for fs in findings for f in fs if f.check == "mains" and not f.where]
    return max(set(found), key=found.count) if found else None


def report(findings: list[Finding], source: str) -> str:
    warns = [f for f in findings if f.level == "warn"]
    head = f"{source}: {len(warns)} warning(s)" if warns else f"{source}: no warnings"
    return "\n".join([head, *(f"  {f.level.upper():4} {f.message}" for f in findings)])


def plot_session(path, s: Session) -> None:
    """Per channel a spectrogram with the clipped samples marked, and the angles over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C, J = s.emg.shape[1], s.joint_position.shape[1]
    fig, axes = plt.subplots(C + 1, 1, figsize=(12, 1.8 * (C + 1)), sharex=True, squeeze=False)
    hi, lo = s.emg.max(axis=0), s.emg.min(axis=0)
    nfft = int(2 ** np.ceil(np.log2(0.1 * s.emg_rate)))
    for c in range(C):
        ax = axes[c, 0]
        ax.specgram(s.emg[:, c] - s.emg[:, c].mean(), NFFT=nfft, Fs=s.emg_rate, noverlap=nfft // 2, cmap="magma")
        ax.set_ylim(0, min(500.0, s.emg_rate / 2))
        ax.set_ylabel(f"{s.channel_names[c]}\nHz")
        clipped = np.flatnonzero((s.emg[:, c] >= hi[c]) | (s.emg[:, c] <= lo[c]))
        if len(clipped):
            ax.plot(clipped / s.emg_rate, np.full(len(clipped), 480.0), "c|", ms=6, label="at the rails")
            ax.legend(loc="upper right", fontsize=7)
    ax = axes[C, 0]
    for j in range(J):
        ax.plot(s.joint_time, np.degrees(s.joint_position[:, j]), lw=1.0, label=s.joint_names[j])
    ax.set_ylabel("angle (deg)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(str(s.source))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
