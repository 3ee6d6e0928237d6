"""``DurableWorker``: a process that runs azrun's orchestrations and ticks for a scheduler."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from azrun.durable._orchestrations import azrun_run, azrun_shard

if TYPE_CHECKING:
    from azrun.durable._connect import SchedulerConnection
    from azrun.durable._host import WorkerHost

__all__ = ["DEFAULT_SHARDS_PER_WORKER", "DurableWorker"]

_LOG = logging.getLogger(__name__)
#: ticks one worker runs at once (each holds a thread of the SDK's pool while it waits).
DEFAULT_SHARDS_PER_WORKER = 32


class DurableWorker:
    """Hosts azrun's orchestrations and its tick activity; ``start`` / ``stop`` or ``with``."""

    def __init__(self, connection: SchedulerConnection, host: WorkerHost, *,
                 max_shards: int = DEFAULT_SHARDS_PER_WORKER) -> None:  # fmt: skip
        from durabletask.worker import ConcurrencyOptions

        self.connection = connection
        self.host = host
        concurrency = ConcurrencyOptions(
            maximum_concurrent_activity_work_items=max_shards,
            maximum_concurrent_orchestration_work_items=max_shards,
            maximum_thread_pool_workers=max_shards + 4,
        )
        self._worker = connection.worker(host.factory, concurrency_options=concurrency)
        self._worker.add_orchestrator(azrun_run)
        self._worker.add_orchestrator(azrun_shard)

        def azrun_tick(_ctx: Any, state: dict[str, Any]) -> dict[str, Any]:
            return host.tick(state)

        self._worker.add_activity(azrun_tick)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._worker.start()
        _LOG.info("worker %s connected to %s", self.host.name, self.connection.describe())

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop taking work and wait for the running ticks (at most ``timeout_s``); False when some
        were still running (the scheduler hands them to another worker once this one is gone)."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        stopper = threading.Thread(target=self._worker.stop, name="azrun-worker-stop", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            _LOG.warning("worker %s: ticks still running after %.0f s", self.host.name, timeout_s)
            return False
        self.host.close()
        return True

    def __enter__(self) -> DurableWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
