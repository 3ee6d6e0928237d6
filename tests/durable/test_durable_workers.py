"""Durable runs over several simulated subscriptions, served by worker processes.

The local scheduler (the SDK's in-memory backend + redelivery) runs in the test process; the
workers are ``azrun worker`` child processes; the local Azure counts executions and 429s.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from azrun.durable import DurableFleet
from azrun.durable._local import LocalScheduler
from azrun.targets import Selector
from tests.durable.support import count_429, multi_fleet_toml, start_worker, stop_worker, wait_for

SUBS, VMS = 3, 6


def _schedule(addr: str, script: str, **kwargs: Any) -> str:
    async def go() -> str:
        async with DurableFleet.from_env(endpoint=addr) as fleet:
            sel = Selector.from_options(tags=["env=fleet"], all_subscriptions=True)
            kwargs.setdefault("max_concurrency", "100%")
            return await fleet.schedule(sel, script, poll_s=0.3, tick_s=4, **kwargs)

    return asyncio.run(go())


def _wait(addr: str, rid: str, timeout_s: float) -> Any:
    async def go() -> Any:
        async with DurableFleet.from_env(endpoint=addr) as fleet:
            run = await fleet.wait(rid, timeout_s=timeout_s, interval_s=0.3)
            return run, await fleet.results(rid)

    return asyncio.run(go())


def _executions(sim: Any, rid: str) -> list[dict[str, Any]]:
    return [e for e in sim.admin_get("executions")["value"] if e["runCommand"] == f"azrun-{rid}"]


def test_worker_killed_mid_run_nothing_runs_twice(
    sim_factory: Any, azure_env: Any, scheduler: LocalScheduler, tmp_path: Path
) -> None:
    sim = sim_factory(multi_fleet_toml(SUBS, VMS), storage=True)
    env = azure_env(sim)
    addr = scheduler.address
    first = start_worker(env, addr, tmp_path / "w1.log")
    others = []
    try:
        rid = _schedule(addr, "sleep 2; echo done-$(hostname)")
        assert wait_for(lambda: len(_executions(sim, rid)) >= 3, 30), (tmp_path / "w1.log").read_text()
        others = [start_worker(env, addr, tmp_path / "w2.log")]
        stop_worker(first, kill=True)  # SIGKILL with every tick of the run in hand
        others.append(start_worker(env, addr, tmp_path / "w3.log"))
        run, results = _wait(addr, rid, 90)
    finally:
        for proc in (first, *others):
            stop_worker(proc)
    assert run.status == "succeeded", run
    assert run.counts == {"Succeeded": SUBS * VMS}
    assert len(results) == SUBS * VMS and all(r.stdout_tail.strip() == f"done-{r.target.name}" for r in results)
    ran = Counter(e["vm"] for e in _executions(sim, rid))
    assert len(ran) == SUBS * VMS and set(ran.values()) == {1}, ran  # every VM once, none twice
    assert scheduler.redelivered >= 1  # the killed worker held work that another one finished
    assert count_429(sim.requests()) == 0


def test_cancel_deletes_every_run_command_in_flight(
    sim_factory: Any, azure_env: Any, scheduler: LocalScheduler, tmp_path: Path
) -> None:
    sim = sim_factory(multi_fleet_toml(2, 4), storage=True)
    env = azure_env(sim)
    addr = scheduler.address
    worker = start_worker(env, addr, tmp_path / "w.log")
    try:
        rid = _schedule(addr, "sleep 120")
        assert wait_for(lambda: len(_executions(sim, rid)) == 8, 30)

        async def cancel() -> None:
            async with DurableFleet.from_env(endpoint=addr) as fleet:
                await fleet.cancel(rid)

        started = time.monotonic()
        asyncio.run(cancel())
        run, results = _wait(addr, rid, 60)
        took = time.monotonic() - started
    finally:
        stop_worker(worker)
    assert run.status == "canceled" and run.counts == {"Canceled": 8}, run
    assert took < 30
    ex = _executions(sim, rid)
    assert len(ex) == 8 and all(e["killed"] for e in ex), ex  # every script was stopped by the DELETE
    deletes = [r for r in sim.requests() if r.get("method") == "DELETE" and f"azrun-{rid}" in r.get("path", "")]
    assert len({d["path"].lower() for d in deletes}) == 8
    assert all(r.state.value == "Canceled" for r in results)


def test_worker_killed_mid_rollout_the_waves_go_on(
    sim_factory: Any, azure_env: Any, scheduler: LocalScheduler, tmp_path: Path
) -> None:
    """Waves on the durable engine: the worker is SIGKILLed during the soak after wave 1 (a
    durable timer); another worker replays the root and runs wave 2. Nothing runs twice."""
    from azrun.fleet import FleetOptions, WavePlan

    sim = sim_factory(multi_fleet_toml(2, 3), storage=True)
    env = azure_env(sim)
    addr = scheduler.address
    first = start_worker(env, addr, tmp_path / "w1.log")
    second = None
    try:
        opts = FleetOptions.make(max_concurrency="100%", waves=WavePlan.parse("50%,100%", soak_s=6.0))
        rid = _schedule(addr, "echo wave-$(hostname)", options=opts)
        assert wait_for(lambda: len(_executions(sim, rid)) == 3, 60), (tmp_path / "w1.log").read_text()
        time.sleep(3.0)  # wave 1 done, the soak under way
        assert len(_executions(sim, rid)) == 3  # wave 2 waits for the soak
        stop_worker(first, kill=True)
        second = start_worker(env, addr, tmp_path / "w2.log")
        run, results = _wait(addr, rid, 120)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_worker(proc)
    assert run.status == "succeeded" and run.counts == {"Succeeded": 6}, run
    assert {s["wave"] for s in run.shards} == {0, 1}
    ran = Counter(e["vm"] for e in _executions(sim, rid))
    assert len(ran) == 6 and set(ran.values()) == {1}, ran
    assert all(r.stdout_tail.strip() == f"wave-{r.target.name}" for r in results)
    assert count_429(sim.requests()) == 0
