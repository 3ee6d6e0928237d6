"""The run documents of a durable run, kept in the output container (no I/O here).

A durable run is scheduled *by reference*: the orchestration's input holds names, never lists,
so every payload stays far below the engine's message limit however large the fleet. Under
``.azrun-durable/<run id>/`` (beside, not inside, the run's output blobs ``<run id>/...``):

* ``plan.json``: the spec (script, parameters, timeout; never a secret), options, shard sizes;
* ``targets/<shard>.jsonl``: one target per line, in dispatch order (a shard = one subscription);
* ``results/<shard>/<tick>.jsonl``: the targets a tick finished (one file per tick, rewritten
  whole when a tick is retried, so a retry never duplicates a line);
* ``cancel``: present once ``azrun durable cancel`` asked (the ticks read it; the external
  event only wakes the orchestrations sooner).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from azrun.models import OutputRef, RunSpec, Target, TargetKind, TargetResult, TargetState

__all__ = [
    "PREFIX",
    "cancel_name",
    "plan_name",
    "result_from_doc",
    "result_to_doc",
    "results_prefix",
    "spec_from_doc",
    "spec_to_doc",
    "target_from_doc",
    "target_to_doc",
    "targets_name",
    "tick_name",
]

PREFIX = ".azrun-durable"


def plan_name(run_id: str) -> str:
    return f"{PREFIX}/{run_id}/plan.json"


def targets_name(run_id: str, shard: int) -> str:
    return f"{PREFIX}/{run_id}/targets/{shard:04d}.jsonl"


def results_prefix(run_id: str) -> str:
    return f"{PREFIX}/{run_id}/results/"


def tick_name(run_id: str, shard: int, tick: int) -> str:
    return f"{results_prefix(run_id)}{shard:04d}/{tick:08d}.jsonl"


def cancel_name(run_id: str) -> str:
    return f"{PREFIX}/{run_id}/cancel"


def target_to_doc(t: Target) -> dict[str, Any]:
    return {
        "id": t.resource_id, "name": t.name, "kind": t.kind.value, "sub": t.subscription_id,
        "rg": t.resource_group, "loc": t.location, "os": t.os, "power": t.power_state,
        "tags": [list(p) for p in t.tags], "ss": t.scale_set, "inst": t.instance_id, "vm": t.vm_name,
        "sys": t.system_identity, "uids": list(t.user_identity_client_ids),
    }  # fmt: skip


def target_from_doc(d: dict[str, Any]) -> Target:
    return Target(
        resource_id=d["id"], name=d["name"], kind=TargetKind(d["kind"]), subscription_id=d["sub"],
        resource_group=d["rg"], location=d["loc"], os=d["os"], power_state=d["power"],
        tags=tuple((str(k), str(v)) for k, v in d.get("tags", ())), scale_set=d.get("ss"),
        instance_id=d.get("inst"), vm_name=d.get("vm", ""), system_identity=bool(d.get("sys")),
        user_identity_client_ids=tuple(d.get("uids", ())),
    )  # fmt: skip


def spec_to_doc(spec: RunSpec) -> dict[str, Any]:
    """Everything a worker needs to build the PUT body; secrets are refused before this point."""
    return {
        "script": spec.script, "script_uri": spec.script_uri, "script_uri_identity": spec.script_uri_identity,
        "command_id": spec.command_id, "parameters": [list(p) for p in spec.parameters],
        "run_as_user": spec.run_as_user, "timeout_s": spec.timeout_s, "async_execution": spec.async_execution,
        "script_name": spec.script_name, "os_scripts": [list(p) for p in spec.os_scripts],
    }  # fmt: skip


def spec_from_doc(d: dict[str, Any]) -> RunSpec:
    return RunSpec(
        script=d.get("script"), script_uri=d.get("script_uri"), script_uri_identity=d.get("script_uri_identity"),
        command_id=d.get("command_id"), parameters=tuple((str(a), str(b)) for a, b in d.get("parameters", ())),
        run_as_user=d.get("run_as_user"), timeout_s=int(d["timeout_s"]), async_execution=bool(d["async_execution"]),
        script_name=str(d.get("script_name", "")), os_scripts=tuple((str(a), str(b)) for a, b in d.get("os_scripts", ())),
    )  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def result_to_doc(index: int, r: TargetResult) -> dict[str, Any]:
    o = r.output
    return {
        "i": index, "id": r.target.resource_id, "name": r.target.name, "state": r.state.value,
        "exit": r.exit_code, "msg": r.message, "rc": r.run_command_id, "start": _iso(r.started_at),
        "end": _iso(r.ended_at), "out": [o.stdout_url, o.stderr_url, o.stdout_bytes, o.stderr_bytes, o.truncated],
        "tail": [r.stdout_tail, r.stderr_tail], "req": r.arm_requests,
    }  # fmt: skip


def result_from_doc(d: dict[str, Any], target: Target) -> TargetResult:
    out = d.get("out") or [None, None, 0, 0, False]
    tail = d.get("tail") or ["", ""]
    return TargetResult(
        target=target, state=TargetState(d["state"]), exit_code=d.get("exit"), message=str(d.get("msg", "")),
        run_command_id=d.get("rc"), started_at=_time(d.get("start")), ended_at=_time(d.get("end")),
        output=OutputRef(out[0], out[1], int(out[2]), int(out[3]), bool(out[4])),
        stdout_tail=str(tail[0]), stderr_tail=str(tail[1]), arm_requests=int(d.get("req", 0)),
    )  # fmt: skip


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
