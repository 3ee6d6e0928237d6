"""The one place that translates Azure SDK exceptions: classify them, and raise azrun errors.

Two uses, one reading of the exception:

* :func:`classify` reduces any exception to an :class:`~azrun.errors.AzureFailure` (kind,
  HTTP status, ARM's or storage's error code, the RBAC action a 403 names, ``Retry-After``,
  retryable, a one-line message). It never raises. The fleet decides per target on it; the
  output store words storage failures from it.
* :func:`map_azure_errors` (a context manager) and :func:`azure_error` turn an exception into the
  :class:`~azrun.errors.AzrunError` a command stops with: a one-line message, a hint that says
  what to do, the original chained (``raise ... from exc``).

Every message passes :func:`clean`: ARM's own words, on one line, through
:func:`azrun.redact.redact` (no token or SAS signature), without object reprs such as
``<ssl.SSLContext object at 0x...>`` that aiohttp puts in connection errors.

Mapping to azrun errors (most specific first):

* ``ClientAuthenticationError`` (azure-identity's ``CredentialUnavailableError``, ARM's 401)
  -> :class:`AuthError`;
* ``SubscriptionNotFound`` / ``InvalidSubscriptionId`` when the block names its subscription
  -> :class:`TargetError` "subscription X was not found or this identity cannot see it";
* 403 -> :class:`PermissionDenied`, ``action`` parsed from ARM's ``AuthorizationFailed`` text
  "does not have authorization to perform action 'X'" (else the caller's ``action=``);
* 429 -> :class:`ThrottledError` with ``Retry-After``;
* 404 ``SubscriptionNotFound`` / ``ResourceGroupNotFound`` / ``ResourceNotFound`` / ``NotFound``
  -> :class:`TargetError`;
* any other ``HttpResponseError`` -> :class:`AzrunError` ("ARM answered <status> <code>: ...");
* ``ServiceRequestError`` and ``ServiceResponseError`` -> :class:`AzrunError` with a network
  hint. Only a connect-phase cause (refused, DNS, TLS handshake, connect timeout: see
  :func:`before_sending`) classifies as ``NOT_SENT``; azure-core raises ``ServiceRequestError``
  for a "Server disconnected" after sending too, which is ``UNKNOWN_OUTCOME``.

azure-core is imported lazily, inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azrun.errors import (
    AuthError,
    AzrunError,
    AzureFailure,
    FailureKind,
    PermissionDenied,
    RunCommandError,
    TargetError,
    ThrottledError,
)
from azrun.redact import redact

__all__ = [
    "AzureFailure",
    "FailureKind",
    "azure_error",
    "before_sending",
    "classify",
    "clean",
    "error_code",
    "map_azure_errors",
    "missing_action",
]

_ACTION = re.compile(r"perform action '([^']+)'", re.IGNORECASE)
_OBJECT_REPR = re.compile(r"\s*(?:ssl:)?<[\w.]+ object at 0x[0-9a-fA-F]+>")
_NOT_FOUND_CODES = frozenset(
    {"subscriptionnotfound", "resourcegroupnotfound", "resourcenotfound", "notfound", "parentresourcenotfound"}
)
_MAX_MESSAGE = 500
_MAX_QUOTE = 300


# ----------------------------------------------------------------------------- classify
def classify(exc: BaseException) -> AzureFailure:
    """What ``exc`` means for the caller (never raises; non-Azure exceptions are ``OTHER``).

    A :class:`~azrun.errors.RunCommandError` gives back the failure it carries.
    """
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, RunCommandError):
        return exc.failure
    if isinstance(exc, ClientAuthenticationError):
        return AzureFailure(FailureKind.AUTH, status_of(exc), error_code(exc) or "AuthenticationFailed", message_of(exc))
    if isinstance(exc, HttpResponseError):
        return _http_failure(exc)
    if isinstance(exc, ServiceRequestError):
        kind = FailureKind.NOT_SENT if before_sending(exc) else FailureKind.UNKNOWN_OUTCOME
        return AzureFailure(kind, None, type(exc).__name__, message_of(exc))
    if isinstance(exc, ServiceResponseError):
        return AzureFailure(FailureKind.UNKNOWN_OUTCOME, None, "ServiceResponseError", message_of(exc))
    return AzureFailure(FailureKind.OTHER, None, type(exc).__name__, message_of(exc))


def _http_failure(exc: Any) -> AzureFailure:
    status = status_of(exc)
    code = error_code(exc)
    message = message_of(exc)
    if status == 409:
        kind = FailureKind.CONFLICT if code.lower() == "conflict" else FailureKind.NOT_ALLOWED
    elif status == 403:
        return AzureFailure(FailureKind.FORBIDDEN, status, code or "AuthorizationFailed", message,
                            action=missing_action(message))
    elif status == 429:
        return AzureFailure(FailureKind.THROTTLED, status, code or "TooManyRequests", message,
                            retry_after_s=_retry_after(exc))
    else:
        kind = {404: FailureKind.NOT_FOUND, 401: FailureKind.AUTH}.get(status or 0, FailureKind.OTHER)
    return AzureFailure(kind, status, code or (f"HTTP{status}" if status else ""), message)


#: Errors raised while connecting, before a byte of the request was written (aiohttp, urllib3,
#: the socket layer). Compared by class name along the MRO so neither library is imported.
_CONNECT_PHASE = frozenset({
    "ClientConnectorError",  # aiohttp: refused, DNS, TLS handshake (its DNS/SSL/certificate subclasses too)
    "ConnectionTimeoutError",  # aiohttp: connect timeout
    "ServiceRequestTimeoutError",  # azure-core's name for it
    "NewConnectionError",  # urllib3 (requests): refused, DNS
    "ConnectTimeoutError",
    "NameResolutionError",
    "gaierror",
    "ConnectionRefusedError",
})


def before_sending(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) proves the request never left: a connect-phase
    failure. azure-core raises ``ServiceRequestError`` for *any* aiohttp client error, a
    "Server disconnected" after the request was written included, so the class alone proves
    nothing."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if any(c.__name__ in _CONNECT_PHASE for c in type(err).__mro__):
            return True
        inner = getattr(err, "inner_exception", None)
        reason = getattr(err, "reason", None)  # urllib3's MaxRetryError
        todo += [err.__cause__, err.__context__,
                 inner if isinstance(inner, BaseException) else None,
                 reason if isinstance(reason, BaseException) else None]
    return False


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (None when no answer arrived)."""
    status = getattr(exc, "status_code", None)
    return int(status) if isinstance(status, int) else None


def error_code(exc: BaseException) -> str:
    """ARM's ``error.code``, else storage's ``error_code`` ('' when absent)."""
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) if err is not None else None
    if not code:
        raw = getattr(exc, "error_code", None)  # storage: a StorageErrorCode enum or a str
        code = getattr(raw, "value", raw)
    return str(code or "")


def missing_action(text: str) -> str | None:
    """The RBAC action an ``AuthorizationFailed`` message names, if any."""
    m = _ACTION.search(text)
    return m.group(1) if m else None


def message_of(exc: BaseException) -> str:
    """ARM's own message when there is one, else the exception's first line; cleaned."""
    err = getattr(exc, "error", None)
    text = getattr(err, "message", None) if err is not None else None
    if not text:
        raw = str(getattr(exc, "message", None) or exc or "")
        text = next((line for line in raw.splitlines() if line.strip()), "") or type(exc).__name__
    return clean(str(text))


def clean(text: str, limit: int = _MAX_MESSAGE) -> str:
    """One line, secrets redacted, object reprs removed, at most ``limit`` characters."""
    text = redact(" ".join(_OBJECT_REPR.sub("", text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------- raise
@contextmanager
def map_azure_errors(
    what: str = "", *, subscription: str | None = None, action: str | None = None
) -> Iterator[None]:
    """Re-raise Azure SDK exceptions from the block as azrun errors (others pass unchanged).

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
    from azure.core.exceptions import AzureError, HttpResponseError

    if not isinstance(exc, AzureError):
        return None
    f = classify(exc)
    prefix = f"{what}: " if what else ""
    quote = clean(f.message, _MAX_QUOTE)
    if f.kind is FailureKind.AUTH:
        return AuthError(
            f"{prefix}authentication failed: {quote}",
            hint="run `azrun auth check` to see which identity azrun uses and why it fails",
        )
    if isinstance(exc, HttpResponseError):
        return _http_error(f, prefix, quote, subscription, action)
    if f.kind is FailureKind.NOT_SENT or f.code == "ServiceRequestError":
        return AzrunError(
            f"{prefix}cannot reach Azure: {quote}",
            hint="check the network, proxy and DNS (AZRUN_ARM_ENDPOINT / AZRUN_CA_BUNDLE for a custom cloud)",
        )
    if f.kind is FailureKind.UNKNOWN_OUTCOME:
        return AzrunError(
            f"{prefix}the connection to Azure failed before an answer arrived: {quote}",
            hint="retry; if it persists, check the network path to ARM",
        )
    return AzrunError(f"{prefix}{quote}")


def _http_error(
    f: AzureFailure, prefix: str, quote: str, subscription: str | None, default_action: str | None
) -> AzrunError:
    where = f" on subscription {subscription}" if subscription else ""
    if subscription and f.code.lower() in ("subscriptionnotfound", "invalidsubscriptionid"):
        return TargetError(
            f"{prefix}subscription {subscription} was not found or this identity cannot see it ({f.code})",
            hint="check the subscription id (`azrun auth check` lists the ones this identity can see), "
            "or grant the identity Reader on it",
        )
    if f.kind is FailureKind.FORBIDDEN:
        action = f.action or default_action
        needed = f"'{action}'" if action else "the required permission"
        return PermissionDenied(
            f"{prefix}permission denied{where}" + (f" (missing {action})" if action else ""),
            action=action,
            hint=f"grant the identity a role with {needed} on the scope (e.g. Reader to list, "
            "Virtual Machine Contributor to run), or check `azrun auth check`",
        )
    if f.kind is FailureKind.THROTTLED:
        after = f"; Azure asked to wait {f.retry_after_s:g} s" if f.retry_after_s is not None else ""
        return ThrottledError(
            f"{prefix}Azure throttled the request{where} after every retry{after}",
            retry_after_s=f.retry_after_s,
            hint="lower --concurrency or try again later; other clients may share the subscription's limits",
        )
    if f.kind is FailureKind.NOT_FOUND and f.code.lower() in _NOT_FOUND_CODES:
        return TargetError(f"{prefix}{quote}", hint="check the subscription, resource group and name")
    code = "" if f.code == f"HTTP{f.status}" else f.code
    label = f"{f.status} {code}".strip() if f.status else code or "an error"
    return AzrunError(f"{prefix}ARM answered {label}: {quote}")
