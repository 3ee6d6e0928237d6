"""Compute's rate-limit policies per operation, named and ordered as recorded Azure answers them.

Each operation the local Compute RP meters has a list of *meters*: a policy name as it appears
in ``x-ms-ratelimit-remaining-resource`` (without the ``Microsoft.Compute/`` prefix), its scope
(per subscription, per resource, or a constant counter) and its bucket. Two header formats, both
recorded (docs/architecture.md, "Local Azure vs recorded Azure"):

- ``current`` (VMs from late 2023, scale sets from 2023-10):
  ``UpdateVMSubscriptionMaximum;1499,UpdateVMResource;11``;
- ``legacy`` windowed: ``UpdateVM3Min;239,UpdateVM30Min;1199``. The legacy header shows no
  per-VM figure, but the per-VM buckets are still enforced (hidden meters): that is harder for a
  client than a world without them, and the docs publish per-VM limits.

``x-ms-request-charge`` is sent where recorded: scale-set VM writes and reads (1) and scale-set
instance listings (the number of instances returned, which the ``VMScaleSetVMViews`` meter is
charged with). Subscription-wide ``VirtualMachines_ListAll`` answers no rate-limit header (as
recorded) but still draws on ``HighCostGet`` silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from azrun.sim.fleettypes import Limits

Spec = tuple[float, float]

VM_UPDATE = "vm-update"  # VM run command PUT/PATCH/DELETE, legacy VM runCommand POST
VM_GET = "vm-get"  # GET VM / instance view, GET/LIST VM run commands
VM_LIST = "vm-list"  # VMs of a resource group (also Flexible members by $filter)
VM_LIST_ALL = "vm-list-all"  # VirtualMachines_ListAll: no header
OPERATION = "operation"
VMSS_VM_UPDATE = "vmss-vm-update"  # scale-set VM run command PUT/PATCH
VMSS_VM_DELETE = "vmss-vm-delete"  # scale-set VM run command DELETE
VMSS_VM_ACTION = "vmss-vm-action"  # legacy scale-set VM runCommand POST
VMSS_VM_GET = "vmss-vm-get"  # GET/LIST scale-set VM run commands
VMSS_VM_VIEW = "vmss-vm-view"  # GET a scale-set VM / its instance view
VMSS_LIST = "vmss-list"  # instances of a Uniform scale set
VMSS_GET = "vmss-get"  # GET a scale set
CATALOG = "catalog"  # the location's run-command catalogue (legacy: GetSubscriptionInfo3Min)


@dataclass(frozen=True, slots=True)
class Meter:
    """One policy of one operation: header name, scope and bucket (None: a constant counter)."""

    name: str
    scope: str  # "sub" | "res" | "const"
    spec: Spec | None
    shown: bool = True  # False: enforced but not in the header (legacy per-VM buckets)
    charged: bool = False  # takes ``x-ms-request-charge`` tokens instead of one


@dataclass(frozen=True, slots=True)
class OperationPolicy:
    meters: tuple[Meter, ...]
    charge: bool = False  # answer ``x-ms-request-charge``


def _w(capacity: float, window_s: float) -> Spec:
    """A windowed counter: ``capacity`` per window, refilled evenly."""
    return (capacity, capacity / window_s)


_M3, _M5, _M30 = 180.0, 300.0, 1800.0
_QUEUED = Meter("VmssQueuedVMOperations", "const", None)


def _current(lim: Limits) -> dict[str, OperationPolicy]:
    def pair(base: str, sub: Spec, res: Spec, *, resource_first: bool = False) -> tuple[Meter, ...]:
        s, r = Meter(f"{base}SubscriptionMaximum", "sub", sub), Meter(f"{base}Resource", "res", res)
        return (r, s) if resource_first else (s, r)

    batched = Meter("VMScaleSetBatchedVMRequestsSubscriptionMaximum", "sub", lim.vmss_batched_subscription)
    views = Meter("VMScaleSetVMViewsSubscriptionMaximum", "sub", lim.vmss_views_subscription, charged=True)
    return {
        VM_UPDATE: OperationPolicy(pair("UpdateVM", lim.vm_update_subscription, lim.vm_update_resource)),
        VM_GET: OperationPolicy(pair("LowCostGet", lim.vm_get_subscription, lim.vm_get_resource)),
        VM_LIST: OperationPolicy((Meter("HighCostGetSubscriptionMaximum", "sub", lim.vm_list_subscription),)),
        VM_LIST_ALL: OperationPolicy(
            (Meter("HighCostGetSubscriptionMaximum", "sub", lim.vm_list_subscription, shown=False),)
        ),
        OPERATION: OperationPolicy(
            pair("GetOperation", lim.vm_operation_subscription, lim.vm_operation_resource, resource_first=True)
        ),
        VMSS_VM_UPDATE: OperationPolicy(
            (*pair("VMScaleSetVMActions", lim.vmss_vm_update_subscription, lim.vmss_vm_update_resource),
             batched, _QUEUED),
            charge=True,
        ),
        VMSS_VM_DELETE: OperationPolicy(
            (*pair("DeleteVMScaleSetVM", lim.vmss_vm_delete_subscription, lim.vmss_vm_delete_resource),
             batched, _QUEUED),
            charge=True,
        ),
        VMSS_VM_ACTION: OperationPolicy(
            (Meter("VMScaleSetActionsSubscriptionMaximum", "sub", lim.vmss_actions_subscription),
             Meter("VMScaleSetVMActionsResource", "res", lim.vmss_vm_update_resource, shown=False),
             batched, _QUEUED),
            charge=True,
        ),
        VMSS_VM_GET: OperationPolicy(pair("GetVMScaleSetVM", lim.vmss_vm_get_subscription, lim.vmss_vm_get_resource)),
        VMSS_VM_VIEW: OperationPolicy(
            (*pair("GetVMScaleSetVM", lim.vmss_vm_get_subscription, lim.vmss_vm_get_resource), views), charge=True
        ),
        VMSS_LIST: OperationPolicy(
            (*pair("HighCostGetVMScaleSet", lim.vmss_list_subscription, lim.vmss_list_resource), views), charge=True
        ),
        VMSS_GET: OperationPolicy(pair("GetVMScaleSet", lim.vmss_get_subscription, lim.vmss_get_resource)),
        CATALOG: OperationPolicy(()),  # no recording in the current format: not metered
    }


def _legacy(lim: Limits) -> dict[str, OperationPolicy]:
    def win(base: str, three: float, thirty: float) -> tuple[Meter, Meter]:
        return Meter(f"{base}3Min", "sub", _w(three, _M3)), Meter(f"{base}30Min", "sub", _w(thirty, _M30))

    def hidden(name: str, spec: Spec) -> Meter:
        return Meter(name, "res", spec, shown=False)

    batched = Meter("VMScaleSetBatchedVMRequests5Min", "sub", _w(1200, _M5))
    views = Meter("VMScaleSetVMViews3Min", "sub", _w(5000, _M3), charged=True)
    return {
        VM_UPDATE: OperationPolicy((*win("UpdateVM", 240, 1200), hidden("UpdateVMResource", lim.vm_update_resource))),
        VM_GET: OperationPolicy((*win("LowCostGet", 4000, 32000), hidden("LowCostGetResource", lim.vm_get_resource))),
        VM_LIST: OperationPolicy(win("HighCostGet", 140, 700)),
        VM_LIST_ALL: OperationPolicy(tuple(Meter(m.name, m.scope, m.spec, shown=False) for m in win("HighCostGet", 140, 700))),
        OPERATION: OperationPolicy(
            (*win("GetOperation", 15000, 30000), hidden("GetOperationResource", lim.vm_operation_resource))
        ),
        VMSS_VM_UPDATE: OperationPolicy(
            (batched, _QUEUED, hidden("VMScaleSetVMActionsResource", lim.vmss_vm_update_resource)), charge=True
        ),
        # as the Azure CLI recorded them in 2022: no windowed figure of their own
        VMSS_VM_DELETE: OperationPolicy(
            (batched, _QUEUED, hidden("DeleteVMScaleSetVMResource", lim.vmss_vm_delete_resource)), charge=True
        ),
        VMSS_VM_ACTION: OperationPolicy(
            (*win("VMScaleSetActions", 240, 1200), batched, _QUEUED,
             hidden("VMScaleSetVMActionsResource", lim.vmss_vm_update_resource)),
            charge=True,
        ),
        VMSS_VM_GET: OperationPolicy(  # recorded 2021-22: no header at all, the budgets still apply
            (*(Meter(m.name, m.scope, m.spec, shown=False) for m in win("GetVMScaleSetVM", 1000, 5000)),
             hidden("GetVMScaleSetVMResource", lim.vmss_vm_get_resource))
        ),
        VMSS_VM_VIEW: OperationPolicy(
            (*win("GetVMScaleSetVM", 1000, 5000), views, hidden("GetVMScaleSetVMResource", lim.vmss_vm_get_resource)),
            charge=True,
        ),
        VMSS_LIST: OperationPolicy(
            (*win("HighCostGetVMScaleSet", 180, 900), views,
             hidden("HighCostGetVMScaleSetResource", lim.vmss_list_resource)),
            charge=True,
        ),
        VMSS_GET: OperationPolicy(
            (*win("GetVMScaleSet", 800, 4000), hidden("GetVMScaleSetResource", lim.vmss_get_resource))
        ),
        CATALOG: OperationPolicy((Meter("GetSubscriptionInfo3Min", "sub", _w(360, _M3)),)),
    }


HEADER_FORMATS = ("current", "legacy")


def operation_policies(limits: Limits) -> dict[str, OperationPolicy]:
    """The meters of every metered operation, in the fleet's header format."""
    return _legacy(limits) if limits.header_format == "legacy" else _current(limits)
