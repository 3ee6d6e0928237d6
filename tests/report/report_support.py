"""Ledger records for report tests (no Azure needed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from azrun.ledger import RunRecord, TargetRecord
from azrun.models import Target, TargetKind, TargetState

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
SUB = "11111111-1111-4111-8111-111111111111"


def make_target(name: str, rg: str = "rg-web", os: str = "linux") -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(resource_id=rid, name=name, kind=TargetKind.VM, subscription_id=SUB, resource_group=rg,
                  location="westeurope", os=os, power_state="running")


def make_record(seq: int, target: Target, state: TargetState, *, exit_code: int | None = None, dispatched: float | None = None,
            started: float | None = None, ended: float | None = None, message: str = "", stdout: str = "",
            url: bool = True) -> TargetRecord:
    at = lambda s: None if s is None else T0 + timedelta(seconds=s)  # noqa: E731
    return TargetRecord(
        run_id="r1", target=target, seq=seq, state=state, exit_code=exit_code, message=message, run_command_name=None,
        run_command_id=None, dispatched_at=at(dispatched), started_at=at(started), ended_at=at(ended),
        stdout_url=f"https://acct/c/r1/{target.name}/stdout" if url else None, stderr_url=None,
        stdout_bytes=len(stdout), stderr_bytes=0, output_truncated=False, stdout_tail=stdout, stderr_tail="",
        arm_requests=3, cleaned_at=None, updated_at=T0,
    )


def make_run(**spec: Any) -> RunRecord:
    return RunRecord(id="20261204-1200-abcdef", created=T0, updated=T0 + timedelta(seconds=50),
                     spec={"script_name": "patch.sh", "script_sha256": "ab" * 32, "parameters": [["ENV", "prod"]],
                           "protected_parameter_names": ["TOKEN"], **spec},
                     selector={"tags": ["role=web"]}, options={"max_concurrency": 2, "max_errors": "0"},
                     status="failed", pid=123, host="admin-box", ended=T0 + timedelta(seconds=60))


def mixed_records() -> list[TargetRecord]:
    return [
        make_record(0, make_target("vm-a"), TargetState.SUCCEEDED, exit_code=0, dispatched=1, started=10, ended=20, stdout="ok\n"),
        make_record(1, make_target("vm-b", rg="RG-Other"), TargetState.FAILED, exit_code=3, dispatched=2, started=11, ended=70,
                message="exit 3 secret=hunter2"),
        make_record(2, make_target("vm-c"), TargetState.TIMED_OUT, dispatched=3, started=12, ended=40),
        make_record(3, make_target("vm-d"), TargetState.SKIPPED, message="stopped", url=False),
    ]
