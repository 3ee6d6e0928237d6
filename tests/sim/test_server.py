"""The whole local Azure as a subprocess: env file, start-up time, real clients, clean shutdown."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from azrun.sim.launcher import SimProcess, SimStartError, parse_env_file
from azrun.sim.tokens import parse

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Azurite needs node")

SUB = "00000000-0000-4000-8000-000000000001"
FLEET = f"""
[sim]
current_vm = "rg-ops/vm-ops-01"
agent_start_delay_s = 0.0
agent_upload_interval_s = 0.2
agent_status_interval_s = 0.2

[[subscription]]
id = "{SUB}"
name = "sub-one"
[[subscription.identity]]
name = "id-azrun"
resource_group = "rg-ops"
[[subscription.resource_group]]
name = "rg-ops"
location = "westeurope"
[[subscription.resource_group.vm]]
name = "vm-ops-01"
system_identity = true
user_identities = ["id-azrun"]
"""

STORAGE_KEYS = {"AZRUN_STORAGE_ENDPOINT", "AZRUN_STORAGE_CONNECTION_STRING", "AZRUN_OUTPUT_CONTAINER"}
BASE_KEYS = {
    "AZRUN_ARM_ENDPOINT",
    "AZRUN_CA_BUNDLE",
    "AZRUN_SIM_ADMIN",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZRUN_SIM_APPSERVICE_ENDPOINT",
    "AZRUN_SIM_APPSERVICE_HEADER",
    "AZURE_SUBSCRIPTION_ID",
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    process = SimProcess(FLEET, workdir=tmp_path_factory.mktemp("server"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (to find Azurite by its --location)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and "azurite" in cmdline:
                found.append(int(entry.name))
    return found


def test_env_file_has_every_key_and_stdout_repeats_it(sim: SimProcess) -> None:
    assert set(sim.env) == BASE_KEYS | STORAGE_KEYS
    assert sim.env["AZRUN_ARM_ENDPOINT"].startswith("https://127.0.0.1:")
    assert sim.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"].startswith("http://127.0.0.1:")
    assert sim.env["AZRUN_SIM_ADMIN"] == sim.env["AZRUN_ARM_ENDPOINT"] + "/_sim"
    assert sim.env["AZRUN_OUTPUT_CONTAINER"] == sim.env["AZRUN_STORAGE_ENDPOINT"] + "/azrun-output"
    assert sim.env["AZURE_SUBSCRIPTION_ID"] == SUB
    assert Path(sim.env["AZRUN_CA_BUNDLE"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    text = sim.env_file.read_text()
    assert all(line.startswith("export ") for line in text.splitlines())
    assert parse_env_file((sim.workdir / "sim.stdout.log").read_text()) == sim.env


def test_ready_within_budget(sim: SimProcess) -> None:
    assert sim.ready_s is not None
    print(f"local Azure (ARM + IMDS + Azurite) ready in {sim.ready_s:.2f} s")
    assert sim.ready_s < 20  # the budget is 3 s (about 1.5 s measured); generous for loaded machines


def test_storage_by_connection_string_and_by_managed_identity(
    sim: SimProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential
    from azure.storage.blob import BlobServiceClient

    ca = sim.ca_bundle
    by_key = BlobServiceClient.from_connection_string(
        sim.env["AZRUN_STORAGE_CONNECTION_STRING"], connection_verify=ca
    )
    with by_key:
        assert "azrun-output" in [c.name for c in by_key.list_containers()]
        blob = by_key.get_blob_client("azrun-output", "server/key.log")
        blob.create_append_blob()
        blob.append_block(b"by key\n")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    by_token = BlobServiceClient(
        sim.env["AZRUN_STORAGE_ENDPOINT"], credential=ManagedIdentityCredential(), connection_verify=ca
    )
    with by_token:
        client = by_token.get_blob_client("azrun-output", "server/key.log")
        assert client.download_blob().readall() == b"by key\n"
        client.append_block(b"by token\n")
        assert client.download_blob().readall() == b"by key\nby token\n"
    imds = [e for e in sim.requests() if e["service"] == "imds"]
    assert imds and imds[-1]["op"] == "IMDS_Token" and imds[-1]["caller"] is None


async def test_storage_with_the_aio_credential(sim: SimProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity.aio import ManagedIdentityCredential
    from azure.storage.blob.aio import BlobServiceClient

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    async with (
        ManagedIdentityCredential() as cred,
        BlobServiceClient(
            sim.env["AZRUN_STORAGE_ENDPOINT"], credential=cred, connection_verify=sim.ca_bundle
        ) as svc,
    ):
        blob = svc.get_blob_client("azrun-output", "server/aio.log")
        await blob.upload_blob(b"aio", overwrite=True)
        assert await (await blob.download_blob()).readall() == b"aio"


def test_app_service_endpoint_is_served(sim: SimProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.env["AZRUN_SIM_APPSERVICE_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", sim.env["AZRUN_SIM_APPSERVICE_HEADER"])
    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default")
    assert parse(token.token)["aud"] == "https://management.azure.com"


def test_run_command_through_arm_reaches_the_agent_and_the_blob(
    sim: SimProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import (
        RunCommandInputParameter,
        VirtualMachineRunCommand,
        VirtualMachineRunCommandProperties,
        VirtualMachineRunCommandScriptSource,
    )
    from azure.storage.blob import BlobClient, generate_blob_sas

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    conn = dict(p.split("=", 1) for p in sim.env["AZRUN_STORAGE_CONNECTION_STRING"].split(";") if p)
    sas = generate_blob_sas(
        conn["AccountName"],
        "azrun-output",
        "server/rc.log",
        account_key=conn["AccountKey"],
        permission="racw",
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    compute = ComputeManagementClient(
        ManagedIdentityCredential(),
        SUB,
        base_url=sim.env["AZRUN_ARM_ENDPOINT"],
        credential_scopes=["https://management.azure.com/.default"],
        connection_verify=sim.ca_bundle,
        polling_interval=0,
    )
    rc = VirtualMachineRunCommand(
        location="westeurope",
        properties=VirtualMachineRunCommandProperties(
            source=VirtualMachineRunCommandScriptSource(script='echo "hello from $NAME"'),
            parameters=[RunCommandInputParameter(name="NAME", value="the agent")],
            output_blob_uri=f"{sim.env['AZRUN_OUTPUT_CONTAINER']}/server/rc.log?{sas}",
            async_execution=False,
        ),
    )
    with compute:
        compute.virtual_machine_run_commands.begin_create_or_update(
            "rg-ops", "vm-ops-01", "smoke", rc
        ).result()
        got = compute.virtual_machine_run_commands.get_by_virtual_machine(
            "rg-ops", "vm-ops-01", "smoke", expand="instanceView"
        )
    assert got.instance_view.execution_state == "Succeeded"
    assert got.instance_view.output == "hello from the agent\n"
    blob = BlobClient.from_blob_url(
        f"{sim.env['AZRUN_OUTPUT_CONTAINER']}/server/rc.log?{sas}", connection_verify=sim.ca_bundle
    )
    with blob:
        assert blob.download_blob().readall() == b"hello from the agent\n"
    executions = sim.admin_get("executions")["value"]
    assert [e["runCommand"] for e in executions if e["runCommand"] == "smoke"] == ["smoke"]
    assert {e["service"] for e in sim.requests()} >= {"arm", "imds", "admin"}
    assert sas.split("sig=")[1].split("&")[0] not in sim.request_log.read_text()


def test_sigterm_stops_everything_with_exit_0(tmp_path: Path) -> None:
    process = SimProcess(FLEET, workdir=tmp_path)
    process.start()
    pid = process.pid
    assert pid is not None
    azurite = _processes_mentioning(str(tmp_path))
    assert len(azurite) == 1
    assert process.stop() == 0
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(tmp_path)) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_without_storage_and_with_a_broken_fleet(tmp_path: Path) -> None:
    with SimProcess(FLEET, workdir=tmp_path / "nostorage", storage=False) as quick:
        assert set(quick.env) == BASE_KEYS
        assert quick.ready_s is not None and quick.ready_s < 20
    broken = SimProcess("[sim]\nno_such_key = 1\n", workdir=tmp_path / "broken", storage=False)
    with pytest.raises(SimStartError, match="no_such_key"):
        broken.start(timeout_s=20)


def test_azurite_is_found_in_the_documented_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azrun.sim.azurite import AzuriteError, find_azurite, install_azurite

    fake = tmp_path / "bin" / "azurite-blob"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    assert find_azurite({"AZRUN_AZURITE_BIN": str(fake)}) == fake
    with pytest.raises(AzuriteError, match="AZRUN_AZURITE_BIN"):
        find_azurite({"AZRUN_AZURITE_BIN": str(tmp_path / "missing")})
    checkout = Path(__file__).resolve().parents[2] / ".local/azurite/node_modules/.bin/azurite-blob"
    xdg = tmp_path / "xdg" / "azrun" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("#!/bin/sh\n")
    expected = checkout if checkout.exists() else xdg
    assert find_azurite({"XDG_DATA_HOME": str(tmp_path / "xdg"), "PATH": ""}) == expected
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AzuriteError, match="npm"):
        install_azurite(tmp_path / "target")


def test_a_start_failure_shows_the_simulators_stderr(tmp_path: Path) -> None:
    broken = SimProcess(FLEET, workdir=tmp_path, extra_env={"AZRUN_AZURITE_BIN": str(tmp_path / "nowhere")})
    with pytest.raises(SimStartError, match="AZRUN_AZURITE_BIN points to"):
        broken.start(timeout_s=20)
    assert broken.pid is None
