"""Model bundles: a directory with `config.json` (everything needed to reproduce the features and
interpret the outputs) and the weights. Written to a temporary sibling and renamed into place, so a
crash never leaves half a bundle; loading validates everything before a stream is trusted to it."""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import BUNDLE_CONFIG as CONFIG
from .config import BUNDLE_FORMAT as FORMAT
from .config import FeatureConfig, ModelConfig, from_dict, read_bundle_config
from .dataset import Normaliser
from .errors import BundleError, ConfigError
from .frames import FrameLayout
from .inference import LSTMLast, compile_sequential, run_layers
from .models import CNN, RCNN, SvrModel, build_torch_model, members_of, predict_normalised

TORCH_WEIGHTS = "weights.pt"
SVR_WEIGHTS = "svr.pkl"


def versions() -> dict[str, str]:
    from importlib import metadata

    import scipy
    import sklearn

    try:
        ours = metadata.version("emg_rcnn_ros")
    except metadata.PackageNotFoundError:  # running from a source tree
        ours = "source"
    return {"emg_rcnn_ros": ours, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


@dataclass
class Bundle:
    """A loaded, validated model."""

    path: Path
    config: dict[str, Any]
    features: FeatureConfig
    model_cfg: ModelConfig
    normaliser: Normaliser
    model: torch.nn.Module | SvrModel

    @property
    def sample_rate(self) -> float:
        return float(self.config["sample_rate"])

    @property
    def channels(self) -> int:
        return int(self.config["channels"])

    @property
    def joint_names(self) -> list[str]:
        return list(self.config["joint_names"])

    @property
    def history(self) -> int:
        return self.model_cfg.history

    def check_stream(self, rate: float, channels: int) -> FrameLayout:
        """Refuse a stream this model was not trained for, naming the mismatch; else the stream's
        frame layout, which the caller then checks each frame against."""
        if channels != self.channels:
            raise BundleError(f"{self.path}: model expects {self.channels} EMG channels, the stream has {channels}")
        try:
            layout = FrameLayout.build(self.features, rate)
        except ConfigError as exc:
            raise BundleError(f"{self.path}: stream rate {rate:g} Hz not supported: {exc}") from exc
        if not np.allclose(layout.band_edges, self.config["band_edges"], atol=1e-6):
            raise BundleError(
                f"{self.path}: stream rate {rate:g} Hz gives bands "
                f"{layout.band_edges[0]:g}-{layout.band_edges[-1]:g} Hz, "
                f"model was trained on {self.config['band_edges'][0]:g}-{self.config['band_edges'][-1]:g} Hz "
                f"(trained at {self.sample_rate:g} Hz)"
            )
        return layout

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Raw log-feature windows [N, history, C, bands] (frames at ModelConfig.offsets) -> joint angles
        [N, J] in radians."""
        return self.normaliser.untarget(predict_normalised(self.model, self.normaliser.features(windows)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_bundle(path: str | Path, config: dict[str, Any], model: torch.nn.Module | SvrModel) -> Path:
    """Write atomically: build in a temporary sibling directory, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if isinstance(model, SvrModel):
            wfile = tmp / SVR_WEIGHTS
            with open(wfile, "wb") as f:
                pickle.dump(model, f)
        else:
            wfile = tmp / TORCH_WEIGHTS
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, wfile)
        config = {**config, "format": FORMAT, "weights": wfile.name, "weights_sha256": _sha256(wfile)}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Load and validate; raises BundleError with the reason."""
    path = Path(path)
    cfg, fcfg = read_bundle_config(path)
    try:
        # Bundles written before these options existed were trained without them.
        mcfg = from_dict(ModelConfig, {"batch_norm": False, "input_clip": 0.0, "history_stride": 1,
                                       "shared_state": True, **cfg["model"]})
        norm = Normaliser.from_dict(cfg["normaliser"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: invalid configuration ({exc})") from exc
    C, B, J = int(cfg["channels"]), int(cfg["bands"]), len(cfg["joint_names"])
    if norm.feat_mean.shape != (C, B) or norm.target_mean.shape != (J,):
        raise BundleError(f"{path}: normalisation statistics do not match {C} channels x {B} bands, {J} joints")
    if len(cfg["channel_names"]) != C:
        raise BundleError(f"{path}: {len(cfg['channel_names'])} channel names for {C} channels")
    wfile = path / cfg["weights"]
    if not wfile.is_file():
        raise BundleError(f"{path}: weights file {cfg['weights']} missing")
    if _sha256(wfile) != cfg["weights_sha256"]:
        raise BundleError(f"{path}: weights file {cfg['weights']} is corrupt (checksum mismatch)")
    if mcfg.arch == "svr":
        with open(wfile, "rb") as f:
            model: torch.nn.Module | SvrModel = pickle.load(f)  # checksum-verified file we wrote
        if len(model.regs) != J:
            raise BundleError(f"{path}: SVR has {len(model.regs)} regressors for {J} joints")
    else:
        model = build_torch_model(mcfg, C, B, J)
        try:
            model.load_state_dict(torch.load(wfile, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
            raise BundleError(f"{path}: weights do not fit the {mcfg.arch} architecture ({exc})") from exc
        model.eval()
    return Bundle(path, cfg, fcfg, mcfg, norm, model)


class StreamingPredictor:
    """One estimate per new frame, for the live estimator, computed in numpy from the bundle's
    weights (core/inference.py says why), every member of an ensemble at once. For the RCNN each
    frame's CNN embedding is computed once and kept, since a frame sits in `history` windows: an
    estimate costs one frame through the CNN and the LSTM over the window. The last `span` frames
    are kept and every `history_stride`-th of them, ending with the newest, makes the window. The
    CNN and the SVR take the stacked normalised frames. Equal to `Bundle.predict` on the same
    window (tests)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.history: collections.deque[np.ndarray] = collections.deque(maxlen=bundle.model_cfg.span)
        self._stride = bundle.model_cfg.history_stride
        shape = (bundle.channels, int(bundle.config["bands"]))
        members = members_of(bundle.model)
        self._members = len(members)
        self._rcnn: tuple[list, LSTMLast, list] | None = None
        self._cnn: list | None = None
        if all(isinstance(k, RCNN) for k in members):
            self._rcnn = (compile_sequential([k.frame_cnn for k in members], (1, *shape))[0],
                          LSTMLast([k.lstm for k in members]),
                          compile_sequential([k.head for k in members], (members[0].lstm.hidden_size,))[0])
        elif all(isinstance(k, CNN) for k in members):
            self._cnn = compile_sequential([k.net for k in members], (bundle.history, *shape))[0]

    def reset(self) -> None:
        self.history.clear()

    @property
    def ready(self) -> bool:
        return len(self.history) == self.history.maxlen

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add a raw log-feature frame [C, bands]; returns joint angles [J] once the history is full."""
        x = self.bundle.normaliser.features(frame)
        # RCNN: each member's embedding of this frame [members, E]; otherwise the frame itself.
        if self._rcnn:
            x = run_layers(self._rcnn[0], np.broadcast_to(x, (self._members, 1, *x.shape)))
        self.history.append(x)
        if not self.ready:
            return None
        window = np.stack(list(self.history)[:: self._stride])
        if self._rcnn:
            _, lstm, head = self._rcnn
            y = run_layers(head, lstm(window.swapaxes(0, 1))).mean(axis=0)
        elif self._cnn:
            y = run_layers(self._cnn, np.broadcast_to(window, (self._members, *window.shape))).mean(axis=0)
        else:
            y = predict_normalised(self.bundle.model, window[None])[0]
        return self.bundle.normaliser.untarget(y)
