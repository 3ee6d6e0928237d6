"""History stays bounded over a run of a few thousand targets (no-op scripts, limits off)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from azrun.config import Settings
from azrun.durable import DurableFleet, DurableWorker, SchedulerConnection, WorkerHost
from azrun.durable._local import LocalScheduler
from azrun.targets import Selector
from tests.durable.support import count_429, multi_fleet_toml

SUBS, VMS = 2, 1000
PER_EXECUTION = 2


@pytest.mark.slow
def test_history_bounded_over_thousands_of_targets(sim_factory: Any, azure_env: Any, scheduler: LocalScheduler) -> None:
    sim = sim_factory(multi_fleet_toml(SUBS, VMS, limits={"enabled": False},
                                       sim={"agent_upload_interval_s": 15, "agent_status_interval_s": 0.2}),
                      storage=True)  # fmt: skip
    azure_env(sim)
    addr = scheduler.address
    worker = DurableWorker(SchedulerConnection(addr), WorkerHost(Settings.load()))
    worker.start()

    async def go() -> Any:
        async with DurableFleet.from_env(endpoint=addr) as fleet:
            sel = Selector.from_options(tags=["env=fleet"], all_subscriptions=True)
            rid = await fleet.schedule(sel, "true", max_concurrency="20%", poll_s=0.5, tick_s=1.0,
                                       ticks_per_execution=PER_EXECUTION)
            return await fleet.wait(rid, timeout_s=240, interval_s=1.0)

    try:
        run = asyncio.run(go())
    finally:
        worker.stop()
    assert run.status == "succeeded" and run.counts == {"Succeeded": SUBS * VMS}, run
    ticks = [int(s["tick"]) for s in run.shards]
    assert min(ticks) >= 3 * PER_EXECUTION  # several continue-as-new generations per shard
    # one execution holds at most PER_EXECUTION ticks (~6 events each) + its bookends, whatever
    # the number of targets (the root: one event pair per shard)
    assert 0 < scheduler.peak_history <= 8 * PER_EXECUTION + 10, scheduler.peak_history
    assert count_429(sim.requests()) == 0
