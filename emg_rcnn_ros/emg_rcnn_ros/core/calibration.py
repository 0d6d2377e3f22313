"""Guided calibration: the timed plan of prompts and trials that the trainer node plays out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    at: float  # monotonic time (s)
    prompt: str
    session: str | None  # recording to start at this step; None: recording stops here


def parse_trials(items: list[str]) -> list[tuple[str, float]]:
    """'prompt:seconds' entries; raises ValueError naming the bad entry."""
    trials = []
    for item in items:
        prompt, _, secs = str(item).rpartition(":")
        try:
            seconds = float(secs)
        except ValueError:
            raise ValueError(f"calibration_trials entry '{item}' is not 'prompt:seconds'") from None
        if not prompt.strip() or not seconds > 0:
            raise ValueError(f"calibration_trials entry '{item}' needs a prompt and a positive duration")
        trials.append((prompt.strip(), seconds))
    if not trials:
        raise ValueError("calibration_trials is empty")
    return trials


def plan(trials: list[tuple[str, float]], rest: float, base: str, start: float) -> list[Step]:
    """Rest, trial, rest, trial ..., then a closing prompt; trial k is recorded as '<base>-trial<k>'."""
    steps, t, n = [], start, len(trials)
    for k, (prompt, secs) in enumerate(trials, 1):
        steps.append(Step(t, f"trial {k}/{n} in {rest:g} s: {prompt} ({secs:g} s) - relax now", None))
        t += rest
        steps.append(Step(t, f"trial {k}/{n}: GO - {prompt}", f"{base}-trial{k}"))
        t += secs
    steps.append(Step(t, f"calibration done: {n} trials recorded; call ~/train", None))
    return steps
