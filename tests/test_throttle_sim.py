"""Issue 4, integration: azrun's throttle against the local Azure, and against a virtual-time ARM.

The local Azure keeps Azure's documented buckets (azure-facts §3). Three scenarios run there,
each once per module (a fixture), with several tests reading one run:

* documented limits: 400 concurrent VM GETs and 300 run-command PUTs across 300 VMs;
* a stricter subscription (ARM writes 20 + 5/s, below azrun's 200 + 10/s);
* a 429 storm (``faults.arm_throttle_rate``), every attempt recorded by a client-side policy.

Where a requirement depends on timing a loaded machine cannot guarantee, the exact case is
also played against :class:`azrun.sim.arm.throttle.Throttler` (the simulator's own ARM buckets)
in virtual time, behind a fake transport in a real azure-core pipeline: those minimal tests
are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import http.client
import io
import itertools
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.core.rest._http_response_impl_async import RestAsyncHttpClientTransportResponse

from azrun import auth
from azrun.sim.arm.errors import ArmError
from azrun.sim.arm.throttle import Throttler
from azrun.sim.fleetspec import Limits
from azrun.throttle import AsyncThrottleAwareRetryPolicy, AsyncThrottlePolicy, Throttle, aclient_kwargs

SUB = "11111111-1111-4111-8111-111111111111"
RG = "rg-throttle"
SCRIPT_BODY: Any = {"location": "westeurope", "properties": {"source": {"script": "true"}, "asyncExecution": True}}


def fleet(n: int, *, limits: dict[str, Any] | None = None, faults: dict[str, Any] | None = None) -> str:
    """``n`` running Linux VMs ``vm-0001..``; the first is the local IMDS's VM."""
    def table(name: str, values: dict[str, Any] | None) -> str:
        return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in (values or {}).items())

    return (
        f'[sim]\ncurrent_vm = "{RG}/vm-0001"\nagent_start_delay_s = 0.05\n'
        + table("limits", limits) + table("faults", faults)
        + f'[[subscription]]\nid = "{SUB}"\nname = "throttle"\n'
        + f'  [[subscription.resource_group]]\n  name = "{RG}"\n  location = "westeurope"\n'
        + f'    [[subscription.resource_group.vm]]\n    name = "vm-{{i:04d}}"\n    count = {n}\n'
        + "    system_identity = true\n"
    )


def vm(i: int) -> str:
    return f"vm-{i:04d}"


# -- the local Azure scenarios -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of one logical request, as the client saw it (monotonic seconds)."""

    call: int
    sent: float
    answered: float
    status: int
    retry_after_s: float | None


class AttemptRecorder(AsyncHTTPPolicy[Any, Any]):
    """Per-retry policy placed after the throttle: records what really went on the wire, when."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Attempt] = []
        self._calls = itertools.count()

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        call = request.context.setdefault("test_call", next(self._calls))
        sent = time.monotonic()
        response = await self.next.send(request)
        http = response.http_response
        raw = http.headers.get("Retry-After")
        self.attempts.append(Attempt(call, sent, time.monotonic(), http.status_code, float(raw) if raw else None))
        return response


@dataclass
class Run:
    """What one scenario produced."""

    wall_s: float
    errors: list[BaseException]
    log: list[dict[str, Any]]
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def arm(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r.get("service") == "arm"]

    def arm_429(self) -> list[dict[str, Any]]:
        return [r for r in self.arm if r["status"] == 429]


@contextlib.contextmanager
def sim_environ(sim: Any, runtime: Path) -> Iterator[None]:
    """The simulator's env in ``os.environ`` (as ``source env`` would) and a fresh process cache."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "AZRUN_", "IMDS_")):
                mp.delenv(key)
        for key, value in sim.env.items():
            mp.setenv(key, value)
        mp.setenv("AZRUN_RUNTIME_DIR", str(runtime))
        auth.clear_process_cache()
        try:
            yield
        finally:
            auth.clear_process_cache()


async def fan_out(gets: int, puts: int, vms: int, recorder: AttemptRecorder | None = None) -> tuple[float, list[BaseException]]:
    """``gets`` VM GETs and ``puts`` run-command PUTs at once over ``vms`` VMs, through the
    ClientFactory's aio Compute client (plus ``recorder`` after the throttle if given).
    Returns (wall seconds from the first request, the errors)."""
    from azrun.clients import ClientFactory

    factory = ClientFactory.from_env()
    assert factory.throttle is not None
    if recorder is None:
        compute = factory.acompute(SUB)
    else:
        from azure.mgmt.compute.aio import ComputeManagementClient

        kwargs = aclient_kwargs(factory.throttle)
        kwargs["per_retry_policies"].append(recorder)
        compute = ComputeManagementClient(
            factory.acredential(), SUB, base_url=factory.cloud.arm_endpoint,
            credential_scopes=[factory.cloud.management_scope], connection_verify=factory.cloud.ca_bundle, **kwargs,
        )
    await factory.acredential().get_token(factory.cloud.management_scope)  # the token is not under test

    async def put(i: int) -> None:
        await compute.virtual_machine_run_commands.begin_create_or_update(
            RG, vm(i % vms + 1), "rc-throttle", SCRIPT_BODY, polling=False)

    async def get(i: int) -> None:
        await compute.virtual_machines.get(RG, vm(i % vms + 1))

    began = time.monotonic()
    try:
        results = await asyncio.gather(*(get(i) for i in range(gets)), *(put(i) for i in range(puts)),
                                       return_exceptions=True)
        wall = time.monotonic() - began
    finally:
        await factory.aclose()
        if recorder is not None:
            await compute.close()
    return wall, [r for r in results if isinstance(r, BaseException)]


def scenario(tmp: Path, vms: int, gets: int, puts: int, *, limits: dict[str, Any] | None = None,
             faults: dict[str, Any] | None = None, record: bool = False) -> Run:
    from azrun.sim.launcher import SimProcess

    sim = SimProcess(fleet(vms, limits=limits, faults=faults), workdir=tmp / "sim", storage=False)
    with sim, sim_environ(sim, tmp / "runtime"):
        mark = len(sim.requests())
        recorder = AttemptRecorder() if record else None
        wall, errors = asyncio.run(fan_out(gets, puts, vms, recorder))
        return Run(wall, errors, sim.requests()[mark:], recorder.attempts if recorder else [])


def lower_bound_s(reads: int, writes: int, *, read_bucket: tuple[float, float] = (250, 25),
                  write_bucket: tuple[float, float] = (200, 10)) -> float:
    """Bucket arithmetic: the last read and the last write cannot go earlier than this."""
    return max(max(0.0, (reads - read_bucket[0]) / read_bucket[1]), max(0.0, (writes - write_bucket[0]) / write_bucket[1]))


# -- documented limits: 400 GETs + 300 PUTs over 300 VMs -----------------------------------------
DOC_GETS, DOC_PUTS, DOC_VMS = 400, 300, 300


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return scenario(tmp_path_factory.mktemp("throttle-documented"), DOC_VMS, DOC_GETS, DOC_PUTS)


@pytest.mark.slow
def test_documented_limits_every_request_completes_near_the_bound(documented: Run) -> None:
    bound = lower_bound_s(DOC_GETS, DOC_PUTS)  # writes: (300 - 200) / 10 = 10 s
    print(f"\nwall {documented.wall_s:.2f} s, bound {bound:.1f} s, ratio {documented.wall_s / bound:.2f}, "
          f"429s {len(documented.arm_429())}")
    assert documented.errors == []
    ops = [r["op"] for r in documented.arm if r["status"] in (200, 201)]
    assert ops.count("VirtualMachines_Get") == DOC_GETS
    assert ops.count("VirtualMachineRunCommands_CreateOrUpdate") == DOC_PUTS
    assert bound * 0.95 <= documented.wall_s < 2 * bound + 5  # never faster than the buckets allow


@pytest.mark.slow
def test_documented_limits_no_429(documented: Run) -> None:
    """The burst reaches the server behind connection set-up; the throttle credits no refill
    until an answer proves the server is counting (deterministic twin:
    test_virtual_arm_documented_limits_no_429)."""
    throttled = documented.arm_429()
    assert throttled == [], f"{len(throttled)} 429s: {sorted({str(r.get('throttle')) for r in throttled})}"


# -- a stricter subscription: ARM writes 20 + 5/s (azrun assumes 200 + 10/s) -----------------------
STRICT_PUTS = 50
STRICT_WRITES = (20.0, 5.0)


@pytest.fixture(scope="module")
def stricter(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return scenario(tmp_path_factory.mktemp("throttle-strict"), STRICT_PUTS, 0, STRICT_PUTS,
                    limits={"arm_writes": list(STRICT_WRITES)})


@pytest.mark.slow
def test_stricter_subscription_still_completes(stricter: Run) -> None:
    bound = lower_bound_s(0, STRICT_PUTS, write_bucket=STRICT_WRITES)  # (50 - 20) / 5 = 6 s
    print(f"\nwall {stricter.wall_s:.2f} s, bound {bound:.1f} s, 429s {len(stricter.arm_429())}")
    assert stricter.errors == []
    ok = [r for r in stricter.arm if r["status"] in (200, 201)]
    assert len(ok) == STRICT_PUTS
    assert stricter.wall_s < 2 * bound + 5


@pytest.mark.slow
def test_stricter_subscription_adapts_from_headers(stricter: Run) -> None:
    """A cold wave of 1 s of refill, then the server's count, then a learned refill (deterministic
    twin: test_virtual_arm_stricter_subscription_is_learned_from_headers)."""
    throttled = [r["ts"] for r in stricter.arm_429()]
    assert len(throttled) <= 5, f"{len(throttled)} 429s"
    assert all(ts - throttled[0] < 1.0 for ts in throttled), "429s after the first burst"


# -- a 429 storm -----------------------------------------------------------------------------------
STORM_GETS, STORM_PUTS, STORM_RATE = 100, 50, 0.4


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return scenario(tmp_path_factory.mktemp("throttle-storm"), STORM_PUTS, STORM_GETS, STORM_PUTS,
                    faults={"arm_throttle_rate": STORM_RATE, "seed": 4}, record=True)


def attempts_by_call(run: Run) -> dict[int, list[Attempt]]:
    calls: dict[int, list[Attempt]] = {}
    for attempt in sorted(run.attempts, key=lambda a: a.sent):
        calls.setdefault(attempt.call, []).append(attempt)
    return calls


@pytest.mark.slow
def test_storm_no_retry_goes_before_its_retry_after(storm: Run) -> None:
    calls = attempts_by_call(storm)
    assert len(calls) == STORM_GETS + STORM_PUTS
    throttled = [a for a in storm.attempts if a.status == 429]
    assert len(throttled) == len(storm.arm_429()) > 20  # the recorder saw every 429 the sim sent
    assert all(a.retry_after_s is not None for a in throttled)
    for attempts in calls.values():
        for before, after in itertools.pairwise(attempts):
            if before.status == 429:
                assert before.retry_after_s is not None
                assert after.sent - before.answered >= before.retry_after_s - 0.01


@pytest.mark.slow
def test_storm_every_request_eventually_succeeds(storm: Run) -> None:
    """Every 429, attributed or not, is charged to retry_throttled (30), not retry_status (3)
    (deterministic twin: test_virtual_unattributed_429s_use_the_throttled_retry_budget)."""
    assert storm.errors == []
    assert all(attempts[-1].status in (200, 201) for attempts in attempts_by_call(storm).values())


# -- the same cases against the simulator's ARM buckets in virtual time -----------------------------
ARM = f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute"


class VirtualTime:
    """A fake monotonic clock whose async timers fire only when the test advances time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, delay_s), next(self._seq), fut))
        await fut

    @staticmethod
    async def settle() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def run_until_done(self, tasks: Sequence[asyncio.Future[Any]], limit_s: float = 120) -> None:
        """Fire timers in order (letting woken tasks run) until every task is done."""
        await self.settle()
        while not all(t.done() for t in tasks):
            assert self._timers, "deadlock: tasks wait but no timer is set"
            deadline, _, fut = heapq.heappop(self._timers)
            assert deadline - self.start < limit_s, "virtual run took too long"
            self.now = max(self.now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()


class _Sock:
    def __init__(self, raw: bytes) -> None:
        self._file = io.BytesIO(raw)

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return self._file


async def wire_response(request: HttpRequest, status: int, headers: dict[str, str], body: str) -> AsyncHttpResponse:
    """A real azure-core async response parsed by http.client from raw HTTP/1.1 bytes."""
    data = body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(data))}.items())
    internal = http.client.HTTPResponse(_Sock(f"HTTP/1.1 {status} X\r\n{head}\r\n".encode() + data))  # type: ignore[arg-type]
    internal.begin()
    response = RestAsyncHttpClientTransportResponse(request=request, internal_response=internal)  # type: ignore[no-untyped-call]
    await response.read()  # type: ignore[no-untyped-call]
    return response


class VirtualArm(AsyncHttpTransport):  # type: ignore[type-arg]
    """ARM's buckets (the simulator's :class:`Throttler`) behind a wire with a latency.

    Requests reach the server ``latency_s`` after they are sent (answers take as long back), but not before ``gate`` (the
    connections are ready only then; earlier requests wait in order, as behind a connection pool).
    The server takes its token ``parse_s`` after arrival: with no such delay a client pacing at
    exactly the refill rate meets the server at exactly 1.0 token, and float rounding decides.
    ``storm`` answers that many attempts per request with a bare 429 ``TooManyRequests``
    (``Retry-After: 1``) that names no bucket, before the buckets are asked.
    """

    def __init__(self, vt: VirtualTime, limits: Limits, *, latency_s: float = 0.05, gate_s: float = 0.0,
                 storm: int = 0, parse_s: float = 0.001) -> None:
        self.vt = vt
        self.parse_s = parse_s
        self.server = Throttler(limits, clock=vt)
        self.latency_s = latency_s
        self.gate = vt() + gate_s
        self.storm = storm
        self.answers: list[tuple[float, int]] = []  # (arrival time, status) in arrival order
        self._stormed: dict[str, int] = {}

    async def send(self, request: HttpRequest, **kwargs: Any) -> AsyncHttpResponse:
        await self.vt.sleep(max(self.vt() + self.latency_s, self.gate) - self.vt())
        await self.vt.sleep(self.parse_s)  # the server reads the request before it takes a token
        status, headers, body = self._answer(request)
        self.answers.append((self.vt(), status))
        await self.vt.sleep(self.latency_s)  # the way back
        return await wire_response(request, status, headers, body)

    def _answer(self, request: HttpRequest) -> tuple[int, dict[str, str], str]:
        url = request.url.split("?", 1)[0]
        if self._stormed.get(url, 0) < self.storm:
            self._stormed[url] = self._stormed.get(url, 0) + 1
            body = {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}}
            return 429, {"Retry-After": "1"}, json.dumps(body)
        kind = {"GET": "read", "DELETE": "delete"}.get(request.method, "write")
        try:
            headers = self.server.arm(subscription=SUB, tenant="tenant", caller="azrun", kind=kind)
        except ArmError as exc:
            return exc.status, exc.headers, json.dumps(exc.body())
        return 200, headers, "{}"

    def throttled_at(self) -> list[float]:
        return [t - self.vt.start for t, status in self.answers if status == 429]

    async def sleep(self, duration: float) -> None:
        await self.vt.sleep(duration)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aexit__(self, *args: object) -> None:
        pass


async def put_run_commands(vt: VirtualTime, arm: VirtualArm, n: int) -> list[int]:
    """``n`` run-command PUTs on ``n`` VMs at once through azrun's policies; their final statuses."""
    throttle = Throttle(clock=vt, async_sleep=vt.sleep)
    pipeline: AsyncPipeline[HttpRequest, AsyncHttpResponse] = AsyncPipeline(
        arm, policies=[AsyncThrottleAwareRetryPolicy(), AsyncThrottlePolicy(throttle)])
    requests = [HttpRequest("PUT", f"{ARM}/virtualMachines/{vm(i)}/runCommands/rc?api-version=2024-11-01",
                            json=SCRIPT_BODY) for i in range(1, n + 1)]
    tasks = [asyncio.ensure_future(pipeline.run(r)) for r in requests]
    await vt.run_until_done(tasks)
    return [t.result().http_response.status_code for t in tasks]


@pytest.mark.parametrize(("latency_s", "gate_s"), [(0.2, 0.0), (0.05, 1.0)], ids=["constant-latency", "late-burst"])
async def test_virtual_arm_documented_limits_no_429(latency_s: float, gate_s: float) -> None:
    """230 run-command PUTs against ARM's documented write bucket (200 + 10/s): no 429, and done
    one refill period per extra request after the burst (plus round trips and the gate).

    The server's bucket refills only once the burst arrives: with a constant latency crediting
    refill from our release leaves no margin (the server meets each paced request with exactly
    1.0 token), and when the burst waits for connections (gate_s) requests paced meanwhile would
    reach a server with no tokens."""
    vt = VirtualTime()
    arm = VirtualArm(vt, Limits(), latency_s=latency_s, gate_s=gate_s)
    assert await put_run_commands(vt, arm, 230) == [200] * 230
    assert arm.throttled_at() == []
    assert vt() - vt.start <= (230 - 200) / 10 + gate_s + 5 * latency_s


async def test_virtual_arm_stricter_subscription_is_learned_from_headers() -> None:
    """ARM writes of 20 + 5/s (azrun assumes 200 + 10/s): no burst of 200 before the first header,
    queued waiters re-timed by what headers say, the refill learned (or cut after a 429)."""
    vt = VirtualTime()
    arm = VirtualArm(vt, Limits(arm_writes=(20, 5)), latency_s=0.05)
    assert await put_run_commands(vt, arm, 40) == [200] * 40
    throttled = arm.throttled_at()
    assert len(throttled) <= 5, f"{len(throttled)} 429s at {[round(t, 2) for t in throttled]}"
    assert all(t - throttled[0] < 1.0 for t in throttled)
    assert vt() - vt.start < 1.5 * (40 - 20) / 5 + 1


async def test_virtual_storm_of_attributable_pauses_is_waited_out() -> None:
    """Attributed 429s (the server's own buckets) never fail a request: 30 throttled retries."""
    vt = VirtualTime()
    arm = VirtualArm(vt, Limits(arm_writes=(2, 1)), latency_s=0.05)
    assert await put_run_commands(vt, arm, 12) == [200] * 12


async def test_virtual_unattributed_429s_use_the_throttled_retry_budget() -> None:
    """Five bare 429s per request (more than retry_status=3): all succeed, azure-core sleeping Retry-After."""
    vt = VirtualTime()
    arm = VirtualArm(vt, Limits(), storm=5)
    assert await put_run_commands(vt, arm, 3) == [200] * 3
    assert len(arm.throttled_at()) == 15
