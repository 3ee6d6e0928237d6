"""The machine-readable records of runs and targets (camelCase keys, as everywhere in azrun's
output), shared by ``run``, ``resume``, ``rerun``, ``status``, ``runs`` and ``cancel``.

An exit code is shown only when the script's exit is known: a target that timed out, was
canceled, undeliverable or skipped has ``exitCode: null`` (never a copied ``0``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrun.cli._exit import ExitCode
from azrun.models import FleetResult, TargetResult, TargetState

if TYPE_CHECKING:
    from azrun.ledger import RunRecord, TargetRecord

__all__ = ["known_exit_code", "outcome_code", "run_document", "run_summary", "target_record"]

_EXIT_KNOWN = frozenset({TargetState.SUCCEEDED, TargetState.FAILED})


def known_exit_code(state: TargetState, exit_code: int | None) -> int | None:
    """The script's exit code if the state says the script ended on its own, else None."""
    return exit_code if state in _EXIT_KNOWN else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def target_record(result: TargetResult, *, run_id: str, dispatched_at: datetime | None = None) -> dict[str, Any]:
    """One target's record."""
    t = result.target
    return {
        "runId": run_id,
        "name": t.name,
        "id": t.resource_id,
        "os": t.os,
        "state": result.state.value,
        "exitCode": known_exit_code(result.state, result.exit_code),
        "message": result.message,
        "runCommandId": result.run_command_id,
        "dispatchedAt": _iso(dispatched_at),
        "startedAt": _iso(result.started_at),
        "endedAt": _iso(result.ended_at),
        "durationS": _seconds(result.started_at, result.ended_at),
        "stdoutUrl": result.output.stdout_url,
        "stderrUrl": result.output.stderr_url,
        "armRequests": result.arm_requests,
        "attempt": result.attempt,
        "wave": result.wave + 1,  # 1-based; a run without --waves is one wave
    }


def ledger_target_record(row: TargetRecord) -> dict[str, Any]:
    return target_record(row.to_result(), run_id=row.run_id, dispatched_at=row.dispatched_at)


def outcome_code(result: FleetResult, *, interrupted: bool = False, terminated: bool = False) -> ExitCode:
    """The exit code a run's outcome means (the table in :mod:`azrun.cli._exit`)."""
    if terminated:
        return ExitCode.TERMINATED
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if result.ok else ExitCode.TARGET_FAILED


def run_document(
    result: FleetResult,
    *,
    status: str,
    exit_code: int,
    created: datetime | None = None,
    ledger: str | None = None,
    output: str | None = None,
    dispatched: dict[str, datetime | None] | None = None,
) -> dict[str, Any]:
    """The one JSON document ``azrun run -o json`` prints at the end (and ``status -o json``)."""
    starts = [r.started_at for r in result.results if r.started_at]
    ends = [r.ended_at for r in result.results if r.ended_at]
    return {
        "runId": str(result.run_id),
        "status": status,
        "exitCode": exit_code,
        "created": _iso(created),
        "startedAt": _iso(min(starts)) if starts else None,
        "endedAt": _iso(max(ends)) if ends and len(ends) == len(result.results) else None,
        "counts": {"total": len(result.results), **result.counts()},
        "notes": list(result.notes),
        "ledger": ledger,
        "output": output,
        "targets": [
            target_record(r, run_id=str(result.run_id), dispatched_at=(dispatched or {}).get(r.target.resource_id))
            for r in result.results
        ],
    }


def run_summary(record: RunRecord, counts: dict[str, int]) -> dict[str, Any]:
    """One row of ``azrun runs``."""
    return {
        "runId": record.id,
        "created": record.created.isoformat(),
        "status": record.status,
        "counts": counts,
        "script": record.spec.get("script_name") or record.spec.get("command_id"),
        "sha256": record.spec.get("script_sha256"),
    }
