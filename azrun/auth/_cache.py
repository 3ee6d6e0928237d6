"""The process's token cache: in memory only, single-flight, refreshed before expiry.

One :class:`TokenCache` serves every credential in the process, sync and async, on any number
of threads and event loops at once. Per key (identity, scopes, tenant) at most one fetch runs;
everyone else who needs that token waits for it:

* threads wait on a :class:`concurrent.futures.Future`;
* asyncio tasks ``await asyncio.wrap_future`` of the same future, so no event loop owns it.
  The future is marked running at birth, so a cancelled waiter cannot cancel it for the rest.

A warm hit takes no lock: one dict read and one clock read. A token is handed out until its
refresh time; after that, while it is still safely valid, callers keep getting it and one
background thread fetches the next one. Only a token too close to expiry makes callers wait,
so an expired token is never returned. Nothing here ever touches a disk.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # azure.core costs ~80 ms to import; azrun imports it only when a token is needed
    from azure.core.credentials import AccessTokenInfo

__all__ = ["Fetch", "RefreshPolicy", "TokenCache"]

Fetch = Callable[[], "AccessTokenInfo"]
Clock = Callable[[], float]
Spawn = Callable[[Callable[[], None]], None]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When a cached token is refreshed and when it stops being handed out.

    Attributes:
        margin_s: refresh this long before expiry (for long-lived tokens). 300 s matches msal,
            which only fetches anew inside the last 5 minutes, and azure-core's bearer policy.
        margin_fraction: ...but never earlier than this fraction of the lifetime before expiry.
        jitter_fraction: the margin shrinks by a random share up to this fraction, so many
            processes started together do not refresh together (and msal's 5-minute rule holds).
        safety_s: a token with less than this left is not handed out (callers wait for a new one).
        safety_fraction: ...capped at this fraction of the lifetime, for very short tokens.
        retry_s: after a failed background refresh, wait this long before trying again.
    """

    margin_s: float = 300.0
    margin_fraction: float = 0.5
    jitter_fraction: float = 0.2
    safety_s: float = 30.0
    safety_fraction: float = 0.1
    retry_s: float = 5.0


@dataclass(slots=True)
class _Entry:
    info: AccessTokenInfo = field(repr=False)
    refresh_at: float
    usable_until: float
    retry_at: float = 0.0


class _Flight:
    """One fetch in progress; ``owner`` is True for the caller that must start it."""

    __slots__ = ("future", "owner")

    def __init__(self, future: Future[AccessTokenInfo], owner: bool) -> None:
        self.future = future
        self.owner = owner


def _spawn_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="azrun-token-fetch", daemon=True).start()


class TokenCache:
    """In-memory tokens keyed by any hashable (azrun uses ``(identity, scopes, tenant, cae)``).

    Args:
        policy: refresh timing.
        clock: wall-clock seconds (token expiry is Unix time).
        jitter: returns a float in [0, 1); injected in tests.
        spawn: runs a callable in the background (a daemon thread by default).
    """

    __slots__ = ("_clock", "_entries", "_inflight", "_jitter", "_lock", "_policy", "_spawn", "fetches")

    def __init__(
        self,
        *,
        policy: RefreshPolicy | None = None,
        clock: Clock = time.time,
        jitter: Callable[[], float] = random.random,
        spawn: Spawn = _spawn_thread,
    ) -> None:
        self._policy = policy or RefreshPolicy()
        self._clock = clock
        self._jitter = jitter
        self._spawn = spawn
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._inflight: dict[Hashable, Future[AccessTokenInfo]] = {}
        self.fetches = 0  # fetches started, for tests and repr

    def get(self, key: Hashable, fetch: Fetch) -> AccessTokenInfo:
        """The token for ``key``; if none is usable, fetch it (once, whoever else is asking)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry.info
        got = self._claim(key, fetch)
        if not isinstance(got, _Flight):
            return got
        if got.owner:
            self._run(key, got.future, fetch)  # in the caller's thread: no thread hop when cold
        return got.future.result()

    async def aget(self, key: Hashable, fetch: Fetch) -> AccessTokenInfo:
        """Async :meth:`get`: the fetch runs in a thread, waiters await the shared future."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry.info
        got = self._claim(key, fetch)
        if not isinstance(got, _Flight):
            return got
        if got.owner:
            future = got.future
            self._spawn(lambda: self._run(key, future, fetch))
        return await asyncio.wrap_future(got.future)

    def invalidate(self, key: Hashable) -> None:
        """Forget the token for ``key`` (a 401 or a claims challenge says it is no good)."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every token (fetches in flight still complete their waiters)."""
        with self._lock:
            self._entries.clear()

    def _claim(self, key: Hashable, fetch: Fetch) -> AccessTokenInfo | _Flight:
        """A usable token, or the flight to wait for (which the caller may have to start)."""
        with self._lock:
            entry = self._entries.get(key)
            now = self._clock()
            if entry is not None and now < entry.refresh_at:
                return entry.info
            inflight = self._inflight.get(key)
            if entry is None or now >= entry.usable_until:
                if inflight is not None:
                    return _Flight(inflight, owner=False)
                return _Flight(self._new_flight(key), owner=True)
            if inflight is not None or now < entry.retry_at:
                return entry.info
            background = self._new_flight(key)
        # Still good: hand it out and refresh behind the caller's back (spawned outside the lock).
        self._spawn(lambda: self._run(key, background, fetch))
        return entry.info

    def _new_flight(self, key: Hashable) -> Future[AccessTokenInfo]:
        future: Future[AccessTokenInfo] = Future()
        future.set_running_or_notify_cancel()  # RUNNING: Future.cancel() now always fails
        self._inflight[key] = future
        self.fetches += 1
        return future

    def _run(self, key: Hashable, future: Future[AccessTokenInfo], fetch: Fetch) -> None:
        """Fetch, store, and complete the flight; a failure completes it with the error."""
        try:
            info = fetch()
        except BaseException as exc:
            with self._lock:
                self._end_flight(key, future)
                entry = self._entries.get(key)
                if entry is not None:
                    entry.retry_at = self._clock() + self._policy.retry_s
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        entry = self._entry_for(info)
        with self._lock:
            self._end_flight(key, future)
            self._entries[key] = entry
        future.set_result(entry.info)

    def _end_flight(self, key: Hashable, future: Future[AccessTokenInfo]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]

    def _entry_for(self, info: AccessTokenInfo) -> _Entry:
        """Schedule refresh and retirement of a fresh token; hand out a copy saying when."""
        from azure.core.credentials import AccessTokenInfo

        p = self._policy
        now = self._clock()
        lifetime = max(0.0, info.expires_on - now)
        margin = min(p.margin_s, lifetime * p.margin_fraction) * (1.0 - p.jitter_fraction * self._jitter())
        refresh_at = info.expires_on - margin
        if info.refresh_on is not None and info.refresh_on > now:
            # The issuer asked for an earlier refresh (msal: half of a >= 2 h lifetime). Go a
            # little after it, so msal's own cache agrees the token is due.
            refresh_at = min(refresh_at, info.refresh_on + min(60.0, lifetime * 0.05) * self._jitter())
        usable_until = info.expires_on - min(p.safety_s, lifetime * p.safety_fraction)
        refresh_at = min(refresh_at, usable_until)
        handed = AccessTokenInfo(
            info.token, info.expires_on, token_type=info.token_type, refresh_on=int(refresh_at)
        )
        return _Entry(handed, refresh_at, usable_until)

    def __repr__(self) -> str:
        return f"TokenCache(tokens={len(self._entries)}, inflight={len(self._inflight)}, fetches={self.fetches})"

