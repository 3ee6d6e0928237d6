"""What every ARM handler gets (a ``Call``) and returns (a ``Reply``), plus shared lookups.

Handlers are plain async functions of (service, call, path params) -> Reply, so routing,
auth, throttling, faults and logging stay in one middleware (``arm.py``) and the handlers
only know the world.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiMapping

from azrun.sim.arm import errors as err
from azrun.sim.fleetspec import ResourceGroupSpec, SubscriptionSpec
from azrun.sim.model import Machine, ScaleSet
from azrun.sim.render import Encoded, Renderer
from azrun.sim.state import World

T = TypeVar("T")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def json_response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    """An aiohttp answer: no body for None, pre-encoded listings as they are, else compact JSON."""
    if body is None:
        return web.Response(status=status, headers=headers)
    data = body.data if isinstance(body, Encoded) else json.dumps(body, separators=(",", ":")).encode()
    return web.Response(status=status, body=data, headers=headers, content_type="application/json")


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One ARM request as the handlers see it (no aiohttp types beyond the query mapping)."""

    method: str
    path: str
    query: MultiMapping[str]
    base: str  # "https://127.0.0.1:P": where nextLink and operation URLs point
    api_version: str
    body: bytes = b""
    caller: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # added to the response

    def q(self, name: str) -> str | None:
        """A query parameter by name, case-insensitively (ARM ignores the casing)."""
        lname = name.lower()
        for key, value in self.query.items():
            if key.lower() == lname:
                return value
        return None

    def expand_instance_view(self) -> bool:
        return (self.q("$expand") or "").lower() == "instanceview"


@dataclass
class Service:
    """The world plus its renderer: what handlers close over."""

    world: World
    render: Renderer

    def compute(
        self, call: Call, operation: str, *, subscription: str, resource: str | None, charge: int = 1
    ) -> None:
        """Take Compute tokens (raises a 429 ArmError) and record the headers on the call."""
        call.headers.update(
            self.world.throttler.compute(
                operation, subscription=subscription.lower(), resource=resource, charge=charge
            )
        )

    # ------------------------------------------------------------- lookups raising ARM's 404s
    def subscription(self, sub: str) -> SubscriptionSpec:
        if not _GUID.match(sub):
            raise err.invalid_subscription_id(sub)
        found = self.world.subscriptions.get(sub.lower())
        if found is None:
            raise err.subscription_not_found(sub)
        return found

    def group(self, sub: str, rg: str) -> tuple[SubscriptionSpec, ResourceGroupSpec]:
        s = self.subscription(sub)
        g = self.world.groups.get((sub.lower(), rg.lower()))
        if g is None:
            raise err.resource_group_not_found(rg)
        return s, g

    def vm(self, sub: str, rg: str, name: str) -> Machine:
        self.group(sub, rg)
        m = self.world.machine(
            f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        )
        if m is None:
            raise err.resource_not_found("Microsoft.Compute/virtualMachines", name, rg)
        return m

    def vmss(self, sub: str, rg: str, name: str) -> ScaleSet:
        self.group(sub, rg)
        ss = self.world.scale_set(sub, rg, name)
        if ss is None:
            raise err.resource_not_found("Microsoft.Compute/virtualMachineScaleSets", name, rg)
        return ss

    def instance(self, sub: str, rg: str, name: str, instance_id: str) -> Machine:
        ss = self.vmss(sub, rg, name)
        if ss.spec.orchestration != "Uniform":
            raise err.entity_not_found()
        for m in ss.members:
            if m.instance_id == instance_id:
                return m
        raise err.entity_not_found()


def page(call: Call, items: Sequence[T], size: int) -> tuple[Sequence[T], str | None]:
    """One page of ``items`` from ``$skiptoken`` and the ``nextLink`` to the next one (or None)."""
    token = call.q("$skiptoken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise err.invalid_parameter(
                "The value of parameter $skiptoken is invalid.", "$skiptoken"
            ) from exc
    size = max(1, size)
    chunk = items[start : start + size]
    if start + size >= len(items):
        return chunk, None
    nxt = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
    pairs = [(k, v) for k, v in call.query.items() if k.lower() != "$skiptoken"]
    pairs.append(("$skiptoken", nxt))
    return chunk, f"{call.base}{quote(call.path)}?{urlencode(pairs, quote_via=quote, safe='$')}"


def listing(values: list[Any], next_link: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": values}
    if next_link:
        body["nextLink"] = next_link
    return body
