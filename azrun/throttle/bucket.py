"""TokenBucket: I/O-free token arithmetic plus thin sync/async waiting.

Positions, not due times. The bucket counts ``taken`` (every token ever reserved) and
``supply`` (every token ever made available: the initial level, refill, refunds). The level
is ``supply - taken``; it may go negative (debt). A reservation gets a *position* (``taken``
right after it) and may go once ``supply`` reaches it. A waiter's due time is therefore
computed, not stored: ``stamp + (position - supply) / refill``, pushed past a pause. So
anything that changes supply, stamp or refill (a header lowering the level, a 429 pause, a
learned refill rate, a refund, a cancellation ahead) re-times every waiter at once, and FIFO
order holds by construction. There is no heap and no shared timer: each waiter sleeps until
its own due time and is woken early only when something moves it up. That keeps the bucket
free of any event-loop affinity, so one bucket serves threads and several asyncio loops at
once (one ``threading.Lock`` guards the state; critical sections never block or await).

A pause (``pause_until``) moves the time stamp into the future: refill up to the resume time
is credited once, and callers arriving during the pause are charged against the level *at
resume time*. After a 429 (``throttled``) only the one token ``Retry-After`` promises is
credited at resume: the 429 proves our model of this bucket was too optimistic.

The ``_..._locked`` methods and ``_advance`` run with the lock held; the ones marked *hook*
are where :class:`~azrun.throttle.adaptive.AdaptiveBucket` (a server's bucket mirrored
from response headers) adds its behaviour. Waiting, on one bucket or on several at once, is
:mod:`azrun.throttle.waiting`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from azrun.throttle.waiting import AsyncSleep, Clock, SyncSleep, Ticket, aacquire_all, acquire_all, wake

__all__ = ["AsyncSleep", "BucketStats", "Clock", "SyncSleep", "TokenBucket"]

_EPS = 1e-9  # tokens: float dust must not keep a covered waiter asleep for a femtosecond


@dataclass(frozen=True, slots=True)
class BucketStats:
    """A cheap, immutable snapshot of one bucket (what the fleet runner displays)."""

    name: str
    capacity: float
    refill_per_s: float
    #: Tokens left (at resume time if paused); negative means queued demand.
    level: float
    #: Waiters currently queued.
    waiters: int
    #: Acquisitions that had to wait.
    tokens_waited: int
    #: Total seconds waiters spent waiting on this bucket.
    wait_s: float
    #: 429 responses attributed to this bucket.
    throttled_429: int
    #: Seconds until a pause ends (0 when not paused).
    paused_for_s: float


class TokenBucket:
    """A token bucket with FIFO waiting, pauses, reconciliation and metrics.

    Args:
        capacity: burst size (tokens); the bucket starts full unless ``initial`` is given.
        refill_per_s: tokens added per second.
        name: shown in ``repr`` and metrics.
        clock: monotonic seconds; inject a fake in tests.
        sleep: sync sleeper for tests. ``None`` (default) waits on a ``threading.Event`` with
            a real timeout, which a cancellation ahead can cut short; an injected sleeper cannot
            be interrupted, so sync waiters then only move up when they next wake.
        async_sleep: async sleeper (default ``asyncio.sleep``).
        initial: starting level (default ``capacity``).
    """

    __slots__ = (
        "_async_sleep", "_capacity", "_clock", "_lock", "_name", "_paused_until", "_queued", "_rate", "_retired",
        "_seq", "_sleep", "_stamp", "_supply", "_taken", "_throttled", "_tickets", "_wait_s", "_waited",
    )

    def __init__(
        self,
        capacity: float,
        refill_per_s: float,
        *,
        name: str = "",
        clock: Clock = time.monotonic,
        sleep: SyncSleep | None = None,
        async_sleep: AsyncSleep | None = None,
        initial: float | None = None,
    ) -> None:
        if not capacity > 0 or not refill_per_s > 0 or math.isinf(refill_per_s):
            raise ValueError("capacity and refill_per_s must be positive and finite")
        self._capacity = float(capacity)
        self._rate = float(refill_per_s)
        self._name = name
        self._clock = clock
        self._sleep = sleep
        self._async_sleep: AsyncSleep = async_sleep or asyncio.sleep
        self._lock = threading.Lock()
        self._stamp = clock()
        self._taken = 0.0
        self._supply = self._capacity if initial is None else min(float(initial), self._capacity)
        self._paused_until = -math.inf
        self._tickets: set[Ticket] = set()  # queued waiters; ``seq`` gives their order
        self._queued = 0.0  # sum of ticket costs: tokens reserved but not yet released
        self._seq = 0
        self._waited = 0
        self._wait_s = 0.0
        self._throttled = 0
        self._retired = False

    # -- read-only properties -------------------------------------------------------------
    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def refill_per_s(self) -> float:
        return self._rate

    @property
    def name(self) -> str:
        return self._name

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def sleeper(self) -> SyncSleep | None:
        """The injected sync sleeper (``None``: wait on an interruptible event)."""
        return self._sleep

    @property
    def async_sleeper(self) -> AsyncSleep:
        return self._async_sleep

    @property
    def retired(self) -> bool:
        """Dropped by its owner (see :meth:`retire_if_idle`): a fresh bucket replaces it."""
        return self._retired

    @property
    def paused_until(self) -> float:
        """Clock time before which no token is granted (``-inf`` if never paused)."""
        return self._paused_until

    # -- arithmetic (no I/O; lock held) ---------------------------------------------------------
    def _advance(self, now: float) -> float:
        """Credit refill up to ``now`` (never backwards; the stamp may be in the future). *Hook*."""
        if now > self._stamp:
            room = self._capacity - (self._supply - self._taken)
            if room > 0:
                self._supply += min(room, (now - self._stamp) * self._rate)
            self._stamp = now
        return self._stamp

    def _inflight(self) -> float:
        """Tokens released whose answers have not come back (a plain bucket does not track). *Hook*."""
        return 0.0

    def _untracked(self, cost: float) -> None:
        """``cost`` tokens were released that nobody will report an answer for. *Hook*."""

    def _frozen(self) -> bool:
        """No refill is credited for now (a mirrored server has not started counting). *Hook*."""
        return False

    def _gate(self) -> float:
        """The last position that may go out before refill is credited again. *Hook*."""
        return math.inf

    def _refill_from(self) -> float:
        """Clock time from which refill is credited at the latest (``-inf``: from the stamp). *Hook*."""
        return -math.inf

    def _check_cost(self, cost: float) -> None:
        if cost < 0 or cost > self._capacity:
            raise ValueError(f"cost {cost} outside [0, capacity={self._capacity}] of {self._name!r}")

    def _take_locked(self, cost: float, now: float) -> float:
        """Debit ``cost``; return the reservation's position. *Hook*."""
        self._advance(now)
        self._taken += cost
        return self._taken

    def _due_locked(self, pos: float, now: float, advanced: bool = False) -> float:
        """Clock time from which the tokens up to ``pos`` are covered (``-inf``: already)."""
        if not advanced:
            self._advance(now)
        if pos <= min(self._supply, self._gate()) + _EPS:
            return self._paused_until
        base = max(self._stamp, self._refill_from())
        return max(base + max(0.0, pos - self._supply) / self._rate, self._paused_until)

    def _covered_at(self, pos: float) -> float:
        """When supply passed ``pos`` (by the refill model; for metrics only)."""
        return max(self._paused_until, self._stamp - max(0.0, self._supply - pos) / self._rate)

    def reserve(self, cost: float = 1.0, now: float | None = None) -> float:
        """Commit ``cost`` tokens and return the seconds to wait before using them.

        The reservation is final: a caller that gives up must :meth:`refund`. Later
        reservations queue behind this one (FIFO by construction).
        """
        self._check_cost(cost)
        now = self._clock() if now is None else now
        with self._lock:
            due = self._due_locked(self._take_locked(cost, now), now)
            self._untracked(cost)
        return max(0.0, due - now)

    def refund(self, cost: float = 1.0, *, untrack: bool = False) -> None:
        """Give back tokens from a reservation that will not be used (capped at capacity).

        Queued waiters move up (their due time is computed from the level); ``untrack`` also
        takes the tokens out of the in-flight count (a tracked acquisition that never went out).
        """
        with self._lock:
            self._supply = min(self._supply + cost, self._taken + self._capacity)
            if untrack:
                self._untracked(cost)
            wakers = self._wakers_locked()
        wake(wakers)

    def resize(self, capacity: float, refill_per_s: float) -> None:
        """Change burst and refill (learned buckets grow when the server shows more budget).

        The level is not raised; it is clipped if the capacity shrinks.
        """
        if not capacity > 0 or not refill_per_s > 0:
            raise ValueError("capacity and refill_per_s must be positive")
        with self._lock:
            self._advance(self._clock())
            self._capacity, self._rate = float(capacity), float(refill_per_s)
            self._resized_locked()
            self._supply = min(self._supply, self._taken + self._capacity)
            wakers = self._wakers_locked()
        wake(wakers)

    def _resized_locked(self) -> None:
        """Capacity and refill were set from outside. *Hook*."""

    def pause_until(self, t: float, now: float | None = None) -> None:
        """Grant no token before clock time ``t`` (pauses only ever extend).

        The server's bucket keeps refilling during the pause, so refill up to ``t`` is
        credited now and the time stamp moves to ``t``: callers arriving during the pause
        are charged against the level at resume time, and the resume burst stays <= capacity.
        """
        now = self._clock() if now is None else now
        with self._lock:
            if t <= self._paused_until:
                return
            self._paused_until = t
            stamp = self._advance(now)
            if t > stamp and not self._frozen():
                room = self._capacity - (self._supply - self._taken)
                self._supply += max(0.0, min(room, (t - stamp) * self._rate))
                self._stamp = t

    def reconcile(self, remaining: float, now: float | None = None) -> None:
        """Lower the level to what the server says is left; never raise it.

        The server counts requests it has *seen*. Our own waiters (tickets not yet released)
        have not been sent, nor (tracking buckets) have released requests not yet answered, so
        the comparable local figure is ``level + queued + in flight``; we lower only if the
        server's ``remaining`` (projected to the resume time if paused) is smaller than that.
        Raw :meth:`reserve` callers are neither: their debt shows as a negative level, which is kept.
        """
        now = self._clock() if now is None else now
        with self._lock:
            self._reconcile_locked(remaining, now)

    def _reconcile_locked(self, remaining: float, now: float) -> None:
        stamp = self._advance(now)
        projected = min(self._capacity, max(0.0, remaining) + max(0.0, stamp - now) * self._rate)
        self._supply = min(self._supply, self._taken - self._queued - self._inflight() + projected)

    def throttled(self, retry_after_s: float, now: float | None = None, *, sent_at: float | None = None) -> None:
        """A 429 hit this bucket: the server has 0 tokens now and will take a request after ``retry_after_s``.

        So: pause until then, and at resume exactly one token (capacity permitting) for the
        first queued caller: the server promised that one, and our refill model has just been
        proven too optimistic, so later callers follow at the refill rate, not all at once.
        ``sent_at``: when the refused request went out (an adaptive bucket may learn from it).
        """
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            self._paused_until = max(self._paused_until, now + max(0.0, retry_after_s))
            self._stamp = max(self._stamp, self._paused_until)
            self._supply = self._taken - self._queued + min(self._capacity, 1.0)
            self._throttled += 1
            self._throttled_locked(now, sent_at)

    def _throttled_locked(self, now: float, sent_at: float | None) -> None:
        """A 429 paused this bucket. *Hook*."""

    def answered(
        self, cost: float = 1.0, *, remaining: float | None = None, accepted: bool = True,
        sent_at: float | None = None, now: float | None = None,
    ) -> None:
        """A response came back for a request that took ``cost`` here (0: it did not take from
        this bucket but the response carries its ``remaining`` header).

        A plain bucket only :meth:`reconcile`\\ s with ``remaining``; ``accepted`` (the server
        counted the request) and ``sent_at`` matter to an adaptive bucket.
        """
        if remaining is not None:
            self.reconcile(remaining, now)

    def level(self, now: float | None = None) -> float:
        """Tokens available (at resume time while paused); negative means queued demand."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return self._supply - self._taken

    def retire_if_idle(self, now: float | None = None) -> BucketStats | None:
        """Retire the bucket if it is full, unpaused, nobody waits and nothing is in flight: a
        freshly made bucket would then behave no less carefully, so its owner may drop it.
        Returns its final stats (for the owner's totals), or ``None`` if it is in use."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            if self._retired or self._tickets or self._paused_until > now or self._inflight() > _EPS:
                return None
            if self._supply - self._taken < self._capacity - _EPS or not self._idle_locked():
                return None
            self._retired = True
            return BucketStats(
                self._name, self._capacity, self._rate, self._supply - self._taken, 0,
                self._waited, self._wait_s, self._throttled, 0.0,
            )

    def _idle_locked(self) -> bool:
        """No state beyond the level worth keeping. *Hook*."""
        return True

    def snapshot(self, now: float | None = None) -> BucketStats:
        """Metrics of this bucket; one lock acquisition, no allocation beyond the result."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return BucketStats(
                self._name, self._capacity, self._rate, self._supply - self._taken, len(self._tickets),
                self._waited, self._wait_s, self._throttled, max(0.0, self._paused_until - now),
            )

    # -- tickets (used by azrun.throttle.waiting) ------------------------------------------------
    def _enqueue(self, cost: float, now: float, track: bool = False) -> Ticket | None:
        """Reserve; return ``None`` if the tokens are usable now, else a queued ticket."""
        with self._lock:
            return self._enqueue_locked(cost, now, track)

    def _enqueue_locked(self, cost: float, now: float, track: bool) -> Ticket | None:
        pos = self._take_locked(cost, now)
        if self._due_locked(pos, now, advanced=True) <= now:
            if not track:
                self._untracked(cost)  # nobody will report its answer: never count it in flight
            return None
        self._seq += 1
        ticket = Ticket(self, cost, pos, self._seq, track)
        self._tickets.add(ticket)
        self._queued += cost
        return ticket

    def _due(self, ticket: Ticket, now: float) -> float:
        with self._lock:
            return self._due_locked(ticket.pos, now) if ticket in self._tickets else -math.inf

    def _grant(self, ticket: Ticket, start: float, end: float) -> None:
        with self._lock:
            if ticket not in self._tickets:
                return
            self._tickets.remove(ticket)
            self._queued -= ticket.cost
            if not ticket.track:
                self._untracked(ticket.cost)
            self._advance(end)
            waited = min(end, self._covered_at(ticket.pos)) - start
            if waited > 0:
                self._waited += 1
                self._wait_s += waited

    def _cancel(self, ticket: Ticket) -> None:
        """Refund a queued ticket: every later ticket moves down one slot and is woken."""
        with self._lock:
            if ticket not in self._tickets:
                return  # already granted or cancelled
            self._tickets.remove(ticket)
            self._queued -= ticket.cost
            self._taken -= ticket.cost
            self._supply = min(self._supply, self._taken + self._capacity)
            wakers: list[Callable[[], None]] = []
            for later in self._tickets:
                if later.seq > ticket.seq:
                    later.pos -= ticket.cost
                    if later.waker is not None:
                        wakers.append(later.waker)
        wake(wakers)

    def _wakers_locked(self) -> list[Callable[[], None]]:
        return [t.waker for t in self._tickets if t.waker is not None]

    # -- waiting ------------------------------------------------------------------------------
    def acquire(self, cost: float = 1.0) -> float:
        """Wait (blocking, thread-safe) for ``cost`` tokens; return seconds waited."""
        return acquire_all((self,), cost)

    async def aacquire(self, cost: float = 1.0) -> float:
        """Async :meth:`acquire`; cancelling gives the tokens back."""
        return await aacquire_all((self,), cost)

    def __repr__(self) -> str:
        s = self.snapshot()
        paused = f", paused_for={s.paused_for_s:.3g}s" if s.paused_for_s else ""
        return (
            f"{type(self).__name__}({s.name!r}, level={s.level:.4g}/{s.capacity:g}, "
            f"refill_per_s={s.refill_per_s:g}, waiters={s.waiters}{paused})"
        )

