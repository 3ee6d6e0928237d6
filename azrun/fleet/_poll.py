"""Completion polling on a schedule, not a loop per target.

ARM reads (25/s per subscription) are what a fleet run spends most; the throttle policy is
the hard guarantee that none is over-spent, and this module is what keeps the queue in front
of it short:

* :func:`first_delay` / :func:`next_delay` (pure): no poll before the earliest plausible end
  (the learned median duration of targets that already finished, or a guess), then an
  exponential backoff that grows faster while the output still grows (the script is busy)
  and is pulled in around the learned 90th percentile (when most scripts end).
* :class:`PollScheduler`: one per subscription; a min-heap of (due, seq, key), one timer, a
  token bucket with the poll share of the read budget, and a cap on polls in flight.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from azrun.fleet._options import PollPolicy
from azrun.throttle import TokenBucket

__all__ = ["CadenceEstimate", "DurationStats", "PollScheduler", "first_delay", "next_delay", "unstarted_delay"]

_LOG = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class DurationStats:
    """Durations of finished targets (dispatch to end), for the schedule's estimates."""

    __slots__ = ("_min_count", "_sorted")

    def __init__(self, min_count: int = 3) -> None:
        self._sorted: list[float] = []
        self._min_count = min_count

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float | None:
        """The q-quantile once ``min_count`` durations are known, else None."""
        n = len(self._sorted)
        if n < max(1, self._min_count):
            return None
        return self._sorted[min(n - 1, int(q * n))]

    def __len__(self) -> int:
        return len(self._sorted)


class CadenceEstimate:
    """The VM agent's report interval, learned from the answers: the shortest gap between two
    reads that saw a target's output grow, with at least one unchanged read between them (so the
    gap is the agent's, not the reads'). At most ``ceiling`` (a silent script proves nothing)."""

    __slots__ = ("_ceiling", "_gaps", "_min_samples")

    def __init__(self, ceiling: float, min_samples: int = 2) -> None:
        self._gaps: list[float] = []
        self._ceiling = ceiling
        self._min_samples = min_samples

    def observe(self, gap_s: float) -> None:
        if gap_s > 0:
            self._gaps.append(gap_s)

    @property
    def value(self) -> float | None:
        if len(self._gaps) < self._min_samples:
            return None
        return min(self._ceiling, min(self._gaps))


def unstarted_delay(policy: PollPolicy, *, elapsed: float, start_p50: float | None, cadence: float | None) -> float:
    """Seconds to the next read of a target the agent has not started yet: when the learned start
    latency says it should have started, else backing off with the wait (1, 2, 4, 8 s ...) up to
    the agent's report interval; reading faster than the agent reports only spends the budget."""
    ceiling = cadence or policy.agent_cadence_s
    if start_p50 is not None and elapsed < start_p50:
        return max(policy.min_interval_s, min(ceiling, start_p50 - elapsed + policy.min_interval_s))
    return max(policy.min_interval_s, min(ceiling, max(1.0, elapsed)))


def first_delay(policy: PollPolicy, stats: DurationStats) -> float:
    """Seconds from dispatch to the first poll: when most targets have finished (the learned 90th
    percentile, but at most 1.5 x the median so a long tail does not delay everyone), else a guess."""
    p50, p90 = stats.quantile(0.5), stats.quantile(0.9)
    learned = min(p90, 1.5 * p50) if p50 is not None and p90 is not None else None
    return max(policy.min_first_s, learned if learned is not None else policy.initial_guess_s)


def next_delay(
    policy: PollPolicy,
    stats: DurationStats,
    *,
    prev_interval: float,
    elapsed: float,
    growing: bool,
    until_deadline: float | None = None,
) -> float:
    """Seconds to the next poll of a target that was still running ``elapsed`` s after dispatch.

    Exponential backoff from the previous interval, but never more than a fraction of the time
    the target has run so far (``elapsed_fraction``, doubled while output grows): a target found
    running just past the typical end is looked at again soon, a long one rarely.
    """
    factor = policy.growing_backoff if growing else policy.backoff
    fraction = policy.elapsed_fraction * (2 if growing else 1)
    delay = min(prev_interval * factor, fraction * elapsed)
    p90 = stats.quantile(0.9)
    if p90 is not None and elapsed < p90:
        delay = min(delay, p90 - elapsed + policy.min_interval_s)
    delay = min(policy.max_interval_s, max(policy.min_interval_s, delay))
    if until_deadline is not None:
        delay = min(delay, max(0.0, until_deadline) + 0.05)
    return delay


class PollScheduler(Generic[K]):
    """Calls ``poll(key)`` when each key is due, within a read budget and an in-flight cap.

    Args:
        poll: the coroutine that reads one target (it reschedules the key itself if needed).
        budget: token bucket for polls (``None``: no pacing beyond the throttle).
        max_inflight: polls awaiting an answer at once.
    """

    def __init__(
        self,
        poll: Callable[[K], Awaitable[None]],
        *,
        budget: TokenBucket | None = None,
        max_inflight: int = 64,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._poll = poll
        self._budget = budget
        self._clock = clock
        self._slots = asyncio.Semaphore(max(1, max_inflight))
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, tuple[float, int]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        self.name = name
        self.polls = 0

    def __repr__(self) -> str:
        return f"PollScheduler({self.name!r}, queued={len(self._due)}, inflight={len(self._tasks)})"

    def __len__(self) -> int:
        return len(self._due)

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name=f"poll-{self.name}")

    def schedule(self, key: K, delay_s: float) -> None:
        """(Re)schedule ``key`` ``delay_s`` from now; replaces any earlier schedule of it."""
        entry = (self._clock() + max(0.0, delay_s), next(self._seq))
        self._due[key] = entry
        heapq.heappush(self._heap, (entry[0], entry[1], key))
        if self._heap[0][1] == entry[1]:
            self._wake.set()

    def discard(self, key: K) -> None:
        self._due.pop(key, None)

    def scheduled(self, key: K) -> bool:
        return key in self._due

    def due_in(self, key: K) -> float | None:
        """Seconds until ``key`` is due (None when not scheduled)."""
        entry = self._due.get(key)
        return None if entry is None else entry[0] - self._clock()

    async def _run(self) -> None:
        while not self._closed:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, seq, key = self._heap[0]
            if self._due.get(key) != (due, seq):
                heapq.heappop(self._heap)  # stale: rescheduled or discarded
                continue
            wait = due - self._clock()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):  # distinct on 3.10
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            heapq.heappop(self._heap)
            del self._due[key]
            if self._budget is not None:
                await self._budget.aacquire()
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._one(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, key: K) -> None:
        try:
            self.polls += 1
            await self._poll(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # a poll must never take the scheduler down
            _LOG.exception("poll of %s failed", key)
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Stop scheduling and cancel polls in flight."""
        self._closed = True
        self._wake.set()
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runner = None
