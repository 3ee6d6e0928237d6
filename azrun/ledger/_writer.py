"""A run driver's ledger: writes off the event loop, the lease kept alive, a gate before each PUT.

The fleet's runner calls the ledger from the event loop, and a SQLite commit there stalls every
other task on the loop (measured: p99 89 ms of heartbeat lag on a 100-target run). A
:class:`RunLedger` therefore:

* sends every write to one background thread with its own connection, in order (so a target's
  rows are written in the order the runner decided them), and returns at once;
* keeps reads on the caller's connection (WAL: readers never wait for the writer);
* records ``begin_dispatch`` in the background too, and makes the runner wait for it, without
  blocking the loop, in :meth:`dispatch_gate` just before the PUT: the Dispatching row is
  durable before anything is sent (the resume invariant), and the lease is checked there;
* renews the run's lease on the same thread every ``renew_s`` (it lapses ``ttl_s`` after the
  last renewal, so a dead driver's run can be resumed) and adds the lease to every write's
  condition, so a driver that lost its lease never overwrites the new driver's rows;
* turns a failed write (disk full, read-only state dir) into one :class:`~azrun.errors.LedgerError`
  kept in :attr:`failure`: ``on_lost`` is told (the fleet detaches the run: nothing more is
  dispatched, in-flight scripts keep running and stay resumable) and later writes are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from azrun.errors import LedgerError
from azrun.ledger._records import target_key
from azrun.ledger._store import LEASE_RENEW_S, LEASE_TTL_S, LeaseHolder, Ledger, RunLeased
from azrun.models import TargetResult

__all__ = ["RunLedger"]

_LOG = logging.getLogger(__name__)
_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class RunLedger(Ledger):
    """The ledger one run's driver writes through (see the module docstring).

    Args:
        path: the ledger file.
        run_id: the run, whose lease ``holder`` already holds (``create_run``/``acquire_lease``).
        on_lost: called (from the writer thread) with a one-line reason once the lease is lost or
            a write failed; the fleet detaches the run.
    """

    def __init__(
        self,
        path: Path,
        run_id: str,
        holder: LeaseHolder,
        *,
        renew_s: float = LEASE_RENEW_S,
        ttl_s: float = LEASE_TTL_S,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(path)
        self.run_id = run_id
        self.holder = holder
        self.renew_s = renew_s
        self.ttl_s = ttl_s
        self.on_lost = on_lost
        self.failure: LedgerError | None = None
        self.writes = 0
        self._valid_until = time.monotonic() + ttl_s - renew_s / 2
        self._gates: dict[str, Future[Any]] = {}
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._out = Ledger(path)
        self._thread = threading.Thread(target=self._work, name=f"azrun-ledger-{run_id}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "failed" if self.failure else "ok"
        return f"RunLedger({str(self.path)!r}, run={self.run_id!r}, holder={self.holder}, {state}, writes={self.writes})"

    # -- writes: queued -------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def update_target(self, run_id: str, target_id: str, *, lease_token: str | None = None, **values: Any) -> None:
        self._submit(self._out.update_target, run_id, target_id, lease_token=self.holder.token, **values)

    def record_result(self, run_id: str, result: TargetResult, *, lease_token: str | None = None) -> None:
        super().record_result(run_id, result)  # -> update_target: queued

    def set_run_status(self, run_id: str, status: str, *, ended: bool = False, lease_token: str | None = None) -> None:
        self._submit(self._out.set_run_status, run_id, status, ended=ended, lease_token=self.holder.token)

    def merge_run_options(self, run_id: str, values: dict[str, Any], *, lease_token: str | None = None) -> None:
        self._submit(self._out.merge_run_options, run_id, values, lease_token=self.holder.token)

    def skip_pending(self, run_id: str, reason: str, *, lease_token: str | None = None) -> int:
        """Queued; returns 0 (the count is not known yet)."""
        self._submit(self._out.skip_pending, run_id, reason, lease_token=self.holder.token)
        return 0

    def begin_dispatch(self, run_id: str, target_id: str, **kwargs: Any) -> bool:
        """Queued; :meth:`dispatch_gate` waits for it before the PUT."""
        kwargs["lease_token"] = self.holder.token
        self._gates[target_key(target_id)] = self._submit(self._out.begin_dispatch, run_id, target_id, **kwargs)
        return True

    async def aflush(self) -> None:
        """Wait (off the loop) until everything queued so far is written."""
        await asyncio.wrap_future(self._submit(lambda: None))

    async def dispatch_gate(self, run_id: str, target_id: str) -> None:
        """Wait (off the loop) until the target's Dispatching row is committed, and check the lease.

        Raises:
            asyncio.CancelledError: the row was not written or the lease is gone; this dispatch is
                withdrawn (the target stays Pending for whoever resumes the run).
        """
        gate = self._gates.pop(target_key(target_id), None)
        committed = True if gate is None else await asyncio.wrap_future(gate)
        if committed and self.failure is None and time.monotonic() < self._valid_until:
            return
        if committed and self.failure is None:
            self._lose(f"run {self.run_id}: the lease could not be renewed in time; dispatch stopped")
        elif self.failure is None:
            self._lose(f"run {self.run_id}: target {target_id} was changed by another process; dispatch stopped")
        raise asyncio.CancelledError()

    # -- the writer thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        next_renew = time.monotonic() + self.renew_s
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, next_renew - time.monotonic()))
            except queue.Empty:
                job = ()  # type: ignore[assignment]  # nothing queued: time to renew
            if time.monotonic() >= next_renew:
                self._renew()
                next_renew = time.monotonic() + self.renew_s
            if job is None:
                return
            if job:
                self._run(job)

    def _run(self, job: _Job) -> None:
        future, fn, args, kwargs = job
        if self.failure is not None:
            future.set_result(False)
            return
        try:
            result = fn(*args, **kwargs)
        except RunLeased as exc:
            self._lose(exc.message)
            future.set_result(False)
        except Exception as exc:
            self._fail(exc)
            future.set_result(False)
        else:
            self.writes += 1
            future.set_result(True if result is None else result)

    def _renew(self) -> None:
        if self.failure is not None:
            return
        try:
            held = self._out.renew_lease(self.run_id, self.holder, self.ttl_s)
        except Exception as exc:
            self._fail(exc)
            return
        if held:
            self._valid_until = time.monotonic() + self.ttl_s - self.renew_s / 2
        else:
            self._lose(f"run {self.run_id}: another process took over its lease; dispatch stopped")

    def _fail(self, exc: BaseException) -> None:
        cause = str(getattr(exc, "__cause__", None) or exc).strip() or type(exc).__name__
        self._lose(
            f"the ledger at {self.path} cannot be written ({cause}); dispatch stopped, in-flight targets keep running",
            hint=f"free space or make {self.path.parent} writable, then: azrun resume {self.run_id}",
            now=f"ledger write failed ({cause}): no new dispatch; waiting for the targets in flight",
        )

    def _lose(self, message: str, *, hint: str | None = None, now: str | None = None) -> None:
        """Record the failure the run will end with; log at once only a short line of what happens
        now (the full message and its hint are the run's final error, printed once)."""
        if self.failure is not None:
            return
        self.failure = LedgerError(message, hint=hint or f"see: azrun status {self.run_id}")
        _LOG.warning("%s", now or message)
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(message)

    # -- end --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Write everything queued, let go of the lease, close both connections (blocking:
        call it through ``asyncio.to_thread`` from async code)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.failure is None:
            with contextlib.suppress(LedgerError):
                self._out.release_lease(self.run_id, self.holder)
        self._out.close()
        super().close()
