"""The guided-calibration plan (pure): entries parsed with clear errors, rest before each trial."""

from __future__ import annotations

import pytest

from emg_rcnn_ros.core.calibration import parse_trials, plan


def test_plan_rests_before_each_trial_and_names_the_sessions() -> None:
    steps = plan(parse_trials(["reach: forward:2", "rotate:1.5"]), 3.0, "cal", 100.0)
    assert [(s.at, s.session) for s in steps] == [(100.0, None), (103.0, "cal-trial1"), (105.0, None),
                                                  (108.0, "cal-trial2"), (109.5, None)]
    assert steps[1].prompt == "trial 1/2: GO - reach: forward"  # a colon inside the prompt is kept
    assert steps[-1].prompt.startswith("calibration done: 2 trials")


@pytest.mark.parametrize("items, words", [(["reach"], "not 'prompt:seconds'"), (["reach:soon"], "not 'prompt:seconds'"),
                                          ([":5"], "needs a prompt"), (["reach:-1"], "positive duration"),
                                          ([], "empty")])
def test_bad_entries_are_named(items: list[str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_trials(items)
