"""JSON shapes of the local ARM, following the Azure REST API specification (2024-11-01 Compute).

Static parts of a VM or scale-set body depend only on the fleet file, so they are built once
and cached; live parts (power state, run-command state) are added per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from azrun.sim.fleetspec import FleetSpec, ResourceGroupSpec, SubscriptionSpec, VmSpec, VmssSpec, stable_uuid
from azrun.sim.identity import attached_identities, system_principal, user_principal
from azrun.sim.model import Machine, ResourceEntry
from azrun.sim.render_parts import CREATED, image, os_disk, os_profile, power_instance_view


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JSON body already encoded (listings are spliced from cached per-item fragments)."""

    data: bytes


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def encoded_listing(fragments: list[bytes], next_link: str | None) -> Encoded:
    """``{"value": [...], "nextLink"?}`` from encoded items, without re-encoding them."""
    tail = b"]}" if not next_link else b'],"nextLink":' + encode(next_link) + b"}"
    return Encoded(b'{"value":[' + b",".join(fragments) + tail)


def _tags(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(pairs)


def identity_block(fleet: FleetSpec, host: VmSpec | VmssSpec) -> dict[str, Any] | None:
    """The ``identity`` of a VM or scale set, or None when it has none."""
    tenant = fleet.sim.tenant_id
    users = attached_identities(fleet, host)
    if not host.system_identity and not users:
        return None
    kinds = [k for k, on in (("SystemAssigned", host.system_identity), ("UserAssigned", bool(users))) if on]
    block: dict[str, Any] = {"type": ", ".join(kinds)}
    if host.system_identity:
        p = system_principal(host, tenant)
        block["principalId"], block["tenantId"] = p.object_id, tenant
    if users:
        block["userAssignedIdentities"] = {
            u.resource_id: {"principalId": user_principal(u, tenant).object_id, "clientId": u.client_id}
            for u in users
        }
    return block


class Renderer:
    """Builds (and caches the static parts of) every body the local ARM answers."""

    def __init__(self, fleet: FleetSpec) -> None:
        self.fleet = fleet
        self._vm_cache: dict[str, dict[str, Any]] = {}
        self._vmss_cache: dict[str, dict[str, Any]] = {}
        self._bytes: dict[tuple[str, str | None], bytes] = {}  # (id, power when viewed) -> JSON

    def machine_json(self, m: Machine, *, instance_view: bool = False) -> bytes:
        """A VM or Uniform instance as encoded JSON, cached per power state (lists splice these)."""
        key = (m.id, f"{m.power}/{m.agent_ready}" if instance_view else None)
        data = self._bytes.get(key)
        if data is None:
            body = (
                self.vmss_vm(m, instance_view=instance_view)
                if m.uniform
                else self.vm(m, instance_view=instance_view)
            )
            data = self._bytes[key] = encode(body)
        return data

    def status_json(self, m: Machine) -> bytes:
        """A ``statusOnly=true`` stub: status without the model (no tags, OS, identity, scale set)."""
        key = (m.id, f"status:{m.power}/{m.agent_ready}")
        data = self._bytes.get(key)
        if data is None:
            view = power_instance_view(m, "")
            body = {
                "name": m.name,
                "id": m.id,
                "type": "Microsoft.Compute/virtualMachines",
                "location": m.location,
                "properties": {
                    "vmId": self.vm(m)["properties"]["vmId"],
                    "provisioningState": "Succeeded",
                    "instanceView": {"statuses": view["statuses"]},
                },
            }
            data = self._bytes[key] = encode(body)
        return data

    def resource_json(self, entry: ResourceEntry, *, with_tags: bool) -> bytes:
        key = (entry.id, "tags" if with_tags else "")
        data = self._bytes.get(key)
        if data is None:
            data = self._bytes[key] = encode(self.resource(entry, with_tags=with_tags))
        return data

    # ------------------------------------------------------------------ compute
    def vm(self, m: Machine, *, instance_view: bool = False) -> dict[str, Any]:
        base = self._vm_cache.get(m.id)
        if base is None:
            base = self._vm_cache[m.id] = self._vm_static(m)
        if not instance_view:
            return base
        name = base["properties"]["osProfile"]["computerName"]
        return {**base, "properties": {**base["properties"], "instanceView": power_instance_view(m, name)}}

    def _vm_static(self, m: Machine) -> dict[str, Any]:
        assert isinstance(m.host, VmSpec)
        vm = m.host
        props: dict[str, Any] = {
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.size},
            "storageProfile": {"imageReference": image(m.os), "osDisk": os_disk(m), "dataDisks": []},
            "osProfile": os_profile(vm.name, m.os),
            "networkProfile": {
                "networkInterfaces": [
                    {
                        "id": (
                            f"/subscriptions/{m.subscription_id}/resourceGroups/{m.resource_group}"
                            f"/providers/Microsoft.Network/networkInterfaces/{m.name}-nic"
                        ),
                        "properties": {"primary": True, "deleteOption": "Delete"},
                    }
                ]
            },
            "provisioningState": "Succeeded",
            "timeCreated": CREATED,
        }
        tags = _tags(vm.tags)
        if vm.vmss:
            # As recorded: a Flexible member's id and scale-set id carry the group upper-cased.
            props["virtualMachineScaleSet"] = {
                "id": (
                    f"/subscriptions/{m.subscription_id}/resourceGroups/{m.resource_group.upper()}"
                    f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vm.vmss}"
                )
            }
            tags.setdefault("VirtualMachineProfileTimeCreated", "6/1/2024 8:00:00 AM +00:00")
        body: dict[str, Any] = {
            "name": m.name,
            "id": m.id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": m.location,
            "tags": tags,  # "{}" when empty, as recorded
        }
        ident = identity_block(self.fleet, vm)
        if ident:
            body["identity"] = ident
        body["properties"] = props
        return body

    def vmss(self, ss: VmssSpec) -> dict[str, Any]:
        cached = self._vmss_cache.get(ss.resource_id)
        if cached is not None:
            return cached
        props: dict[str, Any] = {
            "orchestrationMode": ss.orchestration,
            "provisioningState": "Succeeded",
            "uniqueId": _uid(ss),
            "timeCreated": CREATED,
        }
        if ss.orchestration == "Uniform":
            props["upgradePolicy"] = {"mode": "Manual"}
            props["overprovision"] = False
            props["singlePlacementGroup"] = True
            props["virtualMachineProfile"] = {
                "osProfile": {**os_profile(ss.name, ss.os, scale_set=True), "computerNamePrefix": ss.name},
                "storageProfile": {
                    "imageReference": image(ss.os),
                    "osDisk": {
                        "osType": "Windows" if ss.os == "windows" else "Linux",
                        "createOption": "FromImage",
                        "caching": "ReadWrite",
                        "managedDisk": {"storageAccountType": "Premium_LRS"},
                        "diskSizeGB": 30,
                    },
                },
            }
            del props["virtualMachineProfile"]["osProfile"]["computerName"]
        else:
            props["platformFaultDomainCount"] = 1
        body: dict[str, Any] = {
            "name": ss.name,
            "id": ss.resource_id,
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "location": ss.location,
            "sku": {"name": ss.size, "tier": "Standard", "capacity": ss.instances},
        }
        body["tags"] = _tags(ss.tags)  # "{}" when empty, as recorded
        ident = identity_block(self.fleet, ss)
        if ident:
            body["identity"] = ident
        body["properties"] = props
        self._vmss_cache[ss.resource_id] = body
        return body

    def vmss_vm(self, m: Machine, *, instance_view: bool = False) -> dict[str, Any]:
        """A Uniform instance (``virtualMachineScaleSets/{ss}/virtualMachines/{id}``)."""
        base = self._vm_cache.get(m.id)
        if base is None:
            base = self._vm_cache[m.id] = self._vmss_vm_static(m)
        if not instance_view:
            return base
        name = base["properties"]["osProfile"]["computerName"]
        return {**base, "properties": {**base["properties"], "instanceView": power_instance_view(m, name)}}

    def _vmss_vm_static(self, m: Machine) -> dict[str, Any]:
        assert m.vmss is not None and m.instance_id is not None
        ss = m.vmss
        computer = f"{ss.name}{int(m.instance_id):06x}"
        body: dict[str, Any] = {
            "name": m.name,
            "id": m.id,
            "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
            "location": m.location,
            "instanceId": m.instance_id,
            "sku": {"name": ss.size, "tier": "Standard"},
        }
        body["tags"] = _tags(ss.tags)
        body["properties"] = {
            "latestModelApplied": True,
            "modelDefinitionApplied": "VirtualMachineScaleSet",
            "vmId": _uid(ss, m.instance_id),
            "hardwareProfile": {"vmSize": ss.size},
            "storageProfile": {"imageReference": image(m.os), "osDisk": os_disk(m), "dataDisks": []},
            "osProfile": os_profile(computer, m.os, scale_set=True),
            "networkProfile": {
                "networkInterfaces": [
                    {
                        "id": (
                            f"{m.id}/networkInterfaces/{ss.name}-nic"
                        ),
                        "properties": {"primary": True},
                    }
                ]
            },
            "provisioningState": "Succeeded",
            "timeCreated": CREATED,
        }
        return body

    # ------------------------------------------------------------------ resources
    @staticmethod
    def resource(entry: ResourceEntry, *, with_tags: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": entry.id,
            "name": entry.name,
            "type": entry.type,
            "location": entry.location,
        }
        if with_tags and entry.tags:
            body["tags"] = _tags(entry.tags)
        return body

    @staticmethod
    def resource_group(sub: SubscriptionSpec, rg: ResourceGroupSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"/subscriptions/{sub.id}/resourceGroups/{rg.name}",
            "name": rg.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": rg.location,
            "properties": {"provisioningState": "Succeeded"},
        }
        if rg.tags:
            body["tags"] = _tags(rg.tags)
        return body

    def subscription(self, sub: SubscriptionSpec) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.id}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": sub.id,
            "tenantId": self.fleet.sim.tenant_id,
            "displayName": sub.name,
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
        }

    def tenant(self) -> dict[str, Any]:
        t = self.fleet.sim.tenant_id
        return {
            "id": f"/tenants/{t}",
            "tenantId": t,
            "tenantCategory": "Home",
            "displayName": "Local Azure",
            "defaultDomain": "localazure.onmicrosoft.com",
            "domains": ["localazure.onmicrosoft.com"],
        }


def _uid(ss: VmssSpec, instance: str = "") -> str:
    return stable_uuid("vmss", ss.resource_id, instance)
