"""``RunHandle``: a run in progress, and the task that drives it.

**Cancellation contract: cancelling detaches.** Cancelling the task that awaits
:meth:`RunHandle.wait` (or :meth:`azrun.Fleet.run`), which is what an Azure Functions timeout
or ``asyncio.wait_for`` does, stops dispatching and stops watching, but does *not* cancel the
scripts: in-flight targets keep running on their machines, targets never sent stay Pending, the
run is recorded ``interrupted`` and its lease is released, and a later
:meth:`azrun.Fleet.resume` (the next Function invocation, or ``azrun resume``) re-attaches to
the running targets and dispatches the rest. Nothing runs twice. Detaching rather than
cancelling because a platform timeout says nothing about the scripts: killing half-done
patches on a timer would be the surprising choice, and a caller who wants that calls
:meth:`RunHandle.cancel`. The driver gets ``detach_grace_s`` to write the ledger; if the
process dies first, the lease lapses ``LEASE_TTL_S`` after it and ``resume`` works the same.

**Threads.** With ``Fleet(engine_loop="private")`` (the default from settings) the run's task
lives on azrun's engine loop (:mod:`azrun._engine`) and every method here may be called from
the caller's loop: :meth:`RunHandle.wait` bridges the result (and the cancellation above:
the caller's ``CancelledError`` is raised only once the run has detached and written its
ledger), :meth:`RunHandle.events` wakes the caller's loop thread-safely, and the controls
(:meth:`RunHandle.cancel`, ...) are handed to the engine loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from azrun._engine import bridge, call_soon
from azrun.fleet._events import EventHub, FleetEvent, ProgressSnapshot, RunSummary
from azrun.models import FleetResult, RunId

if TYPE_CHECKING:
    from azrun.fleet._runner import Runner
    from azrun.ledger import RunLedger

__all__ = ["DETACH_GRACE_S", "RunHandle"]

_LOG = logging.getLogger(__name__)
#: How long a cancelled run gets to record that it detached.
DETACH_GRACE_S = 10.0
_CANCELLED_MESSAGE = "the caller was cancelled (a platform timeout?); in-flight targets left running, resume later"


class RunHandle:
    """A run in progress: control it, watch it (``async for event in handle.events()``), wait for it."""

    def __init__(
        self, runner: Runner, ledger: RunLedger, hub: EventHub, *, detach_grace_s: float = DETACH_GRACE_S,
        driver: dict[str, Any] | None = None,
    ) -> None:
        self.runner = runner
        self.driver = dict(driver or {})
        self.ledger = ledger
        self._hub = hub
        self.detach_grace_s = detach_grace_s
        ledger.on_lost = self._lost
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._drive(), name=f"azrun-run-{runner.run_id}")

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r}, done={self._task.done()})"

    @property
    def run_id(self) -> RunId:
        """The run's id."""
        return self.runner.run_id

    def stop_dispatch(self, reason: str = "dispatch stopped") -> None:
        """Dispatch nothing more; in-flight targets finish; the rest end Skipped."""
        call_soon(self._loop, self.runner.stop_dispatch, reason)

    def cancel(self, reason: str = "run canceled") -> None:
        """Stop dispatching and cancel (DELETE) every in-flight run command: their scripts are killed."""
        call_soon(self._loop, self.runner.request_cancel, reason)

    def detach(self, reason: str = "run interrupted; in-flight targets left running") -> None:
        """Stop dispatching and stop watching; in-flight targets keep running (``resume`` later)."""
        call_soon(self._loop, self.runner.request_detach, reason)

    def snapshot(self) -> ProgressSnapshot:
        """The run's progress now (counts, rates, throttle waits)."""
        return self.runner.snapshot()

    def done(self) -> bool:
        """True once the run has ended (or was detached)."""
        return self._task.done()

    async def wait(self) -> FleetResult:
        """Every target's result once the run ends. Cancelling the caller detaches (module docstring).

        Raises:
            LedgerError: the ledger could not be written mid-run (disk full, read-only): the run
                was detached and is resumable once the state dir is writable again.
        """
        return await bridge(self._loop, self._wait())

    async def _wait(self) -> FleetResult:
        return await self._task

    def events(self) -> AsyncIterator[FleetEvent]:
        """Every event of the run from its start (dispatched, running, output lines, progress,
        finished), ending with :class:`~azrun.fleet.RunSummary`::

            async for event in handle.events():
                if isinstance(event, azrun.OutputLine):
                    log.info("[%s] %s", event.target.name, event.line)
        """
        return self._hub.subscribe()

    def _record_facts(self) -> None:
        """What the report shows of this run's driving (queued, off the loop): its throttle
        figures and who drove it, kept in the run's options (``runStats``, ``driver``)."""
        import os
        import socket

        snap = self.runner.snapshot()
        metrics = snap.throttle
        stats: dict[str, Any] = {"armRequests": snap.arm_requests, "throttled429": snap.throttled_429,
                                 "elapsedS": round(snap.elapsed_s, 3)}  # fmt: skip
        if metrics is not None:
            stats["throttled429"] = max(snap.throttled_429, int(metrics.throttled_429))
            stats["bucketWaitS"] = round(float(metrics.wait_s), 3)
        driver = {**self.driver, "host": socket.gethostname(), "pid": os.getpid()}
        try:
            self.ledger.merge_run_options(self.run_id, {"runStats": stats, "driver": driver})
        except Exception as exc:  # the report loses a figure; the run's outcome is unaffected
            _LOG.warning("run %s: throttle figures not recorded: %s", self.run_id, exc)

    def _lost(self, reason: str) -> None:
        """The ledger lost the lease or cannot be written (any thread): detach the run."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to detach
            self._loop.call_soon_threadsafe(self.runner.request_detach, reason)

    async def _drive(self) -> FleetResult:
        inner = self._loop.create_task(self.runner.execute(), name=f"azrun-runner-{self.run_id}")
        summary: RunSummary | None = None
        try:
            result = await asyncio.shield(inner)
            self._record_facts()
            await self.ledger.aflush()
            status = await asyncio.to_thread(self.ledger.run_status, self.run_id)
            summary = RunSummary(result, status or "unknown")
        except asyncio.CancelledError:
            self.runner.request_detach(_CANCELLED_MESSAGE)
            await asyncio.wait({inner}, timeout=self.detach_grace_s)
            if not inner.done():
                inner.cancel()
            self._record_facts()
            self.ledger.set_run_status(self.run_id, "interrupted", ended=True)
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(self.ledger.close))
            self._hub.close(summary)
        if self.ledger.failure is not None:
            error = self.ledger.failure
            error.result = result  # type: ignore[attr-defined]  # what was known when it stopped
            raise error
        return result
