"""The fleet file: what the local Azure holds, as plain frozen data.

A fleet file is TOML::

    [sim]
    tenant_id = "..."                 # default: a fixed UUID
    token_ttl_s = 3600                # expires_in of minted tokens
    agent_upload_interval_s = 15      # the Linux handler appends to blobs every 15 s
    agent_status_interval_s = 15      # and refreshes the instance view (last 4 KB) as often
    profile = "fast"                  # or "realistic": recorded latencies (azrun/sim/timing.py)
    agent_start_delay_s = 0.2         # time from PUT to the script starting (default: the profile's)
    handler_install_s = [60, 120]     # first run command per machine installs the handler
    delete_duration_s = 0.3           # how long a DELETE lasts (or [low, high]; fast default 0)
    agent_status_cadence = false      # state changes wait for the agent's 15 s report
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
    system_identity_storage_role = "contributor"   # default "none": a role must be granted
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from azrun.sim.fleettypes import (
    DEFAULT_TENANT,
    Faults,
    FleetError,
    FleetSpec,
    Identity,
    Limits,
    ResourceGroupSpec,
    SimSettings,
    SubscriptionSpec,
    VmSpec,
    VmssSpec,
    stable_uuid,
)

__all__ = [
    "DEFAULT_TENANT",
    "Faults",
    "FleetError",
    "FleetSpec",
    "Identity",
    "Limits",
    "ResourceGroupSpec",
    "SimSettings",
    "SubscriptionSpec",
    "VmSpec",
    "VmssSpec",
    "load_fleet",
    "parse_faults",
    "parse_limits",
    "stable_uuid",
]


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
        elif key == "header_format":
            if str(value) not in ("current", "legacy"):
                raise FleetError(f"[limits] header_format must be \"current\" or \"legacy\", got {value!r}")
            kwargs[key] = str(value)
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
        elif key in ("hung_agents", "agents_never_start", "agents_not_ready", "extensions_busy"):
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


_PAIRS = ("handler_install_s", "delete_duration_s")


def _sim_settings(raw: dict[str, Any]) -> SimSettings:
    base = SimSettings()
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(base, key):
            raise FleetError(f"unknown [sim] key {key!r}")
        if key in _PAIRS:
            kwargs[key] = _span(key, value)
        elif key == "agent_start_delay_s":
            kwargs[key] = float(value)
        elif key == "agent_status_cadence":
            kwargs[key] = bool(value)
        elif key == "profile":
            if value not in ("fast", "realistic"):
                raise FleetError(f'[sim] profile must be "fast" or "realistic", got {value!r}')
            kwargs[key] = str(value)
        else:
            kwargs[key] = type(getattr(base, key))(value) if getattr(base, key) is not None else value
    return replace(base, **kwargs)


def _span(key: str, value: Any) -> tuple[float, float]:
    """A duration: one number, or [low, high] to draw from."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value), float(value))
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
        if 0 <= low <= high:
            return (low, high)
    raise FleetError(f"[sim] {key} is seconds or [low, high] seconds, got {value!r}")


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
        system_storage_role=_role(v),
        user_identities=tuple(str(x) for x in v.get("user_identities", [])),
        size=str(v.get("size", "Standard_D2s_v5")),
    )


_ROLES = ("contributor", "reader", "none")


def _role(entry: dict[str, Any]) -> str:
    """``system_identity_storage_role``: what the system identity may do on the output container
    (default none: in Azure a role must be granted)."""
    role = str(entry.get("system_identity_storage_role", "none")).lower()
    if role not in _ROLES:
        raise FleetError(f"system_identity_storage_role must be one of {', '.join(_ROLES)}, got {role!r}")
    return role


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
        system_storage_role=_role(ss),
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
                system_storage_role=_role(ss),
                user_identities=tuple(str(x) for x in ss.get("user_identities", [])),
                vmss=name,
                size=str(ss.get("size", "Standard_D2s_v5")),
            )
        )
    return members
