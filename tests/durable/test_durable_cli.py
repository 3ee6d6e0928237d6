"""``azrun durable scheduler`` + ``azrun worker`` + ``azrun durable run --follow / status / logs / runs``,
each a process of its own, on the local Azure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.durable.support import ROOT, multi_fleet_toml, start_worker, stop_worker, wait_for


def _azrun(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "azrun", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_durable_cli_end_to_end(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory(multi_fleet_toml(2, 2), storage=True)
    env = {**os.environ, **sim.env, "PYTHONPATH": str(ROOT)}
    address_file = tmp_path / "scheduler"
    sched = subprocess.Popen([sys.executable, "-m", "azrun", "durable", "scheduler", "--port", "0",
                              "--address-file", str(address_file)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    worker = None
    try:
        assert wait_for(address_file.exists, 30)
        addr = address_file.read_text().strip()
        env["AZRUN_DURABLE_ENDPOINT"] = addr
        worker = start_worker(env, addr, tmp_path / "worker.log")
        run = _azrun(env, "durable", "run", "--tag", "env=fleet", "--all-subscriptions", "-c", "echo hi-$(hostname)",
                     "--max-concurrency", "100%", "--poll", "0.3", "--follow")  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        # the targets' output lines live (the blobs tailed), then the summary as a local run prints it
        first = next(line for line in run.stdout.splitlines() if line.startswith("run "))
        rid = first.split()[1].rstrip(":")
        assert "hi-vm-0001" in run.stdout and "hi-vm-0002" in run.stdout
        assert run.stdout.index("hi-vm-0002") < run.stdout.index(first)
        assert "4 targets" in first and "Succeeded: 4" in first, run.stdout
        assert run.stderr.count(" Succeeded") == 4 and "vm-0002" in run.stderr  # a line per finished target
        status = _azrun(env, "durable", "status", rid, "-o", "json")
        doc = json.loads(status.stdout)
        assert status.returncode == 0 and doc["status"] == "succeeded" and doc["counts"] == {"Succeeded": 4}
        assert doc["throttled429"] == 0 and len(doc["shards"]) == 2
        logs = _azrun(env, "durable", "logs", rid)
        assert logs.returncode == 0 and "vm-0002: hi-vm-0002" in logs.stdout and logs.stdout.count("Succeeded") == 4
        runs = _azrun(env, "durable", "runs")
        assert runs.returncode == 0 and rid in runs.stdout
        unknown = _azrun(env, "durable", "status", "20990101-0000-000000")
        assert unknown.returncode == 3 and "durable runs" in unknown.stderr
        _engine_durable(env)
    finally:
        if worker is not None:
            stop_worker(worker)
        stop_worker(sched)


def _engine_durable(env: dict[str, str]) -> None:
    """``azrun run --engine durable``: the id at once, or followed with canary / waves / soak."""
    sel = ("--tag", "env=fleet", "--all-subscriptions")
    plain = _azrun(env, "run", *sel, "--engine", "durable", "-c", "true", "-o", "json")
    assert plain.returncode == 0, plain.stderr
    doc = json.loads(plain.stdout)
    assert doc["targets"] == 4 and doc["runId"]
    # the canary (first wave of 1, no error allowed) fails: the rest is Skipped with the reason
    canary = _azrun(env, "run", *sel, "-c", "exit 3", "--canary", "1", "--follow", "-o", "json",
                    "--engine", "durable")  # fmt: skip
    assert canary.returncode == 1, canary.stderr
    doc = json.loads(canary.stdout)
    assert doc["counts"] == {"total": 4, "Failed": 1, "Skipped": 3}, doc["counts"]
    assert doc["notes"] and doc["notes"][0].startswith("canary failed (vm-"), doc["notes"]
    assert {t["message"] for t in doc["targets"] if t["state"] == "Skipped"} == {doc["notes"][0]}
    # two waves with a soak between them (a durable timer): wave 2 starts >= the soak after wave 1 ended
    waves = _azrun(env, "run", *sel, "-c", "echo w", "--waves", "50%,100%", "--soak", "6s", "--engine", "durable",
                   "--follow", "-o", "json")  # fmt: skip
    assert waves.returncode == 0, waves.stderr
    doc = json.loads(waves.stdout)
    assert doc["counts"] == {"total": 4, "Succeeded": 4}
    from datetime import datetime

    spans = sorted((datetime.fromisoformat(t["startedAt"]), datetime.fromisoformat(t["endedAt"])) for t in doc["targets"])
    gap = (spans[2][0] - max(spans[0][1], spans[1][1])).total_seconds()
    assert gap >= 5.5, spans


def test_engine_durable_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    env = {**os.environ, "AZRUN_DURABLE_ENDPOINT": "127.0.0.1:1", "PYTHONPATH": str(ROOT)}
    retries = _azrun(env, "run", "--all", "-c", "true", "--engine", "durable", "--retries", "2")
    assert retries.returncode == 2 and "--retries" in retries.stderr and "--engine local" in retries.stderr
    state = _azrun(env, "run", "--all", "-c", "true", "--engine", "durable", "--state-dir", str(tmp_path))
    assert state.returncode == 2 and "--state-dir is not available with --engine durable" in state.stderr
    follow = _azrun(env, "run", "--all", "-c", "true", "--follow")
    assert follow.returncode == 2 and "--follow is for durable runs" in follow.stderr and "--engine durable" in follow.stderr
    bad = _azrun({**env, "AZRUN_ENGINE": "cloud"}, "run", "--all", "-c", "true")
    assert bad.returncode == 2 and "AZRUN_ENGINE" in bad.stderr and "local, durable" in bad.stderr


def test_worker_without_a_scheduler_is_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZRUN_DURABLE")}
    proc = _azrun(env, "worker")
    assert proc.returncode == 2 and "no durable scheduler" in proc.stderr and "AZRUN_DURABLE_ENDPOINT" in proc.stderr


def test_worker_stops_on_sigterm(scheduler: Any, tmp_path: Path) -> None:
    import signal

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZRUN_")}
    proc = start_worker(env, scheduler.address, tmp_path / "w.log")
    try:
        assert wait_for(lambda: "serving" in (tmp_path / "w.log").read_text(), 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        stop_worker(proc, kill=True)
