"""Where the package's installed data (config/, launch/) lives, found the same way on a colcon
install and in the development venv: through the ament index, else under the interpreter prefix
(where `pip install` and scripts/setup.sh put `share/emg_rcnn_ros`)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "emg_rcnn_ros"


def share_dir() -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (a bare venv)
            pass
    except ImportError:
        pass
    candidate = Path(sys.prefix) / "share" / PACKAGE
    if (candidate / "config").is_dir():
        return candidate
    raise FileNotFoundError(
        f"share/{PACKAGE} not found in the ament index (AMENT_PREFIX_PATH) nor under {sys.prefix}: "
        "is the package installed (colcon build, or scripts/setup.sh)?"
    )


def default_params_file() -> Path:
    return share_dir() / "config" / "emg_rcnn_ros.yaml"
