"""OutputStore: the run's append blobs in one container (create, hand out write access, read).

Layout: ``<container>/<run id>/<target path>/stdout`` and ``.../stderr``, one append blob each,
created by azrun *before* dispatch. The target path (:func:`target_path`) comes from the resource
id, lowercased: ``<subscription id>/<resource group>/<vm name>`` or
``<subscription id>/<resource group>/<scale set>/<instance id>``. Machines with the same name in
other resource groups or subscriptions therefore never share a blob, a Flexible member listed
with an upper-cased resource group still finds its own, and a person can read the path. Blobs: the blob type is right from the start, and a missing
container or a missing role fails before anything runs (:meth:`OutputStore.open` checks the
container and creates + deletes a probe blob; with Entra auth and SAS mode it also fetches the
user delegation key).

Credentials: a connection string (account key) when given, else azrun's Entra credential
(``ClientFactory.acredential()``, scope ``https://storage.azure.com/.default``); client
options and error wording live in :mod:`azrun.output._connect`.

Requests cost: every storage request (retries included) is counted in :class:`StorageStats`;
reads first take a token from the store's own bucket (storage is not ARM-throttled, but a fleet
tail must not flood the account either) and hold one of ``max_inflight`` slots.

Secrets: SAS tokens exist only inside :class:`BlobPair` write URIs (``repr=False``); messages
and logs name blobs by their clean URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from azrun.errors import OutputError
from azrun.models import Target
from azrun.output._connect import (
    DEFAULT_CONTAINER,
    EMULATOR_API_VERSION,
    ROLE,
    Container,
    build_clients,
    client_kwargs,
    container_url_from_settings,
    output_error,
    parse_container_url,
    short_error,
)
from azrun.output._sas import SasSigner, UserDelegationSigner, parse_blob_identity
from azrun.throttle import TokenBucket

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

    from azrun.clients import ClientFactory
    from azrun.config import Settings

__all__ = [
    "DEFAULT_CONTAINER",
    "EMULATOR_API_VERSION",
    "STREAMS",
    "BlobPair",
    "Chunk",
    "OutputStore",
    "RunBlob",
    "StorageStats",
    "blob_name",
    "container_url_from_settings",
    "target_path",
]

_LOG = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
READ_CHUNK_BYTES = 4 * 1024 * 1024
Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class BlobPair:
    """Where one target writes its output, and with what access."""

    stdout_url: str  # clean URL (no query): for the ledger and results
    stderr_url: str
    stdout_write_uri: str = field(repr=False)  # outputBlobUri: SAS URL (SAS mode) -- SECRET
    stderr_write_uri: str = field(repr=False)
    identity: dict[str, str] | None = None  # RunCommandManagedIdentity body in MI mode; None with SAS


@dataclass(frozen=True, slots=True)
class Chunk:
    """One incremental read: new bytes, or why there are none."""

    status: Literal["data", "unchanged", "eof", "missing"]
    data: bytes = b""
    size: int | None = None  # the blob's total size when the answer says it
    etag: str | None = None
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunBlob:
    """One output blob found under a run's prefix."""

    path: str  # the target's path under the run (see target_path)
    stream: str
    url: str
    size: int


@dataclass
class StorageStats:
    """Storage requests sent (retries included) and what the reads found."""

    requests: int = 0
    reads: int = 0
    empty_reads: int = 0  # reads that found no new bytes (416 / empty range / 304)
    bytes_read: int = 0
    by_method: dict[str, int] = field(default_factory=dict)

    def hook(self, request: Any) -> None:
        """``raw_request_hook`` of every storage client: called once per attempt."""
        self.requests += 1
        method = str(getattr(getattr(request, "http_request", None), "method", "?"))
        self.by_method[method] = self.by_method.get(method, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "reads": self.reads,
            "empty_reads": self.empty_reads,
            "bytes_read": self.bytes_read,
            "by_method": dict(self.by_method),
        }


_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/[^/]+/(?P<rest>.+)$", re.IGNORECASE
)


def target_path(target: Target | str) -> str:
    """Where a target's blobs live under its run: unique per resource id, compared case-insensitively.

    ``/subscriptions/S/resourceGroups/R/providers/Microsoft.Compute/virtualMachines/N`` ->
    ``s/r/n``; a Uniform instance (``.../virtualMachineScaleSets/SS/virtualMachines/3``) ->
    ``s/r/ss/3``. An id that is not an ARM id (a test double) -> ``<name>~<hash of the id>``.
    """
    rid = target if isinstance(target, str) else target.resource_id
    found = _ARM_ID.match(rid.strip())
    if found:
        rest = found.group("rest").split("/")
        names = rest[1::2]  # type/name pairs: keep the names
        if names and len(rest) % 2 == 0 and all(_SEGMENT.match(n) for n in (found.group("sub"), found.group("rg"), *names)):
            return "/".join(p.lower() for p in (found.group("sub"), found.group("rg"), *names))
    label = target if isinstance(target, str) else target.name
    safe = "_".join(p for p in re.split(r"[^A-Za-z0-9._-]+", label) if p.strip(".")) or "target"
    return f"{safe}~{hashlib.sha256(rid.lower().encode()).hexdigest()[:10]}"


_SEGMENT = re.compile(r"^(?!\.{1,2}$)[^/?#\\]+$")


def blob_name(run_id: str, target: Target | str, stream: str) -> str:
    """``<run id>/<target path>/<stream>``; ``target`` is a :class:`Target` or its path."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be stdout or stderr, not {stream!r}")
    path = target_path(target) if isinstance(target, Target) else target
    if not run_id or "/" in run_id or not path:
        raise ValueError("run id and target path must be non-empty (and the run id has no '/')")
    return f"{run_id}/{path}/{stream}"


class OutputStore:
    """The run output container: create blobs, mint write access, read back.

    Build it with :meth:`open` (checks access) or :meth:`from_settings`.
    """

    def __init__(
        self,
        container: Container,
        client: ContainerClient,
        *,
        signer: SasSigner | None,
        identity: dict[str, str] | None,
        stats: StorageStats,
        bucket: TokenBucket,
        max_inflight: int = 32,
    ) -> None:
        self._container = container
        self._client = client
        self._signer = signer
        self.identity = identity
        self.stats = stats
        self.bucket = bucket
        self._slots = asyncio.Semaphore(max_inflight)

    def __repr__(self) -> str:
        url, mode = self._container.url, self.mode
        return f"OutputStore(container={url!r}, mode={mode!r}, requests={self.stats.requests})"

    @property
    def container_url(self) -> str:
        """The output container's URL (no credentials in it)."""
        return self._container.url

    @property
    def mode(self) -> str:
        """``managed-identity``, ``account-key`` or ``user-delegation`` (the SAS kind), or ``read``."""
        if self.identity is not None:
            return "managed-identity"
        return self._signer.kind if self._signer else "read"

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        *,
        container_url: str,
        factory: ClientFactory,
        connection_string: str | None = None,
        blob_identity: str | None = None,
        verify: bool = True,
        storage_rps: float = 200.0,
        max_inflight: int = 32,
    ) -> OutputStore:
        """Connect to the container and (``verify``) prove azrun can use it for a run.

        Raises:
            OutputError: the container does not exist, or azrun may not create blobs in it /
                get a user delegation key (the hint names the role to grant).
            ConfigError: the URL, connection string or ``blob_identity`` is malformed.
        """
        container = parse_container_url(container_url)
        identity = parse_blob_identity(blob_identity) if blob_identity else None
        stats = StorageStats()
        kwargs = client_kwargs(container, factory, stats.hook)
        client, signer = build_clients(container, factory, connection_string, kwargs, sas=identity is None)
        bucket = TokenBucket(max(1.0, storage_rps), storage_rps, name="storage")
        store = cls(
            container, client, signer=signer, identity=identity, stats=stats, bucket=bucket,
            max_inflight=max_inflight,
        )  # fmt: skip
        if verify:
            try:
                await store._verify()
            except BaseException:
                await store.aclose()
                raise
        return store

    @classmethod
    async def from_settings(
        cls, settings: Settings, factory: ClientFactory, *, verify: bool = True
    ) -> OutputStore | None:
        """The store the settings configure (``output_container`` / ``storage_account`` /
        ``storage_connection_string`` / ``blob_identity``), or None when none is configured."""
        url = container_url_from_settings(settings, factory.cloud.storage_suffix)
        if url is None:
            return None
        conn = settings.get("storage_connection_string")
        ident = settings.get("blob_identity")
        return await cls.open(
            container_url=url,
            factory=factory,
            connection_string=str(conn) if conn else None,
            blob_identity=str(ident) if ident else None,
            verify=verify,
        )

    async def _verify(self) -> None:
        from azure.core.exceptions import AzureError

        url = self._container.url
        try:
            await self._client.get_container_properties()
        except AzureError as exc:
            raise output_error(exc, url, "reading the container") from exc
        probe = self._client.get_blob_client(f".azrun-probe/{uuid.uuid4()}")
        try:
            await probe.create_append_blob()
        except AzureError as exc:
            raise output_error(exc, url, "creating a blob") from exc
        try:
            await probe.delete_blob()
        except AzureError as exc:  # not fatal: azrun never needs delete for a run
            _LOG.debug("could not delete the probe blob in %s: %s", url, short_error(exc))
        if isinstance(self._signer, UserDelegationSigner):
            try:
                await self._signer.key_for(datetime.now(timezone.utc) + timedelta(hours=1))
            except AzureError as exc:
                raise output_error(exc, url, "getting a user delegation key") from exc

    # -- per target -----------------------------------------------------------------------------
    def blob_url(self, name: str) -> str:
        """The URL of blob ``name`` in the container (no SAS)."""
        return f"{self._container.url}/{quote(name, safe='~/')}"

    def urls(self, run_id: str, target: Target) -> tuple[str, str]:
        """Clean stdout/stderr URLs of a target (no I/O; for resume)."""
        return (
            self.blob_url(blob_name(run_id, target, "stdout")),
            self.blob_url(blob_name(run_id, target, "stderr")),
        )

    def check_target_identity(self, target: Target) -> str | None:
        """MI mode: why ``target`` cannot write with the chosen identity (None when it can)."""
        ident = self.identity
        if ident is None:
            return None
        client_id = ident.get("clientId")
        if client_id is None:
            if target.system_identity:
                return None
            return (
                f"{target.name} has no system-assigned identity for blob output: enable it on the VM, "
                "or pass --blob-identity <client id of an attached user-assigned identity>"
            )
        if client_id.lower() in (c.lower() for c in target.user_identity_client_ids):
            return None
        return (
            f"the identity {client_id} is not attached to {target.name}: attach it (and grant it "
            f"{ROLE} on {self._container.url}), or choose another --blob-identity"
        )

    async def prepare(self, run_id: str, target: Target, *, expiry_s: int) -> BlobPair:
        """Create (or re-create, emptying) both append blobs and mint the VM's write access.

        ``expiry_s`` is how long the SAS must stay valid (see :func:`sas_lifetime_s`); it is
        clamped to [15 min, 7 days]. In managed-identity mode no SAS is made.
        """
        from azure.core.exceptions import AzureError

        urls: list[str] = []
        writes: list[str] = []
        for stream in STREAMS:
            name = blob_name(run_id, target, stream)
            url = self.blob_url(name)
            try:
                await self.bucket.aacquire()
                await self._client.get_blob_client(name).create_append_blob()
                write = url
                if self.identity is None:
                    assert self._signer is not None
                    write = f"{url}?{await self._signer.sign(self._container.name, name, expiry_s)}"
            except AzureError as exc:
                raise output_error(exc, self._container.url, f"creating {url}") from exc
            urls.append(url)
            writes.append(write)
        identity = dict(self.identity) if self.identity is not None else None
        return BlobPair(urls[0], urls[1], writes[0], writes[1], identity)

    # -- reading --------------------------------------------------------------------------------
    def name_from_url(self, url: str) -> str:
        """The blob name of a clean URL in this container."""
        clean = url.split("?", 1)[0]
        prefix = self._container.url + "/"
        if not clean.startswith(prefix):
            raise OutputError(
                f"{clean} is not in the output container {self._container.url}",
                hint="point --output-container (or AZRUN_OUTPUT_CONTAINER) at the run's container",
            )
        return unquote(clean[len(prefix) :])

    async def read_chunk(
        self, name: str, offset: int, *, etag: str | None = None, max_bytes: int = READ_CHUNK_BYTES
    ) -> Chunk:
        """Up to ``max_bytes`` new bytes of blob ``name`` from ``offset``: one request.

        At or past the end, Azure answers 416 (``Content-Range: bytes */<size>``) and Azurite an
        empty body; both come back as ``eof`` with the size when known. With ``etag`` the read is
        also conditional (If-None-Match -> ``unchanged`` on 304); the tailer does not use that
        (see :mod:`azrun.output._tail` for why).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self._client.get_blob_client(name)
        cond: dict[str, Any] = {}
        if etag:
            cond = {"etag": etag, "match_condition": MatchConditions.IfModified}
        await self.bucket.aacquire()
        async with self._slots:
            self.stats.reads += 1
            try:
                downloader = await blob.download_blob(offset=offset, length=max_bytes, **cond)
                data = await downloader.readall()
            except ResourceNotFoundError:
                return Chunk("missing")
            except HttpResponseError as exc:
                return self._read_error(exc, etag)
        props = downloader.properties
        self.stats.bytes_read += len(data)
        status: Literal["data", "eof"] = "data" if data else "eof"
        if not data:
            self.stats.empty_reads += 1
        # properties.size is the length of this range; the blob's size is Content-Range's total
        return Chunk(status, data, _range_total(props.content_range), props.etag, props.creation_time)

    def _read_error(self, exc: Any, etag: str | None) -> Chunk:
        status = getattr(exc, "status_code", None)
        if status == 304:
            self.stats.empty_reads += 1
            return Chunk("unchanged", etag=etag)
        if status == 416:
            self.stats.empty_reads += 1
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            return Chunk("eof", size=_range_total(headers.get("Content-Range")), etag=headers.get("ETag"))
        raise exc

    async def blob_created(self, name: str) -> tuple[int, datetime | None] | None:
        """(size, creation time) of a blob, None if it does not exist (one HEAD)."""
        from azure.core.exceptions import ResourceNotFoundError

        await self.bucket.aacquire()
        async with self._slots:
            try:
                props = await self._client.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return int(props.size), props.creation_time

    async def read(self, run_id: str, target: Target | str, stream: str, offset: int = 0) -> bytes:
        """The whole blob of ``target`` (a :class:`Target` or its :func:`target_path`) from
        ``offset`` (``b''`` past the end).

        Raises:
            OutputError: the blob does not exist.
        """
        return await self.read_name(blob_name(run_id, target, stream), offset)

    async def read_name(self, name: str, offset: int = 0) -> bytes:
        """Blob ``name``'s bytes from ``offset`` to its end."""
        out = bytearray()
        while True:
            chunk = await self.read_chunk(name, offset + len(out))
            if chunk.status == "missing":
                raise OutputError(
                    f"no output blob {self.blob_url(name)}",
                    hint="check the run id and target name (`azrun logs RUN` lists the targets)",
                )
            if chunk.status != "data":
                return bytes(out)
            out += chunk.data
            if chunk.size is not None and offset + len(out) >= chunk.size:
                return bytes(out)

    async def download(self, name: str, path: Path) -> int:
        """Save blob ``name`` to ``path`` (mode 0600) chunk by chunk, as stored (no masking: the CLI's
        ``logs --download`` masks); return the bytes written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # output may hold secrets
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = await self.read_chunk(name, written)
                if chunk.status == "missing":
                    raise OutputError(f"no output blob {self.blob_url(name)}")
                if chunk.status != "data":
                    return written
                await asyncio.to_thread(out.write, chunk.data)
                written += len(chunk.data)
                if chunk.size is not None and written >= chunk.size:
                    return written

    async def list_run(self, run_id: str) -> list[RunBlob]:
        """Every output blob under ``<run id>/``, sorted by target path then stream."""
        from azure.core.exceptions import AzureError

        found: list[RunBlob] = []
        prefix = f"{run_id}/"
        try:
            async for props in self._client.list_blobs(name_starts_with=prefix):
                target, _, stream = str(props.name)[len(prefix) :].rpartition("/")
                if target and stream in STREAMS and not target.startswith("."):
                    found.append(
                        RunBlob(target, stream, self.blob_url(str(props.name)), int(props.size or 0))
                    )
        except AzureError as exc:
            raise output_error(exc, self._container.url, "listing the run's blobs") from exc
        return sorted(found, key=lambda b: (b.path, b.stream))

    async def write_document(self, name: str, data: bytes) -> None:
        """Create or replace block blob ``name`` (run documents of the durable engine: plan, results)."""
        from azure.core.exceptions import AzureError

        try:
            await self.bucket.aacquire()
            await self._client.get_blob_client(name).upload_blob(data, overwrite=True)
        except AzureError as exc:
            raise output_error(exc, self._container.url, f"writing {self.blob_url(name)}") from exc

    def blob_client(self, name: str) -> Any:
        """The aio ``BlobClient`` of blob ``name`` (the durable engine's shard leases)."""
        return self._client.get_blob_client(name)

    async def list_names(self, prefix: str) -> list[str]:
        """Blob names under ``prefix``, sorted."""
        from azure.core.exceptions import AzureError

        try:
            return sorted([b.name async for b in self._client.list_blobs(name_starts_with=prefix)])
        except AzureError as exc:
            raise output_error(exc, self._container.url, f"listing {prefix}") from exc

    async def aclose(self) -> None:
        """Close the storage clients."""
        await self._client.close()


def _range_total(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None
