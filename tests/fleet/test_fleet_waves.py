"""Waves (issue 16): the plan (pure), and rollouts on the fake Azure in virtual time — order,
soak, per-wave error budgets, the canary as the first wave, resume mid-rollout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fleet_fakes import FakeAzure, Harness, Script, options, vm, vms, vrun

from azrun.errors import ConfigError
from azrun.fleet import FleetOptions, WavePlan
from azrun.fleet._fleet import Fleet
from azrun.fleet._runner import Runner
from azrun.models import FleetResult, RunSpec, TargetState
from azrun.runcommand import run_command_name

SPEC = RunSpec(script="patch", timeout_s=3600)


# -- the plan -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "n", "sizes"), [
    ("1,10%,50%,100%", 33, [1, 3, 13, 16]),
    ("1,10%,50%,100%", 5, [1, 2, 2]),  # 10% of 5 rounds up to 1: that wave adds nobody and is dropped
    ("2,5", 10, [2, 3, 5]),  # the rest is a final wave
    ("100%", 4, [4]),
    ("50%", 3, [2, 1]),
])
def test_cumulative_sizes_resolve_to_waves(raw: str, n: int, sizes: list[int]) -> None:
    waves = WavePlan.parse(raw).assign(vms(n))
    assert [waves.count(i) for i in range(max(waves) + 1)] == sizes
    assert waves == sorted(waves)  # in selection order


def test_groups_by_tag_region_resource_group_and_subscription() -> None:
    targets = [vm("a", tags={"patch-group": "b"}, location="westeurope", rg="rg2"),
               vm("b", tags={"Patch-Group": "a"}, location="northeurope", rg="rg1"),
               vm("c", location="westeurope", rg="rg1"),
               vm("d", tags={"patch-group": "a"}, location="westeurope", rg="RG1")]
    assert WavePlan.parse("tag:patch-group").assign(targets) == [1, 0, 2, 0]  # sorted values, untagged last
    assert WavePlan.parse("tag:patch-group").labels(targets) == ["patch-group=a", "patch-group=b", "(none)"]
    assert WavePlan.parse("region").assign(targets) == [1, 0, 1, 1]
    assert WavePlan.parse("resource-group").assign(targets) == [1, 0, 0, 0]  # case-insensitive
    assert WavePlan.parse("subscription").assign(targets) == [0, 0, 0, 0]


@pytest.mark.parametrize("raw", ["", "0,100%", "1,x", "tag:", "zone", "150%"])
def test_bad_plans_are_refused_in_one_line(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        WavePlan.parse(raw)
    assert "\n" not in str(info.value) and info.value.hint


def test_the_plan_round_trips_through_the_run_options() -> None:
    plan = WavePlan.parse("1,25%,100%", soak_s=600, max_errors="10%")
    opts = FleetOptions.make(waves=plan)
    again = FleetOptions.from_dict(opts.to_dict())
    assert again.waves == plan and again.plan() == plan
    assert FleetOptions.make(canary=2).plan() == WavePlan.for_canary(2)
    with pytest.raises(ConfigError, match="canary is the first wave"):
        FleetOptions.make(canary=1, waves=plan)


# -- rollouts -------------------------------------------------------------------------------------------
def put_times(azure: FakeAzure) -> dict[str, float]:
    return {c.machine: c.t for c in azure.ops("PUT") if c.n == 0}


def test_each_wave_finishes_and_soaks_before_the_next_starts(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=100))
    plan = WavePlan.parse("1,50%,100%", soak_s=600)
    result = vrun(lambda: Harness(azure, tmp_path).run(vms(6), SPEC, options(waves=plan)))
    assert result.ok
    t = put_times(azure)
    assert t["vm-001"] < 1
    first_end = 9  # the script's reported end (whole seconds): 9.5 + 100 -> 109
    assert all(first_end + 100 + 600 <= t[f"vm-00{i}"] <= first_end + 100 + 600 + 20 for i in (2, 3))  # soaked
    second_end = max(t["vm-002"], t["vm-003"]) + 109
    assert all(second_end + 600 <= t[f"vm-00{i}"] for i in (4, 5, 6))
    assert {r.wave for r in result.results} == {0, 1, 2}


def test_a_wave_over_its_error_budget_stops_the_rollout(tmp_path: Path) -> None:
    bad = {f"vm-00{i}": Script(exit_code=2) for i in (3, 4)}
    azure = FakeAzure(scripts=bad)
    plan = WavePlan.parse("2,6,100%", max_errors="1")
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run(vms(9), SPEC, options(waves=plan, max_errors=10)))
    states = {r.target.name: r.state for r in result.results}
    assert [states[f"vm-00{i}"] for i in (1, 2)] == [TargetState.SUCCEEDED] * 2
    assert sorted(r.target.name for r in result.results if r.state is TargetState.FAILED) == ["vm-003", "vm-004"]
    skipped = [r for r in result.results if r.state is TargetState.SKIPPED]
    assert len(skipped) >= 3 and all("wave 2/3 exceeded its error budget (2 errors > max 1)" in r.message
                                     for r in skipped)
    assert not any(f"vm-00{i}" in put_times(azure) for i in (7, 8, 9))  # wave 3 never started


def test_a_budget_in_percent_is_of_the_wave(tmp_path: Path) -> None:
    azure = FakeAzure(scripts={"vm-002": Script(exit_code=1)})
    plan = WavePlan.parse("1,5,100%", max_errors="25%")  # wave 2 has 4 targets: 1 error allowed
    result = vrun(lambda: Harness(azure, tmp_path).run(vms(8), SPEC, options(waves=plan, max_errors=5)))
    assert result.counts() == {"Succeeded": 7, "Failed": 1}


def test_the_canary_is_the_first_wave(tmp_path: Path) -> None:
    azure = FakeAzure(scripts={"vm-002": Script(exit_code=3)})
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run(vms(5), SPEC, options(canary=2, max_errors=5)))
    assert sorted(r.state.value for r in result.results) == ["Failed", "Skipped", "Skipped", "Skipped", "Succeeded"]
    assert all(r.message == "canary failed (vm-002: Failed)" for r in result.results if r.state is TargetState.SKIPPED)
    assert sorted(put_times(azure)) == ["vm-001", "vm-002"]


def test_a_rollout_resumes_mid_soak_and_finishes_the_waves_left(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=50))
    plan = WavePlan.parse("2,100%", soak_s=1200)
    h = Harness(azure, tmp_path)
    opts = options(waves=plan)

    async def detach_while_soaking(runner: Runner) -> None:
        while runner.snapshot().soak_left_s is None:
            await asyncio.sleep(5)
        snap = runner.snapshot()
        assert snap.wave == 0 and snap.waves == 2 and 0 < (snap.soak_left_s or 0) <= 1200
        await asyncio.sleep(300)
        runner.request_detach()

    async def main() -> tuple[FleetResult, FleetResult, float]:
        first = await h.run(vms(5), SPEC, opts, control=detach_while_soaking)
        detached_at = azure.now()
        works = [Fleet._work_from(r, run_command_name("r-test")) for r in h.ledger.targets("r-test")]
        second = await h.runner(works, SPEC, opts).execute()
        return first, second, detached_at

    first, second, detached_at = vrun(main)
    assert first.counts() == {"Succeeded": 2, "Pending": 3}
    assert second.ok and second.counts() == {"Succeeded": 5}
    t = put_times(azure)
    wave1_end = 59  # reported end, whole seconds
    assert all(wave1_end + 1200 <= t[f"vm-00{i}"] <= wave1_end + 1200 + 30 for i in (3, 4, 5))  # only what was left
    assert t["vm-003"] - detached_at < 1200
    assert all(azure.runs_on(f"vm-00{i}") == 1 for i in range(1, 6))
    assert [r.wave for r in h.ledger.targets("r-test")] == [0, 0, 1, 1, 1]


def test_the_library_takes_waves_and_retries_as_typed_arguments(tmp_path: Path) -> None:
    """``Fleet.run(..., waves=..., retries=...)`` over a dispatcher and clock of the caller's."""
    from fleet_fakes import EPOCH

    from azrun.fleet import LoopClock

    azure = FakeAzure(script=Script(start_s=9.5, duration_s=30))

    async def main() -> tuple[FleetResult, list[int]]:
        fleet = Fleet(state_dir=tmp_path / "lib", dispatcher=azure, clock=LoopClock(epoch=EPOCH))
        try:
            result = await fleet.run(vms(4), SPEC, waves=WavePlan.parse("1,100%", soak_s=60), retries=2)
            return result, [t.wave for t in fleet.status(result.run_id).targets]
        finally:
            await fleet.aclose()

    result, waves = vrun(main, settle_s=0.005)
    assert result.ok and waves == [0, 1, 1, 1]
    t = put_times(azure)
    assert t["vm-002"] - t["vm-001"] >= 30 + 60  # wave 2 after wave 1's end and the soak
    with pytest.raises(ConfigError, match="not both"):
        vrun(lambda: Fleet(state_dir=tmp_path / "x", dispatcher=azure).run(vms(1), SPEC, options=FleetOptions(),
                                                                          retries=1))


def test_the_panel_shows_the_wave_and_the_soak_countdown() -> None:
    from dataclasses import replace

    from azrun.cli._panel import render_panel, rollout_text
    from azrun.fleet import ProgressSnapshot

    snap = ProgressSnapshot(run_id="r", elapsed_s=100, total=10, counts={"Succeeded": 3, "Pending": 7},
                            dispatched=3, dispatch_rate_per_s=1, eta_s=None, polls_queued=0, arm_requests=9,
                            throttled_429=0, wave=1, waves=4)
    assert rollout_text(snap) == "wave 2/4"
    soaking = replace(snap, soak_left_s=250.0, retrying=2)
    assert rollout_text(soaking) == "wave 2/4 done | soaking: 4m10s left before wave 3/4 | retrying 2"
    assert rollout_text(replace(snap, wave=None, waves=0)) is None
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render_panel(soaking))
    assert "soaking: 4m10s left before wave 3/4" in console.export_text()
