"""ARM's REST JSON -> :class:`~azrun.models.Target`: VMs, Flexible members, Uniform instances,
scale sets and power states, read from plain mappings (no SDK models, no I/O).

A VM's model (tags, OS, identity, scale set) and its power state may come from two listings
(``ListAll`` and ``ListAll?statusOnly=true``): :func:`power_by_id` reads only the id and the
power state from the second, and :func:`vm_target` takes the power state as an argument.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azrun.models import Target, TargetKind

__all__ = [
    "ScaleSet",
    "get",
    "instance_target",
    "power_by_id",
    "power_of",
    "power_reason",
    "scale_set_id",
    "scale_set_of",
    "slim_status",
    "slim_vm",
    "tags_of",
    "vm_target",
]

_SUB = re.compile(r"/subscriptions/([^/]+)", re.IGNORECASE)
_RG = re.compile(r"/resourceGroups/([^/]+)", re.IGNORECASE)
_VMSS_NAME = re.compile(r"/virtualMachineScaleSets/([^/]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ScaleSet:
    """A scale set as its listing describes it (what its instances and members inherit)."""

    id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    uniform: bool
    os: str
    tags: dict[str, str]
    identity: tuple[bool, tuple[str, ...]]


def get(body: Any, *path: str) -> Any:
    """``body[path0][path1]...`` over REST-shaped mappings, None when any step is missing."""
    node = body
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def tags_of(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _effective_tags(scale_set: ScaleSet | None, own: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    merged = {k.lower(): (k, v) for k, v in (scale_set.tags if scale_set else {}).items()}
    merged.update({k.lower(): (k, v) for k, v in own.items()})
    return _shared_tags(tuple(sorted(merged.values(), key=lambda kv: kv[0].lower())))


# A selection holds one Target per machine for a whole run (issue 17: 10,000 in one process), and
# most of their short fields repeat (subscription, group, location, OS, power state, tag sets):
# equal values share one object instead of a copy per target parsed out of each JSON body.
_share = sys.intern


@functools.lru_cache(maxsize=4096)
def _shared_tags(tags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The first-seen tuple equal to ``tags`` (bounded: an estate of unique tag sets only misses)."""
    return tags


def _os(props: Any) -> str:
    os_type = get(props, "storageProfile", "osDisk", "osType")
    if os_type:
        return str(os_type).lower()
    if get(props, "osProfile", "windowsConfiguration") is not None:
        return "windows"
    if get(props, "osProfile", "linuxConfiguration") is not None:
        return "linux"
    return "unknown"


def power_of(props: Any) -> str:
    for status in get(props, "instanceView", "statuses") or ():
        code = str(get(status, "code") or "")
        if code.lower().startswith("powerstate/"):
            return code.split("/", 1)[1].lower()
    return "unknown"


def _identity(block: Any) -> tuple[bool, tuple[str, ...]]:
    kind = str(get(block, "type") or "").replace(" ", "").lower()
    users = get(block, "userAssignedIdentities")
    client_ids = sorted(
        str(v["clientId"]) for v in (users.values() if isinstance(users, Mapping) else ()) if get(v, "clientId")
    )
    return "systemassigned" in kind, tuple(client_ids)


def _part(pattern: re.Pattern[str], resource_id: str, default: str = "") -> str:
    m = pattern.search(resource_id)
    return m.group(1) if m else default


def scale_set_id(resource_id: str, scale_set: str | None) -> str:
    if not scale_set:
        return ""
    head = resource_id.split("/providers/", 1)[0]
    return f"{head}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"


def scale_set_of(body: Any) -> ScaleSet:
    rid = str(body["id"])
    props = get(body, "properties")
    profile = get(props, "virtualMachineProfile")
    return ScaleSet(
        id=rid,
        name=str(body.get("name") or _part(_VMSS_NAME, rid)),
        subscription_id=_part(_SUB, rid).lower(),
        resource_group=_part(_RG, rid),
        location=str(body.get("location") or ""),
        uniform=str(get(props, "orchestrationMode") or "Uniform").lower() == "uniform",
        os=_os(profile) if profile is not None else "unknown",
        tags=tags_of(body.get("tags")),
        identity=_identity(body.get("identity")),
    )


def power_by_id(status_bodies: Iterable[Any]) -> dict[str, str]:
    """``{lower-cased resource id: power state}`` from ``ListAll?statusOnly=true`` items.

    Reads only ``id`` and ``properties.instanceView.statuses``: the rest of a statusOnly item is
    not the model on real Azure (tags nil, no OS, identity or scale set).
    """
    return {str(b["id"]).lower(): power_of(get(b, "properties")) for b in status_bodies if get(b, "id")}


def slim_vm(body: Any) -> dict[str, Any]:
    """Only what :func:`vm_target` reads of a ``ListAll`` item, taken as each page arrives: a full
    VM model is several KB of JSON, and holding 10,000 of them until every listing answered was
    the largest memory peak of a whole run (issue 17)."""
    props = get(body, "properties")
    os_profile = get(props, "osProfile")
    return {
        "id": get(body, "id"), "name": get(body, "name"), "location": get(body, "location"),
        "tags": get(body, "tags"), "identity": get(body, "identity"),
        "properties": {
            "virtualMachineScaleSet": {"id": get(props, "virtualMachineScaleSet", "id")},
            "storageProfile": {"osDisk": {"osType": get(props, "storageProfile", "osDisk", "osType")}},
            "osProfile": {k: {} for k in ("windowsConfiguration", "linuxConfiguration")
                          if get(os_profile, k) is not None},
        },
    }


def slim_status(body: Any) -> dict[str, Any]:
    """Only what :func:`power_by_id` reads of a ``statusOnly`` item (see :func:`slim_vm`)."""
    statuses = get(body, "properties", "instanceView", "statuses") or ()
    power = [s for s in statuses if str(get(s, "code") or "").lower().startswith("powerstate/")]
    return {"id": get(body, "id"), "properties": {"instanceView": {"statuses": power}}}


def vm_target(body: Any, sub: str, scale_sets: Mapping[str, ScaleSet], power_state: str) -> Target:
    """A standalone VM or a Flexible member (``properties.virtualMachineScaleSet.id`` set), from
    its model; ``power_state`` comes from wherever the instance view was read."""
    rid, name, props = str(body["id"]), str(body["name"]), get(body, "properties")
    vmss_id = str(get(props, "virtualMachineScaleSet", "id") or "")
    ss = scale_sets.get(vmss_id.lower()) if vmss_id else None
    system, users = _identity(body.get("identity"))
    rg = _part(_RG, rid)
    if ss is not None and ss.resource_group.lower() == rg.lower():
        rg = ss.resource_group  # Flexible members' ids may upper-case it: show the scale set's spelling
    return Target(
        resource_id=rid,
        name=name,
        kind=TargetKind.VMSS_FLEX if vmss_id else TargetKind.VM,
        subscription_id=_share(_part(_SUB, rid, sub).lower()),
        resource_group=_share(rg),
        location=_share(str(body.get("location") or "")),
        os=_share(_os(props)),
        power_state=_share(power_state),
        tags=_effective_tags(ss, tags_of(body.get("tags"))),
        scale_set=(ss.name if ss is not None else _share(_part(_VMSS_NAME, vmss_id))) if vmss_id else None,
        vm_name=name,
        system_identity=system,
        user_identity_client_ids=users,
    )


def instance_target(body: Any, ss: ScaleSet) -> Target:
    """A Uniform instance: identities come from its scale set, the OS from itself or the model."""
    rid, props = str(body["id"]), get(body, "properties")
    instance_id = str(body.get("instanceId") or rid.rsplit("/", 1)[-1])
    os = _os(props)
    return Target(
        resource_id=rid,
        name=f"{ss.name}/{instance_id}",
        kind=TargetKind.VMSS_UNIFORM,
        subscription_id=ss.subscription_id,
        resource_group=ss.resource_group,
        location=_share(str(body.get("location") or ss.location)),
        os=ss.os if os == "unknown" else _share(os),
        power_state=_share(power_of(props)),
        tags=_effective_tags(ss, tags_of(body.get("tags"))),
        scale_set=ss.name,
        instance_id=instance_id,
        vm_name=str(body.get("name") or f"{ss.name}_{instance_id}"),
        system_identity=ss.identity[0],
        user_identity_client_ids=ss.identity[1],
    )


def power_reason(t: Target) -> str:
    noun = "instance" if t.kind is TargetKind.VMSS_UNIFORM else "VM"
    state = "in an unknown power state" if t.power_state == "unknown" else t.power_state
    return f"{noun} is {state} (use --include-stopped to include it)"
