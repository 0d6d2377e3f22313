"""The node graph of each launch file: node list, parameters and remaps, as plain data.
Both `launch/*.launch.py` (launch_ros, on a ROS install) and `emg-rcnn-ros launch` (the runner,
where launch_ros is absent) build their processes from here, so they cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass, field

# name: (default, description). Every launch file declares these.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "driver": ("simulated", "EMG source: simulated, serial (generic framed protocol) or openbci_cyton"),
    "port": ("/dev/ttyUSB0", "serial port of the amplifier (serial and openbci_cyton drivers)"),
    "model_path": ("models/demo_rcnn", "model bundle directory for the estimator (and feature settings)"),
    "params_file": ("", "parameter YAML; empty = the package's config/emg_rcnn_ros.yaml"),
    "namespace": ("", "namespace of every node and topic, e.g. /left_arm"),
    "autostart": ("false", "configure and activate the lifecycle nodes at start (off for hardware)"),
    "command_topic": ("", "start emg_command, publishing commands here (e.g. /forward_position_controller/commands); "
                          "empty: no commands"),
    "command_type": ("", "emg_command: position (Float64MultiArray) or trajectory (JointTrajectory); empty: the "
                         "parameter file's"),
    "subject": ("subject01", "subject id for recordings (record.launch.py)"),
    "ground_truth_topic": ("emg/ground_truth", "JointState topic with measured angles (record.launch.py)"),
}


@dataclass
class NodeSpec:
    name: str
    executable: str
    lifecycle: bool
    parameters: dict[str, object] = field(default_factory=dict)  # overrides on top of the params file


def _args(overrides: dict[str, str] | None) -> dict[str, str]:
    out = {k: v[0] for k, v in LAUNCH_ARGUMENTS.items()}
    for k, v in (overrides or {}).items():
        if k not in out:
            raise ValueError(f"unknown launch argument '{k}' (known: {', '.join(sorted(out))})")
        out[k] = v
    # rcl takes absolute namespaces only; launch_ros makes a relative one absolute: so do we.
    out["namespace"] = "/" + out["namespace"].strip("/") if out["namespace"].strip("/") else ""
    return out


def lifecycle_names(specs: list[NodeSpec], namespace: str) -> list[str]:
    """Fully qualified names of the lifecycle nodes, in start order (what autostart drives)."""
    ns = namespace.rstrip("/")
    return [f"{ns}/{s.name}" if ns else f"/{s.name}" for s in specs if s.lifecycle]


def is_true(value: str) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def estimate_graph(overrides: dict[str, str] | None = None) -> tuple[list[NodeSpec], dict[str, str]]:
    """acquisition -> features -> estimator [-> command, when command_topic is set]."""
    a = _args(overrides)
    nodes = [
        NodeSpec("emg_acquisition", "emg_acquisition", True, {"driver": a["driver"], "port": a["port"]}),
        NodeSpec("emg_features", "emg_features", False, {"model_path": a["model_path"]}),
        NodeSpec("emg_estimator", "emg_estimator", True, {"model_path": a["model_path"]}),
    ]
    if a["command_topic"]:
        given = {"command_topic": a["command_topic"]}
        if a["command_type"]:  # else the parameter file's
            given["command_type"] = a["command_type"]
        nodes.append(NodeSpec("emg_command", "emg_command", True, given))
    return nodes, a


def record_graph(overrides: dict[str, str] | None = None) -> tuple[list[NodeSpec], dict[str, str]]:
    """acquisition -> trainer (records EMG with ground-truth angles)."""
    a = _args(overrides)
    nodes = [
        NodeSpec("emg_acquisition", "emg_acquisition", True, {"driver": a["driver"], "port": a["port"]}),
        NodeSpec("emg_trainer", "emg_trainer", False,
                 {"subject": a["subject"], "ground_truth_topic": a["ground_truth_topic"]}),
    ]
    return nodes, a


GRAPHS = {"estimate": estimate_graph, "record": record_graph}
