"""What went wrong getting a token, said so a person can fix it.

The paced transport records every attempt (endpoint, status, error text) in a thread-local log
while a fetch runs; when the fetch fails, :func:`managed_identity_error` turns the log into an
:class:`~azrun.errors.AuthError` that names the endpoint, what it answered, after how many
attempts, and what to check. Everything quoted from the wire passes through
:func:`azrun.redact.redact` and is cut short.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from azrun.auth._environment import AuthMode, Environment, EnvironmentKind, IdentitySelector
from azrun.errors import AuthError
from azrun.redact import redact

__all__ = ["Attempt", "login_error", "managed_identity_error", "record", "recording", "summarize_body"]

_MAX_DETAIL = 240


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to an identity endpoint: ``status`` is ``None`` if no answer came."""

    url: str
    status: int | None
    detail: str = ""


_local = threading.local()


@contextlib.contextmanager
def recording() -> Iterator[list[Attempt]]:
    """Collect the attempts this thread makes inside the block."""
    previous = getattr(_local, "attempts", None)
    attempts: list[Attempt] = []
    _local.attempts = attempts
    try:
        yield attempts
    finally:
        _local.attempts = previous


def record(attempt: Attempt) -> None:
    """Add ``attempt`` to this thread's log, if one is being recorded."""
    attempts: list[Attempt] | None = getattr(_local, "attempts", None)
    if attempts is not None:
        attempts.append(attempt)


def summarize_body(body: str) -> str:
    """The useful part of an identity endpoint's error body, redacted and short."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("error") or data.get("statusCode") or data.get("code")
        desc = data.get("error_description") or data.get("message") or ""
        if isinstance(code, dict):  # {"error": {"code", "message"}}
            nested: dict[str, Any] = code
            code, desc = nested.get("code"), nested.get("message") or desc
        text = f"{code}: {desc}" if code and desc else str(code or desc or text)
    return _short(text)


def _short(text: str) -> str:
    line = " ".join(redact(text).split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


_ENDPOINT_NAMES = {
    EnvironmentKind.AZURE_VM: "IMDS",
    EnvironmentKind.APP_SERVICE: "the App Service identity endpoint",
    EnvironmentKind.AUTOMATION: "the Azure Automation identity endpoint",
    EnvironmentKind.ARC: "the Azure Arc identity endpoint",
    EnvironmentKind.CLOUD_SHELL: "the Cloud Shell identity endpoint",
    EnvironmentKind.SERVICE_FABRIC: "the Service Fabric identity endpoint",
    EnvironmentKind.WORKLOAD_IDENTITY: "Entra ID (workload identity)",
}


def managed_identity_error(
    environment: Environment, selector: IdentitySelector, attempts: list[Attempt], exc: BaseException
) -> AuthError:
    """An :class:`AuthError` for a managed-identity fetch that failed after ``attempts``."""
    name = _ENDPOINT_NAMES.get(environment.kind, "the identity endpoint")
    url = attempts[-1].url if attempts else environment.endpoint
    where = f"{name} at {url}" if url else name
    who = f"for the {selector.label()} identity"
    if not attempts:
        message = f"{where} gave no token {who}: {_short(str(exc))}"
        hint = (
            "no request was sent, so an earlier 429/5xx is still being honoured: wait a few seconds "
            "and retry. If it persists, check that a managed identity is assigned and --client-id is right."
        )
        return AuthError(message, hint=hint)
    last = attempts[-1]
    tries = f"after {len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    if last.status is None:
        message = f"could not reach {where} {who} {tries}: {last.detail}"
    else:
        message = f"{where} answered {last.status} ({last.detail or 'no detail'}) {who} {tries}"
    return AuthError(message, hint=_hint(environment, selector, last.status))


def _hint(environment: Environment, selector: IdentitySelector, status: int | None) -> str:
    host = "VM" if environment.kind is EnvironmentKind.AZURE_VM else "resource"
    if status is None:
        if environment.kind is EnvironmentKind.AZURE_VM:
            return (
                "is this an Azure VM with IMDS reachable (no proxy for 169.254.169.254)? "
                "Off Azure use --auth cli or --auth device."
            )
        return f"check that {environment.endpoint} is reachable from here ({environment.evidence})."
    if status == 400 or (status == 404 and not selector.is_system_assigned):
        if selector.is_system_assigned:
            return (
                f"is a system-assigned managed identity enabled on this {host}? For a user-assigned one "
                "pass --client-id, --object-id or --identity-resource-id."
            )
        return (
            f"is the user-assigned identity {selector.label()} assigned to this {host}, and is the id right "
            "(az vm identity show -g RG -n VM)?"
        )
    if status in (401, 403):
        return (
            "the endpoint refused this process: the identity header rotates, so restart the app or "
            "worker to pick up the current IDENTITY_HEADER; on Arc, run as a member of the himds group."
        )
    if status in (404, 410):
        return "IMDS is updating this machine's identity data (404/410); try again in about a minute."
    if status == 429:
        return (
            "the identity endpoint is throttling this machine (IMDS: 20 requests/s, 5 at once): lower "
            "AZRUN_IMDS_RPS / AZRUN_IMDS_CONCURRENCY, or stagger the jobs."
        )
    if status >= 500:
        return "the identity endpoint is failing; retry later. On a VM, check that the guest agent runs."
    return f"check that a managed identity is assigned to this {host} and that --client-id is right."


_LOGIN_HINTS: dict[str, str] = {
    "cli": "run `az login` (on a VM: `az login --identity`), or choose --auth device.",
    "env": (
        "set AZURE_CLIENT_ID and AZURE_TENANT_ID plus AZURE_CLIENT_SECRET or "
        "AZURE_CLIENT_CERTIFICATE_PATH, and check the app registration."
    ),
    "device": "complete the sign-in at the URL shown, and check --tenant.",
    "interactive": "complete the sign-in in the browser, and check --tenant; without a browser use --auth device.",
}


def login_error(mode: AuthMode, exc: BaseException) -> AuthError:
    """An :class:`AuthError` for a failed CLI / service-principal / user login."""
    what = {"cli": "Azure CLI login", "env": "service principal login", "device": "device-code login"}.get(
        mode, "interactive login"
    )
    return AuthError(f"{what} gave no token: {_short(str(exc))}", hint=_LOGIN_HINTS.get(mode))
