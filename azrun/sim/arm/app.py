"""The local ARM: one aiohttp app serving Resources, Compute and subscriptions over HTTPS.

Every request goes through the same pipeline, in the order the real one meets it:

1. fault injection at the connection: added latency, connection resets;
2. bearer token (``401`` with ARM's codes and ``WWW-Authenticate``), then the route
   (case-insensitive; ``404``/``405``) and the ``api-version`` (``400``);
3. ARM's token buckets (``429 SubscriptionRequestsThrottled``), then RBAC (``403``);
4. injected 429 storms and 500/503 errors;
5. the handler, which resolves entities (``404``s), takes Compute's buckets and answers.

Every answer carries the ``x-ms-ratelimit-remaining-*`` headers once the caller is known, and
every request is one line of the request log (path only: queries and bodies may hold secrets).
The admin API under ``/_sim`` (``admin.py``; no token, not throttled) drives tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from azrun.sim.arm import errors as err
from azrun.sim.arm.admin import AdminApp
from azrun.sim.arm.context import Call, Reply, Service, json_response
from azrun.sim.arm.routes import Match, Router, check_api_version
from azrun.sim.render import Renderer
from azrun.sim.state import World
from azrun.sim.tokens import TokenInvalid, check_management

_LOG = logging.getLogger(__name__)
_KIND = {"GET": "read", "HEAD": "read", "DELETE": "delete"}
_MAX_BODY = 4 * 1024 * 1024


class _Reset(Exception):
    """The connection was dropped on purpose (fault injection)."""


class ArmApp:
    """The request pipeline of the local ARM (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.service = Service(world, Renderer(world.spec))
        self.router = Router()

    # ------------------------------------------------------------------ entry point
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        log: dict[str, Any] = {"op": "Unknown", "caller": None}
        status = 0
        try:
            response = await self._pipeline(request, log)
            status = response.status
            return response
        except _Reset:
            # The transport is already aborted; aiohttp drops this answer without a word.
            log.setdefault("fault", "reset")
            return web.Response(status=500)
        finally:
            extra = {k: v for k, v in log.items() if k not in ("op", "caller")}
            self.world.reqlog.write(
                service="arm",
                method=request.method,
                path=request.path,
                op=log["op"],
                status=status,
                caller=log["caller"],
                ms=(time.perf_counter() - started) * 1000,
                **extra,
            )

    async def _pipeline(self, request: web.Request, log: dict[str, Any]) -> web.StreamResponse:
        headers: dict[str, str] = {
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id")
            or str(uuid.uuid4()),
        }
        try:
            route = self._route(request, log)
            await self._connection_faults(request)
            reply = await self._authorized(request, route, log, headers)
        except err.ArmError as exc:
            log.update(exc.log)
            return json_response(exc.status, exc.body(), {**headers, **exc.headers})
        except _Reset:
            raise
        except Exception:
            _LOG.exception("local ARM bug on %s %s", request.method, request.path)
            e = err.internal_error()
            return json_response(e.status, e.body(), headers)
        return json_response(reply.status, reply.body, {**headers, **reply.headers})

    async def _connection_faults(self, request: web.Request) -> None:
        if self.world.in_outage():  # POST /_sim/outage
            if request.transport is not None:
                request.transport.abort()
            raise _Reset()
        faults = self.world.faults
        if faults.arm_latency_ms > 0:
            await asyncio.sleep(faults.arm_latency_ms / 1000)
        if faults.arm_reset_rate and self.world.rng.random() < faults.arm_reset_rate:
            if request.transport is not None:
                request.transport.abort()
            raise _Reset()

    def _route(self, request: web.Request, log: dict[str, Any]) -> Match | err.ArmError:
        """The endpoint (its op name goes to the log at once) or the routing error to answer later."""
        try:
            match = self.router.match(request.method, request.path)
        except err.ArmError as exc:
            return exc
        log["op"] = match.endpoint.op
        return match

    async def _authorized(
        self, request: web.Request, route: Match | err.ArmError, log: dict[str, Any], headers: dict[str, str]
    ) -> Reply:
        caller = self._caller(request)  # ARM checks the token before it looks at the path
        log["caller"] = caller
        if isinstance(route, err.ArmError):
            raise route
        match = route
        version = check_api_version(match.endpoint.family, request.query.get("api-version"))
        sub = match.params.get("sub")
        kind = _KIND.get(request.method, "write")
        try:
            headers.update(
                self.world.throttler.arm(
                    subscription=sub, tenant=self.world.tenant_id, caller=caller, kind=kind
                )
            )
        except err.ArmError as exc:
            exc.headers = {**headers, **exc.headers}
            raise
        self._authorize(caller, sub, kind, match, request.path)
        self._request_faults()
        call = Call(
            method=request.method,
            path=request.path,
            query=request.query,
            api_version=version,
            base=f"{request.scheme}://{request.host}",
            caller=caller,
            headers=headers,
            body=await self._body(request) if request.method in ("PUT", "PATCH", "POST") else b"",
        )
        try:
            reply = await match.endpoint.handler(self.service, call, match.params)
        except err.ArmError as exc:
            exc.headers = {**call.headers, **exc.headers}
            raise
        reply.headers = {**call.headers, **reply.headers}
        self._lost_reply(request, kind, log)
        return reply

    def _lost_reply(self, request: web.Request, kind: str, log: dict[str, Any]) -> None:
        """The write was applied, but its answer never arrives intact: half the time a 500, half
        the time the connection drops (``faults.arm_lost_reply_rate``; the client cannot tell
        whether the write happened, as with a gateway failure after the write in Azure)."""
        faults, rng = self.world.faults, self.world.rng
        if kind == "read" or not faults.arm_lost_reply_rate or rng.random() >= faults.arm_lost_reply_rate:
            return
        if rng.random() < 0.5:
            log["fault"] = "applied-500"
            raise err.internal_error()
        log["fault"] = "applied-reset"
        if request.transport is not None:
            request.transport.abort()
        raise _Reset()

    # ------------------------------------------------------------------ stages
    def _caller(self, request: web.Request) -> str:
        try:
            claims = check_management(request.headers.get("Authorization"))
        except TokenInvalid as exc:
            raise self._unauthorized(exc.code, exc.message) from None
        tid = str(claims.get("tid", ""))
        if tid.lower() != self.world.tenant_id.lower():
            raise self._unauthorized(
                "InvalidAuthenticationTokenTenant",
                f"The access token is from the wrong issuer '{claims.get('iss')}'. It must match the tenant "
                f"'https://sts.windows.net/{self.world.tenant_id}/' associated with this subscription. Please "
                f"use the authority (URL) 'https://login.windows.net/{self.world.tenant_id}' to get the token.",
            )
        oid = claims.get("oid")
        if not isinstance(oid, str) or not oid:
            raise self._unauthorized("InvalidAuthenticationToken", "The access token is invalid.")
        return oid

    def _unauthorized(self, code: str, message: str) -> err.ArmError:
        challenge = (
            f'Bearer authorization_uri="https://login.microsoftonline.com/{self.world.tenant_id}", '
            f'error="invalid_token", error_description="{message.replace(chr(34), chr(39))}"'
        )
        return err.ArmError(401, code, message, headers={"WWW-Authenticate": challenge})

    def _authorize(self, caller: str, sub: str | None, kind: str, match: Match, path: str) -> None:
        action = match.endpoint.action
        if sub is None or action is None:
            return
        role = self.world.role(sub, caller)
        if role == "none" or (role == "reader" and kind != "read"):
            raise err.authorization_failed(caller, action, path.rstrip("/"))

    def _request_faults(self) -> None:
        faults, rng = self.world.faults, self.world.rng
        if faults.arm_throttle_rate and rng.random() < faults.arm_throttle_rate:
            wait = rng.randint(1, 3)
            raise err.ArmError(
                429,
                "TooManyRequests",
                f"The request is being throttled. Please try again after '{wait}' seconds.",
                headers={"Retry-After": str(wait)},
                log={"throttle": "fault"},
            )
        if faults.arm_error_rate and rng.random() < faults.arm_error_rate:
            if rng.random() < 0.5:
                raise err.internal_error()
            raise err.ArmError(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please try again later.",
                headers={"Retry-After": "1"},
            )

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise err.ArmError(
                413,
                "RequestEntityTooLarge",
                f"The request content size exceeds the limit of {_MAX_BODY} bytes.",
            ) from None


def make_arm_app(world: World) -> web.Application:
    """All ARM routes plus the ``/_sim`` admin routes; starts the world's scheduler."""
    arm, admin = ArmApp(world), AdminApp(world)
    # Long URLs are legal (operation URLs, nextLinks with filters): allow 64 KB request lines.
    app = web.Application(
        client_max_size=_MAX_BODY, handler_args={"max_line_size": 65536, "max_field_size": 65536}
    )
    app.router.add_route("*", "/_sim/{tail:.*}", admin.handle)
    app.router.add_route("*", "/{tail:.*}", arm.handle)

    async def on_startup(_app: web.Application) -> None:
        await world.start()

    async def on_cleanup(_app: web.Application) -> None:
        await world.aclose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
