"""Real-Azure timing on the fake (issue 13 §2): the watchdog counts from the agent-reported start,
a separate never-started limit, polling fitted to the agent's 15 s cadence, slow deletes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from fleet_fakes import FakeAzure, Harness, Script, options, vm, vms, vrun

from azrun.fleet import WATCHDOG_MESSAGE
from azrun.fleet._deadline import NEVER_STARTED_MESSAGE
from azrun.fleet._runner import Runner
from azrun.models import FleetResult, RunSpec, TargetState


def spec(timeout_s: int) -> RunSpec:
    return RunSpec(script="work", timeout_s=timeout_s)


def test_a_short_timeout_is_counted_from_the_agent_reported_start(tmp_path: Path) -> None:
    """75 s of agent latency and a 60 s timeout: a 50 s script succeeds (counted from dispatch,
    the watchdog would have cancelled it before it started)."""
    azure = FakeAzure(script=Script(start_s=75, duration_s=50))
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], spec(60), options(watchdog_grace_s=5)))
    r = result.results[0]
    assert r.state is TargetState.SUCCEEDED and r.exit_code == 0
    assert not azure.ops("DELETE") or azure.ops("DELETE")[0].t > 125  # cleanup only, after the end


def test_the_watchdog_fires_timeout_plus_grace_after_the_start(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=30, hung=True))
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], spec(60), options(watchdog_grace_s=10)))
    r = result.results[0]
    assert r.state is TargetState.TIMED_OUT and r.message.startswith(WATCHDOG_MESSAGE) and r.exit_code is None
    delete = azure.ops("DELETE")[0].t
    assert 30 + 60 + 10 <= delete <= 30 + 60 + 10 + 15 + 1  # start reported within one cadence


def test_a_script_the_agent_never_picks_up_ends_with_its_own_message(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=float("inf")))
    opts = options(start_timeout_s=300)
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], spec(3600), opts))
    r = result.results[0]
    assert r.state is TargetState.UNDELIVERABLE and r.exit_code is None
    assert NEVER_STARTED_MESSAGE in r.message and "300s" in r.message and "--start-timeout" in r.message
    assert 300 <= azure.ops("DELETE")[0].t <= 316
    gets = azure.ops("GET", "vm-001")
    assert len([g for g in gets if g.t < 300]) <= 25  # at most one read per 15 s cadence once it waits


def test_the_default_start_limit_covers_a_first_run_handler_install(tmp_path: Path) -> None:
    """Four minutes until the agent picks the script up (a first run installs the handler)."""
    azure = FakeAzure(script=Script(start_s=240, duration_s=20))
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], spec(60)))
    assert result.ok
    waiting = [g for g in azure.ops("GET") if g.t < 240]
    assert len(waiting) <= 20  # not a read a second while waiting for the agent


def test_polls_do_not_hammer_while_scripts_wait_for_the_agent(tmp_path: Path) -> None:
    """20 machines, 27.5 s to start (scale-set median), 15 s cadence: reads are spaced by the
    wait and the agent's cadence, not by the scouts' 1 s."""
    azure = FakeAzure(script=Script(start_s=27.5, duration_s=120))
    result = vrun(lambda: Harness(azure, tmp_path).run(vms(20), spec(600)))
    assert result.ok
    per = [len(azure.ops("GET", f"vm-{i:03d}")) for i in range(1, 21)]
    assert max(per) <= 24 and sum(per) / 20 <= 13  # ~150 s each: about one read per agent report
    before_start = [g for g in azure.ops("GET", "vm-001") if g.t < 27.5]
    assert len(before_start) <= 6


def test_cancel_waits_for_slow_deletes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=3600), delete_s=120)
    h = Harness(azure, tmp_path)

    async def control(runner: Runner) -> None:
        while runner.snapshot().counts.get("Running", 0) < 3:
            await asyncio.sleep(1)
        await asyncio.sleep(30)
        runner.request_cancel()

    async def main() -> tuple[FleetResult, float, list[list[str]]]:
        result = await h.run(vms(3), spec(7200), control=control)
        return result, azure.now(), [azure.listed(f"vm-{i:03d}") for i in range(1, 4)]

    result, ended, listed = vrun(main)
    assert {r.state for r in result.results} == {TargetState.CANCELED}
    assert all(r.exit_code is None for r in result.results)
    assert listed == [[], [], []]  # gone, not just Deleting
    assert len(azure.ops("DELETE")) == 3  # one DELETE each; the rest were reads of the lasting operation
    first_delete = azure.ops("DELETE")[0].t
    assert ended >= first_delete + 120
    rows = h.ledger.targets("r-test")
    assert all(t.cleaned_at is not None and t.exit_code is None for t in rows)


def test_exit_codes_are_not_invented_for_timed_out_canceled_or_stopped_machines(tmp_path: Path) -> None:
    """The handler's kill at timeoutInSeconds reports -1; a deallocated machine reports nothing."""
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=5000),
                      scripts={"vm-002": Script(start_s=9.5, duration_s=5000, power="running")})
    h = Harness(azure, tmp_path)

    async def control(runner: Runner) -> None:
        await asyncio.sleep(60)
        azure.scripts["vm-002"].power = "deallocated"

    opts = options(max_errors=5)
    result = vrun(lambda: h.run(vms(2), spec(1000), opts, control=control))
    by = {r.target.name: r for r in result.results}
    assert by["vm-001"].state is TargetState.TIMED_OUT and by["vm-001"].exit_code is None
    assert by["vm-002"].state is TargetState.FAILED and "deallocated" in by["vm-002"].message
    assert by["vm-002"].exit_code is None
    assert all(t.exit_code is None for t in h.ledger.targets("r-test"))


def test_a_first_run_handler_install_is_waited_out_by_the_scouts(tmp_path: Path) -> None:
    """100 machines that each install the handler first (start 70-130 s after the PUT, as the
    realistic profile draws it), a 5 s script: only the scouts read every agent report while
    nothing has started; the others wait for the first start, and no waiting machine has its
    power read every 20 s. Before: 14.7 requests and 3.8 power reads per target; the run's end
    stays within two report intervals of the last script's end."""
    rng = random.Random(5)
    starts = {f"vm-{i:03d}": 9.5 + rng.uniform(60, 120) for i in range(1, 101)}
    azure = FakeAzure(scripts={m: Script(start_s=s, duration_s=5) for m, s in starts.items()})
    result = vrun(lambda: Harness(azure, tmp_path).run(
        [vm(m) for m in starts], spec(120), options(max_concurrency="100%", max_errors="100%")))
    assert result.ok
    assert len(azure.calls) / 100 <= 8.5, f"{len(azure.calls) / 100:.2f} requests per target"
    assert len(azure.ops("POWER")) / 100 <= 0.3
    last_end = max(starts.values()) + 5
    assert max(c.t for c in azure.ops("DELETE")) <= last_end + 2 * azure.cadence_s
