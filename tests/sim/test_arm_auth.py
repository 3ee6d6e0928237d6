"""Bearer-token checks and RBAC of the local ARM, as ARM answers them (401 / 403 bodies)."""

from __future__ import annotations

from pathlib import Path

import pytest
from arm_support import (
    SUB1,
    SUB2,
    VM_PREFIX,
    Raw,
    compute,
    error_of,
    principal,
    reader_principal,
    resources,
    token,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from azrun.sim.agent import Agent
from azrun.sim.fleetspec import load_fleet, stable_uuid
from azrun.sim.identity import system_principal
from azrun.sim.launcher import SimProcess
from azrun.sim.reqlog import RequestLog
from azrun.sim.state import World

SS_VM = f"/subscriptions/{SUB1}/resourceGroups/rg-scale/providers/Microsoft.Compute/virtualMachineScaleSets/vmss-api/virtualMachines/0"




@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "AuthenticationFailed"),
        ("Basic dXNlcjpwdw==", "AuthenticationFailed"),
        ("Bearer not-a-jwt", "InvalidAuthenticationToken"),
        (f"Bearer {token(ttl_s=-60)}", "ExpiredAuthenticationToken"),
        (f"Bearer {token(audience='https://storage.azure.com/')}", "InvalidAuthenticationTokenAudience"),
        (
            f"Bearer {token(principal(tenant='00000000-0000-4000-8000-0000000000ff'))}",
            "InvalidAuthenticationTokenTenant",
        ),
    ],
)
def test_bad_tokens_get_401(raw: Raw, auth: str | None, code: str) -> None:
    resp = raw("GET", f"{VM_PREFIX}/vm-web-01", auth=auth)
    assert resp.status_code == 401
    assert error_of(resp)["code"] == code
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer authorization_uri="https://login.microsoftonline.com/')
    assert 'error="invalid_token"' in challenge


def test_auth_comes_before_routing_and_is_logged_without_caller(sim: SimProcess, raw: Raw) -> None:
    resp = raw("GET", "/subscriptions/x/nothing/here", auth=None)
    assert resp.status_code == 401
    entry = [e for e in sim.requests() if e["path"] == "/subscriptions/x/nothing/here"][-1]
    assert entry["status"] == 401 and entry["caller"] is None and entry["op"] == "Unknown"


def test_sdk_sees_client_authentication_error(sim: SimProcess) -> None:
    class Expired:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            from azure.core.credentials import AccessToken

            return AccessToken(token(ttl_s=-60), 1)

    from arm_support import client_kwargs
    from azure.mgmt.compute import ComputeManagementClient

    client = ComputeManagementClient(Expired(), SUB1, **client_kwargs(sim))  # type: ignore[arg-type]
    with pytest.raises(ClientAuthenticationError) as exc:
        client.virtual_machines.get("rg-web", "vm-web-01")
    assert exc.value.status_code == 401


def test_reader_can_read_but_not_write(sim: SimProcess) -> None:
    reader = reader_principal()
    client = compute(sim, p=reader, retry_total=0)
    assert client.virtual_machines.get("rg-web", "vm-web-01").name == "vm-web-01"
    assert (
        list(client.virtual_machine_run_commands.list_by_virtual_machine("rg-web", "vm-web-01")) is not None
    )
    from azure.mgmt.compute.models import (
        VirtualMachineRunCommand,
        VirtualMachineRunCommandProperties,
        VirtualMachineRunCommandScriptSource,
    )

    props = VirtualMachineRunCommandProperties(source=VirtualMachineRunCommandScriptSource(script="true"))
    cmd = VirtualMachineRunCommand(location="westeurope", properties=props)
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_run_commands.begin_create_or_update("rg-web", "vm-web-01", "nope", cmd)
    assert exc.value.status_code == 403 and exc.value.error is not None
    assert exc.value.error.code == "AuthorizationFailed"
    msg = str(exc.value.error.message)
    assert f"The client '{reader.object_id}' with object id '{reader.object_id}'" in msg
    assert "'Microsoft.Compute/virtualMachines/runCommands/write'" in msg
    assert f"over scope '{VM_PREFIX}/vm-web-01/runCommands/nope'" in msg


def test_reader_denied_actions_are_named_exactly(sim: SimProcess, raw: Raw) -> None:
    auth = f"Bearer {token(reader_principal())}"
    cases = [
        (
            "DELETE",
            f"{VM_PREFIX}/vm-web-01/runCommands/x",
            "Microsoft.Compute/virtualMachines/runCommands/delete",
        ),
        (
            "PATCH",
            f"{VM_PREFIX}/vm-web-01/runCommands/x",
            "Microsoft.Compute/virtualMachines/runCommands/write",
        ),
        (
            "PUT",
            f"{SS_VM}/runCommands/x",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write",
        ),
        (
            "DELETE",
            f"{SS_VM}/runCommands/x",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/delete",
        ),
    ]
    for method, path, action in cases:
        resp = raw(method, path, auth=auth, body={"location": "westeurope"})
        assert resp.status_code == 403, (method, path)
        assert f"'{action}'" in error_of(resp)["message"]


def test_no_access_hides_the_subscription(sim: SimProcess, raw: Raw) -> None:
    reader = reader_principal()
    from arm_support import StaticCredential, client_kwargs
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    visible = [
        s.subscription_id
        for s in SubscriptionClient(StaticCredential(reader), **client_kwargs(sim)).subscriptions.list()
    ]
    assert visible == [SUB1]
    with pytest.raises(HttpResponseError) as exc:
        list(resources(sim, p=reader, sub=SUB2, retry_total=0).resources.list())
    assert exc.value.status_code == 403
    assert "'Microsoft.Resources/subscriptions/resources/read'" in str(exc.value)
    resp = raw("GET", f"/subscriptions/{SUB2}", api_version="2022-12-01", auth=f"Bearer {token(reader)}")
    assert resp.status_code == 403 and error_of(resp)["code"] == "AuthorizationFailed"
    # an unknown principal is an owner of everything
    found = list(resources(sim, sub=SUB2).resources.list())
    assert len([r for r in found if r.type == "Microsoft.Compute/virtualMachines"]) == 3
    assert len(found) == 12  # each VM's NIC, OS disk and public IP are listed too


def test_roles_by_object_id_and_system_identity(tmp_path: Path) -> None:
    oid = "12345678-0000-4000-8000-000000000001"
    spec = load_fleet(
        f"""
[[subscription]]
id = "{SUB1}"
[subscription.access]
"{oid.upper()}" = "none"
"system:vm-a" = "reader"
[[subscription.resource_group]]
name = "rg"
[[subscription.resource_group.vm]]
name = "vm-a"
system_identity = true
"""
    )
    agent = Agent(
        root=tmp_path, settings=spec.sim, faults=lambda: spec.faults, ca_bundle=None, storage_account_key=None
    )
    world = World(spec, agent=agent, reqlog=RequestLog(None))
    system = system_principal(spec.vms[0], spec.sim.tenant_id)
    assert world.role(SUB1, oid) == "none"
    assert world.role(SUB1, system.object_id) == "reader"
    assert world.role(SUB1, stable_uuid("someone")) == "owner"
