"""A worker process's shared state: one event loop, one identity, one throttle, caches.

Activities run on the SDK's thread pool; each hands its coroutine to the host's single event
loop (a daemon thread), so every tick of the process shares the async SDK clients built by
:class:`~azrun.clients.ClientFactory` (the process-scoped credential of :mod:`azrun.auth`, and one
:class:`~azrun.throttle.Throttle`, the same budgets a one-process run spends). Plans and target
lists are read once per run and kept (bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from azrun.durable._docs import plan_name, read_jsonl, spec_from_doc, target_from_doc, targets_name
from azrun.durable._state import ShardState
from azrun.durable._tick import Plan, TickEnv, run_tick
from azrun.models import Target

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.fleet import FleetOptions
    from azrun.output import OutputStore, Tailer

__all__ = ["WorkerHost"]

_T = TypeVar("_T")
_CACHE = 64  # plans / target lists kept per process


class WorkerHost:
    """Runs ticks for the worker's activities (thread-safe: call :meth:`tick` from any thread)."""

    def __init__(self, settings: Settings | None = None, *, factory: ClientFactory | None = None,
                 options: FleetOptions | None = None, name: str | None = None) -> None:  # fmt: skip
        from azrun.config import Settings
        from azrun.fleet import FleetOptions
        from azrun.runcommand import RunCommandClient

        self.settings = settings or Settings.load()
        self.factory = factory or self.settings.client_factory()
        self.options = options or FleetOptions()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="azrun-durable", daemon=True)
        self._thread.start()
        self._stores: dict[tuple[str, str | None], OutputStore] = {}
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._targets: OrderedDict[tuple[str, int], list[Target]] = OrderedDict()
        self._tailers: OrderedDict[str, Tailer] = OrderedDict()
        self._lock: asyncio.Lock | None = None
        self.env = TickEnv(
            client=RunCommandClient(self.factory), options=self.options, store=self._store, plan=self._plan,
            targets=self._target_list, tailer=self._tailer, name=self.name, throttle=self.factory.throttle,
        )  # fmt: skip
        self.ticks = 0

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def tick(self, state: dict[str, Any]) -> dict[str, Any]:
        """The ``azrun_tick`` activity's body."""
        self.ticks += 1
        return self.run(run_tick(self.env, ShardState.from_dict(state)))

    def close(self) -> None:
        async def shutdown() -> None:
            for tailer in self._tailers.values():
                await tailer.aclose()
            for store in self._stores.values():
                await store.aclose()
            await self.factory.aclose()

        if self._loop.is_running():
            try:
                self.run(shutdown())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)

    # -- caches (all on the host's loop) ---------------------------------------------------------
    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _store(self, container: str, blob_identity: str | None) -> OutputStore:
        from azrun.output import OutputStore

        key = (container, blob_identity)
        async with self._guard():
            store = self._stores.get(key)
            if store is None:
                conn = self.settings.get("storage_connection_string")
                store = await OutputStore.open(container_url=container, factory=self.factory,
                                               connection_string=str(conn) if conn else None,
                                               blob_identity=blob_identity, verify=False)  # fmt: skip
                self._stores[key] = store
        return store

    async def _plan(self, store: OutputStore, run_id: str) -> Plan:
        plan = self._plans.get(run_id)
        if plan is None:
            doc = json.loads(await store.read_name(plan_name(run_id)))
            plan = Plan(run_id, spec_from_doc(doc["spec"]), doc["run_command_name"], float(doc["grace_s"]))
            _remember(self._plans, run_id, plan)
        return plan

    async def _target_list(self, store: OutputStore, run_id: str, shard: int) -> Sequence[Target]:
        targets = self._targets.get((run_id, shard))
        if targets is None:
            targets = [target_from_doc(d) for d in read_jsonl(await store.read_name(targets_name(run_id, shard)))]
            _remember(self._targets, (run_id, shard), targets)
        return targets

    def _tailer(self, store: OutputStore, run_id: str) -> Tailer:
        from azrun.output import Tailer

        tailer = self._tailers.get(run_id)
        if tailer is None:
            tailer = Tailer(store, run_id, None)
            _remember(self._tailers, run_id, tailer)
        return tailer


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE:
        cache.popitem(last=False)
