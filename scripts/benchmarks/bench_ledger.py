"""Benchmark: how long the fleet's ledger writes block the event loop (issue 15).

A caller in Azure Functions shares the event loop with azrun; a ledger write done on the loop
delays everything else on it. ``run(n)`` starts a local Azure (no storage) with ``n`` VMs, runs
``sleep 1; echo done`` on all of them at ``max_concurrency=100%`` and, on the same loop, a
heartbeat that asks to wake every 5 ms and records how late it woke. Reported: the heartbeat
lag's p50 / p99 / max during the run (goal: p99 < 5 ms), the run's wall time and its ledger
writes per target.

Run: ``python scripts/benchmarks/bench_ledger.py [n]`` (default 100).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

GOAL_P99_MS = 5.0
TICK_S = 0.005


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _measure(n: int, state_dir: Path) -> dict[str, Any]:
    from azrun.fleet import Fleet, FleetOptions
    from azrun.models import RunSpec
    from azrun.targets import Selector

    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            lags.append(max(0.0, loop.time() - due) * 1000)

    async with Fleet.from_env(state_dir=state_dir) as fleet:
        selection = await fleet.select(Selector.from_options(tags=["env=bench"]))
        beat = asyncio.get_running_loop().create_task(heartbeat())
        started = time.perf_counter()
        opts = FleetOptions.make(max_concurrency="100%", max_errors="100%")
        result = await fleet.run(selection, RunSpec(script="sleep 1; echo done", timeout_s=120, script_name="bench"),
                                 options=opts)
        wall = time.perf_counter() - started
        stop.set()
        await beat
    return {
        "n": n, "wall_s": round(wall, 2), "counts": result.counts(), "ticks": len(lags),
        "lag_p50_ms": round(_quantile(lags, 0.5), 2), "lag_p99_ms": round(_quantile(lags, 0.99), 2),
        "lag_max_ms": round(max(lags, default=0.0), 2),
    }  # fmt: skip


def run(n: int = 100) -> dict[str, Any]:
    where = _common.workdir("ledger")
    try:
        with _common.start_sim(n, where, sim={"agent_status_interval_s": 0.5}) as sim, _common.environ(sim.env):
            return asyncio.run(_measure(n, where / "state"))
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100
    out = run(n)
    print(json.dumps(out))
    met = out["lag_p99_ms"] < GOAL_P99_MS
    print(f"heartbeat lag during a {n}-target run: p50 {out['lag_p50_ms']} ms, p99 {out['lag_p99_ms']} ms "
          f"(goal < {GOAL_P99_MS:g} ms: {'met' if met else 'NOT met'}), max {out['lag_max_ms']} ms; "
          f"wall {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
