"""One fleet run, start to finish: dispatch within the budgets, poll on a schedule, finish,
clean up, and write every state change to the ledger.

State machine per target (``_Work``)::

    Pending -> Dispatching -> Running -> Succeeded | Failed | TimedOut | Canceled
           \\-> Skipped              \\-> Undeliverable (ARM refused the PUT)

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from azrun.errors import AzrunError
from azrun.fleet._deliver import backoff_s, deliver
from azrun.fleet._events import FleetObserver, ProgressSnapshot, Scrubber
from azrun.fleet._options import FleetOptions
from azrun.fleet._output import OutputPort
from azrun.fleet._poll import DurationStats, PollScheduler, first_delay, next_delay
from azrun.fleet._work import Undeliverable, Work
from azrun.models import FleetResult, OutputRef, RunId, RunSpec, TargetState
from azrun.runcommand import (
    ArmFailure,
    FailureKind,
    RunCommandClient,
    RunCommandView,
    build_run_command,
    classify_error,
    interpret,
)
from azrun.throttle import TokenBucket

if TYPE_CHECKING:
    from azrun.ledger import Ledger

__all__ = ["WATCHDOG_MESSAGE", "Runner"]

_LOG = logging.getLogger(__name__)
_ACTIVE = frozenset({TargetState.DISPATCHING, TargetState.RUNNING})
WATCHDOG_MESSAGE = "no completion reported by the VM agent within timeout + grace; canceled"
_POLL_ERROR_LIMIT = 6
_DELETE_CONCURRENCY = 32


class Runner:
    """Drives one run. Build it with the works (from a new run or from the ledger on resume).

    Control (call from the event loop; the CLI's signal handlers do): :meth:`stop_dispatch`,
    :meth:`request_cancel` (stop and cancel what is in flight), :meth:`request_detach` (stop
    and leave in-flight targets running for a later resume).
    """

    def __init__(
        self,
        *,
        run_id: RunId,
        spec: RunSpec | None,
        timeout_s: int,
        works: Sequence[Work],
        ledger: Ledger,
        client: RunCommandClient,
        output: OutputPort,
        options: FleetOptions,
        observer: FleetObserver,
        scrub: Scrubber,
        read_refill_per_s: float = 25.0,
        throttle: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self._spec = spec
        self._timeout_s = timeout_s
        self.works = list(works)
        self._ledger = ledger
        self._client = client
        self._output = output
        self._opts = options
        self._observer = observer
        self._scrub = scrub
        self._read_refill = read_refill_per_s
        self._throttle = throttle
        self._clock = clock
        n = sum(1 for w in self.works if w.state is not TargetState.SKIPPED)
        self._limit = options.max_concurrency.concurrency(n)
        self._max_errors = options.max_errors.errors(n)
        self._errors = sum(1 for w in self.works if w.state.counts_as_error)
        self._active = 0
        self._finishing = 0  # targets whose outcome is known but whose output/ledger write is pending
        self._cond = asyncio.Condition()
        self._schedulers: dict[str, PollScheduler[Work]] = {}
        self._stats = DurationStats(options.poll.learn_after)
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {"dispatch": set(), "cleanup": set(), "misc": set()}
        self._delete_slots = asyncio.Semaphore(_DELETE_CONCURRENCY)
        self.stop_reason: str | None = None
        self._cancel = False
        self._detach = False
        self._external_cancel = False
        self._started = clock()
        self._first_dispatch: float | None = None
        self._scouts_left = options.poll.scouts
        self._replan_at = max(1, options.poll.learn_after)

    def __repr__(self) -> str:
        return f"Runner({self.run_id!r}, active={self._active}/{self._limit}, errors={self._errors})"

    # -- control ------------------------------------------------------------------------------
    def stop_dispatch(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake()

    def request_cancel(self, reason: str = "run canceled") -> None:
        self._cancel = True
        self.stop_dispatch(reason)

    def request_detach(self, reason: str = "run interrupted; in-flight targets left running") -> None:
        self._detach = True
        self.stop_dispatch(reason)

    def _wake(self) -> None:
        async def notify() -> None:
            async with self._cond:
                self._cond.notify_all()

        with contextlib.suppress(RuntimeError):
            self._spawn(notify(), "misc")

    def _spawn(self, coro: Any, kind: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        bucket = self._tasks[kind]
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # -- the run ------------------------------------------------------------------------------
    async def execute(self) -> FleetResult:
        """Run to completion (or until cancelled/detached); returns every target's result."""
        progress = asyncio.get_running_loop().create_task(self._progress_loop())
        try:
            await self._attach_existing()
            pending = deque(w for w in self.works if w.state is TargetState.PENDING)
            if self._opts.canary and pending and self._canary_pending():
                await self._canary(pending)
            await self._dispatch_all(pending)
            await self._drain()
            if self._cancel:
                await self._cancel_inflight()
        finally:
            progress.cancel()
            await self._shutdown()
        return FleetResult(self.run_id, tuple(w.result() for w in self.works))

    def _canary_pending(self) -> bool:
        """On resume, the canary phase is over once any canary target left Pending."""
        head = sorted(self.works, key=lambda w: w.seq)[: self._opts.canary]
        return all(w.state is TargetState.PENDING for w in head)

    async def _canary(self, pending: deque[Work]) -> None:
        group = [pending.popleft() for _ in range(min(self._opts.canary, len(pending)))]
        await self._dispatch_all(deque(group), limit=len(group))
        async with self._cond:
            await self._cond.wait_for(
                lambda: all(w.done.is_set() or w.state is TargetState.PENDING for w in group)
                or self._cancel or self._detach
            )
        bad = [w for w in group if w.state.terminal and w.state is not TargetState.SUCCEEDED]
        if bad and self.stop_reason is None:
            first = bad[0]
            self.stop_dispatch(f"canary failed ({first.target.name}: {first.state.value})")

    async def _dispatch_all(self, queue: deque[Work], *, limit: int | None = None) -> None:
        cap = min(limit or self._limit, self._limit)
        while queue:
            async with self._cond:
                await self._cond.wait_for(lambda: self.stop_reason is not None or self._active < cap)
            if self.stop_reason is not None:
                return
            if self._errors > self._max_errors:
                self.stop_dispatch(f"error budget exceeded ({self._errors} errors > max {self._max_errors})")
                return
            work = queue.popleft()
            if self._claim(work):
                work.task = self._spawn(self._dispatch(work), "dispatch")

    async def _drain(self) -> None:
        """Wait until nothing is in flight (or a cancel/detach asks to stop waiting)."""
        async with self._cond:
            await self._cond.wait_for(
                lambda: (self._active == 0 and self._finishing == 0) or self._cancel or self._detach
            )

    # -- dispatch -----------------------------------------------------------------------------
    def _claim(self, work: Work, *, resume: bool = False) -> bool:
        """Ledger first: Dispatching before the PUT (False if another process changed the row)."""
        now = datetime.now(timezone.utc)
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
        self._first_dispatch = self._first_dispatch or work.dispatched_mono
        self._active += 1
        self._observer.on_target(work.result())
        return True

    async def _dispatch(self, work: Work) -> None:
        try:
            view = await self._deliver(work)
        except Undeliverable as exc:
            await self._finish(work, TargetState.UNDELIVERABLE, None, self._scrub(str(exc)), None)
            return
        except Exception as exc:  # a bug or an unexpected error must not lose the target
            _LOG.exception("dispatch of %s failed", work.target.name)
            await self._finish(work, TargetState.UNDELIVERABLE, None, self._scrub(f"{type(exc).__name__}: {exc}"), None)
            return
        await self._running(work, view)

    async def _running(self, work: Work, view: RunCommandView) -> None:
        if work.taken:
            return
        work.state = TargetState.RUNNING
        if work.sent_mono is None:
            work.sent_mono, work.sent_at = self._clock(), datetime.now(timezone.utc)
        if self._timeout_s > 0 and work.deadline is None:
            work.deadline = work.sent_mono + self._timeout_s + self._opts.grace_s(self._timeout_s)
        work.run_command_id = view.id or work.run_command_id
        work.started_at = view.start_time or work.started_at
        stdout_url, stderr_url = self._output.urls(work.target)
        self._ledger.update_target(
            self.run_id, work.target.resource_id, state=TargetState.RUNNING, run_command_id=work.run_command_id,
            stdout_url=stdout_url, stderr_url=stderr_url, arm_requests=work.requests,
        )  # fmt: skip
        self._observer.on_target(work.result())
        if self._cancel or self._external_cancel or self._ledger.run_status(self.run_id) == "canceling":
            await self._cancel_one(work, TargetState.CANCELED, "canceled")
            return
        self._output.attach(work.target)
        policy = self._opts.poll
        if self._scouts_left > 0 and len(self._stats) < policy.learn_after:
            self._scouts_left -= 1
            work.scout = True
        work.interval = first_delay(policy, self._stats)
        if work.scout:
            work.interval = min(work.interval, policy.scout_interval_s)
        elif len(self._stats) < policy.learn_after and any(w.scout and not w.taken for w in self.works):
            # scouts are out: wait for what they learn (``_replan`` pulls this in) instead of guessing
            work.interval = max(work.interval, policy.max_interval_s)
        self._schedule(work, work.interval)

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
        return await deliver(self._client, work, body, self._opts)

    def _blob_expiry_s(self) -> int:
        if self._timeout_s <= 0:
            return 7 * 24 * 3600
        return int(self._timeout_s + self._opts.grace_s(self._timeout_s) + 3600)

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
                self._spawn(self._cleanup(work), "cleanup")  # finished before the crash, not deleted yet
        await asyncio.gather(*(self._reattach(w) for w in redo))

    def _arm_deadline(self, work: Work) -> None:
        now = self._clock()
        elapsed = (datetime.now(timezone.utc) - work.dispatched_at).total_seconds() if work.dispatched_at else 0.0
        work.dispatched_mono = work.sent_mono = now - max(0.0, elapsed)
        work.sent_at = work.dispatched_at
        if self._timeout_s > 0:
            work.deadline = work.sent_mono + self._timeout_s + self._opts.grace_s(self._timeout_s)

    async def _reattach(self, work: Work) -> None:
        try:
            view = await self._client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            failure = classify_error(exc)
            await self._finish(work, TargetState.UNDELIVERABLE, None,
                               self._scrub(f"cannot read back the run command on resume: {failure.describe()}"), None)
            return
        if view is not None:
            work.put_sent = True
            await self._running(work, view)
            return
        self._active -= 1  # not sent after all: dispatch it like a pending target, ledger first
        work.sent_mono = work.sent_at = work.deadline = None
        if self._claim(work, resume=True):
            work.task = self._spawn(self._dispatch(work), "dispatch")

    # -- polling ------------------------------------------------------------------------------------
    def _scheduler(self, subscription: str) -> PollScheduler[Work]:
        sched = self._schedulers.get(subscription)
        if sched is None:
            policy = self._opts.poll
            refill = max(0.1, self._read_refill * policy.read_share)
            budget = TokenBucket(max(1.0, policy.burst), refill, name=f"polls/{subscription}")
            sched = PollScheduler(self._poll, budget=budget, max_inflight=policy.max_inflight,
                                  clock=self._clock, name=subscription)
            self._schedulers[subscription] = sched
            sched.start()
        return sched

    def _schedule(self, work: Work, delay_s: float) -> None:
        self._scheduler(work.target.subscription_id.lower()).schedule(work, delay_s)

    async def _poll(self, work: Work) -> None:
        if work.taken or self._detach:
            return
        try:
            view = await self._client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            await self._poll_failed(work, classify_error(exc))
            return
        if work.taken:
            return
        work.poll_errors = 0
        work.polls += 1
        if view is None:
            await self._finish(work, TargetState.CANCELED, None,
                               "the run command (or its machine) was deleted while it ran (canceled)", work.last_view, deleted=True)
            return
        work.last_view = view
        work.started_at = view.start_time or work.started_at
        outcome = interpret(view, self._timeout_s)
        if outcome is not None:
            await self._finish(work, outcome.state, outcome.exit_code, outcome.message, view)
            return
        now = self._clock()
        if work.deadline is not None and now >= work.deadline:
            await self._cancel_one(work, TargetState.TIMED_OUT, WATCHDOG_MESSAGE)
            return
        if self._power_check_due(work, now) and await self._machine_gone(work):
            return
        fingerprint = (len(view.output), len(view.error), hash((view.output[-64:], view.error[-64:])))
        growing = work.fingerprint is not None and fingerprint != work.fingerprint
        work.fingerprint = fingerprint
        elapsed = now - (work.sent_mono or now)
        if work.scout and len(self._stats) < self._opts.poll.learn_after and elapsed < self._opts.poll.scout_window_s:
            work.interval = self._opts.poll.scout_interval_s
            self._schedule(work, work.interval)
            return
        work.interval = next_delay(
            self._opts.poll, self._stats, prev_interval=max(work.interval, self._opts.poll.min_interval_s),
            elapsed=elapsed, growing=growing,
            until_deadline=None if work.deadline is None else work.deadline - now,
        )  # fmt: skip
        self._schedule(work, work.interval)

    def _power_check_due(self, work: Work, now: float) -> bool:
        """Long overdue (past the learned p90, else past dispatch, by ``power_check_after_s``)?"""
        after = self._opts.poll.power_check_after_s
        if work.power_checked is not None:
            return now - work.power_checked >= after
        p90 = self._stats.quantile(0.9) or 0.0
        return now - (work.sent_mono or now) >= p90 + after

    async def _machine_gone(self, work: Work) -> bool:
        """Read the machine's power state; a machine that stopped under the script fails it."""
        work.power_checked = self._clock()
        try:
            power = await self._client.power_state(work.target, counter=work.count)
        except Exception as exc:
            _LOG.debug("power state of %s unknown: %s", work.target.name, classify_error(exc).describe())
            return False
        if power in (None, "running", "starting", "unknown") or work.taken:
            return False
        await self._cancel_one(work, TargetState.FAILED,
                               f"the machine is {power}: the script was stopped and cannot report completion")
        return True

    def _replan(self) -> None:
        """The duration estimate firmed up: pull in polls scheduled far past the learned p90."""
        p50, p90 = self._stats.quantile(0.5), self._stats.quantile(0.9)
        if p50 is None or p90 is None:
            return
        now, slack = self._clock(), self._opts.poll.min_interval_s
        for work in self.works:
            if work.state is not TargetState.RUNNING or work.taken or work.sent_mono is None:
                continue
            sched = self._schedulers.get(work.target.subscription_id.lower())
            due = sched.due_in(work) if sched is not None else None
            elapsed = now - work.sent_mono
            if due is not None and elapsed + due > p90 + slack:
                self._schedule(work, max(0.0, p50 - elapsed))

    def _scouts_ended(self) -> None:
        """The last scout ended with nothing learned (timed out, canceled, its machine gone): the
        targets that waited for what it would learn are polled on the initial guess instead."""
        if any(w.scout and not w.taken for w in self.works):
            return
        now, guess = self._clock(), first_delay(self._opts.poll, self._stats)
        for work in self.works:
            if work.state is not TargetState.RUNNING or work.taken or work.sent_mono is None or work.scout:
                continue
            sched = self._schedulers.get(work.target.subscription_id.lower())
            due = sched.due_in(work) if sched is not None else None
            elapsed = now - work.sent_mono
            if due is not None and elapsed + due > guess:
                self._schedule(work, max(0.0, guess - elapsed))

    async def _poll_failed(self, work: Work, failure: ArmFailure) -> None:
        work.poll_errors += 1
        fatal = failure.kind in (FailureKind.FORBIDDEN, FailureKind.AUTH, FailureKind.NOT_FOUND)
        if (fatal and work.poll_errors >= 3) or work.poll_errors >= _POLL_ERROR_LIMIT:
            await self._finish(work, TargetState.FAILED, None,
                               self._scrub(f"cannot read the run command: {failure.describe()}"), work.last_view)
            return
        work.interval = min(self._opts.poll.max_interval_s, max(1.0, work.interval * 2))
        self._schedule(work, work.interval)

    # -- finishing -----------------------------------------------------------------------------------
    def _take(self, work: Work) -> bool:
        """Claim the right to finish ``work`` (synchronous: no await between check and set)."""
        if work.taken or work.state.terminal:
            return False
        work.taken = True
        return True

    async def _cancel_one(self, work: Work, state: TargetState, message: str) -> None:
        """DELETE the run command (kills the script) and record ``state``."""
        if not self._take(work):
            return
        deleted = await self._delete(work)
        note = "" if deleted else " (the run command could not be deleted; run 'azrun cancel' again)"
        # the script is killed (or never reported): its exit is unknown, whatever the Running view said
        await self._record(work, state, None, message + note, work.last_view, cleaned=deleted)

    async def _finish(
        self, work: Work, state: TargetState, exit_code: int | None, message: str,
        view: RunCommandView | None, *, deleted: bool = False,
    ) -> None:
        if not self._take(work):
            return
        await self._record(work, state, exit_code, message, view, cleaned=deleted)
        if not deleted and work.put_sent and not self._opts.keep:
            self._spawn(self._cleanup(work), "cleanup")

    async def _record(
        self, work: Work, state: TargetState, exit_code: int | None, message: str,
        view: RunCommandView | None, *, cleaned: bool,
    ) -> None:
        was_active = work.state in _ACTIVE
        work.state, work.exit_code, work.message = state, exit_code, self._scrub(message)
        work.ended_at = (view.end_time if view and view.end_time else None) or datetime.now(timezone.utc)
        work.started_at = (view.start_time if view else None) or work.started_at
        if state.counts_as_error:
            self._errors += 1
        if view is not None and view.end_time and work.sent_at and state is not TargetState.CANCELED:
            # the instance view's times have whole seconds (truncated): +0.5 s on average, never < 0
            self._stats.add(max(0.0, (view.end_time - work.sent_at).total_seconds() + 0.5))
            if len(self._stats) >= self._replan_at:
                self._replan_at *= 2
                self._replan()
        if work.scout and len(self._stats) < self._opts.poll.learn_after:
            self._scouts_ended()
        if was_active:
            self._active -= 1
        self._finishing += 1
        try:
            await self._notify()  # free the slot before the (slower) output read
            work.output, work.stdout_tail, work.stderr_tail = await self._collect_output(work, view)
            work.cleaned = cleaned
            self._ledger.record_result(self.run_id, work.result())
            if cleaned:
                self._ledger.update_target(self.run_id, work.target.resource_id, cleaned_at=datetime.now(timezone.utc))
            self._observer.on_target(work.result())
            work.done.set()
        finally:
            self._finishing -= 1
            await self._notify()

    async def _collect_output(self, work: Work, view: RunCommandView | None) -> tuple[OutputRef, str, str]:
        if not work.put_sent:
            return OutputRef(), "", ""
        try:
            ref, out, err = await self._output.complete(work.target, view)
        except Exception as exc:
            _LOG.warning("output of %s could not be read: %s", work.target.name, exc)
            ref, out, err = OutputRef(truncated=True), view.output if view else "", view.error if view else ""
        return ref, self._scrub(out), self._scrub(err)

    async def _delete(self, work: Work) -> bool:
        """DELETE with Conflict backoff; True once the run command is gone."""
        for attempt in range(self._opts.conflict_retries + 1):
            try:
                async with self._delete_slots:
                    await self._client.delete(work.target, work.run_command_name, counter=work.count)
                return True
            except Exception as exc:
                failure = classify_error(exc)
                if failure.kind is FailureKind.NOT_FOUND:
                    return True
                if attempt == self._opts.conflict_retries or failure.kind not in (
                    FailureKind.CONFLICT, FailureKind.THROTTLED, FailureKind.NOT_SENT,
                    FailureKind.UNKNOWN_OUTCOME, FailureKind.OTHER,
                ):  # fmt: skip
                    _LOG.warning("could not delete %s on %s: %s", work.run_command_name, work.target.name,
                                 failure.describe())
                    return False
                await asyncio.sleep(backoff_s(self._opts, attempt))
        return False

    async def _cleanup(self, work: Work) -> None:
        """Delete a finished target's run command so the VM stays under the 25 cap."""
        if await self._delete(work):
            work.cleaned = True
            self._ledger.update_target(self.run_id, work.target.resource_id, cleaned_at=datetime.now(timezone.utc),
                                       arm_requests=work.requests)
        else:
            self._ledger.update_target(self.run_id, work.target.resource_id, arm_requests=work.requests)

    def _recall_unsent(self, state: TargetState, reason: str) -> None:
        """Stop dispatches whose PUT has not left the client yet (queued in the throttle): nothing
        was sent, so they become ``state`` (Skipped on cancel, Pending again on detach)."""
        for work in self.works:
            if work.state is not TargetState.DISPATCHING or work.put_attempted or work.taken:
                continue
            if work.task is not None and not work.task.done():
                work.task.cancel()
            work.taken = state.terminal
            work.state, work.message = state, reason if state.terminal else ""
            self._active -= 1
            self._ledger.update_target(
                self.run_id, work.target.resource_id, state=state, message=work.message,
                ended_at=datetime.now(timezone.utc) if state.terminal else None,
                dispatched_at=work.dispatched_at if state.terminal else None,
            )  # fmt: skip
            if state.terminal:
                self._observer.on_target(work.result())
                work.done.set()

    async def _cancel_inflight(self) -> None:
        """Cancel: recall unsent PUTs, wait for those in flight (they cancel themselves once
        answered), then DELETE every Running target."""
        self._recall_unsent(TargetState.SKIPPED, self.stop_reason or "run canceled")
        running = [w for w in self.works if w.state is TargetState.RUNNING and not w.taken]
        await asyncio.gather(*(self._cancel_one(w, TargetState.CANCELED, "canceled") for w in running))
        dispatch = [t for t in self._tasks["dispatch"] if not t.done()]
        if dispatch:
            await asyncio.wait(dispatch, timeout=60)
        left = [w for w in self.works if w.state is TargetState.RUNNING and not w.taken]
        await asyncio.gather(*(self._cancel_one(w, TargetState.CANCELED, "canceled") for w in left))

    # -- progress and shutdown -------------------------------------------------------------------------
    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self._opts.progress_interval_s)
            try:
                if not self._cancel and self._ledger.run_status(self.run_id) == "canceling":
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
        since = now - (self._first_dispatch or now)
        rate = dispatched / since if since > 0.5 else 0.0
        pending = counts.get(TargetState.PENDING.value, 0)
        median = self._stats.quantile(0.5) or 0.0
        eta = (pending / rate + median) if rate > 0 else None
        running = sorted(
            ((w.target.name, now - (w.sent_mono or w.dispatched_mono or now)) for w in self.works if w.state in _ACTIVE),
            key=lambda item: -item[1],
        )[:5]
        metrics = self._throttle.metrics() if self._throttle is not None and hasattr(self._throttle, "metrics") else None
        return ProgressSnapshot(
            run_id=self.run_id, elapsed_s=now - self._started, total=len(self.works), counts=counts,
            dispatched=dispatched, dispatch_rate_per_s=rate, eta_s=eta,
            polls_queued=sum(len(s) for s in self._schedulers.values()),
            arm_requests=sum(w.requests for w in self.works), throttled_429=sum(w.throttled for w in self.works),
            throttle=metrics, slowest=tuple(running), stopped_reason=self.stop_reason,
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
            with contextlib.suppress(TimeoutError):
                async with self._cond:
                    await asyncio.wait_for(self._cond.wait_for(lambda: self._finishing == 0), 60)
        if self._tasks["cleanup"]:
            await asyncio.wait(list(self._tasks["cleanup"]), timeout=120)
        await self._output.aclose()
        self._settle_pending()
        self._ledger.set_run_status(self.run_id, self._final_status(), ended=True)

    def _settle_pending(self) -> None:
        """Targets never dispatched end Skipped, with the reason (kept Pending when detaching)."""
        if self._detach:
            return
        reason = self.stop_reason or "not dispatched"
        for work in self.works:
            if work.state is TargetState.PENDING:
                work.state, work.message = TargetState.SKIPPED, reason
                work.ended_at = datetime.now(timezone.utc)
                self._observer.on_target(work.result())
        self._ledger.skip_pending(self.run_id, reason)

    def _final_status(self) -> str:
        if self._detach:
            return "interrupted"
        if self._cancel or self._ledger.run_status(self.run_id) in ("canceling", "canceled"):
            return "canceled"
        if any(w.state.counts_as_error or w.state is TargetState.CANCELED for w in self.works):
            return "failed"
        return "succeeded"

    @property
    def active(self) -> int:
        return self._active

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def limit(self) -> int:
        return self._limit
