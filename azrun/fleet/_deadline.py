"""When a target's watchdog fires, counted the way real Azure behaves (pure functions).

The agent picks a script up 7-43 s after the PUT (minutes on a machine's first run command,
while the handler installs) and reports every 15 s. So the run's timeout is counted from the
start the agent reports (``startTime``), not from the dispatch; until a start is reported a
separate, generous limit (``start_timeout_s``) covers a script the agent never picks up.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["NEVER_STARTED_MESSAGE", "WATCHDOG_MESSAGE", "deadline", "never_started_message", "start_on_clock"]

WATCHDOG_MESSAGE = "no completion reported by the VM agent within timeout + grace; canceled"
NEVER_STARTED_MESSAGE = "the VM agent never picked the script up"


def never_started_message(start_timeout_s: float) -> str:
    return (f"{NEVER_STARTED_MESSAGE} within {start_timeout_s:g}s of dispatch (agent not ready, machine "
            "busy, or a first-run handler install that took longer: see --start-timeout); canceled")


def start_on_clock(*, reported: datetime, now_wall: datetime, now_mono: float, sent_mono: float) -> float:
    """The agent-reported start on the monotonic clock, kept within [sent, now] (clock skew
    between the machine and this host must neither end a run early nor extend it past now)."""
    mono = now_mono - (now_wall - reported).total_seconds()
    return min(now_mono, max(sent_mono, mono))


def deadline(
    *, sent_mono: float | None, start_mono: float | None, timeout_s: float, grace_s: float, start_timeout_s: float
) -> tuple[float | None, bool]:
    """``(deadline, waiting_for_start)``: the run's deadline once it started (``None``: no
    timeout), else the never-started limit from the PUT (``None``: no limit)."""
    if start_mono is not None:
        return (start_mono + timeout_s + grace_s if timeout_s > 0 else None), False
    if sent_mono is None or start_timeout_s <= 0:
        return None, True
    return sent_mono + start_timeout_s, True
