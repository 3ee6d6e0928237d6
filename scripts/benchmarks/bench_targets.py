"""Benchmark: target selection from an n-machine fleet on the local Azure at documented limits.

``run(n)`` starts a simulator (no storage) whose fleet has ``n`` machines in two subscriptions:
60 % standalone VMs in resource groups of 100, 25 % Uniform scale-set instances (scale sets of
50), 15 % Flexible members (scale sets of 25); half of the groups and scale sets are tagged
``env=prod``, 5 % of the VMs are deallocated. The simulator keeps Azure's documented ARM and
Compute limits and its default page size (100). It then resolves three selectors and reports,
for each, the ARM requests by operation (from the simulator's request log), azrun's own request
count, wall time and the number of 429 answers. The target is O(resource groups + scale sets)
requests, not O(VMs), and no 429.

Run: ``python scripts/benchmarks/bench_targets.py [n]`` (default 2000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SUBSCRIPTIONS = ("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
SCENARIOS: dict[str, dict[str, Any]] = {
    "all machines, all subscriptions": {"select_all": True, "all_subscriptions": True},
    "--tag env=prod, all subscriptions": {"tags": ["env=prod"], "all_subscriptions": True},
    "--tag env=prod --tag role=web -g rg-vm-01": {"tags": ["env=prod", "role=web"], "resource_groups": ["rg-vm-01"]},
}


def fleet_toml(n: int) -> tuple[str, dict[str, int]]:
    """The fleet text and its shape (machines, resource groups, scale sets)."""
    lines = ["[sim]", 'current_vm = "rg-vm-01/vm-01-0001"', ""]
    shape: Counter[str] = Counter()
    per_sub = [n // len(SUBSCRIPTIONS) + (1 if i < n % len(SUBSCRIPTIONS) else 0) for i in range(len(SUBSCRIPTIONS))]
    for s, (sub, count) in enumerate(zip(SUBSCRIPTIONS, per_sub, strict=True)):
        lines += ["[[subscription]]", f'id = "{sub}"', f'name = "bench-{s}"']
        vms, uniform = round(count * 0.60), round(count * 0.25)
        flex = count - vms - uniform
        lines += _vm_groups(vms, shape)
        lines += _scale_sets("uniform", "Uniform", uniform, 50, shape)
        lines += _scale_sets("flex", "Flexible", flex, 25, shape)
        shape["machines"] += count
    return "\n".join(lines) + "\n", dict(shape)


def _vm_groups(count: int, shape: Counter[str]) -> list[str]:
    lines: list[str] = []
    for g in range((count + 99) // 100):
        size = min(100, count - g * 100)
        env = "prod" if g % 2 == 0 else "dev"
        lines += ["[[subscription.resource_group]]", f'name = "rg-vm-{g + 1:02d}"']
        stopped = max(1, size // 20)
        lines += ["[[subscription.resource_group.vm]]", f'name = "vm-{g + 1:02d}-{{i:04d}}"', f"count = {size - stopped}",
                  f'tags = {{ env = "{env}", role = "web" }}', "system_identity = true"]  # azrun's IMDS identity
        lines += ["[[subscription.resource_group.vm]]", f'name = "vm-{g + 1:02d}-off-{{i:02d}}"', f"count = {stopped}",
                  'power = "deallocated"', f'tags = {{ env = "{env}", role = "web" }}']
        shape["resource_groups"] += 1
    return lines


def _scale_sets(kind: str, mode: str, count: int, size: int, shape: Counter[str]) -> list[str]:
    if count <= 0:
        return []
    lines = ["[[subscription.resource_group]]", f'name = "rg-{kind}"']
    shape["resource_groups"] += 1
    for i in range((count + size - 1) // size):
        env = "prod" if i % 2 == 0 else "dev"
        lines += ["[[subscription.resource_group.vmss]]", f'name = "vmss-{kind}-{i + 1:02d}"',
                  f'orchestration = "{mode}"', f"instances = {min(size, count - i * size)}",
                  f'tags = {{ env = "{env}", role = "api" }}']
        shape[f"{kind}_scale_sets"] += 1
    return lines


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def _select(options: dict[str, Any]) -> Any:
    from azrun.clients import ClientFactory
    from azrun.targets import Selector, resolve

    factory = ClientFactory.from_env()
    try:
        return await resolve(Selector.from_options(**options), factory, default_subscriptions=[SUBSCRIPTIONS[0]])
    finally:
        await factory.aclose()


def run(n: int) -> dict[str, Any]:
    """Start an n-machine local Azure, resolve each scenario, and return the figures."""
    from azrun.sim.launcher import SimProcess

    text, shape = fleet_toml(n)
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as work:
        sim = SimProcess(text, workdir=Path(work), storage=False)
        began = time.perf_counter()
        sim.start(timeout_s=120)
        try:
            result: dict[str, Any] = {"n": n, "fleet": shape, "sim_start_s": round(time.perf_counter() - began, 2)}
            with _environ(sim.env):
                result["scenarios"] = {name: _scenario(sim, options) for name, options in SCENARIOS.items()}
        finally:
            sim.stop()
    return result


def _scenario(sim: Any, options: dict[str, Any]) -> dict[str, Any]:
    before = len(sim.requests())
    began = time.perf_counter()
    selection = asyncio.run(_select(options))
    wall = time.perf_counter() - began
    arm = [r for r in sim.requests()[before:] if r.get("service") == "arm"]
    return {
        "selected": len(selection.targets),
        "skipped": len(selection.skipped),
        "wall_s": round(wall, 3),
        "arm_requests": len(arm),
        "azrun_counted_requests": selection.arm_requests,
        "arm_requests_by_op": dict(sorted(Counter(r["op"] for r in arm).items())),
        "http_429": sum(1 for r in arm if r.get("status") == 429),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
