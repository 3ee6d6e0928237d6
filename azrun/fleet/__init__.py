"""Fleet runs: one script on many machines with SSM-like semantics, over managed Run Commands.

* :class:`Fleet` (``_fleet``): the library surface: ``run`` / ``start`` / ``resume`` / ``rerun`` /
  ``cancel`` / ``cleanup`` / ``status``; :class:`RunHandle` controls a run in progress.
* :class:`FleetOptions`, :class:`Budget`, :class:`PollPolicy` (``_options``): the knobs.
* :class:`Runner` (``_runner``): one run's state machine (dispatch, budgets, canary, watchdog);
  :class:`Work` (``_work``) is a target's live record; ``_deliver`` sends one PUT.
* :class:`PollScheduler` (``_poll``): completion polling on a schedule within the read budget.
* :class:`FleetObserver`, :class:`ProgressSnapshot`, :class:`Scrubber` (``_events``).
* :func:`respec` (``_spec``): rebuild a run's spec for resume/rerun; :func:`cleanup` (``_cleanup``).
"""

from __future__ import annotations

from azrun.fleet._cleanup import CleanupReport, cleanup
from azrun.fleet._events import FleetObserver, NullObserver, ProgressSnapshot, RecordingObserver, Scrubber
from azrun.fleet._fleet import RERUN_STATES, Fleet, RunHandle, RunStatus
from azrun.fleet._options import Budget, FleetOptions, PollPolicy
from azrun.fleet._poll import DurationStats, PollScheduler, first_delay, next_delay
from azrun.fleet._runner import WATCHDOG_MESSAGE, Runner
from azrun.fleet._spec import check_same_spec, respec
from azrun.fleet._work import Undeliverable, Work

__all__ = [
    "RERUN_STATES",
    "WATCHDOG_MESSAGE",
    "Budget",
    "CleanupReport",
    "DurationStats",
    "Fleet",
    "FleetObserver",
    "FleetOptions",
    "NullObserver",
    "PollPolicy",
    "PollScheduler",
    "ProgressSnapshot",
    "RecordingObserver",
    "RunHandle",
    "RunStatus",
    "Runner",
    "Scrubber",
    "Undeliverable",
    "Work",
    "check_same_spec",
    "cleanup",
    "first_delay",
    "next_delay",
    "respec",
]
