"""Each benchmark under ``scripts/benchmarks/`` runs at its tiniest size, so none rots unnoticed.

Benchmarks are not tests: CI runs them only here, at sizes that prove the code paths work
(a local Azure starts, requests flow, the report renders), not that the goals are met.
Owners of other benchmarks add a test of the same shape.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "scripts" / "benchmarks"


def load(name: str) -> ModuleType:
    """Import ``scripts/benchmarks/<name>.py`` (its directory on ``sys.path`` for ``_common``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def test_common_table_and_fleet() -> None:
    common = load("_common")
    text = common.print_table([common.Row("IMDS 429s", "0", "0", True), common.Row("wall", "1.0 s")])
    header, rule, imds, wall = text.splitlines()
    assert [c.strip() for c in header.split("|")] == ["figure", "value", "goal", "met?"]
    assert set(rule) == {"-", "+"}
    assert [c.strip() for c in imds.split("|")] == ["IMDS 429s", "0", "0", "yes"]
    assert wall.startswith("wall") and not wall.endswith("yes")
    fleet = common.fleet_toml(3, limits={"arm_writes": [20, 5]})
    assert "count = 3" in fleet and "arm_writes = [20, 5]" in fleet
    assert common.bucket_lower_bound_s(300, common.ARM_WRITES) == 10.0
    log = [{"service": "arm", "op": "A", "status": 429}, {"service": "arm", "op": "A", "status": 200},
           {"service": "imds", "op": "IMDS_Token", "status": 429}]
    assert common.count_by_op(log) == {"A": {"requests": 2, "429": 1}}
    assert common.count_429(log) == 1 and common.count_429(log, None) == 2
    assert common.peak_rss_mb() > 1


@pytest.mark.slow
def test_bench_throttle_tiny() -> None:
    bench = load("bench_throttle")
    result = bench.run(writes=3, reads=3, vms=3, overhead_requests=200, memory_targets=300)
    load_part, overhead = result["load"], result["overhead"]
    assert load_part["errors"] == [] and load_part["accepted"] == {"writes": 3, "reads": 3}
    assert load_part["throttled_429"] == 0  # far below every bucket
    assert overhead["requests_per_variant"] == 200 and overhead["overhead_us_sync"] > -1000
    assert any(row.figure == "HTTP 429 answers" for row in bench.report(result))
    assert result["memory"]["targets"] == 300 and result["memory"]["buckets_alive"] >= 3


@pytest.mark.slow
def test_bench_identity_tiny() -> None:
    bench = load("bench_identity")
    result = bench.run(clients=2, ops=2, procs=2, pause_s=0)
    azrun, plain, by_hand = result["in_process"]
    assert azrun["variant"] == "azrun" and azrun["imds_requests"] == 1 and azrun["failed"] == 0
    assert plain["imds_requests"] == 2  # one per credential: the control sees what azrun saves
    assert by_hand["imds_requests"] == 4
    assert [r["succeeded"] for r in result["processes"]] == [2, 2]
    assert all(r["imds_requests"] == 2 for r in result["processes"])
    assert bench.report(result)


# -- the one-command suite (scripts/bench -> run_all) and the benchmarks it drives -----------------------
def test_run_all_plans_every_benchmark_and_renders() -> None:
    run_all = load("run_all")
    for quick, large in ((True, False), (False, False), (False, True)):
        jobs = run_all.plan(quick, large)
        assert {j.benchmark for j in jobs} == set(run_all.BENCHMARKS)
        assert {j.kwargs["variant"] for j in jobs if j.benchmark == "fleet"} == {"azrun", "naive", "threads5", "sequential"}
    sizes = {j.kwargs["n"] for j in run_all.plan(False, True) if j.kwargs.get("variant") == "azrun"}
    assert sizes == {100, 1000, 3000}
    common = load("_common")
    lines = [run_all.Line("x", common.Row("a", "1", "1", True)), run_all.Line("x", common.Row("b", "2", "1", False)),
             run_all.Line("y", common.Row("c", "3"))]
    text = run_all.render(lines)
    assert [row.split("|")[-1].strip() for row in text.splitlines()[2:5]] == ["✓", "✗", "—"]
    assert text.rstrip().endswith("goals met: 1/2")
    args = run_all.parse_args(["--quick", "--only", "fleet", "scale"])
    assert args.quick and args.only == ["fleet", "scale"] and args.json.name == "benchmarks-results.json"


@pytest.mark.slow
def test_run_all_startup_end_to_end(tmp_path: Path) -> None:
    """``run_all --only startup`` runs bench_startup in a child process and writes the JSON document."""
    run_all = load("run_all")
    out = tmp_path / "results.json"
    assert run_all.main(["--quick", "--only", "startup", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and doc["machine"]["nproc"] >= 1 and len(doc["machine"]["load_after"]) == 3
    (job,) = doc["jobs"]
    assert job["error"] is None
    timings = job["result"]["timings"]
    assert set(timings) >= {"python -c pass", "azrun --version", "azrun --help"}
    assert all(t["median_s"] > 0 for t in timings.values())
    assert job["result"]["targets_429"] == 0 and job["result"]["import_offenders"]
    figures = {row["figure"]: row for row in doc["table"]}
    assert figures["azrun --version, median of 3"]["goal"] == "<= 0.3 s"


def test_bench_targets_tiny() -> None:
    bench = load("bench_targets")
    result = bench.run(20)
    assert result["fleet"]["machines"] == 20
    for scenario in result["scenarios"].values():
        assert scenario["http_429"] == 0 and scenario["arm_requests"] >= 1
    assert result["scenarios"]["all machines, all subscriptions"]["selected"] >= 15
    rows = load("run_all").targets_rows(result)
    assert all(r.met for r in rows if r.met is not None)


@pytest.mark.slow
def test_bench_output_tiny() -> None:
    bench = load("bench_output")
    result = bench.run(2, idle_s=1.0, stream_s=6.0, write_every_s=0.5, large_mb=1)
    live = result["live"]
    assert live["lines"] > 2 and live["lines_printed_live"] == live["lines"]
    assert 0 <= live["latency_s"]["p50"] <= live["latency_s"]["p95"] < 30
    assert result["large_output"]["bytes"] >= 1 << 20
    rows = load("run_all").output_rows(result)
    assert rows[0].goal == "p95 <= 2 s" and rows[0].met is not None


@pytest.mark.slow
def test_bench_fleet_azrun_tiny(tmp_path: Path) -> None:
    run_all = load("run_all")
    outcome = run_all.run_job(run_all.Job("fleet", "fleet azrun", "bench_fleet", kwargs={"n": 3, "variant": "azrun"},
                                          timeout_s=120), tmp_path)
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert result["outcomes"] == {"Succeeded": 3} and result["throttled_429"] == 0
    assert result["arm_requests_per_target"] >= 2 and result["client_peak_rss_mb"] > 10
    rows = {r.figure: r for r in run_all.fleet_rows([outcome])}
    assert rows["N=3: azrun HTTP 429s"].met is True and rows["N=3: azrun succeeded"].met is True


@pytest.mark.slow
@pytest.mark.realistic
def test_bench_fleet_realistic_tiny(tmp_path: Path) -> None:
    """Three VMs on the realistic profile, handler install off (~40 s: latency + the 15 s cadence)."""
    run_all = load("run_all")
    job = run_all.Job("fleet_realistic", "fleet realistic", "bench_fleet_realistic",
                      kwargs={"n": 3, "install_s": 0.0}, timeout_s=170)
    outcome = run_all.run_job(job, tmp_path)
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert result["outcomes"] == {"Succeeded": 3} and result["executions"] == 3
    assert result["start_latency_s"]["max"] >= 7  # the recorded dispatch latency, measured
    assert result["bound_s"] >= result["start_latency_s"]["max"] + 5 + 15
    rows = {line.row.figure: line.row for line in run_all.report_lines([outcome])}  # hooked into ./scripts/bench
    assert rows["realistic N=3: 429 answers"].met is True


@pytest.mark.slow
def test_bench_fleet_alternatives_tiny(tmp_path: Path) -> None:
    """naive, threads5 and sequential, with the SDK polling every 0.2 s instead of 30 s (speed only)."""
    run_all = load("run_all")
    outcomes = []
    for variant, n in (("naive", 2), ("threads5", 2), ("sequential", 1)):
        kwargs = {"n": n, "variant": variant, "sdk_polling_interval_s": 0.2}
        outcome = run_all.run_job(run_all.Job("fleet", variant, "bench_fleet", kwargs=kwargs, timeout_s=120), tmp_path)
        assert outcome.error is None, outcome.error
        assert sum(outcome.result["outcomes"].values()) == n == outcome.result["executions"]
        outcomes.append(outcome)
    rows = run_all.fleet_rows(outcomes)
    assert any("projected" in r.figure and "5 threads" in r.figure for r in rows)
    assert any(r.figure.startswith("N=2: naive") for r in rows)


@pytest.mark.slow
def test_bench_scale_tiny() -> None:
    bench = load("bench_scale")
    result = bench.run_sizes([4, 8], concurrency=5)
    for run in result["runs"]:
        assert run["outcomes"] == {"Succeeded": run["n"]} and run["http_429"] == 0
        assert run["peak_rss_mb"] >= run["baseline_rss_mb"] > 10 and run["cpu_s"] > 0
        assert run["arm_requests_per_target"] >= 2
    assert result["rss_slope_mb_per_1000"] is not None and not result["measured_at_goal"]
    (goal,) = [r for r in bench.report(result) if r.goal == f"<= {bench.RSS_GOAL_MB:g} MB"]
    assert "projected" in goal.figure and goal.met is not None


@pytest.mark.slow
def test_bench_sim_tiny() -> None:
    bench = load("bench_sim")
    result = bench.run(vms=20, seconds=1.0, starts=1, clients=4)
    assert result["arm_errors"] == 0
    assert result["arm_requests"] > 0
    rows = bench.report(result)
    assert rows[0].figure.startswith("ready")


def test_bench_heartbeat_tiny() -> None:
    bench = load("bench_heartbeat")
    out = bench.run(3)
    assert out["counts"] == {"Succeeded": 3} and out["ticks"] > 50
    assert 0 <= out["lag_p50_ms"] <= out["lag_p99_ms"] <= out["lag_max_ms"]
    rows = bench.report(out)
    assert rows[0].goal == "< 5 ms" and rows[0].met is (out["lag_p99_ms"] < 5)
