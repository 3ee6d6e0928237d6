"""Benchmark: durable runs (``azrun.durable``) over many subscriptions, 1 / 2 / 4 worker processes,
against the bound and against the single-process ``azrun run`` on the same fleet.

The fleet: ``subs`` subscriptions of ``vms`` running Linux VMs each, with the documented limits
(ARM reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s per subscription; Compute's
per-subscription run-command writes 1,500 + 500/min; per VM 12 + 4/min), output to Azurite,
the no-op script ``true``, ``max_concurrency`` 100 %. Every variant gets a fresh local Azure (full
buckets), so each starts from the same state.

* ``durable`` with ``workers`` = 1, 2, 4: the local scheduler (the SDK's in-memory backend,
  :mod:`azrun.durable._local`) in this process, ``azrun worker`` child processes, the run
  scheduled and watched with :class:`azrun.durable.DurableFleet`.
* ``single``: :meth:`azrun.Fleet.run` in one child process (what ``azrun run`` does).

Wall time = from scheduling (target selection included) to the last target finished.
The bound is per-subscription bucket arithmetic with every subscription in parallel:
``max((n - burst) / refill)`` over the buckets a subscription's requests take, for the fewest
requests a target can cost (PUT, one GET, DELETE), plus the agent's start delay and one status
interval. 429s are the local Azure's own count.

Run: ``python scripts/benchmarks/bench_durable.py [subs vms]`` (default 20 x 250, the issue's size;
the smoke test and ``--quick`` use a few VMs).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402

SIM = {"agent_start_delay_s": 0.05, "agent_status_interval_s": 1, "agent_upload_interval_s": 15, "page_size": 100}
COMPUTE_SUB_UPDATE = (1500.0, 500 / 60)


def bound_s(vms: int) -> float:
    """Per-subscription lower bound (subscriptions in parallel): the slowest bucket + the agent."""
    slowest = max(
        _common.bucket_lower_bound_s(vms, _common.ARM_WRITES),  # PUT
        _common.bucket_lower_bound_s(vms, _common.ARM_DELETES),  # DELETE
        _common.bucket_lower_bound_s(vms, _common.ARM_READS),  # one GET
        _common.bucket_lower_bound_s(2 * vms, COMPUTE_SUB_UPDATE),  # PUT + DELETE
    )
    return slowest + float(SIM["agent_start_delay_s"]) + float(SIM["agent_status_interval_s"])


def _sim(subs: int, vms: int, where: Path) -> Any:
    from azrun.sim.launcher import SimProcess
    from tests.durable.support import multi_fleet_toml

    sim = SimProcess(multi_fleet_toml(subs, vms, sim=SIM), workdir=where, storage=True)
    sim.start(timeout_s=120)
    return sim


def _arm(sim: Any, since: int) -> dict[str, Any]:
    entries = [e for e in sim.requests()[since:] if e.get("service") == "arm"]
    throttled = _common.count_by_op(e for e in entries if e.get("status") == 429)
    return {"arm_requests": len(entries), "http_429": _common.count_429(entries), "http_429_by_op": throttled}


def _durable(subs: int, vms: int, workers: int, where: Path) -> dict[str, Any]:
    from azrun.durable import DurableFleet
    from azrun.durable._local import LocalScheduler
    from azrun.targets import Selector
    from tests.durable.support import start_worker, stop_worker

    sim = _sim(subs, vms, where / "sim")
    sched = LocalScheduler()
    addr = sched.start()
    env = {**sim.env, "AZRUN_STATE_DIR": str(where / "state")}
    procs = [start_worker(env, addr, where / f"worker{i}.log") for i in range(workers)]
    try:
        time.sleep(2.0)  # workers connected (their start-up is not the run's)
        before = len(sim.requests())
        with _common.environ(env):

            async def go() -> Any:
                async with DurableFleet.from_env(endpoint=addr) as fleet:
                    began = time.monotonic()
                    sel = Selector.from_options(tags=["env=fleet"], all_subscriptions=True)
                    rid = await fleet.schedule(sel, "true", max_concurrency="100%", poll_s=1.0)
                    run = await fleet.wait(rid, timeout_s=3600, interval_s=0.5)
                    wall = time.monotonic() - began
                    failed = [r.message for r in await fleet.results(rid) if r.state.value != "Succeeded"]
                    return run, wall, failed[:3]

            run, wall, failed = asyncio.run(go())
        rss = [_hwm_mb(p.pid) for p in procs]
        return {"variant": f"durable x{workers}", "workers": workers, "wall_s": round(wall, 2), "status": run.status,
                "counts": run.counts, "peak_history": sched.peak_history, "worker_peak_rss_mb": rss,
                "failed_sample": failed,
                **_arm(sim, before)}  # fmt: skip
    finally:
        for p in procs:
            stop_worker(p)
        sched.stop(grace=0)
        sim.stop()


def _hwm_mb(pid: int) -> float:
    """A live process's peak RSS (``VmHWM``), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _single_child(state_dir: str) -> int:
    """In a child: one Fleet.run over every subscription (what ``azrun run`` does)."""
    import azrun
    from azrun.targets import Selector

    async def go() -> dict[str, Any]:
        async with azrun.Fleet.from_env(state_dir=state_dir) as fleet:
            began = time.monotonic()
            sel = Selector.from_options(tags=["env=fleet"], all_subscriptions=True)
            result = await fleet.run(sel, "true", max_concurrency="100%")
            return {"wall_s": round(time.monotonic() - began, 2), "counts": result.counts()}

    print(json.dumps({**asyncio.run(go()), "peak_rss_mb": _common.peak_rss_mb()}))
    return 0


def _single(subs: int, vms: int, where: Path) -> dict[str, Any]:
    sim = _sim(subs, vms, where / "sim")
    try:
        before = len(sim.requests())
        env = {**os.environ, **sim.env, "AZRUN_STATE_DIR": str(where / "state")}
        code, out, err, usage = _common.run_child([sys.executable, __file__, "--single-child", str(where / "state")],
                                                  env=env, timeout_s=3600)  # fmt: skip
        if code != 0:
            raise RuntimeError(f"single-process run failed ({code}): {err[-2000:]}")
        doc = json.loads(out.strip().splitlines()[-1])
        status = "succeeded" if set(doc["counts"]) == {"Succeeded"} else "failed"
        return {"variant": "single process", "workers": 1, "status": status, "cpu_s": round(usage.cpu_s, 1),
                **doc, **_arm(sim, before)}  # fmt: skip
    finally:
        sim.stop()


def run(subs: int = 20, vms: int = 250, workers: Sequence[int] = (1, 2, 4), single: bool = True) -> dict[str, Any]:
    rows = []
    for w in workers:
        with tempfile.TemporaryDirectory(prefix="azrun-bench-durable-") as tmp:
            rows.append(_durable(subs, vms, w, Path(tmp)))
    if single:
        with tempfile.TemporaryDirectory(prefix="azrun-bench-durable-") as tmp:
            rows.append(_single(subs, vms, Path(tmp)))
    return {"subs": subs, "vms": vms, "targets": subs * vms, "bound_s": round(bound_s(vms), 2), "variants": rows}


def report(res: dict[str, Any]) -> list[_common.Row]:
    head = f"{res['subs']} subs x {res['vms']} VMs"
    rows = [_common.Row(f"{head}: bound (per-subscription buckets, in parallel)", f"{res['bound_s']:.1f} s")]
    for v in res["variants"]:
        ok = v["status"] == "succeeded" and v["http_429"] == 0
        if v.get("worker_peak_rss_mb"):
            rows.append(_common.Row(f"{head}: {v['variant']} worker peak RSS", " / ".join(f"{m:.0f} MB" for m in v["worker_peak_rss_mb"])))
        elif v.get("peak_rss_mb"):
            rows.append(_common.Row(f"{head}: {v['variant']} peak RSS", f"{v['peak_rss_mb']:.0f} MB"))
        rows.append(_common.Row(f"{head}: {v['variant']} wall / 429s",
                                f"{v['wall_s']:.1f} s ({v['wall_s'] / max(res['bound_s'], 0.1):.1f}x bound) / {v['http_429']}",
                                "0 429s, all succeeded", ok))  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--single-child":
        return _single_child(argv[1])
    subs, vms = (int(argv[0]), int(argv[1])) if len(argv) == 2 else (20, 250)
    result = run(subs, vms)
    print(json.dumps(result, indent=1))
    _common.print_table(report(result), title="\ndurable: workers vs bound vs one process")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
