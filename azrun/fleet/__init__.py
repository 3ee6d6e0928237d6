"""Fleet runs: one script on many machines with SSM-like semantics, over managed Run Commands.

* :class:`Fleet` (``_fleet``): the library surface: ``run`` / ``start`` / ``resume`` / ``rerun`` /
  ``cancel`` / ``cleanup`` / ``status``; :class:`RunHandle` controls a run in progress.
* :class:`FleetOptions`, :class:`Budget`, :class:`PollPolicy` (``_options``): the knobs;
  :class:`WavePlan` (``_waves``): rollout waves, soak and per-wave error budgets.
* :class:`Runner` (``_runner``): one run's state machine (dispatch, budgets, canary, watchdog);
  :class:`Work` (``_work``) is a target's live record; ``_deliver`` sends one PUT.
* :class:`PollScheduler` (``_poll``): completion polling on a schedule within the read budget.
* :class:`FleetObserver`, :class:`ProgressSnapshot`, :class:`Scrubber`, the typed events of
  ``handle.events()`` (``_events``); :class:`RunHandle` and the cancellation contract (``_handle``).
* :func:`respec` (``_spec``): rebuild a run's spec for resume/rerun; :func:`cleanup` (``_cleanup``).
* :class:`Dispatcher` and :class:`Clock` (``_dispatch``): the seams a run goes through (Azure's
  run commands, time); tests plug a fake Azure and a virtual clock in.
* One target's steps as standalone functions (``_steps``): :func:`deliver`,
  :func:`read_run_command`, :func:`delete_run_command`.
"""

from __future__ import annotations

from azrun.fleet._cleanup import CleanupReport, cleanup
from azrun.fleet._dispatch import Clock, Dispatcher, LoopClock, SystemClock
from azrun.fleet._events import (
    FleetEvent,
    FleetObserver,
    NullObserver,
    OutputLine,
    Progress,
    ProgressSnapshot,
    RecordingObserver,
    RunSummary,
    Scrubber,
    TargetDispatched,
    TargetFinished,
    TargetRunning,
)
from azrun.fleet._fleet import RERUN_STATES, Fleet, RunDefaults, RunStatus
from azrun.fleet._handle import DETACH_GRACE_S, RunHandle
from azrun.fleet._options import Budget, FleetOptions, PollPolicy
from azrun.fleet._poll import DurationStats, PollScheduler, first_delay, next_delay
from azrun.fleet._runner import WATCHDOG_MESSAGE, Runner
from azrun.fleet._spec import check_same_spec, respec
from azrun.fleet._steps import DeleteResult, Reading, delete_run_command, deliver, read_run_command
from azrun.fleet._waves import WavePlan
from azrun.fleet._work import OutcomeUnknown, Undeliverable, Work

__all__ = [
    "DETACH_GRACE_S",
    "RERUN_STATES",
    "WATCHDOG_MESSAGE",
    "Budget",
    "CleanupReport",
    "Clock",
    "DeleteResult",
    "Dispatcher",
    "DurationStats",
    "Fleet",
    "FleetEvent",
    "FleetObserver",
    "FleetOptions",
    "LoopClock",
    "NullObserver",
    "OutcomeUnknown",
    "OutputLine",
    "PollPolicy",
    "PollScheduler",
    "Progress",
    "ProgressSnapshot",
    "Reading",
    "RecordingObserver",
    "RunDefaults",
    "RunHandle",
    "RunStatus",
    "RunSummary",
    "Runner",
    "Scrubber",
    "SystemClock",
    "TargetDispatched",
    "TargetFinished",
    "TargetRunning",
    "Undeliverable",
    "WavePlan",
    "Work",
    "check_same_spec",
    "cleanup",
    "delete_run_command",
    "deliver",
    "first_delay",
    "next_delay",
    "read_run_command",
    "respec",
]
