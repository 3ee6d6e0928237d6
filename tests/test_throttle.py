"""azrun.throttle: bucket arithmetic, classification, header handling, and the sync policies
in a real azure-core Pipeline around a counting fake transport (time is faked throughout)."""

from __future__ import annotations

import http.client
import io
import json
import math
import threading
import time
from typing import Any

import pytest
from azure.core.pipeline import Pipeline
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
from azure.core.utils import case_insensitive_dict

from azrun._bucket import _MAX_HOLD_S, _Ticket
from azrun.errors import ConfigError
from azrun.sim.limits import SimBucket
from azrun.throttle import (
    DELETE_VM,
    GET_OPERATION,
    HIGH_COST_GET,
    LOW_COST_GET,
    PUT_VM,
    UPDATE_VM,
    VMSS_VM_GET,
    VMSS_VM_UPDATE,
    Limit,
    RequestClass,
    Throttle,
    ThrottleAwareRetryPolicy,
    ThrottleLimits,
    ThrottlePolicy,
    TokenBucket,
    _parse_policy,  # the name rules are worth a table of their own
    acquire_all_sync,
    classify,
    client_kwargs,
    parse_remaining_resource,
    parse_retry_after,
)

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
ARM = f"https://management.azure.com/subscriptions/{SUB}"
RG = f"{ARM}/resourceGroups/RG-Web/providers/Microsoft.Compute"
VM_ID = f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachines/vm-001"
VMSS_VM_ID = (
    f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachinescalesets/ss/virtualmachines/7"
)
RUN_PUT = f"{RG}/virtualMachines/vm-001/runCommands/azrun-1?api-version=2024-11-01"


class FakeClock:
    """Monotonic fake time; ``sleep`` advances it and records how long was slept."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# -- TokenBucket ------------------------------------------------------------------------------
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


def test_acquire_sync_waits_with_injected_sleep() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 4, clock=clock, sleep=clock.sleep)
    assert bucket.acquire_sync() == 0.0
    assert bucket.acquire_sync() == 0.0
    assert bucket.acquire_sync() == pytest.approx(0.25)
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


def test_acquire_all_sync_takes_from_every_bucket() -> None:
    clock = FakeClock()
    a = TokenBucket(1, 1, clock=clock, sleep=clock.sleep)
    b = TokenBucket(10, 1, clock=clock, sleep=clock.sleep)
    assert acquire_all_sync((a, b)) == 0.0
    assert acquire_all_sync((a, b)) == pytest.approx(1.0)
    assert b.level() == pytest.approx(9.0)  # 10 - 2 + 1 s of refill


def test_threads_share_one_bucket() -> None:
    bucket = TokenBucket(5, 100)
    waited: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            w = bucket.acquire_sync()
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
    bucket.acquire_sync()
    done_at: list[float] = []

    def sync_waiter() -> None:
        bucket.acquire_sync()  # queued second: due at t0 + 1.0 until the first cancels
        done_at.append(time.monotonic() - t0)

    async def cancel_first() -> None:
        first = asyncio.ensure_future(bucket.acquire())  # due at t0 + 0.5
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


# -- adaptive buckets: the server's bucket, seen only through its answers --------------------------
def launch(bucket: TokenBucket, n: int, now: float) -> list[_Ticket | None]:
    """``n`` tracked reservations (as the policies make them): ``None`` for each that goes out at once."""
    return [bucket._enqueue(1, now, track=True) for _ in range(n)]


def test_cold_bucket_sends_one_wave_then_takes_the_servers_word() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True)
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
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True, initial=200)  # warm and full
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
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True, initial=200)
    launch(bucket, 150, clock.now)
    clock.now += _MAX_HOLD_S + 2
    assert bucket.level() == pytest.approx(50 + 2 * 10)  # refill counts from the expiry


def test_no_hold_when_nothing_goes_out_under_it() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock=clock, adaptive=True)
    got = launch(bucket, 30, clock.now)  # cold: a wave of 10
    clock.now += 0.1
    bucket.answered(remaining=0, sent_at=1000.0)  # the server is empty: nothing goes out now, no hold
    clock.now += 0.5
    assert bucket.level() == pytest.approx(-20 + 0.5 * 10 - 9)  # refill credited (9 still in flight)
    assert got.count(None) == 10


def test_answers_overtaking_each_other_do_not_cost_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 0.01, clock=clock, adaptive=True, initial=20)
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
    bucket = TokenBucket(100, 0.01, clock=clock, adaptive=True, initial=20)
    launch(bucket, 5, clock.now)
    clock.now += 0.05
    bucket.answered(remaining=2, sent_at=1000.0)  # someone else drained it: 2 left, 4 of ours on the way
    assert bucket.level() == pytest.approx(-2, abs=0.01)  # the server's 2, less our 4 still on the way
    clock.now += 0.5
    bucket.answered(remaining=1, sent_at=1000.0)
    clock.now += 0.5
    bucket.answered(remaining=9, sent_at=1000.0)  # later headers do not raise it again
    assert bucket.level() == pytest.approx(-2, abs=0.02)


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


def run_against(server: SimBucket, bucket: TokenBucket, clock: FakeClock, n: int, until_s: float = 60) -> list[float]:
    """``n`` requests at once; every 10 ms those due go out and the server answers at once (as
    the policies would report it). Returns when each 429 happened (seconds from the start)."""
    start = clock.now
    queue: list[_Ticket | None] = launch(bucket, n, clock.now)
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
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True)  # what we assume
    refused = run_against(SimBucket(capacity, refill_per_s, clock=clock), bucket, clock, 60)
    assert len(refused) <= 2 and all(t < 1 for t in refused)  # a 429 or two early on, then none
    assert 0.85 * refill_per_s <= bucket.refill_per_s <= 1.02 * refill_per_s
    assert bucket.capacity == capacity
    assert clock.now - 1000 < (60 - capacity) / refill_per_s * 1.25 + 2


def test_documented_server_is_neither_throttled_nor_slowed() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True)
    assert run_against(SimBucket(200, 10, clock=clock), bucket, clock, 300) == []
    assert bucket.refill_per_s == 10 and clock.now - 1000 == pytest.approx(10, abs=0.2)


def test_a_429_after_warm_up_halves_the_refill_once_per_episode() -> None:
    clock = FakeClock()
    warm = TokenBucket(200, 10, clock=clock, adaptive=True, initial=0)
    warm.throttled(1, sent_at=clock.now - 0.5)  # our model let a request through that the server refused
    assert warm.refill_per_s == 5
    warm.throttled(1, sent_at=clock.now - 0.2)  # sent before that cut: the same episode
    assert warm.refill_per_s == 5
    clock.now += 3
    warm.throttled(1, sent_at=clock.now - 0.1)
    assert warm.refill_per_s == 2.5
    cold = TokenBucket(200, 10, clock=clock, adaptive=True)
    launch(cold, 1, clock.now)
    cold.answered(remaining=0, accepted=False, sent_at=clock.now)
    cold.throttled(1, sent_at=clock.now)  # a 429 in the cold wave measures the level, not the refill
    assert cold.refill_per_s == 10


def test_capacity_grows_to_what_the_server_shows() -> None:
    clock = FakeClock()
    bucket = TokenBucket(200, 10, clock=clock, adaptive=True)
    launch(bucket, 1, clock.now)
    bucket.answered(remaining=29, sent_at=clock.now)
    assert bucket.capacity == 30
    bucket.answered(0.0, remaining=79)
    assert bucket.capacity == 80
    bucket.answered(0.0, remaining=999)
    assert bucket.capacity == 200  # never above the configured capacity


# -- classification ----------------------------------------------------------------------------
CLASSIFY_CASES: list[tuple[str, str, RequestClass]] = [
    ("PUT", RUN_PUT, RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("PATCH", RUN_PUT, RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("DELETE", RUN_PUT, RequestClass("delete", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("GET", RUN_PUT + "&$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001/runCommands?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm-001/instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("POST", f"{RG}/virtualMachines/vm-001/runCommand?api-version=2024-11-01",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("POST", f"{RG}/virtualMachines/vm-001/deallocate",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", DELETE_VM, VM_ID)),
    ("PUT", f"{RG}/virtualMachines/vm-001", RequestClass("write", SUB, "rg-web", "microsoft.compute", PUT_VM, VM_ID)),
    ("DELETE", f"{RG}/virtualMachines/vm-001",
     RequestClass("delete", SUB, "rg-web", "microsoft.compute", DELETE_VM, VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1?$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", VMSS_VM_GET, VMSS_VM_ID)),
    ("PUT", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", VMSS_VM_UPDATE, VMSS_VM_ID)),
    ("DELETE", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands/azrun-1",
     RequestClass("delete", SUB, "rg-web", "microsoft.compute", VMSS_VM_UPDATE, VMSS_VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss/virtualMachines/7/runCommands",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", VMSS_VM_GET, VMSS_VM_ID)),
    ("GET", f"{RG}/virtualMachineScaleSets/ss", RequestClass("read", SUB, "rg-web", "microsoft.compute")),
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/westus/operations/9a062a88-e463?api-version=2024-11-01",
     RequestClass("read", SUB, None, "microsoft.compute", GET_OPERATION, None, "westus")),
    # the Location header form with the stray '&' (azure-facts §1)
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/westus/operations/9a06&monitor=true&api-version=2025-04-01",
     RequestClass("read", SUB, None, "microsoft.compute", GET_OPERATION, None, "westus")),
    ("GET", f"{RG}/virtualMachines?api-version=2024-11-01&$expand=instanceView",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", HIGH_COST_GET)),
    ("GET", f"{ARM}/providers/Microsoft.Compute/virtualMachines?statusOnly=true",
     RequestClass("read", SUB, None, "microsoft.compute", HIGH_COST_GET)),
    ("GET", f"{ARM}/providers/Microsoft.Compute/locations/EastUS/virtualMachines",
     RequestClass("read", SUB, None, "microsoft.compute", HIGH_COST_GET, None, "eastus")),
    ("GET", f"{ARM}/resources?$filter=tagName%20eq%20'role'&api-version=2025-04-01", RequestClass("read", SUB)),
    ("GET", "https://management.azure.com/subscriptions?api-version=2022-12-01", RequestClass("read")),
    ("GET", f"{ARM}/resourcegroups?api-version=2025-04-01", RequestClass("read", SUB)),
    ("PUT", f"{ARM}/resourcegroups/RG-Web?api-version=2025-04-01", RequestClass("write", SUB, "rg-web")),
    ("HEAD", f"{ARM}/resourcegroups/rg-web", RequestClass("read", SUB, "rg-web")),
    ("GET", f"{ARM}/resourceGroups/rg-web/providers/Microsoft.Network/publicIPAddresses",
     RequestClass("read", SUB, "rg-web", "microsoft.network")),
    # case-insensitive, relative, simulator host, percent-encoding
    ("put", f"HTTPS://MANAGEMENT.azure.com/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/rg-WEB/PROVIDERS/"
     "microsoft.compute/VIRTUALMACHINES/VM-001/RUNCOMMANDS/x",
     RequestClass("write", SUB, "rg-web", "microsoft.compute", UPDATE_VM, VM_ID)),
    ("GET", VM_ID + "/runCommands/x", RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", "https://127.0.0.1:50443" + VM_ID, RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID)),
    ("GET", f"{RG}/virtualMachines/vm%20001/runCommands/x",
     RequestClass("read", SUB, "rg-web", "microsoft.compute", LOW_COST_GET, VM_ID.replace("vm-001", "vm 001"))),
    ("GET", "https://127.0.0.1:50443", RequestClass("read")),
]


@pytest.mark.parametrize(("method", "url", "expected"), CLASSIFY_CASES)
def test_classify(method: str, url: str, expected: RequestClass) -> None:
    assert classify(method, url) == expected


# -- headers -----------------------------------------------------------------------------------
def test_parse_remaining_resource() -> None:
    assert parse_remaining_resource("Microsoft.Compute/VMUpdateResource;11,Microsoft.Compute/VMUpdateSubscription;1499") == [
        ("Microsoft.Compute/VMUpdateResource", 11.0), ("Microsoft.Compute/VMUpdateSubscription", 1499.0)]
    assert parse_remaining_resource("Microsoft.Compute/PutVM3Min;239, Microsoft.Compute/PutVM30Min;1199") == [
        ("Microsoft.Compute/PutVM3Min", 239.0), ("Microsoft.Compute/PutVM30Min", 1199.0)]
    assert parse_remaining_resource("junk, a;x, ;3, Microsoft.Compute/HighCostGet;0") == [
        ("Microsoft.Compute/HighCostGet", 0.0)]


@pytest.mark.parametrize(("name", "group", "per_resource", "window_s"), [
    ("Microsoft.Compute/VMUpdateResource", UPDATE_VM, True, None),
    ("Microsoft.Compute/VMUpdateSubscription", UPDATE_VM, False, None),
    ("Microsoft.Compute/UpdateVMResource", UPDATE_VM, True, None),
    ("Microsoft.Compute/PutVM3Min", PUT_VM, False, 180.0),
    ("Microsoft.Compute/PutVM30Min", PUT_VM, False, 1800.0),
    ("Microsoft.Compute/LowCostGet3Min", LOW_COST_GET, False, 180.0),
    ("Microsoft.Compute/LowCostGetResource", LOW_COST_GET, True, None),
    ("Microsoft.Compute/HighCostGet", HIGH_COST_GET, False, None),
    ("Microsoft.Compute/GetOperationSubscription", GET_OPERATION, False, None),
    ("Microsoft.Compute/VMScaleSetVMUpdateResource", VMSS_VM_UPDATE, True, None),
    ("Microsoft.Compute/VMScaleSetVMGetSubscription", VMSS_VM_GET, False, None),
    ("Microsoft.Compute/DeleteVMResource", DELETE_VM, True, None),
    ("Microsoft.Compute/GetVMScaleSet3Min", None, False, 180.0),
    ("Microsoft.Compute/SomethingNew", None, False, None),
])
def test_policy_names(name: str, group: str | None, per_resource: bool, window_s: float | None) -> None:
    policy = _parse_policy(name)
    assert (policy.group, policy.per_resource, policy.window_s) == (group, per_resource, window_s)


def test_parse_retry_after_variants() -> None:
    h = case_insensitive_dict
    assert parse_retry_after(h({"Retry-After": "2"})) == 2.0
    assert parse_retry_after(h({"Retry-After": "Sun, 06 Nov 1994 08:49:47 GMT"}), wall_now=784111777.0) == 10.0
    assert parse_retry_after(h({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(h({"x-ms-retry-after-ms": "1500"})) == 1.5
    assert parse_retry_after(h({"Retry-After": "soon"})) is None
    assert parse_retry_after(h({})) is None


def names(throttle: Throttle) -> dict[str, Any]:
    return {b.name: b for b in throttle.metrics().buckets}


def test_buckets_for_a_run_command_put() -> None:
    throttle = Throttle(clock=FakeClock())
    got = [b.name for b in throttle.buckets_for(classify("PUT", RUN_PUT))]
    assert got == [f"arm/{SUB}/writes", f"compute/{SUB}/update-vm", "compute/rg-web/virtualmachines/vm-001/update-vm"]
    per_vm = throttle.buckets_for(classify("PUT", RUN_PUT))[2]
    assert per_vm.capacity == 12 and per_vm.refill_per_s == pytest.approx(4 / 60)


def test_headers_reconcile_arm_and_compute_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("PUT", RUN_PUT)
    headers = case_insensitive_dict({
        "x-ms-ratelimit-remaining-subscription-writes": "7",
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;3, Microsoft.Compute/VMUpdateSubscription;1000",
    })
    assert throttle.observe(rc, 200, headers) is False
    got = names(throttle)
    assert got[f"arm/{SUB}/writes"].level == 7
    assert got["compute/rg-web/virtualmachines/vm-001/update-vm"].level == 3
    assert got[f"compute/{SUB}/update-vm"].level == 1000


def test_legacy_and_unknown_policies_get_learned_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("PUT", RUN_PUT)
    throttle.observe(rc, 200, case_insensitive_dict({
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1199,"
                                             "Microsoft.Compute/Mystery;5"}))
    got = names(throttle)
    three = got[f"learned/{SUB}/microsoft.compute/putvm3min"]
    assert (three.capacity, three.level, three.refill_per_s) == (240, 239, pytest.approx(240 / 180))
    assert got[f"learned/{SUB}/microsoft.compute/putvm30min"].refill_per_s == pytest.approx(1200 / 1800)
    mystery = got[f"learned/{SUB}/microsoft.compute/mystery"]
    assert (mystery.capacity, mystery.level) == (12, 5)  # at least learned_min_capacity
    # the same classification (other VM too) now also takes from them; a GET does not
    other_vm = classify("PUT", RUN_PUT.replace("vm-001", "vm-002"))
    assert {b.name for b in throttle.buckets_for(other_vm)} >= {three.name, mystery.name}
    assert not any("learned" in b.name for b in throttle.buckets_for(classify("GET", RUN_PUT)))
    # a later, larger count grows the learned capacity (never the level)
    throttle.observe(rc, 200, case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/Mystery;99"}))
    assert names(throttle)[mystery.name].capacity == 100


def test_unknown_resource_scoped_policy_is_learned_per_target() -> None:
    throttle = Throttle(clock=FakeClock())
    throttle.observe(classify("PUT", RUN_PUT), 200,
                     case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/NewThingResource;20"}))
    buckets = throttle.buckets_for(classify("PUT", RUN_PUT.replace("vm-001", "vm-002")))
    learned = [b for b in buckets if b.name.startswith("learned/")]
    assert len(learned) == 1 and "vm-002" in learned[0].name and learned[0].level() == 21


# -- 429 attribution ---------------------------------------------------------------------------
ARM_429 = json.dumps({"error": {"code": "SubscriptionRequestsThrottled",
                                "message": "Number of 'write' requests for subscription exceeded."}})
COMPUTE_429 = json.dumps({"code": "OperationNotAllowed", "message": "too many requests", "details": [
    {"code": "TooManyRequests", "target": "HighCostGet", "message": "{}"}]})


def test_arm_429_pauses_the_subscription_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    rc = classify("PUT", RUN_PUT)
    assert throttle.observe(rc, 429, case_insensitive_dict({"Retry-After": "10"}), ARM_429)
    arm = names(throttle)[f"arm/{SUB}/writes"]
    assert (arm.paused_for_s, arm.throttled_429) == (10, 1)
    # a sibling on another VM waits too (the whole bucket is paused)
    sibling = throttle.buckets_for(classify("PUT", RUN_PUT.replace("vm-001", "vm-777")))
    assert max(b.reserve() for b in sibling) == pytest.approx(10)


def test_compute_429_pauses_the_named_policy_bucket() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("GET", f"{ARM}/providers/Microsoft.Compute/virtualMachines")
    headers = case_insensitive_dict({"Retry-After": "1200", "x-ms-ratelimit-remaining-subscription-reads": "240",
                                     "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/HighCostGet;0"})
    assert throttle.observe(rc, 429, headers, COMPUTE_429)
    got = names(throttle)
    assert got[f"compute/{SUB}/high-cost-get"].paused_for_s == 1200
    assert got[f"arm/{SUB}/reads"].paused_for_s == 0


def test_429_attributed_by_zero_header_and_default_pause() -> None:
    throttle = Throttle(clock=FakeClock())
    headers = case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"})
    assert throttle.observe(classify("PUT", RUN_PUT), 429, headers, b"not json")
    per_vm = names(throttle)["compute/rg-web/virtualmachines/vm-001/update-vm"]
    assert per_vm.paused_for_s == pytest.approx(15)  # no Retry-After: one refill interval (4/min)


def test_429_with_arm_header_at_zero_is_arm() -> None:
    throttle = Throttle(clock=FakeClock())
    headers = case_insensitive_dict({"Retry-After": "3", "x-ms-ratelimit-remaining-subscription-writes": "0"})
    assert throttle.observe(classify("PUT", RUN_PUT), 429, headers)
    assert names(throttle)[f"arm/{SUB}/writes"].paused_for_s == 3


def test_unattributable_429_pauses_nothing() -> None:
    throttle = Throttle(clock=FakeClock())
    body = json.dumps({"error": {"code": "RetryableErrorDueToAnotherOperation", "message": "busy"}})
    rc = classify("PUT", f"{ARM}/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/ip")
    assert throttle.observe(rc, 429, case_insensitive_dict({"Retry-After": "5"}), body) is False
    metrics = throttle.metrics()
    assert metrics.unattributed_429 == 1 and metrics.throttled_429 == 1
    assert all(b.paused_for_s == 0 for b in metrics.buckets)


# -- limits and switches ----------------------------------------------------------------------
def test_limits_from_env() -> None:
    limits = ThrottleLimits.from_env({
        "AZRUN_ARM_WRITES_PER_S": "5", "AZRUN_ARM_READS_BURST": "100", "AZRUN_VM_UPDATE_PER_MIN": "6",
        "AZRUN_ARM_ENDPOINT": "https://127.0.0.1:1", "HOME": "/root",
    })
    assert limits.arm_writes == Limit(200, 5) and limits.arm_reads == Limit(100, 25)
    assert limits.vm_update == Limit(12, 0.1) and limits.enabled
    assert ThrottleLimits.from_env({"AZRUN_THROTTLE": "off"}).enabled is False
    assert ThrottleLimits.from_mapping({"sub_high_cost_get_burst": 10, "enabled": True}).sub_high_cost_get.burst == 10
    with pytest.raises(ConfigError):
        ThrottleLimits.from_env({"AZRUN_ARM_WRITES_PER_S": "fast"})
    with pytest.raises(ConfigError):
        ThrottleLimits.from_mapping({"arm_writez_per_s": 1})


def test_disabled_throttle_is_inert() -> None:
    throttle = Throttle(ThrottleLimits(enabled=False))
    assert client_kwargs(throttle) == {} and client_kwargs(None) == {}
    assert throttle.acquire_sync(classify("PUT", RUN_PUT)) == 0.0
    assert throttle.observe(classify("PUT", RUN_PUT), 429, case_insensitive_dict({}), ARM_429) is False
    assert throttle.metrics().buckets == ()


def test_client_kwargs_installs_policy_and_retry() -> None:
    kwargs = client_kwargs(Throttle(), retry_total=4)
    assert isinstance(kwargs["per_retry_policies"][0], ThrottlePolicy)
    assert isinstance(kwargs["retry_policy"], ThrottleAwareRetryPolicy)
    assert kwargs["retry_policy"].total_retries == 4


# -- the policies in a real azure-core Pipeline ------------------------------------------------
class _Sock:
    def __init__(self, raw: bytes) -> None:
        self._file = io.BytesIO(raw)

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return self._file


def canned_response(request: HttpRequest, status: int, headers: dict[str, str], body: str = "") -> HttpResponse:
    """A real azure-core response, parsed by http.client from raw HTTP/1.1 bytes."""
    data = body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(data))}.items())
    raw = f"HTTP/1.1 {status} {http.client.responses.get(status, 'X')}\r\n{head}\r\n".encode() + data
    internal = http.client.HTTPResponse(_Sock(raw))  # type: ignore[arg-type]
    internal.begin()
    response = RestHttpClientTransportResponse(request=request, internal_response=internal)  # type: ignore[no-untyped-call]
    response.read()  # type: ignore[no-untyped-call]
    return response


Canned = tuple[int, dict[str, str], str]


class CountingTransport(HttpTransport):  # type: ignore[type-arg]
    """Returns canned responses in order; records (fake time, method) of every send and every sleep."""

    def __init__(self, clock: FakeClock, responses: list[Canned]) -> None:
        self.clock = clock
        self.responses = list(responses)
        self.sent: list[tuple[float, str]] = []
        self.slept: list[float] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        self.sent.append((self.clock(), request.method))
        status, headers, body = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return canned_response(request, status, headers, body)

    def sleep(self, duration: float) -> None:
        self.slept.append(duration)
        self.clock.now += duration

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: object) -> None:
        pass


OK: Canned = (200, {"x-ms-ratelimit-remaining-subscription-writes": "199"}, "{}")


def run(throttle: Throttle, transport: CountingTransport, **retry: Any) -> HttpResponse:
    pipeline: Pipeline[HttpRequest, HttpResponse] = Pipeline(
        transport, policies=[ThrottleAwareRetryPolicy(**retry), ThrottlePolicy(throttle)])
    return pipeline.run(HttpRequest("PUT", RUN_PUT, json={"location": "westus"})).http_response


def test_429_retry_waits_for_retry_after_exactly_once() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport).status_code == 200
    (t0, _), (t1, _) = transport.sent
    assert t1 - t0 == pytest.approx(2.0)  # not before Retry-After ...
    assert transport.slept == [] and clock.sleeps == [pytest.approx(2.0)]  # ... and slept once
    arm = names(throttle)[f"arm/{SUB}/writes"]
    assert (arm.throttled_429, arm.tokens_waited, arm.wait_s) == (1, 1, pytest.approx(2.0))


def test_compute_429_retry_waits_in_the_per_vm_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    headers = {"Retry-After": "17", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"}
    transport = CountingTransport(clock, [(429, headers, "{}"), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(17.0)
    assert transport.slept == []


def test_unattributed_429_leaves_the_sleep_to_the_retry_policy() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    body = json.dumps({"error": {"code": "RetryableErrorDueToAnotherOperation"}})
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, body), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(2.0)
    assert transport.slept == [2.0] and clock.sleeps == []


def test_every_429_uses_the_throttled_budget_even_unattributed() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    bare = json.dumps({"error": {"code": "TooManyRequests", "message": "The request is being throttled."}})
    transport = CountingTransport(clock, [*[(429, {"Retry-After": "1"}, bare)] * 5, OK])
    assert run(throttle, transport).status_code == 200  # 5 > retry_status=3, still succeeds
    assert transport.slept == [1.0] * 5  # nothing to pause: azure-core sleeps Retry-After
    assert throttle.metrics().unattributed_429 == 5


def test_begin_counts_an_attempt_in_flight_until_observed_or_abandoned() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    rcs = [classify("PUT", RUN_PUT.replace("vm-001", f"vm-00{i}")) for i in range(1, 4)]
    first, second = throttle.begin_sync(rcs[0]), throttle.begin_sync(rcs[1])
    writes = f"arm/{SUB}/writes"
    throttle.observe(rcs[0], 200, case_insensitive_dict({"x-ms-ratelimit-remaining-subscription-writes": "150"}),
                     sent=first)
    assert names(throttle)[writes].level == pytest.approx(149)  # the server's 150, less the second on its way
    throttle.abandon(second)  # it failed without an answer: no longer on its way
    third = throttle.begin_sync(rcs[2])
    throttle.observe(rcs[2], 200, case_insensitive_dict({"x-ms-ratelimit-remaining-subscription-writes": "140"}),
                     sent=third)
    assert names(throttle)[writes].level == pytest.approx(140)  # nothing else in flight: the server's word


def test_429_storm_uses_the_throttled_retry_budget() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    storm = [(429, {"Retry-After": "1"}, ARM_429)] * 8
    transport = CountingTransport(clock, [*storm, OK])
    assert run(throttle, transport).status_code == 200  # 8 > retry_status=3, still succeeds
    gaps = [b[0] - a[0] for a, b in zip(transport.sent, transport.sent[1:], strict=False)]
    assert gaps == pytest.approx([1.0] * 8) and transport.slept == []
    limited = CountingTransport(clock, [*storm, OK])
    assert run(throttle, limited, retry_throttled=2).status_code == 429
    assert len(limited.sent) == 3


def test_retry_total_zero_still_means_no_retries() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport, retry_total=0).status_code == 429
    assert len(transport.sent) == 1 and transport.slept == []


def test_server_retry_after_beats_the_refill_model() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    headers = {"Retry-After": "1", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"}
    transport = CountingTransport(clock, [(429, headers, "{}"), OK])
    assert run(throttle, transport).status_code == 200
    # the per-VM model refills one token per 15 s, but the server said 1 s: retry at +1 s
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(1.0)


def test_every_attempt_takes_a_token_and_headers_reconcile() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [
        (503, {}, ""), (200, {"x-ms-ratelimit-remaining-subscription-writes": "4",
                              "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;2"}, "{}")])
    assert run(throttle, transport, retry_backoff_factor=0).status_code == 200
    got = names(throttle)
    assert got[f"arm/{SUB}/writes"].level == pytest.approx(4)
    assert got["compute/rg-web/virtualmachines/vm-001/update-vm"].level == pytest.approx(2)
    assert got[f"compute/{SUB}/update-vm"].level == pytest.approx(1498)  # two attempts paid


def test_disabled_policy_passes_through() -> None:
    clock = FakeClock()
    throttle = Throttle(ThrottleLimits(enabled=False), clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.slept == [2.0] and throttle.metrics().buckets == ()


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", int(time.time()) + 3600)


def test_real_compute_client_is_throttled_per_attempt() -> None:
    from azure.mgmt.compute import ComputeManagementClient

    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    run_command = {"name": "azrun-1", "location": "westus", "properties": {"provisioningState": "Succeeded"}}
    transport = CountingTransport(clock, [(429, {"Retry-After": "3"}, ARM_429), (200, {}, json.dumps(run_command))])
    client = ComputeManagementClient(StaticToken(), SUB, transport=transport, **client_kwargs(throttle))
    got = client.virtual_machine_run_commands.get_by_virtual_machine("RG-Web", "vm-001", "azrun-1")
    assert got.name == "azrun-1"
    assert [m for _, m in transport.sent] == ["GET", "GET"]
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(3.0) and transport.slept == []
    assert names(throttle)["compute/rg-web/virtualmachines/vm-001/low-cost-get"].level == pytest.approx(36 - 2 + 3 * 12 / 60)
