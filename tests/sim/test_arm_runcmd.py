"""Managed run commands on the local ARM, end to end: real scripts, real SDK clients, real sockets.

Covers the state machine (Pending -> Running -> Succeeded/Failed, provisioning Creating ->
Succeeded/Failed), timeout, cancel by DELETE, parameters, secrets never echoed, the 25 cap,
stopped VMs, identical and changed re-PUTs, PATCH, scale-set VMs, the aio client and the
async-operation endpoints. Each test uses its own VM or run-command names, so the tests of
this module can share one simulator.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any

import pytest
from arm_support import (
    SUB1,
    SUB2,
    TEST_FLEET,
    VM_PREFIX,
    Raw,
    compute,
    compute_aio,
    error_of,
    principal,
    start_sim,
    token,
    wait_for,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.models import (
    RunCommandInputParameter,
    VirtualMachineRunCommand,
    VirtualMachineRunCommandProperties,
    VirtualMachineRunCommandScriptSource,
    VirtualMachineRunCommandUpdate,
)

from azrun.sim.launcher import SimProcess

MALFORMED_CALLER = "0b0b0b0b-0000-4000-8000-0000000bad01"
SS_PREFIX = (
    f"/subscriptions/{SUB1}/resourceGroups/rg-scale/providers/Microsoft.Compute/virtualMachineScaleSets"
)
STAGE_PREFIX = f"/subscriptions/{SUB2}/resourceGroups/rg-stage/providers/Microsoft.Compute/virtualMachines"




def body(script: str, *, location: str = "westeurope", **props: Any) -> dict[str, Any]:
    return {"location": location, "properties": {"source": {"script": script}, **props}}


def rc_model(script: str, *, location: str = "westeurope", **kwargs: Any) -> VirtualMachineRunCommand:
    props = VirtualMachineRunCommandProperties(
        source=VirtualMachineRunCommandScriptSource(script=script), **kwargs
    )
    return VirtualMachineRunCommand(location=location, properties=props)


def executions(sim: SimProcess, vm_suffix: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = sim.admin_get("executions")["value"]
    return [e for e in found if e["vm"].endswith(vm_suffix) and e["runCommand"] == name]


def view(raw: Raw, path: str) -> dict[str, Any]:
    resp = raw("GET", path, params={"$expand": "instanceView"})
    assert resp.status_code == 200, resp.text
    props: dict[str, Any] = resp.json()["properties"]
    return props


# ------------------------------------------------------------------------------ state machine
def test_transitions_pending_running_succeeded(tmp_path_factory: pytest.TempPathFactory) -> None:
    slow = TEST_FLEET.read_text().replace("agent_start_delay_s = 0.05", "agent_start_delay_s = 0.6")
    sim = start_sim(tmp_path_factory.mktemp("arm-slow"), slow)
    try:
        raw = Raw(sim)
        path = f"{VM_PREFIX}/vm-web-01/runCommands/steps"
        resp = raw("PUT", path, body=body("echo started; sleep 0.8; echo finished"))
        assert resp.status_code == 201 and resp.json()["properties"]["provisioningState"] == "Creating"
        # as recorded: no Retry-After, no Location on a PUT; the monitor URL is the operation's
        assert "Retry-After" not in resp.headers and "Location" not in resp.headers
        assert resp.headers["Azure-AsyncNotification"] == "Enabled"
        op_url = resp.headers["Azure-AsyncOperation"]
        monitor_url = op_url.replace("?", "?monitor=true&", 1)
        assert "/providers/Microsoft.Compute/locations/westeurope/operations/" in op_url
        assert "monitor=true" in monitor_url
        seen: list[tuple[str, str]] = []
        ops: list[str] = []
        monitors: list[int] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            props = view(raw, path)
            seen.append((props["provisioningState"], props["instanceView"]["executionState"]))
            ops.append(raw("GET", op_url, api_version=None).json()["status"])
            monitors.append(raw("GET", monitor_url, api_version=None).status_code)
            if seen[-1][1] == "Succeeded":
                break
            time.sleep(0.1)
        states = [s for _, s in seen]
        assert states[0] == "Pending" and "Running" in states and states[-1] == "Succeeded"
        assert states.index("Running") < states.index("Succeeded")
        assert seen[0][0] == "Creating" and seen[-1][0] == "Succeeded"
        assert ops[0] == "InProgress" and ops[-1] == "Succeeded"
        assert monitors[0] == 202 and monitors[-1] == 200
        final = view(raw, path)["instanceView"]
        assert final["output"] == "started\nfinished\n" and final["exitCode"] == 0
        assert final["executionMessage"] == "Execution completed" and final["startTime"] and final["endTime"]
        op = raw("GET", op_url, api_version=None).json()
        assert op["startTime"] and op["endTime"] and op["name"] in op_url
    finally:
        sim.stop()


def test_failed_script_reports_exit_code(sim: SimProcess) -> None:
    client = compute(sim)
    ops = client.virtual_machine_run_commands
    result = ops.begin_create_or_update(
        "rg-web", "vm-web-01", "fails", rc_model("echo oops >&2; exit 3")
    ).result()
    assert result.provisioning_state == "Succeeded"  # provisioning only says the handler ran it
    got = ops.get_by_virtual_machine("rg-web", "vm-web-01", "fails", expand="instanceView")
    iv = got.instance_view
    assert iv.execution_state == "Failed" and iv.exit_code == 3 and iv.error == "oops\n"
    assert (
        iv.execution_message
        == "Execution failed: failed to execute command: command terminated with exit status=3"
    )


def test_treat_failure_as_deployment_failure(sim: SimProcess) -> None:
    ops = compute(sim).virtual_machine_run_commands
    poller = ops.begin_create_or_update(
        "rg-web", "vm-web-01", "strict", rc_model("exit 4", treat_failure_as_deployment_failure=True)
    )
    with pytest.raises(HttpResponseError) as exc:
        poller.result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "exit status=4" in str(exc.value)
    got = ops.get_by_virtual_machine("rg-web", "vm-web-01", "strict", expand="instanceView")
    assert got.provisioning_state == "Failed" and got.instance_view.exit_code == 4
    ok = ops.begin_create_or_update(
        "rg-web", "vm-web-01", "strict-ok", rc_model("true", treat_failure_as_deployment_failure=True)
    ).result()
    assert ok.provisioning_state == "Succeeded"


def test_async_execution_completes_provisioning_at_start(sim: SimProcess) -> None:
    ops = compute(sim).virtual_machine_run_commands
    started = time.monotonic()
    result = ops.begin_create_or_update(
        "rg-web", "vm-web-01", "background", rc_model("sleep 3; echo late", async_execution=True)
    ).result()
    assert time.monotonic() - started < 2.5
    assert result.provisioning_state == "Succeeded"
    got = ops.get_by_virtual_machine("rg-web", "vm-web-01", "background", expand="instanceView")
    assert got.instance_view.execution_state == "Running" and got.async_execution is True
    ops.begin_delete("rg-web", "vm-web-01", "background").result()


def test_timeout_kills_the_script(sim: SimProcess, raw: Raw) -> None:
    ops = compute(sim).virtual_machine_run_commands
    started = time.monotonic()
    ops.begin_create_or_update(
        "rg-web", "vm-web-02", "slow", rc_model("sleep 30", timeout_in_seconds=1)
    ).result()
    assert time.monotonic() - started < 6
    iv = ops.get_by_virtual_machine("rg-web", "vm-web-02", "slow", expand="instanceView").instance_view
    assert (iv.execution_state, iv.exit_code) == ("Failed", -1)
    assert iv.execution_message.endswith("exit status=-1")
    assert sim.admin_get("stats")["runningScripts"] == 0 or not any(
        e["state"] == "Running" for e in executions(sim, "/vm-web-02", "slow")
    )


def test_delete_cancels_a_running_script(sim: SimProcess, raw: Raw, tmp_path: Path) -> None:
    mark = tmp_path / "never"
    ops = compute(sim).virtual_machine_run_commands
    payload = body('sleep 2; touch "$MARK"', parameters=[{"name": "MARK", "value": str(mark)}])
    started = time.monotonic()
    assert raw("PUT", f"{VM_PREFIX}/vm-web-02/runCommands/cancel-me", body=payload).status_code == 201
    wait_for(lambda: executions(sim, "/vm-web-02", "cancel-me"))
    ops.begin_delete("rg-web", "vm-web-02", "cancel-me").result()
    with pytest.raises(ResourceNotFoundError):
        ops.get_by_virtual_machine("rg-web", "vm-web-02", "cancel-me")
    (entry,) = executions(sim, "/vm-web-02", "cancel-me")
    assert entry["killed"] is True
    time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
    assert not mark.exists(), "the script outlived its DELETE"
    names = [r.name for r in ops.list_by_virtual_machine("rg-web", "vm-web-02")]
    assert "cancel-me" not in names


def test_delete_of_unknown_run_command_is_204(raw: Raw) -> None:
    resp = raw("DELETE", f"{VM_PREFIX}/vm-web-02/runCommands/never-existed")
    assert resp.status_code == 204
    resp = raw("DELETE", f"{VM_PREFIX}/vm-nope/runCommands/x")
    assert resp.status_code == 404 and error_of(resp)["code"] == "ResourceNotFound"


# ------------------------------------------------------------------------------ parameters, secrets
def test_named_and_unnamed_parameters(sim: SimProcess) -> None:
    ops = compute(sim).virtual_machine_run_commands
    params = [
        RunCommandInputParameter(name="GREETING", value="hello"),
        RunCommandInputParameter(name="", value="first"),
        RunCommandInputParameter(name="", value="second"),
        RunCommandInputParameter(name="EMPTY", value=""),
    ]
    cmd = rc_model('echo "$GREETING|$1|$2|${EMPTY-unset}"', parameters=params)
    ops.begin_create_or_update("rg-web", "vm-web-03", "params", cmd).result()
    got = ops.get_by_virtual_machine("rg-web", "vm-web-03", "params", expand="instanceView")
    assert got.instance_view.output == "hello|first|second|unset\n"
    assert [(p.name, p.value) for p in got.parameters] == [(p.name, p.value) for p in params]


def test_secrets_are_never_echoed_or_logged(sim: SimProcess, raw: Raw) -> None:
    secret, password, sig = "TopSecretValue-9f3a", "PassWord-77x", "SIGSECRETxyz"
    payload = body(
        'echo "len=${#TOKEN}"',
        protectedParameters=[{"name": "TOKEN", "value": secret}],
        runAsUser=getpass.getuser(),
        runAsPassword=password,
        outputBlobUri=f"https://127.0.0.1:1/devstoreaccount1/out/x.txt?sv=2025-11-05&sig={sig}",
    )
    path = f"{VM_PREFIX}/vm-web-03/runCommands/secret"
    put = raw("PUT", path, body=payload)
    assert put.status_code == 201
    wait_for(lambda: view(raw, path)["provisioningState"] == "Succeeded")
    texts = [
        put.text,
        raw("GET", path, params={"$expand": "instanceView"}).text,
        raw("GET", f"{VM_PREFIX}/vm-web-03/runCommands", params={"$expand": "instanceView"}).text,
        raw("PATCH", path, body={"tags": {"k": "v"}}).text,
        sim.request_log.read_text(),
        sim.stderr_path.read_text(),
        (sim.workdir / "sim.stdout.log").read_text(),
    ]
    for text in texts:
        assert secret not in text and password not in text and sig not in text
    props = raw("GET", path).json()["properties"]
    assert "protectedParameters" not in props and "runAsPassword" not in props
    assert props["outputBlobUri"] == "https://127.0.0.1:1/devstoreaccount1/out/x.txt"
    assert props["runAsUser"] == getpass.getuser()


# ------------------------------------------------------------------------------ rules
def test_at_most_25_run_commands_per_vm(sim: SimProcess, raw: Raw) -> None:
    prefix = (
        f"/subscriptions/{SUB1}/resourceGroups/rg-ops/providers/Microsoft.Compute/virtualMachines/vm-ops-01"
    )
    try:
        for i in range(25):
            assert raw("PUT", f"{prefix}/runCommands/cap-{i:02d}", body=body("true")).status_code == 201
        over = raw("PUT", f"{prefix}/runCommands/cap-25", body=body("true"))
        assert over.status_code == 409
        err = error_of(over)
        assert err["code"] == "OperationNotAllowed" and "(25)" in err["message"]
        # replacing one of the 25 is fine; after a DELETE a new one fits again
        assert raw("PUT", f"{prefix}/runCommands/cap-00", body=body("true")).status_code in (200, 409)
        assert raw("DELETE", f"{prefix}/runCommands/cap-24").status_code == 202
        # a run command being deleted still counts (and is listed as Deleting) until its DELETE ends
        assert raw("GET", f"{prefix}/runCommands/cap-24").json()["properties"]["provisioningState"] == "Deleting"
        assert raw("PUT", f"{prefix}/runCommands/cap-25", body=body("true")).status_code == 409
        wait_for(lambda: raw("GET", f"{prefix}/runCommands/cap-24").status_code == 404)
        assert raw("PUT", f"{prefix}/runCommands/cap-25", body=body("true")).status_code == 201
        listed = raw("GET", f"{prefix}/runCommands").json()
        assert len(listed["value"]) == 5 and listed["nextLink"]  # page_size 5
        assert (
            len(
                list(compute(sim).virtual_machine_run_commands.list_by_virtual_machine("rg-ops", "vm-ops-01"))
            )
            == 25
        )
    finally:
        for i in range(26):
            raw("DELETE", f"{prefix}/runCommands/cap-{i:02d}")


def test_not_running_machines_refuse_run_commands(sim: SimProcess, raw: Raw) -> None:
    resp = raw("PUT", f"{VM_PREFIX}/vm-web-stopped/runCommands/x", body=body("true"))
    assert resp.status_code == 409
    assert error_of(resp) == {
        "code": "OperationNotAllowed",
        "message": "Cannot modify extensions in the VM when the VM is not running.",
    }
    with pytest.raises(HttpResponseError) as exc:
        compute(sim).virtual_machine_scale_set_vm_run_commands.begin_create_or_update(
            "rg-scale", "vmss-api", "2", "x", rc_model("true")
        )
    assert exc.value.status_code == 409


def test_identical_reput_does_not_rerun_but_a_changed_one_does(sim: SimProcess, raw: Raw) -> None:
    path = f"{VM_PREFIX}/vm-web-04/runCommands/again"
    assert raw("PUT", path, body=body("echo one")).status_code == 201
    wait_for(lambda: view(raw, path)["provisioningState"] == "Succeeded")
    same = raw("PUT", path, body=body("echo one"))
    assert same.status_code == 200 and same.headers["Azure-AsyncOperation"]
    time.sleep(0.3)
    assert [e["seq"] for e in executions(sim, "/vm-web-04", "again")] == [1]
    changed = raw("PUT", path, body=body("echo two"))
    assert changed.status_code == 200
    wait_for(lambda: view(raw, path)["instanceView"]["output"] == "two\n")
    assert [e["seq"] for e in executions(sim, "/vm-web-04", "again")] == [1, 2]


def test_changed_put_while_provisioning_conflicts(sim: SimProcess, raw: Raw) -> None:
    path = f"{VM_PREFIX}/vm-web-04/runCommands/busy"
    assert raw("PUT", path, body=body("sleep 1.5")).status_code == 201
    same = raw("PUT", path, body=body("sleep 1.5"))
    assert same.status_code == 200  # an identical retry is idempotent even while provisioning
    resp = raw("PUT", path, body=body("sleep 2"))
    assert resp.status_code == 409 and error_of(resp)["code"] == "Conflict"
    patch = raw("PATCH", path, body={"properties": {"timeoutInSeconds": 5}})
    assert patch.status_code == 409
    wait_for(lambda: view(raw, path)["provisioningState"] == "Succeeded")
    assert raw("DELETE", path).status_code == 202


def test_patch_merges_and_reexecutes(sim: SimProcess) -> None:
    ops = compute(sim).virtual_machine_run_commands
    params = [RunCommandInputParameter(name="WHO", value="first")]
    ops.begin_create_or_update(
        "rg-web", "vm-web-04", "patched", rc_model('echo "$WHO"', parameters=params)
    ).result()
    update = VirtualMachineRunCommandUpdate(
        properties=VirtualMachineRunCommandProperties(
            parameters=[RunCommandInputParameter(name="WHO", value="second")]
        )
    )
    result = ops.begin_update("rg-web", "vm-web-04", "patched", update).result()
    assert result.source.script == 'echo "$WHO"' and result.parameters[0].value == "second"
    got = ops.get_by_virtual_machine("rg-web", "vm-web-04", "patched", expand="instanceView")
    assert got.instance_view.output == "second\n"
    assert [e["seq"] for e in executions(sim, "/vm-web-04", "patched")] == [1, 2]
    with pytest.raises(ResourceNotFoundError):
        ops.begin_update("rg-web", "vm-web-04", "no-such", update)


def test_power_off_mid_run_preempts(sim: SimProcess, raw: Raw) -> None:
    vm_id = f"{STAGE_PREFIX}/vm-stage-01"
    path = f"{vm_id}/runCommands/preempted"
    try:
        assert raw("PUT", path, body=body("sleep 5", location="North Europe")).status_code == 201
        wait_for(lambda: view(raw, path)["instanceView"]["executionState"] == "Running")
        sim.admin_post("power", {"id": vm_id, "power": "deallocated"})
        props = view(raw, path)
        assert props["provisioningState"] == "Failed"
        assert props["instanceView"]["executionState"] == "Running"  # frozen: the agent died with the VM
        vm = raw("GET", vm_id, params={"$expand": "instanceView"}).json()
        assert vm["properties"]["instanceView"]["statuses"][1]["code"] == "PowerState/deallocated"
        (entry,) = executions(sim, "/vm-stage-01", "preempted")
        assert entry["killed"] is True
    finally:
        sim.admin_post("power", {"id": vm_id, "power": "running"})
        raw("DELETE", path)


# ------------------------------------------------------------------------------ scale-set VMs, aio
def test_scale_set_vm_run_commands(sim: SimProcess) -> None:
    ops = compute(sim).virtual_machine_scale_set_vm_run_commands
    result = ops.begin_create_or_update(
        "rg-scale", "vmss-api", "0", "hello", rc_model("echo from-instance")
    ).result()
    assert result.id == f"{SS_PREFIX}/vmss-api/virtualMachines/0/runCommands/hello"
    assert result.type == "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands"
    got = ops.get("rg-scale", "vmss-api", "0", "hello", expand="instanceView")
    assert got.instance_view.output == "from-instance\n" and got.instance_view.execution_state == "Succeeded"
    assert [r.name for r in ops.list("rg-scale", "vmss-api", "0")] == ["hello"]
    assert list(ops.list("rg-scale", "vmss-api", "1")) == []
    ops.begin_delete("rg-scale", "vmss-api", "0", "hello").result()
    with pytest.raises(ResourceNotFoundError):
        ops.get("rg-scale", "vmss-api", "0", "hello")
    logged = {
        e["op"] for e in sim.requests() if "/virtualMachineScaleSets/vmss-api/virtualMachines/0/" in e["path"]
    }
    assert {
        "VirtualMachineScaleSetVMRunCommands_CreateOrUpdate",
        "VirtualMachineScaleSetVMRunCommands_Get",
        "VirtualMachineScaleSetVMRunCommands_List",
        "VirtualMachineScaleSetVMRunCommands_Delete",
    } <= logged
    (entry,) = executions(sim, "/virtualMachineScaleSets/vmss-api/virtualMachines/0", "hello")
    assert entry["vmDisplay"] == "vmss-api/0"


async def test_aio_client_round_trip(sim: SimProcess) -> None:
    async with compute_aio(sim, sub=SUB2) as client:
        ops = client.virtual_machine_run_commands
        poller = await ops.begin_create_or_update(
            "rg-stage", "vm-stage-02", "aio", rc_model("echo async-world", location="northeurope")
        )
        result = await poller.result()
        assert result.provisioning_state == "Succeeded"
        got = await ops.get_by_virtual_machine("rg-stage", "vm-stage-02", "aio", expand="instanceView")
        assert got.instance_view.output == "async-world\n"
        names = [r.name async for r in ops.list_by_virtual_machine("rg-stage", "vm-stage-02")]
        assert names == ["aio"]
        await (await ops.begin_delete("rg-stage", "vm-stage-02", "aio")).result()
        vms = [v.name async for v in client.virtual_machines.list_all()]
        assert "vm-stage-02" in vms


# ------------------------------------------------------------------------------ operations, bad input
def test_operation_endpoints(sim: SimProcess, raw: Raw) -> None:
    path = f"{VM_PREFIX}/vm-web-03/runCommands/ops"
    put = raw("PUT", path, body=body("true"))
    op_url = put.headers["Azure-AsyncOperation"]
    wait_for(lambda: raw("GET", op_url, api_version=None).json()["status"] == "Succeeded")
    assert raw("GET", op_url.replace("?", "?monitor=true&", 1), api_version=None).status_code == 200
    delete = raw("DELETE", path)
    assert delete.status_code == 202 and delete.headers["Location"] and "Retry-After" not in delete.headers
    # the DELETE lasts (0.3 s on the fast profile) while the run command is listed as Deleting
    first = raw("GET", delete.headers["Azure-AsyncOperation"], api_version=None).json()
    assert first["status"] == "InProgress" and "endTime" not in first
    assert raw("GET", path).json()["properties"]["provisioningState"] == "Deleting"
    monitor = raw("GET", delete.headers["Location"], api_version=None)
    assert monitor.status_code == 202 and "Retry-After" not in monitor.headers
    wait_for(
        lambda: raw("GET", delete.headers["Azure-AsyncOperation"], api_version=None).json()["status"] == "Succeeded"
    )
    assert raw("GET", delete.headers["Location"], api_version=None).status_code == 204
    assert raw("GET", path).status_code == 404
    assert raw("DELETE", path).status_code == 204  # a name that does not exist
    missing = raw(
        "GET", f"/subscriptions/{SUB1}/providers/Microsoft.Compute/locations/westeurope/operations/nope"
    )
    assert missing.status_code == 404 and error_of(missing)["code"] == "NotFound"
    ops_logged = {e["op"] for e in sim.requests() if "/operations/" in e["path"]}
    assert ops_logged == {"AsyncOperation_Get"}


BAD_BODIES: list[tuple[Any, int, str]] = [
    (b"{not json", 400, "InvalidRequestContent"),
    (b"[1, 2]", 400, "InvalidRequestContent"),
    (b"[" * 100_000, 400, "InvalidRequestContent"),
    (b"\xff\xfe\x00", 400, "InvalidRequestContent"),
    (b'{"location": "westeurope", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}', 413, "RequestEntityTooLarge"),
    ({"properties": {"source": {"script": "true"}}}, 400, "LocationRequired"),
    (
        {"location": "westeurope", "properties": {"source": {"script": "a", "commandId": "RunShellScript"}}},
        400,
        "InvalidParameter",
    ),
    (body("true", parameters=[{"name": "x"}]), 400, "InvalidParameter"),
    (body("true", parameters="x=1"), 400, "InvalidRequestContent"),
    (body("true", asyncExecution="yes"), 400, "InvalidRequestContent"),
    (body("true", timeoutInSeconds=-5), 400, "InvalidParameter"),
    (body("true", timeoutInSeconds="60"), 400, "InvalidRequestContent"),
    (body("true", outputBlobUri="not a uri"), 400, "InvalidParameter"),
    (
        body(
            "true", outputBlobUri="https://a/b", outputBlobManagedIdentity={"clientId": "a", "objectId": "b"}
        ),
        400,
        "InvalidParameter",
    ),
    ({"location": "eastus", "properties": {"source": {"script": "true"}}}, 400, "InvalidParameter"),
    ({"location": 5, "properties": {"source": {"script": "true"}}}, 400, "InvalidRequestContent"),
    (
        body("true", protectedParameters=[{"name": "P", "value": {"nested": "SECRETVALUE"}}]),
        400,
        "InvalidRequestContent",
    ),
]


@pytest.mark.parametrize(("payload", "status", "code"), BAD_BODIES)
def test_malformed_run_commands(raw: Raw, payload: Any, status: int, code: str) -> None:
    # A caller of its own: ARM's buckets are per caller, so the module's other tests (polling
    # with the default caller under parallel load) cannot drain this one's and turn a GET into 429.
    auth = f"Bearer {token(principal(MALFORMED_CALLER))}"
    path = f"{VM_PREFIX}/vm-web-03/runCommands/bad"
    if isinstance(payload, bytes):
        resp = raw("PUT", path, data=payload, auth=auth)
    else:
        resp = raw("PUT", path, body=payload, auth=auth)
    assert resp.status_code == status, resp.text
    err = error_of(resp)
    assert err["code"] == code and "Traceback" not in resp.text and "SECRETVALUE" not in resp.text
    assert raw("GET", path, auth=auth).status_code == 404


def test_put_without_a_script_is_accepted_and_fails_in_the_handler(raw: Raw) -> None:
    """Recorded (2023): ``source: {}`` answers 201, then the handler fails with exit code -202."""
    path = f"{VM_PREFIX}/vm-web-03/runCommands/no-source"
    put = raw("PUT", path, body={"location": "westeurope", "properties": {"source": {}, "asyncExecution": False}})
    assert put.status_code == 201 and put.json()["properties"]["provisioningState"] == "Creating"
    iv = wait_for(lambda: (v := view(raw, path)["instanceView"])["executionState"] == "Failed" and v)
    assert iv["exitCode"] == -202 and "Either 'source.script' or 'source.scriptUri'" in iv["executionMessage"]
    raw("DELETE", path)


def test_windows_vm_runs_or_fails_clearly(sim: SimProcess, raw: Raw) -> None:
    path = f"{VM_PREFIX}/vm-win-01/runCommands/win"
    assert raw("PUT", path, body=body("Write-Output hi")).status_code == 201
    iv = wait_for(
        lambda: (v := view(raw, path)["instanceView"])["executionState"] in ("Succeeded", "Failed") and v
    )
    if iv["executionState"] == "Failed":
        assert "pwsh" in iv["executionMessage"]
    raw("DELETE", path)
