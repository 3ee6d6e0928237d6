"""Real Azure's Compute rate-limit headers, copied verbatim from recorded traffic, parsed and
reconciled into the buckets they belong to.

The header strings below are the ``x-ms-ratelimit-remaining-resource`` values of Azure CLI test
recordings (github.com/Azure/azure-cli, MIT licence; the file named beside each string is the
recording under ``src/azure-cli/azure/cli/command_modules/vm/tests/latest/recordings/``, with
the commit date of the version recorded). They are copied here so that no test reads anything
outside the repository.
"""

from __future__ import annotations

import logging

import pytest
from _throttle_support import ARM, RG, SUB, FakeClock, names
from azure.core.utils import case_insensitive_dict

from azrun.throttle import (
    DELETE_VM,
    GET_OPERATION,
    HIGH_COST_GET,
    LOW_COST_GET,
    UPDATE_VM,
    VMSS_VM_DELETE,
    VMSS_VM_GET,
    VMSS_VM_UPDATE,
    Throttle,
    classify,
    parse_remaining_resource,
)
from azrun.throttle.limits import parse_policy

# test_run_command_v2.yaml@2023-12-22: PUT of a new VM run command (201), current format
VM_PUT = "Microsoft.Compute/UpdateVMSubscriptionMaximum;1498,Microsoft.Compute/UpdateVMResource;11"
# test_run_command_v2.yaml@2023-12-22: GET of a VM run command (200)
VM_GET = "Microsoft.Compute/LowCostGetSubscriptionMaximum;23968,Microsoft.Compute/LowCostGetResource;28"
# test_run_command_v2.yaml@2023-12-22: GET of the async operation (Resource first)
OPERATION_GET = "Microsoft.Compute/GetOperationResource;43,Microsoft.Compute/GetOperationSubscriptionMaximum;14993"
# test_run_command_v2.yaml@2022-09-29: PUT of a VM run command (201), legacy windowed format
VM_PUT_LEGACY = "Microsoft.Compute/UpdateVM3Min;238,Microsoft.Compute/UpdateVM30Min;1196"
# test_run_command_v2.yaml@2022-09-29: GET of a VM run command, legacy format
VM_GET_LEGACY = "Microsoft.Compute/LowCostGet3Min;3974,Microsoft.Compute/LowCostGet30Min;31807"
# test_vmss_run_command_v2.yaml@2023-12-22: PUT of a scale-set VM run command (201), x-ms-request-charge: 1
VMSS_PUT = (
    "Microsoft.Compute/VMScaleSetVMActionsSubscriptionMaximum;1999,Microsoft.Compute/VMScaleSetVMActionsResource;11,"
    "Microsoft.Compute/VMScaleSetBatchedVMRequestsSubscriptionMaximum;5999,Microsoft.Compute/VmssQueuedVMOperations;0"
)
# test_vmss_run_command_v2.yaml@2023-12-22: DELETE of a scale-set VM run command (202)
VMSS_DELETE = (
    "Microsoft.Compute/DeleteVMScaleSetVMSubscriptionMaximum;1999,Microsoft.Compute/DeleteVMScaleSetVMResource;11,"
    "Microsoft.Compute/VMScaleSetBatchedVMRequestsSubscriptionMaximum;5999,Microsoft.Compute/VmssQueuedVMOperations;0"
)
# test_vmss_run_command_v2.yaml@2023-12-22: GET of a scale-set VM run command (200)
VMSS_GET = "Microsoft.Compute/GetVMScaleSetVMSubscriptionMaximum;5999,Microsoft.Compute/GetVMScaleSetVMResource;35"
# test_vmss_run_command_v2.yaml@2022-09-29: PUT of a scale-set VM run command, legacy format
VMSS_PUT_LEGACY = "Microsoft.Compute/VMScaleSetBatchedVMRequests5Min;1181,Microsoft.Compute/VmssQueuedVMOperations;0"
# test_vmss_vms.yaml@2023-12-22: LIST of a scale set's instances (x-ms-request-charge: 4)
VMSS_LIST = (
    "Microsoft.Compute/HighCostGetVMScaleSetSubscriptionMaximum;1079,Microsoft.Compute/HighCostGetVMScaleSetResource;29,"
    "Microsoft.Compute/VMScaleSetVMViewsSubscriptionMaximum;29996"
)
# test_vm_list_filter.yaml@2023-12-22: LIST of a resource group's VMs
RG_LIST = "Microsoft.Compute/HighCostGetSubscriptionMaximum;899"

VM_RUN = f"{RG}/virtualMachines/vm-001/runCommands/azrun-1"
VMSS_RUN = f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1"
VM_KEY = "compute/rg-web/virtualmachines/vm-001"
VMSS_KEY = "compute/rg-web/virtualmachinescalesets/ss/virtualmachines/7"


def test_both_formats_parse_to_name_count_pairs() -> None:
    assert parse_remaining_resource(VM_PUT) == [
        ("Microsoft.Compute/UpdateVMSubscriptionMaximum", 1498.0), ("Microsoft.Compute/UpdateVMResource", 11.0)]
    assert parse_remaining_resource(VM_PUT_LEGACY) == [
        ("Microsoft.Compute/UpdateVM3Min", 238.0), ("Microsoft.Compute/UpdateVM30Min", 1196.0)]
    assert [count for _, count in parse_remaining_resource(VMSS_PUT)] == [1999.0, 11.0, 5999.0, 0.0]


@pytest.mark.parametrize(("name", "group", "per_resource", "window_s", "budget"), [
    ("Microsoft.Compute/UpdateVMSubscriptionMaximum", UPDATE_VM, False, None, True),
    ("Microsoft.Compute/UpdateVMResource", UPDATE_VM, True, None, True),
    ("Microsoft.Compute/UpdateVM3Min", UPDATE_VM, False, 180.0, True),
    ("Microsoft.Compute/UpdateVM30Min", UPDATE_VM, False, 1800.0, True),
    ("Microsoft.Compute/LowCostGetSubscriptionMaximum", LOW_COST_GET, False, None, True),
    ("Microsoft.Compute/LowCostGetResource", LOW_COST_GET, True, None, True),
    ("Microsoft.Compute/GetOperationResource", GET_OPERATION, True, None, True),
    ("Microsoft.Compute/GetOperationSubscriptionMaximum", GET_OPERATION, False, None, True),
    ("Microsoft.Compute/HighCostGetSubscriptionMaximum", HIGH_COST_GET, False, None, True),
    ("Microsoft.Compute/VMScaleSetVMActionsSubscriptionMaximum", VMSS_VM_UPDATE, False, None, True),
    ("Microsoft.Compute/VMScaleSetVMActionsResource", VMSS_VM_UPDATE, True, None, True),
    ("Microsoft.Compute/DeleteVMScaleSetVMSubscriptionMaximum", VMSS_VM_DELETE, False, None, True),
    ("Microsoft.Compute/DeleteVMScaleSetVMResource", VMSS_VM_DELETE, True, None, True),
    ("Microsoft.Compute/DeleteVMScaleSetVM3Min", VMSS_VM_DELETE, False, 180.0, True),
    ("Microsoft.Compute/GetVMScaleSetVMSubscriptionMaximum", VMSS_VM_GET, False, None, True),
    ("Microsoft.Compute/GetVMScaleSetVMResource", VMSS_VM_GET, True, None, True),
    ("Microsoft.Compute/DeleteVMResource", DELETE_VM, True, None, True),
    # not modelled: learned as buckets of their own (a VMSS list is not a VM list)
    ("Microsoft.Compute/VMScaleSetBatchedVMRequestsSubscriptionMaximum", None, False, None, True),
    ("Microsoft.Compute/VMScaleSetBatchedVMRequests5Min", None, False, 300.0, True),
    ("Microsoft.Compute/HighCostGetVMScaleSetSubscriptionMaximum", None, False, None, True),
    ("Microsoft.Compute/HighCostGetVMScaleSetResource", None, True, None, True),
    ("Microsoft.Compute/VMScaleSetVMViewsSubscriptionMaximum", None, False, None, True),
    ("Microsoft.Compute/GetVMScaleSetSubscriptionMaximum", None, False, None, True),
    # a counter, not a remaining budget: 0 on every successful write
    ("Microsoft.Compute/VmssQueuedVMOperations", None, False, None, False),
])
def test_recorded_policy_names(name: str, group: str | None, per_resource: bool, window_s: float | None,
                               budget: bool) -> None:
    policy = parse_policy(name)
    assert (policy.group, policy.per_resource, policy.window_s, policy.budget) == (group, per_resource, window_s, budget)


def observe(throttle: Throttle, method: str, url: str, header: str, **extra: str) -> None:
    headers = case_insensitive_dict({"x-ms-ratelimit-remaining-resource": header, **extra})
    assert throttle.observe(classify(method, url), 200, headers) is False


def test_vm_run_command_headers_reconcile_the_per_vm_and_subscription_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    observe(throttle, "PUT", VM_RUN, VM_PUT)
    observe(throttle, "GET", VM_RUN, VM_GET)
    got = names(throttle)
    assert got[f"{VM_KEY}/update-vm"].level == 11  # UpdateVMResource
    assert got[f"compute/{SUB}/update-vm"].level == 1498  # UpdateVMSubscriptionMaximum
    assert got[f"{VM_KEY}/low-cost-get"].level == 28  # LowCostGetResource
    assert got[f"compute/{SUB}/low-cost-get"].level == 23968  # LowCostGetSubscriptionMaximum
    assert not any(name.startswith("learned/") for name in got)


def test_operation_headers_reconcile_the_subscription_bucket_only() -> None:
    throttle = Throttle(clock=FakeClock())
    observe(throttle, "GET", f"{ARM}/providers/Microsoft.Compute/locations/westus/operations/9a06", OPERATION_GET)
    got = names(throttle)
    assert got[f"compute/{SUB}/get-operation"].level == 14993
    # GetOperationResource counts per operation; the URL names no VM to key it on
    assert [n for n in got if n.startswith(("compute/rg-web", "learned/"))] == []


def test_scale_set_vm_headers_use_their_own_policies() -> None:
    throttle = Throttle(clock=FakeClock())
    observe(throttle, "PUT", VMSS_RUN, VMSS_PUT, **{"x-ms-request-charge": "1"})
    observe(throttle, "DELETE", VMSS_RUN, VMSS_DELETE)
    observe(throttle, "GET", VMSS_RUN, VMSS_GET)
    got = names(throttle)
    assert got[f"{VMSS_KEY}/vmss-vm-update"].level == 11  # VMScaleSetVMActionsResource
    assert got[f"{VMSS_KEY}/vmss-vm-delete"].level == 11  # DeleteVMScaleSetVMResource, not the update bucket
    assert got[f"{VMSS_KEY}/vmss-vm-get"].level == 35  # GetVMScaleSetVMResource
    assert got[f"compute/{SUB}/vmss-vm-get"].level == 5999
    # the server shows 2000 for actions/deletes; we keep the documented 1500 as the ceiling
    assert got[f"compute/{SUB}/vmss-vm-update"].level == 1500
    assert got[f"compute/{SUB}/vmss-vm-delete"].level == 1500
    batched = got[f"learned/{SUB}/microsoft.compute/vmscalesetbatchedvmrequestssubscriptionmaximum"]
    assert batched.level == 5999 and batched.capacity == 6000
    assert not any("queued" in name for name in got)


def test_queued_operations_at_zero_never_stall_scale_set_writes() -> None:
    """``VmssQueuedVMOperations;0`` comes with every successful write: honouring it as a budget
    would make every later scale-set write wait for a refill that never shows."""
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    for i in range(8):
        rc = classify("PUT", VMSS_RUN.replace("/7/", f"/{i}/"))
        sent = throttle.begin(rc)
        assert sent.waited_s == 0.0
        throttle.observe(rc, 201, case_insensitive_dict({"x-ms-ratelimit-remaining-resource": VMSS_PUT}), sent=sent)
    assert clock.sleeps == []


def test_legacy_headers_learn_windowed_subscription_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    observe(throttle, "PUT", VM_RUN, VM_PUT_LEGACY)
    observe(throttle, "GET", VM_RUN, VM_GET_LEGACY)
    observe(throttle, "PUT", VMSS_RUN, VMSS_PUT_LEGACY)
    got = names(throttle)
    three = got[f"learned/{SUB}/microsoft.compute/updatevm3min"]
    assert (three.capacity, three.level, three.refill_per_s) == (239, 238, pytest.approx(239 / 180))
    thirty = got[f"learned/{SUB}/microsoft.compute/updatevm30min"]
    assert (thirty.capacity, thirty.level, thirty.refill_per_s) == (1197, 1196, pytest.approx(1197 / 1800))
    assert got[f"learned/{SUB}/microsoft.compute/lowcostget3min"].level == 3974
    assert got[f"learned/{SUB}/microsoft.compute/vmscalesetbatchedvmrequests5min"].refill_per_s == pytest.approx(1182 / 300)
    # no per-VM figure in the legacy format: the per-VM buckets keep the published limits
    assert got[f"{VM_KEY}/update-vm"].level == 12 and got[f"{VM_KEY}/low-cost-get"].level == 36
    # from now on every VM run-command write also takes from the windowed buckets
    buckets = {b.name for b in throttle.buckets_for(classify("PUT", VM_RUN.replace("vm-001", "vm-002")))}
    assert {three.name, thirty.name} <= buckets


def test_listing_a_scale_set_does_not_touch_the_vm_list_bucket() -> None:
    throttle = Throttle(clock=FakeClock())
    observe(throttle, "GET", f"{RG}/virtualMachines", RG_LIST)
    observe(throttle, "GET", f"{RG}/virtualMachineScaleSets/ss/virtualMachines", VMSS_LIST,
            **{"x-ms-request-charge": "4"})
    got = names(throttle)
    assert got[f"compute/{SUB}/high-cost-get"].level == 899  # HighCostGetSubscriptionMaximum only
    assert got[f"learned/{SUB}/microsoft.compute/highcostgetvmscalesetsubscriptionmaximum"].level == 1079
    assert got[f"learned/{SUB}/microsoft.compute/vmscalesetvmviewssubscriptionmaximum"].level == 29996


def test_unknown_policies_are_logged_and_the_most_restrictive_count_honoured(caplog: pytest.LogCaptureFixture) -> None:
    throttle = Throttle(clock=FakeClock())
    with caplog.at_level(logging.DEBUG, logger="azrun.throttle.registry"):
        observe(throttle, "PUT", VM_RUN,
                "Microsoft.Compute/UpdateVMResource;11,Microsoft.Compute/VMUpdateResource;3,"
                "Microsoft.Compute/BrandNewPolicyResource;2")
    got = names(throttle)
    assert got[f"{VM_KEY}/update-vm"].level == 3  # two names for one bucket: the lower count wins
    learned = [b for name, b in got.items() if name.endswith("/microsoft.compute/brandnewpolicyresource")]
    assert len(learned) == 1 and "vm-001" in learned[0].name and learned[0].level == 2  # per VM: "...Resource"
    assert "BrandNewPolicyResource" in caplog.text and "learned" in caplog.text
    # the next write on that VM waits for the learned bucket (2 left, then its refill)
    assert throttle.buckets_for(classify("PUT", VM_RUN))[-1].level() == 2


# -- the local Azure speaks the same headers, and azrun reads them ------------------------------
from azrun.sim.arm import policies as sim_policies  # noqa: E402
from azrun.sim.arm.throttle import Throttler  # noqa: E402
from azrun.sim.fleettypes import Limits  # noqa: E402

#: What a fresh local Azure answers per operation: the highest counts recorded (limit - 1).
SIM_CURRENT = {
    sim_policies.VM_UPDATE: "Microsoft.Compute/UpdateVMSubscriptionMaximum;1499,Microsoft.Compute/UpdateVMResource;11",
    sim_policies.VM_GET: "Microsoft.Compute/LowCostGetSubscriptionMaximum;23999,Microsoft.Compute/LowCostGetResource;35",
    sim_policies.OPERATION: (
        "Microsoft.Compute/GetOperationResource;59,Microsoft.Compute/GetOperationSubscriptionMaximum;14999"),
    sim_policies.VMSS_VM_UPDATE: VMSS_PUT,
    sim_policies.VMSS_VM_DELETE: VMSS_DELETE,
    sim_policies.VMSS_VM_GET: VMSS_GET,
    sim_policies.VM_LIST: "Microsoft.Compute/HighCostGetSubscriptionMaximum;899",
}
SIM_LEGACY = {
    sim_policies.VM_UPDATE: "Microsoft.Compute/UpdateVM3Min;239,Microsoft.Compute/UpdateVM30Min;1199",
    sim_policies.VM_GET: "Microsoft.Compute/LowCostGet3Min;3999,Microsoft.Compute/LowCostGet30Min;31999",
    sim_policies.OPERATION: "Microsoft.Compute/GetOperation3Min;14999,Microsoft.Compute/GetOperation30Min;29999",
    sim_policies.VMSS_VM_UPDATE: "Microsoft.Compute/VMScaleSetBatchedVMRequests5Min;1199,Microsoft.Compute/VmssQueuedVMOperations;0",
    sim_policies.VM_LIST: "Microsoft.Compute/HighCostGet3Min;139,Microsoft.Compute/HighCostGet30Min;699",
}


@pytest.mark.parametrize(("header_format", "expected"), [("current", SIM_CURRENT), ("legacy", SIM_LEGACY)])
def test_the_local_azure_answers_the_recorded_policy_names_and_order(header_format: str, expected: dict[str, str]) -> None:
    for operation, header in expected.items():
        throttler = Throttler(Limits(header_format=header_format))
        got = throttler.compute(operation, subscription=SUB, resource="/vm/1")
        assert got["x-ms-ratelimit-remaining-resource"] == header, operation
        charged = operation in (sim_policies.VMSS_VM_UPDATE, sim_policies.VMSS_VM_DELETE)
        assert ("x-ms-request-charge" in got) == charged, operation  # as recorded


def test_scale_set_instance_listing_is_charged_per_instance_and_list_all_sends_nothing() -> None:
    throttler = Throttler(Limits())
    got = throttler.compute(sim_policies.VMSS_LIST, subscription=SUB, resource="/ss", charge=4)
    assert got == {"x-ms-ratelimit-remaining-resource": VMSS_LIST, "x-ms-request-charge": "4"}  # test_vmss_vms
    assert throttler.compute(sim_policies.VM_LIST_ALL, subscription=SUB, resource=None) == {}


@pytest.mark.parametrize("header_format", ["current", "legacy"])
def test_azrun_reconciles_every_header_the_local_azure_sends(header_format: str) -> None:
    """Every policy the local Azure names is a modelled bucket, a learned one, or a known counter."""
    sim = Throttler(Limits(header_format=header_format))
    throttle = Throttle(clock=FakeClock())
    urls = {
        sim_policies.VM_UPDATE: ("PUT", VM_RUN), sim_policies.VM_GET: ("GET", VM_RUN),
        sim_policies.VMSS_VM_UPDATE: ("PUT", VMSS_RUN), sim_policies.VMSS_VM_DELETE: ("DELETE", VMSS_RUN),
        sim_policies.VMSS_VM_GET: ("GET", VMSS_RUN),
    }
    for operation, (method, url) in urls.items():
        header = sim.compute(operation, subscription=SUB, resource="/x").get("x-ms-ratelimit-remaining-resource")
        if header is not None:  # legacy scale-set VM reads carry none (recorded 2021-22)
            observe(throttle, method, url, header)
    got = names(throttle)
    if header_format == "current":
        assert got[f"{VM_KEY}/update-vm"].level == 11 and got[f"{VMSS_KEY}/vmss-vm-delete"].level == 11
        assert got[f"compute/{SUB}/vmss-vm-get"].level == 5999
    else:
        assert got[f"learned/{SUB}/microsoft.compute/updatevm3min"].level == 239
        # one policy for scale-set VM writes and deletes alike: the DELETE saw the PUT's token gone
        assert got[f"learned/{SUB}/microsoft.compute/vmscalesetbatchedvmrequests5min"].level == 1198
