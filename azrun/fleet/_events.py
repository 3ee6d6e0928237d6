"""What a fleet run tells the outside world while it goes: the observer protocol and snapshots.

The CLI prints from these; a Function or runbook can log them; tests collect them. Observers
are called on the run's event loop (azrun's engine thread with ``engine_loop="private"``) and
must not block (queue the work if it is slow). Text handed to observers has already passed
through the run's :class:`Scrubber`. ``handle.events()`` may be iterated from any loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from azrun._engine import call_soon
from azrun.models import FleetResult, Target, TargetResult, TargetState

__all__ = [
    "EventHub",
    "FleetEvent",
    "FleetObserver",
    "NullObserver",
    "OutputLine",
    "Progress",
    "ProgressSnapshot",
    "RecordingObserver",
    "RunSummary",
    "Scrubber",
    "TargetDispatched",
    "TargetFinished",
    "TargetRunning",
]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A cheap picture of a run, about once a second."""

    run_id: str
    elapsed_s: float
    total: int
    counts: dict[str, int]
    dispatched: int
    dispatch_rate_per_s: float
    eta_s: float | None
    polls_queued: int
    arm_requests: int
    throttled_429: int
    throttle: Any = None  # azrun.throttle.ThrottleMetrics when the factory has a throttle
    slowest: tuple[tuple[str, float], ...] = ()  # (target name, seconds running), longest first
    stopped_reason: str | None = None
    wave: int | None = None  # the rollout wave being run (0-based), None without waves
    waves: int = 0  # how many waves the rollout has
    soak_left_s: float | None = None  # seconds of soak left before the next wave, while soaking
    retrying: int = 0  # targets waiting for their next delivery attempt

    @property
    def finished(self) -> int:
        """How many targets are in a final state."""
        from azrun.models import TERMINAL_STATES

        return sum(n for state, n in self.counts.items() if state in {s.value for s in TERMINAL_STATES})


@runtime_checkable
class FleetObserver(Protocol):
    """Receives state changes, streamed output lines and progress snapshots."""

    def on_target(self, result: TargetResult) -> None:
        """A target changed state (``result.state``); terminal results carry output tails."""

    def on_line(self, target: Target, stream: str, line: str) -> None:
        """One line of a target's stdout/stderr, as the output tailer streams it."""

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        """Periodic progress."""


class NullObserver:
    """Ignores everything."""

    def on_target(self, result: TargetResult) -> None:
        pass

    def on_line(self, target: Target, stream: str, line: str) -> None:
        pass

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        pass


@dataclass
class RecordingObserver:
    """Keeps everything it is told (tests, and callers that want the event history)."""

    targets: list[TargetResult] = field(default_factory=list)
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    progress: list[ProgressSnapshot] = field(default_factory=list)

    def on_target(self, result: TargetResult) -> None:
        self.targets.append(result)

    def on_line(self, target: Target, stream: str, line: str) -> None:
        self.lines.append((target.name, stream, line))

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        self.progress.append(snapshot)


class Scrubber:
    """Replaces protected parameter values and the run-as password in any text with ``***``.

    Azure never echoes protected parameters, but a script may print one; whatever reaches the
    ledger, a log line, an observer or the terminal passes through here first.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text or not self._secrets:
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} secrets)"


# -- typed events for ``async for event in handle.events()`` -------------------------------------------
@dataclass(frozen=True, slots=True)
class TargetDispatched:
    """A target's run command is about to be sent (its ledger row says Dispatching)."""

    result: TargetResult

    @property
    def target(self) -> Target:
        """The machine."""
        return self.result.target


@dataclass(frozen=True, slots=True)
class TargetRunning:
    """Azrun accepted the run command; the script runs (or is about to) on the machine."""

    result: TargetResult

    @property
    def target(self) -> Target:
        """The machine."""
        return self.result.target


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of a target's ``stdout`` or ``stderr`` (secrets already masked)."""

    target: Target
    stream: str
    line: str


@dataclass(frozen=True, slots=True)
class TargetFinished:
    """A target reached its final state (Succeeded, Failed, TimedOut, Canceled, Skipped, Undeliverable)."""

    result: TargetResult

    @property
    def target(self) -> Target:
        """The machine."""
        return self.result.target


@dataclass(frozen=True, slots=True)
class Progress:
    """About once a second: counts, rates, throttle waits."""

    snapshot: ProgressSnapshot


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The last event: every target's result and how the run ended (``succeeded``, ``failed``,
    ``canceled``, or ``interrupted``: detached, resumable)."""

    result: FleetResult
    status: str


FleetEvent = TargetDispatched | TargetRunning | OutputLine | TargetFinished | Progress | RunSummary
"""Everything :meth:`azrun.fleet.RunHandle.events` yields."""


class EventHub:
    """An observer that forwards to ``inner`` and keeps the run's events for ``events()``.

    Every subscriber sees every event from the start of the run (late subscribers replay the
    history), ending with :class:`RunSummary`. Output lines past ``max_events`` are counted in
    :attr:`dropped` instead of kept, so a chatty run cannot grow memory without bound. A
    :class:`Progress` supersedes the one before it: the history keeps only the latest (a
    subscriber that has not reached the older one yet skips it), since each carries the
    throttle's metrics and a long run pushes one a second (issue 17: memory per target).
    """

    def __init__(self, inner: FleetObserver, *, max_events: int = 200_000) -> None:
        self.inner = inner
        self.max_events = max_events
        self.dropped = 0
        self._events: list[FleetEvent | None] = []  # None: a superseded Progress
        self._progress_at: int | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closed = False
        self._lock = threading.Lock()  # the run pushes on its loop; subscribers may be on another

    def __repr__(self) -> str:
        return f"EventHub(events={len(self._events)}, dropped={self.dropped}, closed={self._closed})"

    def _push(self, event: FleetEvent) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._events) >= self.max_events and isinstance(event, OutputLine | Progress):
                self.dropped += 1
                return
            if isinstance(event, Progress):
                if self._progress_at is not None:
                    self._events[self._progress_at] = None
                self._progress_at = len(self._events)
            self._events.append(event)
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def on_target(self, result: TargetResult) -> None:
        self.inner.on_target(result)
        if result.state is TargetState.DISPATCHING:
            self._push(TargetDispatched(result))
        elif result.state is TargetState.RUNNING:
            self._push(TargetRunning(result))
        elif result.state.terminal:
            self._push(TargetFinished(result))

    def on_line(self, target: Target, stream: str, line: str) -> None:
        self.inner.on_line(target, stream, line)
        self._push(OutputLine(target, stream, line))

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        self.inner.on_progress(snapshot)
        self._push(Progress(snapshot))

    def close(self, summary: RunSummary | None) -> None:
        """The run ended: push the summary (if any) and end every subscription."""
        if summary is not None:
            self._push(summary)
        with self._lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    async def subscribe(self) -> AsyncIterator[FleetEvent]:
        index = 0
        loop = asyncio.get_running_loop()
        while True:
            while index < len(self._events):
                event = self._events[index]
                index += 1
                if event is not None:
                    yield event
            with self._lock:
                if index < len(self._events):
                    continue
                if self._closed:
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter


def _set(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    """Wake each subscriber on its own loop (at once when that is this thread's loop)."""
    for loop, waiter in waiters:
        call_soon(loop, _set, waiter)
