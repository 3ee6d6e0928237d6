"""``azrun auth``: who azrun is here, without ever showing the token.

:func:`describe` fetches a management token through the process credential (so it exercises
exactly the path every client uses), reads the identity from the token's claims (not verified:
this is for display, the token's consumer verifies it), and asks a caller-supplied function for
the subscriptions visible. Listing subscriptions needs an ARM client, which this module does not
build: the CLI passes ``list_subscriptions`` (built on ``ClientFactory``); without it the
``subscriptions`` field is ``None`` (not listed).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from azrun.auth._credentials import ProcessCredential
from azrun.cloud import Cloud
from azrun.redact import redact

__all__ = ["AuthInfo", "ListSubscriptions", "SubscriptionInfo", "describe", "token_claims"]


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """One subscription the identity can see."""

    subscription_id: str
    display_name: str | None = None
    state: str | None = None
    tenant_id: str | None = None


ListSubscriptions = Callable[[ProcessCredential, Cloud], Iterable[SubscriptionInfo]]
"""``(credential, cloud) -> subscriptions``; the CLI builds it on an ARM subscriptions client."""


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """What ``azrun auth`` prints (``--json``: :meth:`to_dict`). Never contains the token.

    ``subscriptions`` is ``None`` when they were not listed (no lister given, or it failed:
    then ``subscriptions_error`` says why).
    """

    environment: str
    environment_kind: str
    auth_mode: str
    cloud: str
    arm_endpoint: str
    identity: str
    client_id: str | None
    object_id: str | None
    upn: str | None
    tenant_id: str | None
    identity_resource_id: str | None
    token_expires_on: str
    token_expires_in_s: int
    subscriptions: tuple[SubscriptionInfo, ...] | None = None
    subscriptions_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        data = asdict(self)
        if self.subscriptions is not None:
            data["subscriptions"] = [asdict(s) for s in self.subscriptions]
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs in display order, for a two-column table."""
        rows = [
            ("environment", self.environment),
            ("auth", self.auth_mode),
            ("cloud", f"{self.cloud} ({self.arm_endpoint})"),
            ("identity", self.identity),
        ]
        for label, value in (
            ("client id", self.client_id),
            ("object id", self.object_id),
            ("user", self.upn),
            ("identity resource id", self.identity_resource_id),
            ("tenant", self.tenant_id),
        ):
            if value:
                rows.append((label, value))
        rows.append(("token expires", f"{self.token_expires_on} (in {self.token_expires_in_s} s)"))
        if self.subscriptions is not None:
            subs = ", ".join(f"{s.subscription_id} ({s.display_name})" if s.display_name else s.subscription_id
                             for s in self.subscriptions)
            rows.append(("subscriptions", subs or "none visible"))
        elif self.subscriptions_error:
            rows.append(("subscriptions", f"not listed: {self.subscriptions_error}"))
        return rows


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified; ``{}`` if the token is not a JWT."""
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(
    credential: ProcessCredential,
    *,
    list_subscriptions: ListSubscriptions | None = None,
    clock: Callable[[], float] = time.time,
) -> AuthInfo:
    """Fetch a management token and report environment, identity, tenant, expiry, subscriptions.

    Raises:
        AuthError: no token could be had (the error says where and what to check).
    """
    spec = credential.spec
    info = credential.get_token_info(spec.cloud.management_scope)
    claims = token_claims(info.token)
    subscriptions, error = _list(credential, spec.cloud, list_subscriptions)
    expires = dt.datetime.fromtimestamp(info.expires_on, tz=dt.timezone.utc)
    return AuthInfo(
        environment=spec.environment.describe(),
        environment_kind=spec.environment.kind.value,
        auth_mode=spec.mode,
        cloud=spec.cloud.name,
        arm_endpoint=spec.cloud.arm_endpoint,
        identity=spec.describe_identity(),
        client_id=_claim(claims, "appid", "azp"),
        object_id=_claim(claims, "oid"),
        upn=_claim(claims, "upn", "unique_name", "preferred_username"),
        tenant_id=_claim(claims, "tid") or spec.tenant_id,
        identity_resource_id=_claim(claims, "xms_mirid"),
        token_expires_on=expires.isoformat(timespec="seconds"),
        token_expires_in_s=max(0, int(info.expires_on - clock())),
        subscriptions=subscriptions,
        subscriptions_error=error,
    )


def _claim(claims: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _list(
    credential: ProcessCredential, cloud: Cloud, lister: ListSubscriptions | None
) -> tuple[tuple[SubscriptionInfo, ...] | None, str | None]:
    if lister is None:
        return None, None
    try:
        return tuple(lister(credential, cloud)), None
    except Exception as exc:  # the identity is still worth showing; say why the list is missing
        return None, " ".join(redact(str(exc)).split())[:240]
