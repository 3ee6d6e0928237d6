"""azrun.throttle.limits: request classification, rate-limit header and Retry-After parsing,
policy names, and the limits' configuration."""

from __future__ import annotations

import pytest
from _throttle_support import ARM, RG, RUN_PUT, SUB, VM_ID, VMSS_VM_ID
from azure.core.utils import case_insensitive_dict

from azrun.errors import ConfigError
from azrun.throttle import (
    DELETE_VM,
    GET_OPERATION,
    HIGH_COST_GET,
    LOW_COST_GET,
    PUT_VM,
    UPDATE_VM,
    VMSS_VM_DELETE,
    VMSS_VM_GET,
    VMSS_VM_UPDATE,
    Limit,
    RequestClass,
    ThrottleLimits,
    classify,
    parse_remaining_resource,
    parse_retry_after,
)
from azrun.throttle.limits import parse_policy  # the name rules are worth a table of their own

# -- classification ----------------------------------------------------------------------------
CLASSIFY_CASES: list[tuple[str, str, RequestClass]] = [
    ("PUT", RUN_PUT, RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("PATCH", RUN_PUT, RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("DELETE", RUN_PUT, RequestClass("delete", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("GET", RUN_PUT + "&$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001/runCommands?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001/instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("POST", f"{RG}/virtualMachines/vm-001/runCommand?api-version=2024-11-01",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("POST", f"{RG}/virtualMachines/vm-001/deallocate",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", DELETE_VM, VM_ID)),
    ("PUT", f"{RG}/virtualMachines/vm-001", RequestClass("write", SUB, "rg-web", "microsoft.compute", PUT_VM, VM_ID)),
    ("DELETE", f"{RG}/virtualMachines/vm-001",
     RequestClass("delete", SUB, "rg-web", "microsoft.compute", DELETE_VM, VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", VMSS_VM_GET, VMSS_VM_ID)),
    ("PUT", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", VMSS_VM_UPDATE, VMSS_VM_ID)),
    ("DELETE", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1",
     RequestClass("delete", SUB, "rg-web", "microsoft.compute", VMSS_VM_DELETE, VMSS_VM_ID)),
    ("PATCH", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", VMSS_VM_UPDATE, VMSS_VM_ID)),
    ("POST", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/deallocate",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", VMSS_VM_DELETE, VMSS_VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", VMSS_VM_GET, VMSS_VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss", RequestClass("read", SUB, "rg-web", "microsoft.compute")),
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/westus/operations/9a062a88-e463?api-version=2024-11-01",
     RequestClass("read", SUB, None, "microsoft.compute", GET_OPERATION, None, "westus")),
    # the Location header form with the stray '&' (azure-facts §1)
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/westus/operations/9a06&monitor=true&api-version=2025-04-01",
     RequestClass("read", SUB, None, "microsoft.compute", GET_OPERATION, None, "westus")),
    ("GET", f"{RG}/virtualMachines?api-version=2024-11-01&$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", HIGH_COST_GET)),
    ("GET", f"{ARM}/providers/Microsoft.Compute/virtualMachines?statusOnly=true",
     RequestClass("read", SUB, None, "microsoft.compute", HIGH_COST_GET)),
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/EastUS/virtualMachines",
     RequestClass("read", SUB, None, "microsoft.compute", HIGH_COST_GET, None, "eastus")),
    ("GET", f"{ARM}/resources?$filter=tagName%20eq%20'role'&api-version=2025-04-01", RequestClass("read", SUB)),
    ("GET", "https://management.azure.com/subscriptions?api-version=2022-12-01", RequestClass("read")),
    ("GET", f"{ARM}/resourcegroups?api-version=2025-04-01", RequestClass("read", SUB)),
    ("PUT", f"{ARM}/resourcegroups/RG-Web?api-version=2025-04-01", RequestClass("write", SUB, "rg-web")),
    ("HEAD", f"{ARM}/resourcegroups/rg-web", RequestClass("read", SUB, "rg-web")),
    ("GET", f"{ARM}/resourceGroups/rg-web/providers/Microsoft.Network/publicIPAddresses",
     RequestClass("read", SUB, "rg-web", "microsoft.network")),
    # case-insensitive, relative, simulator host, percent-encoding
    ("put", f"HTTPS://MANAGEMENT.azure.com/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/rg-WEB/PROVIDERS/"
     "microsoft.compute/VIRTUALMACHINES/VM-001/RUNCOMMANDS/x",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("GET", VM_ID + "/runCommands/x", RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", "https://127.0.0.1:50443" + VM_ID, RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm%20001/runCommands/x",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID.replace("vm-001", "vm 001"))),
    ("GET", "https://127.0.0.1:50443", RequestClass("read")),
]


@pytest.mark.parametrize(("method", "url", "expected"), CLASSIFY_CASES)
def test_classify(method: str, url: str, expected: RequestClass) -> None:
    assert classify(method, url) == expected


# -- headers -----------------------------------------------------------------------------------
def test_parse_remaining_resource() -> None:
    assert parse_remaining_resource("Microsoft.Compute/VMUpdateResource;11,Microsoft.Compute/VMUpdateSubscription;1499") == [
        ("Microsoft.Compute/VMUpdateResource", 11.0), ("Microsoft.Compute/VMUpdateSubscription", 1499.0)]
    assert parse_remaining_resource("Microsoft.Compute/PutVM3Min;239, Microsoft.Compute/PutVM30Min;1199") == [
        ("Microsoft.Compute/PutVM3Min", 239.0), ("Microsoft.Compute/PutVM30Min", 1199.0)]
    assert parse_remaining_resource("junk, a;x, ;3, Microsoft.Compute/HighCostGet;0") == [
        ("Microsoft.Compute/HighCostGet", 0.0)]


@pytest.mark.parametrize(("name", "group", "per_resource", "window_s"), [
    ("Microsoft.Compute/VMUpdateResource", UPDATE_VM, True, None),
    ("Microsoft.Compute/VMUpdateSubscription", UPDATE_VM, False, None),
    ("Microsoft.Compute/UpdateVMResource", UPDATE_VM, True, None),
    ("Microsoft.Compute/PutVM3Min", PUT_VM, False, 180.0),
    ("Microsoft.Compute/PutVM30Min", PUT_VM, False, 1800.0),
    ("Microsoft.Compute/LowCostGet3Min", LOW_COST_GET, False, 180.0),
    ("Microsoft.Compute/LowCostGetResource", LOW_COST_GET, True, None),
    ("Microsoft.Compute/HighCostGet", HIGH_COST_GET, False, None),
    ("Microsoft.Compute/GetOperationSubscription", GET_OPERATION, False, None),
    ("Microsoft.Compute/VMScaleSetVMUpdateResource", VMSS_VM_UPDATE, True, None),
    ("Microsoft.Compute/VMScaleSetVMGetSubscription", VMSS_VM_GET, False, None),
    ("Microsoft.Compute/DeleteVMResource", DELETE_VM, True, None),
    ("Microsoft.Compute/GetVMScaleSet3Min", None, False, 180.0),
    ("Microsoft.Compute/SomethingNew", None, False, None),
])
def test_policy_names(name: str, group: str | None, per_resource: bool, window_s: float | None) -> None:
    policy = parse_policy(name)
    assert (policy.group, policy.per_resource, policy.window_s) == (group, per_resource, window_s)


def test_parse_retry_after_variants() -> None:
    h = case_insensitive_dict
    assert parse_retry_after(h({"Retry-After": "2"})) == 2.0
    assert parse_retry_after(h({"Retry-After": "Sun, 06 Nov 1994 08:49:47 GMT"}), wall_now=784111777.0) == 10.0
    assert parse_retry_after(h({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(h({"x-ms-retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(h({"Retry-After": "soon"})) is None
    assert parse_retry_after(h({})) is None




def test_limits_from_env() -> None:
    limits = ThrottleLimits.from_env({
        "AZRUN_ARM_WRITES_PER_S": "5", "AZRUN_ARM_READS_BURST": "100", "AZRUN_VM_UPDATE_PER_MIN": "6",
        "AZRUN_ARM_ENDPOINT": "https://127.0.0.1:1", "HOME": "/root",
    })
    assert limits.arm_writes == Limit(200, 5) and limits.arm_reads == Limit(100, 25)
    assert limits.vm_update == Limit(12, 0.1) and limits.enabled
    assert ThrottleLimits.from_env({"AZRUN_THROTTLE": "off"}).enabled is False
    assert ThrottleLimits.from_mapping({"sub_high_cost_get_burst": 10, "enabled": True}).sub_high_cost_get.burst == 10
    with pytest.raises(ConfigError):
        ThrottleLimits.from_env({"AZRUN_ARM_WRITES_PER_S": "fast"})
    with pytest.raises(ConfigError):
        ThrottleLimits.from_mapping({"arm_writez_per_s": 1})
