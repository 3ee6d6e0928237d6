"""``-o/--output table|json|jsonl`` means the same on every command that prints records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _azrun(sim: Any, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_"))}
    env.update(sim.env)
    env["AZRUN_STATE_DIR"] = str(state)
    env["AZRUN_RUNTIME_DIR"] = str(state / "runtime")
    return subprocess.run(
        [sys.executable, "-m", "azrun", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_output_json_on_auth_runs_and_status(local_azure: Any, tmp_path: Path) -> None:
    auth = _azrun(local_azure, tmp_path, "auth", "-o", "json")
    assert auth.returncode == 0, auth.stderr
    assert json.loads(auth.stdout)["auth_mode"] == "msi"

    run = _azrun(local_azure, tmp_path, "run", "--name", "vm-web-01", "--command", "echo hi", "-q")
    assert run.returncode == 0, run.stderr

    runs = _azrun(local_azure, tmp_path, "runs", "-o", "jsonl")
    assert runs.returncode == 0, runs.stderr
    rows = [json.loads(line) for line in runs.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "succeeded"

    status = _azrun(local_azure, tmp_path, "status", "--output", "json")
    assert status.returncode == 0, status.stderr
    states = [json.loads(line) for line in status.stdout.splitlines()]
    assert [(s["name"], s["state"]) for s in states] == [("vm-web-01", "Succeeded")]
    assert "\x1b[" not in status.stdout
