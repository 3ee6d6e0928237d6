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

``adaptive=True`` (the buckets a ``Throttle`` creates; opt-in, so the auth, storage and poll
buckets keep plain behaviour) mirrors a *server's* bucket that we only see through response
headers, and adds:

* **Cold wave.** Until the first response, only a first wave of ``refill x 1 s`` tokens goes
  out (not the whole assumed burst): a stricter server costs a few 429s, not a burst of them.
  The first response then sets the level to what the server says (``remaining - in flight``)
  and its capacity to what the server has shown (``remaining + 1``; it grows when the server
  later shows more, up to the configured value).
* **Hold.** The server's bucket refills only while it is below capacity, i.e. from the moment
  our requests *arrive*, which can be a connection set-up after we release them. So when
  requests go out from a (nearly) full bucket, refill credit stops until a response to one of
  them proves the server has started counting; that response then re-anchors the level. This
  formulation (rather than shifting waiters when a hold ends) falls out of computed due times.
* **In flight.** Released requests not yet answered. The server's ``remaining`` does not
  count requests that had not reached it yet, so an answer caps our level at ``remaining -
  in flight`` (not ``remaining``), crediting no refill since (we cannot know when the server
  counted): a round trip of refill, once. Counting *unanswered* requests (not "released
  after this one") holds up when requests overtake each other on the way in (they do in a
  burst), as answers come back in about the order they were served; the few answers that do
  overtake are handled by taking the best cap of the last second, revisable while a stream of
  answers is young (see ``TokenBucket._bound_locked``).
* **Learned refill.** ``remaining + accepted answers`` grows at exactly the server's refill
  rate while the server's bucket is not full. A least-squares fit of it over time (recent
  samples weigh more) replaces the configured refill when it is clearly lower (never above the
  configured value). A 429 for a request sent after the cold wave halves the refill once per
  episode (a bucket too small to be seen refilling); the fit raises it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

__all__ = ["BucketStats", "TokenBucket", "acquire_all", "acquire_all_sync"]

Clock = Callable[[], float]
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]

_EPS = 1e-9  # tokens: float dust must not keep a covered waiter asleep for a femtosecond
#: A hold or cold wave ends by itself this long after it began if no answer comes back.
_MAX_HOLD_S = 10.0
#: The cold wave is this many seconds of the configured refill (at least one token).
_WAVE_S = 1.0
#: Hold when releasing from within this many seconds of refill of full capacity: the server's
#: bucket could fill up before our requests reach it (connection set-up takes up to ~1 s).
_HOLD_MARGIN_S = 2.0
#: A header lowers the level only below the best bound of the answers of this many seconds ...
_BOUND_WINDOW_S = 1.0
#: ... and only once a stream of answers has lasted this long (overtaken answers come back).
_BOUND_SETTLE_S = 0.25


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
    """One queued reservation: its position in the bucket's FIFO (moves down if one ahead cancels)."""

    __slots__ = ("bucket", "cost", "pos", "seq", "track", "waker")

    def __init__(self, bucket: TokenBucket, cost: float, pos: float, seq: int, track: bool) -> None:
        self.bucket = bucket
        self.cost = cost
        self.pos = pos
        self.seq = seq
        self.track = track
        self.waker: Callable[[], None] | None = None


class _RateFit:
    """Weighted least squares of ``y`` over time, older samples decaying with ``tau_s``.

    ``y = remaining + accepted`` rises at exactly the server's refill rate while its bucket is
    below capacity; the fit averages away the header's rounding and answer-time jitter.
    """

    __slots__ = ("_min_span", "_sums", "_t0", "_tau", "_y0", "last")

    def __init__(self, tau_s: float, min_span_s: float) -> None:
        self._tau, self._min_span = tau_s, min_span_s
        self._t0 = self._y0 = 0.0
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # weights, t, y, t*t, t*y, y*y (relative to t0, y0)
        self.last: float | None = None

    def reset(self, t: float, y: float) -> None:
        self._t0, self._y0, self.last = t, y, t
        self._sums = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def add(self, t: float, y: float) -> None:
        if self.last is None or t - self._t0 > 50 * self._tau:  # keep the numbers small
            self.reset(t, y)
            return
        f = math.exp(-(t - self.last) / self._tau) if t > self.last else 1.0
        x, v = t - self._t0, y - self._y0
        w, st, sy, stt, sty, syy = self._sums
        self._sums = (w * f + 1, st * f + x, sy * f + v, stt * f + x * x, sty * f + x * v, syy * f + v * v)
        self.last = t

    def estimate(self) -> tuple[float, float] | None:
        """(slope, its standard error), or ``None`` while the samples span too little time."""
        w, st, sy, stt, sty, syy = self._sums
        if self.last is None or self.last - self._t0 < self._min_span or w < 3:
            return None
        sxx = stt - st * st / w
        if sxx <= 1e-9:
            return None
        sxy, syy_c = sty - st * sy / w, syy - sy * sy / w
        slope = sxy / sxx
        resid = max(1 / 12, (syy_c - slope * sxy) / (w - 2))  # a header is an integer: +-0.5 at least
        return slope, math.sqrt(resid / sxx)


class _Server:
    """What an adaptive bucket knows of the server bucket it mirrors (see the module doc)."""

    __slots__ = (
        "accepted", "answered", "bounds", "ceiling_capacity", "ceiling_rate", "cold", "cut_at", "fit", "frozen",
        "gate", "held_since", "prev", "seen", "stream_since", "young_cut",
    )

    def __init__(self, capacity: float, rate: float, *, cold: bool) -> None:
        self.ceiling_capacity, self.ceiling_rate = capacity, rate
        self.cold = cold  # no response seen yet
        self.frozen = cold  # cold, or held: no refill credit (hot path: a plain attribute)
        self.held_since: float | None = None  # refill frozen since then (cold wave or hold)
        self.gate = math.inf  # while cold: the last position of the first wave
        self.answered = 0.0  # tokens released and answered (or untracked): the rest is in flight
        self.accepted = 0.0  # tokens of answered requests the server counted
        self.bounds: deque[tuple[float, float]] = deque()  # (time, remaining + answered), decreasing: a sliding max
        self.stream_since = -math.inf  # first answer of the current run of answers (no gap > the window)
        self.young_cut = 0.0  # supply the current stream's bounds took while it was young (may come back)
        self.seen = 0.0  # the most the server has shown (remaining + 1): its capacity is at least that
        self.prev: tuple[float, float] | None = None  # (remaining, remaining + accepted) of the last sample
        self.cut_at = math.inf if cold else -math.inf  # 429s for requests sent since then cut the refill
        self.fit = _RateFit(max(5.0, 30.0 / rate), max(1.0, 10.0 / rate))

    def hold(self, now: float) -> None:
        self.held_since, self.frozen = now, True


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
        adaptive: mirror a server's bucket (cold wave, hold, in-flight, learned refill: see the
            module doc); cold until the first response unless ``initial`` is given.
    """

    __slots__ = (
        "_async_sleep", "_capacity", "_clock", "_lock", "_name", "_paused_until", "_queued", "_rate",
        "_seq", "_sleep", "_srv", "_stamp", "_supply", "_taken", "_throttled", "_tickets", "_wait_s", "_waited",
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
        adaptive: bool = False,
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
        self._tickets: set[_Ticket] = set()  # queued waiters; ``seq`` gives their order
        self._queued = 0.0  # sum of ticket costs: tokens reserved but not yet released
        self._seq = 0
        self._waited = 0
        self._wait_s = 0.0
        self._throttled = 0
        self._srv = _Server(self._capacity, self._rate, cold=initial is None) if adaptive else None

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

    # -- arithmetic (no I/O; lock held in every ``_..._locked``/``_advance``/``_thaw``) -------------
    def _advance(self, now: float) -> float:
        """Credit refill up to ``now`` (never backwards; the stamp may be in the future)."""
        srv = self._srv
        if srv is not None and srv.frozen:
            if srv.held_since is None or now < srv.held_since + _MAX_HOLD_S:
                return self._stamp
            self._thaw(srv.held_since + _MAX_HOLD_S)  # no answer came: stop waiting for one
        if now > self._stamp:
            room = self._capacity - (self._supply - self._taken)
            if room > 0:
                self._supply += min(room, (now - self._stamp) * self._rate)
            self._stamp = now
        return self._stamp

    def _thaw(self, t: float) -> None:
        """End a cold wave or hold at ``t``: refill counts from then, never for the time held."""
        srv = self._srv
        assert srv is not None
        if srv.cold:
            srv.cut_at = t  # 429s in the cold wave measure the server's level, not its refill
        srv.cold, srv.frozen, srv.held_since, srv.gate = False, False, None, math.inf
        self._stamp = max(self._stamp, t)

    def _inflight(self) -> float:
        """Tokens released (taken, not queued) whose answers have not come back."""
        if self._srv is None:
            return 0.0
        return max(0.0, self._taken - self._queued - self._srv.answered)

    def _check_cost(self, cost: float) -> None:
        if cost < 0 or cost > self._capacity:
            raise ValueError(f"cost {cost} outside [0, capacity={self._capacity}] of {self._name!r}")

    def _take_locked(self, cost: float, now: float) -> float:
        """Debit ``cost``; return the reservation's position. Starts a cold wave or a hold."""
        self._advance(now)
        srv = self._srv
        if srv is not None and srv.held_since is None:
            if srv.cold:
                srv.hold(now)
                srv.gate = self._taken + min(self._capacity, max(1.0, cost, self._rate * _WAVE_S))
            elif self._paused_until <= now and self._supply - self._taken >= cost and self._near_full(self._supply - self._taken):
                srv.hold(now)  # goes out now from a (nearly) full bucket: its answer ends the hold
        self._taken += cost
        return self._taken

    def _near_full(self, avail: float) -> bool:
        """The server's bucket may fill up before requests released now reach it."""
        return avail > self._capacity - max(1.0, self._rate * _HOLD_MARGIN_S)

    def _due_locked(self, pos: float, now: float, advanced: bool = False) -> float:
        """Clock time from which the tokens up to ``pos`` are covered (``-inf``: already)."""
        if not advanced:
            self._advance(now)
        srv = self._srv
        if pos <= min(self._supply, srv.gate if srv is not None else math.inf) + _EPS:
            return self._paused_until
        base = self._stamp
        if srv is not None and srv.held_since is not None:  # frozen: refill resumes when the hold expires, at the latest
            base = max(base, srv.held_since + _MAX_HOLD_S)
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
            if self._srv is not None:
                self._srv.answered += cost  # untracked: never counted in flight
        return max(0.0, due - now)

    def refund(self, cost: float = 1.0, *, untrack: bool = False) -> None:
        """Give back tokens from a reservation that will not be used (capped at capacity).

        Queued waiters move up (their due time is computed from the level); ``untrack`` also
        takes the tokens out of the in-flight count (a tracked acquisition that never went out).
        """
        with self._lock:
            self._supply = min(self._supply + cost, self._taken + self._capacity)
            if untrack and self._srv is not None:
                self._srv.answered += cost
            wakers = self._wakers_locked()
        _wake(wakers)

    def resize(self, capacity: float, refill_per_s: float) -> None:
        """Change burst and refill (learned buckets grow when the server shows more budget).

        The level is not raised; it is clipped if the capacity shrinks. For an adaptive bucket
        this is also the new ceiling of what it may learn.
        """
        if not capacity > 0 or not refill_per_s > 0:
            raise ValueError("capacity and refill_per_s must be positive")
        with self._lock:
            self._advance(self._clock())
            self._capacity, self._rate = float(capacity), float(refill_per_s)
            if self._srv is not None:
                self._srv.ceiling_capacity, self._srv.ceiling_rate = self._capacity, self._rate
            self._supply = min(self._supply, self._taken + self._capacity)
            wakers = self._wakers_locked()
        _wake(wakers)

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
            if t > stamp and not (self._srv is not None and self._srv.frozen):
                room = self._capacity - (self._supply - self._taken)
                self._supply += max(0.0, min(room, (t - stamp) * self._rate))
                self._stamp = t

    def reconcile(self, remaining: float, now: float | None = None) -> None:
        """Lower the level to what the server says is left; never raise it.

        The server counts requests it has *seen*. Our own waiters (tickets not yet released)
        have not been sent, nor (adaptive buckets) have released requests not yet answered, so
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
        Adaptive buckets: if the refused request was sent (``sent_at``) after the cold wave and
        after the last such cut, the refill is also halved (the header fit can raise it again):
        the server's bucket may be too small for the fit to see its refill.
        """
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            self._paused_until = max(self._paused_until, now + max(0.0, retry_after_s))
            self._stamp = max(self._stamp, self._paused_until)
            self._supply = self._taken - self._queued + min(self._capacity, 1.0)
            self._throttled += 1
            srv = self._srv
            if srv is not None and sent_at is not None and sent_at > srv.cut_at:
                self._rate = max(srv.ceiling_rate / 100, self._rate / 2)
                srv.cut_at = now

    def answered(
        self, cost: float = 1.0, *, remaining: float | None = None, accepted: bool = True,
        sent_at: float | None = None, now: float | None = None,
    ) -> None:
        """A response came back for a request that took ``cost`` here (0: it did not take from
        this bucket but the response carries its ``remaining`` header).

        Adaptive buckets: the request is no longer in flight; if it went out during a cold
        wave or hold (``sent_at`` at or after its start; ``None``: assume so), that ends; and
        ``remaining`` bounds the level (see :meth:`_bound_locked`). ``accepted``: the server
        counted the request against this bucket (any answer but a 429 blamed on it), which the
        refill fit needs. Plain buckets: :meth:`reconcile`.
        """
        now = self._clock() if now is None else now
        srv = self._srv
        with self._lock:
            if srv is None:
                if remaining is not None:
                    self._reconcile_locked(remaining, now)
                return
            self._advance(now)
            srv.answered += cost
            if accepted:
                srv.accepted += cost
            confirms = srv.frozen and (
                sent_at is None or (cost > 0 and (srv.held_since is None or sent_at >= srv.held_since)))
            was_cold = confirms and srv.cold
            if confirms:
                self._thaw(now)
            woke = confirms
            if remaining is not None:
                woke = self._bound_locked(srv, remaining, now, confirms, was_cold) or woke
                woke = self._learn_locked(srv, remaining, now) or woke
            avail = self._supply - self._taken + self._queued
            if confirms and self._queued > 0 and self._paused_until <= now and avail >= 1.0 and self._near_full(avail):
                srv.hold(now)  # (part of) the queue goes out now from a (nearly) full bucket
            wakers = self._wakers_locked() if woke else []
        _wake(wakers)

    def _push_bound(self, srv: _Server, remaining: float, now: float) -> float:
        """Record this answer's bound; return the best of the window (see :meth:`_bound_locked`)."""
        bound, bounds = remaining + srv.answered, srv.bounds
        if not bounds or bounds[-1][0] < now - _BOUND_WINDOW_S:
            srv.stream_since, srv.young_cut = now, 0.0  # earlier answers have left the window: a new stream
        elif bound + self._inflight() < bounds[0][1]:
            bounds.clear()  # overtaking hides at most what is in flight: someone else took tokens since
        while bounds and bounds[-1][1] <= bound:
            bounds.pop()
        bounds.append((now, bound))
        while bounds[0][0] < now - _BOUND_WINDOW_S:
            bounds.popleft()
        return bounds[0][1]

    def _bound_locked(self, srv: _Server, remaining: float, now: float, confirms: bool, was_cold: bool) -> bool:
        """Bring the level to what the server's answers prove; True if it rose.

        An answer says the server had ``remaining`` after serving it; of ours, those released
        but unanswered, and those released since, may not have been counted. In supply terms
        (released = taken - queued) that caps supply at ``remaining + answered``, crediting no
        refill (we do not know when the server counted). But answers overtake each other, and
        one that overtook requests served before it gives a bound too low by their number. So
        the cap is the best bound of the last second; while a stream of answers is younger than
        ``_BOUND_SETTLE_S`` (a burst's answers overtake the most) what it cut can come back when
        a better bound arrives; after that a cut is for good. The answer that ends a cold wave
        sets the level outright (ours was a guess); one that ends a hold may also raise it (the
        refill we held back, as far as the server proves it).
        """
        if was_cold:  # the most the server has shown is a safe capacity; it grows when it shows more
            wave = max(1.0, self._rate * _WAVE_S)
            self._capacity = min(srv.ceiling_capacity, max(remaining + 1, wave))
        stamp = self._advance(now)
        best = min(self._push_bound(srv, remaining, now) + max(0.0, stamp - now) * self._rate,
                   self._taken + self._capacity)
        before = self._supply
        if was_cold and stamp <= now:
            self._supply, srv.young_cut = best, 0.0
            return self._supply > before
        if confirms and stamp <= now:
            self._supply = max(self._supply, best)
        if now - srv.stream_since < _BOUND_SETTLE_S:
            uncut = self._supply + srv.young_cut
            self._supply = min(uncut, best)
            srv.young_cut = uncut - self._supply
        else:
            self._supply, srv.young_cut = min(self._supply, best), 0.0
        return self._supply > before

    def _learn_locked(self, srv: _Server, remaining: float, now: float) -> bool:
        """Capacity grows to what the server shows; refill follows the fit. True if waiters move up."""
        if remaining + 1 > self._capacity and self._capacity < srv.ceiling_capacity:
            self._capacity = min(srv.ceiling_capacity, remaining + 1)
        srv.seen = max(srv.seen, remaining + 1)
        y = remaining + srv.accepted
        prev, srv.prev = srv.prev, (remaining, y)
        # Had the server's bucket filled up since the last sample, it would have reached its
        # capacity (>= seen): prev remaining (+1 for rounding) + the refill since >= seen.
        if prev is None or not prev[0] + 1 + (y - prev[1]) < srv.seen:
            srv.fit.reset(now, y)
            return False
        srv.fit.add(now, y)
        if (est := srv.fit.estimate()) is None:
            return False
        slope, err = est
        target = min(srv.ceiling_rate, max(srv.ceiling_rate / 100, slope - err))
        if slope + 2 * err < self._rate and (self._rate < srv.ceiling_rate or slope < 0.9 * self._rate):
            self._rate = target  # clearly slower than we assume (a big margin off the configured rate)
            return False
        if slope - 2 * err > self._rate and self._rate < srv.ceiling_rate:
            self._rate = max(self._rate, target)
            return True
        return False

    def level(self, now: float | None = None) -> float:
        """Tokens available (at resume time while paused); negative means queued demand."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return self._supply - self._taken

    def snapshot(self, now: float | None = None) -> BucketStats:
        """Metrics of this bucket; one lock acquisition, no allocation beyond the result."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(now)
            return BucketStats(
                self._name, self._capacity, self._rate, self._supply - self._taken, len(self._tickets),
                self._waited, self._wait_s, self._throttled, max(0.0, self._paused_until - now),
            )

    # -- tickets (used by the waiting helpers) ------------------------------------------------
    def _enqueue(self, cost: float, now: float, track: bool = False) -> _Ticket | None:
        """Reserve; return ``None`` if the tokens are usable now, else a queued ticket."""
        with self._lock:
            return self._enqueue_locked(cost, now, track)

    def _enqueue_locked(self, cost: float, now: float, track: bool) -> _Ticket | None:
        pos = self._take_locked(cost, now)
        if self._due_locked(pos, now, advanced=True) <= now:
            if not track and self._srv is not None:
                self._srv.answered += cost  # nobody will report its answer: never count it in flight
            return None
        self._seq += 1
        ticket = _Ticket(self, cost, pos, self._seq, track)
        self._tickets.add(ticket)
        self._queued += cost
        return ticket

    def _due(self, ticket: _Ticket, now: float) -> float:
        with self._lock:
            return self._due_locked(ticket.pos, now) if ticket in self._tickets else -math.inf

    def _grant(self, ticket: _Ticket, start: float, end: float) -> None:
        with self._lock:
            if ticket not in self._tickets:
                return
            self._tickets.remove(ticket)
            self._queued -= ticket.cost
            if not ticket.track and self._srv is not None:
                self._srv.answered += ticket.cost
            self._advance(end)
            waited = min(end, self._covered_at(ticket.pos)) - start
            if waited > 0:
                self._waited += 1
                self._wait_s += waited

    def _cancel(self, ticket: _Ticket) -> None:
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
        _wake(wakers)

    def _wakers_locked(self) -> list[Callable[[], None]]:
        return [t.waker for t in self._tickets if t.waker is not None]

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


def _wake(wakers: list[Callable[[], None]]) -> None:
    for wake in wakers:  # outside any bucket lock: a waker may take other locks
        wake()


class _Reservation:
    """What one multi-bucket acquisition holds: queued tickets plus buckets that paid at once."""

    __slots__ = ("cost", "paid", "start", "tickets", "track")

    def __init__(
        self, cost: float, start: float, buckets: Sequence[TokenBucket], got: list[_Ticket | None], track: bool,
    ) -> None:
        self.cost = cost
        self.start = start
        self.track = track
        self.paid = [b for b, t in zip(buckets, got, strict=True) if t is None]
        self.tickets = [t for t in got if t is not None]

    @staticmethod
    def take(buckets: Sequence[TokenBucket], cost: float, track: bool) -> _Reservation | None:
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


def _unique(buckets: Sequence[TokenBucket]) -> Sequence[TokenBucket]:
    return buckets if len(buckets) < 2 or len(set(buckets)) == len(buckets) else tuple(dict.fromkeys(buckets))


async def acquire_all(buckets: Sequence[TokenBucket], cost: float = 1.0, *, track: bool = False) -> float:
    """Take ``cost`` from every bucket: reserve in all, wait for the latest, refund all on cancel.

    The buckets must share one clock (they come from one ``Throttle``); the first bucket's
    clock and async sleeper are used. ``track``: count the tokens as in flight once granted
    (the caller reports the answer with :meth:`TokenBucket.answered`). Returns the seconds waited.
    """
    buckets = _unique(buckets)
    if not buckets or (res := _Reservation.take(buckets, cost, track)) is None:
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


def acquire_all_sync(buckets: Sequence[TokenBucket], cost: float = 1.0, *, track: bool = False) -> float:
    """Blocking :func:`acquire_all` for threads; returns the seconds waited."""
    buckets = _unique(buckets)
    if not buckets or (res := _Reservation.take(buckets, cost, track)) is None:
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
