"""A target's live record inside a run, and the error a failed delivery ends with."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from azrun.models import OutputRef, Target, TargetResult, TargetState
from azrun.runcommand import ArmFailure, FailureKind, RunCommandView

__all__ = ["OutcomeUnknown", "Undeliverable", "Work", "works_for"]

_NO_OUTPUT = OutputRef()  # frozen: one shared instance until a target has output


class Undeliverable(Exception):
    """ARM refused the run command (or it was confirmed absent): the target is Undeliverable."""

    def __init__(self, failure: ArmFailure | str) -> None:
        super().__init__(failure.describe() if isinstance(failure, ArmFailure) else failure)
        self.failure = failure

    @property
    def kind(self) -> FailureKind | None:
        return self.failure.kind if isinstance(self.failure, ArmFailure) else None


class OutcomeUnknown(Exception):
    """A PUT may have reached Azure and no GET could say whether it did (Azure unreachable): the
    target is watched as if sent until a GET answers (absent: never sent)."""


@dataclass(eq=False, slots=True)
class Work:
    """A target's live record inside a run (mutable; identity-hashed for the scheduler).

    Slotted, with no per-target event or lock: a run holds one per target for its whole length
    (issue 17: 10,000 targets in one process), so each field costs 10,000 times over.
    """

    target: Target
    seq: int
    run_command_name: str
    state: TargetState = TargetState.PENDING
    exit_code: int | None = None
    message: str = ""
    run_command_id: str | None = None
    dispatched_mono: float | None = None  # claimed (ledger: Dispatching)
    dispatched_at: datetime | None = None
    sent_mono: float | None = None  # the PUT was answered (it may have queued in the throttle before)
    sent_at: datetime | None = None
    started_at: datetime | None = None
    start_mono: float | None = None  # the agent-reported start, on the monotonic clock
    ended_at: datetime | None = None
    deadline: float | None = None
    interval: float = 0.0
    polls: int = 0
    poll_errors: int = 0
    fingerprint: tuple[int, int, int] | None = None
    requests: int = 0
    throttled: int = 0
    output: OutputRef = _NO_OUTPUT
    stdout_tail: str = ""
    stderr_tail: str = ""
    last_view: RunCommandView | None = None
    taken: bool = False  # some path owns finishing this target
    scout: bool = False  # polled at a fixed short interval until the duration is learned
    power_checked: float | None = None  # when the machine's power state was last read (overdue targets)
    put_sent: bool = False  # the run command exists (or may): it must be deleted once finished
    put_attempted: bool = False  # a PUT left the client (cancelling before that sends nothing)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    cleaned: bool = False
    parked: bool = False  # past its deadline while Azure was unreachable: left for a resume
    unconfirmed: bool = False  # the PUT's outcome is unknown until a GET answers
    last_change: float | None = None  # when a poll last saw the instance view change
    unchanged_polls: int = 0  # polls since then that saw no change
    requeues: int = 0  # put back in the queue, provably not sent, while Azure was unreachable
    attempt: int = 1  # delivery attempt (per-target retries)
    wave: int = 0  # the rollout wave the target belongs to

    def reset_for_attempt(self, attempt: int, run_command_name: str, message: str) -> None:
        """Pending again for delivery attempt ``attempt`` under a new run command name (a re-PUT
        of the same name may not run the script again)."""
        self.attempt, self.run_command_name, self.message = attempt, run_command_name, message
        self.state, self.taken, self.exit_code = TargetState.PENDING, False, None
        self.put_sent = self.put_attempted = self.unconfirmed = self.parked = self.scout = False
        self.run_command_id = self.last_view = self.fingerprint = self.last_change = None
        self.dispatched_mono = self.dispatched_at = self.sent_mono = self.sent_at = None
        self.started_at = self.start_mono = self.deadline = self.power_checked = None
        self.polls = self.poll_errors = self.unchanged_polls = 0
        self.interval = 0.0

    def count(self, status: int) -> None:
        """Per-attempt hook of every ARM request for this target (retries included)."""
        self.requests += 1
        if status == 429:
            self.throttled += 1

    def result(self) -> TargetResult:
        return TargetResult(
            target=self.target, state=self.state, exit_code=self.exit_code, message=self.message,
            run_command_id=self.run_command_id, started_at=self.started_at, ended_at=self.ended_at,
            output=self.output, stdout_tail=self.stdout_tail, stderr_tail=self.stderr_tail,
            arm_requests=self.requests, attempt=self.attempt, wave=self.wave,
        )  # fmt: skip


def works_for(targets: Iterable[Target], run_command_name: str) -> list[Work]:
    return [Work(target=t, seq=i, run_command_name=run_command_name) for i, t in enumerate(targets)]
