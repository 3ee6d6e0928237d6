"""The in-memory world behind the local ARM: machines, power states, run commands, operations.

The fleet file is frozen data; this module holds what changes while the simulator runs and
the indexes that keep every request O(1) or O(page) (1,000 VMs at 200 requests/s).

Entities are in ``model.py``; run commands and operations follow the rules of ``arm.runs.RunBook`` (``World.runs``), which also lists
the semantics chosen where the docs are silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from azrun.sim.agent import Agent
from azrun.sim.arm.runs import RunBook
from azrun.sim.arm.throttle import Throttler
from azrun.sim.fleetspec import (
    Faults,
    FleetSpec,
    Identity,
    Limits,
    ResourceGroupSpec,
    SubscriptionSpec,
    VmSpec,
    VmssSpec,
)
from azrun.sim.identity import principal_by_object_id
from azrun.sim.model import TERMINAL, Machine, ResourceEntry, ScaleSet
from azrun.sim.reqlog import RequestLog


def listed_id(vm: VmSpec) -> str:
    """The id Compute answers for a VM: a Flexible member's resource group comes back upper-cased
    (recorded); ids are case-insensitive, so clients must compare them so."""
    if not vm.vmss:
        return vm.resource_id
    return (
        f"/subscriptions/{vm.subscription_id}/resourceGroups/{vm.resource_group.upper()}"
        f"/providers/Microsoft.Compute/virtualMachines/{vm.name}"
    )


class World:
    """Live state of the local Azure, shared by every ARM handler (single event loop)."""

    def __init__(
        self, spec: FleetSpec, *, agent: Agent, reqlog: RequestLog, start_time: float | None = None
    ) -> None:
        self.spec = spec
        self.agent = agent
        self.reqlog = reqlog
        self.start_time = start_time if start_time is not None else time.time()
        self.tenant_id = spec.sim.tenant_id
        self.faults: Faults = spec.faults
        self.rng = random.Random(spec.faults.seed)
        self.throttler = Throttler(spec.limits)
        self.runs = RunBook(agent=agent, spec=spec, hung=self.hung, agent_fault=self.agent_fault)
        self.subscriptions: dict[str, SubscriptionSpec] = {s.id.lower(): s for s in spec.subscriptions}
        self.groups: dict[tuple[str, str], ResourceGroupSpec] = {}
        self.machines: dict[str, Machine] = {}
        self.vms_by_group: dict[tuple[str, str], list[Machine]] = {}
        self.vms_by_sub: dict[str, list[Machine]] = {}
        self.scale_sets: dict[str, ScaleSet] = {}
        self.resources_by_sub: dict[str, list[ResourceEntry]] = {}
        # subscription -> (lowercased tag name, value) -> resources: tag queries without a scan
        self.tag_index: dict[str, dict[tuple[str, str], list[ResourceEntry]]] = {}
        self._roles: dict[tuple[str, str], str] = {}
        # POST /_sim/outage: ARM resets every request until then (monotonic clock); "refuse" also
        # closes the listening socket meanwhile (``refuse_hook``, set by the server).
        self.outage_until = 0.0
        self.refuse_hook: Callable[[float], None] | None = None
        self._deallocated_faults: set[tuple[str, float]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._index()
        self._mark_agents()

    # ----------------------------------------------------------------- indexes
    def _index(self) -> None:
        for sub in self.spec.subscriptions:
            for rg in sub.resource_groups:
                self.groups[(sub.id.lower(), rg.name.lower())] = rg
            for ident in sub.identities:
                key = (sub.id.lower(), ident.resource_group.lower())
                if key not in self.groups:  # identities may live in a group the file does not list
                    loc = sub.resource_groups[0].location if sub.resource_groups else "westeurope"
                    self.groups[key] = ResourceGroupSpec(ident.resource_group, loc)
        for vm in self.spec.vms:
            m = Machine(
                id=listed_id(vm),
                name=vm.name,
                display=vm.name,
                subscription_id=vm.subscription_id,
                resource_group=vm.resource_group,
                location=vm.location,
                os=vm.os,
                power=vm.power,
                host=vm,
            )
            self.machines[m.id.lower()] = m
            self.vms_by_group.setdefault((vm.subscription_id.lower(), vm.resource_group.lower()), []).append(
                m
            )
            self.vms_by_sub.setdefault(vm.subscription_id.lower(), []).append(m)
        for ss in self.spec.scale_sets:
            self.scale_sets[ss.resource_id.lower()] = ScaleSet(ss, self._members(ss))
        for sub in self.spec.subscriptions:
            entries = self.resources_by_sub[sub.id.lower()] = self._resources(sub)
            index = self.tag_index[sub.id.lower()] = {}
            for entry in entries:
                for name, value in entry.tags:
                    index.setdefault((name.lower(), value), []).append(entry)

    def _members(self, ss: VmssSpec) -> tuple[Machine, ...]:
        if ss.orchestration == "Flexible":
            return tuple(
                m
                for m in self.vms_by_group.get((ss.subscription_id.lower(), ss.resource_group.lower()), [])
                if isinstance(m.host, VmSpec) and m.host.vmss == ss.name
            )
        members = []
        for i in range(ss.instances):
            iid = str(i)
            m = Machine(
                id=f"{ss.resource_id}/virtualMachines/{iid}",
                name=f"{ss.name}_{iid}",
                display=f"{ss.name}/{iid}",
                subscription_id=ss.subscription_id,
                resource_group=ss.resource_group,
                location=ss.location,
                os=ss.os,
                power=ss.power_of(iid),
                host=ss,
                vmss=ss,
                instance_id=iid,
            )
            self.machines[m.id.lower()] = m
            members.append(m)
        return tuple(members)

    def _resources(self, sub: SubscriptionSpec) -> list[ResourceEntry]:
        sid = sub.id.lower()
        out: list[ResourceEntry] = []
        for m in self.vms_by_sub.get(sid, []):
            assert isinstance(m.host, VmSpec)
            rid, tags = m.host.resource_id, m.host.tags
            out.append(ResourceEntry(rid, m.name, "Microsoft.Compute/virtualMachines", m.location, m.resource_group, tags))
            # As in Azure, a tag query also finds the VM's NIC, OS disk and public IP, tagged alike.
            base = f"/subscriptions/{m.subscription_id}/resourceGroups/{m.resource_group}/providers"
            for rtype, name in (
                ("Microsoft.Network/networkInterfaces", f"{m.name}-nic"),
                ("Microsoft.Compute/disks", f"{m.name}_OsDisk_1"),
                ("Microsoft.Network/publicIPAddresses", f"{m.name}-ip"),
            ):
                out.append(ResourceEntry(f"{base}/{rtype}/{name}", name, rtype, m.location, m.resource_group, tags))
        out.extend(
            ResourceEntry(
                ss.spec.resource_id,
                ss.spec.name,
                "Microsoft.Compute/virtualMachineScaleSets",
                ss.spec.location,
                ss.spec.resource_group,
                ss.spec.tags,
            )
            for key, ss in self.scale_sets.items()
            if ss.spec.subscription_id.lower() == sid
        )
        out.extend(self._identity_entry(sub, i) for i in sub.identities)
        return out

    def _identity_entry(self, sub: SubscriptionSpec, ident: Identity) -> ResourceEntry:
        rg = self.groups[(sub.id.lower(), ident.resource_group.lower())]
        return ResourceEntry(
            ident.resource_id,
            ident.name,
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            rg.location,
            ident.resource_group,
            (),
        )

    # ----------------------------------------------------------------- lookups
    def machine(self, resource_id: str) -> Machine | None:
        return self.machines.get(resource_id.lower())

    def scale_set(self, sub: str, rg: str, name: str) -> ScaleSet | None:
        rid = f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachinescalesets/{name}"
        return self.scale_sets.get(rid.lower())

    def role(self, subscription_id: str, object_id: str) -> str:
        """RBAC role of a caller on a subscription: owner (default), reader or none."""
        key = (subscription_id.lower(), object_id.lower())
        role = self._roles.get(key)
        if role is None:
            sub = self.subscriptions.get(key[0])
            access = {k.lower(): v.lower() for k, v in (sub.access if sub else ())}
            found = principal_by_object_id(self.spec, object_id)
            role = access.get(key[1]) or (access.get(found[1].lower()) if found else None) or "owner"
            self._roles[key] = role
        return role

    # ----------------------------------------------------------------- live settings
    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings (admin API); re-seed and re-plan deallocations."""
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self._mark_agents()
        if self._scheduler is not None:
            self._scheduler.cancel()
            self._scheduler = asyncio.get_running_loop().create_task(self._deallocate_on_schedule())

    def outage(self, seconds: float, mode: str) -> None:
        """ARM unreachable for ``seconds``: connections reset ("reset") or refused ("refuse")."""
        self.outage_until = time.monotonic() + seconds
        if mode == "refuse" and self.refuse_hook is not None:
            self.refuse_hook(seconds)

    def in_outage(self) -> bool:
        return time.monotonic() < self.outage_until

    def set_limits(self, limits: Limits) -> None:
        """Replace the limits (admin API): every bucket starts full again."""
        self.throttler = Throttler(limits)

    def hung(self, machine: Machine) -> bool:
        return self._named(machine, self.faults.hung_agents)

    def extension_busy(self, machine: Machine) -> bool:
        """Fault: another extension operation is in progress on the machine (PUTs answer 409)."""
        return self._named(machine, self.faults.extensions_busy)

    def _mark_agents(self) -> None:
        for m in self.machines.values():
            m.agent_ready = not self._named(m, self.faults.agents_not_ready)

    def agent_fault(self, machine: Machine) -> str | None:
        """ "not-ready" (nothing starts, DELETE never ends), "never-starts", or None."""
        if self._named(machine, self.faults.agents_not_ready):
            return "not-ready"
        if self._named(machine, self.faults.agents_never_start):
            return "never-starts"
        return None

    @staticmethod
    def _named(machine: Machine, names: tuple[str, ...]) -> bool:
        wanted = {n.lower() for n in names}
        return machine.display.lower() in wanted or machine.name.lower() in wanted

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the deallocate-at-T scheduler (from the app's on_startup)."""
        self._scheduler = asyncio.get_running_loop().create_task(self._deallocate_on_schedule())

    async def aclose(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None

    async def _deallocate_on_schedule(self) -> None:
        plan = sorted(((at, name) for name, at in self.faults.deallocate_at), key=lambda x: x[0])
        for at, name in plan:
            if (name, at) in self._deallocated_faults:
                continue
            await asyncio.sleep(max(0.0, self.start_time + at - time.time()))
            self._deallocated_faults.add((name, at))
            for m in list(self.machines.values()):
                if name.lower() in (m.display.lower(), m.name.lower()):
                    await self.set_power(m, "deallocated")

    async def set_power(self, machine: Machine, power: str) -> None:
        """Change a machine's power state; stopping it kills its scripts (status frozen)."""
        machine.power = power
        if power == "running":
            return
        action = machine.action
        if action is not None and action.execution is not None and not action.execution.finished:
            action.preempted = True
            await self.agent.kill(machine.id, machine.action_extension)
        for rc in list(machine.run_commands.values()):
            if not rc.status.finished:
                if rc.provisioning_state() not in TERMINAL:
                    rc.preempted = True
                await self.agent.kill(machine.id, rc.name)
