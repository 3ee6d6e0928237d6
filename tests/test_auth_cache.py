"""TokenCache: single-flight across threads and event loops, refresh timing, failures, speed.

These drive the cache with a plain fetch function (no wire); test_auth_imds.py does the same
against a real identity endpoint.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable

import pytest
from azure.core.credentials import AccessTokenInfo

from azrun.auth import RefreshPolicy, TokenCache, clear_process_cache


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    clear_process_cache()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A fetch function that counts calls and can be slowed, failed or gated."""

    def __init__(self, clock: Callable[[], float], *, lifetime_s: int = 3600, delay_s: float = 0.0) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.delay_s = delay_s
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def __call__(self) -> AccessTokenInfo:
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return AccessTokenInfo(f"token-{n}", int(self.clock()) + self.lifetime_s)


def inline(fn: Callable[[], None]) -> None:
    fn()


def test_warm_hit_is_microseconds() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time)
    cache.get("k", issuer)
    n = 50_000
    start = time.perf_counter()
    for _ in range(n):
        cache.get("k", issuer)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    assert issuer.calls == 1
    assert per_call_us < 50, per_call_us  # ~1 µs idle; generous for a loaded CI machine


def test_threads_and_several_event_loops_share_one_fetch() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time, delay_s=0.3)
    results: list[str] = []
    lock = threading.Lock()

    def thread_caller() -> None:
        token = cache.get("k", issuer).token
        with lock:
            results.append(token)

    def loop_caller() -> None:
        async def main() -> list[str]:
            infos = await asyncio.gather(*(cache.aget("k", issuer) for _ in range(200)))
            return [i.token for i in infos]

        tokens = asyncio.run(main())
        with lock:
            results.extend(tokens)

    threads = [threading.Thread(target=thread_caller) for _ in range(20)]
    threads += [threading.Thread(target=loop_caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert issuer.calls == 1
    assert len(results) == 20 + 3 * 200
    assert set(results) == {"token-1"}


def test_keys_are_independent() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time)
    a = cache.get(("id", ("mgmt",)), issuer)
    b = cache.get(("id", ("storage",)), issuer)
    assert (a.token, b.token) == ("token-1", "token-2")
    assert cache.get(("id", ("mgmt",)), issuer).token == "token-1"


def test_refreshes_in_background_and_never_returns_an_expired_token() -> None:
    clock = Clock()
    spawned: list[Callable[[], None]] = []
    cache = TokenCache(clock=clock, jitter=lambda: 0.0, spawn=spawned.append)
    issuer = Issuer(clock, lifetime_s=3600)
    first = cache.get("k", issuer)
    assert first.refresh_on == int(clock.now) + 3600 - 300  # 5 min margin, no jitter

    clock.now += 3600 - 299  # inside the refresh window, still valid
    assert cache.get("k", issuer).token == "token-1"  # handed out at once...
    assert len(spawned) == 1  # ...while one background refresh was started
    assert cache.get("k", issuer).token == "token-1"
    assert len(spawned) == 1  # not a second one
    spawned.pop()()
    assert cache.get("k", issuer).token == "token-2"

    clock.now += 3600 - 10  # token-2 has 10 s left: below the 30 s safety margin
    assert cache.get("k", issuer).token == "token-3"  # fetched in the foreground
    assert issuer.calls == 3


def test_refresh_on_from_the_issuer_is_honoured() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock, jitter=lambda: 0.0, spawn=inline)

    def fetch() -> AccessTokenInfo:
        return AccessTokenInfo("t", int(clock.now) + 86400, refresh_on=int(clock.now) + 43200)

    assert cache.get("k", fetch).refresh_on == int(clock.now) + 43200


def test_short_lived_tokens_scale_the_margins() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock, jitter=lambda: 0.0, spawn=inline)
    issuer = Issuer(clock, lifetime_s=10)
    info = cache.get("k", issuer)
    assert info.refresh_on == int(clock.now) + 5  # half the lifetime, not 300 s
    clock.now += 9.5  # past the 1 s safety margin
    assert cache.get("k", issuer).token == "token-2"


def test_jitter_spreads_refresh_times() -> None:
    refresh = set()
    for j in (0.0, 0.5, 0.99):
        clock = Clock()
        cache = TokenCache(clock=clock, jitter=functools.partial(float, j), policy=RefreshPolicy())
        info = cache.get("k", Issuer(clock))
        assert info.refresh_on is not None
        refresh.add(info.refresh_on - int(clock.now))
    assert len(refresh) == 3
    assert all(3600 - 300 <= r <= 3600 - 240 for r in refresh)


def test_failure_reaches_every_waiter_and_the_next_call_retries() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time)
    issuer.gate = threading.Event()
    issuer.fail = RuntimeError("endpoint down")
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            cache.get("k", issuer)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    issuer.gate.set()
    for t in threads:
        t.join(10)
    assert issuer.calls == 1
    assert len(errors) == 10
    issuer.fail = None
    assert cache.get("k", issuer).token == "token-2"


def test_failed_background_refresh_keeps_the_valid_token() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock, jitter=lambda: 0.0, spawn=inline)
    issuer = Issuer(clock)
    cache.get("k", issuer)
    clock.now += 3600 - 200
    issuer.fail = RuntimeError("blip")
    assert cache.get("k", issuer).token == "token-1"  # refresh failed behind the scenes
    assert cache.get("k", issuer).token == "token-1"  # and is not retried at once
    assert issuer.calls == 2
    clock.now += 6  # RefreshPolicy.retry_s later
    issuer.fail = None
    assert cache.get("k", issuer).token == "token-1"  # this call triggered the refresh...
    assert cache.get("k", issuer).token == "token-3"  # ...so the next one has the new token


async def test_a_cancelled_waiter_does_not_cancel_the_fetch_for_others() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time)
    issuer.gate = threading.Event()
    first = asyncio.ensure_future(cache.aget("k", issuer))
    second = asyncio.ensure_future(cache.aget("k", issuer))
    await asyncio.sleep(0.05)
    first.cancel()
    await asyncio.sleep(0.01)
    issuer.gate.set()
    assert (await asyncio.wait_for(second, 5)).token == "token-1"
    assert first.cancelled()
    assert issuer.calls == 1


def test_invalidate_forces_a_new_fetch_and_repr_has_no_token() -> None:
    cache = TokenCache()
    issuer = Issuer(time.time)
    cache.get("k", issuer)
    cache.invalidate("k")
    assert cache.get("k", issuer).token == "token-2"
    assert "token-" not in repr(cache)
