"""Helpers for the local-ARM tests: static credentials, SDK clients and a raw HTTPS client.

The ARM tests do not need IMDS, so credentials mint tokens directly with
``azrun.sim.tokens.mint`` (the same unsigned tokens IMDS would hand out). Every call still
goes over a real TLS socket to a real simulator subprocess.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from azure.core.credentials import AccessToken

from azrun.sim.fleetspec import DEFAULT_TENANT
from azrun.sim.identity import user_principal
from azrun.sim.launcher import SimProcess
from azrun.sim.tokens import Principal, mint

SUB1 = "11111111-1111-4111-8111-111111111111"
SUB2 = "22222222-2222-4222-8222-222222222222"
TEST_FLEET = Path(__file__).resolve().parents[2] / "azrun" / "sim" / "fleets" / "test.toml"
OWNER_OID = "0a0a0a0a-0000-4000-8000-00000000beef"
SPEC_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "spec"  # vendored, see its README
RC_EXAMPLES = (
    SPEC_ROOT
    / "compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2024-11-01/examples/runCommandExamples"
)
VM_PREFIX = f"/subscriptions/{SUB1}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines"
SCOPE = "https://management.azure.com/.default"


def principal(oid: str = OWNER_OID, tenant: str = DEFAULT_TENANT) -> Principal:
    return Principal(object_id=oid, client_id=oid, tenant_id=tenant)


def reader_principal() -> Principal:
    """The fleet's "id-reader" identity (reader on SUB1, no access to SUB2)."""
    from azrun.sim.fleetspec import load_fleet

    spec = load_fleet(TEST_FLEET)
    ident = spec.identity(SUB1, "id-reader")
    assert ident is not None
    return user_principal(ident, DEFAULT_TENANT)


def token(
    p: Principal | None = None, *, audience: str = "https://management.azure.com/", ttl_s: int = 3600
) -> str:
    return mint(p or principal(), audience, ttl_s=ttl_s)[0]


class StaticCredential:
    """A sync TokenCredential handing out tokens minted for one principal."""

    def __init__(self, p: Principal | None = None) -> None:
        self.principal = p or principal()
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        value, expires_on = mint(self.principal, "https://management.azure.com/", ttl_s=3600)
        return AccessToken(value, expires_on)


class AsyncStaticCredential:
    """The aio twin of StaticCredential."""

    def __init__(self, p: Principal | None = None) -> None:
        self.principal = p or principal()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        value, expires_on = mint(self.principal, "https://management.azure.com/", ttl_s=3600)
        return AccessToken(value, expires_on)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticCredential:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None


def client_kwargs(sim: SimProcess, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": sim.env["AZRUN_ARM_ENDPOINT"],
        "credential_scopes": [SCOPE],
        "connection_verify": sim.env["AZRUN_CA_BUNDLE"],
        "polling_interval": 0,
        **extra,
    }


def compute(sim: SimProcess, *, p: Principal | None = None, sub: str = SUB1, **extra: Any) -> Any:
    from azure.mgmt.compute import ComputeManagementClient

    return ComputeManagementClient(StaticCredential(p), sub, **client_kwargs(sim, **extra))


def compute_aio(sim: SimProcess, *, p: Principal | None = None, sub: str = SUB1, **extra: Any) -> Any:
    from azure.mgmt.compute.aio import ComputeManagementClient

    return ComputeManagementClient(AsyncStaticCredential(p), sub, **client_kwargs(sim, **extra))


def resources(sim: SimProcess, *, p: Principal | None = None, sub: str = SUB1, **extra: Any) -> Any:
    from azure.mgmt.resource.resources import ResourceManagementClient

    return ResourceManagementClient(StaticCredential(p), sub, **client_kwargs(sim, **extra))


class Raw:
    """Plain HTTPS requests to the local ARM (for what an SDK would never send)."""

    def __init__(self, sim: SimProcess) -> None:
        self.sim = sim
        self.base = sim.env["AZRUN_ARM_ENDPOINT"]
        self.session = requests.Session()
        self.ca = sim.env["AZRUN_CA_BUNDLE"]

    def __call__(
        self,
        method: str,
        path: str,
        *,
        api_version: str | None = "2026-04-01",
        auth: str | None = "default",
        body: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        headers: dict[str, str] = {}
        if auth == "default":
            headers["Authorization"] = f"Bearer {token()}"
        elif auth is not None:
            headers["Authorization"] = auth
        query = dict(params or {})
        if api_version is not None:
            query["api-version"] = api_version
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("https://") else f"{self.base}{path}"
        return self.session.request(
            method, url, params=query, data=data, headers=headers, timeout=30, verify=self.ca
        )


def error_of(resp: requests.Response) -> dict[str, Any]:
    """The ARM error envelope's ``error`` object (asserting the envelope shape)."""
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    err: dict[str, Any] = body["error"]
    return err


def wait_for(check: Callable[[], Any], *, timeout_s: float = 10, interval_s: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; return it (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last value {value!r})")
        time.sleep(interval_s)


def start_sim(tmp: Path, fleet: str | Path = TEST_FLEET) -> SimProcess:
    sim = SimProcess(fleet, workdir=tmp, storage=False)
    sim.start()
    return sim
