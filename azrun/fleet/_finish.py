"""The runner's state and how a target finishes: exactly one path records an outcome (``_take``),
the slot is freed before the (slower) output read, and the run command is deleted afterwards.

:class:`RunCore` is the base of :class:`azrun.fleet._runner.Runner` (dispatch and control) and
:class:`azrun.fleet._watch.Watching` (polls and the watchdog); it holds what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from azrun.fleet._contact import Contact
from azrun.fleet._delete import delete_run_command
from azrun.fleet._dispatch import Clock, Dispatcher, SystemClock
from azrun.fleet._events import FleetObserver, Scrubber
from azrun.fleet._options import FleetOptions
from azrun.fleet._output import OutputPort
from azrun.fleet._poll import CadenceEstimate, DurationStats, PollScheduler
from azrun.fleet._work import Work
from azrun.models import OutputRef, RunId, RunSpec, TargetState
from azrun.runcommand import RunCommandView

if TYPE_CHECKING:
    from azrun.ledger import Ledger

__all__ = ["ACTIVE", "RunCore"]

_LOG = logging.getLogger(__name__)
ACTIVE = frozenset({TargetState.DISPATCHING, TargetState.RUNNING})
_DELETE_CONCURRENCY = 32
#: States whose exit code is unknown: the script did not report one (killed, never started).
_NO_EXIT_CODE = frozenset({TargetState.TIMED_OUT, TargetState.CANCELED, TargetState.UNDELIVERABLE,
                           TargetState.SKIPPED})


class RunCore:
    """Shared state of one run, and finishing targets (see the module docstring)."""

    def __init__(
        self,
        *,
        run_id: RunId,
        spec: RunSpec | None,
        timeout_s: int,
        works: Sequence[Work],
        ledger: Ledger,
        client: Dispatcher,
        output: OutputPort,
        options: FleetOptions,
        observer: FleetObserver,
        scrub: Scrubber,
        read_refill_per_s: float = 25.0,
        throttle: Any = None,
        clock: Clock | None = None,
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
        self.clock: Clock = clock or SystemClock()
        self._clock = self.clock.monotonic
        n = sum(1 for w in self.works if w.state is not TargetState.SKIPPED)
        self._limit = options.max_concurrency.concurrency(n)
        self._max_errors = options.max_errors.errors(n)
        self._errors = sum(1 for w in self.works if w.state.counts_as_error)
        self._active = 0
        self._finishing = 0  # targets whose outcome is known but whose output/ledger write is pending
        self._cond = asyncio.Condition()
        self._schedulers: dict[str, PollScheduler[Work]] = {}
        self._stats = DurationStats(options.poll.learn_after)
        self._start_stats = DurationStats(options.poll.learn_after)
        self._cadence = CadenceEstimate(options.poll.agent_cadence_s)
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {"dispatch": set(), "cleanup": set(), "misc": set()}
        self._delete_slots = asyncio.Semaphore(_DELETE_CONCURRENCY)
        self._contact = Contact(self._clock, on_back=self._contact_back)
        self.stop_reason: str | None = None
        self._cancel = False
        self._detach = False
        self._external_cancel = False
        self._started = self._clock()
        self._first_dispatch: float | None = None
        self._scouts_left = options.poll.scouts
        self._scout_works: list[Work] = []  # the scouts (at most ``poll.scouts``), not scanned for in all works
        self._start_seen = False  # has any target of this run been seen started by its agent?
        self._replan_at = max(1, options.poll.learn_after)
        # rollout waves (None: one wave) and per-target retries
        self._plan = options.plan()
        live = [w for w in self.works if not (w.state is TargetState.SKIPPED and w.dispatched_at is None)]
        if self._plan is not None and all(w.wave == 0 for w in self.works):
            live.sort(key=lambda w: w.seq)  # waves not recorded (a library caller's works): assign them now
            for w, wave in zip(live, self._plan.assign([w.target for w in live]), strict=True):
                w.wave = wave
        self._wave_sizes: dict[int, int] = {}
        for w in live:
            self._wave_sizes[w.wave] = self._wave_sizes.get(w.wave, 0) + 1
        self._wave_errors: dict[int, int] = {}
        for w in self.works:
            if w.state.counts_as_error:
                self._wave_errors[w.wave] = self._wave_errors.get(w.wave, 0) + 1
        self._wave = 0
        self._soak_until: float | None = None
        self._retrying = 0  # targets waiting out the backoff before their next attempt
        self._queue: deque[Work] = deque()  # the wave being dispatched (retries go back into it)

    # -- control shared by every path ---------------------------------------------------------------
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
        with contextlib.suppress(RuntimeError):
            self._spawn(self._notify(), "misc")

    def _spawn(self, coro: Any, kind: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        bucket = self._tasks[kind]
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def _contact_back(self) -> None:
        """Azure answers again: read the targets left past their deadline now."""
        for work in self.works:
            if work.parked and not work.taken:
                work.parked = False
                self._reschedule(work, 0.0)
        self._wake()

    def _reschedule(self, work: Work, delay_s: float) -> None:  # the polls live in Watching
        raise NotImplementedError

    # -- finishing --------------------------------------------------------------------------------
    def _take(self, work: Work) -> bool:
        """Claim the right to finish ``work`` (synchronous: no await between check and set)."""
        if work.taken or work.state.terminal:
            return False
        work.taken = True
        return True

    async def _cancel_one(
        self, work: Work, state: TargetState, message: str, *, wait_gone: bool = True, delivery: bool = False
    ) -> None:
        """DELETE the run command (kills the script), wait for a lasting delete, record ``state``
        (no exit code: the script was stopped before it could report one)."""
        if not self._take(work):
            return
        deleted = await self._delete(work, wait_s=self._opts.delete_wait_s if wait_gone else 0.0)
        note = "" if deleted else " (the run command could not be deleted; run 'azrun cancel' again)"
        if deleted and self._retry(work, state, message, delivery=delivery):
            return
        await self._record(work, state, None, message + note, work.last_view, cleaned=deleted)

    async def _finish(
        self, work: Work, state: TargetState, exit_code: int | None, message: str,
        view: RunCommandView | None, *, deleted: bool = False, delivery: bool = False,
    ) -> None:
        """Record ``state``; ``delivery``: the script never ran (a retry may send it again)."""
        if not self._take(work):
            return
        name, must_delete = work.run_command_name, not deleted and work.put_sent and not self._opts.keep
        if not self._retry(work, state, message, delivery=delivery):
            await self._record(work, state, exit_code, message, view, cleaned=deleted)
        if must_delete:
            self._spawn(self._cleanup(work, name), "cleanup")

    # -- retries ---------------------------------------------------------------------------------
    def _retry(self, work: Work, state: TargetState, message: str, *, delivery: bool) -> bool:
        """Another attempt for ``work`` (a new run command, after a backoff)? Delivery failures
        are retried with ``retries``; a script that ran and failed only with ``retry_failed_scripts``."""
        ran = state in (TargetState.FAILED, TargetState.TIMED_OUT) and not delivery
        if not (delivery or (ran and self._opts.retry_failed_scripts)):
            return False
        if work.attempt > self._opts.retries or self._cancel or self._detach or self.stop_reason is not None:
            return False
        from azrun.runcommand import run_command_name

        attempt = work.attempt + 1
        note = self._scrub(f"attempt {work.attempt} {state.value}: {message}; retrying (attempt {attempt})")
        if work.state in ACTIVE:
            self._active -= 1
        work.reset_for_attempt(attempt, f"{run_command_name(self.run_id)}-{attempt}", note)
        self._ledger.update_target(
            self.run_id, work.target.resource_id, state=TargetState.PENDING, message=note, attempt=attempt,
            run_command_name=work.run_command_name, run_command_id=None, dispatched_at=None, started_at=None,
            arm_requests=work.requests,
        )  # fmt: skip
        self._observer.on_target(work.result())
        self._retrying += 1
        self._spawn(self._requeue_after(work, self._opts.retry_backoff_s * 2 ** (attempt - 2)), "misc")
        return True

    async def _requeue_after(self, work: Work, delay_s: float) -> None:
        try:
            await self.clock.sleep(delay_s)
            self._queue.append(work)
        finally:
            self._retrying -= 1
            await self._notify()

    async def _record(
        self, work: Work, state: TargetState, exit_code: int | None, message: str,
        view: RunCommandView | None, *, cleaned: bool,
    ) -> None:
        was_active = work.state in ACTIVE
        if state in _NO_EXIT_CODE:
            exit_code = None
        if work.attempt > 1 and "(attempt " not in message:
            message = f"{message} (attempt {work.attempt})"
        work.state, work.exit_code, work.message = state, exit_code, self._scrub(message)
        work.ended_at = (view.end_time if view and view.end_time else None) or self.clock.now()
        work.started_at = (view.start_time if view else None) or work.started_at
        if state.counts_as_error:
            self._errors += 1
            self._wave_errors[work.wave] = self._wave_errors.get(work.wave, 0) + 1
        if view is not None and view.end_time and work.sent_at and state is not TargetState.CANCELED:
            # the instance view's times have whole seconds (truncated): +0.5 s on average, never < 0
            self._stats.add(max(0.0, (view.end_time - work.sent_at).total_seconds() + 0.5))
            if len(self._stats) >= self._replan_at:
                self._replan_at *= 2
                self._replan()
        if work.scout and (len(self._stats) < self._opts.poll.learn_after or not self._start_seen):
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
                self._ledger.update_target(self.run_id, work.target.resource_id, cleaned_at=self.clock.now())
            self._observer.on_target(work.result())
            work.done.set()
        finally:
            self._finishing -= 1
            await self._notify()

    def _replan(self) -> None:  # the polls live in Watching
        raise NotImplementedError

    def _scouts_ended(self) -> None:  # the polls live in Watching
        raise NotImplementedError

    async def _collect_output(self, work: Work, view: RunCommandView | None) -> tuple[OutputRef, str, str]:
        if not work.put_sent:
            return OutputRef(), "", ""
        try:
            ref, out, err = await self._output.complete(work.target, view)
        except Exception as exc:
            _LOG.warning("output of %s could not be read: %s", work.target.name, exc)
            ref, out, err = OutputRef(truncated=True), view.output if view else "", view.error if view else ""
        return ref, self._scrub(out), self._scrub(err)

    async def _delete(self, work: Work, *, wait_s: float = 0.0) -> bool:
        """DELETE with Conflict backoff; True once Azure took it (and, with ``wait_s``, once it is gone)."""
        result = await delete_run_command(
            self._client, work.target, work.run_command_name, sleep=self.clock.sleep, counter=work.count,
            retries=self._opts.conflict_retries, backoff_s=self._opts.conflict_backoff_s, wait_s=wait_s,
            slots=self._delete_slots,
        )  # fmt: skip
        return result.accepted and result.gone

    async def _cleanup(self, work: Work, name: str) -> None:
        """Delete a finished target's run command (``name``: this attempt's) so the VM stays under
        the 25 cap; the ledger's mark only once the target's latest attempt is the one deleted."""
        result = await delete_run_command(
            self._client, work.target, name, sleep=self.clock.sleep, counter=work.count,
            retries=self._opts.conflict_retries, backoff_s=self._opts.conflict_backoff_s, slots=self._delete_slots,
        )  # fmt: skip
        if result.accepted and name == work.run_command_name and work.state.terminal:
            work.cleaned = True
            self._ledger.update_target(self.run_id, work.target.resource_id, cleaned_at=self.clock.now(),
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
                ended_at=self.clock.now() if state.terminal else None,
                dispatched_at=work.dispatched_at if state.terminal else None,
            )  # fmt: skip
            if state.terminal:
                self._observer.on_target(work.result())
                work.done.set()

    async def _cancel_inflight(self) -> None:
        """Cancel: recall unsent PUTs, wait for those in flight (they cancel themselves once
        answered), then DELETE every Running target."""
        self._recall_unsent(TargetState.SKIPPED, self.stop_reason or "run canceled")
        running = [w for w in self.works if (w.state is TargetState.RUNNING or w.unconfirmed) and not w.taken]
        await asyncio.gather(*(self._cancel_one(w, TargetState.CANCELED, "canceled") for w in running))
        dispatch = [t for t in self._tasks["dispatch"] if not t.done()]
        if dispatch:
            await asyncio.wait(dispatch, timeout=60)
        left = [w for w in self.works if w.state is TargetState.RUNNING and not w.taken]
        await asyncio.gather(*(self._cancel_one(w, TargetState.CANCELED, "canceled") for w in left))

    @property
    def active(self) -> int:
        return self._active

    @property
    def errors(self) -> int:
        return self._errors

    @property
    def limit(self) -> int:
        return self._limit
