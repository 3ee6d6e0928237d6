"""JSON shapes of run commands, their instance views and async operations, as recorded Azure answers.

Echoed properties never include secrets: protected parameters, ``runAsPassword``, blob managed
identities, nor the SAS query of any URI (the platform moves SAS tokens to protected settings).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azrun.sim.execution import ExecutionStatus
from azrun.sim.model import Operation, RunCommand

_NOT_ECHOED = frozenset(
    {"protectedParameters", "runAsPassword", "outputBlobManagedIdentity", "errorBlobManagedIdentity"}
)


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def _op_time(value: datetime) -> str:
    """Operation times as recorded: 7 decimals (``2023-12-19T08:57:45.8534027+00:00``)."""
    v = value.astimezone(timezone.utc) if value.tzinfo else value
    return f"{v:%Y-%m-%dT%H:%M:%S}.{v.microsecond:06d}0+00:00"


def run_command(rc: RunCommand, *, instance_view: bool = False) -> dict[str, Any]:
    m = rc.machine
    props: dict[str, Any] = {}
    for key, value in rc.settings.items():
        if key in _NOT_ECHOED:
            continue
        if key == "source" and isinstance(value, dict):
            value = {
                k: (_no_query(v) if k == "scriptUri" else v)
                for k, v in value.items()
                if k != "scriptUriManagedIdentity"
            }
        elif key in ("outputBlobUri", "errorBlobUri") and isinstance(value, str):
            value = _no_query(value)
        props[key] = value
    props.setdefault("asyncExecution", False)
    props["provisioningState"] = rc.provisioning_state()
    if instance_view:
        props["instanceView"] = execution_view(rc.status)
    body: dict[str, Any] = {
        "name": rc.name,
        "id": f"{m.id}/runCommands/{rc.name}",
        "type": m.run_command_type,
        "location": rc.location,
    }
    if rc.tags:
        body["tags"] = dict(rc.tags)
    body["properties"] = props
    return body

def operation(op: Operation) -> dict[str, Any]:
    body: dict[str, Any] = {"startTime": _op_time(op.start), "status": op.status, "name": op.id}
    if op.end is not None:
        body["endTime"] = _op_time(op.end)
    if op.error is not None:
        body["error"] = dict(op.error)
    if op.kind == "action" and op.status == "Succeeded":
        body["properties"] = {"output": action_result(op)}
    return body

def action_result(op: Operation) -> dict[str, Any]:
    """The legacy action's ``RunCommandResult``: stdout and stderr (last 4 KB each)."""
    st = op.execution
    out, err = (st.output, st.error) if st is not None else ("", "")
    return {
        "value": [
            {
                "code": f"ComponentStatus/{name}/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "message": text,
            }
            for name, text in (("StdOut", out), ("StdErr", err))
        ]
    }


def execution_view(st: ExecutionStatus) -> dict[str, Any]:
    """A run command's ``instanceView`` from the agent's live status."""
    view: dict[str, Any] = {
        "executionState": st.state,
        "executionMessage": st.message,
        "exitCode": st.exit_code,
        "output": st.output,
        "error": st.error,
    }
    if st.start_time is not None:
        view["startTime"] = _time(st.start_time)
    if st.end_time is not None:
        view["endTime"] = _time(st.end_time)
    return view  # exactly these keys, as recorded (no "statuses")


def _no_query(uri: str) -> str:
    """A blob URI without its SAS (the platform moves SAS tokens to protected settings)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri.split("?", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
