"""The plain graph module that launch files and the runner share."""

from __future__ import annotations

import pytest

from emg_rcnn_ros.graph import estimate_graph, record_graph
from emg_rcnn_ros.launcher import node_command, parse_overrides


def test_estimate_graph_nodes_and_overrides() -> None:
    nodes, args = estimate_graph({"driver": "openbci_cyton", "port": "/dev/ttyACM0", "namespace": "/left"})
    assert [n.name for n in nodes] == ["emg_acquisition", "emg_features", "emg_estimator"]
    assert [n.lifecycle for n in nodes] == [True, False, True]
    assert nodes[0].parameters == {"driver": "openbci_cyton", "port": "/dev/ttyACM0"}
    cmd = node_command(nodes[0], args)
    assert cmd[1:5] == ["--ros-args", "-r", "__node:=emg_acquisition", "--params-file"]
    assert cmd[6:8] == ["-r", "__ns:=/left"]
    assert '-p' in cmd and 'driver:="openbci_cyton"' in cmd
    nodes, args = estimate_graph({"command_topic": "/arm/commands", "command_type": "trajectory"})
    assert [n.name for n in nodes][-1] == "emg_command" and nodes[-1].lifecycle  # what reaches the motor
    assert 'command_topic:="/arm/commands"' in node_command(nodes[-1], args)
    assert 'command_type:="trajectory"' in node_command(nodes[-1], args)
    assert "emg_command" not in [n.name for n in estimate_graph({"command_topic": ""})[0]]


@pytest.mark.parametrize(("given", "absolute"), [("left_arm", "/left_arm"), ("/left_arm/", "/left_arm"),
                                                  ("a/b", "/a/b"), ("", ""), ("/", "")])
def test_a_namespace_is_made_absolute_as_launch_ros_does(given: str, absolute: str) -> None:
    """rcl refuses `-r __ns:=left_arm`; `ros2 launch ... namespace:=left_arm` works, so the runner must too."""
    nodes, args = estimate_graph({"namespace": given})
    assert args["namespace"] == absolute
    cmd = node_command(nodes[0], args)
    assert ("-r", f"__ns:={absolute}") in zip(cmd, cmd[1:]) if absolute else not any("__ns" in c for c in cmd)


def test_unknown_launch_argument_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown launch argument 'drvier'"):
        estimate_graph({"drvier": "serial"})
    with pytest.raises(ValueError, match="name:=value"):
        parse_overrides(["driver=serial"])
    assert [n.name for n in record_graph()[0]] == ["emg_acquisition", "emg_trainer"]
