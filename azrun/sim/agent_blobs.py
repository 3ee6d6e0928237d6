"""The guest agent's blob I/O: create-or-replace append blobs and Append Block, like the handler.

- SAS mode: ``PUT <uri>`` with ``x-ms-blob-type: AppendBlob``, ``x-ms-version: 2025-11-05``
  (the handler sends its SAS ``sv``; Azurite 3.35 knows nothing newer than 2025-11-05), empty
  body. Appends are ``PUT <uri>&comp=appendblock`` (``?comp=`` when the URI has no query).
- Managed-identity mode: a token minted for the principal with audience
  ``https://storage.azure.com`` and ``x-ms-version: 2024-08-04`` (the handler's azblob). Azurite
  does no RBAC, so an identity whose storage role is not contributor/owner is refused here as
  Azure's 403 ``AuthorizationPermissionMismatch`` would be, without a request.
- Errors read as the handler's SDKs print them: ``storage: service returned error:
  StatusCode=..., ErrorCode=..., ErrorMessage=...`` (SAS, legacy SDK) or ``RESPONSE 403: ...
  ERROR CODE: ...`` (token, azblob).

Only ``scheme://host/path`` of a blob URI is ever logged or put in a message: never the SAS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from azrun.sim.tokens import Principal, mint

_LOG = logging.getLogger(__name__)

SAS_X_MS_VERSION = "2025-11-05"
MI_X_MS_VERSION = "2024-08-04"
STORAGE_AUDIENCE = "https://storage.azure.com"
_WRITER_ROLES = frozenset({"contributor", "owner"})
BLOB_CREATE_ERROR = (
    "Error creating AppendBlob '{uri}' using SAS token or Managed identity. Please use a valid blob SAS URI "
    "with [read, append, create, write] permissions OR managed identity. If managed identity is used, make "
    "sure Azure blob and identity exist, and identity has been given access to storage blob's container with "
    "'Storage Blob Data Contributor' role assignment. In case of user-assigned identity, make sure you add it "
    "under VM's identity and provide outputBlobUri / errorBlobUri and corresponding clientId in "
    "outputBlobManagedIdentity / errorBlobManagedIdentity parameter(s). In case of system-assigned identity, "
    "do not use outputBlobManagedIdentity / errorBlobManagedIdentity parameter(s). For more info, refer "
    "https://aka.ms/RunCommandManagedLinux: Creating or Replacing append blob failed."
)


def public_uri(uri: str) -> str:
    """``uri`` without its query: what may appear in logs and messages (no SAS signature)."""
    return uri.split("?", 1)[0]


class BlobCreateError(Exception):
    """Creating the append blob failed; the message is the handler's full executionMessage tail."""

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(f"{BLOB_CREATE_ERROR.format(uri=public_uri(uri))}: {detail}")


@dataclass
class AppendBlob:
    """An append blob one output file goes to, and how far that file has been sent."""

    url: str = field(repr=False)  # with the SAS: never logged
    headers: dict[str, str] = field(repr=False)
    source: Path
    position: int = 0

    @property
    def display(self) -> str:
        return public_uri(self.url)

    def append_url(self) -> URL:
        sep = "&" if "?" in self.url else "?"
        return URL(f"{self.url}{sep}comp=appendblock", encoded=True)


class BlobWriter:
    """Creates and appends to blobs over one aiohttp session trusting the local CA.

    Args:
        ca_bundle: CA file for HTTPS (None: the system store).
        token_ttl_s: lifetime of the tokens minted in managed-identity mode.
        storage_role: a principal's role on the container ("contributor", "reader", "none").
        append_fails: asked before each append; True injects a failure (fault injection).
    """

    def __init__(
        self,
        *,
        ca_bundle: str | None,
        token_ttl_s: int,
        storage_role: Callable[[Principal], str],
        append_fails: Callable[[], bool],
    ) -> None:
        self._ca_bundle = ca_bundle
        self._token_ttl_s = token_ttl_s
        self._storage_role = storage_role
        self._append_fails = append_fails
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (created on first use, on the running loop)."""
        if self._session is None or self._session.closed:
            ctx: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self._ca_bundle) if self._ca_bundle else True
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=64),
                timeout=aiohttp.ClientTimeout(total=120, connect=10),
                skip_auto_headers=("Content-Type",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create(
        self, uri: str, principal: Principal | None, identity_missing: bool, source: Path
    ) -> AppendBlob:
        """Create or replace an empty append blob; BlobCreateError if that fails."""
        try:
            blob = self._target(uri, principal, identity_missing, source)
            headers = {**blob.headers, "x-ms-blob-type": "AppendBlob", "Content-Length": "0"}
            async with self.session().put(URL(blob.url, encoded=True), headers=headers, data=b"") as resp:
                if resp.status != 201:
                    raise StorageError(resp.status, await resp.text(), token=principal is not None)
            return blob
        except (StorageError, aiohttp.ClientError, TimeoutError, asyncio.TimeoutError) as exc:
            detail = str(exc) if isinstance(exc, StorageError) else f"{type(exc).__name__}: connection failed"
            _LOG.info("blob create failed for %s: %s", public_uri(uri), detail)
            raise BlobCreateError(uri, detail) from None

    def _target(
        self, uri: str, principal: Principal | None, identity_missing: bool, source: Path
    ) -> AppendBlob:
        if principal is None and not identity_missing:
            return AppendBlob(url=uri, headers={"x-ms-version": SAS_X_MS_VERSION}, source=source)
        if principal is None:
            raise StorageError(
                400,
                "",
                token=True,
                override="ManagedIdentityCredential: Identity not found (the identity is not attached to the VM)",
            )
        if self._storage_role(principal).lower() not in _WRITER_ROLES:
            raise StorageError(
                403,
                "<Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized "
                "to perform this operation using this permission.</Message></Error>",
                token=True,
            )
        token, _ = mint(principal, STORAGE_AUDIENCE, ttl_s=self._token_ttl_s)
        headers = {"Authorization": f"Bearer {token}", "x-ms-version": MI_X_MS_VERSION}
        return AppendBlob(url=public_uri(uri), headers=headers, source=source)

    async def append(self, blob: AppendBlob) -> None:
        """Send all new bytes as one Append Block; on failure keep the position (retry next tick)."""
        data = await asyncio.to_thread(_read_from, blob.source, blob.position)
        if not data:
            return
        if self._append_fails():
            _LOG.info("injected append failure for %s (%d bytes)", blob.display, len(data))
            return
        headers = {**blob.headers, "Content-Length": str(len(data))}
        try:
            async with self.session().put(blob.append_url(), headers=headers, data=data) as resp:
                if resp.status != 201:
                    error = StorageError(resp.status, await resp.text())
                    _LOG.info("append to %s failed: %s", blob.display, error)
                    return
        except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError) as exc:
            _LOG.info("append to %s failed: %s", blob.display, type(exc).__name__)
            return
        blob.position += len(data)


def _read_from(path: Path, position: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(position)
            return f.read()
    except OSError:
        return b""


class StorageError(Exception):
    """A storage error as the handler's SDKs print it (SAS: legacy SDK; token: azblob)."""

    def __init__(self, status: int, body: str, *, token: bool = False, override: str | None = None) -> None:
        code, message = _parse_storage_error(body)
        if override:
            text = override
        elif token:
            text = f"RESPONSE {status}: {message} ERROR CODE: {code}"
        else:
            text = f"storage: service returned error: StatusCode={status}, ErrorCode={code}, ErrorMessage={message}"
        super().__init__(text)
        self.status = status


def _parse_storage_error(body: str) -> tuple[str, str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", body.strip().splitlines()[0] if body.strip() else ""
    code = root.findtext("Code") or ""
    message = (root.findtext("Message") or "").strip().splitlines()
    return code, message[0] if message else ""
