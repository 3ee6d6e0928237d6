"""The fake Azure and the virtual clock themselves: a run of real-Azure timing in milliseconds."""

from __future__ import annotations

import time
from pathlib import Path

from fleet_fakes import FakeAzure, Harness, Script, vms, vrun

from azrun.models import TargetState


def test_a_run_with_real_azure_timing_takes_milliseconds(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=600, stdout="patched"))
    h = Harness(azure, tmp_path)

    async def main() -> tuple[object, float]:
        t0 = azure.now()
        result = await h.run(vms(20))
        return result, azure.now() - t0

    wall = time.perf_counter()
    result, virtual = vrun(main)
    wall = time.perf_counter() - wall
    assert result.ok and {r.state for r in result.results} == {TargetState.SUCCEEDED}  # type: ignore[attr-defined]
    assert all(r.stdout_tail == "patched" and r.exit_code == 0 for r in result.results)  # type: ignore[attr-defined]
    assert virtual > 600 and wall < 5
    assert all(azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 21))


def test_the_real_client_and_the_fake_are_both_dispatchers() -> None:
    from azrun.fleet import Dispatcher
    from azrun.runcommand import RunCommandClient

    assert isinstance(FakeAzure(), Dispatcher)
    assert isinstance(RunCommandClient.__new__(RunCommandClient), Dispatcher)


def test_the_per_target_steps_work_standalone_over_a_dispatcher(tmp_path: Path) -> None:
    """What a durable run does between its own checkpoints: PUT, read until done, delete."""
    import asyncio

    from fleet_fakes import vm

    from azrun.fleet import FleetOptions, Work, delete_run_command, deliver, read_run_command
    from azrun.runcommand import build_run_command

    azure = FakeAzure(script=Script(start_s=9.5, duration_s=40, exit_code=4), delete_s=30)
    target = vm("vm-001")

    async def main() -> tuple[list[bool], object, object]:
        work = Work(target=target, seq=0, run_command_name="azrun-d-1")
        body = build_run_command(__import__("azrun").RunSpec(script="x", timeout_s=600), location="westeurope",
                                 run_id="d-1")
        await deliver(azure, work, body, FleetOptions())
        seen = []
        while True:
            reading = await read_run_command(azure, target, "azrun-d-1", timeout_s=600)
            seen.append(reading.started)
            if reading.outcome is not None:
                break
            await asyncio.sleep(15)
        gone = await delete_run_command(azure, target, "azrun-d-1", wait_s=120)
        return seen, reading.outcome, gone

    seen, outcome, gone = vrun(main)
    assert seen[0] is False and seen[-1] is True
    assert outcome.state.value == "Failed" and outcome.exit_code == 4  # type: ignore[attr-defined]
    assert gone.accepted and gone.gone  # type: ignore[attr-defined]
