"""One tick of a shard at a time, and never an old one after a newer one started.

The engine delivers an activity at least once: a tick whose worker vanished (or only seemed to)
is handed to another worker, and the first may still be running. Two ticks of one shard at once
would both read a target back as absent and both PUT it; a copy of tick *k* running after tick
*k + 1* had deleted the run commands *k* finished would PUT them again. The fence prevents both
with Azure Storage's own primitive, a **blob lease** (15 s, the shortest Azure allows, renewed every 5 s while the tick
runs; a dead holder's lease expires by itself), on ``.azrun-durable/<run>/shards/<shard>``, whose
content is the number of the newest tick that started. Holding the lease, a tick reads that
number: higher than its own -> it is a stale copy and does nothing; else it writes its own and
runs. A retried tick (same number) runs again, which is safe (see :mod:`azrun.durable._tick`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from azrun.durable._docs import PREFIX
from azrun.errors import AzrunError

if TYPE_CHECKING:
    from azrun.output import OutputStore

__all__ = ["ShardFence", "StaleTick"]

_LOG = logging.getLogger(__name__)
LEASE_S, RENEW_S, WAIT_S = 15, 5.0, 120.0


class StaleTick(Exception):
    """A newer tick of this shard has started: this copy must not act."""


class ShardFence:
    def __init__(self, store: OutputStore, run_id: str, shard: int, tick: int) -> None:
        self._blob = store.blob_client(f"{PREFIX}/{run_id}/shards/{shard:04d}")
        self._tick = tick
        self._lease: Any = None
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ShardFence:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self._blob.upload_blob(b"-1", overwrite=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            try:
                self._lease = await self._blob.acquire_lease(lease_duration=LEASE_S)
                break
            except HttpResponseError as exc:
                if getattr(exc, "status_code", None) != 409 or loop.time() > deadline:
                    raise AzrunError(f"cannot lease the shard fence: {exc.message}") from None
                await asyncio.sleep(2.0)  # another copy of this shard's tick holds it
        try:
            data = await (await self._blob.download_blob(lease=self._lease)).readall()
            newest = int(data or b"-1")
            if newest > self._tick:
                raise StaleTick(f"tick {self._tick} is stale (tick {newest} started)")
            await self._blob.upload_blob(str(self._tick).encode(), overwrite=True, lease=self._lease)
        except BaseException:
            await self._release()
            raise
        self._renewer = asyncio.get_running_loop().create_task(self._renew())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._release()

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                await self._lease.renew()
            except Exception as exc:  # the tick goes on; a copy may take over after expiry
                _LOG.warning("could not renew the shard fence: %s", exc)

    async def _release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.release()
            self._lease = None
