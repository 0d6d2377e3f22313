"""Where the installed package lives, found one way on a colcon install and in the development
venv: the ament index (AMENT_PREFIX_PATH) gives the install prefix, else the interpreter's prefix
if it holds the package's index marker (scripts/setup.sh lays the venv out as colcon does). Under
that prefix: `share/emg_rcnn_ros/{config,launch}` and the executables in `lib/emg_rcnn_ros/`,
where `ros2 run`, launch_ros and the runner all look for them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

PACKAGE = "emg_rcnn_ros"
MARKER = Path("share") / "ament_index" / "resource_index" / "packages" / PACKAGE


def prefix() -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        try:
            return Path(get_package_prefix(PACKAGE))
        except (PackageNotFoundError, OSError, ValueError):  # AMENT_PREFIX_PATH unset or without us
            pass
    except ImportError:
        pass
    if (Path(sys.prefix) / MARKER).is_file():
        return Path(sys.prefix)
    raise FileNotFoundError(
        f"{PACKAGE} is not in the ament index (AMENT_PREFIX_PATH) nor installed under {sys.prefix}: "
        "is the package installed (colcon build and source install/setup.bash, or scripts/setup.sh)?"
    )


def share_dir() -> Path:
    return prefix() / "share" / PACKAGE


def default_params_file() -> Path:
    return share_dir() / "config" / "emg_rcnn_ros.yaml"


def write_params(path: str | Path, **nodes: dict[str, Any]) -> Path:
    """Write the package's parameter file to `path` with some nodes' parameters replaced, e.g.
    write_params(p, acquisition={"channels": 4}) for `emg_acquisition`: a run that streams other
    than the shipped defaults still starts from every shipped parameter."""
    import yaml  # not at import time: the nodes find their prefix without it

    shipped = default_params_file()
    data = yaml.safe_load(shipped.read_text())
    for node, values in nodes.items():
        key = f"/**/emg_{node}"
        if key not in data:
            raise KeyError(f"{shipped} has no section {key}")
        data[key]["ros__parameters"].update(values)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def executable_path(name: str) -> Path:
    """One of the package's executables (nodes, emg-rcnn, emg-rcnn-ros) in <prefix>/lib/emg_rcnn_ros."""
    path = prefix() / "lib" / PACKAGE / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"executable {path} not found (is {PACKAGE} installed completely?)")
    return path
