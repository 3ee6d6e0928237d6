"""ARM's URL space, matched case-insensitively (``resourceGroups`` = ``resourcegroups``).

One table maps path patterns to, per HTTP method, the operation name (for the request log),
the RBAC action (for 403s), the api-version family and the handler. Names in the path keep
the caller's casing; handlers look them up case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from azrun.sim.arm import action as act
from azrun.sim.arm import errors as err
from azrun.sim.arm import reads as r
from azrun.sim.arm import runcmd as rc
from azrun.sim.arm.context import Call, Reply, Service

Handler = Callable[[Service, Call, dict[str, str]], Awaitable[Reply]]

# api-version families: (oldest, newest, versions named in the error message)
API_VERSIONS: dict[str, tuple[str, str, list[str]]] = {
    "compute": (
        "2024-11-01",
        "2026-04-01",
        ["2024-11-01", "2025-04-01", "2025-11-01", "2026-03-01", "2026-03-02", "2026-03-03", "2026-04-01"],
    ),
    "resources": (
        "2021-04-01",
        "2025-04-01",
        [
            "2021-04-01",
            "2022-09-01",
            "2023-07-01",
            "2024-03-01",
            "2024-07-01",
            "2024-11-01",
            "2025-01-01",
            "2025-03-01",
            "2025-04-01",
        ],
    ),
    "subscriptions": (
        "2016-06-01",
        "2022-12-01",
        ["2016-06-01", "2018-06-01", "2019-06-01", "2019-11-01", "2020-01-01", "2021-01-01", "2022-12-01"],
    ),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_api_version(family: str, version: str | None) -> str:
    """The api-version if this family accepts it.

    Raises:
        ArmError: 400 ``MissingApiVersionParameter`` / ``InvalidApiVersionParameter``.
    """
    if not version:
        raise err.missing_api_version()
    low, high, named = API_VERSIONS[family]
    if not _DATE.match(version) or not (low <= version <= high):
        raise err.invalid_api_version(version, named)
    return version


@dataclass(frozen=True, slots=True)
class Endpoint:
    op: str
    action: str | None  # RBAC action checked on the subscription; None for tenant-level calls
    family: str
    handler: Handler


@dataclass(frozen=True, slots=True)
class Match:
    endpoint: Endpoint
    params: dict[str, str]


_C = "subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute"
_VM_RC = "Microsoft.Compute/virtualMachines/runCommands"
_SS_RC = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands"


def _rc_endpoints(prefix: str, action: str) -> dict[str, Endpoint]:
    return {
        "GET": Endpoint(
            f"{prefix}_Get" if "ScaleSet" in prefix else f"{prefix}_GetByVirtualMachine",
            f"{action}/read",
            "compute",
            rc.get_run_command,
        ),
        "PUT": Endpoint(f"{prefix}_CreateOrUpdate", f"{action}/write", "compute", rc.put_run_command),
        "PATCH": Endpoint(f"{prefix}_Update", f"{action}/write", "compute", rc.patch_run_command),
        "DELETE": Endpoint(f"{prefix}_Delete", f"{action}/delete", "compute", rc.delete_run_command),
    }


_TABLE: list[tuple[str, dict[str, Endpoint]]] = [
    (
        "subscriptions/{sub}/providers/microsoft.compute/locations/{loc}/runcommands",
        {
            "GET": Endpoint(
                "VirtualMachineRunCommands_List",
                "Microsoft.Compute/locations/runCommands/read",
                "compute",
                act.list_commands,
            )
        },
    ),
    (
        "subscriptions/{sub}/providers/microsoft.compute/locations/{loc}/runcommands/{command}",
        {
            "GET": Endpoint(
                "VirtualMachineRunCommands_Get",
                "Microsoft.Compute/locations/runCommands/read",
                "compute",
                act.get_command,
            )
        },
    ),
    (
        f"{_C}/virtualmachines/{{vm}}/runcommand",
        {
            "POST": Endpoint(
                "VirtualMachines_RunCommand",
                "Microsoft.Compute/virtualMachines/runCommand/action",
                "compute",
                act.run_action,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines/{{instance}}/runcommand",
        {
            "POST": Endpoint(
                "VirtualMachineScaleSetVMs_RunCommand",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommand/action",
                "compute",
                act.run_action,
            )
        },
    ),
    ("tenants", {"GET": Endpoint("Tenants_List", None, "subscriptions", r.list_tenants)}),
    ("subscriptions", {"GET": Endpoint("Subscriptions_List", None, "subscriptions", r.list_subscriptions)}),
    (
        "subscriptions/{sub}",
        {
            "GET": Endpoint(
                "Subscriptions_Get",
                "Microsoft.Resources/subscriptions/read",
                "subscriptions",
                r.get_subscription,
            )
        },
    ),
    (
        "subscriptions/{sub}/resourcegroups",
        {
            "GET": Endpoint(
                "ResourceGroups_List",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "resources",
                r.list_groups,
            )
        },
    ),
    (
        "subscriptions/{sub}/resourcegroups/{rg}",
        {
            "GET": Endpoint(
                "ResourceGroups_Get",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "resources",
                r.get_group,
            ),
            "HEAD": Endpoint(
                "ResourceGroups_CheckExistence",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "resources",
                r.get_group,
            ),
        },
    ),
    (
        "subscriptions/{sub}/resources",
        {
            "GET": Endpoint(
                "Resources_List",
                "Microsoft.Resources/subscriptions/resources/read",
                "resources",
                r.list_resources,
            )
        },
    ),
    (
        "subscriptions/{sub}/resourcegroups/{rg}/resources",
        {
            "GET": Endpoint(
                "Resources_ListByResourceGroup",
                "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
                "resources",
                r.list_resources,
            )
        },
    ),
    (
        "subscriptions/{sub}/providers/microsoft.compute/virtualmachines",
        {
            "GET": Endpoint(
                "VirtualMachines_ListAll", "Microsoft.Compute/virtualMachines/read", "compute", r.list_vms
            )
        },
    ),
    (
        "subscriptions/{sub}/providers/microsoft.compute/virtualmachinescalesets",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSets_ListAll",
                "Microsoft.Compute/virtualMachineScaleSets/read",
                "compute",
                r.list_vmss,
            )
        },
    ),
    (
        "subscriptions/{sub}/providers/microsoft.compute/locations/{loc}/operations/{op}",
        {
            "GET": Endpoint(
                "AsyncOperation_Get",
                "Microsoft.Compute/locations/operations/read",
                "compute",
                rc.get_operation,
            )
        },
    ),
    (
        f"{_C}/virtualmachines",
        {
            "GET": Endpoint(
                "VirtualMachines_List", "Microsoft.Compute/virtualMachines/read", "compute", r.list_vms
            )
        },
    ),
    (
        f"{_C}/virtualmachines/{{vm}}",
        {
            "GET": Endpoint(
                "VirtualMachines_Get", "Microsoft.Compute/virtualMachines/read", "compute", r.get_vm
            )
        },
    ),
    (
        f"{_C}/virtualmachines/{{vm}}/instanceview",
        {
            "GET": Endpoint(
                "VirtualMachines_InstanceView",
                "Microsoft.Compute/virtualMachines/read",
                "compute",
                r.vm_instance_view,
            )
        },
    ),
    (
        f"{_C}/virtualmachines/{{vm}}/runcommands",
        {
            "GET": Endpoint(
                "VirtualMachineRunCommands_ListByVirtualMachine",
                f"{_VM_RC}/read",
                "compute",
                rc.list_run_commands,
            )
        },
    ),
    (f"{_C}/virtualmachines/{{vm}}/runcommands/{{rc}}", _rc_endpoints("VirtualMachineRunCommands", _VM_RC)),
    (
        f"{_C}/virtualmachinescalesets",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSets_List",
                "Microsoft.Compute/virtualMachineScaleSets/read",
                "compute",
                r.list_vmss,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSets_Get",
                "Microsoft.Compute/virtualMachineScaleSets/read",
                "compute",
                r.get_vmss,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSetVMs_List",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
                "compute",
                r.list_vmss_vms,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines/{{instance}}",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSetVMs_Get",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
                "compute",
                r.get_vmss_vm,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines/{{instance}}/instanceview",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSetVMs_GetInstanceView",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
                "compute",
                r.vmss_vm_instance_view,
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines/{{instance}}/runcommands",
        {
            "GET": Endpoint(
                "VirtualMachineScaleSetVMRunCommands_List", f"{_SS_RC}/read", "compute", rc.list_run_commands
            )
        },
    ),
    (
        f"{_C}/virtualmachinescalesets/{{vmss}}/virtualmachines/{{instance}}/runcommands/{{rc}}",
        _rc_endpoints("VirtualMachineScaleSetVMRunCommands", _SS_RC),
    ),
]


class Router:
    """Segment-by-segment matcher over lowercased paths, bucketed by segment count."""

    def __init__(self) -> None:
        self._by_len: dict[int, list[tuple[tuple[str, ...], dict[str, Endpoint]]]] = {}
        for pattern, methods in _TABLE:
            segs = tuple(pattern.split("/"))
            self._by_len.setdefault(len(segs), []).append((segs, methods))

    def match(self, method: str, path: str) -> Match:
        """The endpoint for a request.

        Raises:
            ArmError: 404 for an unknown path, 405 for a known path with another method.
        """
        segs = [s for s in path.strip("/").split("/")]
        lowered = [s.lower() for s in segs]
        for pattern, methods in self._by_len.get(len(segs), []):
            params: dict[str, str] = {}
            for pat, low, orig in zip(pattern, lowered, segs, strict=True):
                if pat.startswith("{"):
                    if not orig:
                        break
                    params[pat[1:-1]] = orig
                elif pat != low:
                    break
            else:
                endpoint = methods.get(method)
                if endpoint is None:
                    raise err.method_not_allowed(method)
                return Match(endpoint, params)
        raise err.no_route(path)
