"""Nothing lost (issue 14) on the fake: a controller-side outage fails nothing, a PUT answered 5xx
is read back before anything is decided, and only a confirmed-absent run command counts as
never sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet_fakes import Call, FakeAzure, Fault, Harness, Script, options, vm, vms, vrun

from azrun.fleet._runner import Runner
from azrun.fleet._work import works_for
from azrun.models import FleetResult, RunId, RunSpec, TargetState
from azrun.runcommand import run_command_name

SPEC = RunSpec(script="patch", timeout_s=3600)


def outage(start: float, end: float) -> object:
    """Every request between ``start`` and ``end`` (virtual s) fails to connect."""

    def handler(call: Call) -> Fault | None:
        return Fault.unreachable() if start <= call.t < end else None

    return handler


def test_a_two_minute_outage_fails_nothing_and_the_summary_says_so(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=200), handler=outage(60, 180))  # type: ignore[arg-type]
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run(vms(6), SPEC, options(max_concurrency=3)))
    assert result.ok and result.counts() == {"Succeeded": 6}
    assert all(azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 7))  # nothing sent twice
    assert len(result.notes) == 1 and "lost contact with Azure for" in result.notes[0]
    failing = [c for c in azure.calls if 60 <= c.t < 180]
    assert failing and len(failing) < 60  # reads backed off during the outage
    assert h.ledger.run("r-test").status == "succeeded"  # type: ignore[union-attr]


def test_an_outage_that_never_ends_leaves_the_run_interrupted_and_resumable(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=300), handler=outage(60, 10**9))  # type: ignore[arg-type]
    h = Harness(azure, tmp_path)
    opts = options(max_concurrency=2, watchdog_grace_s=60)
    spec = RunSpec(script="patch", timeout_s=600)
    result = vrun(lambda: h.run(vms(4), spec, opts))
    states = sorted(r.state.value for r in result.results)
    assert states == ["Pending", "Pending", "Running", "Running"]  # nothing Failed, nothing Skipped
    assert all(r.exit_code is None for r in result.results)
    assert h.ledger.run("r-test").status == "interrupted"  # type: ignore[union-attr]
    assert result.notes and "resume" in result.notes[0]

    # Azure answers again: resume re-attaches to the running ones (no second PUT) and runs the rest
    azure.handler = None
    rows = h.ledger.targets("r-test")

    async def resume() -> FleetResult:
        from azrun.fleet._fleet import Fleet

        works = [Fleet._work_from(r, run_command_name("r-test")) for r in rows]
        return await h.runner(works, spec, opts).execute()

    again = vrun(resume)
    assert again.ok and again.counts() == {"Succeeded": 4}
    assert all(azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 5))
    assert len(azure.ops("PUT", "vm-001")) == 1


def test_dispatch_waits_out_an_outage_instead_of_burning_the_error_budget(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=30), handler=outage(0, 200))  # type: ignore[arg-type]
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run(vms(5), SPEC, options(max_concurrency=5, max_errors=0)))
    assert result.ok and result.counts() == {"Succeeded": 5}
    assert all(azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 6))
    assert all(c.t >= 200 for c in azure.ops("PUT") if c.n == len(azure.ops("PUT", c.machine)) - 1)
    assert result.notes


def test_a_put_answered_5xx_but_applied_is_found_by_a_read_back(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        return Fault.http(500, "InternalServerError", applied=True) if call.op == "PUT" else None

    azure = FakeAzure(handler=handler)
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")]))
    assert result.ok and azure.runs_on("vm-001") == 1 and len(azure.ops("PUT")) == 1
    assert azure.ops("GET")[0].t <= azure.ops("PUT")[0].t + 1  # read back before anything else


def test_a_put_answered_5xx_and_confirmed_absent_is_sent_again(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        return Fault.http(503, "ServiceUnavailable") if call.op == "PUT" and call.n == 0 else None

    azure = FakeAzure(handler=handler)
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")]))
    assert result.ok and azure.runs_on("vm-001") == 1 and len(azure.ops("PUT")) == 2
    assert azure.ops("GET")[0].t < azure.ops("PUT")[1].t  # the 404 came first


def test_a_put_of_unknown_outcome_is_watched_until_a_read_answers(tmp_path: Path) -> None:
    """The PUT was applied, then ARM went away for 90 s: no GET can tell. The target is not
    Undeliverable (that would invite a second run); it is watched until a read finds it."""

    def handler(call: Call) -> Fault | None:
        if call.op == "PUT":
            return Fault.reset(applied=True)
        return Fault.unreachable() if call.t < 90 else None

    azure = FakeAzure(script=Script(start_s=9.5, duration_s=30), handler=handler)
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run([vm("vm-001")]))
    assert result.ok and azure.runs_on("vm-001") == 1 and len(azure.ops("PUT")) == 1


def test_a_put_of_unknown_outcome_found_absent_is_never_sent_not_failed(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        if call.op == "PUT":
            return Fault.reset(applied=False)
        return Fault.unreachable() if call.t < 90 else None

    azure = FakeAzure(handler=handler)
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run([vm("vm-001")], SPEC, options(submit_retries=0)))
    r = result.results[0]
    assert r.state is TargetState.UNDELIVERABLE and "never sent" in r.message and r.exit_code is None
    assert azure.runs_on("vm-001") == 0


def test_resume_decides_by_reading_back_each_dispatching_target(tmp_path: Path) -> None:
    """Crash window: Dispatching in the ledger; one PUT landed, one did not, one is Running."""
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=20))
    h = Harness(azure, tmp_path)
    targets = vms(3)
    name = run_command_name("r-test")

    async def main() -> FleetResult:
        from datetime import timedelta

        from fleet_fakes import EPOCH

        opts = options()
        h.create(targets, SPEC, opts)
        when = EPOCH + timedelta(seconds=azure.now())
        for t in targets:
            assert h.ledger.begin_dispatch("r-test", t.resource_id, run_command_name=name, run_command_id="x",
                                           dispatched_at=when)
        body = {"location": "westeurope", "properties": {"timeoutInSeconds": 3600}, "tags": {}}
        await azure.submit(targets[0], name, body)
        await azure.submit(targets[2], name, body)
        h.ledger.update_target("r-test", targets[2].resource_id, state=TargetState.RUNNING)
        from azrun.fleet._fleet import Fleet

        works = [Fleet._work_from(r, name) for r in h.ledger.targets("r-test")]
        return await h.runner(works, SPEC, opts).execute()

    result = vrun(main)
    assert result.ok and len(result.results) == 3
    assert [len(azure.ops("PUT", t.name)) for t in targets] == [1, 1, 1]  # the landed ones attached, never re-sent
    assert all(azure.runs_on(t.name) == 1 for t in targets)


def test_cancel_recalls_what_was_not_sent_and_stops_what_runs(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=3600))
    h = Harness(azure, tmp_path)

    async def control(runner: Runner) -> None:
        while runner.snapshot().counts.get("Running", 0) < 2:
            await asyncio.sleep(1)
        runner.request_cancel()

    result = vrun(lambda: h.run(vms(5), SPEC, options(max_concurrency=2), control=control))
    assert sorted(r.state.value for r in result.results) == ["Canceled"] * 2 + ["Skipped"] * 3
    assert len(azure.ops("PUT")) == 2 and len(azure.ops("DELETE")) == 2
    assert h.ledger.run("r-test").status == "canceled"  # type: ignore[union-attr]


def test_works_for_keeps_the_selection_order() -> None:
    works = works_for(vms(3), "azrun-x")
    assert [w.seq for w in works] == [0, 1, 2] and RunId("x") == "x"
