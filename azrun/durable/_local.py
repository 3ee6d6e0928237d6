"""A local scheduler: the Durable Task SDK's own in-memory backend, plus redelivery.

``durabletask.testing.InMemoryOrchestrationBackend`` is the SDK's gRPC sidecar for tests: several
worker processes can connect to it. It hands a work item to one worker and forgets it; a worker
killed with the item in hand leaves the orchestration stuck forever. The managed Durable Task
Scheduler does not lose work that way (a work item whose worker disappears is dispatched again),
so this subclass adds exactly that, and nothing else:

* a stream with nothing to send carries a health ping every 20 s, as the managed scheduler's
  does (the SDK worker reconnects after 120 s of silence; that reconnect is not a dead worker);
* every work item sent on a worker's stream is remembered until it is completed;
* when the stream ends (the worker died, was killed or disconnected), what it still held goes
  back to the queue: activities as they were, orchestrations as if abandoned;
* a completion that arrives for an activity already completed (a slow worker and its
  replacement both finished) is dropped, by the item's completion token.

It also fixes one bug of the SDK's backend (durabletask 1.12): a parent waits for a
sub-orchestration with "no timeout", which its ``_wait_for_state`` turns into 30 s, after which the
completion is never delivered (a parent of any sub-orchestration that runs longer than 30 s hangs
forever). Here "no timeout" waits until the child ends or the scheduler stops.

It also listens on a free port (``port=0``) and records the longest history any orchestration
execution reached (the bounded-history check). For development and tests only; production uses
Azure Durable Task Scheduler.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask.testing.in_memory_backend import ActivityWorkItem, InMemoryOrchestrationBackend

__all__ = ["LocalScheduler"]

_LOG = logging.getLogger(__name__)
#: A quiet stream carries a health ping this often (the SDK worker gives up on a stream after 120 s).
HEALTH_PING_S = 20.0


class LocalScheduler(InMemoryOrchestrationBackend):
    """The SDK's in-memory backend with redelivery of work held by a vanished worker."""

    def __init__(self, port: int = 0, max_history_size: int = 100_000) -> None:
        super().__init__(max_history_size=max_history_size, port=port)
        self._leases: dict[int, dict[str, tuple[str, Any]]] = {}
        self._done_tokens: set[str] = set()
        self._streams = itertools.count(1)
        self._lease_lock = threading.Lock()
        self.peak_history = 0
        self.redelivered = 0

    def start(self) -> str:
        from concurrent import futures

        import grpc
        from durabletask.internal import orchestrator_service_pb2_grpc as stubs

        self._shutdown_event.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        stubs.add_TaskHubSidecarServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        self._port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        server.start()
        self._server = server
        return self.address

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def _wait_for_state(self, instance_id: str, predicate: Any, timeout: float | None) -> Any:
        if timeout is not None:
            return super()._wait_for_state(instance_id, predicate, timeout)
        while not self._shutdown_event.is_set():
            found = super()._wait_for_state(instance_id, predicate, 30.0)
            if found is not None:
                return found
            with self._lock:
                if instance_id not in self._instances:
                    return None
        return None

    # -- leases -----------------------------------------------------------------------------------
    def GetWorkItems(self, request: Any, context: Any) -> Iterator[Any]:
        """The SDK backend's stream, with a health ping whenever it has been quiet for a while
        (as the managed scheduler sends them: the SDK worker reconnects after a silent stream,
        and a reconnect must not be taken for a dead worker), and leases on what it hands out."""
        stream = next(self._streams)
        held: dict[str, tuple[str, Any]] = {}
        with self._lease_lock:
            self._leases[stream] = held
        items: queue.Queue[Any] = queue.Queue()
        done = object()

        def pump() -> None:
            try:
                for item in super(LocalScheduler, self).GetWorkItems(request, context):
                    with self._lease_lock:
                        if item.HasField("activityRequest"):
                            held[item.completionToken] = ("activity", item.activityRequest)
                        elif item.HasField("orchestratorRequest"):
                            held[item.completionToken] = ("orchestration", item.orchestratorRequest.instanceId)
                    items.put(item)
            finally:
                items.put(done)

        threading.Thread(target=pump, name=f"work-items-{stream}", daemon=True).start()
        try:
            while True:
                try:
                    item = items.get(timeout=HEALTH_PING_S)
                except queue.Empty:
                    if not context.is_active():
                        return
                    yield pb.WorkItem(healthPing=pb.HealthPing())
                    continue
                if item is done:
                    return
                yield item
        finally:
            with self._lease_lock:
                left = self._leases.pop(stream, {})
            self._requeue(left)

    def _requeue(self, left: dict[str, tuple[str, Any]]) -> None:
        for token, (kind, what) in left.items():
            self.redelivered += 1
            if kind == "activity":
                if token in self._done_tokens:
                    continue
                item = ActivityWorkItem(instance_id=what.orchestrationInstance.instanceId, name=what.name,
                                        task_id=what.taskId, input=what.input.value if what.HasField("input") else None,
                                        completion_token=int(token))  # fmt: skip
                with self._lock:
                    self._activity_queue.append(item)
                    self._work_available.set()
                _LOG.info("redelivering activity %s of %s", item.name, item.instance_id)
            else:
                self.AbandonTaskOrchestratorWorkItem(pb.AbandonOrchestrationTaskRequest(completionToken=token), None)
                _LOG.info("redelivering orchestration %s", what)

    def _release(self, token: str) -> None:
        with self._lease_lock:
            for held in self._leases.values():
                held.pop(token, None)

    def CompleteActivityTask(self, request: Any, context: Any) -> Any:
        token = request.completionToken
        with self._lease_lock:
            if token and token in self._done_tokens:
                return pb.CompleteTaskResponse()
            if token:
                self._done_tokens.add(token)
        self._release(token)
        return super().CompleteActivityTask(request, context)

    def CompleteOrchestratorTask(self, request: Any, context: Any) -> Any:
        self._release(request.completionToken)
        with self._lock:
            inst = self._instances.get(request.instanceId)
            if inst is not None:
                self.peak_history = max(self.peak_history, len(inst.history) + len(inst.dispatched_events))
        return super().CompleteOrchestratorTask(request, context)

    def AbandonTaskActivityWorkItem(self, request: Any, context: Any) -> Any:
        token = request.completionToken
        with self._lease_lock:
            entry = None
            for held in self._leases.values():
                entry = held.pop(token, None) or entry
        if entry is not None:
            self._requeue({token: entry})
        return pb.AbandonActivityTaskResponse()


def serve(port: int = 0) -> LocalScheduler:
    """Start a local scheduler; ``.address`` is where workers and clients connect."""
    scheduler = LocalScheduler(port=port)
    scheduler.start()
    return scheduler
