"""Benchmark: what orchestrating n targets costs the client (memory and CPU), nothing else.

``run(n)`` starts a local Azure with ``n`` running Linux VMs whose limits are off
(``[limits] enabled = false``), whose agent starts scripts at once and reports every 0.2 s, and
runs the no-op script ``true`` on every VM with :class:`azrun.Fleet` (the library, as the CLI and
Azure Functions use it): target resolution by tag, dispatch with ``max_concurrency`` in flight,
completion polling, cleanup (DELETE), the ledger; output storage off (the instance view only).
azrun's own throttle is given limits so large that it never waits, because the question is the
client's cost per target, not the published limits (the fleet benchmark measures those).

The Fleet runs in a fresh child process that reports its own peak RSS (``VmHWM``; see
``_common.peak_rss_mb``), its RSS once the SDK clients are built (the baseline) and its CPU
seconds (``getrusage``), so the figures are azrun's alone. The simulator runs ``n`` bash
processes and answers every request in one Python process: on a small machine it, not azrun,
bounds the wall time, and it competes with the client for the CPU.

Reported: wall time (resolution, run), client CPU seconds and peak RSS, ARM requests per target
(the simulator's request log) and outcomes. ``run_sizes`` measures several sizes (a simulator
each) and fits the per-1,000-target slope between the smallest and the largest; below 10,000 it
projects 10,000 from that slope (a projection from sizes under ``max_concurrency`` overstates
it: memory grows fastest while the number in flight grows).

The child's resident memory is watched: a run that passes ``rss_cap_mb`` is stopped and
reported as such. (Before ``ClientFactory`` used one SSL context per transport, azure-core
built one per request against a CA bundle, aiohttp reused no connection, and the client grew by
about 1 MB per request: 1,000 targets took 1 GB. The cap keeps such a regression from taking
the machine down.)

Goal (issue 17): 10,000 targets in <= 200 MB client peak RSS, and client CPU per 1,000 targets
below the issue's 6.4 s baseline.

Run: ``python scripts/benchmarks/bench_scale.py [n ...]`` (default 10000; several sizes: a slope).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402

RSS_GOAL_MB = 200.0
GOAL_TARGETS = 10_000
SIM_SETTINGS = {"agent_start_delay_s": 0, "agent_status_interval_s": 0.2, "agent_upload_interval_s": 15}


# -- the child: one Fleet run, measuring itself ------------------------------------------------------
def _status_mb(key: str, pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` memory line (``VmRSS``, ``VmHWM``) in MB; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _roomy_throttle() -> Any:
    """azrun's Throttle with every bucket so large and fast that no request ever waits."""
    from azrun.throttle import Limit, Throttle, ThrottleLimits

    base = ThrottleLimits()
    huge: dict[str, Any] = {f.name: Limit(1e12, 1e9) for f in dataclasses.fields(base)
                            if isinstance(getattr(base, f.name), Limit)}
    return Throttle(dataclasses.replace(base, **huge))


async def _orchestrate(concurrency: int, state_dir: Path) -> dict[str, Any]:
    from azrun.clients import ClientFactory
    from azrun.fleet import Fleet, FleetOptions
    from azrun.models import RunSpec
    from azrun.targets import Selector

    factory = ClientFactory.from_env(throttle=_roomy_throttle())
    factory.acompute(_common.SUB)  # the SDK's imports and clients are the baseline, not per-target cost
    factory.aresources(_common.SUB)
    base_rss, base_cpu = _status_mb("VmRSS"), _cpu_s()
    began = time.monotonic()
    async with Fleet(factory=factory, state_dir=state_dir, default_subscriptions=(_common.SUB,)) as fleet:
        selection = await fleet.select(Selector.from_options(tags=["env=bench"]))
        resolved = time.monotonic()
        options = FleetOptions.make(max_concurrency=concurrency, max_errors="100%")
        result = await fleet.run(selection, RunSpec(script="true", timeout_s=600, script_name="scale"), options=options)
        ended = time.monotonic()
    await factory.aclose()
    return {
        "targets": len(selection.targets),
        "resolve_s": round(resolved - began, 2),
        "run_s": round(ended - resolved, 2),
        "outcomes": result.counts(),
        "azrun_arm_requests": sum(r.arm_requests for r in result.results),
        "baseline_rss_mb": round(base_rss, 1),
        "baseline_cpu_s": round(base_cpu, 2),
    }


def child_main(concurrency: int, state_dir: str) -> int:
    """The measured process: import, build the clients, note the baseline, run, print one JSON line."""
    out = asyncio.run(_orchestrate(concurrency, Path(state_dir)))
    out |= {"peak_rss_mb": round(_common.peak_rss_mb(), 1), "cpu_s": round(_cpu_s(), 2)}
    print(json.dumps(out), flush=True)
    return 0


# -- the parent: a simulator per size ----------------------------------------------------------------
def _run_capped(argv: Sequence[str], env: Mapping[str, str], *, timeout_s: float, rss_cap_mb: float) -> dict[str, Any]:
    """Run the child; stop it if its RSS passes ``rss_cap_mb`` or it runs past ``timeout_s``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env))
        deadline, stopped, seen = time.monotonic() + timeout_s, "", 0.0
        while proc.poll() is None and not stopped:
            seen = max(seen, _status_mb("VmRSS", proc.pid))
            if seen > rss_cap_mb:
                stopped = f"stopped at {seen:.0f} MB RSS (cap {rss_cap_mb:g} MB)"
            elif time.monotonic() > deadline:
                stopped = f"stopped after {timeout_s:g} s"
            else:
                time.sleep(0.2)
        if stopped:
            proc.kill()
        proc.wait()
        out.seek(0)
        err.seek(0)
        return {"code": proc.returncode, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"), "stopped": stopped, "rss_seen_mb": round(seen, 1)}


def run(n: int = GOAL_TARGETS, *, concurrency: int = 1000, timeout_s: float = 1800,
        rss_cap_mb: float = 4000) -> dict[str, Any]:
    """Start a local Azure with ``n`` VMs (limits off), run the Fleet in a child, report (see the doc)."""
    where = _common.workdir("scale")
    try:
        began = time.monotonic()
        with _common.start_sim(n, where / "sim", limits={"enabled": False}, sim=SIM_SETTINGS) as sim:
            sim_start_s = time.monotonic() - began
            env = {**os.environ, **sim.env, "AZRUN_RUNTIME_DIR": str(where / "runtime"),
                   "AZRUN_STATE_DIR": str(where / "state")}
            argv = [sys.executable, __file__, "--child", str(concurrency), str(where / "state")]
            child = _run_capped(argv, env, timeout_s=timeout_s, rss_cap_mb=rss_cap_mb)
            arm = [e for e in sim.requests() if e.get("service") == "arm"]
    finally:
        shutil.rmtree(where, ignore_errors=True)
    base = {"n": n, "concurrency": concurrency, "sim_start_s": round(sim_start_s, 1),
            "arm_requests": len(arm), "arm_requests_per_target": round(len(arm) / max(n, 1), 2),
            "arm_requests_by_op": _common.count_by_op(arm), "http_429": _common.count_429(arm)}
    if child["stopped"]:
        return {**base, "stopped": child["stopped"], "peak_rss_mb": child["rss_seen_mb"]}
    if child["code"] != 0:
        raise RuntimeError(f"the Fleet child exited {child['code']}: {child['stderr'].strip()[-1500:]}")
    got = json.loads(child["stdout"].strip().splitlines()[-1])
    per_k = max(n, 1) / 1000
    return {
        **base,
        **got,
        "wall_s": round(got["resolve_s"] + got["run_s"], 2),
        "rss_per_1000_mb": round((got["peak_rss_mb"] - got["baseline_rss_mb"]) / per_k, 1),
        "cpu_per_1000_s": round((got["cpu_s"] - got["baseline_cpu_s"]) / per_k, 2),
    }


def run_sizes(sizes: Sequence[int] = (1000, 3000, GOAL_TARGETS), *, concurrency: int = 1000,
              rss_cap_mb: float = 4000) -> dict[str, Any]:
    """``run`` at each size (ascending) and the per-1,000 slope between the smallest and the largest."""
    runs = [run(n, concurrency=concurrency, rss_cap_mb=rss_cap_mb) for n in sorted(set(sizes))]
    done = [r for r in runs if not r.get("stopped")]
    out: dict[str, Any] = {"runs": runs, "goal_targets": GOAL_TARGETS, "concurrency": concurrency}
    if not done:
        return out | {"rss_slope_mb_per_1000": None, "cpu_slope_s_per_1000": None, "measured_at_goal": False,
                      "peak_rss_mb_at_goal": max(r["peak_rss_mb"] for r in runs), "at_goal_is_lower_bound": True}
    small, big = done[0], done[-1]
    if big["n"] > small["n"]:
        span_k = (big["n"] - small["n"]) / 1000
        out["rss_slope_mb_per_1000"] = round((big["peak_rss_mb"] - small["peak_rss_mb"]) / span_k, 1)
        out["cpu_slope_s_per_1000"] = round((big["cpu_s"] - small["cpu_s"]) / span_k, 2)
    else:
        out["rss_slope_mb_per_1000"] = big["rss_per_1000_mb"]
        out["cpu_slope_s_per_1000"] = big["cpu_per_1000_s"]
    extra_k = max(0, GOAL_TARGETS - big["n"]) / 1000
    out["measured_at_goal"] = big["n"] >= GOAL_TARGETS
    out["peak_rss_mb_at_goal"] = round(big["peak_rss_mb"] + max(0.0, out["rss_slope_mb_per_1000"]) * extra_k, 1)
    out["at_goal_is_lower_bound"] = any(r.get("stopped") for r in runs)
    if out["at_goal_is_lower_bound"]:  # a stopped run proves at least its cap
        out["peak_rss_mb_at_goal"] = max(out["peak_rss_mb_at_goal"], *(r["peak_rss_mb"] for r in runs))
    return out


def report(res: dict[str, Any]) -> list[_common.Row]:
    """The figures beside their goals (``res`` from :func:`run_sizes`)."""
    rows: list[_common.Row] = []
    for r in res["runs"]:
        head = f"{r['n']:,} targets"
        if r.get("stopped"):
            rows.append(_common.Row(f"{head}: client peak RSS", f"> {r['peak_rss_mb']:.0f} MB ({r['stopped']})"))
            continue
        ok = r["outcomes"].get("Succeeded", 0)
        rows += [
            _common.Row(f"{head}: succeeded", f"{ok:,}/{r['targets']:,}", "all", ok == r["targets"] == r["n"]),
            _common.Row(f"{head}: wall (resolve + run)", f"{r['resolve_s']:.1f} + {r['run_s']:.1f} s",
                        "(the simulator bounds it)"),
            _common.Row(f"{head}: client peak RSS", f"{r['peak_rss_mb']:.0f} MB (clients built: {r['baseline_rss_mb']:.0f} MB)"),
            _common.Row(f"{head}: client CPU", f"{r['cpu_s']:.1f} s"),
            _common.Row(f"{head}: ARM requests per target / 429s", f"{r['arm_requests_per_target']:.2f} / {r['http_429']}"),
        ]
    if res["rss_slope_mb_per_1000"] is not None:
        rows += [
            _common.Row("client RSS per 1,000 targets (slope)", f"{res['rss_slope_mb_per_1000']:.1f} MB"),
            _common.Row("client CPU per 1,000 targets (slope)", f"{res['cpu_slope_s_per_1000']:.2f} s"),
        ]
    how = "measured" if res["measured_at_goal"] else "projected from the slope"
    value = f"{res['peak_rss_mb_at_goal']:.0f} MB"
    if res.get("at_goal_is_lower_bound"):
        how, value = "at least", f">= {value}"
    rows.append(_common.Row(f"client peak RSS at {GOAL_TARGETS:,} targets ({how})", value,
                            f"<= {RSS_GOAL_MB:g} MB", res["peak_rss_mb_at_goal"] <= RSS_GOAL_MB))
    return rows


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--child":
        return child_main(int(argv[1]), argv[2])
    sizes = [int(a) for a in argv] or [GOAL_TARGETS]
    result = run_sizes(sizes)
    print(json.dumps(result, indent=1))
    _common.print_table(report(result), title="\nscale: limits off, no-op script, client cost only")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
