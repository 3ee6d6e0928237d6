"""Write access for the VM: a SAS per blob, or the VM's managed identity.

SAS rules (issue 7): permissions exactly read+add+create+write (``racw``: what the Linux handler
needs to create-or-replace the append blob and append to it), scoped to one blob, HTTPS only, and
an expiry of the run's timeout plus a margin, never more than 7 days (the longest a user
delegation key may live). No start time is set: the SAS is valid at once, so a VM whose clock
runs behind does not see a SAS "not yet valid".

Which signer:

* a connection string / account key given -> account-key SAS (the only kind Azurite accepts from
  azure-storage-blob >= 12.29: it rejects the user-delegation string-to-sign with the ``srh``/``srq``
  lines, sdk-notes §6);
* otherwise -> user-delegation SAS signed with a key obtained with azrun's Entra token
  (needs ``generateUserDelegationKey``, part of Storage Blob Data Contributor). One key serves
  every blob of the run; it is fetched once (single-flight) and again only when a later blob
  needs a longer expiry than the key covers.

A SAS token is a secret: nothing here logs it, and :class:`SasSigner` reprs show no key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Protocol

from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azure.storage.blob import UserDelegationKey

__all__ = [
    "MAX_SAS_LIFETIME_S",
    "MIN_SAS_LIFETIME_S",
    "AccountKeySigner",
    "SasSigner",
    "UserDelegationSigner",
    "clamp_lifetime_s",
    "parse_blob_identity",
    "sas_lifetime_s",
]

MAX_SAS_LIFETIME_S = 7 * 24 * 3600
MIN_SAS_LIFETIME_S = 15 * 60
DEFAULT_MARGIN_S = 3600
_KEY_SKEW = timedelta(minutes=5)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def sas_lifetime_s(timeout_s: int, margin_s: int = DEFAULT_MARGIN_S) -> int:
    """How long a run's SAS must live: its timeout plus a margin for queueing, within bounds.

    A timeout of 0 (no timeout) gets the 7-day maximum.
    """
    if timeout_s <= 0:
        return MAX_SAS_LIFETIME_S
    return clamp_lifetime_s(timeout_s + margin_s)


def clamp_lifetime_s(lifetime_s: int) -> int:
    return max(MIN_SAS_LIFETIME_S, min(MAX_SAS_LIFETIME_S, int(lifetime_s)))


def parse_blob_identity(value: str) -> dict[str, str]:
    """``--blob-identity`` -> the RunCommandManagedIdentity body (``{}`` = system-assigned).

    Only ``system`` or a client id: the Linux handler rejects an object id for blob uploads.
    """
    text = value.strip()
    if text.lower() in ("system", "system-assigned", "systemassigned"):
        return {}
    if _GUID.match(text):
        return {"clientId": text.lower()}
    raise ConfigError(
        f"--blob-identity {value!r} is neither 'system' nor a client id",
        hint="use --blob-identity system, or the client id (a GUID) of a user-assigned identity on the VMs",
    )


class SasSigner(Protocol):
    """Mints the query string (no leading ``?``) of a ``racw`` SAS for one blob."""

    kind: str  # "account-key" | "user-delegation"

    async def sign(self, container: str, blob: str, lifetime_s: int) -> str: ...


def _permissions() -> object:
    from azure.storage.blob import BlobSasPermissions

    return BlobSasPermissions(read=True, add=True, create=True, write=True)


class AccountKeySigner:
    """Account-key SAS (emulator, or when the user gave a key / connection string)."""

    kind = "account-key"

    def __init__(self, account_name: str, account_key: str, *, now: Now = _utcnow) -> None:
        self._account = account_name
        self._key = account_key
        self._now = now

    def __repr__(self) -> str:
        return f"AccountKeySigner(account={self._account!r})"

    async def sign(self, container: str, blob: str, lifetime_s: int) -> str:
        from azure.storage.blob import generate_blob_sas

        expiry = self._now() + timedelta(seconds=clamp_lifetime_s(lifetime_s))
        return generate_blob_sas(
            self._account,
            container,
            blob,
            account_key=self._key,
            permission=_permissions(),  # type: ignore[arg-type]
            expiry=expiry,
            protocol="https",
        )


class UserDelegationSigner:
    """User-delegation SAS from a key fetched with azrun's Entra token (preferred on Azure).

    Args:
        account_name: the storage account.
        get_key: ``(start, expiry) -> UserDelegationKey`` (``BlobServiceClient.get_user_delegation_key``).
        now: the clock (timezone.utc datetimes).
    """

    kind = "user-delegation"

    def __init__(
        self,
        account_name: str,
        get_key: Callable[[datetime, datetime], Awaitable[UserDelegationKey]],
        *,
        now: Now = _utcnow,
    ) -> None:
        self._account = account_name
        self._get_key = get_key
        self._now = now
        self._key: UserDelegationKey | None = None
        self._key_expiry: datetime | None = None
        self._lock = asyncio.Lock()
        self.keys_fetched = 0

    def __repr__(self) -> str:
        return f"UserDelegationSigner(account={self._account!r}, keys_fetched={self.keys_fetched})"

    async def key_for(self, expiry: datetime) -> UserDelegationKey:
        """A delegation key valid until at least ``expiry`` (fetched at most once per need)."""
        async with self._lock:
            if self._key is None or self._key_expiry is None or self._key_expiry < expiry:
                now = self._now()
                longest = now + timedelta(seconds=MAX_SAS_LIFETIME_S)
                key_expiry = min(max(expiry, now + timedelta(hours=1)), longest)
                self._key = await self._get_key(now - _KEY_SKEW, key_expiry)
                self._key_expiry = key_expiry
                self.keys_fetched += 1
            return self._key

    async def sign(self, container: str, blob: str, lifetime_s: int) -> str:
        from azure.storage.blob import generate_blob_sas

        expiry = self._now() + timedelta(seconds=clamp_lifetime_s(lifetime_s))
        key = await self.key_for(expiry)
        return generate_blob_sas(
            self._account,
            container,
            blob,
            user_delegation_key=key,
            permission=_permissions(),  # type: ignore[arg-type]
            expiry=expiry,
            protocol="https",
        )
