"""Shared pieces of the fleet, run-command and CLI run tests: a fleet file builder and readers of
the simulator's ground truth (executions, request log)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from azrun.models import TargetState

SUB = "11111111-1111-4111-8111-111111111111"
RG = "rg"
LOCATION = "westeurope"


def fleet_toml(
    *,
    vms: int = 4,
    uniform: int = 0,
    flex: int = 0,
    stopped: Iterable[str] = (),
    sim: str = "",
    faults: str = "",
    limits: str = "",
    access: str = "",
    start_delay_s: float = 0.05,
) -> str:
    """A one-subscription world: ``vm-001..`` (tag env=prod; vm-001 is this IMDS's VM with a system
    identity), optional Uniform ``ss`` / Flexible ``fx`` scale sets and stopped VMs."""
    parts = [
        "[sim]",
        'current_vm = "rg/vm-001"',
        f"agent_start_delay_s = {start_delay_s}",
        "agent_upload_interval_s = 0.3",
        "agent_status_interval_s = 0.2",
        "seed = 3",
        sim,
    ]
    if faults:
        parts += ["[faults]", faults]
    if limits:
        parts += ["[limits]", limits]
    parts += [
        "[[subscription]]",
        f'id = "{SUB}"',
        'name = "test"',
    ]
    if access:
        parts += ["  [subscription.access]", access]
    parts += [
        "  [[subscription.resource_group]]",
        f'  name = "{RG}"',
        f'  location = "{LOCATION}"',
        "    [[subscription.resource_group.vm]]",
        '    name = "vm-{i:03d}"',
        f"    count = {vms}",
        "    system_identity = true",
        '    system_identity_storage_role = "contributor"',  # granted, as it must be in Azure
        '    tags = { env = "prod" }',
    ]
    for name in stopped:
        parts += [
            "    [[subscription.resource_group.vm]]",
            f'    name = "{name}"',
            '    power = "deallocated"',
            '    tags = { env = "prod" }',
        ]
    if uniform:
        parts += [
            "    [[subscription.resource_group.vmss]]",
            '    name = "ss"',
            f"    instances = {uniform}",
            '    tags = { env = "prod" }',
        ]
    if flex:
        parts += [
            "    [[subscription.resource_group.vmss]]",
            '    name = "fx"',
            '    orchestration = "Flexible"',
            f"    instances = {flex}",
            '    tags = { env = "prod" }',
            '    member_tags = { env = "prod" }',
        ]
    return "\n".join(parts) + "\n"


def executions(sim: Any) -> list[dict[str, Any]]:
    return list(sim.admin_get("executions")["value"])


def executions_per_machine(sim: Any, run_command: str | None = None) -> Counter[str]:
    return Counter(
        e["vm"].lower() for e in executions(sim) if run_command is None or e["runCommand"] == run_command
    )


def arm_requests(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r.get("service") == "arm"]


def run_command_ops(sim: Any) -> list[dict[str, Any]]:
    return [r for r in arm_requests(sim) if "/runcommands" in r["path"].lower()]


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (ends sort before starts at the same time)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def in_flight_intervals(sim: Any) -> list[tuple[float, float]]:
    """Per machine: from its run command PUT to the last GET before its DELETE (the moment azrun
    learned the outcome and freed the slot)."""
    per: dict[str, list[dict[str, Any]]] = {}
    for r in run_command_ops(sim):
        machine = r["path"].lower().rsplit("/runcommands", 1)[0]
        per.setdefault(machine, []).append(r)
    out = []
    for rows in per.values():
        rows.sort(key=lambda r: r["ts"])
        put = next((r["ts"] for r in rows if r["method"] == "PUT" and r["status"] < 300), None)
        if put is None:
            continue
        gets = [r["ts"] for r in rows if r["method"] == "GET" and r["status"] == 200]
        out.append((put, max(gets) if gets else put))
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


def names(result: Any, state: TargetState) -> list[str]:
    """The sorted names of a result's targets in ``state``."""
    return sorted(r.target.name for r in result.results if r.state is state)
