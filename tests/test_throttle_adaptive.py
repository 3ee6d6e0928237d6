"""azrun.throttle.adaptive: a bucket mirroring a server's bucket seen only through its answers
(cold wave, hold, in flight, learned refill), played against the simulator's own bucket."""

from __future__ import annotations

import math

import pytest
from _throttle_support import FakeClock

from azrun.sim.limits import SimBucket
from azrun.throttle import AdaptiveBucket, TokenBucket
from azrun.throttle.adaptive import _MAX_HOLD_S
from azrun.throttle.waiting import Ticket


def launch(bucket: TokenBucket, n: int, now: float) -> list[Ticket | None]:
    """``n`` tracked reservations (as the policies make them): ``None`` for each that goes out at once."""
    return [bucket._enqueue(1, now, track=True) for _ in range(n)]


def test_cold_bucket_sends_one_wave_then_takes_the_servers_word() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock)
    got = launch(bucket, 15, clock.now)
    assert got[:10] == [None] * 10  # 1 s of refill goes out, not the assumed burst of 200
    waiting = [t for t in got if t is not None]
    assert len(waiting) == 5 and all(bucket._due(t, clock.now) >= clock.now + _MAX_HOLD_S for t in waiting)
    clock.now += 0.3
    assert bucket.level() == pytest.approx(185)  # no refill credited while cold
    bucket.answered(remaining=19, sent_at=1000.0)  # a stricter server: it had 20; 9 more of ours on the way
    assert bucket.capacity == 20  # the most the server has shown
    assert bucket.level() == pytest.approx(19 - 9 - 5)  # its word, minus in flight, minus our queue
    assert all(bucket._due(t, clock.now) <= clock.now for t in waiting)  # re-timed and woken: they go now


def test_hold_credits_no_refill_until_an_answer_proves_the_server_counts() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock, initial=200)  # warm and full
    got = launch(bucket, 205, clock.now)
    queued = [t for t in got if t is not None]
    assert got[:200] == [None] * 200 and len(queued) == 5
    clock.now += 1.0  # the burst waits for connections: the server's bucket is still full
    assert bucket.level() == pytest.approx(-5)  # so no refill is credited
    bucket.answered(sent_at=999.0)  # a request sent before the burst proves nothing about it
    assert bucket.level() == pytest.approx(-5)
    assert bucket._due(queued[0], clock.now) == pytest.approx(1000 + _MAX_HOLD_S + 0.1)  # the hold expires at the latest
    clock.now += 0.5
    bucket.answered(remaining=199, sent_at=1000.0)  # the first answer of the burst: 198 more on the way
    assert bucket.level() == pytest.approx(-4)  # the server's 199 - 198, less our 5 queued
    assert bucket._due(queued[0], clock.now) <= clock.now
    assert bucket._due(queued[1], clock.now) == pytest.approx(clock.now + 0.1)  # refill from now on


def test_hold_ends_by_itself_when_no_answer_comes() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock, initial=200)
    launch(bucket, 150, clock.now)
    clock.now += _MAX_HOLD_S + 2
    assert bucket.level() == pytest.approx(50 + 2 * 10)  # refill counts from the expiry


def test_no_hold_when_nothing_goes_out_under_it() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(10, 10, clock=clock)
    got = launch(bucket, 30, clock.now)  # cold: a wave of 10
    clock.now += 0.1
    bucket.answered(remaining=0, sent_at=1000.0)  # the server is empty: nothing goes out now, no hold
    clock.now += 0.5
    assert bucket.level() == pytest.approx(-20 + 0.5 * 10 - 9)  # refill credited (9 still in flight)
    assert got.count(None) == 10


def test_answers_overtaking_each_other_do_not_cost_tokens() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(100, 0.01, clock=clock, initial=20)
    launch(bucket, 20, clock.now)
    # The server had 30 and served them in order 0..19 (remaining 29 - k), but the answers come
    # back last-served first: each alone says our in-flight requests will overdraw it.
    for k in reversed(range(20)):
        clock.now += 0.01
        bucket.answered(remaining=29 - k, sent_at=1000.0)
        assert bucket.level() >= -10
    assert bucket.level() == pytest.approx(0, abs=0.01)  # once all are back: nothing was lost


def test_a_real_shortfall_is_cut_at_once_and_for_good() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(100, 0.01, clock=clock, initial=20)
    launch(bucket, 5, clock.now)
    clock.now += 0.05
    bucket.answered(remaining=2, sent_at=1000.0)  # someone else drained it: 2 left, 4 of ours on the way
    assert bucket.level() == pytest.approx(-2, abs=0.01)  # the server's 2, less our 4 still on the way
    clock.now += 0.5
    bucket.answered(remaining=1, sent_at=1000.0)
    clock.now += 0.5
    bucket.answered(remaining=9, sent_at=1000.0)  # later headers do not raise it again
    assert bucket.level() == pytest.approx(-2, abs=0.02)


def run_against(server: SimBucket, bucket: TokenBucket, clock: FakeClock, n: int, until_s: float = 60) -> list[float]:
    """``n`` requests at once; every 10 ms those due go out and the server answers at once (as
    the policies would report it). Returns when each 429 happened (seconds from the start)."""
    start = clock.now
    queue: list[Ticket | None] = launch(bucket, n, clock.now)
    refused: list[float] = []
    while queue and clock.now - start < until_s:
        ready = [t for t in queue if t is None or bucket._due(t, clock.now) <= clock.now]
        queue = [t for t in queue if t is not None and bucket._due(t, clock.now) > clock.now]
        for ticket in ready:
            if ticket is not None:
                bucket._grant(ticket, start, clock.now)
            wait = server.take()
            bucket.answered(remaining=server.remaining(), accepted=wait == 0, sent_at=clock.now)
            if wait:
                refused.append(clock.now - start)
                bucket.throttled(max(1, math.ceil(wait)), sent_at=clock.now)
                queue += launch(bucket, 1, clock.now)  # the retry
        clock.now += 0.01
    assert not queue, "not done"
    return refused


@pytest.mark.parametrize(("capacity", "refill_per_s"), [(20, 5), (20, 4), (50, 2), (10, 1)])
def test_refill_is_learned_from_remaining_headers(capacity: float, refill_per_s: float) -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock)  # what we assume
    refused = run_against(SimBucket(capacity, refill_per_s, clock=clock), bucket, clock, 60)
    assert len(refused) <= 2 and all(t < 1 for t in refused)  # a 429 or two early on, then none
    assert 0.85 * refill_per_s <= bucket.refill_per_s <= 1.02 * refill_per_s
    assert bucket.capacity == capacity
    assert clock.now - 1000 < (60 - capacity) / refill_per_s * 1.25 + 2


def test_documented_server_is_neither_throttled_nor_slowed() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock)
    assert run_against(SimBucket(200, 10, clock=clock), bucket, clock, 300) == []
    assert bucket.refill_per_s == 10 and clock.now - 1000 == pytest.approx(10, abs=0.2)


def test_a_429_after_warm_up_halves_the_refill_once_per_episode() -> None:
    clock = FakeClock()
    warm = AdaptiveBucket(200, 10, clock=clock, initial=0)
    warm.throttled(1, sent_at=clock.now - 0.5)  # our model let a request through that the server refused
    assert warm.refill_per_s == 5
    warm.throttled(1, sent_at=clock.now - 0.2)  # sent before that cut: the same episode
    assert warm.refill_per_s == 5
    clock.now += 3
    warm.throttled(1, sent_at=clock.now - 0.1)
    assert warm.refill_per_s == 2.5
    cold = AdaptiveBucket(200, 10, clock=clock)
    launch(cold, 1, clock.now)
    cold.answered(remaining=0, accepted=False, sent_at=clock.now)
    cold.throttled(1, sent_at=clock.now)  # a 429 in the cold wave measures the level, not the refill
    assert cold.refill_per_s == 10


def test_capacity_grows_to_what_the_server_shows() -> None:
    clock = FakeClock()
    bucket = AdaptiveBucket(200, 10, clock=clock)
    launch(bucket, 1, clock.now)
    bucket.answered(remaining=29, sent_at=clock.now)
    assert bucket.capacity == 30
    bucket.answered(0.0, remaining=79)
    assert bucket.capacity == 80
    bucket.answered(0.0, remaining=999)
    assert bucket.capacity == 200  # never above the configured capacity
