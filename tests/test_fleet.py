"""azrun.fleet end to end against a local Azure: real scripts on simulated machines, with the
simulator's execution list and request log as the ground truth. The fleet's decisions (budgets,
canary, watchdog, conflicts, the 25 cap, resume, outages) are tested on a fake Azure in virtual
time in ``tests/fleet/``; these runs prove the same code over the real SDK stack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
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

from azrun.errors import ConfigError, NoTargetsMatched
from azrun.fleet import FleetOptions, PollPolicy, RecordingObserver
from azrun.models import RunSpec, Target, TargetKind, TargetState
from azrun.runcommand import RunCommandClient, run_command_name
from azrun.targets import Selector

PROD = Selector.from_options(tags=["env=prod"])
FAST_POLL = PollPolicy(min_first_s=0.3, initial_guess_s=0.5, min_interval_s=0.2, max_interval_s=1.0)
# A script that fails on the machines whose name is in $FAIL_ON (each machine's hostname is its name).
FAIL_ON = 'h=$(hostname); for m in $FAIL_ON; do [ "$h" = "$m" ] && { echo "failing on $m" >&2; exit 3; }; done; echo ok'


def opts(**kw: Any) -> FleetOptions:
    kw.setdefault("poll", FAST_POLL)
    kw.setdefault("conflict_backoff_s", 0.05)
    return FleetOptions.make(**kw)


@pytest.fixture
def start_sim(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]) -> Callable[..., Any]:
    def start(**fleet: Any) -> Any:
        sim = sim_factory(fleet_toml(**fleet))
        azure_env(sim)
        return sim

    return start


def vm_target(name: str, power: str = "running") -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(rid, name, TargetKind.VM, SUB, RG, LOCATION, "linux", power, vm_name=name)


async def test_happy_path_on_fifty_machines_of_every_kind(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=40, uniform=6, flex=4)
    obs = RecordingObserver()
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="echo hello from $ConfigExtensionName; sleep 0.5", timeout_s=60),
                             options=opts(max_concurrency=50), observer=obs)
        status = f.status(result.run_id)
    assert len(result.results) == 50 and result.ok
    kinds = {r.target.kind for r in result.results}
    assert kinds == {TargetKind.VM, TargetKind.VMSS_UNIFORM, TargetKind.VMSS_FLEX}
    for r in result.results:
        assert r.state is TargetState.SUCCEEDED and r.exit_code == 0
        assert r.stdout_tail.startswith("hello from") and r.output.truncated is False
        assert 3 <= r.arm_requests <= 5  # PUT + a poll or two + DELETE
    name = run_command_name(result.run_id)
    assert set(executions_per_machine(sim, name).values()) == {1} and len(executions_per_machine(sim, name)) == 50
    # every run command was deleted after its output was read: machines stay under the 25 cap
    assert sum(1 for r in run_command_ops(sim) if r["method"] == "DELETE" and r["status"] < 300) == 50
    assert all(t.cleaned_at is not None and t.state is TargetState.SUCCEEDED for t in status.targets)
    assert status.run.status == "succeeded"
    assert {r.state for r in obs.targets} >= {TargetState.DISPATCHING, TargetState.RUNNING, TargetState.SUCCEEDED}


async def test_timeout_is_timed_out(start_sim: Callable[..., Any], fleet: Any) -> None:
    start_sim(vms=2)
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="echo started; sleep 30", timeout_s=2), options=opts())
    for r in result.results:
        assert r.state is TargetState.TIMED_OUT and r.exit_code is None
        assert "timed out after 2s" in r.message and r.stdout_tail == "started"
    assert not result.ok


async def test_stopped_machines_are_skipped(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=2, stopped=["vm-off"])
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="true", timeout_s=60), options=opts())
        direct = await f.run([vm_target("vm-001"), vm_target("vm-off", "stopped")], "true", options=opts())
        with pytest.raises(NoTargetsMatched):
            await f.run([vm_target("vm-off", "deallocated")], "true")
    off = next(r for r in result.results if r.target.name == "vm-off")
    assert off.state is TargetState.SKIPPED and "deallocated" in off.message
    assert result.ok  # skipping a stopped machine is not a failure
    assert names(direct, TargetState.SKIPPED) == ["vm-off"]
    assert "vm-off" not in str(executions(sim))


async def test_forbidden_is_undeliverable_and_names_the_action(start_sim: Callable[..., Any], fleet: Any) -> None:
    start_sim(vms=2, access='  "system:vm-001" = "reader"')
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="true", timeout_s=60), options=opts(max_errors=5))
    for r in result.results:
        assert r.state is TargetState.UNDELIVERABLE
        assert "Microsoft.Compute/virtualMachines/runCommands/write" in r.message


async def test_a_vanished_machine_is_undeliverable(start_sim: Callable[..., Any], fleet: Any) -> None:
    start_sim(vms=1)
    async with fleet() as f:
        result = await f.run([vm_target("vm-001"), vm_target("vm-gone")], "true", options=opts(max_errors=5))
    gone = next(r for r in result.results if r.target.name == "vm-gone")
    assert gone.state is TargetState.UNDELIVERABLE and "404" in gone.message
    assert names(result, TargetState.SUCCEEDED) == ["vm-001"]


async def test_cancel_leaves_no_run_command_running(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=4)
    async with fleet() as f:
        handle = await f.start(PROD, RunSpec(script="sleep 60", timeout_s=120), options=opts(max_concurrency=2))
        for _ in range(100):
            if handle.snapshot().counts.get("Running", 0) == 2:
                break
            await asyncio.sleep(0.05)
        handle.cancel()
        result = await handle.wait()
        client = RunCommandClient(f.factory)
        leftovers = [i for t in result.results for i in await client.list(t.target)]
    assert names(result, TargetState.CANCELED) and len(names(result, TargetState.CANCELED)) == 2
    assert len(names(result, TargetState.SKIPPED)) == 2
    assert leftovers == []
    stats = sim.admin_get("stats")
    assert stats["runningScripts"] == 0
    assert all(e["state"] != "Running" or e.get("killed") for e in executions(sim))


async def test_cancel_from_another_fleet_object(start_sim: Callable[..., Any], fleet: Any) -> None:
    """`azrun cancel` path: a second Fleet over the same ledger deletes what is in flight."""
    start_sim(vms=3)
    async with fleet() as f, fleet() as other:
        handle = await f.start(PROD, RunSpec(script="sleep 60", timeout_s=120), options=opts())
        for _ in range(100):
            if handle.snapshot().counts.get("Running", 0) == 3:
                break
            await asyncio.sleep(0.05)
        canceled = await other.cancel(handle.run_id)
        result = await asyncio.wait_for(handle.wait(), 20)
    assert {r.state for r in canceled.results} == {TargetState.CANCELED}
    assert {r.state for r in result.results} == {TargetState.CANCELED}
    assert other.status(handle.run_id).run.status == "canceled"


async def test_rerun_failed_picks_exactly_the_failed(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=5)
    spec = RunSpec(script=FAIL_ON, parameters=(("FAIL_ON", "vm-002 vm-004"),), timeout_s=60)
    async with fleet() as f:
        first = await f.run(PROD, spec, options=opts(max_errors=5))
        assert names(first, TargetState.FAILED) == ["vm-002", "vm-004"]
        fixed = RunSpec(script=FAIL_ON, parameters=(("FAIL_ON", "none"),), timeout_s=60)
        second = await f.rerun(first.run_id, fixed)
        runs = f.runs()
    assert sorted(r.target.name for r in second.results) == ["vm-002", "vm-004"] and second.ok
    assert runs[0].options["rerun_of"] == first.run_id
    assert executions_per_machine(sim, run_command_name(second.run_id)) == {
        vm_target("vm-002").resource_id.lower(): 1, vm_target("vm-004").resource_id.lower(): 1}


async def test_resume_after_detach_finishes_every_target_once(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=6)
    spec = RunSpec(script="sleep 0.8; echo done", timeout_s=60)
    async with fleet() as f:
        handle = await f.start(PROD, spec, options=opts(max_concurrency=2))
        for _ in range(100):
            if handle.snapshot().counts.get("Running", 0) == 2:
                break
            await asyncio.sleep(0.05)
        handle.detach()
        partial = await handle.wait()
        assert f.status(handle.run_id).run.status == "interrupted"
        assert len(names(partial, TargetState.PENDING)) == 4
        with pytest.raises(ConfigError, match="needs its script"):
            await f.resume(handle.run_id)
        result = await f.resume(handle.run_id, spec)
    assert result.ok and len(names(result, TargetState.SUCCEEDED)) == 6
    assert set(executions_per_machine(sim, run_command_name(handle.run_id)).values()) == {1}
    assert len(executions_per_machine(sim)) == 6


async def test_secret_values_stay_out_of_results_ledger_and_simulator(
    start_sim: Callable[..., Any], fleet: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Pr0tected-Value-4711"
    sim = start_sim(vms=2)
    script = 'if [ "$TOKEN" = "Pr0tected-Value-4711" ]; then echo "got $TOKEN"; else exit 9; fi'
    spec = RunSpec(script=script.replace("Pr0tected-Value-4711", "$EXPECTED"), timeout_s=60,
                   protected_parameters=(("TOKEN", secret), ("EXPECTED", secret)))
    caplog.set_level("DEBUG")
    obs = RecordingObserver()
    async with fleet() as f:
        result = await f.run(PROD, spec, options=opts(), observer=obs)
    assert result.ok
    assert all(r.stdout_tail == "got ***" for r in result.results)  # echoed by the script, scrubbed
    assert secret not in repr(result) and secret not in repr(obs)
    state = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    assert secret.encode() not in state
    assert secret not in caplog.text
    assert secret not in sim.request_log.read_text() and secret not in sim.stderr_path.read_text()


async def test_cancel_recalls_puts_still_queued_in_the_throttle(
    start_sim: Callable[..., Any], fleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With everything claimed at once (100 % concurrency) most PUTs wait for write tokens; a
    cancel must not send them (and then delete them): nothing left the client, nothing runs."""
    # writes: 2, then one per 5 s, on both sides (the client also learns the server's remaining count)
    monkeypatch.setenv("AZRUN_ARM_WRITES_BURST", "2")
    monkeypatch.setenv("AZRUN_ARM_WRITES_PER_S", "0.2")
    sim = start_sim(vms=12, limits="arm_writes = [2, 0.2]")
    async with fleet() as f:
        handle = await f.start(PROD, RunSpec(script="sleep 60", timeout_s=120), options=opts(max_concurrency="100%"))
        for _ in range(100):
            if handle.snapshot().counts.get("Running", 0) >= 2:
                break
            await asyncio.sleep(0.05)
        handle.cancel()
        result = await asyncio.wait_for(handle.wait(), 30)
        rows = f.status(handle.run_id).targets
    canceled, skipped = names(result, TargetState.CANCELED), names(result, TargetState.SKIPPED)
    assert len(canceled) == 2 and len(skipped) == 10
    puts = [r for r in run_command_ops(sim) if r["method"] == "PUT"]
    assert len(puts) == len(canceled)  # the queued PUTs were never sent
    assert len(executions(sim)) <= len(canceled)  # (a script killed before it started leaves no trace)
    assert sim.admin_get("stats")["runningScripts"] == 0
    assert sorted(r.state.value for r in rows) == sorted(r.state.value for r in result.results)


def test_the_sync_library_entry_point(start_sim: Callable[..., Any], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import azrun

    start_sim(vms=2)
    monkeypatch.setenv("AZRUN_STATE_DIR", str(tmp_path / "sync-state"))
    result = azrun.run(azrun.Selector.from_options(tags=["env=prod"]), "echo sync", options=opts())
    assert result.ok and [r.stdout_tail for r in result.results] == ["sync", "sync"]
    assert (tmp_path / "sync-state" / "ledger.db").exists()


async def test_a_machine_deallocated_mid_run_fails_with_a_reason(start_sim: Callable[..., Any], fleet: Any) -> None:
    sim = start_sim(vms=2)
    async with fleet() as f:
        fast_check = PollPolicy(min_first_s=0.3, initial_guess_s=0.5, min_interval_s=0.2, max_interval_s=1.0,
                                power_check_after_s=1.0)
        handle = await f.start(PROD, RunSpec(script="sleep 2; echo done", timeout_s=60), options=opts(poll=fast_check))
        for _ in range(100):
            if handle.snapshot().counts.get("Running", 0) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        sim.admin_post("power", {"id": vm_target("vm-002").resource_id, "power": "deallocated"})
        result = await asyncio.wait_for(handle.wait(), 30)
    assert names(result, TargetState.SUCCEEDED) == ["vm-001"]
    lost = next(r for r in result.results if r.target.name == "vm-002")
    assert lost.state is TargetState.FAILED and "the machine is deallocated" in lost.message


async def test_5xx_and_resets_lose_nothing_and_run_nothing_twice(start_sim: Callable[..., Any], fleet: Any) -> None:
    """ARM answers 500/503 or drops the connection on a share of requests (retries included): every
    PUT of unknown outcome is read back before it is sent again, and reads that fail leave the
    target in flight; every target still ends Succeeded, each machine ran the script once."""
    sim = start_sim(vms=8, faults="arm_error_rate = 0.25\narm_reset_rate = 0.1")
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="echo once", timeout_s=60), options=opts(max_errors=8))
    assert result.counts() == {"Succeeded": 8}, [r.message for r in result.results]
    assert set(executions_per_machine(sim).values()) == {1}


async def test_the_timeout_counts_from_the_agent_reported_start(start_sim: Callable[..., Any], fleet: Any) -> None:
    """The agent starts scripts 3 s after the PUT; a 2 s timeout (+0.5 s grace) counted from the
    dispatch would cancel them before they started. Counted from the reported start they finish."""
    start_sim(vms=2, start_delay_s=3)
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="sleep 0.5; echo in time", timeout_s=2),
                             options=opts(watchdog_grace_s=0.5))
    assert result.ok, [r.message for r in result.results]
    assert [r.stdout_tail for r in result.results] == ["in time", "in time"]


async def test_a_script_never_started_within_the_start_limit_is_undeliverable(
    start_sim: Callable[..., Any], fleet: Any
) -> None:
    sim = start_sim(vms=1, start_delay_s=30)
    async with fleet() as f:
        result = await f.run(PROD, RunSpec(script="echo late", timeout_s=60), options=opts(start_timeout_s=1.5))
    r = result.results[0]
    assert r.state is TargetState.UNDELIVERABLE and r.exit_code is None
    assert "never picked the script up within 1.5s" in r.message
    assert next(x["status"] for x in run_command_ops(sim) if x["method"] == "DELETE") < 300
    assert executions(sim) == [] or all(e.get("killed") for e in executions(sim))
