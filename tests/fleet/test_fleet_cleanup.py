"""Conflicts and cleanup on the fake: 409s retried per target, sweeps that wait for slow deletes
and never touch what azrun did not create."""

from __future__ import annotations

import itertools
from pathlib import Path

from fleet_fakes import Call, FakeAzure, Fault, Harness, Script, options, vm, vms, vrun

from azrun.fleet._cleanup import CleanupReport, cleanup
from azrun.models import FleetResult


def test_conflicts_are_retried_with_backoff_and_nothing_runs_twice(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        return Fault.conflict() if call.op == "PUT" and call.n < 3 else None

    azure = FakeAzure(handler=handler)
    result: FleetResult = vrun(lambda: Harness(azure, tmp_path).run(vms(4), "echo once", options(conflict_retries=5)))
    assert result.ok
    assert all(len(azure.ops("PUT", f"vm-{i:03d}")) == 4 and azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 5))
    assert all(r.arm_requests >= 4 for r in result.results)  # retries are counted per target
    times = [c.t for c in azure.ops("PUT", "vm-001")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.2  # backing off


def test_conflicts_past_the_retries_are_undeliverable_and_say_so(tmp_path: Path) -> None:
    azure = FakeAzure(handler=lambda c: Fault.conflict() if c.op == "PUT" else None)
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], "x", options(conflict_retries=2)))
    r = result.results[0]
    assert r.state.value == "Undeliverable" and "still in conflict after 2 retries" in r.message
    assert azure.runs_on("vm-001") == 0


def test_a_machine_sweep_waits_for_slow_deletes_and_spares_others_run_commands(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(duration_s=1), delete_s=45)
    h = Harness(azure, tmp_path)
    target = vm("vm-001")

    async def main() -> tuple[CleanupReport, list[str], float]:
        for i in range(5):
            azure.plant("vm-001", f"azrun-old-{i}", tags={"azrun-run": f"old-{i}"})
        azure.plant("vm-001", "someone-elses")
        azure.plant("vm-001", "azrun-going", deleting_for=10, tags={"azrun-run": "old-x"})
        t0 = azure.now()
        report = await cleanup(azure, h.ledger, older_than_s=0, all_azrun=True, machines=[target])
        return report, azure.listed("vm-001"), azure.now() - t0

    report, left, took = vrun(main)
    assert len(report.deleted) == 5 and not report.failed
    assert left == ["someone-elses"]  # never touches what azrun did not create; the deletes are gone
    assert any(r.endswith("azrun-going") for r in report.deleting)  # already being deleted: not sent again
    assert 45 <= took <= 70
    assert len(azure.ops("DELETE")) == 5
