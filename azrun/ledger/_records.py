"""The ledger's rows as values: :class:`RunRecord`, :class:`TargetRecord`, target JSON, the schema.

Resource ids are compared case-insensitively (ARM treats them so): the ``target_id`` key column
holds :func:`target_key` (the id in lower case) while the target's JSON keeps its spelling.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azrun.models import OutputRef, Target, TargetKind, TargetResult, TargetState

__all__ = [
    "RUN_STATUSES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TARGET_V3_COLUMNS",
    "UPDATABLE",
    "RunRecord",
    "TargetRecord",
    "run_row",
    "target_from_json",
    "target_key",
    "target_row",
    "target_to_json",
]

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    spec TEXT NOT NULL,
    selector TEXT,
    options TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    ended TEXT,
    lease_token TEXT,
    lease_host TEXT,
    lease_pid INTEGER,
    lease_since TEXT,
    lease_expires REAL
);
CREATE TABLE IF NOT EXISTS targets (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    target_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    message TEXT NOT NULL DEFAULT '',
    run_command_name TEXT,
    run_command_id TEXT,
    dispatched_at TEXT,
    started_at TEXT,
    ended_at TEXT,
    stdout_url TEXT,
    stderr_url TEXT,
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    stdout_tail TEXT NOT NULL DEFAULT '',
    stderr_tail TEXT NOT NULL DEFAULT '',
    arm_requests INTEGER NOT NULL DEFAULT 0,
    cleaned_at TEXT,
    updated_at TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    wave INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, target_id)
);
CREATE INDEX IF NOT EXISTS targets_state ON targets(run_id, state);
"""

#: Run statuses: running -> (succeeded | failed | canceled | interrupted); "canceling" asks a
#: live runner to stop dispatching and cancel what is in flight.
RUN_STATUSES = ("running", "canceling", "succeeded", "failed", "canceled", "interrupted")


def target_key(resource_id: str) -> str:
    """The ledger's key for a resource id: ARM ids are case-insensitive."""
    return resource_id.lower()


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- target (de)serialisation: every field, so resume rebuilds the exact Target --------------------
def target_to_json(target: Target) -> str:
    data: dict[str, Any] = {f.name: getattr(target, f.name) for f in fields(target)}
    data["kind"] = target.kind.value
    data["tags"] = [list(t) for t in target.tags]
    data["user_identity_client_ids"] = list(target.user_identity_client_ids)
    return json.dumps(data, sort_keys=True)


def target_from_json(text: str) -> Target:
    data = json.loads(text)
    known = {f.name for f in fields(Target)}
    data = {k: v for k, v in data.items() if k in known}
    data["kind"] = TargetKind(data["kind"])
    data["tags"] = tuple((str(k), str(v)) for k, v in data.get("tags", ()))
    data["user_identity_client_ids"] = tuple(data.get("user_identity_client_ids", ()))
    return Target(**data)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of ``runs``."""

    id: str
    created: datetime
    updated: datetime
    spec: dict[str, Any]
    selector: dict[str, Any] | None
    options: dict[str, Any]
    status: str
    pid: int | None
    host: str | None
    ended: datetime | None
    lease_host: str | None = None
    lease_pid: int | None = None
    lease_since: datetime | None = None
    lease_expires: float | None = None

    def lease_live(self, now: float | None = None) -> bool:
        """True while a driver's lease on the run has not expired (it renews it while alive)."""
        return self.lease_expires is not None and self.lease_expires > (time.time() if now is None else now)

    def holder(self) -> str:
        """``host pid N since T``: who drives (or last drove) the run."""
        since = self.lease_since.strftime("%Y-%m-%d %H:%M:%S UTC") if self.lease_since else "?"
        return f"{self.lease_host or self.host} pid {self.lease_pid or self.pid} since {since}"

    def lease_held(self, now: float | None = None) -> bool:
        """A live lease whose holder is not known dead: on this host a dead pid frees the run at
        once (a crash, kill -9); on another host only expiry does."""
        if not self.lease_live(now):
            return False
        if self.lease_host == socket.gethostname() and self.lease_pid and sys.platform != "win32":
            return _pid_alive(self.lease_pid)
        return True

    @property
    def driven_here_by_live_process(self) -> bool:
        """True when another driver holds a live lease on the run (any host), or, for a run
        recorded before leases, when its recorded process is alive on this host."""
        if self.lease_expires is not None:
            ours = self.lease_pid == os.getpid() and self.lease_host == socket.gethostname()
            return self.lease_held() and not ours
        if not self.pid or self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - no signal 0 there: trust the lease's expiry
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One row of ``targets``."""

    run_id: str
    target: Target
    seq: int
    state: TargetState
    exit_code: int | None
    message: str
    run_command_name: str | None
    run_command_id: str | None
    dispatched_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    stdout_url: str | None
    stderr_url: str | None
    stdout_bytes: int
    stderr_bytes: int
    output_truncated: bool
    stdout_tail: str
    stderr_tail: str
    arm_requests: int
    cleaned_at: datetime | None
    updated_at: datetime
    attempt: int = 1
    wave: int = 0

    def to_result(self) -> TargetResult:
        return TargetResult(
            target=self.target,
            state=self.state,
            exit_code=self.exit_code,
            message=self.message,
            run_command_id=self.run_command_id,
            started_at=self.started_at,
            ended_at=self.ended_at,
            output=OutputRef(self.stdout_url, self.stderr_url, self.stdout_bytes, self.stderr_bytes,
                             self.output_truncated),
            stdout_tail=self.stdout_tail,
            stderr_tail=self.stderr_tail,
            arm_requests=self.arm_requests,
            attempt=self.attempt,
            wave=self.wave,
        )


#: Columns added by schema 3 (per-target delivery attempts, rollout waves).
TARGET_V3_COLUMNS = (("attempt", "INTEGER NOT NULL DEFAULT 1"), ("wave", "INTEGER NOT NULL DEFAULT 0"))

_TARGET_COLUMNS = (
    "run_id", "target_id", "seq", "target", "name", "state", "exit_code", "message", "run_command_name",
    "run_command_id", "dispatched_at", "started_at", "ended_at", "stdout_url", "stderr_url", "stdout_bytes",
    "stderr_bytes", "output_truncated", "stdout_tail", "stderr_tail", "arm_requests", "cleaned_at", "updated_at",
    "attempt", "wave",
)
UPDATABLE = frozenset(_TARGET_COLUMNS) - {"run_id", "target_id", "seq", "target", "name", "updated_at"}


def target_row(row: sqlite3.Row) -> TargetRecord:
    return TargetRecord(
        run_id=row["run_id"],
        target=target_from_json(row["target"]),
        seq=row["seq"],
        state=TargetState(row["state"]),
        exit_code=row["exit_code"],
        message=row["message"],
        run_command_name=row["run_command_name"],
        run_command_id=row["run_command_id"],
        dispatched_at=_dt(row["dispatched_at"]),
        started_at=_dt(row["started_at"]),
        ended_at=_dt(row["ended_at"]),
        stdout_url=row["stdout_url"],
        stderr_url=row["stderr_url"],
        stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"],
        output_truncated=bool(row["output_truncated"]),
        stdout_tail=row["stdout_tail"],
        stderr_tail=row["stderr_tail"],
        arm_requests=row["arm_requests"],
        cleaned_at=_dt(row["cleaned_at"]),
        updated_at=_dt(row["updated_at"]) or datetime.now(timezone.utc),
        attempt=row["attempt"],
        wave=row["wave"],
    )


def run_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        created=datetime.fromisoformat(row["created"]),
        updated=datetime.fromisoformat(row["updated"]),
        spec=json.loads(row["spec"]),
        selector=json.loads(row["selector"]) if row["selector"] else None,
        options=json.loads(row["options"]),
        status=row["status"],
        pid=row["pid"],
        host=row["host"],
        ended=_dt(row["ended"]),
        lease_host=row["lease_host"],
        lease_pid=row["lease_pid"],
        lease_since=_dt(row["lease_since"]),
        lease_expires=row["lease_expires"],
    )
