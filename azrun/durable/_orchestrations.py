"""The orchestrations of a durable run (deterministic: no clock, no I/O, no randomness).

* ``azrun_run`` (instance id = the run id): runs the waves in order (one wave without
  ``--waves``/``--canary``), each wave one ``azrun_shard`` per subscription (instance
  ``<run id>.sNNNN``), waits for all, soaks with a durable timer; its output is the run's summary.
* ``azrun_shard``: calls the ``azrun_tick`` activity again and again with its state; each tick
  fills the shard's window, polls, finishes and deletes (see :mod:`azrun.durable._tick`). One tick
  at a time per shard, so a subscription's budgets are spent by one worker at a time. After
  ``ticks_per_execution`` ticks (default ``TICKS_PER_EXECUTION``) it ``continue_as_new``\\ s with its state: the history of an
  execution is bounded (about 4 events per tick) however many targets the shard has.
* ``cancel`` / ``detach`` are external events on the shard instances (``DurableFleet.cancel``
  raises them on every shard); they take effect at the next tick. ``cancel`` also writes a
  marker blob, which a tick reads even if the event arrived while the shard was continuing-as-new.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

from durabletask import task

from azrun.durable._plan import wave_error_shares
from azrun.durable._state import ShardState

__all__ = ["RUN", "SHARD", "TICK", "TICKS_PER_EXECUTION", "azrun_run", "azrun_shard"]

RUN, SHARD, TICK = "azrun_run", "azrun_shard", "azrun_tick"
TICKS_PER_EXECUTION = 16
CANCEL, DETACH = "cancel", "detach"
#: An activity that raised (a bug, storage down) is retried; a worker that died is not a
#: failure: the engine hands the same tick to another worker.
TICK_RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=2), max_number_of_attempts=6,
                              backoff_coefficient=2.0, max_retry_interval=timedelta(seconds=30))


def azrun_run(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Generator[task.Task[Any], Any, Any]:
    """The waves in order (a run without waves is one wave): each wave's shards at once, the
    soak as a durable timer, a wave over its error budget (or a failed canary, or the run's
    max-errors spent) stops the rollout: later waves' shards start stopped and record their
    targets as Skipped with the reason. ``cancel`` (event) also cuts a soak short."""
    shards = [ShardState.from_dict(s) for s in inp["shards"]]
    waves = inp.get("waves") or [{"shards": [s.shard for s in shards], "size": sum(s.total for s in shards)}]
    soak = float(inp.get("soak_s") or 0.0)
    run_budget: int | None = inp.get("max_errors")
    cancel_ev = ctx.wait_for_external_event(CANCEL)
    results: list[dict[str, Any]] = []
    budgets: dict[str, tuple[dict[str, float], float]] = {}  # subscription -> the budget its last shard handed down
    stop: str | None = None
    errors = 0
    for w, wave in enumerate(waves):
        if w > 0 and soak > 0 and stop is None and not cancel_ev.is_complete:
            ctx.set_custom_status({"phase": "soak", "wave": w, "waves": len(waves)})
            yield task.when_any([ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=soak)), cancel_ev])
        members = [shards[i] for i in wave["shards"]]
        if run_budget is not None and len(waves) > 1:
            shares = wave_error_shares([s.total for s in members], run_budget - errors, wave.get("budget"))
            for s, share in zip(members, shares, strict=True):
                s.max_errors = share
        for s in members:
            s.cancel = s.cancel or cancel_ev.is_complete
            s.stop_reason = s.stop_reason or stop
            s.budget, s.budget_at = budgets.get(s.subscription, (s.budget, s.budget_at))
        ctx.set_custom_status({"phase": "wave", "wave": w + 1, "waves": len(waves)})
        out: list[dict[str, Any]] = yield task.when_all(
            [ctx.call_sub_orchestrator(SHARD, input=s.to_dict(), instance_id=s.instance_id) for s in members])
        results += out
        for r in out:
            budgets[str(r["subscription"])] = (dict(r.get("budget") or {}), float(r.get("budget_at") or 0.0))
        wave_errors = sum(int(r.get("errors", 0)) for r in out)
        errors += wave_errors
        if stop is None:
            stop = _stop_after(w, len(waves), wave, out, wave_errors, bool(inp.get("canary")), run_budget, errors)
    counts: dict[str, int] = {}
    for summary in results:
        for state, n in summary.get("counts", {}).items():
            counts[state] = counts.get(state, 0) + int(n)
    canceled = any(r.get("canceled") for r in results)
    detached = any(r.get("detached") for r in results)
    bad = any(k in counts for k in ("Failed", "TimedOut", "Undeliverable", "Canceled"))
    status = "canceled" if canceled else "interrupted" if detached else "failed" if bad else "succeeded"
    summary = {"run_id": inp["run_id"], "status": status, "counts": counts, "shards": results, "stop": stop}
    ctx.set_custom_status({"phase": "done", "status": status})
    return summary


def _stop_after(w: int, count: int, wave: dict[str, Any], out: list[dict[str, Any]], wave_errors: int,
                canary: bool, run_budget: int | None, errors: int) -> str | None:  # fmt: skip
    """Why the rollout stops after wave ``w`` (None: it goes on). The same rules and messages
    as a one-process run (:mod:`azrun.fleet._rollout`)."""
    if any(r.get("canceled") for r in out):
        return "run canceled"
    if any(r.get("detached") for r in out):
        return "run stopped (detach): not dispatched"
    if canary and w == 0:
        bad = next((str(r["first_bad"]) for r in out if r.get("first_bad")), None)
        return f"canary failed ({bad})" if bad else None
    allowed = wave.get("budget")
    if allowed is not None and wave_errors > int(allowed):
        return f"wave {w + 1}/{count} exceeded its error budget ({wave_errors} errors > max {allowed})"
    if run_budget is not None and errors > run_budget:
        return f"error budget exceeded ({errors} errors > max {run_budget})"
    return next((str(r["stop"]) for r in out if r.get("stop")), None)


def azrun_shard(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Generator[task.Task[Any], Any, Any]:
    state = ShardState.from_dict(inp)
    cancel_ev = ctx.wait_for_external_event(CANCEL)
    detach_ev = ctx.wait_for_external_event(DETACH)
    for _ in range(max(1, state.ticks_per_execution)):
        if state.finished:
            break
        tick: task.Task[Any] = ctx.call_activity(TICK, input=state.to_dict(), retry_policy=TICK_RETRY)
        waits = [e for e, on in ((cancel_ev, state.cancel), (detach_ev, state.detach)) if not on and not e.is_complete]
        while True:
            winner = yield task.when_any([tick, *waits])
            if winner is tick:
                break
            waits.remove(winner)
            if winner is cancel_ev:
                state.cancel = True
            else:
                state.detach = True
        out: dict[str, Any] = tick.get_result()
        new = ShardState.from_dict(out["state"])
        new.cancel = new.cancel or state.cancel
        new.detach = new.detach or state.detach
        state = new
        ctx.set_custom_status(state.summary())
    if not state.finished:
        ctx.continue_as_new(state.to_dict())
        return None
    return {**state.summary(), "canceled": state.cancel, "detached": state.detach}
