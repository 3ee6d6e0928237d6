"""A script per OS: machines without one for their OS end Skipped with the reason, an obvious
mismatch is refused before anything runs, and ``plan`` shows which script each machine gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from azrun.cli._platform import OsScripts, looks_like, split_by_os
from azrun.errors import ConfigError
from azrun.models import RunSpec, Target, TargetKind


def _target(name: str, os_name: str) -> Target:
    rid = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(resource_id=rid, name=name, kind=TargetKind.VM, subscription_id="s", resource_group="rg",
                  location="westeurope", os=os_name, power_state="running")


@pytest.mark.parametrize(
    ("text", "name", "seen"),
    [
        ("echo hi", "", None),
        ("#!/bin/bash\necho hi", "", "linux"),
        ("#!/usr/bin/env python3\nprint(1)", "x", "linux"),
        ("echo hi", "hello.ps1", "windows"),
        ("echo hi", "run.sh", "linux"),
        ("param([string]$Name)\nWrite-Host $Name", "", "windows"),
        ("Get-Service | Select-Object Name", "", "windows"),
        ("#!/usr/bin/env pwsh\nWrite-Output 1", "", "windows"),
        ("@echo off\r\ndir", "", "windows"),
    ],
)
def test_what_a_script_looks_like(text: str, name: str, seen: str | None) -> None:
    assert looks_like(text, name) == seen


def test_split_by_os_skips_and_refuses() -> None:
    from azrun.targets import Selection

    lin, win = _target("vm-lin", "linux"), _target("vm-win", "windows")
    selection = Selection(selector=None, targets=(lin, win), skipped=(), subscriptions=("s",), arm_requests=0)  # type: ignore[arg-type]
    only_linux = OsScripts(linux=("echo hi", "a.sh"))
    kept, skipped = split_by_os(selection, only_linux)
    assert kept.targets == (lin,) and [(s.target.name, s.reason) for s in skipped] == [
        ("vm-win", "no script for Windows")]
    assert kept.skipped == skipped
    with pytest.raises(ConfigError, match=r"hello.ps1 looks like a Windows script but 1 selected machine\(s\) run "
                                          r"Linux: vm-lin") as info:
        split_by_os(selection, OsScripts(any_os=("Write-Host hi", "hello.ps1")))
    assert info.value.hint is not None and "--script-windows hello.ps1" in info.value.hint
    with pytest.raises(ConfigError, match="run Windows: vm-win"):
        split_by_os(selection, OsScripts(any_os=("#!/bin/bash\necho hi", "inline")))
    neutral, none = split_by_os(selection, OsScripts(any_os=("echo hi", "inline")))
    assert neutral.targets == (lin, win) and none == ()


def test_run_spec_gives_each_os_its_script() -> None:
    spec = RunSpec(script="echo linux", os_scripts=(("windows", "Write-Host windows"),))
    assert spec.for_os("Linux").script == "echo linux"
    assert spec.for_os("windows").script == "Write-Host windows" and spec.for_os("windows").os_scripts == ()
    assert "os_scripts_sha256" in spec.public_dict() and "Write-Host" not in json.dumps(spec.public_dict())


def test_a_script_for_the_wrong_os_is_refused_for_its_own_flag(tmp_path: Path) -> None:
    ps1 = tmp_path / "x.ps1"
    ps1.write_text("Write-Host hi\n")
    with pytest.raises(ConfigError, match=r"--script-linux x\.ps1 looks like a Windows script"):
        OsScripts.from_files(ps1, None)


def _azrun(sim: Any, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_"))}
    env.update(sim.env)
    env["AZRUN_STATE_DIR"] = str(state)
    env["AZRUN_RUNTIME_DIR"] = str(state / "runtime")
    return subprocess.run([sys.executable, "-m", "azrun", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_per_os_runs_on_the_local_azure(local_azure: Any, tmp_path: Path) -> None:
    lin = tmp_path / "hello.sh"
    lin.write_text("#!/bin/bash\necho hello from linux\n")
    win = tmp_path / "hello.ps1"
    win.write_text("Write-Host 'hello from windows'\n")
    state = tmp_path / "state"
    before = len(local_azure.admin_get("executions")["value"])

    # a PowerShell script to Linux machines: refused before anything runs (exit 2, nothing executed)
    wrong = _azrun(local_azure, state, "run", "-g", "rg-web", "--all", "-f", str(win))
    assert wrong.returncode == 2, wrong.stderr
    assert "hello.ps1 looks like a Windows script but 4 selected machine(s) run Linux" in wrong.stderr
    assert len(local_azure.admin_get("executions")["value"]) == before

    # only a Linux script: the Windows machine is skipped with the reason
    only = _azrun(local_azure, state, "run", "-g", "rg-web", "--all", "--script-linux", str(lin), "-o", "json", "-q")
    assert only.returncode == 0, only.stderr
    doc = json.loads(only.stdout)
    states = {t["name"]: (t["state"], t["message"]) for t in doc["targets"]}
    assert states["vm-win-01"] == ("Skipped", "no script for Windows")
    assert {s for n, (s, _) in states.items() if n.startswith("vm-web-0")} == {"Succeeded"}

    # a run manifest naming both: plan shows who gets what, nothing dispatched
    manifest = tmp_path / "hello.azrun.toml"
    manifest.write_text('[scripts]\nlinux = "hello.sh"\nwindows = "hello.ps1"\n')
    runs_before = _azrun(local_azure, state, "runs", "-o", "json")
    plan = _azrun(local_azure, state, "plan", "-g", "rg-web", "--all", "-f", str(manifest), "-o", "json")
    assert plan.returncode == 0, plan.stderr
    got = {t["name"]: t.get("script") or t.get("reason") for t in json.loads(plan.stdout)["targets"]}
    assert got["vm-win-01"] == "hello.ps1" and got["vm-web-01"] == "hello.sh"
    assert "deallocated" in got["vm-web-stopped"]
    assert _azrun(local_azure, state, "runs", "-o", "json").stdout == runs_before.stdout  # no run recorded

    both = _azrun(local_azure, state, "run", "-g", "rg-web", "--all", "-f", str(manifest), "-o", "json", "-q",
                  "--max-errors", "100%")
    doc = json.loads(both.stdout)
    states = {t["name"]: (t["state"], t["message"]) for t in doc["targets"]}
    # the Windows machine got its PowerShell script (this local Azure runs it with pwsh when it has one)
    win_state, win_message = states["vm-win-01"]
    assert win_state == "Succeeded" or "PowerShell" in win_message, states
    assert {s for n, (s, _) in states.items() if n.startswith("vm-web-0")} == {"Succeeded"}
    status = _azrun(local_azure, state, "status", "last", "-o", "json", "--query", "script")
    assert json.loads(status.stdout) == "hello.sh + hello.ps1"
