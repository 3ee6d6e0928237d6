"""The simulator's own token buckets (deliberately not azrun.throttle: the simulator must not
share the client's bugs).

A bucket holds up to ``capacity`` tokens and gains ``refill_per_s`` per second; a request
takes one token or is refused with the seconds until one is there (the ``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class SimBucket:
    """A plain token bucket: take() or be told how long to wait."""

    __slots__ = ("_clock", "_level", "_lock", "_stamp", "capacity", "refill_per_s")

    def __init__(self, capacity: float, refill_per_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self._clock = clock
        self._level = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.refill_per_s)
        self._stamp = now

    def take(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0.0, or take nothing and return seconds to wait."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            if self._level >= cost:
                self._level -= cost
                return 0.0
            if self.refill_per_s <= 0:
                return math.inf
            return (cost - self._level) / self.refill_per_s

    def remaining(self) -> int:
        """Whole tokens left now (what the ``x-ms-ratelimit-remaining-*`` headers report)."""
        with self._lock:
            self._refill(self._clock())
            return int(self._level)

    def __repr__(self) -> str:
        return f"SimBucket(level={self._level:.1f}/{self.capacity:g}, refill={self.refill_per_s:g}/s)"
