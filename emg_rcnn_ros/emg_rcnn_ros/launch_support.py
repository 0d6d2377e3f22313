"""launch_ros descriptions built from emg_rcnn_ros.graph (imported only by the launch files, on a
ROS install where launch_ros exists)."""

from __future__ import annotations

from .graph import GRAPHS, LAUNCH_ARGUMENTS, is_true
from .share import PACKAGE, default_params_file


def describe(graph: str):  # -> launch.LaunchDescription
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    args = [DeclareLaunchArgument(k, default_value=v[0], description=v[1]) for k, v in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*args, OpaqueFunction(function=_nodes, kwargs={"graph": graph})])


def _nodes(context, graph: str):
    import launch
    import lifecycle_msgs.msg
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState

    values = {k: launch.substitutions.LaunchConfiguration(k).perform(context) for k in LAUNCH_ARGUMENTS}
    specs, a = GRAPHS[graph](values)
    params_file = a["params_file"] or str(default_params_file())
    actions = []
    for spec in specs:
        common = {"package": PACKAGE, "executable": spec.executable, "name": spec.name,
                  "namespace": a["namespace"], "parameters": [params_file, spec.parameters], "output": "screen"}
        if not spec.lifecycle:
            actions.append(Node(**common))
            continue
        node = LifecycleNode(**common)
        actions.append(node)
        if is_true(a["autostart"]):
            def matcher(action, node=node):
                return action is node

            # Only configuring -> inactive: an operator's later deactivate (active -> inactive)
            # must stay deactivated.
            actions.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matcher,
                                                      transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))],
            )))
            actions.append(EmitEvent(event=ChangeState(lifecycle_node_matcher=matcher,
                                                       transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE)))
    return actions
