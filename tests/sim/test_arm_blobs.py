"""Run-command output blobs through the local ARM: which identity the agent gets.

Runs its own simulator (test fleet, with Azurite). ``outputBlobManagedIdentity``
``{}`` means the VM's system identity, ``{"clientId": ...}`` an attached user identity; an
object id is refused as the Linux handler refuses it, and a reader identity cannot write.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from arm_support import SUB1, TEST_FLEET, Raw, wait_for

from azrun.sim.fleetspec import load_fleet
from azrun.sim.launcher import SimProcess

VM = f"/subscriptions/{SUB1}/resourceGroups/rg-ops/providers/Microsoft.Compute/virtualMachines/vm-ops-01"


@pytest.fixture(scope="module")
def storage_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    sim = SimProcess(TEST_FLEET, workdir=tmp_path_factory.mktemp("arm-blobs"), storage=True)
    sim.start(timeout_s=60)
    try:
        yield sim
    finally:
        sim.stop()


def _client_id(name: str) -> str:
    ident = load_fleet(TEST_FLEET).identity(SUB1, name)
    assert ident is not None
    return ident.client_id


def _run(raw: Raw, name: str, blob_url: str, identity: dict[str, str]) -> dict[str, Any]:
    path = f"{VM}/runCommands/{name}"
    payload = {
        "location": "westeurope",
        "properties": {
            "source": {"script": "echo to-the-blob"},
            "outputBlobUri": blob_url,
            "outputBlobManagedIdentity": identity,
        },
    }
    assert raw("PUT", path, body=payload).status_code == 201
    try:
        iv: dict[str, Any] = wait_for(
            lambda: (
                (
                    v := raw("GET", path, params={"$expand": "instanceView"}).json()["properties"][
                        "instanceView"
                    ]
                )["executionState"]
                in ("Succeeded", "Failed")
                and v
            ),
            timeout_s=20,
        )
        return iv
    finally:
        raw("DELETE", path)


def _download(sim: SimProcess, blob_url: str) -> bytes:
    from azure.storage.blob import BlobClient

    blob_name = blob_url.rsplit("/", 1)[1]
    client = BlobClient.from_connection_string(
        sim.env["AZRUN_STORAGE_CONNECTION_STRING"],
        "azrun-output",
        blob_name,
        api_version="2025-11-05",
        connection_verify=sim.env["AZRUN_CA_BUNDLE"],
    )
    data: bytes = client.download_blob().readall()
    return data


@pytest.mark.parametrize(
    ("identity", "ok"),
    [
        ({}, True),  # the system-assigned identity
        ({"clientId": "id-azrun"}, True),
        ({"clientId": "id-reader"}, False),  # storage role "reader": AuthorizationPermissionMismatch
        ({"clientId": "00000000-0000-4000-8000-00000000dead"}, False),  # not attached to the VM
        ({"objectId": "id-azrun"}, False),  # the Linux handler refuses object ids
    ],
)
def test_output_blob_identity(storage_sim: SimProcess, identity: dict[str, str], ok: bool) -> None:
    raw = Raw(storage_sim)
    resolved = {k: (_client_id(v) if v.startswith("id-") else v) for k, v in identity.items()}
    if "objectId" in resolved:
        resolved["objectId"] = str(uuid.uuid4())
    name = f"blob-{uuid.uuid4().hex[:8]}"
    blob_url = f"{storage_sim.env['AZRUN_OUTPUT_CONTAINER']}/{name}.txt"
    iv = _run(raw, name, blob_url, resolved)
    if ok:
        assert iv["executionState"] == "Succeeded", iv
        assert _download(storage_sim, blob_url) == b"to-the-blob\n"
    else:
        assert (iv["executionState"], iv["exitCode"]) == ("Failed", -101), iv
