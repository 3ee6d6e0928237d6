"""Connecting to the output container: URL and connection-string parsing, SDK client options,
signer choice, and storage errors turned into one line that names the fix.

Against the emulator (a loopback host or ``devstoreaccount1``) and on a custom cloud, clients pin
``api_version=2025-11-05`` (Azurite 3.35 knows nothing newer) and trust the cloud's CA bundle.
Retries are short (3 tries, ~1 s apart): a live tail must not stall for minutes on one read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from azrun.errors import AuthError, ConfigError, OutputError
from azrun.output._sas import AccountKeySigner, SasSigner, UserDelegationSigner
from azrun.redact import redact

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

    from azrun.clients import ClientFactory

__all__ = [
    "DEFAULT_CONTAINER",
    "EMULATOR_API_VERSION",
    "ROLE",
    "Container",
    "build_clients",
    "client_kwargs",
    "container_url_for",
    "container_url_from_settings",
    "output_error",
    "parse_container_url",
    "short_error",
]

DEFAULT_CONTAINER = "azrun-output"
EMULATOR_API_VERSION = "2025-11-05"
EMULATOR_ACCOUNT = "devstoreaccount1"
ROLE = "Storage Blob Data Contributor"


@dataclass(frozen=True, slots=True)
class Container:
    """A parsed output container URL."""

    url: str  # https://acct.blob.core.windows.net/container (or path-style emulator URL)
    account: str
    name: str
    emulator: bool


def parse_container_url(url: str) -> Container:
    """``https://<account>.<blob endpoint>/<container>``, or path-style ``<endpoint>/<account>/<container>``
    for the emulator (plain http only on loopback).

    Raises:
        ConfigError: not such a URL, or it carries a query (a SAS).
    """
    parts = urlsplit(url.strip())
    insecure_ok = parts.scheme == "http" and bool(parts.hostname) and _is_loopback(parts.hostname or "")
    if not (parts.scheme == "https" or insecure_ok) or not parts.hostname:
        raise ConfigError(
            f"output container {redact(url)!r} is not an https URL",
            hint="use https://<account>.blob.core.windows.net/<container>",
        )
    if parts.query:
        raise ConfigError(
            "the output container URL must not carry a query (a SAS)",
            hint="give the plain container URL; azrun signs per-blob SAS itself or uses --blob-identity",
        )
    segments = [s for s in parts.path.split("/") if s]
    host = parts.hostname
    path_style = _is_loopback(host) or not host.count(".")
    if path_style:
        if len(segments) != 2:
            raise ConfigError(
                f"output container {url!r} should be <endpoint>/<account>/<container>",
                hint="e.g. https://127.0.0.1:10000/devstoreaccount1/azrun-output",
            )
        account, name = segments
    else:
        if len(segments) != 1:
            raise ConfigError(
                f"output container {url!r} should be https://<account>.<blob endpoint>/<container>",
                hint="e.g. https://myaccount.blob.core.windows.net/azrun-output",
            )
        account, name = host.split(".", 1)[0], segments[0]
    clean = f"{parts.scheme}://{parts.netloc}/{'/'.join(segments)}"
    return Container(clean, account, unquote(name), path_style or account == EMULATOR_ACCOUNT)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_connection_string(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    if not parts.get("accountname") or not parts.get("accountkey"):
        raise ConfigError(
            "the storage connection string has no AccountName/AccountKey",
            hint="use the account's key connection string, or leave it unset to use Entra ID",
        )
    return parts


class _Lookup(Protocol):
    def get(self, key: str) -> Any: ...


def container_url_from_settings(settings: _Lookup, storage_suffix: str) -> str | None:
    """:func:`container_url_for` with the values of anything that has ``get(key)``."""
    conn = settings.get("storage_connection_string")
    return container_url_for(
        output_container=settings.get("output_container") or None,
        storage_account=settings.get("storage_account") or None,
        connection_string=str(conn) if conn else None,
        storage_suffix=storage_suffix,
    )


def container_url_for(
    *, output_container: str | None, storage_account: str | None, connection_string: str | None,
    storage_suffix: str,
) -> str | None:
    """The output container named: ``output_container``, else one derived from
    ``storage_account`` or the connection string's blob endpoint (container ``azrun-output``)."""
    if output_container:
        return str(output_container)
    if storage_account:
        return f"https://{storage_account}.{storage_suffix}/{DEFAULT_CONTAINER}"
    if connection_string:
        parts = parse_connection_string(connection_string)
        endpoint = parts.get("blobendpoint") or (
            f"{parts.get('defaultendpointsprotocol', 'https')}://{parts['accountname']}.blob."
            f"{parts.get('endpointsuffix', 'core.windows.net')}"
        )
        return f"{endpoint.rstrip('/')}/{DEFAULT_CONTAINER}"
    return None


def client_kwargs(
    container: Container, factory: ClientFactory, hook: Callable[[Any], None]
) -> dict[str, Any]:
    from azure.storage.blob.aio import LinearRetry

    kwargs: dict[str, Any] = {
        "raw_request_hook": hook,
        "retry_policy": LinearRetry(backoff=1, retry_total=3, random_jitter_range=1),
    }
    kwargs["transport"] = factory.aio_transport()  # shared with ARM: one pool per endpoint
    if factory.cloud.ca_bundle:
        kwargs["connection_verify"] = factory.cloud.ca_bundle
    if container.emulator or factory.cloud.is_custom:
        kwargs["api_version"] = EMULATOR_API_VERSION
    return kwargs


def build_clients(
    container: Container,
    factory: ClientFactory,
    connection_string: str | None,
    kwargs: Mapping[str, Any],
    *,
    sas: bool,
) -> tuple[ContainerClient, SasSigner | None]:
    from azure.storage.blob.aio import ContainerClient

    if connection_string:
        parts = parse_connection_string(connection_string)
        if parts["accountname"] != container.account:
            raise ConfigError(
                f"the connection string is for account {parts['accountname']!r}, "
                f"the output container is in {container.account!r}",
                hint="use the connection string of the container's account",
            )
        credential: Any = {"account_name": parts["accountname"], "account_key": parts["accountkey"]}
        client = ContainerClient.from_container_url(container.url, credential=credential, **kwargs)
        return client, AccountKeySigner(parts["accountname"], parts["accountkey"]) if sas else None
    token_credential = factory.acredential()
    client = ContainerClient.from_container_url(container.url, credential=token_credential, **kwargs)
    if not sas:
        return client, None
    signer = UserDelegationSigner(
        container.account, _delegation_key_getter(container, token_credential, kwargs)
    )
    return client, signer


def _delegation_key_getter(container: Container, credential: Any, kwargs: Mapping[str, Any]) -> Any:
    """``(start, expiry) -> key`` through a short-lived service client (one request per key)."""
    from azure.storage.blob.aio import BlobServiceClient

    account_url = container.url.rsplit("/", 1)[0]
    # The short-lived client closes its transport on exit: never hand it the shared one.
    kwargs = {k: v for k, v in kwargs.items() if k != "transport"}

    async def get_key(start: datetime, expiry: datetime) -> Any:
        async with BlobServiceClient(account_url, credential=credential, **kwargs) as service:
            return await service.get_user_delegation_key(start, expiry)

    return get_key


def short_error(exc: BaseException) -> str:
    """``"<status> <code> <reason>"`` of a storage exception, redacted (via :mod:`azrun.azerrors`)."""
    from azrun.azerrors import classify, clean

    failure = classify(exc)
    label = " ".join(str(p) for p in (failure.status, failure.code) if p and p != f"HTTP{failure.status}")
    text = str(getattr(exc, "reason", None) or type(exc).__name__)
    return clean(f"{label} {text}".strip())


_BAD_CREDENTIAL_CODES = frozenset({"AuthenticationFailed", "InvalidAuthenticationInfo"})


def output_error(exc: BaseException, url: str, doing: str) -> OutputError | AuthError:
    """A storage exception -> one line naming the fix (role, container, key, network)."""
    from azrun.azerrors import classify
    from azrun.errors import FailureKind

    failure = classify(exc)
    status, code = failure.status, failure.code
    if failure.kind is FailureKind.NOT_FOUND and "container" in code.lower():
        return OutputError(
            f"the container {url} does not exist: create it or fix --output-container",
            hint=f"az storage container create --name {url.rsplit('/', 1)[-1]} --account-name <account> "
            "--auth-mode login",
        )
    if status in (401, 403) or (status is not None and code in _BAD_CREDENTIAL_CODES):
        if code in _BAD_CREDENTIAL_CODES or status == 401:
            return OutputError(
                f"storage rejected azrun's credentials while {doing} in {url} ({code or status})",
                hint="check the account key / connection string (AZRUN_STORAGE_CONNECTION_STRING), or unset it "
                f"to use Entra ID with {ROLE}",
            )
        return OutputError(
            f"azrun is not allowed to use the output container {url} ({doing}: {code or '403'})",
            hint=f"grant azrun's identity {ROLE} on container {url} (or on its storage account)",
        )
    if failure.kind is FailureKind.AUTH and status is None:
        return AuthError(
            f"no storage token for {url}: {short_error(exc)}",
            hint="run `azrun auth check`; azrun needs a token for https://storage.azure.com",
        )
    if failure.kind is FailureKind.NOT_SENT:
        return OutputError(
            f"cannot reach the output container {url}: {short_error(exc)}",
            hint="check the storage endpoint, network and CA bundle (AZRUN_CA_BUNDLE for the local Azure)",
        )
    return OutputError(f"output storage failed while {doing} in {url}: {short_error(exc)}")
