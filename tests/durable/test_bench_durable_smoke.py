"""``scripts/benchmarks/bench_durable.py`` at a tiny size, through ``run_all`` (as ./scripts/bench runs it)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "benchmarks"


def load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.mark.slow
def test_bench_durable_tiny(tmp_path: Path) -> None:
    run_all = load("run_all")
    job = run_all.Job("durable", "durable engine", "bench_durable",
                      kwargs={"subs": 2, "vms": 2, "workers": [1, 2]}, timeout_s=240)  # fmt: skip
    outcome = run_all.run_job(job, tmp_path)
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert [v["variant"] for v in result["variants"]] == ["durable x1", "durable x2", "single process"]
    for v in result["variants"]:
        assert v["status"] == "succeeded" and v["http_429"] == 0 and v["wall_s"] > 0, v
    assert result["bound_s"] > 0
    rows = load("bench_durable").report(result)
    assert all(r.met for r in rows if r.met is not None) and sum(r.met is not None for r in rows) == 3
    assert any(job.module == "bench_durable" for job in run_all.plan(quick=True, large=False))
