"""Fleets of several subscriptions, worker processes and the local scheduler for the durable tests
(and ``scripts/benchmarks/bench_durable.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RG, LOCATION, IDENTITY = "rg-fleet", "westeurope", "id-azrun"


def sub_id(i: int) -> str:
    return f"{i:08d}-0000-4000-8000-{i:012d}"


def multi_fleet_toml(subs: int, vms: int, *, limits: Mapping[str, Any] | None = None,
                     sim: Mapping[str, Any] | None = None) -> str:  # fmt: skip
    """``subs`` subscriptions of ``vms`` running Linux VMs each (``vm-0001..``, tag env=fleet)."""
    settings = {"current_vm": f"{RG}/vm-0001", "agent_start_delay_s": 0.05, "agent_upload_interval_s": 0.5,
                "agent_status_interval_s": 0.2, "page_size": 500, **(sim or {})}
    lines = ["[sim]", *(f"{k} = {_v(v)}" for k, v in settings.items())]
    if limits:
        lines += ["[limits]", *(f"{k} = {_v(v)}" for k, v in limits.items())]
    for s in range(1, subs + 1):
        lines += [
            "[[subscription]]", f'id = "{sub_id(s)}"', f'name = "fleet-{s:02d}"',
            "  [[subscription.identity]]", f'  name = "{IDENTITY}"', f'  resource_group = "{RG}"',
            "  [[subscription.resource_group]]", f'  name = "{RG}"', f'  location = "{LOCATION}"',
            "    [[subscription.resource_group.vm]]", '    name = "vm-{i:04d}"', f"    count = {vms}",
            "    system_identity = true", '    tags = { env = "fleet" }',
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_v(x) for x in value) + "]"
    return str(value)


def start_worker(env: Mapping[str, str], endpoint: str, log: Path) -> subprocess.Popen[bytes]:
    """``azrun worker`` as a child process (its own session, so a SIGKILL hits it alone)."""
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "azrun", "worker", "--scheduler", endpoint],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full,
                                start_new_session=True)  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count_429(requests: list[dict[str, Any]]) -> int:
    return sum(1 for r in requests if r.get("status") == 429)


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
