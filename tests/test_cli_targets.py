"""``azrun targets`` against the local Azure (test fleet): table, JSON lines, explain, errors.

The test fleet (azrun/sim/fleets/test.toml): production 1111... holds rg-web (vm-web-01..04,
vm-web-stopped deallocated, vm-win-01), rg-ops (vm-ops-01) and rg-scale (vmss-api Uniform x3 with
"2" stopped, vmss-batch Flexible x2); staging 2222... holds vm-stage-01..03. "id-reader" reads
production and has no access to staging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from azrun.cli import main

PROD = "11111111-1111-4111-8111-111111111111"
STAGING = "22222222-2222-4222-8222-222222222222"
WEB = {"vm-web-01", "vm-web-02", "vm-web-03", "vm-web-04"}
STAGE = {"vm-stage-01", "vm-stage-02", "vm-stage-03"}


@pytest.fixture
def cli(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``cli(*args)`` runs ``azrun targets ARGS`` in-process: (exit code, stdout, stderr)."""
    azure_env(local_azure)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["targets", *args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def by_status(stdout: str, status: str) -> set[str]:
    return {r["name"] for r in records(stdout) if r["status"] == status}


def test_table_lists_matches_skips_and_counts(cli: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, err = cli("--tag", "env=prod", "-g", "rg-web")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "RESOURCE", "GROUP", "LOCATION", "OS", "POWER", "TAGS"]
    rows = {line.split()[0]: line.split() for line in lines[1:7]}
    assert set(rows) == WEB | {"vm-win-01", "vm-web-stopped"}
    assert rows["vm-win-01"][1:6] == ["vm", "rg-web", "westeurope", "windows", "running"]
    assert rows["vm-web-stopped"][5:7] == ["deallocated", "(skipped)"]
    assert "skipped vm-web-stopped: VM is deallocated (use --include-stopped to include it)" in lines
    assert lines[-4:] == [
        "6 matched: 5 selected, 1 skipped",
        "by kind: 6 vm",
        "by power state: 1 deallocated, 5 running",
        lines[-1],
    ]
    assert lines[-1].endswith("in 1 subscription")


def test_json_lines_across_subscriptions(cli: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, err = cli("--tag", "role=web", "--all-subscriptions", "-o", "jsonl")
    assert rc == 0
    assert by_status(out, "selected") == WEB | STAGE
    skipped = [r for r in records(out) if r["status"] == "skipped"]
    assert [(r["name"], r["power"], r["reason"]) for r in skipped] == [
        ("vm-web-stopped", "deallocated", "VM is deallocated (use --include-stopped to include it)")
    ]
    first = records(out)[0]
    assert set(first) >= {"id", "name", "kind", "subscription", "resourceGroup", "location", "os", "power", "tags"}
    assert {r["subscription"] for r in records(out)} == {PROD, STAGING}
    assert "8 matched: 7 selected, 1 skipped" in err.splitlines()  # summaries stay off stdout
    assert err.splitlines()[-1].endswith("in 2 subscriptions")


def test_scale_sets_and_include_stopped(cli: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, _ = cli("-g", "rg-scale", "--include-stopped", "-o", "jsonl")
    assert rc == 0
    recs = records(out)
    assert all(r["status"] == "selected" for r in recs)
    kinds = {r["name"]: r["kind"] for r in recs}
    assert {n for n, k in kinds.items() if k == "vmss-uniform-instance"} == {"vmss-api/0", "vmss-api/1", "vmss-api/2"}
    flex = [r for r in recs if r["kind"] == "vmss-flex-member"]
    assert len(flex) == 2 and {r["scaleSet"] for r in flex} == {"vmss-batch"}
    assert {r["name"]: r["power"] for r in recs}["vmss-api/2"] == "stopped"


def test_explain_says_why_machines_were_left_out(cli: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, _ = cli("--tag", "role=web", "-g", "rg-web", "--explain", "-o", "jsonl")
    assert rc == 0
    assert by_status(out, "selected") == WEB
    left_out = {r["name"]: r["reason"] for r in records(out) if r["status"] == "not-selected"}
    assert left_out == {"vm-win-01": "tag role=win does not match --tag role=web"}

    rc, out, _ = cli("--name", "vm-web-0*", "--os", "linux", "-g", "rg-web", "--dry-run")
    assert rc == 0
    lines = out.splitlines()
    assert "not selected:" in lines
    explained = {line.split()[0]: line for line in lines[lines.index("not selected:") + 2:] if line.startswith("vm-")}
    assert set(explained) == {"vm-web-stopped", "vm-win-01"}
    assert "name does not match --name vm-web-0*" in explained["vm-web-stopped"]


def test_no_match_is_a_message_and_exit_0(cli: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, err = cli("--tag", "env=nope")
    assert rc == 0 and err == ""
    assert out.splitlines()[0] == f"no machine matched --tag env=nope in subscription(s) {PROD}"
    rc, out, err = cli("--tag", "env=nope", "-o", "jsonl")
    assert rc == 0 and out == ""
    assert err.splitlines()[0] == f"no machine matched --tag env=nope in subscription(s) {PROD}"


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        ((), "no machine selector given", "add --tag/--name/-g, or --all to target every machine in scope"),
        (("--tag", "=x"), "--tag '=x': the tag name is empty", "--tag key=value"),
        (("--all", "--os", "bsd"), "--os 'bsd': unknown OS", "linux, windows"),
        (("--all", "-s", "prod"), "no visible subscription is named 'prod'", "use the id"),
    ],
)
def test_bad_options_are_one_line_errors(
    cli: Callable[..., tuple[int, str, str]], args: tuple[str, ...], error: str, hint: str
) -> None:
    rc, out, err = cli(*args)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0] == f"error: {error}"
    assert lines[1].startswith("hint: ") and hint in lines[1]


def test_unknown_subscription_names_it(cli: Callable[..., tuple[int, str, str]]) -> None:
    missing = "33333333-3333-4333-8333-333333333333"
    rc, out, err = cli("--all", "-s", PROD, "-s", missing)
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and missing in lines[0] and "not found" in lines[0]


def test_subscription_without_access_names_it(
    cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azrun.sim.fleetspec import load_fleet

    fleet = load_fleet(os.path.join(os.path.dirname(__file__), "..", "azrun", "sim", "fleets", "test.toml"))
    reader = fleet.identity(PROD, "id-reader")
    assert reader is not None
    monkeypatch.setenv("AZRUN_CLIENT_ID", reader.client_id)
    rc, _, err = cli("--all", "-s", STAGING)
    assert rc == 5  # permission denied (the exit-code table in azrun.cli._exit)
    lines = err.splitlines()
    assert len(lines) == 2 and STAGING in lines[0] and "permission denied" in lines[0]
    # the VM and scale-set listings run concurrently: either may be the one reported
    assert "(missing Microsoft.Compute/virtualMachine" in lines[0] and "/read)" in lines[0]


def test_real_process_prints_json_lines(local_azure: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_", "IDENTITY_", "MSI_"))}
    env.update(local_azure.env)
    proc = subprocess.run(
        [sys.executable, "-m", "azrun", "targets", "--tag", "env=staging", "-s", STAGING, "-o", "jsonl"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert by_status(proc.stdout, "selected") == STAGE
    assert "3 matched: 3 selected, 0 skipped" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
