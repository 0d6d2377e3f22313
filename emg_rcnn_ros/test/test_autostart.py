"""The autostart's lifecycle calls (launcher.change_states) against a lifecycle node whose answer is
lost, as Fast DDS drops one when it has not matched the caller's reader in time. Real rclpy and
DDS: the node here is a plain rclpy node that serves the two lifecycle services and drops the
first answer it would send."""

from __future__ import annotations

import time

import pytest

from emg_rcnn_ros.launcher import ASK_AFTER, change_states
from emg_rcnn_ros.stopping import Flag

from .conftest import Observer

pytestmark = pytest.mark.ros


class LosesFirstAnswer:
    """/flaky's change_state and get_state on the observer's node: transitions happen, and the
    first change_state answer is never sent."""

    def __init__(self, observer: Observer) -> None:
        from lifecycle_msgs.msg import State, Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        self.state = State.PRIMARY_STATE_UNCONFIGURED
        self.requests = 0
        self._moves = {
            (Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_UNCONFIGURED): State.PRIMARY_STATE_INACTIVE,
            (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_INACTIVE): State.PRIMARY_STATE_ACTIVE}
        self.change = observer.node.create_service(ChangeState, "flaky/change_state", self._on_change)
        observer.node.create_service(GetState, "flaky/get_state", self._on_get)
        send = self.change.send_response

        def lose_first(response, header) -> None:
            if self.requests > 1:
                send(response, header)

        self.change.send_response = lose_first

    def _on_change(self, request, response):
        self.requests += 1
        move = self._moves.get((request.transition.id, self.state))
        if move is not None:
            self.state = move
        response.success = move is not None
        return response

    def _on_get(self, request, response):
        response.current_state.id = self.state
        return response


def test_autostart_survives_a_lost_transition_answer(ros_env, observer) -> None:
    import rclpy
    from lifecycle_msgs.msg import State
    from rclpy.signals import SignalHandlerOptions

    server = LosesFirstAnswer(observer)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]), signal_handler_options=SignalHandlerOptions.NO)
    caller = rclpy.create_node("test_autostart_caller", context=context)
    try:
        t = time.monotonic()
        # Shorter than the default 60 s, and longer than ASK_AFTER: waiting for the lost answer fails.
        change_states(caller, ["/flaky"], ["configure", "activate"], Flag(), timeout=3 * ASK_AFTER)
        took = time.monotonic() - t
    finally:
        caller.destroy_node()
        rclpy.try_shutdown(context=context)
    assert server.state == State.PRIMARY_STATE_ACTIVE
    assert server.requests == 2  # configure once (its answer lost, the state asked), activate once
    assert took >= ASK_AFTER  # the lost answer was waited for, then the state asked
