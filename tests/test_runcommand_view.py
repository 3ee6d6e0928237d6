"""azrun.runcommand._view: reading and interpreting a run command (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from azrun.models import TargetState
from azrun.runcommand import (
    RunCommandView,
    interpret,
    looks_timed_out,
)


def _view(state: str, exit_code: int | None = 0, lasted: float | None = None, **kw: Any) -> RunCommandView:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(seconds=lasted) if lasted is not None else None
    return RunCommandView(execution_state=state, exit_code=exit_code, start_time=start, end_time=end, **kw)


@pytest.mark.parametrize(
    ("view", "timeout", "state"),
    [
        (_view("Succeeded", 0, 3), 60, TargetState.SUCCEEDED),
        (_view("Succeeded", 2, 3), 60, TargetState.FAILED),  # exit code always checked
        (_view("Failed", 1, 3), 60, TargetState.FAILED),
        (_view("Failed", -1, 60), 60, TargetState.TIMED_OUT),  # the Linux handler's timeout
        (_view("Failed", -1, 59), 60, TargetState.TIMED_OUT),  # second-resolution times
        (_view("Failed", -1, 10), 60, TargetState.FAILED),  # killed early: not a timeout
        (_view("Failed", -1, 100), 0, TargetState.FAILED),  # no timeout set
        (_view("TimedOut", None, None), 60, TargetState.TIMED_OUT),
        (_view("Canceled", None, None), 60, TargetState.CANCELED),
        (_view("Unknown", None, 5), 60, TargetState.FAILED),  # "executed, state unknown"
        (_view("Running", 0, None), 60, None),
        (_view("Pending", 0, None), 60, None),
        (_view("", None, None), 60, None),
        (_view("SomethingNew", None, None), 60, None),  # modelAsString: tolerated, keep polling
        (_view("Running", 0, None, provisioning_state="Failed"), 60, TargetState.FAILED),
    ],
)
def test_interpretation(view: RunCommandView, timeout: int, state: TargetState | None) -> None:
    outcome = interpret(view, timeout)
    assert (outcome.state if outcome else None) is state


def test_timeout_detection_in_one_function() -> None:
    assert looks_timed_out(_view("Failed", -1, 30), 30)
    assert not looks_timed_out(_view("Failed", 137, 30), 30)
    assert not looks_timed_out(_view("Failed", -1, None), 30)
