"""The fleet's data types: frozen dataclasses for everything a fleet file describes.

``fleetspec.py`` parses a TOML file into these; the rest of the simulator reads them.
Identifiers (vmId, principal ids, client ids) derive from names with uuid5, so a world is
reproducible from its file alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

_NS = uuid.UUID("6f1d3c1e-4b8a-4f5e-9d7a-0a2b3c4d5e6f")
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000a2a1"


def stable_uuid(*parts: str) -> str:
    """A UUID that depends only on ``parts``: ids stay the same across restarts."""
    return str(uuid.uuid5(_NS, "/".join(p.lower() for p in parts)))


@dataclass(frozen=True, slots=True)
class Limits:
    """Throttling limits; pairs are (bucket capacity, refill per second)."""

    enabled: bool = True
    header_format: str = "current"  # "current" | "legacy" (windowed ``...3Min;N,...30Min;N``)
    arm_reads: tuple[float, float] = (250, 25)
    arm_writes: tuple[float, float] = (200, 10)
    arm_deletes: tuple[float, float] = (200, 10)
    # Compute, per VM (resource) and per subscription; refills are per *minute* in the docs.
    # Capacities are the highest counts recorded + 1 (docs/architecture.md).
    vm_update_resource: tuple[float, float] = (12, 4 / 60)
    vm_get_resource: tuple[float, float] = (36, 12 / 60)
    vm_operation_resource: tuple[float, float] = (60, 20 / 60)
    vm_update_subscription: tuple[float, float] = (1500, 500 / 60)
    vm_get_subscription: tuple[float, float] = (24000, 8000 / 60)
    vm_list_subscription: tuple[float, float] = (900, 300 / 60)
    vm_operation_subscription: tuple[float, float] = (15000, 5000 / 60)
    vmss_vm_update_resource: tuple[float, float] = (12, 4 / 60)
    vmss_vm_update_subscription: tuple[float, float] = (2000, 2000 / 180)
    vmss_vm_delete_resource: tuple[float, float] = (12, 4 / 60)
    vmss_vm_delete_subscription: tuple[float, float] = (2000, 2000 / 180)
    vmss_vm_get_resource: tuple[float, float] = (36, 12 / 60)
    vmss_vm_get_subscription: tuple[float, float] = (6000, 2000 / 60)
    vmss_batched_subscription: tuple[float, float] = (6000, 2000 / 60)
    vmss_views_subscription: tuple[float, float] = (30000, 10000 / 60)
    vmss_actions_subscription: tuple[float, float] = (1500, 500 / 60)
    vmss_list_resource: tuple[float, float] = (30, 10 / 60)
    vmss_list_subscription: tuple[float, float] = (1080, 360 / 60)
    vmss_get_resource: tuple[float, float] = (36, 12 / 60)
    vmss_get_subscription: tuple[float, float] = (2400, 800 / 60)
    imds_rps: float = 20
    imds_concurrency: int = 5


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection; every choice is drawn from a generator seeded with ``seed``."""

    seed: int = 1
    arm_error_rate: float = 0.0  # share of ARM requests answered 500/503
    arm_reset_rate: float = 0.0  # share of ARM requests whose connection is reset
    arm_latency_ms: float = 0.0  # added to every ARM answer
    arm_lost_reply_rate: float = 0.0  # share of ARM writes applied whose answer is lost (500 or reset)
    arm_conflict_rate: float = 0.0  # share of run-command PUTs answered 409 Conflict
    extensions_busy: tuple[str, ...] = ()  # machines where another extension operation is in progress (409)
    arm_throttle_rate: float = 0.0  # share of ARM requests answered 429 (a "429 storm")
    imds_error_sequence: tuple[int, ...] = ()  # statuses the next IMDS token requests answer
    imds_latency_ms: float = 20.0  # each IMDS token request takes this long (concurrency is real)
    hung_agents: tuple[str, ...] = ()  # VM names (or "vmss/instance") whose agent never finishes
    agents_never_start: tuple[str, ...] = ()  # their agent never picks a run command up (Pending)
    agents_not_ready: tuple[str, ...] = ()  # VM agent not ready: nothing starts, DELETE never ends
    deallocate_at: tuple[tuple[str, float], ...] = ()  # (vm name, seconds after start)
    blob_append_failure_rate: float = 0.0  # share of agent appends that fail (retried next tick)


@dataclass(frozen=True, slots=True)
class Identity:
    """A user-assigned managed identity."""

    name: str
    subscription_id: str
    resource_group: str
    storage_role: str = "contributor"  # "contributor" | "reader" | "none" on the output container

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )

    @property
    def client_id(self) -> str:
        return stable_uuid("client", self.resource_id)

    @property
    def principal_id(self) -> str:
        return stable_uuid("principal", self.resource_id)


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A virtual machine (standalone, or a Flexible scale-set member when ``vmss`` is set)."""

    name: str
    subscription_id: str
    resource_group: str
    location: str
    os: str = "linux"
    power: str = "running"  # running | stopped | deallocated
    tags: tuple[tuple[str, str], ...] = ()
    system_identity: bool = False
    # The system-assigned identity's role on the output container: none unless granted, as in Azure.
    system_storage_role: str = "none"
    user_identities: tuple[str, ...] = ()  # Identity names in the same subscription
    vmss: str | None = None  # name of the Flexible scale set this VM belongs to
    size: str = "Standard_D2s_v5"

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def vm_id(self) -> str:
        return stable_uuid("vmid", self.resource_id)

    @property
    def principal_id(self) -> str:
        """Object id of the VM's system-assigned identity."""
        return stable_uuid("principal", self.resource_id)

    @property
    def system_client_id(self) -> str:
        return stable_uuid("client", self.resource_id)


@dataclass(frozen=True, slots=True)
class VmssSpec:
    """A scale set: Uniform (instances live under it) or Flexible (members are VMs)."""

    name: str
    subscription_id: str
    resource_group: str
    location: str
    orchestration: str = "Uniform"  # Uniform | Flexible
    instances: int = 2
    os: str = "linux"
    tags: tuple[tuple[str, str], ...] = ()
    instance_power: tuple[tuple[str, str], ...] = ()  # instance id -> power state
    system_identity: bool = False
    system_storage_role: str = "none"
    user_identities: tuple[str, ...] = ()
    size: str = "Standard_D2s_v5"

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        )

    def power_of(self, instance_id: str) -> str:
        return dict(self.instance_power).get(instance_id, "running")


@dataclass(frozen=True, slots=True)
class ResourceGroupSpec:
    name: str
    location: str
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    id: str
    name: str
    resource_groups: tuple[ResourceGroupSpec, ...] = ()
    identities: tuple[Identity, ...] = ()
    # principal (identity name, "system:<vm name>", or object id) -> "owner" | "reader" | "none";
    # a principal not listed is an owner (the local Azure is permissive unless told otherwise).
    access: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SimSettings:
    tenant_id: str = DEFAULT_TENANT
    token_ttl_s: int = 3600
    agent_upload_interval_s: float = 15.0
    agent_status_interval_s: float = 15.0
    profile: str = "fast"  # "fast" | "realistic" (azrun/sim/timing.py); explicit settings win
    agent_start_delay_s: float | None = None  # None: the profile's (fast 0.2 s; realistic: recorded)
    handler_install_s: tuple[float, float] | None = None  # first-run install (realistic: 60-120 s)
    delete_duration_s: tuple[float, float] | None = None  # DELETE lasts (fast 0.3 s; realistic: recorded)
    agent_status_cadence: bool | None = None  # state waits for the 15 s report (realistic: yes)
    identical_put_reexecutes: bool = False
    page_size: int = 100
    current_vm: str | None = None  # "<resource group>/<vm name>" in the first subscription
    seed: int = 1


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """One whole local Azure world."""

    sim: SimSettings = field(default_factory=SimSettings)
    limits: Limits = field(default_factory=Limits)
    faults: Faults = field(default_factory=Faults)
    subscriptions: tuple[SubscriptionSpec, ...] = ()
    vms: tuple[VmSpec, ...] = ()
    scale_sets: tuple[VmssSpec, ...] = ()

    def identity(self, subscription_id: str, name: str) -> Identity | None:
        for sub in self.subscriptions:
            if sub.id == subscription_id:
                for ident in sub.identities:
                    if ident.name == name:
                        return ident
        return None

    def current_vm_spec(self) -> VmSpec | None:
        """The VM the local IMDS belongs to (``sim.current_vm``), else the first VM."""
        if self.sim.current_vm:
            rg, _, name = self.sim.current_vm.partition("/")
            for vm in self.vms:
                if vm.resource_group.lower() == rg.lower() and vm.name.lower() == name.lower():
                    return vm
            raise FleetError(f"sim.current_vm {self.sim.current_vm!r} is not a VM of the fleet")
        return self.vms[0] if self.vms else None


class FleetError(ValueError):
    """The fleet file is malformed."""
