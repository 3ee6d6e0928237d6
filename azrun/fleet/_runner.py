"""One fleet run, start to finish: dispatch within the budgets, poll on a schedule, finish,
clean up, and write every state change to the ledger.

State machine per target (``Work``)::

    Pending -> Dispatching -> Running -> Succeeded | Failed | TimedOut | Canceled
           \\-> Skipped              \\-> Undeliverable (ARM refused the PUT, or the agent
                                          never started the script)

Invariants:

* A target is written ``Dispatching`` (with its run command's name and id) *before* its PUT,
  and only if the ledger still says ``Pending``; so after a crash every PUT that may have
  been sent is found by a GET on resume, and nothing is sent twice.
* ``max_concurrency`` bounds targets in Dispatching/Running. A target leaves the count the
  moment its outcome is known (its output is read and its run command deleted afterwards).
* Exactly one path finishes a target (``_take``): a poll, the watchdog, a cancel or a failed
  dispatch. The check-and-set happens before any ``await``, so they never race.
* Errors (Failed, TimedOut, Undeliverable) past ``max_errors`` stop dispatching; in-flight
  targets finish; the rest end ``Skipped`` with the reason. A failed canary does the same.
* Azure unreachable is not a failure: a PUT that was provably not sent puts its target back in
  the queue and dispatch waits for contact (probing with one PUT at a time); reads back off
  (:mod:`._watch`). Contact lost with nothing left to watch ends the run ``interrupted``.

The module layout, one class each, each built on the one before: :mod:`._finish` (state,
finishing, retries, deleting), :mod:`._watch` (polls and the watchdog), :mod:`._rollout` (waves,
soak, per-wave budgets), this module (dispatch, resume, control, progress and shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from azrun.errors import AzrunError
from azrun.fleet._contact import unreachable
from azrun.fleet._deadline import WATCHDOG_MESSAGE
from azrun.fleet._deliver import deliver
from azrun.fleet._events import ProgressSnapshot
from azrun.fleet._finish import ACTIVE
from azrun.fleet._rollout import Rollout
from azrun.fleet._work import OutcomeUnknown, Undeliverable, Work
from azrun.models import FleetResult, TargetState
from azrun.runcommand import FailureKind, RunCommandView, build_run_command, classify_error

__all__ = ["WATCHDOG_MESSAGE", "Runner"]

_LOG = logging.getLogger(__name__)
_PROBE_FIRST_S = 5.0
_PROBE_MAX_S = 60.0


def _transient(exc: Undeliverable) -> bool:
    """A delivery failure worth another attempt (``--retries``): conflict with another extension
    operation, throttling, 5xx, nothing sent or confirmed absent."""
    failure = exc.failure
    if isinstance(failure, str):
        return False
    return failure.kind in (FailureKind.CONFLICT, FailureKind.THROTTLED) or unreachable(failure)


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)


class Runner(Rollout):
    """Drives one run. Build it with the works (from a new run or from the ledger on resume).

    Control (call from the event loop; the CLI's signal handlers do): :meth:`stop_dispatch`,
    :meth:`request_cancel` (stop and cancel what is in flight), :meth:`request_detach` (stop
    and leave in-flight targets running for a later resume).
    """

    def __repr__(self) -> str:
        return f"Runner({self.run_id!r}, active={self._active}/{self._limit}, errors={self._errors})"

    # -- the run ------------------------------------------------------------------------------
    async def execute(self) -> FleetResult:
        """Run to completion (or until cancelled/detached); returns every target's result."""
        progress = asyncio.get_running_loop().create_task(self._progress_loop())
        try:
            await self._attach_existing()
            if self._plan is None:
                await self._wave_run(deque(w for w in self.works if w.state is TargetState.PENDING))
            else:
                await self._rollout()
            if self._cancel:
                await self._cancel_inflight()
        finally:
            progress.cancel()
            await self._shutdown()
        return self.result()

    def result(self) -> FleetResult:
        return FleetResult(self.run_id, tuple(w.result() for w in self.works), self._contact.notes())

    async def _wave_run(self, queue: deque[Work]) -> None:
        """Dispatch ``queue`` and wait for it (and its retries) to finish."""
        self._queue = queue
        while True:
            await self._dispatch_all(queue)
            await self._drain(queue)
            if (not queue and not self._retrying) or self.stop_reason is not None:
                break  # (a target provably not sent during an outage, or retried, is back in the queue)

    async def _dispatch_all(self, queue: deque[Work], *, limit: int | None = None) -> None:
        cap = min(limit or self._limit, self._limit)
        while queue:
            await self._wait_slot(cap)
            if self.stop_reason is not None:
                return
            if self._errors > self._max_errors:
                self.stop_dispatch(f"error budget exceeded ({self._errors} errors > max {self._max_errors})")
                return
            reason = self._wave_over_budget(self._wave)
            if reason is not None:
                self.stop_dispatch(reason)
                return
            work = queue.popleft()
            if self._claim(work):
                work.task = self._spawn(self._dispatch(work, queue), "dispatch")

    async def _wait_slot(self, cap: int) -> None:
        """Until a slot is free and Azure answers (or dispatch stops). With contact lost and
        nothing in flight to notice its return, one dispatch at a time probes it."""
        probe_s = _PROBE_FIRST_S
        while self.stop_reason is None:
            if not self._contact.down:
                if self._active < cap:
                    return
                async with self._cond:
                    await self._cond.wait_for(
                        lambda: self.stop_reason is not None or self._active < cap or self._contact.down
                    )
                continue
            if self._active == 0:
                if self._contact.down_for() >= self._opts.contact_limit_s:
                    self.request_detach(f"lost contact with Azure for {self._contact.down_for():.0f}s; "
                                        "nothing dispatched meanwhile: resume the run once Azure answers")
                    return
                await self.clock.sleep(probe_s)
                probe_s = min(_PROBE_MAX_S, probe_s * 2)
                if self._active == 0 and self.stop_reason is None:
                    return  # probe
                continue
            await self.clock.sleep(1.0)

    async def _drain(self, queue: deque[Work]) -> None:
        """Wait until nothing is in flight, or a target is back in the queue, or a cancel/detach
        asks to stop waiting."""
        async with self._cond:
            await self._cond.wait_for(
                lambda: (self._active == 0 and self._finishing == 0 and not self._retrying) or self._cancel
                or self._detach or (bool(queue) and self.stop_reason is None)
            )

    # -- dispatch -----------------------------------------------------------------------------
    def _claim(self, work: Work, *, resume: bool = False) -> bool:
        """Ledger first: Dispatching before the PUT (False if another process changed the row)."""
        now = self.clock.now()
        rc_id = f"{work.target.resource_id}/runCommands/{work.run_command_name}"
        states = (TargetState.PENDING, TargetState.DISPATCHING) if resume else (TargetState.PENDING,)
        if not self._ledger.begin_dispatch(
            self.run_id, work.target.resource_id, run_command_name=work.run_command_name,
            run_command_id=rc_id, dispatched_at=now, from_states=states,
        ):  # fmt: skip
            record = self._ledger.target(self.run_id, work.target.resource_id)
            if record is not None:
                work.state, work.message = record.state, record.message
            return False
        work.state, work.run_command_id = TargetState.DISPATCHING, rc_id
        work.dispatched_mono, work.dispatched_at = self._clock(), now
        if self._first_dispatch is None:
            self._first_dispatch = work.dispatched_mono
        self._active += 1
        self._observer.on_target(work.result())
        return True

    async def _dispatch(self, work: Work, queue: deque[Work] | None = None) -> None:
        try:
            await self._dispatch_one(work, queue)
        finally:
            if work.task is asyncio.current_task():
                work.task = None  # a finished task per target adds up over 10,000 (issue 17)

    async def _dispatch_one(self, work: Work, queue: deque[Work] | None) -> None:
        try:
            view = await self._deliver(work)
        except OutcomeUnknown as exc:
            self._unconfirmed(work, str(exc))
            return
        except Undeliverable as exc:
            if self._requeue(work, exc, queue):
                return
            await self._finish(work, TargetState.UNDELIVERABLE, None, self._scrub(str(exc)), None,
                               delivery=_transient(exc))
            return
        except Exception as exc:  # a bug or an unexpected error must not lose the target
            _LOG.exception("dispatch of %s failed", work.target.name)
            await self._finish(work, TargetState.UNDELIVERABLE, None, self._scrub(f"{type(exc).__name__}: {exc}"), None)
            return
        self._contact.ok()
        await self._running(work, view)

    def _requeue(self, work: Work, exc: Undeliverable, queue: deque[Work] | None) -> bool:
        """Provably not sent because Azure is unreachable: Pending again, first in the queue."""
        failure = exc.failure
        if queue is None or work.put_sent or isinstance(failure, str) or work.taken:
            return False
        if failure.kind is not FailureKind.NOT_SENT:
            return False  # Azure answered (a 5xx, confirmed absent): an attempt that failed, not an outage
        # (bounded by contact_limit_s: with nothing else in flight, the run detaches)
        self._contact.lost(failure)
        work.requeues += 1
        work.state, work.message = TargetState.PENDING, ""
        work.dispatched_mono = work.dispatched_at = None
        work.put_attempted = False
        self._active -= 1
        self._ledger.update_target(self.run_id, work.target.resource_id, state=TargetState.PENDING, message="",
                                   dispatched_at=None, arm_requests=work.requests)
        queue.appendleft(work)
        self._wake()
        return True

    def _unconfirmed(self, work: Work, message: str) -> None:
        """The PUT may have landed and Azure does not answer: watch it as if sent (the ledger keeps
        it Dispatching, so a resume reads it back by name too)."""
        work.put_sent = work.unconfirmed = True
        work.sent_mono, work.sent_at = self._clock(), self.clock.now()
        self._note_start(work, None)
        _LOG.warning("%s: %s", work.target.name, self._scrub(message))
        work.interval = self._opts.poll.min_interval_s
        self._schedule(work, min(self._opts.poll.outage_max_interval_s, 5.0))

    async def _running(self, work: Work, view: RunCommandView) -> None:
        if work.taken:
            return
        work.state = TargetState.RUNNING
        work.unconfirmed = False
        if work.sent_mono is None:
            work.sent_mono, work.sent_at = self._clock(), self.clock.now()
        self._note_start(work, view)
        work.run_command_id = view.id or work.run_command_id
        work.started_at = view.start_time or work.started_at
        stdout_url, stderr_url = self._output.urls(work.target)
        self._ledger.update_target(
            self.run_id, work.target.resource_id, state=TargetState.RUNNING, run_command_id=work.run_command_id,
            stdout_url=stdout_url, stderr_url=stderr_url, arm_requests=work.requests,
        )  # fmt: skip
        self._observer.on_target(work.result())
        if self._cancel or self._external_cancel:  # (an `azrun cancel` is read by _progress_loop, off the loop)
            await self._cancel_one(work, TargetState.CANCELED, "canceled")
            return
        self._output.attach(work.target)
        self._first_poll(work)

    async def _deliver(self, work: Work) -> RunCommandView:
        """Prepare output, PUT with Conflict backoff; on an unknown outcome GET before any new PUT."""
        if self._spec is None:
            raise Undeliverable("the run spec is not available to dispatch this target")
        reason = self._output.refuse(work.target)
        if reason:
            raise Undeliverable(reason)
        try:
            blobs = await self._output.prepare(work.target, self._blob_expiry_s())
        except AzrunError as exc:
            raise Undeliverable(f"output blobs could not be prepared: {exc.message}") from exc
        body = build_run_command(
            self._spec.for_os(work.target.os), location=work.target.location, run_id=self.run_id, blobs=blobs
        )
        await self._ledger.dispatch_gate(self.run_id, work.target.resource_id)  # Dispatching durable, lease held
        return await deliver(self._client, work, body, self._opts, sleep=self.clock.sleep)

    def _blob_expiry_s(self) -> int:
        if self._timeout_s <= 0:
            return 7 * 24 * 3600
        return int(self._opts.start_timeout_s + self._timeout_s + self._opts.grace_s(self._timeout_s) + 3600)

    # -- attach (resume) ---------------------------------------------------------------------------
    async def _attach_existing(self) -> None:
        """Resume: Running -> poll now; Dispatching -> GET by name (attach, or dispatch again)."""
        redo: list[Work] = []
        for work in self.works:
            if work.state is TargetState.RUNNING:
                self._active += 1
                self._arm_deadline(work)
                self._output.attach(work.target)
                work.interval = self._opts.poll.min_interval_s
                self._schedule(work, 0.0)
            elif work.state is TargetState.DISPATCHING:
                self._active += 1
                self._arm_deadline(work)
                redo.append(work)
            elif work.state.terminal and work.put_sent and not work.cleaned and not self._opts.keep:
                self._queue_cleanup(work, work.run_command_name)  # finished before the crash, not deleted yet
        await asyncio.gather(*(self._reattach(w) for w in redo))

    def _arm_deadline(self, work: Work) -> None:
        """Deadlines of a resumed target, from the ledger's dispatch and start times."""
        now, wall = self._clock(), self.clock.now()
        elapsed = (wall - work.dispatched_at).total_seconds() if work.dispatched_at else 0.0
        work.dispatched_mono = work.sent_mono = now - max(0.0, elapsed)
        work.sent_at = work.dispatched_at
        if work.started_at is not None:
            work.start_mono = now - max(0.0, (wall - work.started_at).total_seconds())
        self._note_start(work, None)

    async def _reattach(self, work: Work) -> None:
        try:
            view = await self._client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            failure = classify_error(exc)
            if unreachable(failure):
                self._contact.lost(failure)
                self._unconfirmed(work, f"cannot read back the run command on resume: {failure.describe()}")
                return
            await self._finish(work, TargetState.UNDELIVERABLE, None,
                               self._scrub(f"cannot read back the run command on resume: {failure.describe()}"), None)
            return
        if view is not None:
            work.put_sent = True
            await self._running(work, view)
            return
        self._active -= 1  # not sent after all: dispatch it like a pending target, ledger first
        work.sent_mono = work.sent_at = work.deadline = work.start_mono = None
        if self._claim(work, resume=True):
            work.task = self._spawn(self._dispatch(work), "dispatch")

    async def _poll(self, work: Work) -> None:
        if work.unconfirmed and not work.taken and not self._detach and not work.parked:
            await self._poll_unconfirmed(work)
            return
        await super()._poll(work)

    async def _poll_unconfirmed(self, work: Work) -> None:
        """A PUT of unknown outcome: found -> running; absent -> never sent; no answer -> again."""
        try:
            view = await self._client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            failure = classify_error(exc)
            if failure.kind is FailureKind.NOT_FOUND:
                view = None
            else:
                await self._poll_failed(work, failure)
                return
        self._contact.ok()
        if view is None:
            await self._finish(work, TargetState.UNDELIVERABLE, None,
                               "the PUT was not applied: Azure failed to answer it, and a read back found no run "
                               "command (never sent)", None, deleted=True, delivery=True)  # fmt: skip
            return
        await self._running(work, view)

    # -- progress and shutdown -------------------------------------------------------------------------
    async def _progress_loop(self) -> None:
        while True:
            await self.clock.sleep(self._opts.progress_interval_s)
            try:
                if not self._cancel and await self._read_status() == "canceling":
                    self._external_cancel = True
                    self.request_cancel("run canceled (azrun cancel)")
                self._observer.on_progress(self.snapshot())
            except Exception:  # progress must never break the run
                _LOG.exception("progress update failed")

    def snapshot(self) -> ProgressSnapshot:
        now = self._clock()
        counts: dict[str, int] = {}
        for w in self.works:
            counts[w.state.value] = counts.get(w.state.value, 0) + 1
        dispatched = sum(1 for w in self.works if w.dispatched_mono is not None)
        since = 0.0 if self._first_dispatch is None else now - self._first_dispatch
        rate = dispatched / since if since > 0.5 else 0.0
        pending = counts.get(TargetState.PENDING.value, 0)
        median = self._stats.quantile(0.5) or 0.0
        eta = (pending / rate + median) if rate > 0 else None
        running = sorted(
            ((w.target.name, now - _first(w.sent_mono, w.dispatched_mono, now)) for w in self.works if w.state in ACTIVE),
            key=lambda item: -item[1],
        )[:5]
        metrics = self._throttle.metrics() if self._throttle is not None and hasattr(self._throttle, "metrics") else None
        return ProgressSnapshot(
            run_id=self.run_id, elapsed_s=now - self._started, total=len(self.works), counts=counts,
            dispatched=dispatched, dispatch_rate_per_s=rate, eta_s=eta,
            polls_queued=sum(len(s) for s in self._schedulers.values()),
            arm_requests=sum(w.requests for w in self.works), throttled_429=sum(w.throttled for w in self.works),
            throttle=metrics, slowest=tuple(running), stopped_reason=self.stop_reason,
            wave=self._wave if self._plan is not None else None, waves=self.wave_count,
            soak_left_s=None if self._soak_until is None else max(0.0, self._soak_until - now),
            retrying=self._retrying,
        )  # fmt: skip

    async def _shutdown(self) -> None:
        for sched in self._schedulers.values():
            await sched.aclose()
        if self._detach:
            self._recall_unsent(TargetState.PENDING, "")
        dispatch = [t for t in self._tasks["dispatch"] if not t.done()]
        if self._detach:
            for task in dispatch:
                task.cancel()
        if dispatch:
            await asyncio.wait(dispatch, timeout=60)
        if self._finishing and not self._detach:
            try:
                async with self._cond:
                    await asyncio.wait_for(self._cond.wait_for(lambda: self._finishing == 0), 60)
            except asyncio.TimeoutError:
                pass
        if self._tasks["cleanup"]:
            await asyncio.wait(list(self._tasks["cleanup"]), timeout=120)
        await self._output.aclose()
        self._settle_pending()
        self._ledger.set_run_status(self.run_id, self._final_status(await self._read_status()), ended=True)

    def _settle_pending(self) -> None:
        """Targets never dispatched end Skipped, with the reason (kept Pending when detaching)."""
        if self._detach:
            return
        reason = self.stop_reason or "not dispatched"
        for work in self.works:
            if work.state is TargetState.PENDING:
                work.state, work.message = TargetState.SKIPPED, reason
                work.ended_at = self.clock.now()
                self._observer.on_target(work.result())
        self._ledger.skip_pending(self.run_id, reason)

    async def _read_status(self) -> str | None:
        """The run's status in the ledger (another process's ``azrun cancel`` writes it), read on a
        worker thread: a SQLite read on the loop stalls every other task on it."""
        return await asyncio.to_thread(self._ledger.run_status, self.run_id)

    def _final_status(self, recorded: str | None) -> str:
        if self._detach:
            return "interrupted"
        if self._cancel or recorded in ("canceling", "canceled"):
            return "canceled"
        if any(w.state.counts_as_error or w.state is TargetState.CANCELED for w in self.works):
            return "failed"
        return "succeeded"

    @property
    def contact_notes(self) -> tuple[str, ...]:
        return self._contact.notes()
