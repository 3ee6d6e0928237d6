"""The ledger: one SQLite file of runs and per-target states, so nothing is lost when the
terminal dies and every run can be resumed, re-run, cancelled or cleaned up later.

Where: ``<state dir>/ledger.db`` (the state dir is ``--state-dir`` / ``AZRUN_STATE_DIR`` / the
platform's state dir, see :mod:`azrun.config`). The directory is created 0700 and the file 0600.

What is written, and when:

* ``runs``: id, created, the run spec from :meth:`RunSpec.public_dict` (script hash, parameter
  names and public values, never protected values or passwords), selector and options JSON,
  status, and the **lease** of the process driving it (host, pid, a random token, since, expiry).
* ``targets``: one row per target, written as ``Dispatching`` *before* its PUT is sent (so a
  crash between the two is resolved by a GET on resume), then after every state change.
  Protected parameter values are scrubbed from every text column by the fleet before they get
  here; the ledger itself never receives them.

Driving a run takes its lease in one transaction (:meth:`Ledger.acquire_lease`, also inside
:meth:`Ledger.create_run`): refused while another holder's lease is live. The holder renews it
(:mod:`azrun.ledger._writer` does, every ``renew_s``) and it expires ``ttl_s`` (about twice the
renewal period) after its holder dies, so a second ``azrun resume`` is refused with the holder
named, and a crashed driver's run can be resumed half a minute later. Writes given a
``lease_token`` apply only while that lease is held, so a driver that lost its lease cannot
overwrite the new driver's rows.

Every write is one transaction. The journal is WAL (readers such as ``azrun status`` never
block the run); on file systems without shared memory (SMB/NFS shares used from Functions)
it falls back to ``DELETE``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azrun.errors import LedgerError
from azrun.ledger._records import (
    RUN_STATUSES,
    SCHEMA,
    SCHEMA_VERSION,
    TARGET_V3_COLUMNS,
    UPDATABLE,
    RunRecord,
    TargetRecord,
    run_row,
    target_key,
    target_row,
    target_to_json,
)
from azrun.models import RunSpec, SkippedTarget, Target, TargetResult, TargetState

__all__ = ["LEASE_RENEW_S", "LEASE_TTL_S", "LEDGER_FILE", "LeaseHolder", "Ledger", "RunLeased"]

LEDGER_FILE = "ledger.db"
#: The driver renews its lease this often; it expires ``LEASE_TTL_S`` after the last renewal.
LEASE_RENEW_S = 10.0
LEASE_TTL_S = 25.0
_LEASE_COLUMNS = (("lease_token", "TEXT"), ("lease_host", "TEXT"), ("lease_pid", "INTEGER"),
                  ("lease_since", "TEXT"), ("lease_expires", "REAL"))  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds") if value else None


class RunLeased(LedgerError):
    """Another live process drives this run (its lease has not expired)."""


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who drives a run: this host and process, and a random token (pids are reused)."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> LeaseHolder:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(8))

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


def _guard(token: str | None) -> tuple[str, tuple[Any, ...]]:
    """SQL that holds only while lease ``token`` holds the row's run (empty without a token)."""
    if token is None:
        return "", ()
    return " AND EXISTS (SELECT 1 FROM runs r WHERE r.id = targets.run_id AND r.lease_token = ?)", (token,)


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
            if not path.exists():
                # Never open/close the file while SQLite has it open in this process: closing
                # any descriptor drops the process's POSIX locks on it, and another process
                # would then checkpoint and delete a WAL this one is still writing.
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
            db.executescript(SCHEMA)
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
        elif row[0] < SCHEMA_VERSION:
            Ledger._migrate(db, row[0])

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        """1 -> 2: lease columns; target keys in lower case (ARM ids are case-insensitive).
        2 -> 3: per-target ``attempt`` and ``wave``."""
        db.execute("BEGIN IMMEDIATE")
        try:
            have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for name, kind in _LEASE_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            if version < 2:
                db.execute("UPDATE targets SET target_id = lower(target_id)")
            have = {r[1] for r in db.execute("PRAGMA table_info(targets)")}
            for name, kind in TARGET_V3_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE targets ADD COLUMN {name} {kind}")
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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
        """Close the database connection."""
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
        holder: LeaseHolder | None = None,
        ttl_s: float = LEASE_TTL_S,
        waves: Sequence[int] | None = None,
    ) -> None:
        """Record a new run and all its targets (Pending, or Skipped with the reason), leased
        to ``holder`` when given (one transaction). ``waves``: each target's rollout wave (in
        the order of ``targets``)."""
        now = _now()
        rows: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        for i, t in enumerate(targets):
            if target_key(t.resource_id) not in seen:
                wave = waves[i] if waves is not None else 0
                rows.append(self._new_target(run_id, len(rows), t, TargetState.PENDING, "", now, wave))
                seen.add(target_key(t.resource_id))
        for s in skipped:
            if target_key(s.target.resource_id) not in seen:
                rows.append(self._new_target(run_id, len(rows), s.target, TargetState.SKIPPED, s.reason, now, 0))
                seen.add(target_key(s.target.resource_id))
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(id, created, updated, spec, selector, options, status, pid, host)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, now, now, json.dumps(spec.public_dict(), sort_keys=True),
                 json.dumps(selector, sort_keys=True) if selector is not None else None,
                 json.dumps(options or {}, sort_keys=True), "running", os.getpid(), socket.gethostname()),
            )
            if holder is not None:
                self._take_lease(db, run_id, holder, ttl_s, time.time())
            db.executemany(
                "INSERT INTO targets(run_id, target_id, seq, target, name, state, message, ended_at, updated_at, wave)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    @staticmethod
    def _new_target(
        run_id: str, seq: int, t: Target, state: TargetState, msg: str, now: str, wave: int
    ) -> tuple[Any, ...]:
        ended = now if state is TargetState.SKIPPED else None
        return (run_id, target_key(t.resource_id), seq, target_to_json(t), t.name, state.value, msg, ended, now, wave)

    def set_run_status(
        self, run_id: str, status: str, *, ended: bool = False, lease_token: str | None = None
    ) -> None:
        """Set a run's status (``ended``: also stamp its end time)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        now = _now()
        guard = "" if lease_token is None else " AND lease_token=?"
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET status=?, updated=?, ended=CASE WHEN ? THEN ? ELSE ended END WHERE id=?" + guard,
                (status, now, int(ended), now, run_id, *(() if lease_token is None else (lease_token,))),
            )

    def merge_run_options(self, run_id: str, values: dict[str, Any], *, lease_token: str | None = None) -> None:
        """Set top-level keys of a run's options (what it learned as it went: its throttle
        figures, who drove it); other keys are kept. JSON-serialisable values only."""
        guard = "" if lease_token is None else " AND lease_token=?"
        with self._tx() as db:
            row = db.execute("SELECT options FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                return
            merged = {**json.loads(row[0] or "{}"), **values}
            db.execute(
                "UPDATE runs SET options=? WHERE id=?" + guard,
                (json.dumps(merged, sort_keys=True), run_id, *(() if lease_token is None else (lease_token,))),
            )

    # -- leases --------------------------------------------------------------------------------------
    def acquire_lease(self, run_id: str, holder: LeaseHolder, ttl_s: float = LEASE_TTL_S) -> RunRecord:
        """Take the run's lease for ``holder`` (one transaction) and mark it running.

        Raises:
            RunLeased: another holder's lease is live; the message names it (host, pid, since).
            LedgerError: no such run.
        """
        with self._tx() as db:
            self._take_lease(db, run_id, holder, ttl_s, time.time())
        return self.require_run(run_id)

    def _take_lease(self, db: sqlite3.Connection, run_id: str, holder: LeaseHolder, ttl_s: float, now: float) -> None:
        row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no run {run_id!r} in {self.path}", hint="list runs with 'azrun runs'")
        current = run_row(row)
        if row["lease_token"] not in (None, holder.token) and current.lease_held(now):
            raise RunLeased(
                f"run {run_id} is already being driven by {current.holder()}",
                hint=f"wait for it (its lease lapses {ttl_s:g} s after it stops), or stop it with 'azrun cancel {run_id}'",
            )
        since = _now() if row["lease_token"] != holder.token else row["lease_since"]
        db.execute(
            "UPDATE runs SET lease_token=?, lease_host=?, lease_pid=?, lease_since=?, lease_expires=?, pid=?, host=?,"
            " status=CASE WHEN status IN ('canceling') THEN status ELSE 'running' END, ended=NULL, updated=?"
            " WHERE id=?",
            (holder.token, holder.host, holder.pid, since, now + ttl_s, holder.pid, holder.host, _now(), run_id),
        )

    def renew_lease(self, run_id: str, holder: LeaseHolder, ttl_s: float = LEASE_TTL_S) -> bool:
        """Extend ``holder``'s lease; False when it no longer holds it (taken over after expiry)."""
        with self._tx() as db:
            cur = db.execute("UPDATE runs SET lease_expires=? WHERE id=? AND lease_token=?",
                             (time.time() + ttl_s, run_id, holder.token))
            return cur.rowcount == 1

    def release_lease(self, run_id: str, holder: LeaseHolder) -> None:
        """Let go of the lease (the run stays resumable by anyone at once)."""
        with self._tx() as db:
            db.execute("UPDATE runs SET lease_token=NULL, lease_expires=NULL WHERE id=? AND lease_token=?",
                       (run_id, holder.token))

    def claim(self, run_id: str, holder: LeaseHolder | None = None) -> RunRecord:
        """Take the run's lease for this process (see :meth:`acquire_lease`)."""
        return self.acquire_lease(run_id, holder or LeaseHolder.this_process())

    async def dispatch_gate(self, run_id: str, target_id: str) -> None:
        """Called by the runner just before a target's PUT: this ledger writes synchronously,
        so its Dispatching row is already durable. :class:`~azrun.ledger.RunLedger` waits here
        for its background write and checks the lease."""

    def run(self, run_id: str) -> RunRecord | None:
        """The run ``run_id`` (None when the ledger does not know it)."""
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return run_row(row) if row else None

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first."""
        rows = self._db.execute("SELECT * FROM runs ORDER BY created DESC, id DESC LIMIT ?", (limit,)).fetchall()
        return [run_row(r) for r in rows]

    def latest_run_id(self) -> str | None:
        """The newest run's id (None when there is none)."""
        row = self._db.execute("SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT 1").fetchone()
        return str(row[0]) if row else None

    def run_status(self, run_id: str) -> str | None:
        """The run's status (``running``, ``succeeded``, ``failed``, ``canceled``, ``interrupted``), or None."""
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
        """The run's target rows in dispatch order (optionally only those in ``states``)."""
        if states is None:
            rows = self._db.execute("SELECT * FROM targets WHERE run_id=? ORDER BY seq", (run_id,)).fetchall()
        else:
            wanted = [s.value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT * FROM targets WHERE run_id=? AND state IN ({marks}) ORDER BY seq", (run_id, *wanted)
            ).fetchall()
        return [target_row(r) for r in rows]

    def target(self, run_id: str, target_id: str) -> TargetRecord | None:
        """One target row of the run (None when it is not part of it)."""
        row = self._db.execute(
            "SELECT * FROM targets WHERE run_id=? AND target_id=?", (run_id, target_key(target_id))
        ).fetchone()
        return target_row(row) if row else None

    def counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's targets are in each state."""
        rows = self._db.execute("SELECT state, COUNT(*) FROM targets WHERE run_id=? GROUP BY state", (run_id,))
        return {str(state): int(n) for state, n in rows}

    def update_target(self, run_id: str, target_id: str, *, lease_token: str | None = None, **values: Any) -> None:
        """Set columns of one target row in one transaction (datetimes and enums converted).

        With ``lease_token``, only while that lease holds the run (:class:`RunLeased` otherwise).
        """
        unknown = set(values) - UPDATABLE
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
        guard, args = _guard(lease_token)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE targets SET {assignments} WHERE run_id=? AND target_id=?{guard}",
                (*cols.values(), run_id, target_key(target_id), *args),
            )
            if cur.rowcount != 1:
                if lease_token is not None and self.run(run_id) is not None:
                    raise RunLeased(f"run {run_id}: this process no longer holds its lease",
                                    hint=f"another process drives it now: azrun status {run_id}")
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
        lease_token: str | None = None,
    ) -> bool:
        """Mark a target Dispatching *before* its PUT, only if it is still in ``from_states``.

        Returns False when another process changed it meanwhile (``azrun cancel`` skipped it):
        the caller must not send the PUT.
        """
        wanted = [s.value for s in from_states]
        marks = ",".join("?" * len(wanted))
        guard, args = _guard(lease_token)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE targets SET state=?, run_command_name=?, run_command_id=?, dispatched_at=?, updated_at=?"
                f" WHERE run_id=? AND target_id=? AND state IN ({marks}){guard}",
                (TargetState.DISPATCHING.value, run_command_name, run_command_id, _iso(dispatched_at), _now(),
                 run_id, target_key(target_id), *wanted, *args),
            )
            return cur.rowcount == 1

    def skip_pending(self, run_id: str, reason: str, *, lease_token: str | None = None) -> int:
        """Every still-Pending target of the run becomes Skipped with ``reason``; returns how many."""
        now = _now()
        guard, args = _guard(lease_token)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE targets SET state=?, message=?, ended_at=?, updated_at=? WHERE run_id=? AND state=?{guard}",
                (TargetState.SKIPPED.value, reason, now, now, run_id, TargetState.PENDING.value, *args),
            )
            return int(cur.rowcount)

    def record_result(self, run_id: str, result: TargetResult, *, lease_token: str | None = None) -> None:
        """Write a target's final (or latest) result."""
        self.update_target(
            run_id,
            result.target.resource_id,
            lease_token=lease_token,
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
            attempt=result.attempt,
        )

    def uncleaned(self, run_id: str | None = None) -> list[TargetRecord]:
        """Finished targets whose run command may still exist (not yet deleted)."""
        sql = "SELECT * FROM targets WHERE run_command_name IS NOT NULL AND cleaned_at IS NULL"
        args: tuple[Any, ...] = ()
        if run_id:
            sql += " AND run_id=?"
            args = (run_id,)
        return [target_row(r) for r in self._db.execute(sql + " ORDER BY run_id, seq", args).fetchall()]
