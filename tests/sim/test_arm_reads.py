"""The local ARM's read side over real sockets: subscriptions, groups, resources, VMs, scale sets.

Driven by azure-mgmt-resource, azure-mgmt-resource-subscriptions and azure-mgmt-compute
against a simulator subprocess running the test fleet; raw HTTPS only for what an SDK would
never send (bad api-versions, odd casing, malformed filters).
"""

from __future__ import annotations

from typing import Any

import pytest
from arm_support import SUB1, SUB2, VM_PREFIX, Raw, compute, error_of, resources
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from azrun.sim.launcher import SimProcess


def test_subscriptions_list_and_get(sim: SimProcess) -> None:
    from arm_support import StaticCredential, client_kwargs
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    client = SubscriptionClient(StaticCredential(), **client_kwargs(sim))
    subs = {s.subscription_id: s.display_name for s in client.subscriptions.list()}
    assert subs == {SUB1: "Test Production", SUB2: "Test Staging"}
    got = client.subscriptions.get(SUB2)
    assert got.state == "Enabled" and got.id == f"/subscriptions/{SUB2}"
    assert [t.tenant_id for t in client.tenants.list()]


def test_resource_groups(sim: SimProcess, raw: Raw) -> None:
    client = resources(sim)
    assert [g.name for g in client.resource_groups.list()] == ["rg-web", "rg-ops", "rg-scale"]
    assert client.resource_groups.get("RG-WEB").location == "westeurope"
    with pytest.raises(ResourceNotFoundError) as exc:
        client.resource_groups.get("rg-nope")
    assert exc.value.error is not None and exc.value.error.code == "ResourceGroupNotFound"
    assert "Resource group 'rg-nope' could not be found." in str(exc.value)
    resp = raw("GET", f"/subscriptions/{SUB1}/resourcegroups/rg-web", api_version="2025-04-01")
    assert resp.status_code == 200 and resp.json()["name"] == "rg-web"


def test_resources_paging_followed_by_the_sdk(sim: SimProcess, raw: Raw) -> None:
    names = [r.name for r in resources(sim).resources.list()]
    # 9 VMs (incl. 2 Flexible members) with a NIC, an OS disk and a public IP each, 2 scale sets,
    # 2 user identities; no Uniform instances.
    assert len(names) == 40 and len(set(names)) == 40
    assert "vmss-api_0" not in names and {"vmss-api", "vmss-batch", "id-azrun"} <= set(names)
    first = raw("GET", f"/subscriptions/{SUB1}/resources", api_version="2025-04-01").json()
    assert len(first["value"]) == 5 and "$skiptoken=" in first["nextLink"]
    second = raw("GET", first["nextLink"], api_version=None).json()
    assert [r["name"] for r in second["value"]] == names[5:10]


def test_resources_tag_filter_hides_tags(sim: SimProcess) -> None:
    client = resources(sim)
    found = list(client.resources.list(filter="tagName eq 'role' and tagValue eq 'web'"))
    assert {r.type for r in found} == {
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Compute/disks",
        "Microsoft.Network/networkInterfaces",
        "Microsoft.Network/publicIPAddresses",
    }  # as in Azure: everything carrying the tag
    got = [r for r in found if r.type == "Microsoft.Compute/virtualMachines"]
    assert sorted(r.name for r in got) == [
        "vm-web-01",
        "vm-web-02",
        "vm-web-03",
        "vm-web-04",
        "vm-web-stopped",
    ]
    assert all(not r.tags for r in found)  # the documented caveat: tags are not returned
    by_group = list(
        client.resources.list_by_resource_group("rg-scale", filter="tagName eq 'role' and tagValue eq 'api'")
    )
    assert [r.name for r in by_group] == ["vmss-api"]
    assert list(client.resources.list(filter="tagName eq 'role' and tagValue eq 'WEB'")) == []


def test_resources_other_filters(sim: SimProcess, raw: Raw) -> None:
    client = resources(sim)
    vmss = list(client.resources.list(filter="resourceType eq 'microsoft.compute/VIRTUALMACHINESCALESETS'"))
    assert sorted(r.name for r in vmss) == ["vmss-api", "vmss-batch"] and vmss[0].tags
    tagged = {r.name for r in client.resources.list(filter="tagName eq 'env'")}
    assert {"vm-ops-01-nic", "vm-ops-01_OsDisk_1", "vm-ops-01-ip"} <= tagged
    assert "vm-ops-01" in tagged and "id-azrun" not in tagged
    assert {r.name for r in client.resources.list(filter="startswith(tagName,'ro')")} == tagged
    either = client.resources.list(
        filter="resourceType eq 'Microsoft.Compute/virtualMachineScaleSets' or name eq 'vm-ops-01'"
    )
    assert sorted(r.name for r in either) == ["vm-ops-01", "vmss-api", "vmss-batch"]
    assert len(list(client.resources.list(top=2))) == 40
    for bad in (
        "tagName eq 'env' and resourceType eq 'Microsoft.Compute/virtualMachines'",
        "nonsense",
        "tagValue eq 'x'",
    ):
        resp = raw(
            "GET", f"/subscriptions/{SUB1}/resources", api_version="2025-04-01", params={"$filter": bad}
        )
        assert resp.status_code == 400 and error_of(resp)["code"] == "InvalidFilterInQueryString"


def test_vm_get_with_instance_view_and_identity(sim: SimProcess) -> None:
    client = compute(sim)
    vm = client.virtual_machines.get("rg-ops", "vm-ops-01", expand="instanceView")
    codes = [s.code for s in vm.instance_view.statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
    assert vm.instance_view.statuses[1].display_status == "VM running"
    assert vm.storage_profile.os_disk.os_type == "Linux"
    assert vm.os_profile.linux_configuration is not None
    assert vm.identity.type == "SystemAssigned, UserAssigned" and vm.identity.principal_id
    user_ids = list(vm.identity.user_assigned_identities)
    assert len(user_ids) == 2 and user_ids[0].endswith("/userAssignedIdentities/id-azrun")
    assert vm.identity.user_assigned_identities[user_ids[0]].client_id
    assert client.virtual_machines.get("rg-web", "vm-web-01").instance_view is None
    win = client.virtual_machines.get("rg-web", "vm-win-01", expand="instanceView")
    assert win.storage_profile.os_disk.os_type == "Windows" and win.os_profile.windows_configuration
    off = client.virtual_machines.get("rg-web", "vm-web-stopped", expand="instanceView")
    assert off.instance_view.statuses[1].display_status == "VM deallocated"


def test_vm_lists(sim: SimProcess) -> None:
    client = compute(sim)
    in_group = list(client.virtual_machines.list("rg-web", expand="instanceView"))
    assert len(in_group) == 6 and all(v.instance_view for v in in_group)
    everything = list(client.virtual_machines.list_all(status_only="true"))
    assert len(everything) == 9  # paged by 5: the SDK followed nextLink
    power = {v.name: v.instance_view.statuses[1].code for v in everything}
    assert power["vm-web-stopped"] == "PowerState/deallocated" and power["vm-web-01"] == "PowerState/running"
    assert all(v.instance_view is None for v in client.virtual_machines.list_all())
    staging = compute(sim, sub=SUB2)
    assert sorted(v.name for v in staging.virtual_machines.list_all()) == [
        "vm-stage-01",
        "vm-stage-02",
        "vm-stage-03",
    ]


def test_flexible_members_carry_the_scale_set_id(sim: SimProcess) -> None:
    client = compute(sim)
    ss = client.virtual_machine_scale_sets.get("rg-scale", "vmss-batch")
    assert ss.orchestration_mode == "Flexible"
    members = [v for v in client.virtual_machines.list("rg-scale") if v.virtual_machine_scale_set]
    # as recorded: members come back with the resource group upper-cased (ids are case-insensitive)
    assert len(members) == 2 and all(v.virtual_machine_scale_set.id.lower() == ss.id.lower() for v in members)
    assert all("/resourceGroups/RG-SCALE/" in v.id for v in members)
    assert all("VirtualMachineProfileTimeCreated" in v.tags for v in members)
    filtered = client.virtual_machines.list_all(filter=f"'virtualMachineScaleSet/id' eq '{ss.id}'")
    assert sorted(v.name for v in filtered) == sorted(v.name for v in members)


def test_uniform_scale_set_instances(sim: SimProcess) -> None:
    client = compute(sim)
    ss = client.virtual_machine_scale_sets.get("rg-scale", "vmss-api")
    assert (
        ss.orchestration_mode == "Uniform"
        and ss.sku.capacity == 3
        and ss.tags == {"env": "prod", "role": "api"}
    )
    assert sorted(s.name for s in client.virtual_machine_scale_sets.list("rg-scale")) == [
        "vmss-api",
        "vmss-batch",
    ]
    assert len(list(client.virtual_machine_scale_sets.list_all())) == 2
    instances = list(client.virtual_machine_scale_set_vms.list("rg-scale", "vmss-api", expand="instanceView"))
    assert [(i.instance_id, i.name) for i in instances] == [
        ("0", "vmss-api_0"),
        ("1", "vmss-api_1"),
        ("2", "vmss-api_2"),
    ]
    assert instances[2].instance_view.statuses[1].code == "PowerState/stopped"
    one = client.virtual_machine_scale_set_vms.get("rg-scale", "vmss-api", "1", expand="instanceView")
    assert one.instance_view.statuses[1].code == "PowerState/running"
    assert one.storage_profile.os_disk.os_type == "Linux"
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machine_scale_set_vms.get("rg-scale", "vmss-api", "7")
    with pytest.raises(HttpResponseError) as exc:
        list(client.virtual_machine_scale_set_vms.list("rg-scale", "vmss-batch"))
    assert exc.value.status_code == 400


def test_routes_are_case_insensitive(raw: Raw) -> None:
    path = (
        f"/SUBSCRIPTIONS/{SUB1}/resourcegroups/RG-WEB/providers/microsoft.compute/VIRTUALMACHINES/VM-WEB-01"
    )
    resp = raw("GET", path)
    assert resp.status_code == 200
    body = resp.json()
    assert body["name"] == "vm-web-01" and body["id"] == f"{VM_PREFIX}/vm-web-01"


@pytest.mark.parametrize(
    ("path", "version", "status", "code"),
    [
        (f"{VM_PREFIX}/vm-web-01", None, 400, "MissingApiVersionParameter"),
        (f"{VM_PREFIX}/vm-web-01", "2023-03-01", 400, "InvalidApiVersionParameter"),
        (f"{VM_PREFIX}/vm-web-01", "2026-05-01", 400, "InvalidApiVersionParameter"),
        (f"{VM_PREFIX}/vm-web-01", "latest", 400, "InvalidApiVersionParameter"),
        (f"/subscriptions/{SUB1}/resources", "2019-01-01", 400, "InvalidApiVersionParameter"),
        (f"{VM_PREFIX}/vm-nope", "2024-11-01", 404, "ResourceNotFound"),
        (
            f"/subscriptions/{SUB1}/resourceGroups/rg-nope/providers/Microsoft.Compute/virtualMachines/x",
            "2025-04-01",
            404,
            "ResourceGroupNotFound",
        ),
        (
            "/subscriptions/33333333-3333-4333-8333-333333333333/resources",
            "2025-04-01",
            404,
            "SubscriptionNotFound",
        ),
        ("/subscriptions/not-a-guid/resources", "2025-04-01", 400, "InvalidSubscriptionId"),
        (f"/subscriptions/{SUB1}/providers/Microsoft.Nope/things", "2025-04-01", 404, "InvalidResourceType"),
        (f"/subscriptions/{SUB1}/resources", "2025-04-01&$skiptoken=%%%", 400, "InvalidParameter"),
    ],
)
def test_bad_requests_get_arm_envelopes(
    raw: Raw, path: str, version: str | None, status: int, code: str
) -> None:
    params: dict[str, str] = {}
    if version and "&" in version:
        version, _, extra = version.partition("&")
        key, _, value = extra.partition("=")
        params[key] = value
    resp = raw("GET", path, api_version=version, params=params)
    assert resp.status_code == status
    err = error_of(resp)
    assert err["code"] == code
    if code == "InvalidApiVersionParameter":
        assert "The supported versions are" in err["message"]


def test_supported_api_versions(raw: Raw) -> None:
    for version in (
        "2024-11-01",
        "2025-04-01",
        "2025-11-01",
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-04-01",
        "2025-07-15",
    ):
        assert raw("GET", f"{VM_PREFIX}/vm-web-01", api_version=version).status_code == 200
    assert raw("GET", f"/subscriptions/{SUB1}/resources", api_version="2021-04-01").status_code == 200
    assert raw("GET", "/subscriptions", api_version="2022-12-01").status_code == 200


def test_wrong_method_and_standard_headers(raw: Raw) -> None:
    resp = raw("POST", f"{VM_PREFIX}/vm-web-01")
    assert resp.status_code == 405 and error_of(resp)["code"] == "MethodNotAllowed"
    ok = raw("GET", f"{VM_PREFIX}/vm-web-01")
    assert ok.headers["x-ms-request-id"] and ok.headers["Content-Type"].startswith("application/json")


def test_request_log_lines(sim: SimProcess, raw: Raw) -> None:
    raw("GET", f"{VM_PREFIX}/vm-web-02", params={"$expand": "instanceView"})
    entries: list[dict[str, Any]] = [e for e in sim.requests() if e["path"].endswith("/vm-web-02")]
    assert entries, "the request was not logged"
    last = entries[-1]
    assert {"ts", "service", "method", "path", "op", "status", "caller", "ms"} <= set(last)
    assert last["service"] == "arm" and last["op"] == "VirtualMachines_Get" and last["status"] == 200
    assert last["caller"] == "0a0a0a0a-0000-4000-8000-00000000beef" and "?" not in last["path"]


def test_long_urls_get_envelopes_too(raw: Raw) -> None:
    resp = raw(
        "GET", f"/subscriptions/{SUB1}/resources", api_version="2025-04-01", params={"$filter": "x" * 20_000}
    )
    assert resp.status_code == 400 and error_of(resp)["code"] == "InvalidFilterInQueryString"
