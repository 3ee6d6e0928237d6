"""What a fleet run tells the outside world while it goes: the observer protocol and snapshots.

The CLI prints from these; a Function or runbook can log them; tests collect them. Observers
are called on the event loop and must not block (queue the work if it is slow). Text handed
to observers has already passed through the run's :class:`Scrubber`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from azrun.models import Target, TargetResult

__all__ = ["FleetObserver", "NullObserver", "ProgressSnapshot", "RecordingObserver", "Scrubber"]


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

    @property
    def finished(self) -> int:
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
