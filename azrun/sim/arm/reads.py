"""Read-only ARM handlers: subscriptions, resource groups, generic resources, VMs, scale sets.

Each handler resolves its entities (raising ARM's 404s), takes Compute tokens where Compute
would, and answers one page. Listings come from indexes built at start, never a fleet scan
per VM.
"""

from __future__ import annotations

from azrun.sim.arm import errors as err
from azrun.sim.arm import policies as pol
from azrun.sim.arm.context import Call, Reply, Service, listing, page
from azrun.sim.arm.filter import parse_resource_filter, parse_vm_filter, vm_matches
from azrun.sim.fleetspec import stable_uuid
from azrun.sim.render import Encoded, encoded_listing


def _top(call: Call, default: int) -> int:
    raw = call.q("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError as exc:
        raise err.invalid_parameter("The value of parameter $top is invalid.", "$top") from exc
    if top <= 0:
        raise err.invalid_parameter("The value of parameter $top is invalid.", "$top")
    return min(top, 1000)


async def list_tenants(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    return Reply(200, listing([svc.render.tenant()], None))


async def list_subscriptions(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    caller = call.caller or ""
    subs = [s for s in svc.world.spec.subscriptions if svc.world.role(s.id, caller) != "none"]
    chunk, nxt = page(call, subs, svc.world.spec.sim.page_size)
    return Reply(200, listing([svc.render.subscription(s) for s in chunk], nxt))


async def get_subscription(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    return Reply(200, svc.render.subscription(svc.subscription(p["sub"])))


async def list_groups(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    sub = svc.subscription(p["sub"])
    groups = [g for (s, _), g in svc.world.groups.items() if s == sub.id.lower()]
    chunk, nxt = page(call, groups, _top(call, svc.world.spec.sim.page_size))
    return Reply(200, listing([svc.render.resource_group(sub, g) for g in chunk], nxt))


async def get_group(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    sub, group = svc.group(p["sub"], p["rg"])
    if call.method == "HEAD":
        return Reply(204)
    return Reply(200, svc.render.resource_group(sub, group))


async def list_resources(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    """``/resources`` of a subscription or group; tags hidden when filtered by tag name+value."""
    if "rg" in p:
        svc.group(p["sub"], p["rg"])
    else:
        svc.subscription(p["sub"])
    flt = parse_resource_filter(call.q("$filter"))
    sid = p["sub"].lower()
    if flt.tag is not None:
        matched = svc.world.tag_index.get(sid, {}).get((flt.tag[0].lower(), flt.tag[1]), [])
    else:
        matched = [e for e in svc.world.resources_by_sub.get(sid, []) if flt.matches(e)]
    if "rg" in p:
        rg = p["rg"].lower()
        matched = [e for e in matched if e.resource_group.lower() == rg]
    chunk, nxt = page(call, matched, _top(call, svc.world.spec.sim.page_size))
    tags = not flt.hides_tags
    return Reply(200, encoded_listing([svc.render.resource_json(e, with_tags=tags) for e in chunk], nxt))


async def get_vm(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = svc.vm(p["sub"], p["rg"], p["vm"])
    svc.compute(call, pol.VM_GET, subscription=m.subscription_id, resource=m.id.lower())
    return Reply(200, Encoded(svc.render.machine_json(m, instance_view=call.expand_instance_view())))


async def vm_instance_view(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = svc.vm(p["sub"], p["rg"], p["vm"])
    svc.compute(call, pol.VM_GET, subscription=m.subscription_id, resource=m.id.lower())
    return Reply(200, svc.render.vm(m, instance_view=True)["properties"]["instanceView"])


async def list_vms(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    """VMs of a group (or, without ``rg``, the whole subscription: ListAll).

    As recorded: the model without ``instanceView`` (unless ``$expand=instanceView``);
    ``statusOnly=true`` answers status stubs without the model (no tags, OS, identity or scale
    set); a resource group's listing carries ``HighCostGet``, ListAll no rate-limit header.
    """
    vmss_id = parse_vm_filter(call.q("$filter"))
    if "rg" in p:
        svc.group(p["sub"], p["rg"])
        vms = svc.world.vms_by_group.get((p["sub"].lower(), p["rg"].lower()), [])
    else:
        svc.subscription(p["sub"])
        vms = svc.world.vms_by_sub.get(p["sub"].lower(), [])
    svc.compute(call, pol.VM_LIST if "rg" in p else pol.VM_LIST_ALL, subscription=p["sub"], resource=None)
    if vmss_id is not None:
        vms = [m for m in vms if vm_matches(m, vmss_id)]
    chunk, nxt = page(call, vms, svc.world.spec.sim.page_size)
    if (call.q("statusOnly") or "").lower() == "true":
        return Reply(200, encoded_listing([svc.render.status_json(m) for m in chunk], nxt))
    view = call.expand_instance_view()
    return Reply(200, encoded_listing([svc.render.machine_json(m, instance_view=view) for m in chunk], nxt))


async def get_vmss(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    ss = svc.vmss(p["sub"], p["rg"], p["vmss"])
    svc.compute(call, pol.VMSS_GET, subscription=ss.spec.subscription_id, resource=ss.spec.resource_id.lower())
    return Reply(200, svc.render.vmss(ss.spec))


async def list_vmss(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    if "rg" in p:
        svc.group(p["sub"], p["rg"])
        prefix = f"/subscriptions/{p['sub']}/resourcegroups/{p['rg']}/".lower()
    else:
        svc.subscription(p["sub"])
        prefix = f"/subscriptions/{p['sub']}/".lower()
    sets = [ss.spec for key, ss in svc.world.scale_sets.items() if key.startswith(prefix)]
    chunk, nxt = page(call, sets, svc.world.spec.sim.page_size)
    return Reply(200, listing([svc.render.vmss(s) for s in chunk], nxt))


async def list_vmss_vms(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    """Instances of a Uniform scale set (Flexible members are listed as VMs)."""
    ss = svc.vmss(p["sub"], p["rg"], p["vmss"])
    if ss.spec.orchestration != "Uniform":
        raise err.ArmError(
            400,
            "OperationNotAllowed",
            f"Operation 'VirtualMachineScaleSetVMs.List' is not allowed on Virtual Machine Scale Set "
            f"'{ss.spec.name}' since it is a Virtual Machine Scale Set with Flexible orchestration mode.",
        )
    chunk, nxt = page(call, ss.members, svc.world.spec.sim.page_size)
    svc.compute(
        call,
        pol.VMSS_LIST,
        subscription=ss.spec.subscription_id,
        resource=ss.spec.resource_id.lower(),
        charge=len(chunk),
    )
    view = call.expand_instance_view()
    return Reply(200, encoded_listing([svc.render.machine_json(m, instance_view=view) for m in chunk], nxt))


async def get_vmss_vm(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = svc.instance(p["sub"], p["rg"], p["vmss"], p["instance"])
    svc.compute(call, pol.VMSS_VM_VIEW, subscription=m.subscription_id, resource=m.id.lower())
    return Reply(200, Encoded(svc.render.machine_json(m, instance_view=call.expand_instance_view())))


async def vmss_vm_instance_view(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = svc.instance(p["sub"], p["rg"], p["vmss"], p["instance"])
    svc.compute(call, pol.VMSS_VM_VIEW, subscription=m.subscription_id, resource=m.id.lower())
    view = svc.render.vmss_vm(m, instance_view=True)["properties"]["instanceView"]
    domain = int(m.instance_id or 0) % 5
    # a scale-set VM's own instance view also places it (recorded)
    return Reply(200, {"platformUpdateDomain": domain, "platformFaultDomain": domain % 2,
                       "placementGroupId": stable_uuid("pg", m.id), **view})
