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
        rid = run.stdout.splitlines()[0].strip()
        assert run.stdout.strip().endswith(f"run {rid} succeeded")
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
    finally:
        if worker is not None:
            stop_worker(worker)
        stop_worker(sched)


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
