"""azrun.throttle.bucket and .waiting: the plain bucket's arithmetic, pauses, reconciliation and
blocking waits (time is faked; async waiting is in test_throttle_async.py)."""

from __future__ import annotations

import threading
import time

import pytest
from _throttle_support import FakeClock

from azrun.throttle import TokenBucket, acquire_all


def test_burst_then_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 2, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.5)
    assert bucket.reserve() == pytest.approx(1.0)  # queued behind the previous one
    clock.now += 10
    assert bucket.level() == pytest.approx(3.0)  # refill stops at capacity


def test_reserve_is_fifo_and_refund_returns_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    waits = [bucket.reserve() for _ in range(4)]
    assert waits == pytest.approx([0, 1, 2, 3])
    bucket.refund(1)
    assert bucket.reserve() == pytest.approx(3.0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
    with pytest.raises(ValueError):
        TokenBucket(2, 1).reserve(3)


def test_acquire_waits_with_injected_sleep() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 4, clock=clock, sleep=clock.sleep)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.25)
    assert clock.sleeps == [pytest.approx(0.25)]
    stats = bucket.snapshot()
    assert (stats.tokens_waited, stats.waiters) == (1, 0) and stats.wait_s == pytest.approx(0.25)


def test_pause_until_blocks_and_caps_the_resume_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, 1, clock=clock)
    bucket.pause_until(clock.now + 100)
    waits = [bucket.reserve() for _ in range(7)]
    # 5 tokens at resume time, then one per second: never more than capacity at once.
    assert waits == pytest.approx([100] * 5 + [101, 102])
    bucket.pause_until(clock.now + 50)  # a shorter pause never shortens the running one
    assert bucket.paused_until == clock.now + 100


def test_reconcile_lowers_but_never_raises() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200, 10, clock=clock)
    bucket.reconcile(50)
    assert bucket.level() == pytest.approx(50)
    bucket.reconcile(150)
    assert bucket.level() == pytest.approx(50)
    bucket.reconcile(-3)  # nonsense from the wire counts as 0
    assert bucket.level() == pytest.approx(0)


def test_reconcile_does_not_double_count_our_queued_waiters() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 1, clock=clock, sleep=lambda s: None)
    bucket.reserve(2)
    ticket = bucket._enqueue(1, clock.now)  # a waiter the server has not seen yet
    assert ticket is not None and bucket.level() == pytest.approx(-1)
    bucket.reconcile(0)  # server: nothing left; our waiter is already in the debt
    assert bucket.level() == pytest.approx(-1)
    clock.now += 3
    bucket.reconcile(1)  # level 2 locally, one token still queued -> server's 1 means 0 spare
    assert bucket.level() == pytest.approx(0)


def test_throttled_empties_pauses_and_counts() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 1, clock=clock)
    bucket.throttled(4)
    assert bucket.reserve() == pytest.approx(4.0)  # paused; 4 tokens refilled by then
    stats = bucket.snapshot()
    assert stats.throttled_429 == 1 and stats.paused_for_s == pytest.approx(4.0)
    assert "paused_for=4s" in repr(bucket) and "waiters=0" in repr(bucket)


def test_reconcile_during_pause_projects_to_resume_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 1, clock=clock)
    bucket.reconcile(0)
    bucket.pause_until(clock.now + 10)  # level at resume: 10
    bucket.reconcile(0)  # the server also says 0 now -> 10 by resume time; nothing changes
    assert bucket.level() == pytest.approx(10)


def test_throttled_resumes_with_the_one_promised_token_then_the_refill_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 2, clock=clock)
    bucket.throttled(10)  # a 429: our model was too optimistic; trust only Retry-After's token
    assert bucket.level() == pytest.approx(1)
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([10, 10.5, 11])
    bucket.reconcile(0)  # during the pause: projected to resume time it cannot lower further
    assert bucket.level() == pytest.approx(-2)


def test_resize_grows_capacity_without_raising_the_level() -> None:
    clock = FakeClock()
    bucket = TokenBucket(12, 1, clock=clock, initial=5)
    bucket.resize(100, 2)
    assert (bucket.capacity, bucket.refill_per_s, bucket.level()) == (100, 2, 5)
    clock.now += 10
    assert bucket.level() == pytest.approx(25)


def test_acquire_all_takes_from_every_bucket() -> None:
    clock = FakeClock()
    a = TokenBucket(1, 1, clock=clock, sleep=clock.sleep)
    b = TokenBucket(10, 1, clock=clock, sleep=clock.sleep)
    assert acquire_all((a, b)) == 0.0
    assert acquire_all((a, b)) == pytest.approx(1.0)
    assert b.level() == pytest.approx(9.0)  # 10 - 2 + 1 s of refill


def test_threads_share_one_bucket() -> None:
    bucket = TokenBucket(5, 100)
    waited: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            w = bucket.acquire()
            with lock:
                waited.append(w)

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    # 20 tokens, burst 5, 100/s: whatever the scheduling, the last 15 need 150 ms of refill.
    assert len(waited) == 20 and elapsed >= 0.145
    assert bucket.snapshot().tokens_waited >= 1 and bucket.snapshot().waiters == 0


def test_sync_waiter_moves_up_when_an_async_waiter_ahead_cancels() -> None:
    import asyncio

    bucket = TokenBucket(1, 2)
    t0 = time.monotonic()
    bucket.acquire()
    done_at: list[float] = []

    def sync_waiter() -> None:
        bucket.acquire()  # queued second: due at t0 + 1.0 until the first cancels
        done_at.append(time.monotonic() - t0)

    async def cancel_first() -> None:
        first = asyncio.ensure_future(bucket.aacquire())  # due at t0 + 0.5
        while bucket.snapshot().waiters < 1:
            await asyncio.sleep(0.001)
        thread = threading.Thread(target=sync_waiter)
        thread.start()
        while bucket.snapshot().waiters < 2:
            await asyncio.sleep(0.001)
        first.cancel()
        await asyncio.to_thread(thread.join)

    asyncio.run(cancel_first())
    assert 0.45 <= done_at[0] < 0.85  # woke for the freed slot, not at its original 1.0 s


def test_pause_and_reconcile_re_time_queued_waiters() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 1, clock=clock)
    for _ in range(4):
        assert bucket._enqueue(1, clock.now) is None
    first, second = bucket._enqueue(1, clock.now), bucket._enqueue(1, clock.now)
    assert first is not None and second is not None
    assert [bucket._due(t, clock.now) for t in (first, second)] == pytest.approx([1001, 1002])
    bucket.reconcile(0)  # nothing to lower: our queue is already in the debt
    assert [bucket._due(t, clock.now) for t in (first, second)] == pytest.approx([1001, 1002])
    bucket.throttled(5)  # a 429: one token at resume, then the refill rate
    assert [bucket._due(t, clock.now) for t in (first, second)] == pytest.approx([1005, 1006])
    bucket.pause_until(clock.now + 8)  # a longer pause: refill until then is credited
    assert [bucket._due(t, clock.now) for t in (first, second)] == pytest.approx([1008, 1008])
