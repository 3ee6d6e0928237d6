"""Benchmark: the local Azure itself (issue 2's speed goals).

* start-up: `azrun sim up` ready (ARM + IMDS + Azurite) — median of ``starts`` starts;
* a fleet of ``vms`` VMs loads;
* sustained ARM requests/s: ``clients`` keep-alive HTTPS connections issue VM GETs and
  run-command LISTs for ``seconds`` (limits off, so the server's own speed is measured).

Run: ``python scripts/benchmarks/bench_sim.py [--vms 1000] [--seconds 10] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SUB = "22222222-2222-4222-8222-222222222222"


def fleet_toml(vms: int) -> str:
    return f"""
[sim]
agent_start_delay_s = 0
[limits]
enabled = false
[[subscription]]
id = "{SUB}"
name = "bench"
[[subscription.resource_group]]
name = "rg-bench"
location = "westeurope"
[[subscription.resource_group.vm]]
name = "vm-{{i:05d}}"
count = {vms}
"""


def _token() -> str:
    from azrun.sim.fleetspec import DEFAULT_TENANT
    from azrun.sim.tokens import Principal, mint

    principal = Principal(object_id="bench-oid", client_id="bench-client", tenant_id=DEFAULT_TENANT)
    return mint(principal, "https://management.azure.com/", ttl_s=3600)[0]


async def _hammer(env: dict[str, str], vms: int, seconds: float, clients: int) -> dict[str, Any]:
    import aiohttp

    base = env["AZRUN_ARM_ENDPOINT"]
    ctx = ssl.create_default_context(cafile=env["AZRUN_CA_BUNDLE"])
    headers = {"Authorization": f"Bearer {_token()}"}
    prefix = f"{base}/subscriptions/{SUB}/resourceGroups/rg-bench/providers/Microsoft.Compute/virtualMachines"
    done = 0
    errors = 0
    stop_at = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal done, errors
        i = k
        while time.monotonic() < stop_at:
            vm = f"vm-{i % vms + 1:05d}"
            url = f"{prefix}/{vm}?api-version=2024-11-01" if i % 2 else f"{prefix}/{vm}/runCommands?api-version=2024-11-01"
            async with session.get(url, headers=headers, ssl=ctx) as resp:
                await resp.read()
                if resp.status == 200:
                    done += 1
                else:
                    errors += 1
            i += clients

    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, k) for k in range(clients)))
    elapsed = time.monotonic() - began
    return {"requests": done, "errors": errors, "seconds": round(elapsed, 2), "rps": round(done / elapsed, 1)}


def run(vms: int = 1000, seconds: float = 10.0, starts: int = 3, clients: int = 16) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="azrun-bench-sim-") as tmp:
        return _measure(Path(tmp), vms, seconds, starts, clients)


def _measure(where: Path, vms: int, seconds: float, starts: int, clients: int) -> dict[str, Any]:
    from azrun.sim.launcher import SimProcess

    ready: list[float] = []
    for n in range(starts):
        with SimProcess(None, workdir=where / f"start{n}") as sim:
            ready.append(float(sim.ready_s or 0.0))
    fleet = where / "fleet.toml"
    fleet.write_text(fleet_toml(vms), encoding="utf-8")
    with SimProcess(fleet, workdir=where / "load", storage=False) as sim:
        load_s = float(sim.ready_s or 0.0)
        load = asyncio.run(_hammer(sim.env, vms, seconds, clients))
    return {
        "ready_s_median": round(statistics.median(ready), 2),
        "ready_s": [round(r, 2) for r in ready],
        "vms": vms,
        "fleet_ready_s": round(load_s, 2),
        **{f"arm_{k}": v for k, v in load.items()},
    }


def report(result: dict[str, Any]) -> list[Any]:
    """Rows for ./scripts/bench."""
    import _common

    Row = _common.Row
    return [
        Row("ready (ARM + IMDS + Azurite), median", f"{result['ready_s_median']} s", "<= 3 s",
            result["ready_s_median"] <= 3),
        Row(f"{result['vms']}-VM fleet loaded (no storage)", f"{result['fleet_ready_s']} s", "", None),
        Row("ARM requests/s sustained (limits off)", f"{result['arm_rps']}", ">= 200/s", result["arm_rps"] >= 200),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.vms, args.seconds, args.starts)
    print(f"ready (ARM + IMDS + Azurite): median {result['ready_s_median']} s  (goal <= 3 s)")
    print(f"{result['vms']}-VM fleet ready in {result['fleet_ready_s']} s (no storage)")
    print(f"ARM sustained: {result['arm_rps']} requests/s over {result['arm_seconds']} s, "
          f"{result['arm_errors']} errors  (goal >= 200/s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
