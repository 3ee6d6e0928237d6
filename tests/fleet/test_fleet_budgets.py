"""Budgets, canary and the 25-per-VM cap, decided on a fake Azure in virtual time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fleet_fakes import FakeAzure, Harness, Script, options, vm, vms, vrun

from azrun.errors import ConfigError
from azrun.fleet import FleetOptions
from azrun.fleet._runner import Runner
from azrun.models import FleetResult, TargetState


def names(result: FleetResult, state: TargetState) -> list[str]:
    return sorted(r.target.name for r in result.results if r.state is state)


def run_sampling(h: Harness, n: int, opts: FleetOptions) -> tuple[FleetResult, int]:
    """Run on ``n`` machines, sampling the in-flight count every virtual 0.5 s."""
    peak = 0

    async def watch(runner: Runner) -> None:
        nonlocal peak
        while runner.stop_reason is None and any(not w.state.terminal for w in runner.works):
            peak = max(peak, runner.active)
            await asyncio.sleep(0.5)

    async def main() -> FleetResult:
        return await h.run(vms(n), opts=opts, control=watch)

    return vrun(main), peak


@pytest.mark.parametrize(("budget", "n", "expected"), [(3, 12, 3), ("25%", 12, 3), ("10%", 15, 2), ("100%", 7, 7)])
def test_max_concurrency_is_reached_and_never_exceeded(tmp_path: Path, budget: str | int, n: int, expected: int) -> None:
    h = Harness(FakeAzure(script=Script(start_s=9.5, duration_s=60)), tmp_path)
    result, peak = run_sampling(h, n, options(max_concurrency=budget))
    assert result.ok and peak == expected


@pytest.mark.parametrize("raw", [0, "0", "0%"])
def test_zero_concurrency_is_refused_with_one_line(raw: str | int) -> None:
    with pytest.raises(ConfigError, match="nothing could ever run") as info:
        FleetOptions.make(max_concurrency=raw)
    assert "\n" not in str(info.value) and info.value.hint


@pytest.mark.parametrize(("budget", "n", "allowed"), [(1, 10, 1), ("20%", 10, 2), ("10%", 15, 1)])
def test_max_errors_stops_dispatch_once_exceeded(tmp_path: Path, budget: str | int, n: int, allowed: int) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=30, exit_code=5))
    h = Harness(azure, tmp_path)
    result, _ = run_sampling(h, n, options(max_concurrency=1, max_errors=budget))
    failed, skipped = names(result, TargetState.FAILED), names(result, TargetState.SKIPPED)
    assert len(failed) == allowed + 1 and len(failed) + len(skipped) == n  # one at a time: stops at budget + 1
    assert all("error budget exceeded" in r.message for r in result.results if r.state is TargetState.SKIPPED)
    assert len(azure.executions) == len(failed)
    assert all(r.exit_code == 5 for r in result.results if r.state is TargetState.FAILED)


def test_a_failed_canary_stops_the_run_before_anyone_else_gets_it(tmp_path: Path) -> None:
    azure = FakeAzure(scripts={"vm-001": Script(exit_code=3)})
    result, _ = run_sampling(Harness(azure, tmp_path), 6, options(canary=1, max_errors="50%"))
    assert names(result, TargetState.FAILED) == ["vm-001"]
    assert len(names(result, TargetState.SKIPPED)) == 5
    assert all(r.message.startswith("canary failed (vm-001") for r in result.results if r.state is TargetState.SKIPPED)
    assert [m for m, _, _ in azure.executions] == ["vm-001"]


def test_a_good_canary_finishes_before_the_rest_start(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=100))
    result, _ = run_sampling(Harness(azure, tmp_path), 5, options(canary=2))
    assert result.ok
    puts = {c.machine: c.t for c in azure.ops("PUT")}
    canary_done = 100 + 9.5
    assert all(puts[f"vm-{i:03d}"] > canary_done for i in range(3, 6))  # the rest waited for the canary's end
    assert puts["vm-001"] < 1 and puts["vm-002"] < 1


def test_the_25_cap_waits_for_deletes_in_progress_and_counts_them(tmp_path: Path) -> None:
    """24 finished run commands + 1 still being deleted = 25: the PUT is refused, azrun waits for
    the delete to finish (it still counts) and then sends; nothing runs twice."""
    azure = FakeAzure(delete_s=40)
    h = Harness(azure, tmp_path)

    async def main() -> FleetResult:
        for i in range(24):
            azure.plant("vm-001", f"azrun-old-{i:02d}", tags={"azrun-run": f"old-{i}"})
        azure.plant("vm-001", "azrun-going", deleting_for=35)
        return await h.run([vm("vm-001")])

    result = vrun(main)
    assert result.ok
    puts = azure.ops("PUT")
    assert all(c.t < 35 for c in puts[:-1]) and puts[-1].t >= 35  # refused (25 incl. Deleting) until it was gone
    assert 2 <= len(puts) <= 5  # read back every 10 s meanwhile, not hammered
    assert azure.ops("LIST", "vm-001")  # it looked for deletes in progress before waiting
    assert azure.runs_on("vm-001") == 1


def test_the_25_cap_without_deletes_in_progress_is_undeliverable_with_the_cleanup_hint(tmp_path: Path) -> None:
    azure = FakeAzure()
    h = Harness(azure, tmp_path)

    async def main() -> FleetResult:
        for i in range(25):
            azure.plant("vm-001", f"other-{i:02d}")
        return await h.run([vm("vm-001")])

    r = vrun(main).results[0]
    assert r.state is TargetState.UNDELIVERABLE and r.exit_code is None
    assert "maximum number of managed run commands (25)" in r.message and "azrun cleanup" in r.message
    assert len(azure.ops("PUT")) == 1
