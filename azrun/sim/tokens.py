"""Unsigned JWT-shaped access tokens, as the local identity endpoints mint them.

Real Entra tokens are signed; nothing here can check a signature, and neither does Azurite
(it checks claims only: ``iss`` under ``https://sts.windows.net/``, ``aud``, ``nbf``/``exp``).
So tokens are ``base64url({"alg":"none","typ":"JWT"}) . base64url(claims) .`` and ARM's check
here is the claims check Azure also makes: audience, expiry, not-before, tenant.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

MANAGEMENT_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.azure.com/",
        "https://management.core.windows.net",
        "https://management.core.windows.net/",
    }
)
STORAGE_AUDIENCES = frozenset({"https://storage.azure.com", "https://storage.azure.com/"})


def resource_from_scope(scope_or_resource: str) -> str:
    """``https://management.azure.com/.default`` -> ``https://management.azure.com/``."""
    if scope_or_resource.endswith("/.default"):
        return scope_or_resource[: -len(".default")]
    return scope_or_resource


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token speaks for."""

    object_id: str
    client_id: str
    tenant_id: str
    resource_id: str | None = None  # xms_mirid: the identity's (or VM's) ARM id
    name: str = ""


def mint(principal: Principal, audience: str, *, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """Return ``(token, expires_on)`` for ``audience`` (a resource URI, not a scope)."""
    issued = int(now if now is not None else time.time())
    expires_on = issued + ttl_s
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{principal.tenant_id}/",
        "iat": issued,
        "nbf": issued - 300,
        "exp": expires_on,
        "tid": principal.tenant_id,
        "oid": principal.object_id,
        "sub": principal.object_id,
        "appid": principal.client_id,
        "idtyp": "app",
        "uti": uuid.uuid4().hex[:22],
    }
    if principal.resource_id:
        claims["xms_mirid"] = principal.resource_id
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", expires_on


class TokenInvalid(Exception):
    """The bearer token is missing, malformed, expired or for another audience."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse(token: str) -> dict[str, Any]:
    """Decode the claims of a token; raise TokenInvalid when it is not JWT-shaped."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenInvalid("InvalidAuthenticationToken", "The access token is invalid.")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, json.JSONDecodeError) as exc:
        raise TokenInvalid("InvalidAuthenticationToken", "The access token is invalid.") from exc
    if not isinstance(claims, dict):
        raise TokenInvalid("InvalidAuthenticationToken", "The access token is invalid.")
    return claims


def check_management(authorization: str | None, *, now: float | None = None) -> dict[str, Any]:
    """Check an ARM ``Authorization`` header as ARM does; return the claims.

    Raises TokenInvalid with ARM's codes: ``AuthenticationFailed`` (no header),
    ``InvalidAuthenticationToken`` (malformed), ``ExpiredAuthenticationToken``,
    ``InvalidAuthenticationTokenAudience``.
    """
    if not authorization:
        raise TokenInvalid("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise TokenInvalid(
            "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided in an invalid format."
        )
    claims = parse(token.strip())
    current = now if now is not None else time.time()
    if float(claims.get("exp", 0)) <= current:
        raise TokenInvalid(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )
    if float(claims.get("nbf", 0)) > current + 300:
        raise TokenInvalid("InvalidAuthenticationToken", "The access token is not yet valid.")
    if claims.get("aud") not in MANAGEMENT_AUDIENCES:
        raise TokenInvalid(
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. "
            "It should exactly match with one of the allowed audiences "
            "'https://management.core.windows.net/','https://management.core.windows.net',"
            "'https://management.azure.com/','https://management.azure.com'.",
        )
    return claims
