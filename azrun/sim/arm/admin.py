"""``/_sim``: the local Azure's admin API (tests and benchmarks only; no token, not throttled).

Executions (the proof that nothing ran twice), power changes, faults and limits at run time,
outages (``POST /_sim/outage {"seconds", "mode"}``: ARM resets connections, or also refuses new
ones, for N seconds; the admin API itself answers during a "reset" outage), counters. Every request is one line of the request log with service ``admin``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from azrun.sim.arm import errors as err
from azrun.sim.arm.context import json_response
from azrun.sim.fleetspec import FleetError, parse_faults, parse_limits
from azrun.sim.model import POWER_STATES
from azrun.sim.state import World

_LOG = logging.getLogger(__name__)


class AdminApp:
    """``/_sim``: executions, power, faults, limits, stats (tests and benchmarks only)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        name = request.path.removeprefix("/_sim").strip("/").lower()
        status = 500
        try:
            response = await self._dispatch(request, name)
        except err.ArmError as exc:
            response = json_response(exc.status, exc.body(), {})
        except Exception:
            _LOG.exception("local ARM admin bug on %s", request.path)
            response = json_response(500, err.internal_error().body(), {})
        status = response.status
        self.world.reqlog.write(
            service="admin",
            method=request.method,
            path=request.path,
            op=f"Admin_{name.title() or 'Root'}",
            status=status,
            caller=None,
            ms=(time.perf_counter() - started) * 1000,
        )
        return response

    async def _dispatch(self, request: web.Request, name: str) -> web.StreamResponse:
        world = self.world
        if request.method == "GET":
            if name == "executions":
                return json_response(200, {"value": world.agent.executions()}, {})
            if name == "stats":
                return json_response(200, self._stats(), {})
            if name == "faults":
                return json_response(200, asdict(world.faults), {})
            if name == "limits":
                return json_response(200, asdict(world.throttler.limits), {})
        if request.method == "POST" and name == "outage":
            return self._outage(await self._json(request))
        if request.method == "POST" and name in ("power", "faults", "limits"):
            body = await self._json(request)
            if name == "power":
                return await self._power(body)
            try:
                if name == "faults":
                    world.set_faults(parse_faults(body))
                    return json_response(200, asdict(world.faults), {})
                world.set_limits(parse_limits(body))
                return json_response(200, asdict(world.throttler.limits), {})
            except (FleetError, TypeError, ValueError, KeyError) as exc:
                raise err.ArmError(400, "InvalidRequestContent", f"Invalid {name}: {exc}") from None
        raise err.ArmError(404, "NotFound", f"No admin route {request.method} /_sim/{name}.")

    async def _power(self, body: dict[str, Any]) -> web.StreamResponse:
        power = str(body.get("power", "")).lower()
        if power not in POWER_STATES:
            raise err.ArmError(400, "InvalidParameter", f"power must be one of {', '.join(POWER_STATES)}.")
        machine = self.world.machine(str(body.get("id", "")))
        if machine is None:
            raise err.ArmError(404, "ResourceNotFound", "No VM or scale-set instance with that id.")
        await self.world.set_power(machine, power)
        return json_response(200, {"id": machine.id, "power": machine.power}, {})

    def _outage(self, body: dict[str, Any]) -> web.StreamResponse:
        """``{"seconds": N, "mode": "reset" | "refuse"}``: ARM is unreachable for N seconds."""
        mode = str(body.get("mode", "reset")).lower()
        try:
            seconds = float(body.get("seconds", 0))
        except (TypeError, ValueError):
            seconds = -1.0
        if mode not in ("reset", "refuse") or not 0 < seconds <= 3600:
            raise err.ArmError(
                400, "InvalidParameter", 'outage needs {"seconds": 0 < N <= 3600, "mode": "reset" | "refuse"}.'
            )
        self.world.outage(seconds, mode)
        return json_response(200, {"seconds": seconds, "mode": mode}, {})

    def _stats(self) -> dict[str, Any]:
        requests: dict[str, dict[str, int]] = {}
        for (service, status), count in self.world.reqlog.counts.items():
            requests.setdefault(service, {})[str(status)] = count
        return {
            "requests": requests,
            "runningScripts": self.world.agent.running_count(),
            "runCommands": sum(len(m.run_commands) for m in self.world.machines.values()),
            "operations": len(self.world.runs.operations),
        }

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise err.invalid_request_content("The admin request body is not JSON.") from None
        if not isinstance(body, dict):
            raise err.invalid_request_content("The admin request body must be a JSON object.")
        return body
