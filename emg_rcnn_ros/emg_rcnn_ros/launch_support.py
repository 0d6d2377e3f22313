"""launch_ros descriptions built from emg_rcnn_ros.graph (imported only by the launch files, on a
ROS install where launch_ros exists)."""

from __future__ import annotations

from .graph import GRAPHS, LAUNCH_ARGUMENTS, is_true, lifecycle_names
from .share import PACKAGE, default_params_file, executable_path


def describe(graph: str):  # -> launch.LaunchDescription
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    args = [DeclareLaunchArgument(k, default_value=v[0], description=v[1]) for k, v in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*args, OpaqueFunction(function=_nodes, kwargs={"graph": graph})])


def _nodes(context, graph: str):
    """The graph's nodes; with autostart, `emg-rcnn-ros autostart` beside them configures and
    activates the lifecycle nodes once and exits (a later manual deactivate stays). Not
    launch_ros's ChangeState events: a Ctrl-C while they wait for a service made `ros2 launch`
    exit 1 in 2 of 20 cycles (bench/stop.py), from a client that launch had destroyed."""
    import launch
    from launch.actions import ExecuteProcess
    from launch_ros.actions import LifecycleNode, Node

    values = {k: launch.substitutions.LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGUMENTS}
    specs, a = GRAPHS[graph](values)
    params_file = a["params_file"] or str(default_params_file())
    actions = []
    for spec in specs:
        common = {"package": PACKAGE, "executable": spec.executable, "name": spec.name,
                  "namespace": a["namespace"], "parameters": [params_file, spec.parameters], "output": "screen"}
        actions.append(LifecycleNode(**common) if spec.lifecycle else Node(**common))
    if is_true(a["autostart"]):
        actions.append(ExecuteProcess(cmd=[str(executable_path("emg-rcnn-ros")), "autostart",
                                           *lifecycle_names(specs, a["namespace"])],
                                      name="emg_rcnn_autostart", output="screen"))
    return actions
