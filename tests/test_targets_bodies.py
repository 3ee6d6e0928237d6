"""azrun.targets._bodies: ARM's REST JSON -> Target, and the power-state join (no I/O)."""

from __future__ import annotations

from azrun.models import TargetKind
from azrun.targets import power_by_id
from azrun.targets._bodies import ScaleSet, vm_target

SUB_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"


def test_power_is_joined_by_id_case_insensitively_and_unknown_when_missing() -> None:
    rid = f"/subscriptions/{SUB_A}/resourceGroups/rg-Web/providers/Microsoft.Compute/virtualMachines/vm-1"
    status = {"id": rid.upper(), "name": "vm-1",
              "properties": {"instanceView": {"statuses": [{"code": "ProvisioningState/succeeded"},
                                                            {"code": "PowerState/deallocated"}]}}}
    assert power_by_id([status, {"name": "no id"}]) == {rid.lower(): "deallocated"}
    assert power_by_id([{"id": rid, "properties": {}}]) == {rid.lower(): "unknown"}


def test_a_flexible_member_reads_its_model_and_shows_its_scale_sets_group_spelling() -> None:
    ss_id = f"/subscriptions/{SUB_A}/resourceGroups/rg-Flex/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
    ss = ScaleSet(ss_id, "ss", SUB_A, "rg-Flex", "westeurope", False, "linux", {"env": "prod", "role": "x"},
                  (True, ()))
    body = {  # as a Flexible member comes back: the resource group upper-cased in its id
        "id": f"/subscriptions/{SUB_A}/resourceGroups/RG-FLEX/providers/Microsoft.Compute/virtualMachines/ss_1a2b",
        "name": "ss_1a2b", "location": "westeurope", "tags": {"Role": "db"},
        "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {"/x": {"clientId": "c1"}}},
        "properties": {"virtualMachineScaleSet": {"id": ss_id.upper()},
                       "storageProfile": {"osDisk": {"osType": "Windows"}}},
    }
    t = vm_target(body, SUB_A, {ss_id.lower(): ss}, "running")
    assert (t.kind, t.scale_set, t.resource_group, t.os, t.power_state) == (
        TargetKind.VMSS_FLEX, "ss", "rg-Flex", "windows", "running")
    assert t.tag_dict() == {"env": "prod", "Role": "db"}  # its own tag wins over the scale set's, any case
    assert t.system_identity and t.user_identity_client_ids == ("c1",)
