"""Benchmark: azrun's fleet run on the local Azure's *realistic* timing profile (issue 13).

Same world and script as ``bench_fleet.py`` (n running Linux VMs at the documented limits, a
5-second script ``for i in 1..5: echo line; sleep 1``, ``max_concurrency=100%``), but the agent
behaves as recorded (azrun/sim/timing.py): a script starts 7-13 s (+ up to 1 s jitter) after its
PUT, the first run command on a machine also installs the handler (60-120 s; ``--install S``
replaces it, ``--install 0`` turns it off), the agent reports state every 15 s, and a DELETE
lasts 10-211 s. Figures: wall time against the bound below, 429 answers (goal 0) and ARM requests
per target (goal <= 3.5), from the simulator's request log.

Bound (what no client can beat)::

    bound = dispatch + latest_start_latency + script + cadence

* ``dispatch``: when the last PUT can go at the documented throttle limits: ARM writes
  ``(n - 200) / 10`` s, Compute updates (PUT + DELETE per target) ``(2n - 1500) / (500 / 60)``
  s, so ``max(0, (n - 200) / 10, (2n - 1500) / (500 / 60))`` (bench_fleet.lower_bound_s' terms);
* ``latest_start_latency``: the largest start latency drawn in this run (script ``startTime``
  minus its PUT, from the simulator: dispatch latency + handler install); the last PUT's target
  may have drawn it;
* ``script``: 5 s;
* ``cadence``: 15 s, the most a client waits for the agent to report a completion.

Deletes are not in the bound (azrun deletes after reading the outcome; a DELETE that lasts is
Azure's time, not the run's); if the run's wall includes them, ``ratio`` shows it.

Run: ``nice python scripts/benchmarks/bench_fleet_realistic.py [n ...] [--install S]``
(default n: 100 and 1000, each in a fresh process).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fleet
from bench_fleet import SCRIPT, SCRIPT_S, _resolve

CADENCE_S = 15.0
DEFAULT_N = (100, 1000)


def fleet_toml(n: int, install_s: float | None) -> str:
    install = "" if install_s is None else f"handler_install_s = {install_s}\n"
    return bench_fleet.fleet_toml(n, sim=f'profile = "realistic"\n{install}seed = 11\n')


def dispatch_bound_s(n: int) -> float:
    """When the last PUT can leave at the documented limits (ARM writes, Compute updates)."""
    return max(0.0, (n - 200) / 10, (2 * n - 1500) / (500 / 60))


def bound_s(n: int, latest_start_latency_s: float) -> float:
    return dispatch_bound_s(n) + latest_start_latency_s + SCRIPT_S + CADENCE_S


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def start_latencies(log: list[dict[str, Any]], executions: list[dict[str, Any]]) -> list[float]:
    """Per execution: its script's ``startTime`` minus the first accepted PUT to its machine."""
    puts: dict[str, float] = {}
    for r in log:
        if r["method"] == "PUT" and r["status"] < 300 and "/runcommands/" in r["path"].lower():
            machine = r["path"].lower().rsplit("/runcommands/", 1)[0]
            puts.setdefault(machine, float(r["ts"]))
    out = []
    for e in executions:
        machine = str(e["vm"]).lower()
        sent = next((t for m, t in puts.items() if m.endswith(machine) or machine.endswith(m)), None)
        if sent is not None and e.get("startTime"):
            out.append(_epoch(str(e["startTime"])) - sent)
    return out


async def _azrun(targets: list[Any], state_dir: Path) -> dict[str, int]:
    from azrun.fleet import Fleet, FleetOptions
    from azrun.models import RunSpec

    async with Fleet.from_env(state_dir=state_dir) as fleet:
        opts = FleetOptions.make(max_concurrency="100%", max_errors="100%")
        result = await fleet.run(targets, RunSpec(script=SCRIPT, timeout_s=120, script_name="bench"), options=opts)
    return result.counts()


def run(n: int, install_s: float | None = None) -> dict[str, Any]:
    """Start a realistic local Azure with ``n`` VMs, run the script once with azrun, report."""
    from azrun.sim.launcher import SimProcess

    workdir = Path(tempfile.mkdtemp(prefix="azrun-bench-realistic-"))
    with SimProcess(fleet_toml(n, install_s), workdir=workdir / "sim", storage=False) as sim:
        os.environ.update(sim.env)
        os.environ["AZRUN_STATE_DIR"] = str(workdir / "state")
        targets = asyncio.run(_resolve())
        mark = len(sim.requests())
        began = time.monotonic()
        outcomes = asyncio.run(_azrun(targets, workdir / "state"))
        wall = time.monotonic() - began
        log = [r for r in sim.requests()[mark:] if r.get("service") == "arm"]
        executions = list(sim.admin_get("executions")["value"])
    shutil.rmtree(workdir, ignore_errors=True)
    latencies = sorted(start_latencies(log, executions))
    latest = latencies[-1] if latencies else 0.0
    bound = bound_s(n, latest)
    return {
        "profile": "realistic",
        "n": n,
        "handler_install_s": "60-120 (profile)" if install_s is None else install_s,
        "wall_s": round(wall, 1),
        "bound_s": round(bound, 1),
        "bound": (f"dispatch {dispatch_bound_s(n):.1f} + latest start latency {latest:.1f} "
                  f"+ script {SCRIPT_S:g} + cadence {CADENCE_S:g}"),
        "ratio": round(wall / bound, 2),
        "start_latency_s": {"median": round(latencies[len(latencies) // 2], 1) if latencies else None,
                            "max": round(latest, 1)},
        "throttled_429": sum(1 for r in log if r["status"] == 429),
        "arm_requests": len(log),
        "arm_requests_per_target": round(len(log) / n, 2),
        "requests_by_op": dict(Counter(r["op"] for r in log).most_common()),
        "outcomes": outcomes,
        "executions": len(executions),
    }


def report(result: dict[str, Any]) -> list[Any]:
    """``./scripts/bench``'s rows (the goals of issue 13)."""
    from _common import Row

    n = result["n"]
    return [
        Row(f"realistic N={n}: wall / bound", f"{result['wall_s']:.1f} s / {result['bound_s']:.1f} s "
            f"({result['bound']})", "<= 1.10 x bound", result["ratio"] <= 1.10),
        Row(f"realistic N={n}: 429 answers", str(result["throttled_429"]), "0", result["throttled_429"] == 0),
        Row(f"realistic N={n}: ARM requests per target", f"{result['arm_requests_per_target']:.2f}", "<= 3.5",
            result["arm_requests_per_target"] <= 3.5),
    ]


def main(argv: list[str]) -> int:
    install: float | None = None
    if "--install" in argv:
        i = argv.index("--install")
        install = float(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if len(argv) >= 2 and argv[0] == "--one":  # child process: one size, JSON on stdout
        print(json.dumps(run(int(argv[1]), install)))
        return 0
    sizes = [int(a) for a in argv] or list(DEFAULT_N)
    extra = [] if install is None else ["--install", str(install)]
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), *extra], capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"profile": "realistic", "n": n, "error": out.stderr[-2000:]}), flush=True)
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
