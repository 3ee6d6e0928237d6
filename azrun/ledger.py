"""The ledger: one SQLite file of runs and per-target states, so nothing is lost when the
terminal dies and every run can be resumed, re-run, cancelled or cleaned up later.

Where: ``<state dir>/ledger.db`` (the state dir is ``--state-dir`` / ``AZRUN_STATE_DIR`` /
``$XDG_STATE_HOME/azrun``, see :func:`azrun.config.state_dir`). The directory is created 0700
and the file 0600.

What is written, and when:

* ``runs``: id, created, the run spec from :meth:`RunSpec.public_dict` (script hash, parameter
  names and public values, never protected values or passwords), selector and options JSON,
  status, and the pid/host of the process driving it.
* ``targets``: one row per target, written as ``Dispatching`` *before* its PUT is sent (so a
  crash between the two is resolved by a GET on resume), then after every state change.
  Protected parameter values are scrubbed from every text column by the fleet before they get
  here; the ledger itself never receives them.

Every write is one transaction. The journal is WAL (readers such as ``azrun status`` never
block the run); on file systems without shared memory (SMB/NFS shares used from Functions)
it falls back to ``DELETE``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azrun.errors import LedgerError
from azrun.models import OutputRef, RunSpec, SkippedTarget, Target, TargetKind, TargetResult, TargetState

__all__ = ["LEDGER_FILE", "SCHEMA_VERSION", "Ledger", "RunRecord", "TargetRecord", "target_from_json", "target_to_json"]

LEDGER_FILE = "ledger.db"
SCHEMA_VERSION = 1

_SCHEMA = """
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
    ended TEXT
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
    PRIMARY KEY (run_id, target_id)
);
CREATE INDEX IF NOT EXISTS targets_state ON targets(run_id, state);
"""

#: Run statuses: running -> (succeeded | failed | canceled | interrupted); "canceling" asks a
#: live runner to stop dispatching and cancel what is in flight.
RUN_STATUSES = ("running", "canceling", "succeeded", "failed", "canceled", "interrupted")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds") if value else None


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

    @property
    def driven_here_by_live_process(self) -> bool:
        """True when the recorded driver is a live process on this host (not us)."""
        if not self.pid or self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(self.pid)


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
        )


_TARGET_COLUMNS = (
    "run_id", "target_id", "seq", "target", "name", "state", "exit_code", "message", "run_command_name",
    "run_command_id", "dispatched_at", "started_at", "ended_at", "stdout_url", "stderr_url", "stdout_bytes",
    "stderr_bytes", "output_truncated", "stdout_tail", "stderr_tail", "arm_requests", "cleaned_at", "updated_at",
)
_UPDATABLE = frozenset(_TARGET_COLUMNS) - {"run_id", "target_id", "seq", "target", "name", "updated_at"}


def _target_row(row: sqlite3.Row) -> TargetRecord:
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
    )


def _run_row(row: sqlite3.Row) -> RunRecord:
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
    )


class Ledger:
    """The SQLite ledger; one connection, used from one thread (the fleet's event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = self._connect(self.path)

    @classmethod
    def open(cls, state_dir: Path | str) -> Ledger:
        """Open (creating if needed) ``<state_dir>/ledger.db``."""
        return cls(Path(state_dir) / LEDGER_FILE)

    # -- connection ------------------------------------------------------------------------------
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(
                f"cannot open the ledger at {path}: {exc}",
                hint="check --state-dir / AZRUN_STATE_DIR points at a writable directory",
            ) from exc
        db.row_factory = sqlite3.Row
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError:
            mode = "error"
        if str(mode).lower() != "wal":
            db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        try:
            db.executescript(_SCHEMA)
            Ledger._check_version(db)
        except sqlite3.Error as exc:
            db.close()
            raise LedgerError(f"the ledger at {path} is unusable: {exc}", hint="move it aside and retry") from exc
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if extra.exists():
                os.chmod(extra, 0o600)
        return db

    @staticmethod
    def _check_version(db: sqlite3.Connection) -> None:
        row = db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            db.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger was written by a newer azrun (schema {row[0]} > {SCHEMA_VERSION})",
                hint="upgrade azrun, or use another --state-dir",
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger write failed: {exc}", hint=f"check {self.path}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- runs --------------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        *,
        spec: RunSpec,
        targets: Sequence[Target],
        skipped: Iterable[SkippedTarget] = (),
        selector: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Record a new run and all its targets (Pending, or Skipped with the reason)."""
        now = _now()
        rows: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        for seq, t in enumerate(targets):
            rows.append(self._new_target(run_id, seq, t, TargetState.PENDING, "", now))
            seen.add(t.resource_id.lower())
        for seq, s in enumerate(skipped, start=len(rows)):
            if s.target.resource_id.lower() not in seen:
                rows.append(self._new_target(run_id, seq, s.target, TargetState.SKIPPED, s.reason, now))
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(id, created, updated, spec, selector, options, status, pid, host)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, now, now, json.dumps(spec.public_dict(), sort_keys=True),
                 json.dumps(selector, sort_keys=True) if selector is not None else None,
                 json.dumps(options or {}, sort_keys=True), "running", os.getpid(), socket.gethostname()),
            )
            db.executemany(
                "INSERT INTO targets(run_id, target_id, seq, target, name, state, message, ended_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )

    @staticmethod
    def _new_target(run_id: str, seq: int, t: Target, state: TargetState, msg: str, now: str) -> tuple[Any, ...]:
        ended = now if state is TargetState.SKIPPED else None
        return (run_id, t.resource_id, seq, target_to_json(t), t.name, state.value, msg, ended, now)

    def set_run_status(self, run_id: str, status: str, *, ended: bool = False) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        now = _now()
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status=?, updated=?, ended=CASE WHEN ? THEN ? ELSE ended END WHERE id=?",
                (status, now, int(ended), now, run_id),
            )

    def claim(self, run_id: str) -> None:
        """Record this process as the one driving the run (resume)."""
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET pid=?, host=?, status='running', ended=NULL, updated=? WHERE id=?",
                (os.getpid(), socket.gethostname(), _now(), run_id),
            )

    def run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [_run_row(r) for r in rows]

    def latest_run_id(self) -> str | None:
        row = self._db.execute("SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT 1").fetchone()
        return str(row[0]) if row else None

    def run_status(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return str(row[0]) if row else None

    def require_run(self, run_id: str | None) -> RunRecord:
        """The run (or the latest one when ``run_id`` is None), or a LedgerError with a hint."""
        rid = run_id or self.latest_run_id()
        record = self.run(rid) if rid else None
        if record is None:
            raise LedgerError(
                f"no run {run_id!r} in {self.path}" if run_id else f"no runs recorded in {self.path}",
                hint="list runs with 'azrun runs' (or point --state-dir at the right ledger)",
            )
        return record

    # -- targets -------------------------------------------------------------------------------------
    def targets(self, run_id: str, states: Iterable[TargetState] | None = None) -> list[TargetRecord]:
        if states is None:
            rows = self._db.execute("SELECT * FROM targets WHERE run_id=? ORDER BY seq", (run_id,)).fetchall()
        else:
            wanted = [s.value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT * FROM targets WHERE run_id=? AND state IN ({marks}) ORDER BY seq", (run_id, *wanted)
            ).fetchall()
        return [_target_row(r) for r in rows]

    def target(self, run_id: str, target_id: str) -> TargetRecord | None:
        row = self._db.execute(
            "SELECT * FROM targets WHERE run_id=? AND target_id=?", (run_id, target_id)
        ).fetchone()
        return _target_row(row) if row else None

    def counts(self, run_id: str) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM targets WHERE run_id=? GROUP BY state", (run_id,))
        return {str(state): int(n) for state, n in rows}

    def update_target(self, run_id: str, target_id: str, **values: Any) -> None:
        """Set columns of one target row in one transaction (datetimes and enums converted)."""
        unknown = set(values) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        cols = dict(values)
        for key, value in cols.items():
            if isinstance(value, datetime):
                cols[key] = _iso(value)
            elif isinstance(value, TargetState):
                cols[key] = value.value
            elif isinstance(value, bool):
                cols[key] = int(value)
        cols["updated_at"] = _now()
        assignments = ", ".join(f"{k}=?" for k in cols)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE targets SET {assignments} WHERE run_id=? AND target_id=?",
                (*cols.values(), run_id, target_id),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"target {target_id} of run {run_id} is not in the ledger")

    def begin_dispatch(
        self,
        run_id: str,
        target_id: str,
        *,
        run_command_name: str,
        run_command_id: str,
        dispatched_at: datetime,
        from_states: Iterable[TargetState] = (TargetState.PENDING,),
    ) -> bool:
        """Mark a target Dispatching *before* its PUT, only if it is still in ``from_states``.

        Returns False when another process changed it meanwhile (``azrun cancel`` skipped it):
        the caller must not send the PUT.
        """
        wanted = [s.value for s in from_states]
        marks = ",".join("?" * len(wanted))
        with self._tx() as db:
            cur = db.execute(
                "UPDATE targets SET state=?, run_command_name=?, run_command_id=?, dispatched_at=?, updated_at=?"
                f" WHERE run_id=? AND target_id=? AND state IN ({marks})",
                (TargetState.DISPATCHING.value, run_command_name, run_command_id, _iso(dispatched_at), _now(),
                 run_id, target_id, *wanted),
            )
            return cur.rowcount == 1

    def skip_pending(self, run_id: str, reason: str) -> int:
        """Every still-Pending target of the run becomes Skipped with ``reason``; returns how many."""
        now = _now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE targets SET state=?, message=?, ended_at=?, updated_at=? WHERE run_id=? AND state=?",
                (TargetState.SKIPPED.value, reason, now, now, run_id, TargetState.PENDING.value),
            )
            return int(cur.rowcount)

    def record_result(self, run_id: str, result: TargetResult) -> None:
        """Write a target's final (or latest) result."""
        self.update_target(
            run_id,
            result.target.resource_id,
            state=result.state,
            exit_code=result.exit_code,
            message=result.message,
            run_command_id=result.run_command_id,
            started_at=result.started_at,
            ended_at=result.ended_at,
            stdout_url=result.output.stdout_url,
            stderr_url=result.output.stderr_url,
            stdout_bytes=result.output.stdout_bytes,
            stderr_bytes=result.output.stderr_bytes,
            output_truncated=result.output.truncated,
            stdout_tail=result.stdout_tail,
            stderr_tail=result.stderr_tail,
            arm_requests=result.arm_requests,
        )

    def uncleaned(self, run_id: str | None = None) -> list[TargetRecord]:
        """Finished targets whose run command may still exist (not yet deleted)."""
        sql = "SELECT * FROM targets WHERE run_command_name IS NOT NULL AND cleaned_at IS NULL"
        args: tuple[Any, ...] = ()
        if run_id:
            sql += " AND run_id=?"
            args = (run_id,)
        return [_target_row(r) for r in self._db.execute(sql + " ORDER BY run_id, seq", args).fetchall()]
