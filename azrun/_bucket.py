"""TokenBucket: I/O-free token arithmetic plus thin sync/async waiting.

The arithmetic is GCRA ("virtual scheduling"): ``reserve`` always commits, and the bucket
level may go negative. A negative level is debt: the next ``-level / refill_per_s`` seconds
of refill already belong to earlier callers, so a later caller waits longer. That makes
waiting FIFO by construction, without a queue to walk on the fast path.

Waiters (``acquire``/``acquire_sync``/:func:`acquire_all`) hold a ticket so that a cancelled
waiter can give its token back *and* move every later waiter up by ``cost / refill_per_s``.
There is no heap and no shared timer: each waiter sleeps until its own due time and is woken
early only when a cancellation moves it up. That keeps the bucket free of any event-loop
affinity, so one bucket serves threads and several asyncio loops at once (one
``threading.Lock`` guards the state; critical sections never block or await).

A pause (``pause_until``, used after a 429) moves the bucket's time stamp into the future:
refill up to the resume time is credited once, and callers arriving during the pause are
charged against the level *at resume time*, so the burst on resume never exceeds capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["BucketStats", "TokenBucket", "acquire_all", "acquire_all_sync"]

Clock = Callable[[], float]
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]


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


class _Ticket:
    """One queued reservation; ``due`` moves earlier when someone ahead cancels."""

    __slots__ = ("bucket", "cost", "due", "seq", "waker")

    def __init__(self, bucket: TokenBucket, cost: float, due: float, seq: int) -> None:
        self.bucket = bucket
        self.cost = cost
        self.due = due
        self.seq = seq
        self.waker: Callable[[], None] | None = None


class TokenBucket:
    """A token bucket with FIFO waiting, pauses, server reconciliation and metrics.

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
        "_async_sleep", "_capacity", "_clock", "_level", "_lock", "_name", "_paused_until",
        "_queued", "_rate", "_seq", "_sleep", "_stamp", "_throttled", "_tickets", "_wait_s",
        "_waited",
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
        self._level = self._capacity if initial is None else min(float(initial), self._capacity)
        self._paused_until = -math.inf
        self._tickets: set[_Ticket] = set()  # queued waiters; ``seq`` gives their order
        self._queued = 0.0  # sum of ticket costs: tokens reserved but not yet released
        self._seq = 0
        self._waited = 0
        self._wait_s = 0.0
        self._throttled = 0

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
    def paused_until(self) -> float:
        """Clock time before which no token is granted (``-inf`` if never paused)."""
        return self._paused_until

    # -- arithmetic (no I/O) ------------------------------------------------------------------
    def _advance(self, now: float) -> float:
        """Credit refill up to ``now`` (never backwards; the stamp may be in the future)."""
        if now > self._stamp:
            self._level = min(self._capacity, self._level + (now - self._stamp) * self._rate)
            self._stamp = now
        return self._stamp

    def _check_cost(self, cost: float) -> None:
        if cost < 0 or cost > self._capacity:
            raise ValueError(f"cost {cost} outside [0, capacity={self._capacity}] of {self._name!r}")

    def reserve(self, cost: float = 1.0, now: float | None = None) -> float:
        """Commit ``cost`` tokens and return the seconds to wait before using them.

        The reservation is final: a caller that gives up must :meth:`refund`. Later
        reservations queue behind this one (FIFO by construction).
        """
        self._check_cost(cost)
        now = self._clock() if now is None else now
        with self._lock:
            due = max(self._take(cost, now), self._paused_until)
        return max(0.0, due - now)

    def _take(self, cost: float, now: float) -> float:
        """Debit ``cost`` and return the clock time the tokens are covered (lock held)."""
        stamp = self._advance(now)
        self._level -= cost
        return stamp + (-self._level / self._rate if self._level < 0 else 0.0)

    def refund(self, cost: float = 1.0) -> None:
        """Give back tokens from a reservation that will not be used (capped at capacity).

        Queued ticket holders are not moved: an anonymous refund cannot say who was behind
        it. Waiters that cancel through ``acquire*`` refund *and* move later waiters up.
        """
        with self._lock:
            self._level = min(self._capacity, self._level + cost)

    def resize(self, capacity: float, refill_per_s: float) -> None:
        """Change burst and refill (learned buckets grow when the server shows more budget).

        The level is not raised; it is clipped if the capacity shrinks.
        """
        if not capacity > 0 or not refill_per_s > 0:
            raise ValueError("capacity and refill_per_s must be positive")
        with self._lock:
            self._advance(self._clock())
            self._capacity, self._rate = float(capacity), float(refill_per_s)
            self._level = min(self._level, self._capacity)

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
            if t > stamp:
                self._level = min(self._capacity, self._level + (t - stamp) * self._rate)
                self._stamp = t

    def reconcile(self, remaining: float, now: float | None = None) -> None:
        """Lower the level to what the server says is left; never raise it.

        The server counts requests it has *seen*. Our own waiters (tickets not yet released)
        have not been sent, so the comparable local figure is ``level + queued``; we lower
        only if the server's ``remaining`` (projected to the resume time if paused) is
        smaller than that. Released requests still in flight are assumed already counted
        by the server (we cannot tell); since we only ever lower, that choice never lets a
        stale header add tokens. Raw :meth:`reserve` callers are not tickets and so are not
        counted as queued: their debt shows as a negative level, which is kept.
        """
        now = self._clock() if now is None else now
        with self._lock:
            stamp = self._advance(now)
            projected = min(self._capacity, max(0.0, remaining) + (stamp - now) * self._rate)
            self._level = min(self._level, projected - self._queued)

    def throttled(self, retry_after_s: float, now: float | None = None) -> None:
        """A 429 hit this bucket: the server has 0 tokens now and will take a request after ``retry_after_s``.

        So: level 0 now, pause until then, and at resume at least one token for the first
        queued caller (the server's word beats our refill model if it says sooner).
        """
        now = self._clock() if now is None else now
        self.reconcile(0.0, now)
        self.pause_until(now + max(0.0, retry_after_s), now)
        with self._lock:
            self._throttled += 1
            self._level = max(self._level, min(self._capacity, 1.0) - self._queued)

    def level(self, now: float | None = None) -> float:
        """Tokens available (at resume time while paused); negative means queued demand."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return self._level

    def snapshot(self, now: float | None = None) -> BucketStats:
        """Metrics of this bucket; one lock acquisition, no allocation beyond the result."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return BucketStats(
                self._name, self._capacity, self._rate, self._level, len(self._tickets),
                self._waited, self._wait_s, self._throttled, max(0.0, self._paused_until - now),
            )

    # -- tickets (used by the waiting helpers) ------------------------------------------------
    def _enqueue(self, cost: float, now: float) -> _Ticket | None:
        """Reserve; return ``None`` if the tokens are usable now, else a queued ticket."""
        with self._lock:
            due = self._take(cost, now)
            if due <= now and self._paused_until <= now:
                return None
            self._seq += 1
            ticket = _Ticket(self, cost, due, self._seq)
            self._tickets.add(ticket)
            self._queued += cost
            return ticket

    def _due(self, ticket: _Ticket) -> float:
        with self._lock:
            return max(ticket.due, self._paused_until)

    def _grant(self, ticket: _Ticket, start: float, end: float) -> None:
        with self._lock:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
                self._queued -= ticket.cost
            self._waited += 1
            self._wait_s += max(0.0, min(end, max(ticket.due, self._paused_until)) - start)

    def _cancel(self, ticket: _Ticket) -> None:
        """Refund a queued ticket and move every later ticket up by its cost."""
        with self._lock:
            if ticket not in self._tickets:
                return  # already granted or cancelled
            self._tickets.remove(ticket)
            self._queued -= ticket.cost
            self._level = min(self._capacity, self._level + ticket.cost)
            shift = ticket.cost / self._rate
            wakers: list[Callable[[], None]] = []
            for later in self._tickets:
                if later.seq > ticket.seq:
                    later.due -= shift
                    if later.waker is not None:
                        wakers.append(later.waker)
        for wake in wakers:  # outside the lock: a waker may take other locks
            wake()

    # -- waiting ------------------------------------------------------------------------------
    async def acquire(self, cost: float = 1.0) -> float:
        """Wait for ``cost`` tokens; return seconds waited. Cancelling gives the tokens back."""
        return await acquire_all((self,), cost)

    def acquire_sync(self, cost: float = 1.0) -> float:
        """Thread-safe blocking :meth:`acquire`; return seconds waited."""
        return acquire_all_sync((self,), cost)

    def __repr__(self) -> str:
        s = self.snapshot()
        paused = f", paused_for={s.paused_for_s:.3g}s" if s.paused_for_s else ""
        return (
            f"TokenBucket({s.name!r}, level={s.level:.4g}/{s.capacity:g}, "
            f"refill_per_s={s.refill_per_s:g}, waiters={s.waiters}{paused})"
        )


class _Reservation:
    """What one multi-bucket acquisition holds: queued tickets plus buckets that paid at once."""

    __slots__ = ("cost", "paid", "start", "tickets")

    def __init__(self, cost: float, start: float, buckets: Sequence[TokenBucket], got: list[_Ticket | None]) -> None:
        self.cost = cost
        self.start = start
        self.paid = [b for b, t in zip(buckets, got, strict=True) if t is None]
        self.tickets = [t for t in got if t is not None]

    @staticmethod
    def take(buckets: Sequence[TokenBucket], cost: float) -> _Reservation | None:
        """Reserve in every bucket; ``None`` (no allocation) when nobody has to wait."""
        for bucket in buckets:
            bucket._check_cost(cost)
        start = buckets[0].clock()
        got = [bucket._enqueue(cost, start) for bucket in buckets]
        return _Reservation(cost, start, buckets, got) if any(got) else None

    def delay(self, now: float) -> float:
        return max(t.bucket._due(t) for t in self.tickets) - now

    def finish(self, end: float) -> float:
        for ticket in self.tickets:
            ticket.bucket._grant(ticket, self.start, end)
        return end - self.start

    def cancel(self) -> None:
        """Give every token back; queued tickets also move later waiters up."""
        for ticket in self.tickets:
            ticket.bucket._cancel(ticket)
        for bucket in self.paid:
            bucket.refund(self.cost)


class _AsyncWaker:
    """Sleeps with the bucket's async sleeper; a cancellation ahead wakes it early."""

    __slots__ = ("_fut", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fut: asyncio.Future[None] | None = None

    def wake(self) -> None:  # any thread
        with contextlib.suppress(RuntimeError):  # loop closed: the waiter is gone anyway
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, delay_s: float, sleeper: AsyncSleep) -> None:
        self._fut = self._loop.create_future()
        nap = asyncio.ensure_future(sleeper(delay_s))
        try:
            await asyncio.wait((nap, self._fut), return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            self._fut = None


async def acquire_all(buckets: Sequence[TokenBucket], cost: float = 1.0) -> float:
    """Take ``cost`` from every bucket: reserve in all, wait for the latest, refund all on cancel.

    The buckets must share one clock (they come from one ``Throttle``); the first bucket's
    clock and async sleeper are used. Returns the seconds waited.
    """
    if not buckets or (res := _Reservation.take(buckets, cost)) is None:
        return 0.0
    clock, sleeper = buckets[0].clock, buckets[0]._async_sleep
    try:
        waker = _AsyncWaker()
        for ticket in res.tickets:
            ticket.waker = waker.wake
        while (delay := res.delay(clock())) > 0:
            await waker.wait(delay, sleeper)
    except BaseException:
        res.cancel()
        raise
    return res.finish(clock())


def acquire_all_sync(buckets: Sequence[TokenBucket], cost: float = 1.0) -> float:
    """Blocking :func:`acquire_all` for threads; returns the seconds waited."""
    if not buckets or (res := _Reservation.take(buckets, cost)) is None:
        return 0.0
    clock, sleeper = buckets[0].clock, buckets[0]._sleep
    try:
        event = threading.Event()
        for ticket in res.tickets:
            ticket.waker = event.set
        while True:
            event.clear()  # before reading due: a later move-up sets it again
            delay = res.delay(clock())
            if delay <= 0:
                break
            if sleeper is None:
                event.wait(delay)
            else:
                sleeper(delay)
    except BaseException:
        res.cancel()
        raise
    return res.finish(clock())
