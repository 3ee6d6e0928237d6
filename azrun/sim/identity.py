"""Managed identities of the local Azure: who a VM (or scale set) can get tokens as.

The fleet file names identities; this module turns them into ``Principal`` values that the
token minting (``tokens.mint``), IMDS, the guest agent (blob upload with a managed identity)
and ARM's RBAC check all share, so an object id means the same thing everywhere.

Rules (IMDS, azure-facts §4):

- no selector: the system-assigned identity if enabled, else the only user-assigned one,
  else nothing (IMDS answers 400 "Identity not found");
- a selector (client_id / object_id / msi_res_id): the matching *attached* identity or nothing.

Uniform scale-set instances have no identity of their own: they use the scale set's. Their
system principal derives from the scale set's resource id, so all instances share it (as in
Azure, where the system-assigned identity belongs to the scale set).
"""

from __future__ import annotations

from azrun.sim.fleetspec import FleetSpec, Identity, VmSpec, VmssSpec, stable_uuid
from azrun.sim.tokens import Principal

Host = VmSpec | VmssSpec
"""Something identities are attached to: a VM (standalone or Flexible member) or a scale set."""


def system_principal(vm: Host, tenant_id: str) -> Principal:
    """The system-assigned identity of a VM or scale set (whether enabled or not)."""
    rid = vm.resource_id
    return Principal(
        object_id=stable_uuid("principal", rid),
        client_id=stable_uuid("client", rid),
        tenant_id=tenant_id,
        resource_id=rid,
        name=f"system:{vm.name}",
    )


def user_principal(identity: Identity, tenant_id: str) -> Principal:
    """A user-assigned identity."""
    return Principal(
        object_id=identity.principal_id,
        client_id=identity.client_id,
        tenant_id=tenant_id,
        resource_id=identity.resource_id,
        name=identity.name,
    )


def attached_identities(fleet: FleetSpec, vm: Host) -> list[Identity]:
    """User-assigned identities attached to ``vm`` that exist in the fleet (unknown names skipped)."""
    found = (fleet.identity(vm.subscription_id, name) for name in vm.user_identities)
    return [ident for ident in found if ident is not None]


def vm_principals(fleet: FleetSpec, vm: Host) -> list[Principal]:
    """System principal first (if enabled), then the user-assigned ones in attachment order."""
    tenant = fleet.sim.tenant_id
    out = [system_principal(vm, tenant)] if vm.system_identity else []
    out.extend(user_principal(i, tenant) for i in attached_identities(fleet, vm))
    return out


def resolve_vm_identity(
    fleet: FleetSpec,
    vm: Host,
    *,
    client_id: str | None = None,
    object_id: str | None = None,
    resource_id: str | None = None,
) -> Principal | None:
    """The identity IMDS would issue a token for, or None ("Identity not found")."""
    tenant = fleet.sim.tenant_id
    if client_id is None and object_id is None and resource_id is None:
        if vm.system_identity:
            return system_principal(vm, tenant)
        users = attached_identities(fleet, vm)
        return user_principal(users[0], tenant) if len(users) == 1 else None
    for p in vm_principals(fleet, vm):
        if client_id is not None and p.client_id.lower() == client_id.lower():
            return p
        if object_id is not None and p.object_id.lower() == object_id.lower():
            return p
        if resource_id is not None and (p.resource_id or "").lower() == resource_id.lower():
            return p
    return None


def principal_by_object_id(fleet: FleetSpec, object_id: str) -> tuple[Principal, str] | None:
    """Find any principal of the fleet by object id, with its display name (for RBAC)."""
    oid = object_id.lower()
    tenant = fleet.sim.tenant_id
    for sub in fleet.subscriptions:
        for ident in sub.identities:
            if ident.principal_id.lower() == oid:
                return user_principal(ident, tenant), ident.name
    hosts: list[Host] = [*fleet.vms, *fleet.scale_sets]
    for host in hosts:
        if host.system_identity:
            p = system_principal(host, tenant)
            if p.object_id.lower() == oid:
                return p, p.name
    return None


def storage_role(fleet: FleetSpec, principal: Principal) -> str:
    """The principal's role on the output container, as the fleet file grants it.

    User-assigned identities say it (``storage_role``); a system-assigned identity has the role
    of its VM's or scale set's ``system_identity_storage_role``: none unless granted, as in
    Azure, where enabling the identity grants nothing.
    """
    return _roles(fleet).get(principal.object_id.lower(), "none")


_ROLE_CACHE: dict[int, tuple[FleetSpec, dict[str, str]]] = {}


def _roles(fleet: FleetSpec) -> dict[str, str]:
    """Object id -> storage role of every identity of the fleet (built once per fleet)."""
    cached = _ROLE_CACHE.get(id(fleet))
    if cached is not None and cached[0] is fleet:
        return cached[1]
    roles: dict[str, str] = {}
    hosts: list[Host] = [*fleet.vms, *fleet.scale_sets]
    for host in hosts:
        if host.system_identity:
            roles[system_principal(host, fleet.sim.tenant_id).object_id.lower()] = host.system_storage_role
    for sub in fleet.subscriptions:
        for ident in sub.identities:
            roles[ident.principal_id.lower()] = ident.storage_role
    _ROLE_CACHE.clear()  # one fleet per process in practice
    _ROLE_CACHE[id(fleet)] = (fleet, roles)
    return roles
