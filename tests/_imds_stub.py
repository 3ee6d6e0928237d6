"""A small IMDS + App Service identity endpoint for auth tests (real HTTP on 127.0.0.1:0).

It behaves like the real endpoints where azrun depends on them: ``Metadata: true`` required
(400 without), user-assigned identities by ``client_id`` / ``object_id`` / ``msi_res_id`` (400
for an unknown one), 20 requests/s (token bucket) and 5 in flight (429 beyond), string-valued
JSON answers. The App Service flavour lives at ``/msi/token`` and checks ``X-IDENTITY-HEADER``.
Tests can delay answers, inject faults (``stub.faults.append((500, {"Retry-After": "0"}))``),
shorten ``expires_in``, and read every request from ``stub.log``.

Tokens are unsigned JWT-shaped strings, unique per request, so a test can tell a refreshed
token from a cached one and look up what the server thinks its expiry is (``stub.issued``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TENANT = "72f988bf-0000-0000-0000-000000000001"
SYSTEM = ("sys-client-id", "sys-object-id", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1")
APP_SERVICE_HEADER = "hdr-Secret-Value-42"


@dataclass(frozen=True)
class Identity:
    client_id: str
    object_id: str
    resource_id: str


def user_identity(n: int) -> Identity:
    return Identity(
        f"uami-{n}-client",
        f"uami-{n}-object",
        f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-{n}",
    )


@dataclass
class ImdsStub:
    rps: float = 20.0
    concurrency: int = 5
    delay_s: float = 0.0
    expires_in: int = 3600
    user_identities: tuple[Identity, ...] = tuple(user_identity(i) for i in range(16))
    faults: collections.deque[tuple[int, dict[str, str]]] = field(default_factory=collections.deque)
    log: list[dict[str, Any]] = field(default_factory=list)
    issued: dict[str, float] = field(default_factory=dict)  # token -> exp
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight = 0
        self._level = self.rps
        self._stamp = time.monotonic()
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- what tests read ---------------------------------------------------------------------
    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self.log if path is None or e["path"] == path]

    def token_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.requests() if e["path"] in ("/metadata/identity/oauth2/token", "/msi/token")]

    @property
    def max_inflight(self) -> int:
        return max((e["inflight"] for e in self.requests()), default=0)

    def statuses(self) -> list[int]:
        return [e["status"] for e in self.token_requests()]

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> ImdsStub:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True, name="imds-stub")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("IMDS stub did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_get("/metadata/identity/oauth2/token", self._imds)
        app.router.add_get("/msi/token", self._app_service)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        ready.set()
        loop.run_forever()
        loop.close()

    # -- handlers ----------------------------------------------------------------------------
    async def _imds(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata", "").lower() != "true":
            return self._finish(request, 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
        q = request.query
        who = self._identity(q.get("client_id"), q.get("object_id"), q.get("msi_res_id"))
        return await self._token(request, who, q.get("resource", ""), app_service=False)

    async def _app_service(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != APP_SERVICE_HEADER:
            return self._finish(request, 401, {"statusCode": 401, "message": "Unauthorized: bad X-IDENTITY-HEADER"})
        q = request.query
        who = self._identity(q.get("client_id"), q.get("object_id") or q.get("principal_id"), q.get("mi_res_id"))
        return await self._token(request, who, q.get("resource", ""), app_service=True)

    def _identity(self, client_id: str | None, object_id: str | None, resource_id: str | None) -> Identity | None:
        if not (client_id or object_id or resource_id):
            return Identity(*SYSTEM)
        for ident in self.user_identities:
            if client_id == ident.client_id or object_id == ident.object_id or resource_id == ident.resource_id:
                return ident
        return None

    async def _token(self, request: web.Request, who: Identity | None, resource: str, *, app_service: bool) -> web.Response:
        with self._lock:
            self._inflight += 1
            inflight = self._inflight
            fault = self.faults.popleft() if self.faults else None
            limited = self._over_limits(inflight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if limited:
                return self._finish(request, 429, {"error": "too_many_requests", "error_description": limited}, inflight=inflight)
            if fault is not None:
                status, headers = fault
                return self._finish(request, status, {"error": "injected", "error_description": f"fault {status}"}, headers, inflight=inflight)
            if who is None:
                return self._finish(request, 400, {"error": "invalid_request", "error_description": "Identity not found"}, inflight=inflight)
            return self._finish(request, 200, self._mint(who, resource, app_service), inflight=inflight, who=who)
        finally:
            with self._lock:
                self._inflight -= 1

    def _over_limits(self, inflight: int) -> str:
        now = time.monotonic()
        self._level = min(self.rps, self._level + (now - self._stamp) * self.rps)
        self._stamp = now
        if inflight > self.concurrency:
            return f"{inflight} concurrent requests (limit {self.concurrency})"
        if self._level < 1:
            return f"more than {self.rps:g} requests per second"
        self._level -= 1
        return ""

    def _mint(self, who: Identity, resource: str, app_service: bool) -> dict[str, str]:
        now = time.time()
        exp = now + self.expires_in
        claims = {
            "aud": resource.rstrip("/"), "iss": f"https://sts.windows.net/{TENANT}/", "iat": int(now), "nbf": int(now),
            "exp": exp, "tid": TENANT, "oid": who.object_id, "appid": who.client_id, "xms_mirid": who.resource_id,
            "jti": f"t{next(self._seq)}",
        }
        token = ".".join(_b64(part) for part in ({"alg": "none", "typ": "JWT"}, claims)) + "."
        with self._lock:
            self.issued[token] = exp
        body = {"access_token": token, "expires_on": str(int(exp)), "resource": resource, "token_type": "Bearer",
                "client_id": who.client_id}
        if not app_service:
            body |= {"expires_in": str(self.expires_in), "refresh_token": "", "not_before": str(int(now))}
        return body

    def _finish(self, request: web.Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                *, inflight: int = 0, who: Identity | None = None) -> web.Response:
        entry = {"ts": time.time(), "path": request.path, "status": status, "inflight": inflight,
                 "resource": request.query.get("resource"), "identity": who.object_id if who else None}
        with self._lock:
            self.log.append(entry)
        return web.json_response(body, status=status, headers=headers)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def running(**kwargs: Any) -> Iterator[ImdsStub]:
    """Fixture body: a started stub, stopped afterwards."""
    with ImdsStub(**kwargs) as stub:
        yield stub
