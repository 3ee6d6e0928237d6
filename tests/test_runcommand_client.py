"""azrun.runcommand._client: the wire (VM and VMSS-VM paths) against a local Azure, and what a
failed PUT means."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from _fleet_support import LOCATION, RG, SUB, executions, fleet_toml

from azrun.errors import AzureFailure, SubmitNotSent, SubmitOutcomeUnknown
from azrun.models import RunSpec, Target, TargetKind, TargetState
from azrun.runcommand import (
    RUN_TAG,
    FailureKind,
    PutAttempts,
    RunCommandClient,
    RunCommandView,
    build_run_command,
    classify_error,
    interpret,
    new_run_id,
    run_command_name,
    submit_error,
)


def vm(name: str, power: str = "running") -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(rid, name, TargetKind.VM, SUB, RG, LOCATION, "linux", power, vm_name=name)


def instance(i: int) -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{i}"
    return Target(rid, f"ss/{i}", TargetKind.VMSS_UNIFORM, SUB, RG, LOCATION, "linux", "running",
                  scale_set="ss", instance_id=str(i), vm_name=f"ss_{i}")



def test_transport_errors_say_whether_the_put_may_have_landed() -> None:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    refused = ServiceRequestError("Cannot connect", error=ConnectionRefusedError(111, "refused"))
    assert classify_error(refused).kind is FailureKind.NOT_SENT
    # azure-core raises ServiceRequestError for a disconnect after sending too: not proof of anything
    assert classify_error(ServiceRequestError("Server disconnected")).kind is FailureKind.UNKNOWN_OUTCOME
    assert classify_error(ServiceResponseError("reset")).kind is FailureKind.UNKNOWN_OUTCOME
    assert classify_error(ValueError("x")).kind is FailureKind.OTHER


def _attempts(*statuses: int, unanswered: int = 0) -> PutAttempts:
    attempts = PutAttempts()
    attempts.sent = len(statuses) + unanswered
    attempts.statuses = list(statuses)
    return attempts


@pytest.mark.parametrize(
    ("kind", "status", "attempts", "raised"),
    [
        (FailureKind.NOT_SENT, None, _attempts(unanswered=1), SubmitNotSent),  # refused before sending
        (FailureKind.AUTH, None, _attempts(), SubmitNotSent),  # no token: nothing left the client
        (FailureKind.CONFLICT, 409, _attempts(409), SubmitNotSent),
        (FailureKind.THROTTLED, 429, _attempts(429, 429, 429), SubmitNotSent),
        (FailureKind.OTHER, 500, _attempts(500, 503, 500), SubmitOutcomeUnknown),  # 5xx after retries
        (FailureKind.CONFLICT, 409, _attempts(503, 409), SubmitOutcomeUnknown),  # the 503 may have landed
        (FailureKind.UNKNOWN_OUTCOME, None, _attempts(unanswered=1), SubmitOutcomeUnknown),  # reset / timeout
        (FailureKind.NOT_SENT, None, _attempts(unanswered=2), SubmitOutcomeUnknown),  # an earlier try went unanswered
        (FailureKind.NOT_FOUND, 404, _attempts(404, unanswered=1), SubmitOutcomeUnknown),
    ],
)
def test_a_failed_put_says_whether_it_may_have_been_applied(
    kind: FailureKind, status: int | None, attempts: PutAttempts, raised: type[Exception]
) -> None:
    failure = AzureFailure(kind, status, "Code", "ARM's words")
    error = submit_error(failure, attempts, "vm-001")
    assert type(error) is raised and "vm-001" in error.message and "\n" not in error.message
    if raised is SubmitOutcomeUnknown:
        assert classify_error(error).kind is FailureKind.UNKNOWN_OUTCOME and error.hint
        assert (error.failure.status, error.failure.code) == (status, "Code")
    else:
        assert classify_error(error) is failure


# -- the wire ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from azrun.sim.launcher import SimProcess

    process = SimProcess(fleet_toml(vms=3, uniform=2, stopped=["vm-off"]), workdir=tmp_path_factory.mktemp("rc"),
                         storage=False)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client(sim: Any, azure_env: Callable[[Any], dict[str, str]]) -> AsyncIterator[RunCommandClient]:
    from azrun.clients import ClientFactory

    azure_env(sim)
    factory = ClientFactory.from_env()
    try:
        yield RunCommandClient(factory)
    finally:
        await factory.aclose()


async def _wait_done(client: RunCommandClient, target: Target, name: str) -> RunCommandView:
    for _ in range(100):
        view = await client.get(target, name)
        assert view is not None
        if interpret(view, 60):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError("never finished")


@pytest.mark.parametrize("target", [vm("vm-002"), instance(1)], ids=["vm", "vmss-uniform"])
async def test_submit_poll_delete_on_both_paths(client: RunCommandClient, sim: Any, target: Target) -> None:
    rid = new_run_id()
    name = run_command_name(rid)
    statuses: list[int] = []
    body = build_run_command(RunSpec(script="echo out; echo err >&2; exit 4", timeout_s=60), location=LOCATION, run_id=rid)
    put = await client.submit(target, name, body, counter=statuses.append)
    assert put.id and put.id.lower() == f"{target.resource_id}/runCommands/{name}".lower()
    assert put.provisioning_state in ("Creating", "Succeeded")
    done = await _wait_done(client, target, name)
    outcome = interpret(done, 60)
    assert outcome is not None and outcome.state is TargetState.FAILED and outcome.exit_code == 4
    assert done.output == "out\n" and done.error == "err\n" and done.tags == {RUN_TAG: rid}
    listed = await client.list(target)
    assert [(i.name, i.finished) for i in listed if i.name == name] == [(name, True)]
    assert await client.delete(target, name, counter=statuses.append)
    # as recorded, the DELETE's operation lasts (0.3 s on the fast profile) and the run command
    # stays listed as Deleting meanwhile
    deleting = await client.get(target, name)
    assert deleting is None or deleting.provisioning_state == "Deleting"
    for _ in range(100):
        if await client.get(target, name) is None:
            break
        await asyncio.sleep(0.05)
    assert await client.get(target, name) is None
    assert statuses == [201, 202]
    ran = [e for e in executions(sim) if e["runCommand"] == name]
    assert len(ran) == 1 and ran[0]["exitCode"] == 4


async def test_refusals_are_classified_with_arms_words(client: RunCommandClient) -> None:
    rid = new_run_id()
    body = build_run_command(RunSpec(script="true"), location=LOCATION, run_id=rid)
    with pytest.raises(SubmitNotSent) as stopped:  # a 4xx: ARM refused it, nothing was applied
        await client.submit(vm("vm-off", "deallocated"), run_command_name(rid), body)
    f = classify_error(stopped.value)
    assert f is stopped.value.failure
    assert f.kind is FailureKind.NOT_ALLOWED and f.status == 409 and "not running" in f.message
    assert stopped.value.hint == "start the VM, or leave it out of the selection"
    with pytest.raises(SubmitNotSent) as missing:
        await client.submit(vm("vm-nope"), run_command_name(rid), body)
    f = classify_error(missing.value)
    assert f.kind is FailureKind.NOT_FOUND and f.status == 404 and not f.retryable


async def test_a_running_command_put_again_with_changes_conflicts(client: RunCommandClient) -> None:
    """Synchronous execution keeps provisioning non-terminal while the script runs: a changed
    re-PUT then gets ARM's 409 Conflict (the trap unique names and async execution avoid)."""
    rid, target = new_run_id(), vm("vm-003")
    name = run_command_name(rid)
    sync = RunSpec(script="sleep 5", async_execution=False)
    await client.submit(target, name, build_run_command(sync, location=LOCATION, run_id=rid))
    await asyncio.sleep(0.3)
    with pytest.raises(SubmitNotSent) as info:
        await client.submit(target, name, build_run_command(RunSpec(script="sleep 6"), location=LOCATION, run_id=rid))
    assert classify_error(info.value).kind is FailureKind.CONFLICT and classify_error(info.value).retryable
    assert await client.delete(target, name)  # DELETE kills it


async def test_forbidden_names_the_missing_action(
    sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]
) -> None:
    from azrun.clients import ClientFactory

    sim = sim_factory(fleet_toml(vms=2, access='  "system:vm-001" = "reader"'))
    azure_env(sim)
    factory = ClientFactory.from_env()
    try:
        client = RunCommandClient(factory)
        rid = new_run_id()
        with pytest.raises(SubmitNotSent) as info:
            await client.submit(vm("vm-002"), run_command_name(rid),
                                build_run_command(RunSpec(script="true"), location=LOCATION, run_id=rid))
    finally:
        await factory.aclose()
    f = classify_error(info.value)
    assert f.kind is FailureKind.FORBIDDEN and f.status == 403
    assert f.action == "Microsoft.Compute/virtualMachines/runCommands/write"
    assert f.hint and f.action in f.hint


def _fast_retry_factory() -> Any:
    """A factory whose clients retry twice, quickly (no throttle): fault tests stay fast."""
    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud

    class FastRetries(ClientFactory):
        def _kwargs(self, *, aio: bool) -> dict[str, Any]:
            return {**super()._kwargs(aio=aio), "retry_total": 2, "retry_backoff_factor": 0.01}

    return FastRetries(cloud=Cloud.from_env(os.environ))


async def test_submit_raises_outcome_unknown_after_5xx_and_resets_and_not_sent_when_refused(
    sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real SDK: a PUT answered 5xx, or reset after sending, may have landed; a PUT
    to a port nobody listens on never left; no message carries an ``<ssl.SSLContext ...>`` repr."""
    import socket

    sim = sim_factory(fleet_toml(vms=1))
    azure_env(sim)
    rid = new_run_id()
    body = build_run_command(RunSpec(script="true"), location=LOCATION, run_id=rid)
    raised: dict[str, BaseException] = {}
    for fault in ("arm_error_rate", "arm_reset_rate"):
        sim.admin_post("faults", {fault: 1.0})
        factory = _fast_retry_factory()
        sent: list[int] = []
        try:
            with pytest.raises(SubmitOutcomeUnknown) as info:
                await RunCommandClient(factory).submit(vm("vm-001"), run_command_name(rid), body,
                                                       counter=sent.append)
        finally:
            await factory.aclose()
        raised[fault] = info.value
        assert classify_error(info.value).kind is FailureKind.UNKNOWN_OUTCOME
    sim.admin_post("faults", {})
    assert raised["arm_error_rate"].failure.status in (500, 503)  # type: ignore[attr-defined]
    assert raised["arm_reset_rate"].failure.status is None  # type: ignore[attr-defined]

    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AZRUN_ARM_ENDPOINT", f"https://127.0.0.1:{port}")
    factory = _fast_retry_factory()
    try:
        with pytest.raises(SubmitNotSent) as refused:
            await RunCommandClient(factory).submit(vm("vm-001"), run_command_name(rid), body)
    finally:
        await factory.aclose()
    failure = classify_error(refused.value)
    assert failure.kind is FailureKind.NOT_SENT and failure.retryable
    for error in (refused.value, *raised.values()):
        assert "object at 0x" not in str(error) and "\n" not in str(error)
    assert not [e for e in executions(sim) if e["runCommand"] == run_command_name(rid)]
