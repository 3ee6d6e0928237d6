"""The orchestrations of a durable run (deterministic: no clock, no I/O, no randomness).

* ``azrun_run`` (instance id = the run id): starts one ``azrun_shard`` per subscription
  (instance ``<run id>.sNNNN``) and waits for all; its output is the run's summary.
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
    shards = [ShardState.from_dict(s) for s in inp["shards"]]
    ctx.set_custom_status({"phase": "running", "shards": len(shards)})
    children: list[task.Task[Any]] = [
        ctx.call_sub_orchestrator(SHARD, input=s.to_dict(), instance_id=s.instance_id) for s in shards
    ]
    results: list[dict[str, Any]] = yield task.when_all(children)
    counts: dict[str, int] = {}
    for summary in results:
        for state, n in summary.get("counts", {}).items():
            counts[state] = counts.get(state, 0) + int(n)
    canceled = any(r.get("canceled") for r in results)
    detached = any(r.get("detached") for r in results)
    bad = any(k in counts for k in ("Failed", "TimedOut", "Undeliverable", "Canceled"))
    status = "canceled" if canceled else "interrupted" if detached else "failed" if bad else "succeeded"
    summary = {"run_id": inp["run_id"], "status": status, "counts": counts, "shards": results}
    ctx.set_custom_status({"phase": "done", "status": status})
    return summary


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
