"""azrun.fleet end to end on the local Azure's *realistic* timing profile (issue 13): one test per
capability (run, cancel, resume, watchdog, output tail, cleanup) against the recorded shape of
Azure, not the fast profile's 0.2 s starts and instant deletes.

Kept from the recorded profile (azrun/sim/timing.py): dispatch latency drawn from the recorded
VM distribution (7-13 s + jitter), the agent's 15 s status and output cadence (start, output and
completion only become visible at the next report), lasting DELETEs (the run command stays
listed as ``Deleting`` and counts toward the 25) and azrun's default poll policy.

Shrunk with explicit ``[sim]`` settings (explicit settings win over the profile), so the module
takes about two minutes with ``-n 2``:

- ``handler_install_s = 0`` (recorded: 60-120 s on a machine's first run command), except in the
  watchdog test, which keeps a short one (15-18 s) to make the late start its point;
- ``delete_duration_s = [2, 4]`` (recorded: 10-19 s, outliers 40 s and 211 s);
- 2-4 machines and scripts of a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from _fleet_support import (
    LOCATION,
    RG,
    SUB,
    executions,
    executions_per_machine,
    fleet_toml,
    names,
    run_command_ops,
)

from azrun.fleet import FleetOptions, RecordingObserver
from azrun.models import RunSpec, Target, TargetKind, TargetState
from azrun.runcommand import RunCommandClient, run_command_name
from azrun.targets import Selector

pytestmark = [pytest.mark.slow, pytest.mark.realistic, pytest.mark.timeout(240)]

PROD = Selector.from_options(tags=["env=prod"])
CADENCE_S = 15.0
_FAST_KEYS = ("agent_start_delay_s", "agent_upload_interval_s", "agent_status_interval_s")


def realistic_toml(*, vms: int, install: str = "0", delete: str = "[2, 4]", seed: int = 7, limits: str = "") -> str:
    """The test world of ``_fleet_support.fleet_toml`` on the realistic profile: its fast-profile
    timings dropped (so the profile's own apply), install and delete durations shrunk."""
    sim = "\n".join([
        'profile = "realistic"',
        f"handler_install_s = {install}",
        f"delete_duration_s = {delete}",
    ])
    text = fleet_toml(vms=vms, sim=sim, limits=limits).replace("seed = 3", f"seed = {seed}")
    return "\n".join(line for line in text.splitlines() if not line.startswith(_FAST_KEYS)) + "\n"


@pytest.fixture
def start_sim(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]) -> Callable[..., Any]:
    def start(*, storage: bool = False, **fleet: Any) -> Any:
        sim = sim_factory(realistic_toml(**fleet), storage=storage)
        azure_env(sim)
        return sim

    return start


def vm_target(name: str) -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(rid, name, TargetKind.VM, SUB, RG, LOCATION, "linux", "running", vm_name=name)


async def wait_running(handle: Any, count: int, limit_s: float = 90.0) -> None:
    deadline = time.monotonic() + limit_s
    while handle.snapshot().counts.get("Running", 0) < count:
        assert time.monotonic() < deadline, handle.snapshot().counts
        await asyncio.sleep(0.2)


def clusters(times: list[float], gap_s: float = 2.0) -> list[float]:
    """The first arrival of each burst of lines (arrivals less than ``gap_s`` apart are one)."""
    out: list[float] = []
    last = float("-inf")
    for t in sorted(times):
        if not out or t - last > gap_s:
            out.append(t)
        last = t
    return out


class TimedObserver(RecordingObserver):
    """Also notes when each line arrived (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.line_times: list[tuple[str, str, float]] = []

    def on_line(self, target: Target, stream: str, line: str) -> None:
        super().on_line(target, stream, line)
        self.line_times.append((target.name, line, time.monotonic()))


async def test_run_brings_the_whole_output_back_through_the_blobs(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=2, storage=True)
    t0 = time.monotonic()
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="seq 1 3000; echo warn >&2", timeout_s=120))
    wall = time.monotonic() - t0
    assert result.counts() == {"Succeeded": 2}, [r.message for r in result.results]
    expected = sum(len(f"{i}\n") for i in range(1, 3001))
    for r in result.results:
        assert r.output.stdout_bytes == expected and r.output.stderr_bytes == len("warn\n")
        assert not r.output.truncated and r.stdout_tail.splitlines()[-1] == "3000"
    assert wall >= 7.0  # the recorded dispatch latency, not the fast profile's 0.2 s
    name = run_command_name(result.run_id)
    assert set(executions_per_machine(sim, name).values()) == {1}
    # polling fitted to the cadence: a few reads per target, not one every fraction of a second
    assert all(r.arm_requests <= 8 for r in result.results), [r.arm_requests for r in result.results]


async def test_cancel_waits_for_the_slow_deletes_and_leaves_nothing(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=3)
    async with fleet() as f:
        handle = await f.start(PROD, RunSpec(script="sleep 120", timeout_s=300), options=FleetOptions.make())
        await wait_running(handle, 3)
        t0 = time.monotonic()
        handle.cancel()
        result = await asyncio.wait_for(handle.wait(), 90)
        waited = time.monotonic() - t0
        client = RunCommandClient(f.factory)
        leftovers = [i for t in result.results for i in await client.list(t.target)]
    assert names(result, TargetState.CANCELED) == ["vm-001", "vm-002", "vm-003"]
    assert leftovers == []  # not even one still listed as Deleting
    assert waited >= 2.0  # it waited for DELETE operations that last (2-4 s here)
    assert sim.admin_get("stats")["runningScripts"] == 0
    assert all(e["state"] != "Running" or e.get("killed") for e in executions(sim))


async def test_resume_after_detach_runs_each_script_once(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=3)
    spec = RunSpec(script="sleep 2; echo done", timeout_s=120)
    async with fleet() as f:
        handle = await f.start(PROD, spec, options=FleetOptions.make(max_concurrency=2))
        await wait_running(handle, 2)
        handle.detach()  # as a killed process would: the ledger keeps what was sent
        partial = await handle.wait()
        assert f.status(handle.run_id).run.status == "interrupted"
        assert len(names(partial, TargetState.PENDING)) == 1
        result = await f.resume(handle.run_id, spec)
    assert result.counts() == {"Succeeded": 3}, [r.message for r in result.results]
    assert all(r.stdout_tail == "done" for r in result.results)
    per_machine = executions_per_machine(sim, run_command_name(handle.run_id))
    assert len(per_machine) == 3 and set(per_machine.values()) == {1}
    puts = [r for r in run_command_ops(sim) if r["method"] == "PUT" and r["status"] < 300]
    assert len(puts) == 3  # the two in flight at the detach were picked up, not sent again


async def test_a_short_timeout_does_not_cancel_a_script_that_started_late(
    start_sim: Callable[..., Any], fleet: Any
) -> None:
    """Handler install (15-18 s) + dispatch latency (7-13 s): the scripts start 22-32 s after the
    PUT. Counted from the dispatch, ``timeout 2 s + grace 16 s`` (one cadence and a second, so
    the completion can be reported) would cancel them before they start; counted from the
    agent-reported start they finish."""
    start_sim(vms=2, install="[15, 18]")
    sent = datetime.now(timezone.utc)  # (the PUTs leave after this)
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="sleep 1; echo in time", timeout_s=2),
                             options=FleetOptions.make(watchdog_grace_s=CADENCE_S + 1))
    assert result.counts() == {"Succeeded": 2}, [r.message for r in result.results]
    assert [r.stdout_tail for r in result.results] == ["in time", "in time"]
    for r in result.results:
        assert r.started_at is not None
        assert (r.started_at - sent).total_seconds() > 2 + CADENCE_S + 1  # from dispatch: too late


async def test_output_tail_arrives_live_on_the_agent_cadence(start_sim: Callable[..., Any], fleet: Any) -> None:
    start_sim(vms=2, storage=True)
    script = "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 4; done"
    obs = TimedObserver()
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script=script, timeout_s=120), observer=obs)
        ended = time.monotonic()
    assert result.counts() == {"Succeeded": 2}, [r.message for r in result.results]
    for machine in ("vm-001", "vm-002"):
        times = [(line, t) for name, line, t in obs.line_times if name == machine]
        assert [line for line, _ in times] == [f"line{i}" for i in range(1, 9)]  # every line, once, in order
        batches = clusters([t for _, t in times])
        # live: some lines came while the 32 s script still ran, before the run ended
        assert times[0][1] < ended - 10, (times, ended)
        # on the cadence: the 8 lines written 4 s apart arrive in a few uploads, not one by one
        assert 2 <= len(batches) <= 5, times
        gaps = [b - a for a, b in itertools.pairwise(batches)]
        assert all(g >= CADENCE_S - 4 for g in gaps), gaps


async def test_a_full_machine_waits_for_deleting_run_commands_before_it_dispatches(
    start_sim: Callable[..., Any], fleet: Any
) -> None:
    """vm-001 holds 25 run commands of someone else's, two of them being deleted (still listed,
    still counted): azrun's PUT is refused, it waits for the deletes, then runs; the machine never
    holds more than 25. (The 25 are made by an unthrottled client with the limits off: at the
    documented 4 run-command writes a minute per VM they would take three minutes.)"""
    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud

    sim = start_sim(vms=1, delete="[3, 5]", limits="enabled = false")
    target = vm_target("vm-001")
    raw = ClientFactory(cloud=Cloud.from_env(os.environ), throttle=None)
    async with fleet() as f:
        client = RunCommandClient(raw)
        body = {"location": LOCATION, "properties": {"source": {"script": "true"}}}
        await asyncio.gather(*(client.submit(target, f"other-{i:02d}", body) for i in range(25)))
        for i in range(2):
            assert await client.delete(target, f"other-{i:02d}")
        listed = await client.list(target)
        assert len(listed) == 25 and sum(i.provisioning_state.lower() == "deleting" for i in listed) == 2
        result = await f.run([target], RunSpec(script="echo made room", timeout_s=120))
        after = await client.list(target)
    await raw.aclose()
    assert result.counts() == {"Succeeded": 1}, [r.message for r in result.results]
    assert result.results[0].stdout_tail == "made room"
    refused = [r for r in run_command_ops(sim) if r["method"] == "PUT" and r["status"] == 409]
    assert refused, "the 26th PUT should have been refused while the deletes lasted"
    others = sorted(i.name for i in after if not i.name.startswith("azrun-"))
    assert others == [f"other-{i:02d}" for i in range(2, 25)]  # the others' run commands untouched
    # azrun deleted its own after reading the outcome; its DELETE may still last (listed Deleting)
    assert all(i.provisioning_state.lower() == "deleting" for i in after if i.name.startswith("azrun-"))
    assert len(after) <= 25
