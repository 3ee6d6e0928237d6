"""Fleet runs beyond one process, on the Durable Task engine (``durabletask``).

* :class:`DurableFleet` (``_fleet``): schedule / status / wait / cancel / runs / results, from any machine.
* :class:`DurableWorker` (``_worker``) + :class:`WorkerHost` (``_host``): a worker process
  (``azrun worker``): the orchestrations and the tick activity, one event loop, one identity, one throttle.
* ``_orchestrations``: ``azrun_run`` (waves in order, soak as a durable timer) -> one ``azrun_shard``
  per subscription of each wave -> ``azrun_tick`` activities.
* ``_plan``: shards and waves (the wave arithmetic is :class:`azrun.fleet.WavePlan`'s).
* ``_tick``: one tick of a shard, with azrun's own per-target steps; ``_state``: what a shard carries.
* ``_docs``: the run's documents in the output container (plan, targets, results, cancel marker).
* ``_connect``: :class:`SchedulerConnection` (Azure Durable Task Scheduler or a local scheduler).
* ``_local``: :class:`LocalScheduler`, the SDK's in-memory backend plus redelivery (dev and tests).
"""

from __future__ import annotations

from azrun.durable._connect import SchedulerConnection
from azrun.durable._fleet import DurableFleet, DurableRun, UnknownDurableRun, check_durable_options
from azrun.durable._host import WorkerHost
from azrun.durable._orchestrations import RUN, SHARD, TICK, TICKS_PER_EXECUTION
from azrun.durable._plan import plan_shards
from azrun.durable._state import ShardState
from azrun.durable._worker import DurableWorker

__all__ = [
    "RUN",
    "SHARD",
    "TICK",
    "TICKS_PER_EXECUTION",
    "DurableFleet",
    "DurableRun",
    "DurableWorker",
    "SchedulerConnection",
    "ShardState",
    "UnknownDurableRun",
    "WorkerHost",
    "check_durable_options",
    "plan_shards",
]
