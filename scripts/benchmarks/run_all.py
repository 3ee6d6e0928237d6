"""Every benchmark, one table: ``./scripts/bench [--quick] [--large] [--only NAME ...] [--json PATH]``.

Each benchmark (one module under ``scripts/benchmarks/``; a fleet size or variant is a job of its
own) runs in a fresh Python process, so its CPU time and peak RSS are its own and one crash
does not stop the rest. Every job starts its own local Azure with the documented limits (the
scale benchmark turns them off: it measures the client alone). Ratios are computed from figures
measured in the same run. The table prints each figure beside its goal; the raw figures, the
machine (CPUs, Python, load average before and after each job) and the date go to
``benchmarks-results.json`` at the repository root.

Sizes: the default is the issue's (fleet N = 100 and 1,000; the thread-pool and sequential
variants run on a few VMs and are projected to N, see :func:`fleet_jobs`); ``--large`` adds
fleet N = 3,000; ``--quick`` runs everything small for a look in a few minutes (its figures
prove the code paths, not the goals).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402

BENCHMARKS: tuple[str, ...] = ("sim", "startup", "targets", "throttle", "identity", "output", "fleet", "scale", "durable")
RESULTS = _common.REPO / "benchmarks-results.json"
MARK = {True: "✓", False: "✗", None: "—"}
BENCHMARKS += ("heartbeat",)  # the event-loop lag of a run (bench_heartbeat.py)
BENCHMARKS += ("fleet_realistic",)  # the fleet run on the realistic timing profile (bench_fleet_realistic.py)
FLEET_GOAL_RATIO = 1.10
LATENCY_GOAL_S = 2.0


@dataclass(frozen=True, slots=True)
class Job:
    """One benchmark call in a fresh process: ``module.function(**kwargs)`` -> a JSON-able dict."""

    benchmark: str
    label: str
    module: str
    function: str = "run"
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 1800


@dataclass
class Outcome:
    """What a job produced: its figures or its error, and the circumstances."""

    job: Job
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.job.benchmark, "label": self.job.label, "call": f"{self.job.module}.{self.job.function}",
                "kwargs": self.job.kwargs, "seconds": round(self.seconds, 1), "load_before": self.load_before,
                "load_after": self.load_after, "result": self.result, "error": self.error}


# -- the jobs ------------------------------------------------------------------------------------------
def fleet_jobs(sizes: Sequence[int], *, pooled_n: dict[str, int]) -> list[Job]:
    """azrun and the naive fan-out at every size; the pools once each, on ``pooled_n`` VMs.

    A pool of ``c`` workers finishes a VM every ~30 s per worker (the SDK polls the LRO every
    30 s when the status answer has no Retry-After), far below every bucket, so its wall time
    is linear in the number of rounds: the report projects it to each N as
    ``wall x ceil(N / c) / ceil(n / c)``, marked as projected.
    """
    jobs = [Job("fleet", f"fleet {variant} N={n}", "bench_fleet", kwargs={"n": n, "variant": variant}, timeout_s=3600)
            for n in sizes for variant in ("azrun", "naive")]
    jobs += [Job("fleet", f"fleet {variant} n={n}", "bench_fleet", kwargs={"n": n, "variant": variant}, timeout_s=3600)
             for variant, n in pooled_n.items()]
    return jobs


def plan(quick: bool, large: bool) -> list[Job]:
    """Every job of a run, in order (cheap ones first)."""
    if quick:
        fleet_sizes, pooled = [50], {"threads5": 5, "sequential": 1}
        jobs = [
            Job("startup", "start-up", "bench_startup", kwargs={"repeats": 3, "vms": 20}),
            Job("sim", "local Azure", "bench_sim", kwargs={"vms": 200, "seconds": 3, "starts": 1}),
            Job("targets", "target selection", "bench_targets", kwargs={"n": 300}),
            Job("throttle", "throttle", "bench_throttle",
                kwargs={"writes": 250, "reads": 300, "vms": 50, "overhead_requests": 2000}),
            Job("identity", "identity", "bench_identity", kwargs={"clients": 10, "ops": 10, "procs": 5}),
            Job("output", "output", "bench_output",
                kwargs={"targets": 10, "idle_s": 5.0, "stream_s": 6.0, "large_mb": 4}),
            Job("heartbeat", "event-loop lag", "bench_heartbeat", kwargs={"n": 50}),
        ]
        scale = [1000, 2000]  # sizes under max_concurrency (1000) would overstate the slope
    else:
        fleet_sizes, pooled = [100, 1000] + ([3000] if large else []), {"threads5": 25, "sequential": 5}
        jobs = [
            Job("startup", "start-up", "bench_startup", kwargs={"repeats": 5, "vms": 50}),
            Job("sim", "local Azure", "bench_sim", kwargs={"vms": 1000, "seconds": 10, "starts": 3}),
            Job("targets", "target selection", "bench_targets", kwargs={"n": 2000}),
            Job("throttle", "throttle", "bench_throttle", kwargs={}),
            Job("identity", "identity", "bench_identity", kwargs={"clients": 50, "ops": 20, "procs": 20}),
            Job("output", "output", "bench_output", kwargs={"targets": 50}),
            Job("heartbeat", "event-loop lag", "bench_heartbeat", kwargs={"n": 100}),
        ]
        scale = [1000, 3000, 10_000]
    jobs += fleet_jobs(fleet_sizes, pooled_n=pooled)
    realistic = [{"n": 20, "install_s": 0.0}] if quick else [{"n": 100}, {"n": 1000}]
    jobs += [Job("fleet_realistic", f"fleet realistic N={kw['n']}", "bench_fleet_realistic", kwargs=kw, timeout_s=3600)
             for kw in realistic]
    jobs.append(Job("scale", "scale", "bench_scale", "run_sizes", {"sizes": scale}, timeout_s=7200))
    durable = {"subs": 4, "vms": 5} if quick else {"subs": 20, "vms": 250}
    jobs.append(Job("durable", "durable engine", "bench_durable", kwargs=durable, timeout_s=7200))
    return jobs


# -- running -------------------------------------------------------------------------------------------
def child_main(module: str, function: str, kwargs_json: str, out_path: str) -> int:
    """In the fresh process: call the benchmark and write its dict as JSON."""
    result = getattr(importlib.import_module(module), function)(**json.loads(kwargs_json))
    Path(out_path).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


def run_job(job: Job, scratch: Path) -> Outcome:
    """Run one job in a fresh interpreter; on failure the end of its output is the error."""
    stem = f"{job.module}-{uuid.uuid4().hex[:12]}"
    out_path, log_path = scratch / f"{stem}.json", scratch / f"{stem}.log"
    argv = [sys.executable, __file__, "--child", job.module, job.function, json.dumps(job.kwargs), str(out_path)]
    outcome = Outcome(job, load_before=_load())
    began = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=_common.REPO)
        try:
            code = proc.wait(timeout=job.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            outcome.error = f"timed out after {job.timeout_s:g} s"
    outcome.seconds = time.monotonic() - began
    outcome.load_after = _load()
    if code == 0 and out_path.exists():
        outcome.result = json.loads(out_path.read_text(encoding="utf-8"))
    elif outcome.error is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip()[-3000:]
        outcome.error = f"exit code {code}: {tail}"
    return outcome


def _load() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(), "machine": platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    return info


# -- reporting -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    """One line of the final table."""

    benchmark: str
    row: _common.Row

    def cells(self) -> tuple[str, str, str, str, str]:
        r = self.row
        return self.benchmark, r.figure, r.value, r.goal, MARK[r.met]


def _module_report(module: str) -> Callable[[dict[str, Any]], list[_common.Row]]:
    return importlib.import_module(module).report  # type: ignore[no-any-return]


def targets_rows(result: dict[str, Any]) -> list[_common.Row]:
    """Selection costs O(resource groups + scale sets) requests, not O(VMs), and meets no 429."""
    shape = result["fleet"]
    containers = shape.get("resource_groups", 0) + shape.get("uniform_scale_sets", 0) + shape.get("flex_scale_sets", 0)
    rows = [_common.Row("fleet", f"{shape.get('machines', result['n']):,} machines in {containers} groups + scale sets")]
    for name, sc in result["scenarios"].items():
        rows.append(_common.Row(f"{name}: ARM requests / 429s / wall",
                                f"{sc['arm_requests']} / {sc['http_429']} / {sc['wall_s']:.2f} s ({sc['selected']:,} selected)",
                                f"0 429s, <= {containers + 10} requests",
                                sc["http_429"] == 0 and sc["arm_requests"] <= containers + 10))
    return rows


def output_rows(result: dict[str, Any]) -> list[_common.Row]:
    live, large = result["live"], result["large_output"]
    lat, first = live["latency_s"], live["first_line_after_idle_latency_s"]
    per_min = live["storage_requests_per_target_minute"]
    n = live["targets"]
    return [
        _common.Row(f"append-to-print latency p50 / p95, {n} streaming targets", f"{lat['p50']:.2f} / {lat['p95']:.2f} s",
                    f"p95 <= {LATENCY_GOAL_S:g} s", lat["p95"] is not None and lat["p95"] <= LATENCY_GOAL_S),
        _common.Row("first line after an idle period, p50 / p95", f"{first['p50']:.2f} / {first['p95']:.2f} s",
                    "(polls backed off to 5 s)"),
        _common.Row("lines printed live", f"{live['lines_printed_live']:,}/{live['lines']:,}", "all",
                    live["lines_printed_live"] == live["lines"]),
        _common.Row("storage requests per target-minute, idle / streaming",
                    f"{per_min['idle']:g} / {per_min['streaming']:g}"),
        _common.Row("storage polls per second, idle / streaming (every target live)",
                    f"{live['storage_requests_per_s']['idle']:g} / {live['storage_requests_per_s']['streaming']:g}"
                    f" (stretch x{live['max_stretch']:g})", f"<= {live['poll_budget_rps']:g} + final reads",
                    live["storage_requests_per_s"]["idle"] <= live["poll_budget_rps"] * 1.1)
        if "storage_requests_per_s" in live else _common.Row("storage polls per second", "-"),
        _common.Row(f"one {large['bytes'] / 2**20:.0f} MiB output: tail / download", f"{large['tail_complete_mb_s']:g} / "
                    f"{large['download_mb_s']:g} MB/s"),
    ]


def identity_rows(result: dict[str, Any]) -> list[_common.Row]:
    """bench_identity's rows; the goals are azrun's, so the plain azure-identity rows are context."""
    rows = _module_report("bench_identity")(result)
    return [r if ", azrun:" in r.figure or r.met is None else
            _common.Row(r.figure, r.value, f"(azrun's goal: {r.goal})", None) for r in rows]


def fleet_rows(outcomes: Sequence[Outcome]) -> list[_common.Row]:
    """Per size: azrun against the bound and its goal, then each alternative (pools projected)."""
    bench_fleet = importlib.import_module("bench_fleet")
    got = {(o.result["variant"], o.result["n"]): o.result for o in outcomes if o.result}
    sizes = sorted({n for (v, n) in got if v in ("azrun", "naive")})
    pooled = {v: r for (v, _), r in got.items() if v in ("threads5", "sequential")}
    rows: list[_common.Row] = []
    for n in sizes:
        bound = bench_fleet.lower_bound_s(n)
        azrun = got.get(("azrun", n))
        rows.append(_common.Row(f"N={n}: lower bound (buckets + 5 s script)", f"{bound:.1f} s"))
        if azrun:
            rows += _azrun_rows(n, azrun, bound)
        naive = got.get(("naive", n))
        if naive:
            rows += _other_rows(n, "naive asyncio, no throttle", naive, naive["wall_s"], bound, azrun, projected=False)
        for variant, r in pooled.items():
            c = {"threads5": 5, "sequential": 1}[variant]
            wall = r["wall_s"] * math.ceil(n / c) / math.ceil(r["n"] / c)
            label = {"threads5": "5 threads (seed pattern)", "sequential": "sequential"}[variant]
            rows += _other_rows(n, f"{label}, from n={r['n']}", r, wall, bound, azrun, projected=True)
    return rows


def _azrun_rows(n: int, r: dict[str, Any], bound: float) -> list[_common.Row]:
    ok = r["outcomes"].get("Succeeded", 0)
    ratio = r["wall_s"] / bound
    return [
        _common.Row(f"N={n}: azrun wall / lower bound", f"{r['wall_s']:.1f} s = {ratio:.2f}x",
                    f"<= {FLEET_GOAL_RATIO:.2f}x", ratio <= FLEET_GOAL_RATIO),
        _common.Row(f"N={n}: azrun HTTP 429s", str(r["throttled_429"]), "0", r["throttled_429"] == 0),
        _common.Row(f"N={n}: azrun succeeded", f"{ok}/{n}", "all", ok == n),
        _common.Row(f"N={n}: azrun ARM requests per target", f"{r['arm_requests_per_target']:.2f}"),
        _common.Row(f"N={n}: azrun client CPU / peak RSS", f"{r['client_cpu_s']:.1f} s / {r['client_peak_rss_mb']:.0f} MB"),
    ]


def _other_rows(n: int, label: str, r: dict[str, Any], wall: float, bound: float, azrun: dict[str, Any] | None,
                *, projected: bool) -> list[_common.Row]:
    ok = sum(v for k, v in r["outcomes"].items() if k.lower().endswith("succeeded"))
    vs = f", {wall / azrun['wall_s']:.1f}x azrun" if azrun and azrun["wall_s"] > 0 else ""
    failed = f" ({r['n'] - ok} of {r['n']} failed)" if ok < r["n"] else ""
    wall_text = f"{'~' if projected else ''}{wall:,.0f} s = {wall / bound:.1f}x bound{vs}{failed}"
    per = f" (on {r['n']})" if projected else ""
    return [
        _common.Row(f"N={n}: {label}: wall{' (projected)' if projected else ''}", wall_text),
        _common.Row(f"N={n}: {label}: 429s / ARM req per target{per}",
                    f"{r['throttled_429']} / {r['arm_requests_per_target']:.2f}"),
        _common.Row(f"N={n}: {label}: succeeded{per} / CPU / peak RSS",
                    f"{ok}/{r['n']} / {r['client_cpu_s']:.1f} s / {r['client_peak_rss_mb']:.0f} MB"),
    ]


def report_lines(outcomes: Sequence[Outcome]) -> list[Line]:
    """The table: every benchmark's rows (a failed job shows its error)."""
    lines: list[Line] = []
    for o in outcomes:
        if o.error is not None:
            first = o.error.strip().splitlines()[-1] if o.error.strip() else o.error
            lines.append(Line(o.job.benchmark, _common.Row(f"{o.job.label}: FAILED", first[:100], "runs", False)))
    done = [o for o in outcomes if o.result is not None]
    for name in BENCHMARKS:
        mine = [o for o in done if o.job.benchmark == name]
        if not mine:
            continue
        if name == "fleet":
            lines += [Line(name, r) for r in fleet_rows(mine)]
            continue
        for o in mine:
            assert o.result is not None
            rows = {"targets": targets_rows, "output": output_rows, "identity": identity_rows}.get(name) \
                or _module_report(o.job.module)
            try:
                lines += [Line(name, r) for r in rows(o.result)]
            except (KeyError, TypeError, ValueError) as exc:
                lines.append(Line(name, _common.Row(f"{o.job.label}: report failed", repr(exc)[:100], "", False)))
    return lines


def render(lines: Sequence[Line]) -> str:
    header = ("benchmark", "figure", "value", "goal", "met")
    cells = [header, *(line.cells() for line in lines)]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    text = [" | ".join(c[i].ljust(widths[i]) for i in range(5)).rstrip() for c in cells]
    text.insert(1, "-+-".join("-" * w for w in widths))
    goals = [line.row.met for line in lines if line.row.met is not None]
    text.append(f"\ngoals met: {sum(goals)}/{len(goals)}")
    return "\n".join(text)


# -- entry point ---------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run every benchmark against its own local Azure; print one table of figures beside their "
                    "goals and write them to benchmarks-results.json.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a look in a few minutes")
    parser.add_argument("--large", action="store_true", help="add fleet N=3000")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the figures (default {RESULTS.name})")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    if len(argv) == 5 and argv[0] == "--child":
        return child_main(*argv[1:])
    args = parse_args(argv)
    jobs = [j for j in plan(args.quick, args.large) if not args.only or j.benchmark in args.only]
    started = dt.datetime.now(dt.timezone.utc)
    info = {**machine(), "load_before": _load()}
    print(f"azrun benchmarks ({'quick' if args.quick else 'large' if args.large else 'default'} sizes), "
          f"{info['nproc']} CPUs, load average {info['load_before']}", flush=True)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="azrun-bench-") as scratch:
        for i, job in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {job.label} ...", end="", flush=True)
            outcome = run_job(job, Path(scratch))
            outcomes.append(outcome)
            status = "ok" if outcome.error is None else "FAILED"
            print(f" {status} in {outcome.seconds:.0f} s (load {outcome.load_after[0]:.1f})", flush=True)
    info["load_after"] = _load()
    lines = report_lines(outcomes)
    table = render(lines)
    print("\n" + table, flush=True)
    document = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "large" if args.large else "default",
        "machine": info,
        "note": "load_* are os.getloadavg() (1, 5, 15 min); other work on the machine skews wall times",
        "table": [dict(zip(("benchmark", "figure", "value", "goal", "met"), line.cells(), strict=True)) for line in lines],
        "jobs": [o.to_json() for o in outcomes],
    }
    args.json.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"figures written to {args.json}", flush=True)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
