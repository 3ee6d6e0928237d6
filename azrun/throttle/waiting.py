"""Waiting for tokens: one acquisition over several buckets, sync and async twins.

A request takes a token from every bucket that applies to it (ARM, Compute per subscription,
Compute per VM ...). :func:`acquire_all` / :func:`aacquire_all` reserve in all of them at once
(under all their locks, in a fixed order), wait for the latest due time, and give every token
back if the wait is cancelled. Each waiter sleeps until its own computed due time; a bucket
wakes it early when something moves it up (a refund, a cancellation ahead, a larger header).

This module knows buckets only through :class:`Queue`, the few methods
:class:`~azrun.throttle.bucket.TokenBucket` offers it, so it imports nothing from the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

__all__ = ["AsyncSleep", "Clock", "Queue", "SyncSleep", "Ticket", "aacquire_all", "acquire_all", "wake"]

Clock = Callable[[], float]
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]


class Queue(Protocol):
    """What waiting needs from a bucket (its lock, reservations, due times, refunds)."""

    _lock: threading.Lock

    @property
    def clock(self) -> Clock: ...

    @property
    def sleeper(self) -> SyncSleep | None: ...

    @property
    def async_sleeper(self) -> AsyncSleep: ...

    def _check_cost(self, cost: float) -> None: ...

    def _enqueue_locked(self, cost: float, now: float, track: bool) -> Ticket | None: ...

    def _due(self, ticket: Ticket, now: float) -> float: ...

    def _grant(self, ticket: Ticket, start: float, end: float) -> None: ...

    def _cancel(self, ticket: Ticket) -> None: ...

    def refund(self, cost: float = 1.0, *, untrack: bool = False) -> None: ...


class Ticket:
    """One queued reservation: its position in the bucket's FIFO (moves down if one ahead cancels)."""

    __slots__ = ("bucket", "cost", "pos", "seq", "track", "waker")

    def __init__(self, bucket: Queue, cost: float, pos: float, seq: int, track: bool) -> None:
        self.bucket = bucket
        self.cost = cost
        self.pos = pos
        self.seq = seq
        self.track = track
        self.waker: Callable[[], None] | None = None


def wake(wakers: list[Callable[[], None]]) -> None:
    """Call each waker (outside any bucket lock: a waker may take other locks)."""
    for waker in wakers:
        waker()


class _Reservation:
    """What one multi-bucket acquisition holds: queued tickets plus buckets that paid at once."""

    __slots__ = ("cost", "paid", "start", "tickets", "track")

    def __init__(self, cost: float, start: float, buckets: Sequence[Queue], got: list[Ticket | None], track: bool) -> None:
        self.cost = cost
        self.start = start
        self.track = track
        self.paid = [b for b, t in zip(buckets, got, strict=True) if t is None]
        self.tickets = [t for t in got if t is not None]

    @staticmethod
    def take(buckets: Sequence[Queue], cost: float, track: bool) -> _Reservation | None:
        """Reserve in every bucket at once; ``None`` (no allocation) when nobody has to wait.

        All the buckets' locks are held (in a fixed order) while reserving, so any two
        acquisitions sharing buckets are in the same order in each: a request cannot wait in
        one bucket for a cold wave's answer that waits in another bucket for it.
        """
        for bucket in buckets:
            bucket._check_cost(cost)
        start = buckets[0].clock()
        locks = [b._lock for b in sorted(buckets, key=id)] if len(buckets) > 1 else [buckets[0]._lock]
        for lock in locks:
            lock.acquire()
        try:
            got = [bucket._enqueue_locked(cost, start, track) for bucket in buckets]
        finally:
            for lock in locks:
                lock.release()
        return _Reservation(cost, start, buckets, got, track) if any(got) else None

    def delay(self, now: float) -> float:
        return max(t.bucket._due(t, now) for t in self.tickets) - now

    def finish(self, end: float) -> float:
        for ticket in self.tickets:
            ticket.bucket._grant(ticket, self.start, end)
        return end - self.start

    def cancel(self) -> None:
        """Give every token back; queued tickets also move later waiters up."""
        for ticket in self.tickets:
            ticket.bucket._cancel(ticket)
        for bucket in self.paid:
            bucket.refund(self.cost, untrack=self.track)


class _AsyncWaker:
    """Sleeps with the bucket's async sleeper; something moving it up wakes it early."""

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


def _unique(buckets: Sequence[Queue]) -> Sequence[Queue]:
    return buckets if len(buckets) < 2 or len(set(buckets)) == len(buckets) else tuple(dict.fromkeys(buckets))


def acquire_all(buckets: Sequence[Queue], cost: float = 1.0, *, track: bool = False) -> float:
    """Take ``cost`` from every bucket (blocking, thread-safe): reserve in all, wait for the
    latest, refund all if interrupted. Returns the seconds waited.

    The buckets must share one clock (they come from one ``Throttle``); the first bucket's
    clock and sleeper are used. ``track``: count the tokens as in flight once granted (the
    caller reports the answer with ``TokenBucket.answered``).
    """
    buckets = _unique(buckets)
    if not buckets or (res := _Reservation.take(buckets, cost, track)) is None:
        return 0.0
    clock, sleeper = buckets[0].clock, buckets[0].sleeper
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


async def aacquire_all(buckets: Sequence[Queue], cost: float = 1.0, *, track: bool = False) -> float:
    """Async :func:`acquire_all`: cancelling the waiting task gives every token back."""
    buckets = _unique(buckets)
    if not buckets or (res := _Reservation.take(buckets, cost, track)) is None:
        return 0.0
    clock, sleeper = buckets[0].clock, buckets[0].async_sleeper
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
