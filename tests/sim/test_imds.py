"""The local IMDS over real sockets, driven by azure-identity's ManagedIdentityCredential.

The IMDS app runs in a background thread with its own loop (sync credentials block the
test's thread), on a random loopback port; faults and limits are swapped through a holder,
as the admin API swaps them in the real simulator.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from azrun.sim.fleetspec import FleetSpec, load_fleet
from azrun.sim.identity import system_principal, user_principal
from azrun.sim.imds import ImdsService
from azrun.sim.reqlog import RequestLog, read_log
from azrun.sim.tokens import parse

FLEET = """
[sim]
token_ttl_s = 7200
current_vm = "rg-ops/vm-ops-01"

[faults]
imds_latency_ms = 0

[[subscription]]
id = "00000000-0000-4000-8000-000000000001"
name = "sub-one"
[[subscription.identity]]
name = "id-azrun"
resource_group = "rg-ops"
[[subscription.identity]]
name = "id-other"
resource_group = "rg-ops"
[[subscription.resource_group]]
name = "rg-ops"
location = "westeurope"
[[subscription.resource_group.vm]]
name = "vm-ops-01"
system_identity = true
user_identities = ["id-azrun", "id-other"]
tags = { env = "prod", role = "ops" }
[[subscription.resource_group.vm]]
name = "vm-plain"
"""

MGMT = "https://management.azure.com/.default"


@dataclass
class Imds:
    """A running IMDS: its URL, its request log and the knobs a test may turn."""

    url: str
    log_path: Path
    service: ImdsService
    fleet: FleetSpec
    knobs: dict[str, Any] = field(default_factory=dict)

    def set_faults(self, **kwargs: Any) -> None:
        self.knobs["faults"] = replace(self.knobs["faults"], **kwargs)

    def set_limits(self, **kwargs: Any) -> None:
        self.knobs["limits"] = replace(self.knobs["limits"], **kwargs)

    def log(self) -> list[dict[str, Any]]:
        return read_log(self.log_path)


class _ServerThread:
    """An aiohttp app served from its own event loop in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> int:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> int:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def imds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Imds]:
    fleet = load_fleet(FLEET)
    knobs: dict[str, Any] = {"faults": fleet.faults, "limits": fleet.limits}
    reqlog = RequestLog(tmp_path / "requests.jsonl")
    service = ImdsService(
        fleet, reqlog=reqlog, faults=lambda: knobs["faults"], limits=lambda: knobs["limits"]
    )
    server = _ServerThread(service.app())
    port = server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", url)
    try:
        yield Imds(url, tmp_path / "requests.jsonl", service, fleet, knobs)
    finally:
        server.stop()
        reqlog.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _token_url(imds: Imds, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"api-version": "2018-02-01", **params}.items())
    return f"{imds.url}/metadata/identity/oauth2/token?{query}"


def _vm(imds: Imds) -> Any:
    vm = imds.fleet.current_vm_spec()
    assert vm is not None
    return vm


def _identity(imds: Imds, name: str) -> Any:
    ident = imds.fleet.identity("00000000-0000-4000-8000-000000000001", name)
    assert ident is not None
    return ident


# -- azure-identity, sync and aio ---------------------------------------------------------


def test_system_assigned_token_via_sync_credential(imds: Imds) -> None:
    from azure.identity import ManagedIdentityCredential

    before = time.time()
    token = ManagedIdentityCredential().get_token(MGMT)
    claims = parse(token.token)
    expected = system_principal(_vm(imds), imds.fleet.sim.tenant_id)
    assert claims["oid"] == expected.object_id
    assert claims["aud"] == "https://management.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{imds.fleet.sim.tenant_id}/"
    assert before + 7200 - 5 <= token.expires_on <= time.time() + 7200 + 5  # token_ttl_s honoured


def test_user_assigned_by_client_object_and_resource_id(imds: Imds) -> None:
    from azure.identity import ManagedIdentityCredential

    ident = _identity(imds, "id-azrun")
    expected = user_principal(ident, imds.fleet.sim.tenant_id).object_id
    creds = [
        ManagedIdentityCredential(client_id=ident.client_id),
        ManagedIdentityCredential(identity_config={"object_id": ident.principal_id}),
        ManagedIdentityCredential(identity_config={"resource_id": ident.resource_id}),  # sent as msi_res_id
    ]
    for cred in creds:
        assert parse(cred.get_token(MGMT).token)["oid"] == expected
    other = _identity(imds, "id-other")
    got = ManagedIdentityCredential(client_id=other.client_id).get_token("https://storage.azure.com/.default")
    assert parse(got.token)["oid"] == other.principal_id
    assert parse(got.token)["xms_mirid"] == other.resource_id


async def test_aio_credential_system_and_user_assigned(imds: Imds) -> None:
    from azure.identity.aio import ManagedIdentityCredential

    ident = _identity(imds, "id-other")
    async with ManagedIdentityCredential() as system:
        assert parse((await system.get_token(MGMT)).token)["oid"] == _vm(imds).principal_id
    async with ManagedIdentityCredential(client_id=ident.client_id) as by_client:
        assert parse((await by_client.get_token(MGMT)).token)["oid"] == ident.principal_id
    async with ManagedIdentityCredential(identity_config={"msi_res_id": ident.resource_id}) as by_rid:
        assert parse((await by_rid.get_token(MGMT)).token)["oid"] == ident.principal_id


def test_unknown_identity_is_a_400_the_credential_reports(imds: Imds) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="11111111-2222-4333-8444-555555555555").get_token(MGMT)
    status, body = _get(
        _token_url(imds, resource="https://management.azure.com", client_id="nope"), {"Metadata": "true"}
    )
    assert (status, body) == (400, {"error": "invalid_request", "error_description": "Identity not found"})


def test_raw_token_answer_is_all_strings(imds: Imds) -> None:
    status, body = _get(_token_url(imds, resource="https://storage.azure.com"), {"Metadata": "true"})
    assert status == 200
    assert all(isinstance(v, str) for v in body.values())
    assert body["expires_in"] == "7200" and body["token_type"] == "Bearer" and body["refresh_token"] == ""
    assert int(body["expires_on"]) - int(body["not_before"]) == 7200
    assert body["resource"] == "https://storage.azure.com"
    assert body["client_id"] == _vm(imds).system_client_id
    assert "refresh_in" not in body


# -- errors -------------------------------------------------------------------------------


def test_missing_metadata_header_or_parameters_are_400(imds: Imds) -> None:
    status, body = _get(_token_url(imds, resource="https://management.azure.com"))
    assert status == 400
    assert body == {"error": "invalid_request", "error_description": "Required metadata header not specified"}
    status, body = _get(f"{imds.url}/metadata/identity/oauth2/token?resource=x", {"Metadata": "true"})
    assert status == 400 and "api-version" in body["error_description"]
    status, body = _get(_token_url(imds), {"Metadata": "true"})
    assert status == 400 and "resource" in body["error_description"]


def test_error_sequence_is_served_first_then_rearmed_at_runtime(imds: Imds) -> None:
    imds.set_faults(imds_error_sequence=(429, 500, 410))
    url = _token_url(imds, resource="https://management.azure.com")
    statuses = [_get(url, {"Metadata": "true"})[0] for _ in range(4)]
    assert statuses == [429, 500, 410, 200]
    imds.set_faults(imds_error_sequence=(503,))  # a new faults object re-arms the sequence
    from azure.identity import ManagedIdentityCredential

    assert ManagedIdentityCredential().get_token(MGMT).token  # retried past the 503
    assert [e["status"] for e in imds.log()][-2:] == [503, 200]


async def test_rate_limit_20_per_second_answers_429(imds: Imds) -> None:
    url = _token_url(imds, resource="https://management.azure.com")
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, dict[str, Any]]:
            async with session.get(url, headers={"Metadata": "true"}) as resp:
                return resp.status, await resp.json()

        started = time.monotonic()
        answers = await asyncio.gather(*(one() for _ in range(60)))
        elapsed = time.monotonic() - started
    ok = sum(1 for status, _ in answers if status == 200)
    throttled = [body for status, body in answers if status == 429]
    assert 20 <= ok <= 20 + int(elapsed * 20) + 1  # the bucket holds 20 and refills 20 per second
    assert len(throttled) == 60 - ok
    assert throttled[0] == {"error": "too_many_requests", "error_description": "IMDS Throttle limit reached."}
    assert sum(1 for e in imds.log() if e["status"] == 429) == len(throttled)


async def test_concurrency_limit_5_in_flight_answers_429(imds: Imds) -> None:
    imds.set_faults(imds_latency_ms=1000)  # long enough for all 8 to overlap on a busy machine
    url = _token_url(imds, resource="https://management.azure.com")
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.get(url, headers={"Metadata": "true"}) as resp:
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(8)))
    assert sorted(statuses) == [200] * 5 + [429] * 3
    refused = [e for e in imds.log() if e["status"] == 429]
    assert len(refused) == 3 and all(e["inflight"] >= 5 for e in refused)
    assert all(e["service"] == "imds" and e["op"] == "IMDS_Token" for e in imds.log())


def test_limits_can_be_disabled(imds: Imds) -> None:
    imds.set_limits(enabled=False)
    url = _token_url(imds, resource="https://management.azure.com")
    assert {_get(url, {"Metadata": "true"})[0] for _ in range(30)} == {200}


# -- instance metadata and App Service ----------------------------------------------------


def test_instance_metadata_of_the_current_vm(imds: Imds) -> None:
    vm = _vm(imds)
    status, body = _get(f"{imds.url}/metadata/instance?api-version=2021-02-01", {"Metadata": "true"})
    assert status == 200
    compute = body["compute"]
    assert compute["name"] == "vm-ops-01" and compute["vmId"] == vm.vm_id
    assert compute["resourceId"] == vm.resource_id and compute["subscriptionId"] == vm.subscription_id
    assert compute["tags"] == "env:prod;role:ops"
    assert compute["tagsList"] == [{"name": "env", "value": "prod"}, {"name": "role", "value": "ops"}]
    assert compute["osType"] == "Linux" and compute["location"] == "westeurope"
    status, body = _get(f"{imds.url}/metadata/instance", {"Metadata": "true"})
    assert status == 400 and "api-version is invalid" in body["error"] and body["newest-versions"]


def test_app_service_flavour_via_credential(imds: Imds, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ManagedIdentityCredential

    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{imds.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", imds.service.appservice_secret)
    token = ManagedIdentityCredential().get_token(MGMT)
    assert parse(token.token)["oid"] == _vm(imds).principal_id
    ident = _identity(imds, "id-azrun")
    token = ManagedIdentityCredential(client_id=ident.client_id).get_token(MGMT)
    assert parse(token.token)["oid"] == ident.principal_id
    url = f"{imds.url}/msi/token?api-version=2019-08-01&resource=https://management.azure.com"
    assert _get(url, {"X-IDENTITY-HEADER": "wrong"})[0] == 401
    status, body = _get(url, {"X-IDENTITY-HEADER": imds.service.appservice_secret})
    assert status == 200 and set(body) == {
        "access_token",
        "expires_on",
        "resource",
        "token_type",
        "client_id",
        "not_before",
    }
    assert [e["op"] for e in imds.log()][-2:] == ["AppService_Token", "AppService_Token"]


def test_log_never_holds_tokens_secrets_or_queries(imds: Imds) -> None:
    status, body = _get(
        f"{imds.url}/msi/token?api-version=2019-08-01&resource=https://storage.azure.com",
        {"X-IDENTITY-HEADER": imds.service.appservice_secret},
    )
    assert status == 200
    _, body2 = _get(_token_url(imds, resource="https://storage.azure.com"), {"Metadata": "true"})
    text = imds.log_path.read_text()
    for secret in (
        body["access_token"],
        body2["access_token"],
        imds.service.appservice_secret,
        "storage.azure.com",
    ):
        assert secret not in text
    assert {e["path"] for e in imds.log()} == {"/msi/token", "/metadata/identity/oauth2/token"}
