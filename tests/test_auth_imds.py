"""Process credentials against a real (stub) IMDS / App Service endpoint over HTTP.

Counts come from the endpoint's own request log, so "exactly one request" means one request
on the wire, not one call into some layer of ours.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _imds_stub import APP_SERVICE_HEADER, ImdsStub, user_identity

from azrun import auth
from azrun.auth import EnvironmentKind, IdentitySelector, PacingConfig, token_claims
from azrun.cloud import PUBLIC
from azrun.errors import AuthError
from azrun.redact import install_log_redaction

MGMT = PUBLIC.management_scope
STORAGE = PUBLIC.storage_scope


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
    auth.clear_process_cache()
    yield
    auth.clear_process_cache()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsStub]:
    with ImdsStub() as running:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", running.url)
        yield running


def fast_retries(tmp_path: Path, **kwargs: float) -> None:
    auth.configure_pacing(PacingConfig(runtime_dir=str(tmp_path / "runtime"), retry_backoff_s=0.01, **kwargs))  # type: ignore[arg-type]


def test_detects_the_vm_through_the_imds_override(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    assert cred.spec.environment.kind is EnvironmentKind.AZURE_VM
    assert cred.spec.mode == "msi"
    assert f"IMDS at {stub.url}/metadata/identity/oauth2/token" in cred.spec.environment.describe()
    assert auth.get_credential(cloud=PUBLIC) is cred  # one per process per identity


def test_1000_tasks_and_50_threads_make_exactly_one_imds_request(stub: ImdsStub) -> None:
    stub.delay_s = 0.5  # everyone arrives while the first request is still out
    tokens: list[str] = []
    lock = threading.Lock()

    def in_thread() -> None:
        token = auth.get_credential(cloud=PUBLIC).get_token(MGMT).token
        with lock:
            tokens.append(token)

    async def in_tasks() -> list[str]:
        cred = auth.get_async_credential(cloud=PUBLIC)
        got = await asyncio.gather(*(cred.get_token(MGMT) for _ in range(1000)))
        return [t.token for t in got]

    threads = [threading.Thread(target=in_thread) for _ in range(50)]
    for t in threads:
        t.start()
    tokens += asyncio.run(in_tasks())
    for t in threads:
        t.join(10)
    assert len(tokens) == 1050
    assert len(set(tokens)) == 1
    assert len(stub.token_requests()) == 1
    # and warm: more calls, still one request
    assert auth.get_credential(cloud=PUBLIC).get_token(MGMT).token == tokens[0]
    assert len(stub.token_requests()) == 1


def test_two_scopes_make_two_requests(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    mgmt, storage = cred.get_token(MGMT), cred.get_token(STORAGE)
    cred.get_token(MGMT)
    cred.get_token(STORAGE)
    assert mgmt.token != storage.token
    assert token_claims(mgmt.token)["aud"] == "https://management.azure.com"
    assert token_claims(storage.token)["aud"] == "https://storage.azure.com"
    assert sorted(r["resource"] for r in stub.token_requests()) == ["https://management.azure.com",
                                                                    "https://storage.azure.com"]


@pytest.mark.parametrize("field", ["client_id", "object_id", "resource_id"])
def test_user_and_system_assigned_identities_get_separate_tokens(stub: ImdsStub, field: str) -> None:
    uami = user_identity(3)
    selector = IdentitySelector(**{field: getattr(uami, field)})
    system = auth.get_credential(cloud=PUBLIC).get_token(MGMT)
    user = auth.get_credential(selector, cloud=PUBLIC).get_token(MGMT)
    assert token_claims(system.token)["oid"] == "sys-object-id"
    assert token_claims(user.token)["oid"] == uami.object_id
    assert len(stub.token_requests()) == 2
    assert auth.get_credential(selector, cloud=PUBLIC).get_token(MGMT).token == user.token


async def test_sync_and_async_credentials_share_tokens(stub: ImdsStub) -> None:
    sync_token = auth.get_credential(cloud=PUBLIC).get_token_info(MGMT).token
    async with auth.get_async_credential(cloud=PUBLIC) as cred:
        assert (await cred.get_token_info(MGMT)).token == sync_token
    assert len(stub.token_requests()) == 1


def test_faults_and_limits_never_exceed_five_in_flight(stub: ImdsStub, tmp_path: Path) -> None:
    fast_retries(tmp_path)
    stub.delay_s = 0.1
    stub.faults.extend([(410, {}), (429, {"Retry-After": "0.05"}), (500, {}), (503, {"Retry-After": "0.05"})])
    selectors = [IdentitySelector()] + [IdentitySelector(client_id=user_identity(i).client_id) for i in range(16)]

    async def everyone() -> list[str]:
        creds = [auth.get_async_credential(s, cloud=PUBLIC) for s in selectors]
        calls = [c.get_token(scope) for c in creds for scope in (MGMT, STORAGE) for _ in range(15)]
        return [t.token for t in await asyncio.gather(*calls)]

    tokens = asyncio.run(everyone())
    assert len(tokens) == 17 * 2 * 15
    assert len(set(tokens)) == 17 * 2  # one token per identity and scope
    statuses = stub.statuses()
    assert statuses.count(200) == 34
    assert sorted(s for s in statuses if s != 200) == [410, 429, 500, 503]  # only the injected faults
    assert stub.max_inflight <= 5


def test_unknown_identity_error_names_endpoint_answer_and_what_to_check(stub: ImdsStub) -> None:
    cred = auth.get_credential(IdentitySelector(client_id="no-such-client"), cloud=PUBLIC)
    with pytest.raises(AuthError) as err:
        cred.get_token(MGMT)
    message, hint = str(err.value), err.value.hint or ""
    assert f"IMDS at {stub.url}/metadata/identity/oauth2/token answered 400" in message
    assert "Identity not found" in message
    assert "after 1 attempt" in message
    assert "client_id=no-such-client" in hint and "assigned to this VM" in hint
    assert len(stub.token_requests()) == 1  # 400 is not retried


def test_persistent_5xx_error_after_retries_then_msal_holds_back(stub: ImdsStub, tmp_path: Path) -> None:
    fast_retries(tmp_path, retry_total=2)
    stub.faults.extend([(500, {})] * 3)
    cred = auth.get_credential(cloud=PUBLIC)
    with pytest.raises(AuthError) as err:
        cred.get_token(MGMT)
    assert "answered 500" in str(err.value) and "after 3 attempts" in str(err.value)
    assert "retry later" in (err.value.hint or "")
    assert len(stub.token_requests()) == 3
    with pytest.raises(AuthError) as again:  # msal caches a 5xx for a few seconds
        cred.get_token(MGMT)
    assert "no request was sent" in (again.value.hint or "")
    assert len(stub.token_requests()) == 3


def test_unreachable_imds_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    fast_retries(tmp_path, retry_total=0)
    with pytest.raises(AuthError) as err:
        auth.get_credential(cloud=PUBLIC).get_token(MGMT)
    assert f"could not reach IMDS at http://127.0.0.1:{port}/metadata/identity/oauth2/token" in str(err.value)
    assert "--auth cli" in (err.value.hint or "")


@pytest.fixture
def app_service(stub: ImdsStub, monkeypatch: pytest.MonkeyPatch) -> ImdsStub:
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{stub.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", APP_SERVICE_HEADER)
    return stub


def test_app_service_flavour(app_service: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    assert cred.spec.environment.kind is EnvironmentKind.APP_SERVICE
    token = cred.get_token(MGMT).token
    uami = user_identity(1)
    user = auth.get_credential(IdentitySelector(resource_id=uami.resource_id), cloud=PUBLIC).get_token(MGMT).token
    assert token_claims(token)["oid"] == "sys-object-id"
    assert token_claims(user)["oid"] == uami.object_id
    assert [r["path"] for r in app_service.token_requests()] == ["/msi/token", "/msi/token"]


def test_app_service_wrong_header_error_hides_the_header(app_service: ImdsStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "stale-Header-Value-7")
    with pytest.raises(AuthError) as err:
        auth.get_credential(cloud=PUBLIC).get_token(MGMT)
    text = f"{err.value} {err.value.hint}"
    assert "App Service identity endpoint" in text and "401" in text
    assert "IDENTITY_HEADER" in (err.value.hint or "")
    assert "stale-Header-Value-7" not in text and APP_SERVICE_HEADER not in text


def test_short_lived_tokens_are_refreshed_in_time_and_never_expired(stub: ImdsStub) -> None:
    stub.expires_in = 3
    cred = auth.get_credential(cloud=PUBLIC)
    acred = auth.get_async_credential(cloud=PUBLIC)
    worst: list[float] = []
    lock = threading.Lock()
    deadline = time.time() + 4.5

    def check(token: str) -> None:
        left = stub.issued[token] - time.time()
        with lock:
            worst.append(left)

    def sync_worker() -> None:
        while time.time() < deadline:
            check(cred.get_token(MGMT).token)
            time.sleep(0.005)

    async def async_worker() -> None:
        while time.time() < deadline:
            check((await acred.get_token(MGMT)).token)
            await asyncio.sleep(0.005)

    threads = [threading.Thread(target=sync_worker) for _ in range(4)]
    for t in threads:
        t.start()

    async def run_async() -> None:
        await asyncio.gather(*(async_worker() for _ in range(4)))

    asyncio.run(run_async())
    for t in threads:
        t.join(10)
    assert len(worst) > 200
    assert min(worst) > 0, "an expired token was handed out"
    requests = len(stub.token_requests())
    assert 2 <= requests <= 6  # refreshed about every half lifetime, never per call


def test_no_secret_in_debug_logs(app_service: ImdsStub, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        install_log_redaction()
        auth.get_credential(cloud=PUBLIC).get_token(MGMT)  # App Service: sends X-IDENTITY-HEADER
        monkeypatch.delenv("IDENTITY_ENDPOINT")
        monkeypatch.delenv("IDENTITY_HEADER")
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", app_service.url)
        auth.get_credential(cloud=PUBLIC).get_token(STORAGE)  # IMDS
        sas = "https://a.blob.core.windows.net/c/out.log?sv=2025-11-05&sp=racw&sig=U2VjcmV0U2lnbmF0dXJl%3D"
        logging.getLogger("azrun.output").debug("append to %s", sas)
        logging.getLogger("azure.core").debug("token response %s", {"access_token": next(iter(app_service.issued))})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    assert "msal" in text or "azure" in text  # the SDKs did log at DEBUG
    assert len(app_service.issued) == 2
    for token in app_service.issued:
        assert token not in text
        assert token.split(".")[1] not in text  # not even the claims part
    assert APP_SERVICE_HEADER not in text
    assert "U2VjcmV0U2lnbmF0dXJl" not in text


def test_warm_token_from_the_credential_takes_microseconds(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    cred.get_token_info(MGMT)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        cred.get_token_info(MGMT, options={"enable_cae": True})  # CAE does not split MSI entries
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert per_call_us < 50, per_call_us  # ~1 µs idle; generous for a loaded CI machine
    assert len(stub.token_requests()) == 1


def test_claims_challenge_drops_the_cached_token(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    first = cred.get_token(MGMT).token
    second = cred.get_token(MGMT, claims='{"access_token":{"nbf":{"essential":true}}}').token
    assert second != first
    assert cred.get_token(MGMT).token == second
    assert len(stub.token_requests()) == 2
