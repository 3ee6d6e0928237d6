"""Per-target retries of delivery failures (``--retries``) on the fake Azure: what is retried,
what never is, and that each attempt is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_fakes import Call, FakeAzure, Fault, Harness, Script, options, vm, vrun

from azrun.errors import ConfigError
from azrun.fleet import FleetOptions
from azrun.models import RunSpec, TargetState
from azrun.runcommand import run_command_name

SPEC = RunSpec(script="patch", timeout_s=600)
NAME = run_command_name("r-test")


def test_a_script_the_agent_never_started_is_sent_again_under_a_new_name(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=20))
    h = Harness(azure, tmp_path)

    def handler(call: Call) -> Fault | None:
        if call.op == "PUT" and call.name == NAME:  # the first attempt's agent is not ready
            azure.scripts["vm-001"] = Script(start_s=float("inf"))
        elif call.op == "PUT":
            azure.scripts["vm-001"] = Script(start_s=9.5, duration_s=20)
        return None

    azure.handler = handler
    result = vrun(lambda: h.run([vm("vm-001")], SPEC, options(retries=2, start_timeout_s=120, retry_backoff_s=30)))
    r = result.results[0]
    assert r.state is TargetState.SUCCEEDED and r.attempt == 2
    puts = azure.ops("PUT")
    assert [c.name for c in puts] == [NAME, f"{NAME}-2"]  # a re-PUT of one name may not run the script again
    assert puts[1].t >= 120 + 30  # after the never-started limit and the backoff
    row = h.ledger.targets("r-test")[0]
    assert row.attempt == 2 and row.run_command_name == f"{NAME}-2" and row.cleaned_at is not None
    assert {c.name for c in azure.ops("DELETE")} == {NAME, f"{NAME}-2"}  # each attempt's run command removed


def test_conflicts_and_5xx_past_their_own_retries_get_new_attempts_then_give_up(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        if call.op != "PUT":
            return None
        return Fault.conflict() if call.name == NAME else Fault.http(503, "ServiceUnavailable")

    azure = FakeAzure(handler=handler)
    h = Harness(azure, tmp_path)
    opts = options(retries=2, conflict_retries=1, submit_retries=0, retry_backoff_s=10)
    result = vrun(lambda: h.run([vm("vm-001")], SPEC, opts))
    r = result.results[0]
    assert r.state is TargetState.UNDELIVERABLE and r.attempt == 3 and r.exit_code is None
    assert {c.name for c in azure.ops("PUT")} == {NAME, f"{NAME}-2", f"{NAME}-3"}
    assert azure.runs_on("vm-001") == 0
    assert h.ledger.targets("r-test")[0].attempt == 3


def test_a_script_that_ran_and_failed_is_not_retried_unless_asked(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(exit_code=7))
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], SPEC, options(retries=3, max_errors=5)))
    r = result.results[0]
    assert r.state is TargetState.FAILED and r.exit_code == 7 and r.attempt == 1
    assert azure.runs_on("vm-001") == 1


def test_retry_failed_scripts_runs_a_failed_script_again(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(exit_code=7))

    def handler(call: Call) -> Fault | None:
        if call.op == "PUT" and call.name == f"{NAME}-2":
            azure.script = Script(exit_code=0)
        return None

    azure.handler = handler
    h = Harness(azure, tmp_path)
    result = vrun(lambda: h.run([vm("vm-001")], SPEC, options(retries=1, retry_failed_scripts=True)))
    r = result.results[0]
    assert r.state is TargetState.SUCCEEDED and r.attempt == 2 and azure.runs_on("vm-001") == 2
    assert not result.failed  # the failed attempt did not spend the error budget


def test_forbidden_is_never_retried(tmp_path: Path) -> None:
    def handler(call: Call) -> Fault | None:
        return Fault.http(403, "AuthorizationFailed", "no runCommands/write") if call.op == "PUT" else None

    azure = FakeAzure(handler=handler)
    result = vrun(lambda: Harness(azure, tmp_path).run([vm("vm-001")], SPEC, options(retries=3)))
    assert result.results[0].attempt == 1 and len(azure.ops("PUT")) == 1


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ConfigError, match="--retries"):
        FleetOptions.make(retries=-1)
