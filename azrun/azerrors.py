"""Translate azure-core / azure-identity exceptions into azrun errors at one boundary.

Library code wraps each Azure call (or a batch of them) in :func:`map_azure_errors`; whatever
the SDK raises leaves as an :class:`azrun.errors.AzrunError` with a one-line message, a hint that
says what to do, and the original chained (``raise ... from exc``). ARM's wording is quoted
only after :func:`azrun.redact.redact`, so no token or SAS signature reaches a message.

Mapping (most specific first):

* ``ClientAuthenticationError`` (includes azure-identity's ``CredentialUnavailableError``, and
  ARM's 401) -> :class:`AuthError`;
* ``SubscriptionNotFound`` / ``InvalidSubscriptionId`` when the block names its subscription
  -> :class:`TargetError` "subscription X was not found or this identity cannot see it";
* 403 -> :class:`PermissionDenied`, ``action`` parsed from ARM's ``AuthorizationFailed`` text
  "does not have authorization to perform action 'X'" (else the caller's ``action=``);
* 429 -> :class:`ThrottledError` with ``Retry-After``;
* 404 ``SubscriptionNotFound`` / ``ResourceGroupNotFound`` / ``ResourceNotFound`` / ``NotFound``
  -> :class:`TargetError`;
* any other ``HttpResponseError`` -> :class:`AzrunError` ("ARM answered <status> <code>: ...");
* ``ServiceRequestError`` (nothing was sent: DNS, refused, TLS) and ``ServiceResponseError``
  (sent, no answer) -> :class:`AzrunError` with a network hint.

The module imports azure-core lazily, inside the handler, so importing it stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azrun.errors import AuthError, AzrunError, PermissionDenied, TargetError, ThrottledError
from azrun.redact import redact

__all__ = ["azure_error", "error_code", "map_azure_errors", "missing_action"]

_ACTION = re.compile(r"perform action '([^']+)'", re.IGNORECASE)
_NOT_FOUND_CODES = frozenset(
    {"subscriptionnotfound", "resourcegroupnotfound", "resourcenotfound", "notfound", "parentresourcenotfound"}
)
_MAX_QUOTE = 300


@contextmanager
def map_azure_errors(
    what: str = "", *, subscription: str | None = None, action: str | None = None
) -> Iterator[None]:
    """Re-raise Azure SDK exceptions from the block as azrun errors.

    Args:
        what: what was being done, for the message ("listing virtual machines").
        subscription: the subscription the block talks to, named in 403/404 messages.
        action: the RBAC action the block needs, named on a 403 whose text does not say.
    """
    try:
        yield
    except AzrunError:
        raise
    except Exception as exc:
        mapped = azure_error(exc, what, subscription=subscription, action=action)
        if mapped is None:
            raise
        raise mapped from exc


def azure_error(
    exc: BaseException, what: str = "", *, subscription: str | None = None, action: str | None = None
) -> AzrunError | None:
    """The azrun error for an Azure SDK exception, or None when ``exc`` is not one."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    prefix = f"{what}: " if what else ""
    if isinstance(exc, ClientAuthenticationError):
        return AuthError(
            f"{prefix}authentication failed: {_quote(_message(exc))}",
            hint="run `azrun auth check` to see which identity azrun uses and why it fails",
        )
    if isinstance(exc, HttpResponseError):
        return _http_error(exc, prefix, subscription, action)
    if isinstance(exc, ServiceRequestError):
        return AzrunError(
            f"{prefix}cannot reach Azure: {_quote(_message(exc))}",
            hint="check the network, proxy and DNS (AZRUN_ARM_ENDPOINT / AZRUN_CA_BUNDLE for a custom cloud)",
        )
    if isinstance(exc, ServiceResponseError):
        return AzrunError(
            f"{prefix}the connection to Azure failed before an answer arrived: {_quote(_message(exc))}",
            hint="retry; if it persists, check the network path to ARM",
        )
    if isinstance(exc, AzureError):
        return AzrunError(f"{prefix}{_quote(_message(exc))}")
    return None


def error_code(exc: BaseException) -> str:
    """ARM's ``error.code`` of an ``HttpResponseError`` ('' when absent)."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) if err is not None else None
    return str(code or "")


def missing_action(text: str) -> str | None:
    """The RBAC action an ``AuthorizationFailed`` message names, if any."""
    m = _ACTION.search(text)
    return m.group(1) if m else None


def _http_error(exc: Any, prefix: str, subscription: str | None, default_action: str | None) -> AzrunError:
    status = int(getattr(exc, "status_code", 0) or 0)
    code = error_code(exc)
    text = _message(exc)
    where = f" on subscription {subscription}" if subscription else ""
    if subscription and code.lower() in ("subscriptionnotfound", "invalidsubscriptionid"):
        return TargetError(
            f"{prefix}subscription {subscription} was not found or this identity cannot see it ({code})",
            hint="check the subscription id (`azrun auth check` lists the ones this identity can see), "
            "or grant the identity Reader on it",
        )
    if status == 403:
        action = missing_action(text) or default_action
        needed = f"'{action}'" if action else "the required permission"
        return PermissionDenied(
            f"{prefix}permission denied{where}" + (f" (missing {action})" if action else ""),
            action=action,
            hint=f"grant the identity a role with {needed} on the scope (e.g. Reader to list, "
            "Virtual Machine Contributor to run), or check `azrun auth check`",
        )
    if status == 429:
        retry_after = _retry_after(exc)
        after = f"; Azure asked to wait {retry_after:g} s" if retry_after is not None else ""
        return ThrottledError(
            f"{prefix}Azure throttled the request{where} after every retry{after}",
            retry_after_s=retry_after,
            hint="lower --concurrency or try again later; other clients may share the subscription's limits",
        )
    if status == 404 and code.lower() in _NOT_FOUND_CODES:
        return TargetError(f"{prefix}{_quote(text)}", hint="check the subscription, resource group and name")
    label = f"{status} {code}".strip() if status else code or "an error"
    return AzrunError(f"{prefix}ARM answered {label}: {_quote(text)}")


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _message(exc: BaseException) -> str:
    """ARM's own message when there is one, else the exception text, on one line."""
    err = getattr(exc, "error", None)
    text = getattr(err, "message", None) if err is not None else None
    if not text:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _quote(text: str) -> str:
    text = redact(text)
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 1] + "…"
