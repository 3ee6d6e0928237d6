"""AdaptiveBucket: a TokenBucket that mirrors a *server's* bucket seen only through its answers.

Every bucket a ``Throttle`` makes is one (the auth, storage and poll buckets stay plain). On
top of the bucket arithmetic it adds:

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
  answers is young (see ``AdaptiveBucket._bound_locked``).
* **Learned refill.** ``remaining + accepted answers`` grows at exactly the server's refill
  rate while the server's bucket is not full. A least-squares fit of it over time (recent
  samples weigh more) replaces the configured refill when it is clearly lower (never above the
  configured value). A 429 for a request sent after the cold wave halves the refill once per
  episode (a bucket too small to be seen refilling); the fit raises it again.
"""

from __future__ import annotations

import math
import time
from collections import deque

from azrun.throttle.bucket import TokenBucket
from azrun.throttle.waiting import AsyncSleep, Clock, SyncSleep, wake

__all__ = ["AdaptiveBucket"]

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


class AdaptiveBucket(TokenBucket):
    """A :class:`TokenBucket` mirroring a server's bucket (cold wave, hold, in flight, learned
    refill: see the module doc). Cold until the first response unless ``initial`` is given.

    ``capacity`` and ``refill_per_s`` are the configured (published) values: the ceiling of
    what it learns. Report every answer with :meth:`answered`.
    """

    __slots__ = ("_srv",)

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
        super().__init__(
            capacity, refill_per_s, name=name, clock=clock, sleep=sleep, async_sleep=async_sleep, initial=initial,
        )
        self._srv = _Server(self._capacity, self._rate, cold=initial is None)

    # -- hooks of the bucket arithmetic (lock held) ---------------------------------------------
    def _advance(self, now: float) -> float:
        srv = self._srv
        if srv.frozen:
            if srv.held_since is None or now < srv.held_since + _MAX_HOLD_S:
                return self._stamp
            self._thaw(srv.held_since + _MAX_HOLD_S)  # no answer came: stop waiting for one
        return super()._advance(now)

    def _inflight(self) -> float:
        return max(0.0, self._taken - self._queued - self._srv.answered)

    def _untracked(self, cost: float) -> None:
        self._srv.answered += cost

    def _frozen(self) -> bool:
        return self._srv.frozen

    def _gate(self) -> float:
        return self._srv.gate

    def _refill_from(self) -> float:
        # frozen: refill resumes when the hold expires, at the latest
        held = self._srv.held_since
        return -math.inf if held is None else held + _MAX_HOLD_S

    def _take_locked(self, cost: float, now: float) -> float:
        """Also starts a cold wave or a hold."""
        self._advance(now)
        srv = self._srv
        if srv.held_since is None:
            if srv.cold:
                srv.hold(now)
                srv.gate = self._taken + min(self._capacity, max(1.0, cost, self._rate * _WAVE_S))
            elif self._paused_until <= now and self._supply - self._taken >= cost and self._near_full(self._supply - self._taken):
                srv.hold(now)  # goes out now from a (nearly) full bucket: its answer ends the hold
        self._taken += cost
        return self._taken

    def _resized_locked(self) -> None:
        """A resize also sets the ceiling of what the bucket may learn."""
        self._srv.ceiling_capacity, self._srv.ceiling_rate = self._capacity, self._rate

    def _throttled_locked(self, now: float, sent_at: float | None) -> None:
        """If the refused request was sent (``sent_at``) after the cold wave and after the last
        such cut, halve the refill (the header fit can raise it again): the server's bucket may
        be too small for the fit to see its refill."""
        srv = self._srv
        if sent_at is not None and sent_at > srv.cut_at:
            self._rate = max(srv.ceiling_rate / 100, self._rate / 2)
            srv.cut_at = now

    def _idle_locked(self) -> bool:
        """Not waiting for an answer, and no refill learned below the configured one. A fresh
        bucket is then no less careful: it starts cold (one wave, then the server's word, which
        also relearns a smaller capacity), whereas a lower refill it could only relearn by 429s."""
        srv = self._srv
        return (not srv.frozen or (srv.cold and self._taken == 0)) and self._rate >= srv.ceiling_rate

    def _thaw(self, t: float) -> None:
        """End a cold wave or hold at ``t``: refill counts from then, never for the time held."""
        srv = self._srv
        if srv.cold:
            srv.cut_at = t  # 429s in the cold wave measure the server's level, not its refill
        srv.cold, srv.frozen, srv.held_since, srv.gate = False, False, None, math.inf
        self._stamp = max(self._stamp, t)

    def _near_full(self, avail: float) -> bool:
        """The server's bucket may fill up before requests released now reach it."""
        return avail > self._capacity - max(1.0, self._rate * _HOLD_MARGIN_S)

    # -- answers ----------------------------------------------------------------------------------
    def answered(
        self, cost: float = 1.0, *, remaining: float | None = None, accepted: bool = True,
        sent_at: float | None = None, now: float | None = None,
    ) -> None:
        """A response came back for a request that took ``cost`` here (0: it did not take from
        this bucket but the response carries its ``remaining`` header).

        The request is no longer in flight; if it went out during a cold wave or hold
        (``sent_at`` at or after its start; ``None``: assume so), that ends; and ``remaining``
        bounds the level (see :meth:`_bound_locked`). ``accepted``: the server counted the
        request against this bucket (any answer but a 429 blamed on it), which the refill fit needs.
        """
        now = self._clock() if now is None else now
        srv = self._srv
        with self._lock:
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
        wake(wakers)

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
