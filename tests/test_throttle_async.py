"""Async side of azrun.throttle: TokenBucket waiting, cancellation, and the AsyncThrottlePolicy."""

from __future__ import annotations

import asyncio
import heapq
import http.client
import io
import itertools
import json
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.core.rest._http_response_impl_async import RestAsyncHttpClientTransportResponse

from azrun.throttle import (
    AdaptiveBucket,
    AsyncThrottleAwareRetryPolicy,
    AsyncThrottlePolicy,
    Throttle,
    ThrottleLimits,
    TokenBucket,
    aacquire_all,
    aclient_kwargs,
)


class VirtualTime:
    """A fake monotonic clock with async timers that fire only when the test advances time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + delay_s, next(self._seq), fut))
        await fut

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, delay_s: float) -> None:
        """Move time forward, firing due timers in order and letting woken tasks run."""
        target = self.now + delay_s
        await self.settle()
        while self._timers and self._timers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self.now = target
        await self.settle()


def make_bucket(vt: VirtualTime, capacity: float = 2, refill_per_s: float = 1) -> TokenBucket:
    return TokenBucket(capacity, refill_per_s, name="t", clock=vt, async_sleep=vt.sleep)


async def test_burst_then_refill_rate() -> None:
    vt = VirtualTime()
    bucket = make_bucket(vt, capacity=3, refill_per_s=2)
    assert [await bucket.aacquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    task = asyncio.ensure_future(bucket.aacquire())
    await vt.advance(0.4)
    assert not task.done()
    await vt.advance(0.1)
    assert task.done() and task.result() == pytest.approx(0.5)


async def test_waiters_are_served_in_fifo_order() -> None:
    vt = VirtualTime()
    bucket = make_bucket(vt, capacity=1, refill_per_s=1)
    await bucket.aacquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await bucket.aacquire()
        order.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(5)]
    await vt.settle()
    assert bucket.snapshot().waiters == 5
    for expected in range(1, 6):
        await vt.advance(1.0)
        assert order == list(range(expected))
    await asyncio.gather(*tasks)
    assert bucket.snapshot().tokens_waited == 5


async def test_cancelled_waiter_refunds_and_later_waiters_move_up() -> None:
    vt = VirtualTime()
    bucket = make_bucket(vt, capacity=1, refill_per_s=1)
    await bucket.aacquire()
    first, second, third = (asyncio.ensure_future(bucket.aacquire()) for _ in range(3))
    await vt.settle()  # due at +1, +2, +3
    first.cancel()
    await vt.settle()
    assert first.cancelled()
    await vt.advance(1.0)  # second moved up from +2 to +1
    assert second.done() and not third.done()
    await vt.advance(1.0)
    assert third.done()
    assert bucket.snapshot().waiters == 0
    assert bucket.level() == pytest.approx(0.0)


async def test_cancelled_multi_bucket_waiter_refunds_every_bucket() -> None:
    vt = VirtualTime()
    a = make_bucket(vt, capacity=1, refill_per_s=1)
    b = make_bucket(vt, capacity=5, refill_per_s=1)
    await aacquire_all((a, b))
    task = asyncio.ensure_future(aacquire_all((a, b)))
    await vt.settle()
    assert a.level() == pytest.approx(-1.0) and b.level() == pytest.approx(3.0)
    task.cancel()
    await vt.settle()
    assert a.level() == pytest.approx(0.0) and b.level() == pytest.approx(4.0)


async def test_multi_bucket_waits_for_the_slowest() -> None:
    vt = VirtualTime()
    fast = make_bucket(vt, capacity=1, refill_per_s=10)
    slow = make_bucket(vt, capacity=1, refill_per_s=0.5)
    await aacquire_all((fast, slow))
    task = asyncio.ensure_future(aacquire_all((fast, slow)))
    await vt.advance(1.9)
    assert not task.done()
    await vt.advance(0.1)
    assert task.result() == pytest.approx(2.0)


async def test_pause_holds_waiters_already_scheduled() -> None:
    vt = VirtualTime()
    bucket = make_bucket(vt, capacity=1, refill_per_s=1)
    await bucket.aacquire()
    task = asyncio.ensure_future(bucket.aacquire())  # due at +1
    await vt.settle()
    bucket.pause_until(vt.now + 5)
    await vt.advance(4.9)
    assert not task.done()
    await vt.advance(0.1)
    assert task.result() == pytest.approx(5.0)


async def test_bucket_is_shared_between_threads_and_event_loops() -> None:
    bucket = TokenBucket(1000, 0.001)  # refill negligible: the level counts what was taken

    def in_other_loop() -> float:
        return asyncio.run(bucket.aacquire(10))

    waited = await asyncio.gather(*(asyncio.to_thread(in_other_loop) for _ in range(4)), bucket.aacquire(10))
    assert waited == [0.0] * 5
    assert bucket.level() == pytest.approx(950, abs=0.1)


async def test_the_cold_waves_answer_wakes_the_queue_at_once() -> None:
    vt = VirtualTime()
    bucket = AdaptiveBucket(10, 1, name="t", clock=vt, async_sleep=vt.sleep)
    assert await aacquire_all((bucket,), track=True) == 0.0  # the wave: 1 s of refill = 1 token
    rest = [asyncio.ensure_future(aacquire_all((bucket,), track=True)) for _ in range(3)]
    await vt.settle()
    assert not any(t.done() for t in rest)
    bucket.answered(remaining=9, sent_at=vt.now)  # no time passes: the waiters are woken, not timed
    await vt.settle()
    assert all(t.done() for t in rest) and bucket.level() == pytest.approx(9 - 3)


async def test_an_answer_in_another_thread_wakes_a_waiter_in_this_loop() -> None:
    bucket = AdaptiveBucket(10, 0.001)  # real time; cold: a wave of one
    await aacquire_all((bucket,), track=True)
    waiter = asyncio.ensure_future(aacquire_all((bucket,), track=True))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    await asyncio.to_thread(bucket.answered, remaining=9)
    assert await asyncio.wait_for(waiter, 2.0) < 1.0


# -- AsyncThrottlePolicy in a real AsyncPipeline ------------------------------------------------
SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
RG = f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute"
ARM_429 = json.dumps({"error": {"code": "SubscriptionRequestsThrottled", "message": "exceeded"}})
Canned = tuple[int, dict[str, str], str]
OK: Canned = (200, {}, "{}")


class _Sock:
    def __init__(self, raw: bytes) -> None:
        self._file = io.BytesIO(raw)

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return self._file


async def canned_response(request: HttpRequest, status: int, headers: dict[str, str], body: str) -> AsyncHttpResponse:
    """A real azure-core async response parsed by http.client from raw HTTP/1.1 bytes."""
    data = body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(data))}.items())
    internal = http.client.HTTPResponse(_Sock(f"HTTP/1.1 {status} X\r\n{head}\r\n".encode() + data))  # type: ignore[arg-type]
    internal.begin()
    response = RestAsyncHttpClientTransportResponse(request=request, internal_response=internal)  # type: ignore[no-untyped-call]
    await response.read()  # type: ignore[no-untyped-call]
    return response


class AsyncCountingTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """Canned responses in order (the last repeats); records sends and sleeps in virtual time."""

    def __init__(self, vt: VirtualTime, responses: list[Canned]) -> None:
        self.vt = vt
        self.responses = list(responses)
        self.sent: list[tuple[float, str]] = []
        self.slept: list[float] = []

    async def send(self, request: HttpRequest, **kwargs: Any) -> AsyncHttpResponse:
        self.sent.append((self.vt(), request.url))
        status, headers, body = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return await canned_response(request, status, headers, body)

    async def sleep(self, duration: float) -> None:
        self.slept.append(duration)
        await self.vt.sleep(duration)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aexit__(self, *args: object) -> None:
        pass


def pipeline(throttle: Throttle, transport: AsyncCountingTransport) -> AsyncPipeline[HttpRequest, AsyncHttpResponse]:
    return AsyncPipeline(transport, policies=[AsyncThrottleAwareRetryPolicy(), AsyncThrottlePolicy(throttle)])


def run_command_put(vm: str = "vm-001", name: str = "azrun-1") -> HttpRequest:
    return HttpRequest("PUT", f"{RG}/virtualMachines/{vm}/runCommands/{name}", json={"location": "westus"})


async def test_async_429_waits_for_retry_after_once() -> None:
    vt = VirtualTime()
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    transport = AsyncCountingTransport(vt, [(429, {"Retry-After": "2"}, ARM_429), OK])
    task = asyncio.ensure_future(pipeline(throttle, transport).run(run_command_put()))
    await vt.advance(1.99)
    assert len(transport.sent) == 1
    await vt.advance(0.01)
    assert (await task).http_response.status_code == 200
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(2.0)
    assert transport.slept == [] and vt.sleeps == [pytest.approx(2.0)]


async def test_async_siblings_wait_for_the_paused_bucket() -> None:
    vt = VirtualTime()
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    transport = AsyncCountingTransport(vt, [(429, {"Retry-After": "5"}, ARM_429), OK])
    pipe = pipeline(throttle, transport)
    first = asyncio.ensure_future(pipe.run(run_command_put("vm-001")))
    await vt.settle()
    sibling = asyncio.ensure_future(pipe.run(run_command_put("vm-002")))  # other VM, same ARM bucket
    await vt.advance(4.9)
    assert len(transport.sent) == 1
    await vt.advance(0.1)
    assert len(transport.sent) == 2  # the one token Retry-After promised: the oldest waiter (the retry)
    await vt.advance(0.1)  # then the refill rate (10/s), not everyone at once
    await asyncio.gather(first, sibling)
    assert [t for t, _ in transport.sent] == pytest.approx([1000.0, 1005.0, 1005.1])


async def test_per_vm_burst_then_four_per_minute() -> None:
    vt = VirtualTime()
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    transport = AsyncCountingTransport(vt, [OK])
    pipe = pipeline(throttle, transport)
    tasks = [asyncio.ensure_future(pipe.run(run_command_put(name=f"rc{i}"))) for i in range(14)]
    await vt.settle()
    assert len(transport.sent) == 12
    await vt.advance(15)
    assert len(transport.sent) == 13
    await vt.advance(15)
    await asyncio.gather(*tasks)
    assert [url.rsplit("/", 1)[-1] for _, url in transport.sent] == [f"rc{i}" for i in range(14)]  # FIFO
    per_vm = next(b for b in throttle.metrics().buckets if b.name.endswith("vm-001/update-vm"))
    assert per_vm.tokens_waited == 2 and per_vm.wait_s == pytest.approx(15 + 30)


async def test_cancelled_request_gives_its_tokens_back() -> None:
    vt = VirtualTime()
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    transport = AsyncCountingTransport(vt, [OK])
    pipe = pipeline(throttle, transport)
    await asyncio.gather(*(pipe.run(run_command_put(name=f"rc{i}")) for i in range(12)))
    waiting = asyncio.ensure_future(pipe.run(run_command_put(name="doomed")))
    later = asyncio.ensure_future(pipe.run(run_command_put(name="later")))
    await vt.settle()
    waiting.cancel()
    await vt.settle()
    sub = next(b for b in throttle.metrics().buckets if b.name == f"compute/{SUB}/update-vm")
    assert sub.level == pytest.approx(1500 - 12 - 1)  # the doomed token came back (paid at once here)
    await vt.advance(15)  # "later" moved up into the cancelled request's slot
    assert later.done() and transport.sent[-1][1].endswith("/later")
    assert not any(url.endswith("/doomed") for _, url in transport.sent)
    per_vm = next(b for b in throttle.metrics().buckets if b.name.endswith("vm-001/update-vm"))
    assert per_vm.level == pytest.approx(0.0) and per_vm.waiters == 0


async def test_async_disabled_policy_passes_through() -> None:
    vt = VirtualTime()
    throttle = Throttle(ThrottleLimits(enabled=False), clock=vt, async_sleep=vt.sleep)
    transport = AsyncCountingTransport(vt, [(429, {"Retry-After": "2"}, ARM_429), OK])
    task = asyncio.ensure_future(pipeline(throttle, transport).run(run_command_put()))
    await vt.advance(2)
    assert (await task).http_response.status_code == 200
    assert transport.slept == [2.0] and throttle.metrics().buckets == ()
    assert aclient_kwargs(throttle) == {}


class StaticAsyncToken:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticAsyncToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


async def test_real_aio_compute_client_is_throttled_per_attempt() -> None:
    from azure.mgmt.compute.aio import ComputeManagementClient

    vt = VirtualTime()
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    body = json.dumps({"name": "azrun-1", "location": "westus", "properties": {}})
    transport = AsyncCountingTransport(vt, [(429, {"Retry-After": "3"}, ARM_429), (200, {}, body)])
    kwargs = aclient_kwargs(throttle)
    assert isinstance(kwargs["per_retry_policies"][0], AsyncThrottlePolicy)
    async with ComputeManagementClient(StaticAsyncToken(), SUB, transport=transport, **kwargs) as client:
        task = asyncio.ensure_future(
            client.virtual_machine_run_commands.get_by_virtual_machine("rg-web", "vm-001", "azrun-1"))
        await vt.advance(3)
        assert (await task).name == "azrun-1"
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(3.0) and transport.slept == []
