"""What comes back: a run command as read (:class:`RunCommandView`) and its interpretation
(:func:`interpret`, :func:`looks_timed_out`). No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from azrun.models import TargetState

__all__ = ["TIMEOUT_SLACK_S", "Outcome", "RunCommandView", "interpret", "looks_timed_out"]

#: A run counts as timed out when it lasted at least ``timeout - TIMEOUT_SLACK_S`` (the
#: instance view's times have one-second resolution and the kill is not instantaneous).
TIMEOUT_SLACK_S = 1.5


@dataclass(frozen=True, slots=True)
class RunCommandView:
    """A run command as read back (``$expand=instanceView``); unknown states kept as text."""

    id: str | None = None
    name: str = ""
    provisioning_state: str = ""
    execution_state: str = ""
    execution_message: str = ""
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_sdk(cls, rc: Any) -> RunCommandView:
        """From an SDK model (hybrid: attribute and dict access) or a plain ARM dict."""
        data = rc.as_dict() if hasattr(rc, "as_dict") else dict(rc)
        props = data.get("properties", data)
        iv = props.get("instanceView") or props.get("instance_view") or {}
        return cls(
            id=data.get("id"),
            name=str(data.get("name") or ""),
            provisioning_state=str(props.get("provisioningState") or props.get("provisioning_state") or ""),
            execution_state=str(iv.get("executionState") or iv.get("execution_state") or ""),
            execution_message=str(iv.get("executionMessage") or iv.get("execution_message") or ""),
            exit_code=_int(iv.get("exitCode", iv.get("exit_code"))),
            output=str(iv.get("output") or ""),
            error=str(iv.get("error") or ""),
            start_time=_time(iv.get("startTime", iv.get("start_time"))),
            end_time=_time(iv.get("endTime", iv.get("end_time"))),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        )


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished run command, as azrun judges it."""

    state: TargetState
    exit_code: int | None
    message: str


def looks_timed_out(view: RunCommandView, timeout_s: int) -> bool:
    """The Linux handler's timeout: ``Failed`` / exit -1 after (about) ``timeoutInSeconds``."""
    if view.execution_state.lower() == "timedout":
        return True
    if timeout_s <= 0 or view.exit_code != -1 or view.execution_state.lower() != "failed":
        return False
    if view.start_time is None or view.end_time is None:
        return False
    lasted = (view.end_time - view.start_time).total_seconds()
    return lasted >= timeout_s - TIMEOUT_SLACK_S


def interpret(view: RunCommandView, timeout_s: int) -> Outcome | None:
    """Terminal outcome of a run command, or ``None`` while it is still going.

    Succeeded needs exit code 0 (or none reported). ``Unknown`` with an end time (the handler's
    "executed, state unknown" after an upgrade) is a failure; any other unknown state waits.
    A ``Failed`` provisioning with no terminal execution state (e.g. the VM was deallocated
    mid-run, or the extension failed before the script) is a failure.
    """
    state = view.execution_state.lower()
    message = view.execution_message
    if state == "succeeded":
        if view.exit_code not in (None, 0):
            return Outcome(TargetState.FAILED, view.exit_code, message or f"exit code {view.exit_code}")
        return Outcome(TargetState.SUCCEEDED, view.exit_code if view.exit_code is not None else 0, message)
    if state in ("failed", "timedout"):
        if looks_timed_out(view, timeout_s):
            # the handler's -1 is its kill, not the script's exit: no exit code is known
            return Outcome(TargetState.TIMED_OUT, None, f"timed out after {timeout_s}s ({message})".strip())
        return Outcome(TargetState.FAILED, view.exit_code, message or "execution failed")
    if state == "canceled":
        return Outcome(TargetState.CANCELED, None, message or "canceled")
    if state == "unknown" and view.end_time is not None:
        return Outcome(TargetState.FAILED, view.exit_code, message or "execution state unknown")
    if view.provisioning_state.lower() == "failed":
        what = f"while the script was {view.execution_state}" if view.execution_state else "before the script ran"
        return Outcome(TargetState.FAILED, None,
                       f"run command provisioning failed {what} (VM stopped or deallocated, or the extension failed)")
    return None
