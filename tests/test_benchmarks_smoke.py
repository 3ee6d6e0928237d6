"""Each benchmark under ``scripts/benchmarks/`` runs at its tiniest size, so none rots unnoticed.

Benchmarks are not tests: CI runs them only here, at sizes that prove the code paths work
(a local Azure starts, requests flow, the report renders), not that the goals are met.
Owners of other benchmarks add a test of the same shape.
"""

from __future__ import annotations

import importlib
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
    result = bench.run(writes=3, reads=3, vms=3, overhead_requests=200)
    load_part, overhead = result["load"], result["overhead"]
    assert load_part["errors"] == [] and load_part["accepted"] == {"writes": 3, "reads": 3}
    assert load_part["throttled_429"] == 0  # far below every bucket
    assert overhead["requests_per_variant"] == 200 and overhead["overhead_us_sync"] > -1000
    assert any(row.figure == "HTTP 429 answers" for row in bench.report(result))


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
