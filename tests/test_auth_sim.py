"""Process credentials against the local Azure's IMDS and App Service endpoints.

Request counts come from the simulator's request log (``service: imds``, ``op: IMDS_Token``);
its ``inflight`` field counts the *other* token requests being served when one arrived.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_auth_process import start_at_once

from azrun import auth
from azrun.auth import EnvironmentKind, IdentitySelector, PacingConfig, token_claims
from azrun.cloud import Cloud
from azrun.errors import AuthError

SUB = "11111111-1111-4111-8111-111111111111"
ID_AZRUN = f"/subscriptions/{SUB}/resourceGroups/rg-ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-azrun"
TEST_FLEET = Path(__file__).resolve().parents[1] / "azrun" / "sim" / "fleets" / "test.toml"

@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
    auth.clear_process_cache()
    yield
    auth.clear_process_cache()


class Imds:
    """The simulator's identity endpoints as seen from one test."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.mark = len(self.token_requests())

    def token_requests(self, *, since_mark: bool = False) -> list[dict[str, Any]]:
        entries = [r for r in self.sim.requests() if r.get("service") == "imds" and r.get("op") != "IMDS_Instance"]
        return entries[self.mark:] if since_mark else entries

    def new(self) -> list[dict[str, Any]]:
        return self.token_requests(since_mark=True)


@pytest.fixture
def imds(local_azure: Any, azure_env: Callable[[Any], dict[str, str]]) -> Iterator[Imds]:
    azure_env(local_azure)
    view = Imds(local_azure)
    yield view
    local_azure.admin_post("/_sim/faults", {})  # the shared simulator: leave no fault armed


@pytest.fixture
def cloud() -> Cloud:
    return Cloud.from_env(os.environ)


def test_the_local_azure_is_a_vm_on_a_custom_cloud(imds: Imds, cloud: Cloud) -> None:
    cred = auth.get_credential(cloud=cloud)
    assert cloud.is_custom and cloud.ca_bundle
    assert cred.spec.environment.kind is EnvironmentKind.AZURE_VM
    token = cred.get_token(cloud.management_scope).token
    claims = token_claims(token)
    assert claims["aud"] == "https://management.azure.com"
    assert claims["xms_mirid"].endswith("/virtualMachines/vm-ops-01")


def test_1000_tasks_and_50_threads_make_exactly_one_imds_request(imds: Imds, cloud: Cloud) -> None:
    tokens: list[str] = []
    lock = threading.Lock()
    start = threading.Event()

    def in_thread() -> None:
        start.wait(5)
        token = auth.get_credential(cloud=cloud).get_token(cloud.management_scope).token
        with lock:
            tokens.append(token)

    async def in_tasks() -> list[str]:
        cred = auth.get_async_credential(cloud=cloud)
        calls = [cred.get_token(cloud.management_scope) for _ in range(1000)]
        start.set()
        return [t.token for t in await asyncio.gather(*calls)]

    threads = [threading.Thread(target=in_thread) for _ in range(50)]
    for t in threads:
        t.start()
    tokens += asyncio.run(in_tasks())
    for t in threads:
        t.join(10)
    assert len(tokens) == 1050 and len(set(tokens)) == 1
    assert [r["op"] for r in imds.new()] == ["IMDS_Token"]


def test_two_scopes_and_two_identities(imds: Imds, cloud: Cloud) -> None:
    system = auth.get_credential(cloud=cloud)
    user = auth.get_credential(IdentitySelector(resource_id=ID_AZRUN), cloud=cloud)
    tokens = {
        (who, scope): cred.get_token(scope).token
        for who, cred in (("system", system), ("user", user))
        for scope in (cloud.management_scope, cloud.storage_scope)
        for _ in range(3)
    }
    assert len(set(tokens.values())) == 4
    assert len(imds.new()) == 4
    assert token_claims(tokens["user", cloud.storage_scope])["xms_mirid"] == ID_AZRUN
    assert token_claims(tokens["system", cloud.storage_scope])["aud"] == "https://storage.azure.com"


def test_faults_at_the_limits_still_deliver_with_at_most_five_in_flight(imds: Imds, cloud: Cloud, tmp_path: Path) -> None:
    auth.configure_pacing(PacingConfig(runtime_dir=str(tmp_path / "runtime"), retry_backoff_s=0.01))
    imds.sim.admin_post("/_sim/faults", {"imds_error_sequence": [410, 429, 500], "imds_latency_ms": 100})
    selectors = [IdentitySelector(), IdentitySelector(resource_id=ID_AZRUN)]
    scopes = [cloud.management_scope, cloud.storage_scope, "https://vault.azure.net/.default",
              "https://graph.microsoft.com/.default", "https://database.windows.net/.default"]

    async def everyone() -> list[str]:
        creds = [auth.get_async_credential(s, cloud=cloud) for s in selectors]
        got = await asyncio.gather(*(c.get_token(scope) for c in creds for scope in scopes for _ in range(20)))
        return [t.token for t in got]

    tokens = asyncio.run(everyone())
    assert len(tokens) == 200 and len(set(tokens)) == 10
    new = imds.new()
    assert sorted(r["status"] for r in new if r["status"] != 200) == [410, 429, 500]  # the injected ones only
    assert sum(r["status"] == 200 for r in new) == 10
    assert max(r["inflight"] for r in new) <= 4  # so never more than 5 at once


@pytest.mark.slow
def test_twenty_processes_at_once_each_get_a_token_and_imds_answers_no_429(imds: Imds) -> None:
    imds.sim.admin_post("/_sim/faults", {"imds_latency_ms": 100})  # long enough to overlap
    results = start_at_once(20)
    for rc, _, err in results:
        assert rc == 0, err
    assert len({out.strip() for _, out, _ in results}) == 20  # each its own token
    new = imds.new()
    assert [r["status"] for r in new] == [200] * 20
    assert max(r["inflight"] for r in new) <= 4


def test_short_ttl_refreshes_in_time(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]) -> None:
    sim = sim_factory(TEST_FLEET.read_text().replace("[sim]\n", "[sim]\ntoken_ttl_s = 3\n", 1))
    azure_env(sim)
    cloud = Cloud.from_env(os.environ)
    cred = auth.get_credential(cloud=cloud)
    deadline = time.time() + 4
    seen: set[str] = set()
    while time.time() < deadline:
        token = cred.get_token(cloud.management_scope).token
        assert token_claims(token)["exp"] > time.time(), "expired token handed out"
        seen.add(token)
        time.sleep(0.01)
    assert 2 <= len(seen) <= 5
    assert len([r for r in sim.requests() if r.get("op") == "IMDS_Token"]) == len(seen)


def test_app_service_flavour(imds: Imds, cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    env = imds.sim.env
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["AZRUN_SIM_APPSERVICE_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["AZRUN_SIM_APPSERVICE_HEADER"])
    cred = auth.get_credential(cloud=cloud)
    assert cred.spec.environment.kind is EnvironmentKind.APP_SERVICE
    assert cred.get_token(cloud.management_scope).token == cred.get_token(cloud.management_scope).token
    assert [r["op"] for r in imds.new()] == ["AppService_Token"]

    monkeypatch.setenv("IDENTITY_HEADER", "rotated-away-value")
    auth.clear_process_cache()
    with pytest.raises(AuthError) as err:
        auth.get_credential(cloud=cloud).get_token(cloud.management_scope)
    assert "401" in str(err.value) and "rotated-away-value" not in f"{err.value} {err.value.hint}"
