"""The package is what a ROS workspace expects: manifest and setup agree, everything setup.py
installs exists, every executable the graphs name is a console script, config is found through
the same lookup on a colcon install and in the venv."""

from __future__ import annotations

import ast
import contextlib
import re
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

import pytest
import yaml

from emg_rcnn_ros.graph import GRAPHS, LAUNCH_ARGUMENTS

from .conftest import executable

PKG = Path(__file__).resolve().parents[1]
ROOT = PKG.parent


def _setup_kwargs() -> dict:
    tree = ast.parse((PKG / "setup.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.Dict):
            with contextlib.suppress(ValueError):
                consts[node.targets[0].id] = ast.literal_eval(node.value)
    version = re.search(r'version="([^"]+)"', (PKG / "setup.py").read_text()).group(1)
    return {"name": consts["PACKAGE"], "version": version, "nodes": consts["NODES"], "tools": consts["TOOLS"]}


def test_manifest_and_setup_agree() -> None:
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.get("format") == "3"
    kw = _setup_kwargs()
    assert root.findtext("name") == kw["name"] == "emg_rcnn_ros"
    assert root.findtext("version") == kw["version"]
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "launch_ros", "emg_rcnn_ros_msgs", "python3-serial",
                "python3-scipy", "python3-numpy", "python3-torch"):
        assert dep in deps, dep
    msgs = ET.parse(ROOT / "emg_rcnn_ros_msgs" / "package.xml").getroot()
    assert msgs.find("export/build_type").text == "ament_cmake"
    assert msgs.find("member_of_group").text == "rosidl_interface_packages"


def test_installed_files_exist() -> None:
    assert (PKG / "resource" / "emg_rcnn_ros").is_file()
    for pattern in ("launch/*.launch.py", "config/*.yaml"):
        assert glob(str(PKG / pattern)), pattern
    for launch in ("estimate.launch.py", "record.launch.py"):
        assert (PKG / "launch" / launch).is_file()


def test_every_named_executable_is_a_console_script() -> None:
    kw = _setup_kwargs()
    named = {spec.executable for g in GRAPHS.values() for spec in g()[0]}
    assert named <= set(kw["nodes"]), named - set(kw["nodes"])
    for exe in [*kw["nodes"], *kw["tools"]]:
        assert Path(executable(exe)).is_file()


def test_params_file_declares_each_node_under_any_namespace() -> None:
    from emg_rcnn_ros.share import default_params_file

    data = yaml.safe_load(default_params_file().read_text())
    for spec in (s for g in GRAPHS.values() for s in g()[0]):
        key = f"/**/{spec.name}"
        assert key in data and "ros__parameters" in data[key], key
        for p in spec.parameters:
            assert p in data[key]["ros__parameters"], (spec.name, p)
    assert all(desc for _, desc in LAUNCH_ARGUMENTS.values())


def test_write_params_replaces_only_what_it_is_given(tmp_path: Path) -> None:
    from emg_rcnn_ros.share import default_params_file, write_params

    shipped = yaml.safe_load(default_params_file().read_text())
    out = write_params(tmp_path / "sub" / "p.yaml", acquisition={"channels": 3}, trainer={"session": "x"})
    got = yaml.safe_load(out.read_text())
    assert got["/**/emg_acquisition"]["ros__parameters"]["channels"] == 3 != shipped["/**/emg_acquisition"][
        "ros__parameters"]["channels"]
    shipped["/**/emg_acquisition"]["ros__parameters"]["channels"] = 3
    shipped["/**/emg_trainer"]["ros__parameters"]["session"] = "x"
    assert got == shipped  # every other parameter as shipped
    with pytest.raises(KeyError, match="emg_amplifier"):
        write_params(tmp_path / "q.yaml", amplifier={"channels": 3})


def test_share_dir_is_found_through_the_index() -> None:
    """The same lookup as on a colcon install: ament_index with AMENT_PREFIX_PATH."""
    from ament_index_python.packages import get_package_share_directory

    from emg_rcnn_ros.share import share_dir

    share = Path(get_package_share_directory("emg_rcnn_ros"))
    assert share_dir() == share
    assert (share / "config" / "emg_rcnn_ros.yaml").read_text() == (PKG / "config" / "emg_rcnn_ros.yaml").read_text()
    assert (share / "launch" / "estimate.launch.py").is_file()


def test_launch_files_build_descriptions_where_launch_ros_exists() -> None:
    pytest.importorskip("launch_ros")
    import importlib.util

    for name in ("estimate", "record"):
        spec = importlib.util.spec_from_file_location(name, PKG / "launch" / f"{name}.launch.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        desc = mod.generate_launch_description()
        declared = {a.name for a in desc.entities if hasattr(a, "default_value")}
        assert set(LAUNCH_ARGUMENTS) <= declared


def _flat(params: dict, prefix: str = "") -> dict:
    """Nested YAML maps are dotted parameter names in ROS (quality: {off_rms: ...} is quality.off_rms)."""
    out = {}
    for k, v in params.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.ros
def test_every_declared_parameter_has_a_description_and_a_yaml_entry(monkeypatch) -> None:
    """Real nodes, constructed in-process: what they declare is what config/ ships."""
    import rclpy

    from emg_rcnn_ros.nodes.acquisition import Acquisition
    from emg_rcnn_ros.nodes.estimator import Estimator
    from emg_rcnn_ros.nodes.features import Features
    from emg_rcnn_ros.nodes.trainer import Trainer
    from emg_rcnn_ros.share import default_params_file

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    shipped = yaml.safe_load(default_params_file().read_text())
    rclpy.init()
    try:
        for cls in (Acquisition, Features, Estimator, Trainer):
            node = cls()
            try:
                declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}  # rclpy own
                for name in declared:
                    desc = node.describe_parameter(name)
                    assert desc.description, f"{node.get_name()}.{name} has no description"
                in_yaml = set(_flat(shipped[f"/**/{node.get_name()}"]["ros__parameters"]))
                assert declared == in_yaml, (node.get_name(), declared ^ in_yaml)
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown()


def test_install_layout_is_what_the_ros_tools_read() -> None:
    """As colcon lays it out: launch/ and config/ are real directories under share/ (ros2launch walks
    them with os.walk, which does not follow directory links) and every executable is in
    <prefix>/lib/emg_rcnn_ros (launch_ros, ros2 run), found by the same lookup as the share dir."""
    import os

    from emg_rcnn_ros.share import executable_path, prefix, share_dir

    assert share_dir() == prefix() / "share" / "emg_rcnn_ros"
    for sub, pattern in (("launch", ".launch.py"), ("config", ".yaml")):
        d = share_dir() / sub
        assert d.is_dir() and not d.is_symlink(), d
        walked = {f for _, _, files in os.walk(share_dir()) for f in files if f.endswith(pattern)}
        assert walked == {p.name for p in (PKG / sub).glob(f"*{pattern}")}, walked
    kw = _setup_kwargs()
    for exe in [*kw["nodes"], *kw["tools"]]:
        path = executable_path(exe)
        assert path.parent == prefix() / "lib" / "emg_rcnn_ros" and os.access(path, os.X_OK)
