"""End-to-end tests against real Azure, on the deployment in infra/ (see infra/README.md).

Skipped unless ``AZRUN_LIVE_SUBSCRIPTION`` is set, so CI never runs them. They drive the real
``azrun`` command line in subprocesses with whatever identity azrun finds (``az login`` on a
laptop; a managed identity on a VM), and read Azure directly only to check that nothing was left
behind.

Environment:
    AZRUN_LIVE_SUBSCRIPTION       subscription of the deployment (required)
    AZRUN_LIVE_RESOURCE_GROUP     default ``rg-azrun-test``
    AZRUN_LIVE_TAG                default ``azrun-test=true``
    AZRUN_LIVE_MACHINES           expected number of machines (default 6)
    AZRUN_LIVE_OUTPUT_CONTAINER   output container URL (the output tests skip without it)
    AZRUN_LIVE_BLOB_IDENTITY      client id of the VMs' output identity (managed-identity test)

tests/conftest.py clears ``AZURE_*`` / ``AZRUN_*`` for every test, so the settings and the
original environment are captured when this module is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_ORIGINAL_ENV = dict(os.environ)
# How azrun reaches the cloud (a custom cloud such as the local Azure), not user preferences.
_AZRUN_CONNECTION = ("AZRUN_ARM_ENDPOINT", "AZRUN_CA_BUNDLE", "AZRUN_CLOUD", "AZRUN_AUTH", "AZRUN_CLIENT_ID")


@dataclass(frozen=True)
class Live:
    subscription: str
    resource_group: str
    tag: str
    machines: int
    output_container: str
    blob_identity: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Live:
        return cls(
            subscription=env.get("AZRUN_LIVE_SUBSCRIPTION", ""),
            resource_group=env.get("AZRUN_LIVE_RESOURCE_GROUP", "rg-azrun-test"),
            tag=env.get("AZRUN_LIVE_TAG", "azrun-test=true"),
            machines=int(env.get("AZRUN_LIVE_MACHINES", "6")),
            output_container=env.get("AZRUN_LIVE_OUTPUT_CONTAINER", ""),
            blob_identity=env.get("AZRUN_LIVE_BLOB_IDENTITY", ""),
        )


LIVE = Live.from_env(_ORIGINAL_ENV)

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not LIVE.subscription, reason="set AZRUN_LIVE_SUBSCRIPTION to run the live tests"),
    pytest.mark.timeout(1800),
]

HELLO_SH = """#!/bin/bash
# --- azrun ---
# description = "live test: greet from every machine"
# [parameters.greeting]
# type = "string"
# pattern = "^[a-z]{2,10}$"
# required = true
# --- end ---
echo "$greeting from $(hostname)"
echo "to stderr" >&2
"""


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def json(self) -> Any:
        """stdout as one JSON document (what ``-o json`` prints)."""
        return json.loads(self.stdout)


class Azrun:
    """Runs ``python -m azrun`` with the developer's environment plus a private state dir."""

    def __init__(self, home: Path) -> None:
        self.env = {k: v for k, v in _ORIGINAL_ENV.items() if not k.startswith(("AZRUN_LIVE_", "PYTEST_"))}
        self.env.update(
            AZURE_SUBSCRIPTION_ID=LIVE.subscription,
            AZRUN_STATE_DIR=str(home / "state"),
            XDG_CONFIG_HOME=str(home / "config"),  # no personal config file in the way
        )

    def __call__(self, *args: str, extra_env: Mapping[str, str] | None = None, timeout_s: int = 1200) -> Done:
        proc = subprocess.run(
            [sys.executable, "-m", "azrun", *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        done = Done(proc.returncode, proc.stdout, proc.stderr)
        for text in (done.stdout, done.stderr):
            assert "eyJ" not in text, "a token-shaped string reached the output"
            assert "sig=" not in text.replace("sig=REDACTED", ""), "a SAS signature reached the output"
        return done


@pytest.fixture(scope="module")
def azrun(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azrun]:
    cli = Azrun(tmp_path_factory.mktemp("live"))
    yield cli
    # Leave the fleet clean even when a test failed half-way.
    cli("cleanup", "--all-azrun", "--older-than", "0s", "--tag", LIVE.tag, "-g", LIVE.resource_group)


@pytest.fixture(autouse=True)
def _developer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give in-process azrun code (the leftover check) the environment the suite started with."""
    for key, value in _ORIGINAL_ENV.items():
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_")) or key in _AZRUN_CONNECTION:
            monkeypatch.setenv(key, value)


def _select() -> list[str]:
    return ["--tag", LIVE.tag, "-g", LIVE.resource_group, "-s", LIVE.subscription]


def _need_output() -> None:
    if not LIVE.output_container:
        pytest.skip("set AZRUN_LIVE_OUTPUT_CONTAINER for the output tests")


def test_auth(azrun: Azrun) -> None:
    done = azrun("auth")
    assert done.returncode == 0, done.stderr
    assert LIVE.subscription in done.stdout + done.stderr


def test_targets_finds_the_whole_fleet(azrun: Azrun) -> None:
    done = azrun("targets", *_select(), "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = [r for r in done.json() if r.get("status") == "selected"]
    assert len(rows) == LIVE.machines, [r["name"] for r in rows]
    assert {r["kind"] for r in rows} == {"vm", "vmss-uniform-instance", "vmss-flex-member"}
    assert all(r["resourceGroup"].lower() == LIVE.resource_group.lower() for r in rows)
    assert all(r["power"] == "running" for r in rows)


def _run_and_check(azrun: Azrun, *extra: str) -> str:
    """Run HELLO_SH on the fleet with output blobs; check states, blobs and cleanup; return the run id."""
    script = Path(azrun.env["AZRUN_STATE_DIR"]).parent / "hello.sh"
    script.write_text(HELLO_SH, encoding="utf-8")
    done = azrun(
        "run", *_select(), "--script", str(script), "--param", "greeting=hello",
        "--timeout", "10m", "--max-concurrency", "10", "--output-mode", "json",
        "--output-container", LIVE.output_container, *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [r for r in done.json_lines() if r.get("stream") == "stdout"]
    assert len({r["target"] for r in lines if "hello from" in r["line"]}) == LIVE.machines

    status = azrun("status", "--all", "-o", "json")
    assert status.returncode == 0, status.stderr
    doc = status.json()
    rows = doc["targets"]
    assert len(rows) == LIVE.machines and doc["counts"]["total"] == LIVE.machines
    assert {r["state"] for r in rows} == {"Succeeded"} and doc["exitCode"] == 0
    assert all(r["exitCode"] == 0 and r["stdoutUrl"] and "?" not in r["stdoutUrl"] for r in rows)
    run_id = str(doc["runId"])
    assert all(r["runId"] == run_id for r in rows)

    download = Path(azrun.env["AZRUN_STATE_DIR"]).parent / f"logs-{run_id}"
    logs = azrun("logs", run_id, "--download", str(download), "--output-container", LIVE.output_container)
    assert logs.returncode == 0, logs.stderr
    texts = [p.read_text(errors="replace") for p in download.rglob("*") if p.is_file()]
    assert sum("hello from" in t for t in texts) == LIVE.machines
    assert sum("to stderr" in t for t in texts) == LIVE.machines

    _assert_no_run_commands_left(run_id)
    return run_id


def test_run_with_sas_output(azrun: Azrun) -> None:
    _need_output()
    _run_and_check(azrun)


def test_run_with_managed_identity_output(azrun: Azrun) -> None:
    _need_output()
    if not LIVE.blob_identity:
        pytest.skip("set AZRUN_LIVE_BLOB_IDENTITY for the managed-identity output test")
    _run_and_check(azrun, "--blob-identity", LIVE.blob_identity)


def test_bad_parameter_is_refused_before_dispatch(azrun: Azrun) -> None:
    script = Path(azrun.env["AZRUN_STATE_DIR"]).parent / "hello-bad.sh"
    script.write_text(HELLO_SH, encoding="utf-8")
    done = azrun("run", *_select(), "--script", str(script), "--param", "greeting=NOT_OK")
    assert done.returncode == 2
    assert "does not match ^[a-z]{2,10}$" in done.stderr
    assert "run " not in done.stdout  # nothing was started


def test_failing_script_is_reported_per_machine(azrun: Azrun) -> None:
    done = azrun(
        "run", *_select(), "--command", "echo failing on purpose; exit 3", "--max-errors", "100%",
        "--timeout", "5m", "--output-mode", "quiet",
    )  # fmt: skip
    assert done.returncode == 1
    status = azrun("status", "--all", "-o", "json")
    assert status.returncode == 1  # the status of a failed run exits 1, like the run did
    doc = status.json()
    assert {r["state"] for r in doc["targets"]} == {"Failed"} and doc["exitCode"] == 1
    assert {r["exitCode"] for r in doc["targets"]} == {3}
    _assert_no_run_commands_left(str(doc["runId"]))


def _assert_no_run_commands_left(run_id: str) -> None:
    """Every machine of the fleet: no run command of this run remains (azrun deletes them)."""
    from azrun.clients import ClientFactory
    from azrun.runcommand import run_command_name

    name = run_command_name(run_id).lower()
    env = {**_ORIGINAL_ENV, "AZURE_SUBSCRIPTION_ID": LIVE.subscription}
    compute = ClientFactory.from_env(env).compute(LIVE.subscription)
    rg = LIVE.resource_group
    left: list[str] = []
    for vm in compute.virtual_machines.list(rg):
        vm_name = str(vm.name)
        left += [
            f"{vm_name}/{rc.name}"
            for rc in compute.virtual_machine_run_commands.list_by_virtual_machine(rg, vm_name)
        ]
    for vmss in compute.virtual_machine_scale_sets.list(rg):
        if (vmss.orchestration_mode or "Uniform") != "Uniform":
            continue  # Flexible members are listed as VMs above
        vmss_name = str(vmss.name)
        for inst in compute.virtual_machine_scale_set_vms.list(rg, vmss_name):
            iid = str(inst.instance_id)
            runs = compute.virtual_machine_scale_set_vm_run_commands.list(rg, vmss_name, iid)
            left += [f"{vmss_name}/{iid}/{rc.name}" for rc in runs]
    assert not [item for item in left if item.lower().endswith("/" + name)], left
