"""``DurableFleet``: schedule, watch, cancel and read durable runs from any machine.

::

    async with DurableFleet.from_env() as fleet:          # AZRUN_DURABLE_ENDPOINT, output container
        run_id = await fleet.schedule(Selector.from_options(tags=["env=prod"]), "uptime",
                                      max_concurrency="100%")
        status = await fleet.wait(run_id, timeout_s=3600)
        for r in await fleet.results(run_id):
            print(r.target.name, r.state, r.exit_code)

Everything a run is lives in the scheduler (orchestration state) and the output container (plan,
targets, results, output blobs): no local file, so ``status`` / ``results`` / ``cancel`` work from
any machine that reaches both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrun.durable._docs import (
    cancel_name,
    jsonl,
    plan_name,
    read_jsonl,
    result_from_doc,
    results_prefix,
    spec_to_doc,
    target_from_doc,
    target_to_doc,
    targets_name,
)
from azrun.durable._orchestrations import CANCEL, RUN, TICKS_PER_EXECUTION
from azrun.durable._plan import layout, plan_shards
from azrun.durable._state import ShardState, shard_instance_id
from azrun.errors import AzrunError, ConfigError, NoTargetsMatched
from azrun.models import RunId, RunSpec, SkippedTarget, Target, TargetResult, TargetState

if TYPE_CHECKING:
    from azrun.config import Settings
    from azrun.durable._connect import SchedulerConnection
    from azrun.fleet import Fleet, FleetOptions
    from azrun.output import OutputStore
    from azrun.targets import Selection, Selector

__all__ = ["DurableFleet", "DurableRun", "UnknownDurableRun", "check_durable_options", "plan_shards"]


class UnknownDurableRun(AzrunError):
    """The scheduler has no such run (the CLI exits 3, "not found")."""


@dataclass(frozen=True)
class DurableRun:
    """A durable run as the scheduler has it."""

    run_id: str
    runtime_status: str  # RUNNING, COMPLETED, FAILED, TERMINATED, PENDING, ...
    status: str  # running | succeeded | failed | canceled | interrupted | error
    created_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    shards: tuple[dict[str, Any], ...] = ()
    arm_requests: int = 0
    throttled_429: int = 0
    error: str | None = None
    stop: str | None = None  # why the rollout stopped early (a wave's budget, the canary, max-errors)

    @property
    def done(self) -> bool:
        return self.runtime_status not in ("RUNNING", "PENDING", "SUSPENDED", "CONTINUED_AS_NEW")


class DurableFleet:
    """The library surface of the durable engine (typed twin of :class:`~azrun.fleet.Fleet`)."""

    def __init__(self, fleet: Fleet, connection: SchedulerConnection) -> None:
        self.fleet = fleet
        self.connection = connection
        self._client: Any = None
        self._targets_cache: dict[tuple[str, int], list[Target]] = {}

    @classmethod
    def from_env(cls, settings: Settings | None = None, *, endpoint: str | None = None,
                 taskhub: str | None = None) -> DurableFleet:  # fmt: skip
        """A durable fleet configured as ``azrun durable run`` would be here: the settings (flags,
        environment, config file) choose identity, output storage and the scheduler
        (``AZRUN_DURABLE_ENDPOINT`` / ``AZRUN_DURABLE_TASKHUB``); ``endpoint``/``taskhub`` win."""
        from azrun.config import Settings
        from azrun.durable._connect import SchedulerConnection
        from azrun.fleet import Fleet

        chosen = settings or Settings.load()
        fleet = Fleet.from_env(settings=chosen, engine_loop="caller")  # the durable host's loop is azrun's
        return cls(fleet, SchedulerConnection.from_settings(chosen, endpoint, taskhub))

    async def __aenter__(self) -> DurableFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the scheduler client and the fleet's Azure clients."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
        await self.fleet.aclose()

    @property
    def client(self) -> Any:
        """The Durable Task client for this scheduler and task hub (opened on first use)."""
        if self._client is None:
            self._client = self.connection.client(self.fleet.factory)
        return self._client

    async def store(self) -> OutputStore:
        """The output container the run's documents and output blobs are in."""
        return await self._store()

    async def _store(self) -> OutputStore:
        await self.fleet.aopen()
        if self.fleet.output is None:
            raise ConfigError("durable runs keep their plan, results and output in blob storage",
                              hint="set --output-container / AZRUN_OUTPUT_CONTAINER (or --storage-account)")
        return self.fleet.output

    # -- schedule ------------------------------------------------------------------------------
    async def schedule(
        self,
        targets: Selector | Selection | Sequence[Target],
        spec: RunSpec | str,
        *,
        options: FleetOptions | None = None,
        max_concurrency: str | int | None = None,
        max_errors: str | int | None = None,
        keep: bool = False,
        tick_s: float = 10.0,
        poll_s: float = 2.0,
        run_id: str | None = None,
        ticks_per_execution: int = TICKS_PER_EXECUTION,
    ) -> RunId:
        """Write the run's plan to the output container and start its orchestration; returns at once.

        ``options`` (a :class:`~azrun.fleet.FleetOptions`, as for :meth:`azrun.Fleet.run`) wins
        over ``max_concurrency`` / ``max_errors`` / ``keep``; what the durable engine cannot honour
        (retries, a start timeout) is refused (:func:`check_durable_options`). Waves, canary, soak
        and wave max-errors run as on one process."""
        from azrun.fleet import FleetOptions
        from azrun.runcommand import check_request_size, new_run_id, run_command_name

        if isinstance(spec, str):
            spec = RunSpec(script=spec, script_name="inline", timeout_s=self.fleet.defaults.timeout_s)
        if spec.protected_parameters or spec.run_as_password:
            raise ConfigError("durable runs do not carry secrets (protected parameters, --run-as password) yet",
                              hint="run with the one-process engine, or fetch the secret on the VM (Key Vault)")
        check_request_size(spec)
        opts = options or FleetOptions.make(
            max_concurrency=self.fleet.defaults.max_concurrency if max_concurrency is None else max_concurrency,
            max_errors=self.fleet.defaults.max_errors if max_errors is None else max_errors, keep=keep)
        check_durable_options(opts)
        chosen, skipped = await self._targets(targets)
        store = await self._store()
        rid = RunId(run_id or new_run_id())
        waves = opts.plan()
        n = len(chosen)
        run_errors = opts.max_errors.errors(n)
        laid = layout(
            rid, chosen, waves.assign(chosen) if waves else None, limit=opts.max_concurrency.concurrency(n),
            max_errors=run_errors, cap=self._budget_cap(), labels=waves.labels(chosen) if waves else (),
            wave_budgets=[waves.wave_budget(k) for k in _wave_sizes(waves.assign(chosen))] if waves else (),
        )  # fmt: skip
        plan = {
            "run_id": rid, "spec": spec_to_doc(spec), "run_command_name": run_command_name(rid),
            "grace_s": opts.grace_s(spec.timeout_s), "created": time.time(), "total": n,
            "options": opts.to_dict(), "public_spec": spec.public_dict(),
            "skipped": [{"target": target_to_doc(s.target), "reason": s.reason} for s in skipped],
            "waves": [w.to_dict() for w in laid.waves],
        }  # fmt: skip
        for s, members in zip(laid.shards, laid.targets, strict=True):
            await store.write_document(targets_name(rid, s.shard), jsonl(target_to_doc(t) for t in members))
        await store.write_document(plan_name(rid), json.dumps(plan).encode())
        states = []
        for s in laid.shards:
            s.container, s.blob_identity, s.keep = store.container_url, _blob_identity(store), opts.keep
            s.tick_s, s.poll_s, s.ticks_per_execution = tick_s, poll_s, ticks_per_execution
            states.append(s.to_dict())
        root = {"run_id": rid, "shards": states, "waves": [w.to_dict() for w in laid.waves],
                "soak_s": waves.soak_s if waves else 0.0, "canary": bool(waves and waves.canary),
                "max_errors": run_errors}  # fmt: skip
        await asyncio.to_thread(self.client.schedule_new_orchestration, RUN, input=root, instance_id=rid)
        return rid

    async def _targets(self, what: Selector | Selection | Sequence[Target]) -> tuple[list[Target], list[SkippedTarget]]:
        from azrun.targets import Selection, Selector

        if isinstance(what, Selector):
            what = await self.fleet.select(what)
        if isinstance(what, Selection):
            return list(what.require_targets()), list(what.skipped)
        chosen = [t for t in what if t.power_state in ("running", "unknown")]
        skipped = [SkippedTarget(t, f"machine is {t.power_state}") for t in what if t not in chosen]
        if not chosen:
            raise NoTargetsMatched("no running machine to run on", hint="start the machines, or select others")
        return chosen, skipped

    def _budget_cap(self) -> int:
        """The most targets one subscription keeps in flight: its run-command write budget
        (PUT + DELETE per target from Compute's per-subscription bucket)."""
        from azrun.throttle import ThrottleLimits

        throttle = self.fleet.factory.throttle
        limits = getattr(throttle, "limits", None) or ThrottleLimits()
        if not limits.enabled:
            return 1_000_000
        return max(1, int(limits.sub_update_vm.burst // 2))

    # -- watch ---------------------------------------------------------------------------------
    async def status(self, run_id: str) -> DurableRun:
        """The run's state: the root orchestration, and each shard's counters while it runs."""
        root = await asyncio.to_thread(self.client.get_orchestration_state, run_id)
        if root is None:
            raise UnknownDurableRun(f"no durable run {run_id} in {self.connection.describe()}",
                                    hint="list them with `azrun durable runs`")
        runtime = root.runtime_status.name
        created = root.created_at
        if root.serialized_output and runtime == "COMPLETED":
            out = json.loads(root.serialized_output)
            return _run(run_id, runtime, out["status"], created, tuple(out.get("shards", ())), stop=out.get("stop"))
        shard_states = [ShardState.from_dict(s) for s in json.loads(root.serialized_input or "{}").get("shards", [])]
        shards = []
        for s in shard_states:
            child = await asyncio.to_thread(self.client.get_orchestration_state, s.instance_id, fetch_payloads=True)
            summary = json.loads(child.serialized_custom_status) if child and child.serialized_custom_status else None
            shards.append(summary or s.summary())
        error = root.failure_details.message if root.failure_details else None
        status = "running" if runtime in ("RUNNING", "PENDING") else "error" if runtime == "FAILED" else runtime.lower()
        return _run(run_id, runtime, status, created, tuple(shards), error=error)

    async def wait(self, run_id: str, *, timeout_s: float = 3600, interval_s: float = 1.0) -> DurableRun:
        """Poll :meth:`status` until the run is done (or ``timeout_s``: then its current state)."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = await self.status(run_id)
            if run.done or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(interval_s)

    async def cancel(self, run_id: str) -> None:
        """Cancel: the marker blob (read by every tick) and the ``cancel`` event on every shard."""
        store = await self._store()
        await store.write_document(cancel_name(run_id), b"canceled\n")
        root = await asyncio.to_thread(self.client.get_orchestration_state, run_id)
        if root is None:
            raise UnknownDurableRun(f"no durable run {run_id}", hint="list them with `azrun durable runs`")
        with contextlib.suppress(Exception):  # the root cuts a soak short and starts no more waves
            await asyncio.to_thread(self.client.raise_orchestration_event, run_id, CANCEL)
        for s in json.loads(root.serialized_input or "{}").get("shards", []):
            try:
                await asyncio.to_thread(self.client.raise_orchestration_event, shard_instance_id(run_id, s["shard"]), CANCEL)
            except Exception:  # a finished shard has nothing to cancel
                continue

    async def runs(self, limit: int = 20) -> list[DurableRun]:
        """The newest ``limit`` durable runs the scheduler knows, with their status."""
        from durabletask.client import OrchestrationQuery

        states = await asyncio.to_thread(self.client.get_all_orchestration_states, OrchestrationQuery())
        roots = sorted((s for s in states if s.name == RUN), key=lambda s: s.created_at, reverse=True)[:limit]
        return [await self.status(s.instance_id) for s in roots]

    async def results(self, run_id: str) -> list[TargetResult]:
        """Every finished (or skipped) target's result, from the run's result blobs."""
        return await self.new_results(run_id, set(), skipped=True)

    async def new_results(self, run_id: str, seen: set[str], *, skipped: bool = False) -> list[TargetResult]:
        """The results in result blobs not in ``seen`` (their names are added to it): what
        finished since the last call (``--follow``). ``skipped``: also the machines the plan skipped."""
        store = await self._store()
        out: list[TargetResult] = []
        if skipped:
            plan = json.loads(await store.read_name(plan_name(run_id)))
            out += [TargetResult(target_from_doc(s["target"]), TargetState.SKIPPED, message=s["reason"])
                    for s in plan.get("skipped", ())]  # fmt: skip
        prefix = results_prefix(run_id)
        for name in await store.list_names(prefix):
            if name in seen:
                continue
            seen.add(name)
            shard = int(name[len(prefix):].split("/", 1)[0])
            targets = await self._shard_targets(store, run_id, shard)
            out += [result_from_doc(row, targets[int(row["i"])]) for row in read_jsonl(await store.read_name(name))]
        return out

    async def targets(self, run_id: str) -> list[Target]:
        """Every target the run dispatches (skipped machines aside), shard by shard."""
        store = await self._store()
        plan = json.loads(await store.read_name(plan_name(run_id)))
        out: list[Target] = []
        for wave in plan.get("waves", ()):
            for shard in wave["shards"]:
                out += await self._shard_targets(store, run_id, int(shard))
        return out

    async def _shard_targets(self, store: OutputStore, run_id: str, shard: int) -> list[Target]:
        key = (run_id, shard)
        if key not in self._targets_cache:
            docs = read_jsonl(await store.read_name(targets_name(run_id, shard)))
            self._targets_cache[key] = [target_from_doc(d) for d in docs]
        return self._targets_cache[key]


def check_durable_options(opts: FleetOptions) -> None:
    """Refuse what a durable run cannot honour (one line + a fix), rather than ignore it."""
    from azrun.config import DEFAULT_START_TIMEOUT_S

    hint = "drop the option, or run with --engine local"
    if opts.retries:
        raise ConfigError("durable runs do not retry targets (--retries) yet", hint=hint)
    if opts.start_timeout_s != DEFAULT_START_TIMEOUT_S:
        raise ConfigError("durable runs do not take --start-timeout (their watchdog is timeout + grace)", hint=hint)


def _wave_sizes(assigned: Sequence[int]) -> list[int]:
    sizes = [0] * (max(assigned, default=-1) + 1)
    for w in assigned:
        sizes[w] += 1
    return sizes


def _blob_identity(store: OutputStore) -> str | None:
    ident = store.identity
    if ident is None:
        return None
    return ident.get("clientId") or "system"


def _run(run_id: str, runtime: str, status: str, created: datetime | None, shards: tuple[dict[str, Any], ...],
         *, error: str | None = None, stop: str | None = None) -> DurableRun:  # fmt: skip
    counts: dict[str, int] = {}
    for s in shards:
        for k, v in s.get("counts", {}).items():
            counts[k] = counts.get(k, 0) + int(v)
    return DurableRun(
        run_id, runtime, status, created, counts, sum(int(s.get("total", 0)) for s in shards), shards,
        sum(int(s.get("requests", 0)) for s in shards), sum(int(s.get("throttled", 0)) for s in shards), error,
        stop,
    )  # fmt: skip
