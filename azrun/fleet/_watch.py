"""Watching running targets: scheduled polls, the watchdog, stopped machines, lost contact.

* Each poll is one ``GET $expand=instanceView``, scheduled (:mod:`._poll`) from what finished
  targets took, never faster than the agent reports while a script has not started.
* The watchdog counts the run's timeout from the agent-reported start; a target never started
  within ``start_timeout_s`` of its PUT is cancelled as such (:mod:`._deadline`).
* A read Azure does not answer (unreachable, 5xx, throttled past every retry) fails nothing:
  the target stays in flight, its reads back off, and past its deadline it is left for a resume
  (``parked``); once nothing is left to watch and contact is still lost, the run detaches.
"""

from __future__ import annotations

import logging

from azrun.fleet._contact import unreachable
from azrun.fleet._deadline import WATCHDOG_MESSAGE, deadline, never_started_message, start_on_clock
from azrun.fleet._finish import RunCore
from azrun.fleet._poll import PollScheduler, first_delay, next_delay, unstarted_delay
from azrun.fleet._work import Work
from azrun.models import TargetState
from azrun.runcommand import ArmFailure, FailureKind, RunCommandView, classify_error, interpret
from azrun.throttle import TokenBucket

__all__ = ["Watching"]

_LOG = logging.getLogger(__name__)
_POLL_ERROR_LIMIT = 6


def _started(view: RunCommandView) -> bool:
    return view.start_time is not None or view.execution_state.lower() not in ("", "pending", "unknown")


class Watching(RunCore):
    """Polls, deadlines and the watchdog (see the module docstring)."""

    # -- deadlines -----------------------------------------------------------------------------
    def _note_start(self, work: Work, view: RunCommandView | None) -> None:
        """Set the deadline from the agent-reported start (or the never-started limit)."""
        if view is not None and view.start_time is not None and work.start_mono is None and work.sent_mono is not None:
            work.start_mono = start_on_clock(reported=view.start_time, now_wall=self.clock.now(),
                                             now_mono=self._clock(), sent_mono=work.sent_mono)
            if work.sent_at is not None:
                self._start_stats.add(max(0.0, (view.start_time - work.sent_at).total_seconds()))
        elif view is not None and work.start_mono is None and work.sent_mono is not None and _started(view):
            work.start_mono = self._clock()  # running, but no start time reported: count from now
        if work.start_mono is not None and not self._start_seen:
            self._start_seen = True
            self._replan_starts()
        work.deadline, _ = deadline(
            sent_mono=work.sent_mono, start_mono=work.start_mono, timeout_s=self._timeout_s,
            grace_s=self._opts.grace_s(self._timeout_s), start_timeout_s=self._opts.start_timeout_s,
        )  # fmt: skip

    async def _watchdog(self, work: Work) -> None:
        if work.start_mono is None:
            await self._cancel_one(work, TargetState.UNDELIVERABLE, never_started_message(self._opts.start_timeout_s),
                                   delivery=True)
        else:
            await self._cancel_one(work, TargetState.TIMED_OUT, WATCHDOG_MESSAGE)

    # -- scheduling ------------------------------------------------------------------------------
    def _scheduler(self, subscription: str) -> PollScheduler[Work]:
        sched = self._schedulers.get(subscription)
        if sched is None:
            policy = self._opts.poll
            refill = max(0.1, self._read_refill * policy.read_share)
            budget = TokenBucket(max(1.0, policy.burst), refill, name=f"polls/{subscription}", clock=self._clock,
                                 async_sleep=self.clock.sleep)
            sched = PollScheduler(self._poll, budget=budget, max_inflight=policy.max_inflight,
                                  clock=self._clock, name=subscription)
            self._schedulers[subscription] = sched
            sched.start()
        return sched

    def _schedule(self, work: Work, delay_s: float) -> None:
        self._scheduler(work.target.subscription_id.lower()).schedule(work, delay_s)

    def _reschedule(self, work: Work, delay_s: float) -> None:
        self._schedule(work, delay_s)

    def _first_poll(self, work: Work) -> None:
        """Schedule the first read of a target whose PUT was answered."""
        policy = self._opts.poll
        if self._scouts_left > 0 and len(self._stats) < policy.learn_after:
            self._scouts_left -= 1
            work.scout = True
            self._scout_works.append(work)
        work.interval = first_delay(policy, self._stats)
        if work.scout:
            work.interval = min(work.interval, policy.scout_interval_s)
        elif len(self._stats) < policy.learn_after and self._scouts_out():
            # scouts are out: wait for what they learn (``_replan`` pulls this in) instead of guessing
            work.interval = max(work.interval, policy.max_interval_s)
        self._schedule(work, work.interval)

    # -- one poll -------------------------------------------------------------------------------
    async def _poll(self, work: Work) -> None:
        if work.taken or self._detach or work.parked:
            return
        try:
            view = await self._client.get(work.target, work.run_command_name, counter=work.count)
        except Exception as exc:
            await self._poll_failed(work, classify_error(exc))
            return
        self._contact.ok()
        if work.taken:
            return
        work.poll_errors = 0
        work.polls += 1
        if view is None:
            if work.unconfirmed:
                await self._finish(work, TargetState.UNDELIVERABLE, None,
                                   "the PUT was not applied (read back after Azure answered it with an error: absent)",
                                   None, deleted=True)
                return
            await self._finish(work, TargetState.CANCELED, None,
                               "the run command (or its machine) was deleted while it ran (canceled)", work.last_view,
                               deleted=True)  # fmt: skip
            return
        work.unconfirmed = False
        work.last_view = view
        work.started_at = view.start_time or work.started_at
        self._note_start(work, view)
        outcome = interpret(view, self._timeout_s)
        if outcome is not None:
            await self._finish(work, outcome.state, outcome.exit_code, outcome.message, view)
            return
        now = self._clock()
        if work.deadline is not None and now >= work.deadline:
            await self._watchdog(work)
            return
        if self._power_check_due(work, now) and await self._machine_gone(work):
            return
        self._next_poll(work, view, now)

    def _next_poll(self, work: Work, view: RunCommandView, now: float) -> None:
        policy = self._opts.poll
        fingerprint = (len(view.output), len(view.error), hash((view.output[-64:], view.error[-64:])))
        growing = work.fingerprint is not None and fingerprint != work.fingerprint
        if growing:
            if work.last_change is not None and work.unchanged_polls >= 1:
                self._cadence.observe(now - work.last_change)
            work.last_change, work.unchanged_polls = now, 0
        elif work.fingerprint is not None:
            work.unchanged_polls += 1
        work.fingerprint = fingerprint
        elapsed = 0.0 if work.sent_mono is None else now - work.sent_mono
        until = None if work.deadline is None else work.deadline - now
        cadence = self._cadence.value
        if work.start_mono is None:  # the agent has not picked it up: do not read faster than it reports
            work.interval = unstarted_delay(policy, elapsed=elapsed, start_p50=self._start_stats.quantile(0.5),
                                            cadence=cadence)
            if self._waits_for_scouts(work):  # their first start pulls this in (``_replan_starts``)
                work.interval = max(work.interval, min(policy.start_wait_max_s, elapsed))
            self._schedule(work, work.interval if until is None else min(work.interval, max(0.0, until) + 0.05))
            return
        if work.scout and len(self._stats) < policy.learn_after and elapsed < policy.scout_window_s:
            # a few reads a second to learn the duration early, backing off while nothing changes
            # (an agent that reports every 15 s shows nothing new in between)
            quiet = policy.scout_interval_s * policy.backoff ** work.unchanged_polls
            work.interval = max(policy.scout_interval_s, min(quiet, cadence or policy.agent_cadence_s))
            self._schedule(work, work.interval)
            return
        work.interval = next_delay(
            policy, self._stats, prev_interval=max(work.interval, policy.min_interval_s, cadence or 0.0),
            elapsed=elapsed, growing=growing, until_deadline=until,
        )  # fmt: skip
        self._schedule(work, work.interval)

    def _power_check_due(self, work: Work, now: float) -> bool:
        """Long overdue (past the learned p90, else past dispatch, by ``power_check_after_s``)?

        A target the agent has not started is overdue only past ``unstarted_power_check_s`` (or the
        learned start latency's p90 if longer; early starts teach too short a one): a first run
        installs the handler for minutes, and reading the power of every waiting machine every
        20 s doubled a run's reads."""
        policy = self._opts.poll
        after = policy.power_check_after_s
        if work.power_checked is not None:
            return now - work.power_checked >= after
        if work.start_mono is None:
            base = max(self._start_stats.quantile(0.9) or 0.0, policy.unstarted_power_check_s)
        else:  # a start that came late (a handler install) moves the check with it
            base = max(self._stats.quantile(0.9) or 0.0, work.start_mono - (work.sent_mono or work.start_mono))
        return work.sent_mono is not None and now - work.sent_mono >= base + after

    # -- scouts ----------------------------------------------------------------------------------
    def _scouts_out(self) -> bool:
        """Is a scout still running (its duration not yet learned)?"""
        return any(not w.taken for w in self._scout_works)

    def _waits_for_scouts(self, work: Work) -> bool:
        """Not started, not a scout, and the scouts have not seen an agent start yet: this target
        backs off (up to ``start_wait_max_s``) rather than reading every agent report."""
        return not work.scout and not self._start_seen and any(
            not w.taken and w.start_mono is None for w in self._scout_works)

    def _replan_starts(self) -> None:
        """The first agent start of the run was seen: targets that waited for it are read again
        within the agent's report interval (earlier if the learned start latency says so)."""
        policy, now, cadence = self._opts.poll, self._clock(), self._cadence.value
        for work in self.works:
            if (work.state is not TargetState.RUNNING or work.taken or work.sent_mono is None or work.parked
                    or work.start_mono is not None or work.scout):
                continue
            sched = self._schedulers.get(work.target.subscription_id.lower())
            due = sched.due_in(work) if sched is not None else None
            soon = unstarted_delay(policy, elapsed=now - work.sent_mono, start_p50=None, cadence=cadence)
            if due is not None and due > soon:
                self._schedule(work, soon)

    async def _machine_gone(self, work: Work) -> bool:
        """Read the machine's power state; a machine that stopped under the script fails it."""
        work.power_checked = self._clock()
        try:
            power = await self._client.power_state(work.target, counter=work.count)
        except Exception as exc:
            _LOG.debug("power state of %s unknown: %s", work.target.name, classify_error(exc).describe())
            return False
        if power in (None, "running", "starting", "unknown") or work.taken:
            return False
        await self._cancel_one(work, TargetState.FAILED,
                               f"the machine is {power}: the script was stopped and cannot report completion",
                               wait_gone=False)  # fmt: skip
        return True

    def _replan(self) -> None:
        """The duration estimate firmed up: pull in polls scheduled far past the learned p90.

        Only targets the agent has started: a waiting one's end depends on its start, which the
        start schedule (``unstarted_delay``, ``_replan_starts``) follows; pulling those in read
        every waiting target again at each replan (3, 6, 12 ... results)."""
        p50, p90 = self._stats.quantile(0.5), self._stats.quantile(0.9)
        if p50 is None or p90 is None:
            return
        now, slack = self._clock(), self._opts.poll.min_interval_s
        for work in self.works:
            if (work.state is not TargetState.RUNNING or work.taken or work.sent_mono is None or work.parked
                    or work.start_mono is None):
                continue
            sched = self._schedulers.get(work.target.subscription_id.lower())
            due = sched.due_in(work) if sched is not None else None
            elapsed = now - work.sent_mono
            if due is not None and elapsed + due > p90 + slack:
                self._schedule(work, max(0.0, p50 - elapsed))

    def _scouts_ended(self) -> None:
        """The last scout ended with nothing learned (timed out, never started, its machine gone):
        the targets that waited for what it would learn are polled on the initial guess instead of
        sitting out the longest interval (issue 14: a hung scout held the others for 20 s)."""
        if self._scouts_out():
            return
        if not self._start_seen:
            self._replan_starts()  # no scout saw a start: nobody waits for one any longer
        now, guess = self._clock(), first_delay(self._opts.poll, self._stats)
        for work in self.works:
            if work.state is not TargetState.RUNNING or work.taken or work.sent_mono is None or work.parked:
                continue
            sched = self._schedulers.get(work.target.subscription_id.lower())
            due = sched.due_in(work) if sched is not None else None
            elapsed = now - work.sent_mono
            if due is not None and elapsed + due > guess:
                self._schedule(work, max(0.0, guess - elapsed))

    async def _poll_failed(self, work: Work, failure: ArmFailure) -> None:
        work.poll_errors += 1
        if unreachable(failure):
            await self._unreachable(work, failure)
            return
        self._contact.ok()  # Azure answered (with an error)
        fatal = failure.kind in (FailureKind.FORBIDDEN, FailureKind.AUTH, FailureKind.NOT_FOUND)
        if (fatal and work.poll_errors >= 3) or work.poll_errors >= _POLL_ERROR_LIMIT:
            await self._finish(work, TargetState.FAILED, None,
                               self._scrub(f"cannot read the run command: {failure.describe()}"), work.last_view)
            return
        work.interval = min(self._opts.poll.max_interval_s, max(1.0, work.interval * 2))
        self._schedule(work, work.interval)

    async def _unreachable(self, work: Work, failure: ArmFailure) -> None:
        """No answer: not a failure. Back off; past the deadline, leave it for a resume."""
        self._contact.lost(failure)
        now = self._clock()
        if work.deadline is not None and now >= work.deadline:
            work.parked = True
            _LOG.warning("%s: past its deadline while Azure is unreachable (%s); left for a resume",
                         work.target.name, failure.describe())
            self._check_stranded()
            return
        work.interval = min(self._opts.poll.outage_max_interval_s, max(1.0, work.interval * 2))
        until = None if work.deadline is None else work.deadline - now
        self._schedule(work, work.interval if until is None else min(work.interval, max(0.0, until) + 0.05))

    def _check_stranded(self) -> None:
        """Contact lost and nothing in flight can be watched any more: detach (resumable)."""
        if not self._contact.down:
            return
        watched = [w for w in self.works if w.state in (TargetState.DISPATCHING, TargetState.RUNNING)
                   and not w.taken and not w.parked]
        if not watched:
            self.request_detach(f"lost contact with Azure for {self._contact.down_for():.0f}s; "
                                "in-flight targets left running: resume the run once Azure answers")
