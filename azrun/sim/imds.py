"""The local IMDS (plain HTTP, like 169.254.169.254) plus the App Service / Functions flavour.

Routes (azure-facts §4, IMDS swagger 2023-07-01):

- ``GET /metadata/identity/oauth2/token?api-version=&resource=[&client_id|object_id|msi_res_id]``
  with ``Metadata: true``. Without the header: 400 ``invalid_request`` "Required metadata header
  not specified" (the SDK mocks' wording; the docs call it ``bad_request_102``). No
  api-version or resource: 400 ``invalid_request``. An identity the current VM does not have:
  400 ``invalid_request`` "Identity not found" (azure-identity reads a 400 as "no identity").
  The answer holds strings only, no ``refresh_in``.
- ``GET /metadata/instance?api-version=`` for the fleet's current VM (``sim.current_vm``).
- ``GET /msi/token?resource=&api-version=2019-08-01[&client_id|principal_id|object_id|mi_res_id]``
  with ``X-IDENTITY-HEADER: <secret>``: the App Service / Functions endpoint, same identities as
  the current VM. A missing or wrong header is 401 ``{"statusCode":401,"message":...}`` (App
  Service answers errors as ``statusCode``/``message``; the exact status is not documented).

Limits apply to the IMDS token route only (the identity category): ``limits.imds_rps`` per
second (a bucket of that size) and ``limits.imds_concurrency`` requests in flight. Each admitted
request takes ``faults.imds_latency_ms``, so concurrency is real. Excess requests are answered at
once with 429 ``{"error":"too_many_requests","error_description":"IMDS Throttle limit reached."}``
(the docs' wording), without ``Retry-After`` (IMDS documents none), and get no token.

``faults.imds_error_sequence`` statuses answer the next token requests, one each, before any
other check but the ``Metadata`` header. The sequence is re-armed whenever the faults object
changes (``POST /_sim/faults``), because the faults come from a callable.

Each request is logged as ``service: "imds"`` with ``op`` ``IMDS_Token`` / ``IMDS_Instance`` /
``AppService_Token`` and ``inflight`` (token requests being served when it arrived). Neither the
token, the ``X-IDENTITY-HEADER`` value nor the query string is ever logged.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from azrun.sim.fleetspec import Faults, FleetSpec, Limits, VmSpec
from azrun.sim.identity import resolve_vm_identity
from azrun.sim.limits import SimBucket
from azrun.sim.reqlog import RequestLog
from azrun.sim.tokens import Principal, mint

NEWEST_INSTANCE_VERSIONS = ["2025-04-07", "2024-07-17", "2024-03-15"]
APPSERVICE_API_VERSION = "2019-08-01"
_ERROR_CODES = {
    400: ("invalid_request", "Bad request"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "IMDS endpoint is updating"),
    405: ("method_not_allowed", "Method not allowed"),
    410: ("service_unavailable", "IMDS is going through updates"),
    429: ("too_many_requests", "IMDS Throttle limit reached."),
    500: ("server_error", "Internal server error"),
    503: ("service_unavailable", "Service unavailable"),
}

Reply = tuple[int, dict[str, Any]]


def identity_error(status: int, description: str | None = None) -> Reply:
    """An identity-endpoint error body ``{"error", "error_description"}`` for ``status``."""
    code, default = _ERROR_CODES.get(status, ("server_error" if status >= 500 else "bad_request", "Error"))
    return status, {"error": code, "error_description": description or default}


class ImdsService:
    """State of the local IMDS: limits, fault sequence, in-flight count, App Service secret."""

    def __init__(
        self,
        fleet: FleetSpec,
        *,
        reqlog: RequestLog,
        faults: Callable[[], Faults] | None = None,
        limits: Callable[[], Limits] | None = None,
        appservice_secret: str | None = None,
    ) -> None:
        self._fleet = fleet
        self._reqlog = reqlog
        self._faults = faults or (lambda: fleet.faults)
        self._limits = limits or (lambda: fleet.limits)
        self.appservice_secret = appservice_secret or secrets.token_urlsafe(24)
        self._inflight = 0
        self._armed_faults: Faults | None = None
        self._pending_errors: collections.deque[int] = collections.deque()
        self._limits_seen: Limits | None = None
        self._bucket: SimBucket | None = None

    def __repr__(self) -> str:
        return f"ImdsService(inflight={self._inflight}, pending_errors={list(self._pending_errors)})"

    @property
    def inflight(self) -> int:
        return self._inflight

    def app(self) -> web.Application:
        """The aiohttp application serving IMDS and the App Service endpoint."""
        app = web.Application()
        app.router.add_route("*", "/metadata/identity/oauth2/token", self._logged("IMDS_Token", self._token))
        app.router.add_route("*", "/metadata/instance", self._logged("IMDS_Instance", self._instance))
        app.router.add_route("*", "/msi/token", self._logged("AppService_Token", self._appservice))
        return app

    # -- plumbing ---------------------------------------------------------------------------

    def _logged(
        self, op: str, handler: Callable[[web.Request], Awaitable[Reply]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            started = time.perf_counter()
            inflight = self._inflight
            status, body = await handler(request)
            self._reqlog.write(
                service="imds",
                method=request.method,
                path=request.path,
                op=op,
                status=status,
                caller=None,
                ms=(time.perf_counter() - started) * 1000,
                inflight=inflight,
            )
            return web.json_response(body, status=status)

        return serve

    def _next_fault_status(self) -> int | None:
        faults = self._faults()
        if faults is not self._armed_faults:
            self._armed_faults = faults
            self._pending_errors = collections.deque(faults.imds_error_sequence)
        return self._pending_errors.popleft() if self._pending_errors else None

    def _admit(self) -> bool:
        """Take one request slot (rate and concurrency); False means 429."""
        limits = self._limits()
        if not limits.enabled:
            return True
        if limits is not self._limits_seen or self._bucket is None:
            self._limits_seen = limits
            self._bucket = SimBucket(limits.imds_rps, limits.imds_rps)
        if self._inflight >= limits.imds_concurrency:
            return False
        return self._bucket.take() == 0.0

    async def _served(self, compute: Callable[[], Reply]) -> Reply:
        """Run an admitted request: it holds a slot for the configured latency."""
        self._inflight += 1
        try:
            latency_s = self._faults().imds_latency_ms / 1000
            if latency_s > 0:
                await asyncio.sleep(latency_s)
            return compute()
        finally:
            self._inflight -= 1

    def _current_vm(self) -> VmSpec | None:
        return self._fleet.current_vm_spec()

    # -- IMDS token -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> Reply:
        if request.method != "GET":
            return identity_error(405, "Only GET is supported")
        if request.headers.get("Metadata", "").lower() != "true":
            return identity_error(400, "Required metadata header not specified")
        fault = self._next_fault_status()
        if fault is not None:
            return identity_error(fault)
        if not self._admit():
            return identity_error(429)
        return await self._served(lambda: self._issue_imds(request.query))

    def _issue_imds(self, query: Any) -> Reply:
        if not query.get("api-version"):
            return identity_error(400, "Required query variable 'api-version' is missing")
        resource = query.get("resource")
        if not resource:
            return identity_error(400, "Required query variable 'resource' is missing")
        selectors = {k: query.get(k) for k in ("client_id", "object_id", "msi_res_id") if query.get(k)}
        if len(selectors) > 1:
            return identity_error(400, "Only one of client_id, object_id or msi_res_id may be specified")
        principal = self._resolve(
            selectors.get("client_id"), selectors.get("object_id"), selectors.get("msi_res_id")
        )
        if principal is None:
            return identity_error(400, "Identity not found")
        ttl = self._fleet.sim.token_ttl_s
        token, expires_on = mint(principal, resource, ttl_s=ttl)
        return 200, {
            "access_token": token,
            "refresh_token": "",
            "expires_in": str(ttl),
            "expires_on": str(expires_on),
            "ext_expires_in": str(ttl),
            "not_before": str(expires_on - ttl),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal.client_id,
            "object_id": principal.object_id,
            "msi_res_id": principal.resource_id or "",
        }

    def _resolve(
        self, client_id: str | None, object_id: str | None, resource_id: str | None
    ) -> Principal | None:
        vm = self._current_vm()
        if vm is None:
            return None
        return resolve_vm_identity(
            self._fleet, vm, client_id=client_id, object_id=object_id, resource_id=resource_id
        )

    # -- IMDS instance ----------------------------------------------------------------------

    async def _instance(self, request: web.Request) -> Reply:
        if request.method != "GET":
            return 405, {"error": "Method not allowed"}
        if request.headers.get("Metadata", "").lower() != "true":
            return 400, {"error": "Bad request. Required metadata header not specified"}
        if not request.query.get("api-version"):
            return 400, {
                "error": "Bad request. api-version is invalid or was not specified in the request. "
                "For more information refer to aka.ms/azureimds",
                "newest-versions": NEWEST_INSTANCE_VERSIONS,
            }
        vm = self._current_vm()
        if vm is None:
            return 404, {"error": "Not found"}
        return 200, instance_document(vm)

    # -- App Service / Functions ------------------------------------------------------------

    async def _appservice(self, request: web.Request) -> Reply:
        if request.method != "GET":
            return 405, {"statusCode": 405, "message": "Only GET is supported"}
        header = request.headers.get("X-IDENTITY-HEADER", "")
        if not header or not secrets.compare_digest(header, self.appservice_secret):
            return 401, {
                "statusCode": 401,
                "message": "Unauthorized: X-IDENTITY-HEADER is missing or invalid.",
            }
        query = request.query
        if query.get("api-version") != APPSERVICE_API_VERSION:
            return 400, {"statusCode": 400, "message": f"api-version must be {APPSERVICE_API_VERSION}."}
        resource = query.get("resource")
        if not resource:
            return 400, {"statusCode": 400, "message": "resource is required."}
        principal = self._resolve(
            query.get("client_id"),
            query.get("principal_id") or query.get("object_id"),
            query.get("mi_res_id"),
        )
        if principal is None:
            return 400, {
                "statusCode": 400,
                "message": "No Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
            }
        ttl = self._fleet.sim.token_ttl_s
        token, expires_on = mint(principal, resource, ttl_s=ttl)
        return 200, {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal.client_id,
            "not_before": str(expires_on - ttl),
        }


def instance_document(vm: VmSpec) -> dict[str, Any]:
    """``/metadata/instance`` for ``vm``: every value a string, missing ones ``""``."""
    tags = ";".join(f"{k}:{v}" for k, v in vm.tags)
    compute: dict[str, Any] = {
        "azEnvironment": "AzurePublicCloud",
        "location": vm.location,
        "name": vm.name,
        "offer": "",
        "osType": "Windows" if vm.os == "windows" else "Linux",
        "provider": "Microsoft.Compute",
        "publisher": "",
        "resourceGroupName": vm.resource_group,
        "resourceId": vm.resource_id,
        "sku": "",
        "subscriptionId": vm.subscription_id,
        "tags": tags,
        "tagsList": [{"name": k, "value": v} for k, v in vm.tags],
        "version": "",
        "vmId": vm.vm_id,
        "vmScaleSetName": vm.vmss or "",
        "vmSize": vm.size,
        "zone": "",
    }
    if vm.vmss:
        scale_set_id = (
            vm.resource_id.rsplit("/virtualMachines/", 1)[0] + f"/virtualMachineScaleSets/{vm.vmss}"
        )
        compute["virtualMachineScaleSet"] = {"id": scale_set_id}
    network = {
        "interface": [
            {
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}],
                    "subnet": [{"address": "10.0.0.0", "prefix": "24"}],
                },
                "ipv6": {"ipAddress": []},
                "macAddress": "000D3A000000",
            }
        ]
    }
    return {"compute": compute, "network": network}
