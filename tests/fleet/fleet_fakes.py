"""A fleet without a simulator: a handler-backed fake :class:`~azrun.fleet.Dispatcher` and a
virtual-time event loop, so the fleet's decisions are tested in milliseconds for runs of hours.

* :class:`VirtualLoop` is an asyncio loop whose clock jumps to the next timer whenever nothing
  is ready (the selector is asked for real I/O with a zero timeout first). ``asyncio.sleep``,
  ``wait_for`` and every timer run on virtual time; :func:`vrun` runs a coroutine on one.
* :class:`FakeAzure` models machines the way recorded Azure behaves: the agent starts a script
  ``start_s`` after the PUT, reports every ``cadence_s`` (the view shows the state of the last
  report), a DELETE lasts ``delete_s`` while the run command is listed ``Deleting`` (and still
  counts toward the machine's 25), the handler kills a script at ``timeoutInSeconds``.
* Like httpx's ``MockTransport``, a ``handler(call) -> Fault | None`` sees every request first:
  ``None`` lets the model answer, a :class:`Fault` makes it fail (not sent, reset, 5xx, 409 ...,
  applied or not) or answer late.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from azrun.errors import AzureFailure, FailureKind, RunCommandError, SubmitNotSent, SubmitOutcomeUnknown
from azrun.fleet import FleetOptions, PollPolicy
from azrun.fleet._dispatch import LoopClock
from azrun.fleet._events import NullObserver, Scrubber
from azrun.fleet._output import InstanceViewOutput
from azrun.fleet._runner import Runner
from azrun.fleet._work import Work, works_for
from azrun.ledger import Ledger
from azrun.models import FleetResult, RunId, RunSpec, Target, TargetKind
from azrun.runcommand import RequestCounter, RunCommandInfo, RunCommandView, run_command_name

T = TypeVar("T")
SUB = "11111111-1111-4111-8111-111111111111"
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


# -- virtual time ---------------------------------------------------------------------------------
class _JumpSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Real I/O first; when nothing is ready and a timer is due later, jump the clock to it."""

    loop: VirtualLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events  # type: ignore[no-any-return]
        if self.loop.executor_jobs or timeout is None:
            return super().select(0.01 if timeout is None else min(timeout, 0.01))  # type: ignore[no-any-return]
        if self.loop.settle_s:  # give other threads (a RunLedger's writer) a moment to answer first
            events = super().select(self.loop.settle_s)
            if events:
                return events  # type: ignore[no-any-return]
        self.loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    def __init__(self, *, settle_s: float = 0.0) -> None:
        selector = _JumpSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        self.executor_jobs = 0
        self.settle_s = settle_s

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        self.executor_jobs += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(lambda _f: setattr(self, "executor_jobs", self.executor_jobs - 1))
        return future


def vrun(main: Callable[[], Coroutine[Any, Any, T]], *, settle_s: float = 0.0) -> T:
    """Run ``main()`` on a fresh virtual-time loop (``settle_s``: real seconds other threads get
    to answer before the clock jumps; for code that waits on a thread, like ``Fleet``'s ledger)."""
    loop = VirtualLoop(settle_s=settle_s)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- the fake Azure ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request the fleet made: ``op`` is PUT, GET, DELETE, LIST or POWER; ``t`` virtual seconds."""

    op: str
    machine: str
    name: str
    t: float
    body: dict[str, Any] | None = None
    n: int = 0  # how many requests of this op on this run command came before


@dataclass(frozen=True)
class Fault:
    """What a handler makes of a request. ``applied``: the request took effect before failing."""

    kind: str  # "unreachable" | "reset" | "status" | "late"
    status: int | None = None
    code: str = ""
    message: str = ""
    applied: bool = False
    delay_s: float = 0.0

    @classmethod
    def unreachable(cls) -> Fault:
        """Connection refused: nothing left this host."""
        return cls("unreachable", message="Cannot connect to host management.azure.com")

    @classmethod
    def reset(cls, *, applied: bool) -> Fault:
        """Sent, then the connection dropped: no answer."""
        return cls("reset", message="Connection reset by peer", applied=applied)

    @classmethod
    def http(cls, status: int, code: str, message: str = "", *, applied: bool = False) -> Fault:
        return cls("status", status, code, message or code, applied)

    @classmethod
    def conflict(cls) -> Fault:
        return cls.http(409, "Conflict", "Another execution is in progress on the VM.")

    @classmethod
    def late(cls, seconds: float) -> Fault:
        """Answer normally, ``seconds`` later."""
        return cls("late", delay_s=seconds)


Handler = Callable[[Call], "Fault | None"]


@dataclass
class Script:
    """How a machine runs what it is sent (virtual seconds)."""

    start_s: float = 9.5  # PUT -> the agent starts the script (never, with math.inf)
    duration_s: float = 5.0
    exit_code: int = 0
    stdout: str = "ok"
    power: str = "running"
    hung: bool = False  # the agent never reports completion (the script runs on)
    chatty: bool = True  # prints a line per report interval while it runs


@dataclass
class _Command:
    name: str
    created: float
    start: float
    timeout_s: float
    script: Script
    tags: dict[str, str]
    phase: float
    deleting_since: float | None = None
    killed: float | None = None

    @property
    def natural_end(self) -> float:
        if self.script.hung:
            return math.inf
        end = self.start + self.script.duration_s
        return min(end, self.start + self.timeout_s) if self.timeout_s > 0 else end


class FakeAzure:
    """The fake dispatcher (see the module docstring). ``scripts`` by machine name (default: ``script``)."""

    def __init__(
        self,
        *,
        script: Script | None = None,
        scripts: dict[str, Script] | None = None,
        cadence_s: float = 15.0,
        delete_s: float = 12.0,
        handler: Handler | None = None,
        cap: int = 25,
    ) -> None:
        self.script = script or Script()
        self.scripts = dict(scripts or {})
        self.cadence_s = cadence_s
        self.delete_s = delete_s
        self.handler = handler
        self.cap = cap
        self.calls: list[Call] = []
        self.commands: dict[str, dict[str, _Command]] = {}
        self.executions: list[tuple[str, str, float]] = []  # (machine, name, started at)
        self._counts: dict[tuple[str, str, str], int] = {}

    def __repr__(self) -> str:
        return f"FakeAzure(calls={len(self.calls)}, executions={len(self.executions)})"

    # -- helpers for tests ---------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def ops(self, op: str, machine: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.op == op and (machine is None or c.machine == machine)]

    def runs_on(self, machine: str) -> int:
        return sum(1 for m, _, _ in self.executions if m == machine)

    def listed(self, machine: str) -> list[str]:
        self._expire(machine)
        return sorted(self.commands.get(machine, {}))

    def plant(self, machine: str, name: str, *, deleting_for: float = 0.0, tags: dict[str, str] | None = None) -> None:
        """A finished run command already on ``machine`` (being deleted for ``deleting_for`` s)."""
        now = self.now()
        cmd = _Command(name, now - 100, now - 90, 0, Script(duration_s=1), dict(tags or {}), 0.0)
        if deleting_for:
            cmd.deleting_since = now - self.delete_s + deleting_for
        self.commands.setdefault(machine, {})[name] = cmd

    # -- the model -------------------------------------------------------------------------------
    def _script(self, machine: str) -> Script:
        return self.scripts.get(machine, self.script)

    def _expire(self, machine: str) -> None:
        now = self.now()
        cmds = self.commands.get(machine, {})
        for name in [n for n, c in cmds.items() if c.deleting_since is not None and now >= c.deleting_since + self.delete_s]:
            del cmds[name]

    def _reported(self, cmd: _Command, t: float) -> float:
        """When the agent's next report after ``t`` goes out (the view shows it from then)."""
        if self.cadence_s <= 0:
            return t
        k = math.ceil((t - cmd.created - cmd.phase) / self.cadence_s - 1e-9)
        return cmd.created + cmd.phase + max(0, k) * self.cadence_s

    def _wall(self, t: float) -> datetime:
        return (EPOCH + timedelta(seconds=t)).replace(microsecond=0)

    def _view(self, machine: str, cmd: _Command) -> RunCommandView:
        now = self.now()
        end = cmd.natural_end if cmd.killed is None else min(cmd.natural_end, cmd.killed)
        started = math.isfinite(cmd.start) and cmd.start <= end and self._reported(cmd, cmd.start) <= now
        ended = started and math.isfinite(end) and self._reported(cmd, end) <= now
        rid = f"{_rid(machine)}/runCommands/{cmd.name}"
        provisioning = "Deleting" if cmd.deleting_since is not None else ("Succeeded" if ended else "Creating")
        if not started:
            return RunCommandView(rid, cmd.name, provisioning, "Pending", "", None, tags=cmd.tags)
        # the agent appends the output at each report: the view grows every cadence while running
        ticks = 1 if self.cadence_s <= 0 else int((now - self._reported(cmd, cmd.start)) // self.cadence_s) + 1
        out = cmd.script.stdout if ended else "".join(f"progress {i}\n" for i in range(ticks if cmd.script.chatty else 0))
        if not ended:
            return RunCommandView(rid, cmd.name, provisioning, "Running", "Execution in progress", None, out, "",
                                  self._wall(cmd.start), None, cmd.tags)
        if cmd.killed is not None and cmd.killed < cmd.natural_end:
            return RunCommandView(rid, cmd.name, provisioning, "Canceled", "Execution canceled", None, out, "",
                                  self._wall(cmd.start), self._wall(end), cmd.tags)
        if cmd.timeout_s > 0 and cmd.script.duration_s > cmd.timeout_s:
            return RunCommandView(rid, cmd.name, "Failed", "Failed", "Execution failed: exit status=-1", -1, out, "",
                                  self._wall(cmd.start), self._wall(end), cmd.tags)
        code = cmd.script.exit_code
        state = "Succeeded" if code == 0 else "Failed"
        return RunCommandView(rid, cmd.name, provisioning if code == 0 else "Failed", state,
                              "Execution completed" if code == 0 else f"exit status={code}", code, out, "",
                              self._wall(cmd.start), self._wall(end), cmd.tags)

    # -- the protocol ----------------------------------------------------------------------------
    async def _enter(self, op: str, target: Target, name: str, body: dict[str, Any] | None,
                     counter: RequestCounter | None) -> Fault | None:
        key = (op, target.name, name)
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        call = Call(op, target.name, name, self.now(), body, n)
        self.calls.append(call)
        fault = self.handler(call) if self.handler else None
        if fault is not None and fault.kind == "late":
            await asyncio.sleep(fault.delay_s)
            fault = None
        await asyncio.sleep(0)
        if counter is not None and (fault is None or fault.kind == "status"):
            counter(fault.status or 500 if fault else 200)
        return fault

    @staticmethod
    def _failure(fault: Fault) -> AzureFailure:
        if fault.kind == "unreachable":
            return AzureFailure(FailureKind.NOT_SENT, None, "ServiceRequestError", fault.message)
        if fault.kind == "reset":
            return AzureFailure(FailureKind.UNKNOWN_OUTCOME, None, "ServiceResponseError", fault.message)
        status = fault.status or 500
        kind = {409: FailureKind.CONFLICT if fault.code == "Conflict" else FailureKind.NOT_ALLOWED,
                403: FailureKind.FORBIDDEN, 404: FailureKind.NOT_FOUND, 429: FailureKind.THROTTLED}.get(
            status, FailureKind.OTHER)
        return AzureFailure(kind, status, fault.code, fault.message)

    def _raise(self, fault: Fault, what: str) -> None:
        failure = self._failure(fault)
        raise RunCommandError(f"{what}: {failure.describe()}", failure=failure)

    async def submit(self, target: Target, name: str, body: dict[str, Any], *, counter: RequestCounter | None = None,
                     on_send: Callable[[], None] | None = None) -> RunCommandView:
        fault = await self._enter("PUT", target, name, body, counter)
        if (fault is None or fault.kind != "unreachable") and on_send is not None:
            on_send()
        if fault is not None and not fault.applied:
            failure = self._failure(fault)
            maybe = fault.kind == "reset" or (failure.status or 0) >= 500
            if maybe:
                raise SubmitOutcomeUnknown("PUT may have been applied", failure=AzureFailure(
                    FailureKind.UNKNOWN_OUTCOME, failure.status, failure.code, failure.message))
            raise SubmitNotSent(f"PUT not applied: {failure.describe()}", failure=failure)
        view = self._apply_put(target, name, body)
        if fault is not None:  # applied, then no (good) answer
            failure = self._failure(fault)
            raise SubmitOutcomeUnknown("PUT may have been applied", failure=AzureFailure(
                FailureKind.UNKNOWN_OUTCOME, failure.status, failure.code, failure.message))
        return view

    def _apply_put(self, target: Target, name: str, body: dict[str, Any]) -> RunCommandView:
        machine = target.name
        self._expire(machine)
        cmds = self.commands.setdefault(machine, {})
        script = self._script(machine)
        if script.power != "running":
            failure = AzureFailure(FailureKind.NOT_ALLOWED, 409, "OperationNotAllowed",
                                   "Cannot modify extensions in the VM when the VM is not running.")
            raise SubmitNotSent("PUT refused", failure=failure)
        if name not in cmds and len(cmds) >= self.cap:
            failure = AzureFailure(FailureKind.NOT_ALLOWED, 409, "OperationNotAllowed",
                                   f"The maximum number of managed run commands ({self.cap}) has been reached for VM "
                                   f"'{machine}'. Delete unused run commands and retry.")
            raise SubmitNotSent("PUT refused", failure=failure)
        now = self.now()
        props = body.get("properties", {})
        cmd = _Command(name, now, now + script.start_s, float(props.get("timeoutInSeconds") or 0), script,
                       dict(body.get("tags") or {}), 0.0)
        cmds[name] = cmd
        if math.isfinite(cmd.start):
            self.executions.append((machine, name, cmd.start))
        return RunCommandView(f"{_rid(machine)}/runCommands/{name}", name, "Creating", tags=cmd.tags)

    async def get(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> RunCommandView | None:
        fault = await self._enter("GET", target, name, None, counter)
        if fault is not None:
            self._raise(fault, "GET failed")
        self._expire(target.name)
        cmd = self.commands.get(target.name, {}).get(name)
        return None if cmd is None else self._view(target.name, cmd)

    async def delete(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> bool:
        fault = await self._enter("DELETE", target, name, None, counter)
        if fault is not None and not fault.applied:
            self._raise(fault, "DELETE failed")
        self._expire(target.name)
        cmd = self.commands.get(target.name, {}).get(name)
        if cmd is None:
            return False
        now = self.now()
        if cmd.deleting_since is None:
            cmd.deleting_since = now
            if cmd.killed is None and now < cmd.natural_end:
                cmd.killed = now
        if self.delete_s <= 0:
            self._expire(target.name)
        if fault is not None:
            self._raise(fault, "DELETE failed after it was applied")
        return True

    async def list(self, target: Target, *, counter: RequestCounter | None = None) -> list[RunCommandInfo]:
        fault = await self._enter("LIST", target, "", None, counter)
        if fault is not None:
            self._raise(fault, "LIST failed")
        self._expire(target.name)
        out = []
        for cmd in self.commands.get(target.name, {}).values():
            view = self._view(target.name, cmd)
            out.append(RunCommandInfo(cmd.name, view.id, cmd.tags, view.execution_state, view.end_time,
                                      view.provisioning_state))
        return out

    async def power_state(self, target: Target, *, counter: RequestCounter | None = None) -> str | None:
        fault = await self._enter("POWER", target, "", None, counter)
        if fault is not None:
            self._raise(fault, "power state unknown")
        return self._script(target.name).power


# -- targets and a runner over them ------------------------------------------------------------------
def _rid(name: str, rg: str = "rg") -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"


def vm(name: str, *, tags: dict[str, str] | None = None, location: str = "westeurope", rg: str = "rg",
       os: str = "linux", power: str = "running") -> Target:
    return Target(_rid(name, rg), name, TargetKind.VM, SUB, rg, location, os, power, vm_name=name,
                  tags=tuple(sorted((tags or {}).items())))


def vms(n: int, **kw: Any) -> list[Target]:
    return [vm(f"vm-{i:03d}", **kw) for i in range(1, n + 1)]


#: Poll settings of a real run (defaults) are what these tests exercise; only the budget is wide.
DEFAULT_POLL = PollPolicy()


def options(**kw: Any) -> FleetOptions:
    kw.setdefault("conflict_backoff_s", 2.0)
    kw.setdefault("progress_interval_s", 5.0)
    return FleetOptions.make(**kw)


@dataclass
class Harness:
    """A run over a fake Azure, a real ledger in ``tmp``, and the loop's (virtual) clock."""

    azure: FakeAzure
    tmp: Path
    ledger: Ledger = field(init=False)
    observer: Any = field(default_factory=NullObserver)

    def __post_init__(self) -> None:
        self.ledger = Ledger.open(self.tmp / "state")

    def create(self, targets: list[Target], spec: RunSpec, opts: FleetOptions, run_id: str = "r-test") -> list[Work]:
        name = run_command_name(run_id)
        plan = opts.plan()
        waves = plan.assign(targets) if plan is not None else None  # as Fleet.start records them
        self.ledger.create_run(run_id, spec=spec, targets=targets, waves=waves,
                               options={"fleet": opts.to_dict(), "run_command_name": name})
        works = works_for(targets, name)
        for work, wave in zip(works, waves or [0] * len(works), strict=True):
            work.wave = wave
        return works

    def runner(self, works: list[Work], spec: RunSpec | None, opts: FleetOptions, run_id: str = "r-test") -> Runner:
        return Runner(
            run_id=RunId(run_id), spec=spec, timeout_s=spec.timeout_s if spec else 3600, works=works,
            ledger=self.ledger, client=self.azure, output=InstanceViewOutput(), options=opts,
            observer=self.observer, scrub=Scrubber([]),
            clock=LoopClock(epoch=EPOCH + timedelta(seconds=asyncio.get_running_loop().time())),
        )  # fmt: skip

    async def run(self, targets: list[Target], spec: RunSpec | str = "echo ok", opts: FleetOptions | None = None,
                  *, control: Callable[[Runner], Coroutine[Any, Any, None]] | None = None) -> FleetResult:
        spec = spec if isinstance(spec, RunSpec) else RunSpec(script=spec, timeout_s=3600)
        opts = opts or options()
        runner = self.runner(self.create(targets, spec, opts), spec, opts)
        self.last = runner
        if control is None:
            return await runner.execute()
        task = asyncio.get_running_loop().create_task(runner.execute())
        await control(runner)
        return await task


async def until(predicate: Callable[[], bool], *, step: float = 0.5, limit: float = 36000.0) -> float:
    """Wait (virtual time) until ``predicate()``; returns the virtual time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > limit:
            raise AssertionError("condition never met")
        await asyncio.sleep(step)
    return loop.time() - start
