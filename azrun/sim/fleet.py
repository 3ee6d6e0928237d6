"""The fleet file: what the local Azure holds, as plain frozen data.

A fleet file is TOML::

    [sim]
    tenant_id = "..."                 # default: a fixed UUID
    token_ttl_s = 3600                # expires_in of minted tokens
    agent_upload_interval_s = 15      # the Linux handler appends to blobs every 15 s
    agent_status_interval_s = 15      # and refreshes the instance view (last 4 KB) as often
    agent_start_delay_s = 0.2         # time from PUT to the script starting
    identical_put_reexecutes = false  # Azure: an identical re-PUT does not run again
    page_size = 100                   # items per page before a nextLink
    current_vm = "rg-ops/vm-ops-01"   # the VM whose IMDS the local IMDS is ("<rg>/<vm>")
    seed = 1

    [limits]                          # every limit, or enabled = false
    [faults]                          # see Faults

    [[subscription]]
    id = "..."; name = "..."
    [subscription.access]             # principal name or object id -> "owner" | "reader" | "none"
    [[subscription.identity]]         # user-assigned managed identities
    name = "id-azrun"; resource_group = "rg-ops"; storage_role = "contributor"
    [[subscription.resource_group]]
    name = "rg-web"; location = "westeurope"
    [[subscription.resource_group.vm]]
    name = "vm-web-{i:02d}"; count = 3; os = "linux"; power = "running"
    tags = { env = "prod" }; system_identity = true; user_identities = ["id-azrun"]
    [[subscription.resource_group.vmss]]
    name = "vmss-api"; orchestration = "Uniform"; instances = 3; tags = {...}
    instance_power = { "2" = "deallocated" }

Everything a test or a benchmark may vary is here, so one file describes one world.
Identifiers (vmId, principal ids, client ids) derive from names with uuid5, so a world is
reproducible from its file alone.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

_NS = uuid.UUID("6f1d3c1e-4b8a-4f5e-9d7a-0a2b3c4d5e6f")
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000a2a1"


def stable_uuid(*parts: str) -> str:
    """A UUID that depends only on ``parts``: ids stay the same across restarts."""
    return str(uuid.uuid5(_NS, "/".join(p.lower() for p in parts)))


@dataclass(frozen=True, slots=True)
class Limits:
    """Throttling limits; pairs are (bucket capacity, refill per second)."""

    enabled: bool = True
    arm_reads: tuple[float, float] = (250, 25)
    arm_writes: tuple[float, float] = (200, 10)
    arm_deletes: tuple[float, float] = (200, 10)
    # Compute, per VM (resource) and per subscription; refills are per *minute* in the docs.
    vm_update_resource: tuple[float, float] = (12, 4 / 60)
    vm_get_resource: tuple[float, float] = (36, 12 / 60)
    vm_operation_resource: tuple[float, float] = (45, 15 / 60)
    vm_update_subscription: tuple[float, float] = (1500, 500 / 60)
    vm_get_subscription: tuple[float, float] = (24000, 8000 / 60)
    vm_list_subscription: tuple[float, float] = (900, 300 / 60)
    vm_operation_subscription: tuple[float, float] = (15000, 5000 / 60)
    vmss_vm_update_subscription: tuple[float, float] = (1500, 500 / 60)
    vmss_vm_get_subscription: tuple[float, float] = (6000, 2000 / 60)
    imds_rps: float = 20
    imds_concurrency: int = 5


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection; every choice is drawn from a generator seeded with ``seed``."""

    seed: int = 1
    arm_error_rate: float = 0.0  # share of ARM requests answered 500/503
    arm_reset_rate: float = 0.0  # share of ARM requests whose connection is reset
    arm_latency_ms: float = 0.0  # added to every ARM answer
    arm_conflict_rate: float = 0.0  # share of run-command PUTs answered 409 Conflict
    arm_throttle_rate: float = 0.0  # share of ARM requests answered 429 (a "429 storm")
    imds_error_sequence: tuple[int, ...] = ()  # statuses the next IMDS token requests answer
    imds_latency_ms: float = 20.0  # each IMDS token request takes this long (concurrency is real)
    hung_agents: tuple[str, ...] = ()  # VM names (or "vmss/instance") whose agent never finishes
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
    agent_start_delay_s: float = 0.2
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


def _tags(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise FleetError(f"tags must be a table, got {raw!r}")
    return tuple((str(k), str(v)) for k, v in raw.items())


def _pair(raw: Any, default: tuple[float, float]) -> tuple[float, float]:
    if raw is None:
        return default
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return (float(raw[0]), float(raw[1]))
    raise FleetError(f"a limit is [capacity, refill_per_s], got {raw!r}")


def _limits(raw: dict[str, Any]) -> Limits:
    base = Limits()
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(base, key):
            raise FleetError(f"unknown [limits] key {key!r}")
        if key == "enabled":
            kwargs[key] = bool(value)
        elif key in ("imds_rps",):
            kwargs[key] = float(value)
        elif key == "imds_concurrency":
            kwargs[key] = int(value)
        else:
            kwargs[key] = _pair(value, getattr(base, key))
    return replace(base, **kwargs)


def parse_faults(raw: dict[str, Any], base: Faults | None = None) -> Faults:
    """Build a Faults from a ``[faults]`` table (also used by the admin API)."""
    base = base or Faults()
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(base, key):
            raise FleetError(f"unknown [faults] key {key!r}")
        if key == "imds_error_sequence":
            kwargs[key] = tuple(int(v) for v in value)
        elif key == "hung_agents":
            kwargs[key] = tuple(str(v) for v in value)
        elif key == "deallocate_at":
            kwargs[key] = tuple((str(v["vm"]), float(v["at_s"])) for v in value)
        elif key == "seed":
            kwargs[key] = int(value)
        else:
            kwargs[key] = float(value)
    return replace(base, **kwargs)


def parse_limits(raw: dict[str, Any]) -> Limits:
    """Build Limits from a ``[limits]`` table (also used by the admin API)."""
    return _limits(raw)


def _names(template: str, count: int) -> list[str]:
    if count == 1 and "{" not in template:
        return [template]
    return [template.format(i=i) for i in range(1, count + 1)]


def _sim_settings(raw: dict[str, Any]) -> SimSettings:
    base = SimSettings()
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(base, key):
            raise FleetError(f"unknown [sim] key {key!r}")
        kwargs[key] = type(getattr(base, key))(value) if getattr(base, key) is not None else value
    return replace(base, **kwargs)


def load_fleet(source: str | Path | dict[str, Any]) -> FleetSpec:
    """Parse a fleet from a TOML file path, TOML text (when it contains a newline) or a dict."""
    if isinstance(source, dict):
        raw = source
    elif isinstance(source, Path) or "\n" not in source:
        raw = tomllib.loads(Path(source).read_text(encoding="utf-8"))
    else:
        raw = tomllib.loads(source)
    try:
        return _build(raw)
    except (KeyError, TypeError) as exc:
        raise FleetError(f"malformed fleet: {exc}") from exc


def _build(raw: dict[str, Any]) -> FleetSpec:
    subs: list[SubscriptionSpec] = []
    vms: list[VmSpec] = []
    scale_sets: list[VmssSpec] = []
    for s in raw.get("subscription", []):
        sub_id = str(s["id"])
        identities = tuple(
            Identity(
                name=str(i["name"]),
                subscription_id=sub_id,
                resource_group=str(i.get("resource_group", "rg-identities")),
                storage_role=str(i.get("storage_role", "contributor")),
            )
            for i in s.get("identity", [])
        )
        groups: list[ResourceGroupSpec] = []
        for g in s.get("resource_group", []):
            rg = ResourceGroupSpec(str(g["name"]), str(g.get("location", "westeurope")), _tags(g.get("tags")))
            groups.append(rg)
            for v in g.get("vm", []):
                for name in _names(str(v["name"]), int(v.get("count", 1))):
                    vms.append(_vm(v, name, sub_id, rg))
            for ss in g.get("vmss", []):
                scale_sets.append(_vmss(ss, sub_id, rg))
                if str(ss.get("orchestration", "Uniform")).lower() == "flexible":
                    vms.extend(_flex_members(ss, sub_id, rg))
        subs.append(
            SubscriptionSpec(
                id=sub_id,
                name=str(s.get("name", sub_id)),
                resource_groups=tuple(groups),
                identities=identities,
                access=tuple((str(k), str(v)) for k, v in s.get("access", {}).items()),
            )
        )
    return FleetSpec(
        sim=_sim_settings(raw.get("sim", {})),
        limits=_limits(raw.get("limits", {})),
        faults=parse_faults(raw.get("faults", {})),
        subscriptions=tuple(subs),
        vms=tuple(vms),
        scale_sets=tuple(scale_sets),
    )


def _vm(v: dict[str, Any], name: str, sub_id: str, rg: ResourceGroupSpec) -> VmSpec:
    return VmSpec(
        name=name,
        subscription_id=sub_id,
        resource_group=rg.name,
        location=str(v.get("location", rg.location)),
        os=str(v.get("os", "linux")).lower(),
        power=str(v.get("power", "running")).lower(),
        tags=_tags(v.get("tags")),
        system_identity=bool(v.get("system_identity", False)),
        user_identities=tuple(str(x) for x in v.get("user_identities", [])),
        size=str(v.get("size", "Standard_D2s_v5")),
    )


def _vmss(ss: dict[str, Any], sub_id: str, rg: ResourceGroupSpec) -> VmssSpec:
    orchestration = "Flexible" if str(ss.get("orchestration", "Uniform")).lower() == "flexible" else "Uniform"
    return VmssSpec(
        name=str(ss["name"]),
        subscription_id=sub_id,
        resource_group=rg.name,
        location=str(ss.get("location", rg.location)),
        orchestration=orchestration,
        instances=int(ss.get("instances", 2)),
        os=str(ss.get("os", "linux")).lower(),
        tags=_tags(ss.get("tags")),
        instance_power=tuple((str(k), str(v).lower()) for k, v in ss.get("instance_power", {}).items()),
        system_identity=bool(ss.get("system_identity", False)),
        user_identities=tuple(str(x) for x in ss.get("user_identities", [])),
        size=str(ss.get("size", "Standard_D2s_v5")),
    )


def _flex_members(ss: dict[str, Any], sub_id: str, rg: ResourceGroupSpec) -> list[VmSpec]:
    """Flexible members are ordinary VMs named ``<vmss>_<8 hex>`` like Azure names them."""
    name = str(ss["name"])
    power = {str(k): str(v).lower() for k, v in ss.get("instance_power", {}).items()}
    members = []
    for i in range(int(ss.get("instances", 2))):
        suffix = stable_uuid("flex", sub_id, rg.name, name, str(i)).replace("-", "")[:8]
        members.append(
            VmSpec(
                name=f"{name}_{suffix}",
                subscription_id=sub_id,
                resource_group=rg.name,
                location=str(ss.get("location", rg.location)),
                os=str(ss.get("os", "linux")).lower(),
                power=power.get(str(i), "running"),
                tags=_tags(ss.get("member_tags")),
                system_identity=bool(ss.get("system_identity", False)),
                user_identities=tuple(str(x) for x in ss.get("user_identities", [])),
                vmss=name,
                size=str(ss.get("size", "Standard_D2s_v5")),
            )
        )
    return members
