"""Benchmark: one 5-second script on n Linux VMs, azrun vs the obvious alternatives.

``run(n, variant)`` starts its own local Azure (no storage) with ``n`` running Linux VMs at the
documented limits (ARM: reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s per
subscription; Compute: run-command writes 12 + 4/min per VM and 1,500 + 500/min per
subscription, GETs 36 + 12/min per VM), resolves the targets (not timed), then times the run of
``for i in 1..5: echo line; sleep 1`` on every VM and cleans up the run commands.

Variants:

* ``azrun``: :class:`azrun.Fleet` with the throttle, scheduled polling and cleanup, with
  ``max_concurrency=100%`` (the question is how close to the throttle bound it gets; the default
  of 50 in flight would be the bound instead: 50 / ~6 s ~ 8 targets/s < 10 writes/s).
* ``naive``: asyncio fan-out over the aio SDK with no throttle and the SDK's default retries:
  ``begin_create_or_update(asyncExecution=False)`` + ``await poller.result()`` (LRO polls),
  a GET for the instance view, ``begin_delete`` + ``result()``.
* ``threads5``: a pool of 5 threads doing the same with the sync SDK
  (``begin_create_or_update(...).result()``).
* ``sequential``: the same, one VM after the other.

Reported: wall time, the lower bound from bucket arithmetic plus the script time, their ratio,
429 answers and ARM requests per target (from the simulator's request log), outcomes, client CPU
seconds and peak RSS (``resource.getrusage``: each variant runs in a fresh process when run
from ``__main__``).

Lower bound: the last PUT cannot go before ``(n - 200) / 10`` s (ARM writes), the last DELETE not
before ``(n - 200) / 10`` s (ARM deletes), all ``2n`` Compute updates not before
``(2n - 1500) / (500/60)`` s, the ``n`` completion reads not before ``(n - 250) / 25`` s; the last
script ends 5 s after the last PUT. ``bound = max(writes + 5, deletes, compute, reads) + 5 s x
ceil(n / concurrency)`` for the pooled variants (a pool of c runs n/c rounds of 5 s at least).

Run: ``python scripts/benchmarks/bench_fleet.py [n] [variant ...]`` (default: 1000 azrun, 1000
naive, 25 threads5, 5 sequential; threads5 and sequential take ~n x 30 s / pool (the SDK polls
the LRO every 30 s when the status answer has no Retry-After), so they run on
fewer VMs and the report scales them).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SUB = "11111111-1111-4111-8111-111111111111"
RG = "rg-bench"
SCRIPT = "for i in 1 2 3 4 5; do echo line $i; sleep 1; done"
SCRIPT_S = 5.0
VARIANTS = ("azrun", "naive", "threads5", "sequential")
DEFAULT_N = {"azrun": 1000, "naive": 1000, "threads5": 25, "sequential": 5}


FAST_SIM = """agent_start_delay_s = 0.2
agent_upload_interval_s = 15
agent_status_interval_s = 1
"""


def fleet_toml(n: int, sim: str = FAST_SIM) -> str:
    """n running Linux VMs tagged env=bench; ``sim``: the [sim] lines of the timing profile."""
    return f"""
[sim]
current_vm = "{RG}/vm-0001"
{sim}page_size = 100

[[subscription]]
id = "{SUB}"
name = "bench"
  [[subscription.resource_group]]
  name = "{RG}"
  location = "westeurope"
    [[subscription.resource_group.vm]]
    name = "vm-{{i:04d}}"
    count = {n}
    system_identity = true
    system_identity_storage_role = "contributor"
    tags = {{ env = "bench" }}
"""


def lower_bound_s(n: int, concurrency: int | None = None) -> float:
    """Throttle arithmetic (documented limits) plus the script time."""
    writes = max(0.0, (n - 200) / 10)
    deletes = max(0.0, (n - 200) / 10)
    compute = max(0.0, (2 * n - 1500) / (500 / 60))
    reads = max(0.0, (n - 250) / 25)
    bound = max(writes + SCRIPT_S, deletes, compute, reads)
    if concurrency is not None:
        bound = max(bound, SCRIPT_S * math.ceil(n / concurrency))
    return max(bound, SCRIPT_S)


def _body(name: str, async_execution: bool) -> dict[str, Any]:
    return {
        "location": "westeurope",
        "tags": {"bench": name},
        "properties": {
            "source": {"script": SCRIPT},
            "asyncExecution": async_execution,
            "timeoutInSeconds": 120,
            "treatFailureAsDeploymentFailure": True,
        },
    }


# -- variants -------------------------------------------------------------------------------------
async def _azrun(targets: list[Any], state_dir: Path) -> dict[str, int]:
    from azrun.fleet import Fleet, FleetOptions
    from azrun.models import RunSpec

    async with Fleet.from_env(state_dir=state_dir) as fleet:
        opts = FleetOptions.make(max_concurrency="100%", max_errors="100%")
        result = await fleet.run(targets, RunSpec(script=SCRIPT, timeout_s=120, script_name="bench"), options=opts)
    return result.counts()


async def _naive(targets: list[Any], polling_interval_s: float | None = None) -> dict[str, int]:
    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud

    factory = ClientFactory(cloud=Cloud.from_env(os.environ), throttle=None, polling_interval_s=polling_interval_s)
    ops: Any = factory.acompute(SUB).virtual_machine_run_commands
    name = "naive-run"
    outcomes: Counter[str] = Counter()

    async def one(t: Any) -> None:
        step = "put"
        try:
            poller = await ops.begin_create_or_update(RG, t.vm_name, name, _body(name, False))
            step = "lro"
            await poller.result()
            step = "get"
            got = await ops.get_by_virtual_machine(RG, t.vm_name, name, expand="instanceView")
            step = "delete"
            deleter = await ops.begin_delete(RG, t.vm_name, name)
            await deleter.result()
            outcomes[str(got.instance_view.execution_state).rsplit(".", 1)[-1].title()] += 1
        except Exception as exc:  # the naive client gives up on some: count where and why
            outcomes[f"gave up at {step}: {type(exc).__name__}"] += 1

    try:
        await asyncio.gather(*(one(t) for t in targets))
    finally:
        await factory.aclose()
    return dict(outcomes)


def _pooled(targets: list[Any], workers: int, polling_interval_s: float | None = None) -> dict[str, int]:
    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud

    factory = ClientFactory(cloud=Cloud.from_env(os.environ), throttle=None, polling_interval_s=polling_interval_s)
    ops: Any = factory.compute(SUB).virtual_machine_run_commands
    name = f"pool{workers}-run"
    outcomes: Counter[str] = Counter()

    def one(t: Any) -> str:
        try:
            ops.begin_create_or_update(RG, t.vm_name, name, _body(name, False)).result()
            got = ops.get_by_virtual_machine(RG, t.vm_name, name, expand="instanceView")
            ops.begin_delete(RG, t.vm_name, name).result()
            return str(got.instance_view.execution_state).rsplit(".", 1)[-1].title()
        except Exception as exc:
            return f"gave up: {type(exc).__name__}"

    if workers == 1:
        outcomes.update(one(t) for t in targets)
    else:
        with ThreadPoolExecutor(workers) as pool:
            outcomes.update(pool.map(one, targets))
    return dict(outcomes)


# -- harness ---------------------------------------------------------------------------------------
def _own_peak_rss_mb() -> float:
    """This process's peak RSS alone (``VmHWM``): ``ru_maxrss`` of a forked child counts its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _resolve() -> list[Any]:
    from azrun.clients import ClientFactory
    from azrun.targets import Selector, resolve

    factory = ClientFactory.from_env()
    try:
        selection = await resolve(Selector.from_options(tags=["env=bench"]), factory, default_subscriptions=(SUB,))
    finally:
        await factory.aclose()
    return list(selection.targets)


def run(n: int, variant: str, *, sdk_polling_interval_s: float | None = None) -> dict[str, Any]:
    """Start a local Azure with ``n`` VMs, run ``variant`` once, and report (see the module doc).

    ``sdk_polling_interval_s`` overrides the SDK's 30 s LRO poll interval of the alternatives
    (not azrun); only the smoke test sets it, to stay fast. Figures are for the default.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    from azrun.sim.launcher import SimProcess

    workdir = Path(tempfile.mkdtemp(prefix=f"azrun-bench-{variant}-"))
    with SimProcess(fleet_toml(n), workdir=workdir / "sim", storage=False) as sim:
        os.environ.update(sim.env)
        os.environ["AZRUN_STATE_DIR"] = str(workdir / "state")
        targets = asyncio.run(_resolve())
        mark = len(sim.requests())
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        began = time.monotonic()
        runners: dict[str, Callable[[], dict[str, int]]] = {
            "azrun": lambda: asyncio.run(_azrun(targets, workdir / "state")),
            "naive": lambda: asyncio.run(_naive(targets, sdk_polling_interval_s)),
            "threads5": lambda: _pooled(targets, 5, sdk_polling_interval_s),
            "sequential": lambda: _pooled(targets, 1, sdk_polling_interval_s),
        }
        outcomes = runners[variant]()
        wall = time.monotonic() - began
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        peak_rss_mb = _own_peak_rss_mb()  # before the request log is read into this process
        log = [r for r in sim.requests()[mark:] if r.get("service") == "arm"]
        executions = len(sim.admin_get("executions")["value"])
    shutil.rmtree(workdir, ignore_errors=True)  # the simulator's logs and the ledger: ~MBs per run
    concurrency = {"threads5": 5, "sequential": 1}.get(variant)
    bound = lower_bound_s(n, concurrency)
    ops = Counter(r["op"] for r in log)
    return {
        "variant": variant,
        "n": n,
        "wall_s": round(wall, 1),
        "lower_bound_s": round(bound, 1),
        "ratio": round(wall / bound, 2),
        "throttled_429": sum(1 for r in log if r["status"] == 429),
        "arm_requests": len(log),
        "arm_requests_per_target": round(len(log) / n, 2),
        "requests_by_op": dict(ops.most_common()),
        "outcomes": outcomes,
        "executions": executions,
        "client_cpu_s": round((usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime), 1),
        "client_peak_rss_mb": round(peak_rss_mb, 1),
    }


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--one":  # child process: one variant, JSON on stdout
        print(json.dumps(run(int(argv[2]), argv[1])))
        return 0
    n = int(argv[0]) if argv else None
    variants = argv[1:] or list(VARIANTS)
    for variant in variants:
        size = n or DEFAULT_N[variant]
        out = subprocess.run([sys.executable, __file__, "--one", variant, str(size)], capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"variant": variant, "n": size, "error": out.stderr[-2000:]}), flush=True)
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
