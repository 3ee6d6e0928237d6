"""The exact Azure RBAC permissions azrun needs, and why: one list for the docs, the role and the tests.

``infra/modules/role.bicep`` defines the custom role from these lists (``tests/test_infra.py``
checks that they match exactly), ``infra/README.md`` prints them, and
:func:`role_definition` renders them for ``az role definition create`` when Bicep is not used.

Two identities are involved:

* the **runner** (whoever runs azrun: a user, a Function App, an Automation account) needs
  :data:`ACTIONS` on the machines' scope and :data:`DATA_ACTIONS` on the output container;
* the **machines**, when output is written with a managed identity instead of a SAS, need
  :data:`VM_BLOB_ROLE` (Storage Blob Data Contributor) on the output container, with that identity
  attached to the VM or scale set.

Referencing a user-assigned identity that is already attached to the VM in
``outputBlobManagedIdentity`` is not an *assignment* of that identity, so the runner is given no
``Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`` (an assumption: the run-command
docs only require the identity to be attached to the VM; attaching it is the deployer's job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ACTIONS",
    "DATA_ACTIONS",
    "PERMISSIONS",
    "VM_BLOB_ROLE",
    "VM_BLOB_ROLE_ID",
    "Permission",
    "role_definition",
]


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC operation, whether it is a control-plane or a data action, and what azrun does with it."""

    name: str
    data: bool
    why: str


PERMISSIONS: Final[tuple[Permission, ...]] = (
    Permission("Microsoft.Compute/virtualMachines/read", False, "expand targets: VM model, OS, identities"),
    Permission("Microsoft.Compute/virtualMachines/instanceView/read", False, "power state before dispatch"),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/read", False, "scale set model and orchestration mode"
    ),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
        False,
        "list Uniform scale set instances",
    ),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read",
        False,
        "power state of Uniform instances",
    ),
    Permission("Microsoft.Compute/virtualMachines/runCommands/read", False, "poll run commands on VMs"),
    Permission("Microsoft.Compute/virtualMachines/runCommands/write", False, "submit run commands on VMs"),
    Permission("Microsoft.Compute/virtualMachines/runCommands/delete", False, "cancel and clean up on VMs"),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/read",
        False,
        "poll run commands on Uniform instances",
    ),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/write",
        False,
        "submit run commands on Uniform instances",
    ),
    Permission(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands/delete",
        False,
        "cancel and clean up on Uniform instances",
    ),
    Permission(
        "Microsoft.Compute/locations/runCommands/read", False, "list built-in command ids (RunShellScript)"
    ),
    Permission("Microsoft.Compute/locations/operations/read", False, "poll asynchronous operations"),
    Permission("Microsoft.Resources/subscriptions/resources/read", False, "select targets by tag"),
    Permission(
        "Microsoft.Resources/subscriptions/resourceGroups/read", False, "select targets by resource group"
    ),
    Permission("Microsoft.Resources/subscriptions/read", False, "check the subscription (azrun auth)"),
    Permission(
        "Microsoft.Storage/storageAccounts/blobServices/containers/read",
        False,
        "check the output container before a run (Get Container Properties)",
    ),
    Permission(
        "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        False,
        "sign user-delegation SAS URLs for output blobs (SAS mode)",
    ),
    Permission(
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        True,
        "read and tail output blobs",
    ),
    Permission(
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        True,
        "create the output append blobs",
    ),
    Permission(
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        True,
        "append to output blobs",
    ),
)

ACTIONS: Final[tuple[str, ...]] = tuple(p.name for p in PERMISSIONS if not p.data)
DATA_ACTIONS: Final[tuple[str, ...]] = tuple(p.name for p in PERMISSIONS if p.data)

VM_BLOB_ROLE: Final = "Storage Blob Data Contributor"
VM_BLOB_ROLE_ID: Final = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # built-in, the same in every tenant


def role_definition(
    name: str, assignable_scopes: list[str], *, description: str | None = None
) -> dict[str, Any]:
    """The custom role as ``az role definition create --role-definition @file.json`` expects it."""
    return {
        "Name": name,
        "IsCustom": True,
        "Description": description
        or "Least privilege for azrun: run commands on VMs and scale sets, output blobs.",
        "Actions": list(ACTIONS),
        "NotActions": [],
        "DataActions": list(DATA_ACTIONS),
        "NotDataActions": [],
        "AssignableScopes": assignable_scopes,
    }
