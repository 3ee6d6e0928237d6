"""One tick of a shard: azrun's own per-target steps, for at most ``tick_s`` seconds.

The activity behind every shard orchestration. It uses exactly what a one-process run uses:
:class:`~azrun.runcommand.RunCommandClient` (submit / get / delete, through the process's
throttle and identity), :func:`azrun.fleet._deliver.deliver` (409 backoff, read-back on an unknown
outcome), :func:`~azrun.runcommand.interpret` and the output store's :class:`~azrun.output.Tailer`
(the blobs read to the end and cross-checked with the instance view).

Idempotency (a tick is retried whole when its worker dies; :mod:`azrun.durable._fence` keeps a
shard to one tick at a time and stops stale copies): the tick's input is the state
*before* it ran. Every target it would dispatch is first read back by its run command's name
(``azrun-<run id>``, the same on every worker): found -> it is in flight, no new PUT, no new
blobs. Finished targets are *not* deleted in the tick that finished them; their indexes go into
the returned state and the next tick deletes them, after the engine has recorded the result. So
a retried tick still finds every run command it may have sent, and nothing runs twice.

Order in a tick: delete what the previous tick finished; honour cancel (the marker blob: in-flight
run commands deleted, the rest skipped) and detach (nothing more dispatched, in-flight targets
watched to their end); then, until the tick's time is up: fill the window, wait ``poll_s``, poll what is in flight,
finish what ended (result line, counters), stop dispatching past ``max_errors``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azrun.durable._docs import cancel_name, jsonl, result_to_doc, tick_name
from azrun.durable._fence import ShardFence, StaleTick
from azrun.durable._state import ShardState, TickReport
from azrun.fleet._deliver import deliver
from azrun.fleet._work import Undeliverable, Work
from azrun.models import OutputRef, RunSpec, Target, TargetState
from azrun.runcommand import FailureKind, RunCommandView, build_run_command, classify_error, interpret

if TYPE_CHECKING:
    from azrun.fleet import FleetOptions
    from azrun.output import OutputStore, Tailer
    from azrun.runcommand import RunCommandClient

__all__ = ["Plan", "TickEnv", "run_tick"]

_LOG = logging.getLogger(__name__)
_PARALLEL = 64  # requests of one tick in flight at once (the throttle paces them)
WATCHDOG = "no completion reported by the VM agent within timeout + grace; canceled"


@dataclass(frozen=True)
class Plan:
    """A run's plan as a worker reads it (``plan.json``)."""

    run_id: str
    spec: RunSpec
    run_command_name: str
    grace_s: float


@dataclass
class TickEnv:
    """What a tick needs from its worker process (built once per process by the host)."""

    client: RunCommandClient
    options: FleetOptions
    store: Callable[[str, str | None], Awaitable[OutputStore]]
    plan: Callable[[OutputStore, str], Awaitable[Plan]]
    targets: Callable[[OutputStore, str, int], Awaitable[Sequence[Target]]]
    tailer: Callable[[OutputStore, str], Tailer]
    name: str = ""
    now: Callable[[], float] = time.time
    throttle: Any = None  # the process's azrun.throttle.Throttle (None: limits off)


@dataclass
class _Tick:
    env: TickEnv
    state: ShardState
    plan: Plan
    store: OutputStore
    targets: Sequence[Target]
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: TickReport = field(default_factory=TickReport)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_PARALLEL))
    def work(self, index: int) -> Work:
        return Work(target=self.targets[index], seq=index, run_command_name=self.plan.run_command_name)

    def account(self, work: Work) -> None:
        self.state.requests += work.requests
        self.state.throttled += work.throttled
        work.requests = work.throttled = 0

    def record(self, index: int, work: Work, *, delete: bool) -> None:
        """A target ended: its result line, the counters, and (unless gone) a DELETE next tick."""
        st = self.state
        st.counts[work.state.value] = st.counts.get(work.state.value, 0) + 1
        if work.state.counts_as_error:
            st.errors += 1
        if work.state is not TargetState.SUCCEEDED and not st.first_bad:
            st.first_bad = f"{work.target.name}: {work.state.value}"
        self.account(work)
        self.rows.append(result_to_doc(index, work.result()))
        self.report.finished += 1
        if delete and work.put_sent and not st.keep:
            st.to_delete.append(index)


async def run_tick(env: TickEnv, state: ShardState) -> dict[str, Any]:
    """Run one tick of ``state``'s shard; the new state and what the tick did (plain JSON)."""
    began = time.monotonic()
    store = await env.store(state.container, state.blob_identity)
    try:
        async with ShardFence(store, state.run_id, state.shard, state.tick):
            return await _run(env, state, store, began)
    except StaleTick as exc:  # a copy of an older tick: the engine already has its result
        _LOG.info("%s: %s", state.instance_id, exc)
        return {"state": state.to_dict(), "report": {**TickReport(worker=env.name).__dict__, "stale": True}}


async def _run(env: TickEnv, state: ShardState, store: OutputStore, began: float) -> dict[str, Any]:
    tick = _Tick(env, state, await env.plan(store, state.run_id), store,
                 await env.targets(store, state.run_id, state.shard))  # fmt: skip
    tick.report.worker = env.name
    _LOG.debug("%s tick %d on %s (previous on %s)", state.instance_id, state.tick, env.name, state.last_worker or "-")
    _take_over_budget(env, state)
    await _delete_finished(tick)
    if not state.cancel and await store.blob_created(cancel_name(state.run_id)) is not None:
        state.cancel = True
    if state.cancel:
        await _cancel(tick)
    elif state.stop_reason is not None and state.cursor < state.total:
        _skip_rest(tick, state.stop_reason)  # started stopped (a later wave of a stopped rollout)
    else:
        if state.detach and state.stop_reason is None:
            # a durable run has no driver to detach from: stop dispatching, let in-flight targets end
            state.stop_reason = "run stopped (detach): not dispatched"
            _skip_rest(tick, state.stop_reason)
        await _loop(tick, began + state.tick_s)
    if tick.rows:
        await store.write_document(tick_name(state.run_id, state.shard, state.tick), jsonl(tick.rows))
    state.tick += 1
    state.last_worker = env.name
    _hand_down_budget(env, state)
    tick.report.seconds = round(time.monotonic() - began, 3)
    return {"state": state.to_dict(), "report": tick.report.__dict__}


async def _loop(tick: _Tick, deadline: float) -> None:
    st = tick.state
    while True:
        await _fill(tick)
        if not st.inflight and (st.cursor >= st.total or st.stop_reason is not None):
            return
        if time.monotonic() + st.poll_s > deadline:
            return
        await asyncio.sleep(st.poll_s)
        if await tick.store.blob_created(cancel_name(st.run_id)) is not None:
            st.cancel = True  # the next tick cancels (results of this one are kept)
            return
        await _poll(tick)
        if st.errors > st.max_errors and st.stop_reason is None:
            st.stop_reason = f"error budget exceeded ({st.errors} errors > max {st.max_errors})"
            _skip_rest(tick, st.stop_reason)


async def _fill(tick: _Tick) -> None:
    st = tick.state
    if st.stop_reason is not None:
        return
    free = st.window - len(st.inflight)
    chosen = list(range(st.cursor, min(st.total, st.cursor + max(0, free))))
    st.cursor += len(chosen)
    await asyncio.gather(*(_dispatch(tick, i) for i in chosen))


async def _dispatch(tick: _Tick, index: int) -> None:
    """Read back by name first (a retried tick finds what a dead worker sent), else PUT."""
    work = tick.work(index)
    plan, target = tick.plan, work.target
    async with tick.slots:
        try:
            view = await tick.env.client.get(target, work.run_command_name, counter=work.count)
        except Exception as exc:
            work.state, work.message = TargetState.UNDELIVERABLE, (
                f"cannot read back the run command before sending it: {classify_error(exc).describe()}")
            tick.record(index, work, delete=False)
            return
        if view is None:
            try:
                view = await _send(tick, work, plan)
            except Undeliverable as exc:
                work.state, work.message = TargetState.UNDELIVERABLE, str(exc)
                tick.record(index, work, delete=True)
                return
            tick.report.dispatched += 1
    tick.account(work)
    tick.state.inflight.append([index, tick.env.now()])


async def _send(tick: _Tick, work: Work, plan: Plan) -> RunCommandView:
    reason = tick.store.check_target_identity(work.target)
    if reason:
        raise Undeliverable(reason)
    expiry = int(plan.spec.timeout_s + plan.grace_s + 3600) if plan.spec.timeout_s > 0 else 7 * 24 * 3600
    blobs = await tick.store.prepare(plan.run_id, work.target, expiry_s=expiry)
    body = build_run_command(plan.spec.for_os(work.target.os), location=work.target.location,
                             run_id=plan.run_id, blobs=blobs)  # fmt: skip
    return await deliver(tick.env.client, work, body, tick.env.options)


async def _poll(tick: _Tick) -> None:
    st = tick.state
    done = await asyncio.gather(*(_poll_one(tick, int(i), sent) for i, sent in st.inflight))
    st.inflight = [entry for entry, ended in zip(st.inflight, done, strict=True) if not ended]


async def _poll_one(tick: _Tick, index: int, sent: float) -> bool:
    """True when the target ended (recorded)."""
    work = tick.work(index)
    work.put_sent = True
    timeout = tick.plan.spec.timeout_s
    async with tick.slots:
        try:
            view = await tick.env.client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            _LOG.debug("poll of %s failed: %s", work.target.name, classify_error(exc).describe())
            tick.account(work)
            return False
    if view is None:
        work.state, work.message = TargetState.CANCELED, "the run command (or its machine) was deleted while it ran"
        await _finish(tick, index, work, None, delete=False)
        return True
    outcome = interpret(view, timeout)
    if outcome is not None:
        work.state, work.exit_code, work.message = outcome.state, outcome.exit_code, outcome.message
        await _finish(tick, index, work, view, delete=True)
        return True
    if timeout > 0 and tick.env.now() > sent + timeout + tick.plan.grace_s:
        gone = await _delete(tick, work)
        work.state, work.message = TargetState.TIMED_OUT, WATCHDOG
        await _finish(tick, index, work, view, delete=not gone)
        return True
    tick.account(work)
    return False


async def _finish(tick: _Tick, index: int, work: Work, view: RunCommandView | None, *, delete: bool) -> None:
    if view is not None:
        work.run_command_id, work.started_at, work.ended_at = view.id, view.start_time, view.end_time
    try:
        work.output, work.stdout_tail, work.stderr_tail = await tick.env.tailer(tick.store, tick.plan.run_id).complete(
            work.target, iv_output=view.output if view else "", iv_error=view.error if view else "")
    except Exception as exc:  # the result must be recorded even when the output cannot be read
        _LOG.warning("output of %s could not be read: %s", work.target.name, exc)
        work.output = OutputRef(truncated=True)
    tick.record(index, work, delete=delete)


async def _delete(tick: _Tick, work: Work) -> bool:
    """DELETE (kills a running script); True once the run command is gone."""
    for _attempt in range(3):
        try:
            async with tick.slots:
                await tick.env.client.delete(work.target, work.run_command_name, counter=work.count)
            return True
        except Exception as exc:
            failure = classify_error(exc)
            if failure.kind is FailureKind.NOT_FOUND:
                return True
            _LOG.warning("could not delete %s on %s: %s", work.run_command_name, work.target.name, failure.describe())
            await asyncio.sleep(1.0)
    return False


async def _delete_finished(tick: _Tick) -> None:
    st = tick.state
    works = [tick.work(i) for i in st.to_delete]
    gone = await asyncio.gather(*(_delete(tick, w) for w in works))
    for work in works:
        tick.account(work)
    tick.report.deleted = sum(1 for g in gone if g)
    st.to_delete = []  # one that could not be deleted was logged; `azrun cleanup` finds it by its tag


async def _cancel(tick: _Tick) -> None:
    """Cancel: DELETE every run command in flight (kills the scripts), skip the rest."""
    st = tick.state

    async def one(index: int) -> None:
        work = tick.work(index)
        work.put_sent = True
        async with tick.slots:
            try:
                view = await tick.env.client.get(work.target, work.run_command_name, counter=work.count)
            except Exception:
                view = None
        gone = await _delete(tick, work)
        work.state = TargetState.CANCELED
        work.message = "canceled" if gone else "canceled (the run command could not be deleted; cancel again)"
        await _finish(tick, index, work, view, delete=False)

    await asyncio.gather(*(one(int(i)) for i, _sent in st.inflight))
    st.inflight = []
    _skip_rest(tick, "run canceled")


def _take_over_budget(env: TickEnv, state: ShardState) -> None:
    """The budget handed down (see docs/architecture.md, "Throttle across workers"): this
    worker's buckets of the subscription start no fuller than the previous tick's ended, plus
    their refill since. One tick of a subscription at a time, so by induction every tick starts
    from the subscription's whole history of spending, wherever it ran (not only the last tick's)."""
    throttle = env.throttle
    if throttle is None or not getattr(throttle, "enabled", False) or not state.budget:
        return
    throttle.lower_subscription(state.subscription, state.budget, env.now() - state.budget_at)


def _hand_down_budget(env: TickEnv, state: ShardState) -> None:
    throttle = env.throttle
    if throttle is None or not getattr(throttle, "enabled", False):
        return
    state.budget, state.budget_at = throttle.subscription_levels(state.subscription), env.now()


def _skip_rest(tick: _Tick, reason: str) -> None:
    """Targets never dispatched end Skipped, with the reason."""
    st = tick.state
    for index in range(st.cursor, st.total):
        work = tick.work(index)
        work.state, work.message = TargetState.SKIPPED, reason
        tick.record(index, work, delete=False)
    st.cursor = st.total
