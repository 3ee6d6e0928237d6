"""``Fleet``: the library surface for fleet runs (Azure Functions, Automation runbooks, the CLI).

::

    async with azrun.Fleet.from_env() as fleet:
        result = await fleet.run(Selector.from_options(tags=["env=prod"]), "uptime",
                                 max_concurrency="20%", max_errors=2)
    for r in result.failed:
        print(r.target.name, r.state, r.exit_code, r.stderr_tail)

Everything a run decides is written to the ledger under the state dir, so another process (or
the same one after a crash) can ``status``, ``resume``, ``rerun`` or ``cancel`` it by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from azrun._engine import EngineLoop, engine, on_engine
from azrun.config import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_ERRORS, DEFAULT_TIMEOUT_S
from azrun.errors import ConfigError, NoTargetsMatched
from azrun.fleet._cleanup import CleanupReport, cleanup
from azrun.fleet._delete import delete_run_command
from azrun.fleet._dispatch import Clock, Dispatcher, SystemClock
from azrun.fleet._events import EventHub, FleetObserver, NullObserver, Scrubber
from azrun.fleet._handle import RunHandle
from azrun.fleet._options import FleetOptions
from azrun.fleet._output import InstanceViewOutput, OutputPort, StoreOutput
from azrun.fleet._runner import Runner
from azrun.fleet._spec import check_same_spec
from azrun.fleet._waves import WavePlan
from azrun.fleet._work import Work, works_for
from azrun.ledger import LeaseHolder
from azrun.models import FleetResult, RunId, RunSpec, SkippedTarget, Target, TargetState
from azrun.redact import secret_fingerprints
from azrun.runcommand import RunCommandClient, check_request_size, new_run_id, run_command_name

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.config import OutputChoice, Settings
    from azrun.ledger import Ledger, RunRecord, TargetRecord
    from azrun.output import OutputStore
    from azrun.targets import Selection, Selector

__all__ = ["RERUN_STATES", "EngineChoice", "Fleet", "RunDefaults", "RunStatus"]

EngineChoice = Literal["private", "caller"]
"""Where a fleet's runs execute: azrun's own event loop in a thread, or the caller's loop."""

#: ``rerun --failed`` picks these.
RERUN_STATES = (TargetState.FAILED, TargetState.TIMED_OUT, TargetState.UNDELIVERABLE)
_RESUMABLE = (TargetState.PENDING, TargetState.DISPATCHING, TargetState.RUNNING)
#: States whose run command exists (or existed): resume must delete it once finished.
_SENT = (TargetState.RUNNING, TargetState.SUCCEEDED, TargetState.FAILED, TargetState.TIMED_OUT, TargetState.CANCELED)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run as the ledger has it."""

    run: RunRecord
    targets: tuple[TargetRecord, ...]

    def counts(self) -> dict[str, int]:
        """How many targets are in each state."""
        out: dict[str, int] = {}
        for t in self.targets:
            out[t.state.value] = out.get(t.state.value, 0) + 1
        return out

    def result(self) -> FleetResult:
        """The run as a :class:`FleetResult` (targets still going keep their current state)."""
        return FleetResult(RunId(self.run.id), tuple(t.to_result() for t in self.targets))


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """What a run uses when the caller does not say (from the settings in :meth:`Fleet.from_env`)."""

    max_concurrency: str = DEFAULT_MAX_CONCURRENCY
    max_errors: str = DEFAULT_MAX_ERRORS
    timeout_s: int = DEFAULT_TIMEOUT_S


class Fleet:
    """Runs scripts on many machines; an async context manager that owns what it built.

    Args:
        factory: builds the SDK clients (credential, throttle, cloud); default ``ClientFactory.from_env()``.
        state_dir: where the ledger lives; default ``--state-dir`` / ``AZRUN_STATE_DIR`` /
            ``$XDG_STATE_HOME/azrun``. Ignored when ``ledger`` is given.
        output: an open :class:`~azrun.output.OutputStore` for full output; None = instance view
            only (last 4 KB, flagged truncated).
        observer: default observer of every run (a run may pass its own).
        default_subscriptions: scope for selectors that name no subscription.
        api_version: Compute api-version for run commands (default: the SDK's).
        dispatcher: what run commands go through (default: a
            :class:`~azrun.runcommand.RunCommandClient` over ``factory``; tests pass a fake).
        clock: the time the runs read (default: the system's).
        engine_loop: where the runs and every Azure request execute. ``"private"`` (the default
            for a fleet built from settings): on azrun's own event loop, one per process in a
            daemon thread (:mod:`azrun._engine`); your loop only awaits results and events, so a
            Function's other coroutines are not delayed by the run's HTTP, TLS and bookkeeping.
            Observers are then called on azrun's thread. ``"caller"``: on the loop that awaits
            (the CLI's choice: its loop is azrun's). Default (None): ``"caller"`` when given
            objects of your own loop (an open ``output`` store, a ``dispatcher`` or a ``clock``),
            else ``"private"``. Cancelling a task that awaits a fleet call behaves the same either
            way (:mod:`azrun.fleet._handle`).
    """

    def __init__(
        self,
        *,
        factory: ClientFactory | None = None,
        state_dir: Path | str | None = None,
        ledger: Ledger | None = None,
        output: OutputStore | OutputChoice | None = None,
        observer: FleetObserver | None = None,
        default_subscriptions: Sequence[str] = (),
        api_version: str | None = None,
        defaults: RunDefaults | None = None,
        dispatcher: Dispatcher | None = None,
        clock: Clock | None = None,
        engine_loop: EngineChoice | None = None,
    ) -> None:
        from azrun.clients import ClientFactory
        from azrun.config import OutputChoice

        self._own_factory = factory is None
        self.factory = factory or ClientFactory.from_env()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._ledger = ledger
        self._own_ledger = ledger is None
        self._output_choice = output if isinstance(output, OutputChoice) else None
        self.output: OutputStore | None = None if isinstance(output, OutputChoice) else output
        self._own_output = False
        self.observer: FleetObserver = observer or NullObserver()
        self.default_subscriptions = tuple(default_subscriptions)
        self.defaults = defaults or RunDefaults()
        self.client: Dispatcher = dispatcher or RunCommandClient(self.factory, api_version=api_version)
        self.clock: Clock = clock or SystemClock()
        if engine_loop is None:
            own_loop = self.output is not None or dispatcher is not None or clock is not None
            engine_loop = "caller" if own_loop else "private"
        if engine_loop not in ("private", "caller"):
            raise ConfigError(f"engine_loop {engine_loop!r} is not 'private' or 'caller'",
                              hint="engine_loop='private' (azrun's own loop) or 'caller' (yours)")
        self.engine_loop: EngineChoice = engine_loop
        self._engine: EngineLoop | None = engine() if engine_loop == "private" else None

    @property
    def engine(self) -> EngineLoop | None:
        """The private loop the runs execute on (None: the caller's loop)."""
        return self._engine

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        settings: Settings | None = None,
        factory: ClientFactory | None = None,
        state_dir: Path | str | None = None,
        ledger: Ledger | None = None,
        output: OutputStore | OutputChoice | None = None,
        observer: FleetObserver | None = None,
        api_version: str | None = None,
        engine_loop: EngineChoice | None = None,
    ) -> Fleet:
        """A fleet configured exactly as ``azrun run`` would be here: the settings (environment
        over the config file over the defaults, :mod:`azrun.config`) choose the cloud, identity
        (``AZRUN_CLIENT_ID`` / ``AZURE_CLIENT_ID``), auth mode, output storage
        (``AZRUN_OUTPUT_CONTAINER`` / ``AZRUN_STORAGE_ACCOUNT``, ``AZRUN_BLOB_IDENTITY``), state dir,
        subscriptions and the run defaults (concurrency, errors, timeout). Keyword arguments given
        here win over the settings. The output container is opened (and checked) on ``async with``
        or at the first run. ``engine_loop``: see :class:`Fleet` (default ``"private"`` unless an
        open ``output`` store is given).
        """
        from azrun.config import Settings

        chosen = settings or Settings.load(environ=environ)
        fleet = cls(
            factory=factory or chosen.client_factory(),
            state_dir=state_dir if state_dir is not None or ledger is not None else chosen.state_dir(),
            ledger=ledger,
            output=output if output is not None else chosen.output(),
            observer=observer,
            default_subscriptions=chosen.subscriptions(),
            api_version=api_version,
            defaults=RunDefaults(chosen.max_concurrency(), chosen.max_errors(), chosen.timeout_s()),
            engine_loop=engine_loop,
        )
        fleet._own_factory = factory is None
        return fleet

    def __repr__(self) -> str:
        return f"Fleet(ledger={str(self.ledger.path)!r}, output={self.output!r}, engine_loop={self.engine_loop!r})"

    async def __aenter__(self) -> Fleet:
        try:
            await self.aopen()
        except BaseException:
            await self.aclose()
            raise
        return self

    @on_engine
    async def aopen(self) -> None:
        """Open (and check) the output container the settings named, if not open yet.

        Raises:
            OutputError: the container does not exist or azrun may not use it.
        """
        if self.output is not None or self._output_choice is None:
            return
        from azrun.output import OutputStore

        choice = self._output_choice
        url = choice.url(self.factory.cloud.storage_suffix)
        if url is None:
            return
        self.output = await OutputStore.open(
            container_url=url, factory=self.factory, connection_string=choice.connection_string,
            blob_identity=choice.blob_identity,
        )  # fmt: skip
        self._own_output = True

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @on_engine
    async def aclose(self) -> None:
        """Close what this fleet opened (output store, clients, ledger)."""
        if self._own_output and self.output is not None:
            await self.output.aclose()
            self.output = None
            self._own_output = False
        if self._own_factory:
            await self.factory.aclose()
        if self._own_ledger and self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    @property
    def ledger(self) -> Ledger:
        """The ledger this fleet records runs in (opened on first use)."""
        if self._ledger is None:
            from azrun.config import state_dir
            from azrun.ledger import Ledger

            self._ledger = Ledger.open(self._state_dir or state_dir())
        return self._ledger

    # -- targets -------------------------------------------------------------------------------
    @on_engine
    async def select(self, selector: Selector, *, explain: bool = False) -> Selection:
        """Resolve a selector to targets (running) and skipped machines (stopped)."""
        from azrun.targets import resolve

        return await resolve(selector, self.factory, default_subscriptions=self.default_subscriptions,
                             explain=explain)

    async def _targets(self, what: Any) -> tuple[list[Target], list[SkippedTarget], dict[str, Any] | None]:
        from azrun.targets import Selection, Selector

        if isinstance(what, Selector):
            what = await self.select(what)
        if isinstance(what, Selection):
            targets = list(what.require_targets())
            skipped = list(what.skipped)
            return targets, skipped, {"describe": what.selector.describe(), "subscriptions": list(what.subscriptions)}
        if isinstance(what, Target):
            what = [what]
        targets, skipped = [], []
        for t in what:
            if t.power_state in ("running", "unknown"):
                targets.append(t)
            else:
                skipped.append(SkippedTarget(t, f"machine is {t.power_state}"))
        if not targets:
            raise NoTargetsMatched(
                "no running machine to run on" if skipped else "no targets given",
                hint="start the machines, or select others",
            )
        return targets, skipped, None

    # -- runs ----------------------------------------------------------------------------------
    @on_engine
    async def start(
        self,
        targets: Selector | Selection | Sequence[Target] | Target,
        spec: RunSpec | str,
        *,
        options: FleetOptions | None = None,
        max_concurrency: str | int | None = None,
        max_errors: str | int | None = None,
        canary: int | None = None,
        keep: bool | None = None,
        waves: WavePlan | str | None = None,
        retries: int | None = None,
        observer: FleetObserver | None = None,
        run_id: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Resolve targets, record the run, and start it; returns at once with a :class:`RunHandle`.

        Args:
            targets: a selector (resolved here), a resolved selection, or targets.
            spec: what to run; a plain string is an inline script with the fleet's default timeout.
            options: every knob at once; or give ``max_concurrency`` (``N`` / ``N%``),
                ``max_errors``, ``canary``, ``keep``, ``waves`` (a :class:`WavePlan`, e.g.
                ``WavePlan.parse("1,10%,100%", soak_s=600, max_errors="1")``, or its text) and
                ``retries`` (the rest of :class:`FleetOptions` keeps its defaults; unset ones take
                the fleet's defaults, from the settings).
            observer: this run's observer (default: the fleet's).
            record: stored with the run's options (the CLI keeps the script's path there).

        Raises:
            ConfigError: a bad budget (``max_concurrency=0`` can never run anything).
            NoTargetsMatched: nothing to run on.
        """
        if isinstance(spec, str):
            spec = RunSpec(script=spec, script_name="inline", timeout_s=self.defaults.timeout_s)
        check_request_size(spec)  # a body Azure would refuse is refused here, before any dispatch
        wave_plan = WavePlan.parse(waves) if isinstance(waves, str) else waves
        opts = self._options(options, max_concurrency, max_errors, canary, keep, wave_plan, retries)
        chosen, skipped, selector = await self._targets(targets)
        await self.aopen()
        rid = RunId(run_id or new_run_id())
        name = run_command_name(rid)
        holder = LeaseHolder.this_process()
        ledger = self.ledger
        plan = opts.plan()
        assigned = plan.assign(chosen) if plan is not None else [0] * len(chosen)
        await asyncio.to_thread(
            ledger.create_run, rid, spec=spec, targets=chosen, skipped=skipped, selector=selector, waves=assigned,
            options={"fleet": opts.to_dict(), "run_command_name": name,
                     "password": bool(spec.run_as_password), **dict(record or {}),
                     **secret_fingerprints(spec)},
            holder=holder,
        )  # fmt: skip
        works = works_for(chosen, name)
        for work, wave in zip(works, assigned, strict=True):
            work.wave = wave
        works += [Work(target=s.target, seq=len(works) + i, run_command_name=name, state=TargetState.SKIPPED,
                       message=s.reason) for i, s in enumerate(skipped)]
        return self._launch(rid, spec, spec.timeout_s, works, opts, observer, holder)

    def _options(
        self, options: FleetOptions | None, max_concurrency: str | int | None, max_errors: str | int | None,
        canary: int | None, keep: bool | None, waves: WavePlan | None = None, retries: int | None = None,
    ) -> FleetOptions:
        from azrun.config import parse_budget

        pairs = (("canary", canary), ("keep", keep), ("waves", waves), ("retries", retries))
        given = {k: v for k, v in pairs if v is not None}
        if options is None:
            options = FleetOptions.make(
                max_concurrency=parse_budget(
                    self.defaults.max_concurrency if max_concurrency is None else max_concurrency,
                    what="max_concurrency", allow_zero=False),
                max_errors=parse_budget(self.defaults.max_errors if max_errors is None else max_errors,
                                        what="max_errors", allow_zero=True),
                **given,
            )  # fmt: skip
        elif max_concurrency is not None or max_errors is not None or given:
            raise ConfigError("give either options= or max_concurrency/max_errors/canary/keep/waves/retries, not both",
                              hint="put them in the FleetOptions")
        if options.max_concurrency.value == 0:
            raise ConfigError("max_concurrency 0: nothing could ever run", hint="use at least 1 (or a percentage above 0%)")
        return options

    def _launch(
        self, rid: RunId, spec: RunSpec | None, timeout_s: int, works: list[Work], opts: FleetOptions,
        observer: FleetObserver | None, holder: LeaseHolder,
    ) -> RunHandle:
        from azrun.ledger import RunLedger

        hub = EventHub(observer or self.observer)
        scrub = Scrubber([v for _, v in spec.protected_parameters] + [spec.run_as_password or ""] if spec else [])
        ledger = RunLedger(self.ledger.path, rid, holder)
        runner = Runner(
            run_id=rid, spec=spec, timeout_s=timeout_s, works=works, ledger=ledger, client=self.client,
            output=self._output_port(rid, hub, scrub, opts), options=opts, observer=hub, scrub=scrub,
            read_refill_per_s=self._read_refill(), throttle=self.factory.throttle, clock=self.clock,
        )  # fmt: skip
        return RunHandle(runner, ledger, hub, driver=self._driver())

    def _driver(self) -> dict[str, Any]:
        """Who drives the run, for the ledger (and the report): the identity azrun uses."""
        identity = self.factory.auth_mode
        with contextlib.suppress(Exception):  # a label, never a reason to fail a run
            identity = str(getattr(self.factory.acredential(), "spec").describe_identity())  # noqa: B009
        return {"identity": identity}

    def _output_port(self, rid: str, obs: FleetObserver, scrub: Scrubber, opts: FleetOptions) -> OutputPort:
        def sink(target: Target, stream: str, line: str) -> None:
            obs.on_line(target, stream, scrub(line))

        if self.output is None:
            return InstanceViewOutput(sink)
        return StoreOutput(self.output, rid, sink, max_tailed=opts.max_tailed)

    def _read_refill(self) -> float:
        throttle = self.factory.throttle
        limits = getattr(throttle, "limits", None)
        arm_reads = getattr(limits, "arm_reads", None)
        return float(getattr(arm_reads, "per_s", 25.0))

    @on_engine
    async def run(
        self,
        targets: Selector | Selection | Sequence[Target] | Target,
        spec: RunSpec | str,
        *,
        options: FleetOptions | None = None,
        max_concurrency: str | int | None = None,
        max_errors: str | int | None = None,
        canary: int | None = None,
        keep: bool | None = None,
        waves: WavePlan | str | None = None,
        retries: int | None = None,
        observer: FleetObserver | None = None,
        run_id: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> FleetResult:
        """Run ``spec`` on ``targets`` and wait: :meth:`start` (same arguments) + :meth:`RunHandle.wait`."""
        handle = await self.start(
            targets, spec, options=options, max_concurrency=max_concurrency, max_errors=max_errors, canary=canary,
            keep=keep, waves=waves, retries=retries, observer=observer, run_id=run_id, record=record,
        )  # fmt: skip
        return await handle.wait()

    # -- resume / rerun / cancel -----------------------------------------------------------------
    def status(self, run_id: str | None = None) -> RunStatus:
        """A run's record and its targets as the ledger has them (default: the latest run)."""
        record = self.ledger.require_run(run_id)
        return RunStatus(record, tuple(self.ledger.targets(record.id)))

    def runs(self, limit: int = 20) -> list[RunRecord]:
        """The ledger's runs, newest first."""
        return self.ledger.runs(limit)

    @on_engine
    async def resume_start(
        self, run_id: str, spec: RunSpec | None = None, *, observer: FleetObserver | None = None
    ) -> RunHandle:
        """Re-attach to a run after a crash or an interrupt.

        Running targets are polled again, Dispatching ones are looked up by their run command's
        name (attached if it exists, dispatched if not), Pending ones are dispatched. ``spec``
        (the same script and protected values) is needed only when something must be dispatched.
        """
        record = self.ledger.require_run(run_id)
        rows = self.ledger.targets(record.id)
        must_dispatch = any(r.state in (TargetState.PENDING, TargetState.DISPATCHING) for r in rows)
        if spec is not None:
            check_same_spec(record.spec, spec, run_id=record.id)
        elif must_dispatch:
            raise ConfigError(
                f"run {record.id} has targets left to dispatch and needs its script (and protected values) again",
                hint="pass the same --script/--command/--script-uri as for the run",
            )
        opts = FleetOptions.from_dict(record.options.get("fleet", {}))
        name = str(record.options.get("run_command_name") or run_command_name(record.id))
        holder = LeaseHolder.this_process()
        self.ledger.acquire_lease(record.id, holder)  # RunLeased names the live driver
        rows = self.ledger.targets(record.id)  # as of the lease: nobody else writes them now
        works = [self._work_from(r, name) for r in rows]
        timeout_s = int(record.spec.get("timeout_s", DEFAULT_TIMEOUT_S))
        return self._launch(RunId(record.id), spec, timeout_s, works, opts, observer, holder)

    @staticmethod
    def _work_from(rec: TargetRecord, name: str) -> Work:
        return Work(
            target=rec.target, seq=rec.seq, run_command_name=rec.run_command_name or name, state=rec.state,
            exit_code=rec.exit_code, message=rec.message, run_command_id=rec.run_command_id,
            dispatched_at=rec.dispatched_at, started_at=rec.started_at, ended_at=rec.ended_at,
            output=rec.to_result().output, stdout_tail=rec.stdout_tail, stderr_tail=rec.stderr_tail,
            requests=rec.arm_requests, put_sent=rec.state in _SENT and rec.run_command_name is not None,
            cleaned=rec.cleaned_at is not None, attempt=rec.attempt, wave=rec.wave,
        )  # fmt: skip

    @on_engine
    async def resume(
        self, run_id: str, spec: RunSpec | None = None, *, observer: FleetObserver | None = None
    ) -> FleetResult:
        """:meth:`resume_start` and wait."""
        return await (await self.resume_start(run_id, spec, observer=observer)).wait()

    @on_engine
    async def rerun(
        self,
        run_id: str,
        spec: RunSpec,
        *,
        states: Sequence[TargetState] = RERUN_STATES,
        options: FleetOptions | None = None,
        observer: FleetObserver | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> FleetResult:
        """A new run of ``spec`` on the targets of ``run_id`` that ended in ``states``."""
        return await (await self.rerun_start(run_id, spec, states=states, options=options, observer=observer,
                                             record=record)).wait()

    @on_engine
    async def rerun_start(
        self,
        run_id: str,
        spec: RunSpec,
        *,
        states: Sequence[TargetState] = RERUN_STATES,
        options: FleetOptions | None = None,
        observer: FleetObserver | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Start a new run of ``spec`` on the targets of ``run_id`` that ended in ``states``; returns at once."""
        old = self.ledger.require_run(run_id)
        picked = [r.target for r in self.ledger.targets(old.id, states)]
        if not picked:
            raise NoTargetsMatched(
                f"run {old.id} has no target in state {', '.join(s.value for s in states)}",
                hint=f"see 'azrun status {old.id}'",
            )
        opts = options or FleetOptions.from_dict(old.options.get("fleet", {}))
        rec = {"rerun_of": old.id, **dict(record or {})}
        return await self.start(picked, spec, options=opts, observer=observer, record=rec)

    @on_engine
    async def cancel(self, run_id: str | None = None, *, wait_s: float = 60.0) -> FleetResult:
        """Cancel a run from anywhere: a live runner on this host is asked (via the ledger) and
        waited for; otherwise the in-flight run commands are deleted here."""
        record = self.ledger.require_run(run_id)
        rid = record.id
        if record.status in ("running", "canceling", "interrupted"):
            self.ledger.set_run_status(rid, "canceling")
        if record.driven_here_by_live_process:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while loop.time() < deadline and self.ledger.run_status(rid) == "canceling":
                await asyncio.sleep(0.2)
            if self.ledger.run_status(rid) != "canceling":
                return self.status(rid).result()
        self.ledger.skip_pending(rid, "run canceled")
        active = self.ledger.targets(rid, (TargetState.DISPATCHING, TargetState.RUNNING))
        await asyncio.gather(*(self._cancel_target(rid, rec) for rec in active))
        if self.ledger.run_status(rid) == "canceling":
            self.ledger.set_run_status(rid, "canceled", ended=True)
        return self.status(rid).result()

    async def _cancel_target(self, rid: str, rec: TargetRecord) -> None:
        name = rec.run_command_name or run_command_name(rid)
        counter = Work(target=rec.target, seq=rec.seq, run_command_name=name, requests=rec.arm_requests)
        opts = FleetOptions()
        done = await delete_run_command(self.client, rec.target, name, sleep=self.clock.sleep, counter=counter.count,
                                        retries=opts.conflict_retries, backoff_s=opts.conflict_backoff_s,
                                        wait_s=opts.delete_wait_s)  # fmt: skip
        if not done.accepted:
            why = done.failure.describe() if done.failure else "unknown"
            self.ledger.update_target(rid, rec.target.resource_id, message=f"cancel failed: {why}",
                                      arm_requests=counter.requests)
            return
        now = self.clock.now()
        self.ledger.update_target(
            rid, rec.target.resource_id, state=TargetState.CANCELED, message="canceled (azrun cancel)",
            ended_at=now, cleaned_at=now if done.gone else None, arm_requests=counter.requests, exit_code=None,
        )  # fmt: skip

    @on_engine
    async def cleanup(
        self,
        *,
        older_than_s: float = 7 * 24 * 3600,
        all_azrun: bool = False,
        machines: Selector | Sequence[Target] | None = None,
        dry_run: bool = False,
    ) -> CleanupReport:
        """Delete azrun's finished run commands (see :mod:`azrun.fleet._cleanup`)."""
        from azrun.targets import Selector

        chosen: Sequence[Target] | None
        if isinstance(machines, Selector):
            sel = await self.select(machines)
            chosen = [*sel.targets, *(s.target for s in sel.skipped)]
        else:
            chosen = machines
        return await cleanup(self.client, self.ledger, older_than_s=older_than_s, all_azrun=all_azrun,
                             machines=chosen, dry_run=dry_run)
