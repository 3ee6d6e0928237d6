"""Benchmark: azrun's throttle against the documented ARM buckets, and what its policy costs.

Two parts:

1. **Sustained load** on the local Azure at the documented limits (ARM per caller: reads
   250 + 25/s, writes 200 + 10/s; Compute per VM: run-command writes 12 + 4/min, GETs 36 +
   12/min). ``writes`` run-command PUTs (``asyncExecution``, script ``true``, each its own run
   command name so none waits for another's execution) and ``reads`` VM GETs go at once through
   the aio Compute client of :class:`azrun.clients.ClientFactory` (throttle on). Reported from
   the simulator's request log: the accepted writes/s and reads/s after the burst against the
   refill rates, the 429 answers, and the wall time against the bucket arithmetic lower bound
   ``max((writes - 200) / 10, (reads - 250) / 25)``.
2. **Policy overhead** per request: the same requests (run-command PUTs and VM GETs over 1,000
   VMs, answered with realistic ``x-ms-ratelimit-remaining-*`` headers) through a real azure-core
   pipeline around a counting fake transport, with azure-core's retry policy alone and with
   azrun's (``client_kwargs``: throttle-aware retry + :class:`ThrottlePolicy`, limits so large
   nobody waits). Per-request wall times, median of each, in alternating blocks; sync and aio.
3. **Memory per target**: a 10,000-target run played through one :class:`Throttle` on a fake
   clock (per target a run-command PUT, three GETs and a DELETE, each answered with current-format
   per-VM headers; the documented subscription limits pace it): buckets alive at the end and
   ``tracemalloc`` bytes they hold, against one bucket set per target.

Run: ``python scripts/benchmarks/bench_throttle.py [writes reads vms]`` (default 600 900 300).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import io
import json
import shutil
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402
from azure.core.pipeline import AsyncPipeline, Pipeline  # noqa: E402
from azure.core.pipeline.policies import AsyncRetryPolicy, RetryPolicy  # noqa: E402
from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport  # noqa: E402
from azure.core.rest import AsyncHttpResponse, HttpRequest, HttpResponse  # noqa: E402
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse  # noqa: E402
from azure.core.rest._http_response_impl_async import RestAsyncHttpClientTransportResponse  # noqa: E402

RUN_COMMAND_BODY: Any = {"location": _common.LOCATION, "properties": {"source": {"script": "true"}, "asyncExecution": True}}
OVERHEAD_VMS = 1000


# -- 1. sustained load on the local Azure ----------------------------------------------------------
async def _load(writes: int, reads: int, vms: int) -> tuple[float, list[str]]:
    """Fire everything at once through the ClientFactory's client; (wall s, error names)."""
    from azrun.clients import ClientFactory

    factory = ClientFactory.from_env()
    compute = factory.acompute(_common.SUB)
    await factory.acredential().get_token(factory.cloud.management_scope)  # identity is not measured here
    errors: list[str] = []

    async def put(k: int) -> None:
        name = _common.vm_name(k % vms + 1)
        await compute.virtual_machine_run_commands.begin_create_or_update(
            _common.RG, name, f"rc-{k // vms}", RUN_COMMAND_BODY, polling=False)

    async def get(k: int) -> None:
        await compute.virtual_machines.get(_common.RG, _common.vm_name(k % vms + 1))

    began = time.monotonic()
    try:
        results = await asyncio.gather(*(put(k) for k in range(writes)), *(get(k) for k in range(reads)),
                                       return_exceptions=True)
        wall = time.monotonic() - began
    finally:
        await factory.aclose()
    errors += [type(r).__name__ for r in results if isinstance(r, BaseException)]
    return wall, errors


def _sustained_rate(times: list[float], burst: float) -> float | None:
    """Accepted requests per second after the burst: ``(n - 1 - burst) / (last - first)``."""
    if len(times) - 1 <= burst or times[-1] <= times[0]:
        return None
    return (len(times) - 1 - burst) / (times[-1] - times[0])


def sustained_load(writes: int, reads: int, vms: int) -> dict[str, Any]:
    """Part 1: start a local Azure with ``vms`` VMs and report the figures of the module doc."""
    where = _common.workdir("throttle")
    try:
        with _common.start_sim(vms, where / "sim") as sim, _common.environ(
            {**sim.env, "AZRUN_RUNTIME_DIR": str(where / "runtime"), "AZRUN_STATE_DIR": str(where / "state")}
        ):
            mark = len(sim.requests())
            with _common.self_usage() as usage:
                wall, errors = asyncio.run(_load(writes, reads, vms))
            log = [r for r in sim.requests()[mark:] if r.get("service") == "arm"]
    finally:
        shutil.rmtree(where, ignore_errors=True)
    ok = [r for r in log if r["status"] in (200, 201)]
    write_ts = sorted(r["ts"] for r in ok if r["method"] == "PUT")
    read_ts = sorted(r["ts"] for r in ok if r["method"] == "GET")
    bound = max(_common.bucket_lower_bound_s(writes, _common.ARM_WRITES),
                _common.bucket_lower_bound_s(reads, _common.ARM_READS))
    return {
        "writes": writes, "reads": reads, "vms": vms,
        "wall_s": round(wall, 2),
        "lower_bound_s": round(bound, 2),
        "ratio": round(wall / bound, 3) if bound else None,
        "writes_per_s": _round(_sustained_rate(write_ts, _common.ARM_WRITES[0])),
        "reads_per_s": _round(_sustained_rate(read_ts, _common.ARM_READS[0])),
        "write_limit_per_s": _common.ARM_WRITES[1],
        "read_limit_per_s": _common.ARM_READS[1],
        "throttled_429": _common.count_429(log),
        "by_op": _common.count_by_op(log),
        "accepted": {"writes": len(write_ts), "reads": len(read_ts)},
        "errors": errors,
        "client_cpu_s": round(usage[0].cpu_s, 2),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- 2. policy overhead ------------------------------------------------------------------------------
class _Sock:
    def __init__(self, raw: bytes) -> None:
        self._file = io.BytesIO(raw)

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return self._file


def _raw_answer(request: HttpRequest) -> bytes:
    """What ARM and Compute answer a run-command PUT or a VM GET (headers only matter here)."""
    kind = "reads" if request.method == "GET" else "writes"
    policy = "LowCostGet" if request.method == "GET" else "VMUpdate"
    headers = {
        f"x-ms-ratelimit-remaining-subscription-{kind}": "100000",
        f"x-ms-ratelimit-remaining-subscription-global-{kind}": "1000000",
        "x-ms-ratelimit-remaining-resource": f"Microsoft.Compute/{policy}Resource;100000,"
                                             f"Microsoft.Compute/{policy}Subscription;100000",
        "Content-Type": "application/json", "Content-Length": "2",
    }
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n{}").encode()


def _parsed(raw: bytes) -> http.client.HTTPResponse:
    internal = http.client.HTTPResponse(_Sock(raw))  # type: ignore[arg-type]
    internal.begin()
    return internal


class CountingTransport(HttpTransport):  # type: ignore[type-arg]
    """Answers every request at once with a canned 200; counts sends."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        self.sent += 1
        response = RestHttpClientTransportResponse(request=request, internal_response=_parsed(_raw_answer(request)))  # type: ignore[no-untyped-call]
        response.read()  # type: ignore[no-untyped-call]
        return response

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: object) -> None:
        pass


class AsyncCountingTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """Async twin of :class:`CountingTransport`."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, request: HttpRequest, **kwargs: Any) -> AsyncHttpResponse:
        self.sent += 1
        response = RestAsyncHttpClientTransportResponse(request=request, internal_response=_parsed(_raw_answer(request)))  # type: ignore[no-untyped-call]
        await response.read()  # type: ignore[no-untyped-call]
        return response

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aexit__(self, *args: object) -> None:
        pass


def _roomy_throttle() -> Any:
    """A Throttle whose every bucket is so large and fast that no request ever waits."""
    from azrun.throttle import Limit, Throttle, ThrottleLimits

    base = ThrottleLimits()
    huge: dict[str, Any] = {f.name: Limit(1e12, 1e9) for f in dataclasses.fields(base) if isinstance(getattr(base, f.name), Limit)}
    return Throttle(dataclasses.replace(base, **huge))


def _requests(count: int) -> list[HttpRequest]:
    base = f"https://management.azure.com/subscriptions/{_common.SUB}/resourceGroups/{_common.RG}/providers/Microsoft.Compute"
    out = []
    for k in range(count):
        vm = f"{base}/virtualMachines/{_common.vm_name(k % OVERHEAD_VMS + 1)}"
        if k % 2:
            out.append(HttpRequest("GET", f"{vm}?api-version=2024-11-01"))
        else:
            out.append(HttpRequest("PUT", f"{vm}/runCommands/rc?api-version=2024-11-01", json=RUN_COMMAND_BODY))
    return out


def _timed_sync(pipeline: Pipeline[HttpRequest, HttpResponse], requests: list[HttpRequest]) -> list[float]:
    samples = []
    for request in requests:
        t0 = time.perf_counter_ns()
        pipeline.run(request)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


async def _timed_async(pipeline: AsyncPipeline[HttpRequest, AsyncHttpResponse], requests: list[HttpRequest]) -> list[float]:
    samples = []
    for request in requests:
        t0 = time.perf_counter_ns()
        await pipeline.run(request)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def policy_overhead(requests: int, blocks: int = 10) -> dict[str, Any]:
    """Part 2: median µs per request with and without azrun's policies, sync and aio."""
    from azrun.throttle import aclient_kwargs, client_kwargs

    throttle = _roomy_throttle()
    sync_kw, aio_kw = client_kwargs(throttle), aclient_kwargs(throttle)
    transport, atransport = CountingTransport(), AsyncCountingTransport()
    pipes: dict[str, Any] = {
        "sync_base": Pipeline(transport, policies=[RetryPolicy()]),
        "sync_azrun": Pipeline(transport, policies=[sync_kw["retry_policy"], *sync_kw["per_retry_policies"]]),
        "aio_base": AsyncPipeline(atransport, policies=[AsyncRetryPolicy()]),
        "aio_azrun": AsyncPipeline(atransport, policies=[aio_kw["retry_policy"], *aio_kw["per_retry_policies"]]),
    }
    samples: dict[str, list[float]] = {name: [] for name in pipes}
    per_block = max(1, requests // blocks)
    loop = asyncio.new_event_loop()
    try:
        for name in pipes:  # warm up: imports, first buckets
            reqs = _requests(min(per_block, 200))
            _timed_sync(pipes[name], reqs) if name.startswith("sync") else loop.run_until_complete(_timed_async(pipes[name], reqs))
        for _ in range(blocks):  # alternate so drift (CPU frequency, GC) hits every variant alike
            for name, pipe in pipes.items():
                reqs = _requests(per_block)
                got = _timed_sync(pipe, reqs) if name.startswith("sync") else loop.run_until_complete(_timed_async(pipe, reqs))
                samples[name] += got
    finally:
        loop.close()
    med = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "requests_per_variant": len(samples["sync_base"]),
        "median_us": {k: round(v, 1) for k, v in med.items()},
        "overhead_us_sync": round(med["sync_azrun"] - med["sync_base"], 1),
        "overhead_us_aio": round(med["aio_azrun"] - med["aio_base"], 1),
        "buckets": len(throttle.metrics().buckets),
        "sent": transport.sent + atransport.sent,
    }


# -- 3. memory per target --------------------------------------------------------------------------
def per_target_memory(targets: int = 10_000) -> dict[str, Any]:
    """Part 3: buckets alive and bytes held after ``targets`` targets went through one Throttle."""
    import gc

    from azrun.throttle import Throttle, classify

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    base = f"https://management.azure.com/subscriptions/{_common.SUB}/resourceGroups/{_common.RG}/providers/Microsoft.Compute"
    steps = [("PUT", "UpdateVMResource", 11), ("GET", "LowCostGetResource", 35), ("GET", "LowCostGetResource", 34),
             ("GET", "LowCostGetResource", 33), ("DELETE", "UpdateVMResource", 10)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        throttle = Throttle(clock=lambda: now[0], sleep=sleep)
        for k in range(targets):
            url = f"{base}/virtualMachines/vm-{k:05d}/runCommands/azrun-1?api-version=2024-11-01"
            for method, policy, left in steps:
                rc = classify(method, url)
                sent = throttle.begin(rc)
                now[0] += 0.05  # the answer's round trip
                throttle.observe(rc, 200, {"x-ms-ratelimit-remaining-resource": f"Microsoft.Compute/{policy};{left}"},
                                 sent=sent)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    metrics = throttle.metrics()
    alive = len(metrics.buckets)
    return {"targets": targets, "buckets_alive": alive, "bytes_held": held, "bytes_per_target": held / targets,
            "simulated_s": round(now[0], 1), "throttled_429": metrics.throttled_429}


# -- entry points ----------------------------------------------------------------------------------
def run(writes: int = 600, reads: int = 900, vms: int = 300, overhead_requests: int = 20000,
        memory_targets: int = 10_000) -> dict[str, Any]:
    """All three parts; the figures in one dict (see the module doc)."""
    return {"load": sustained_load(writes, reads, vms), "overhead": policy_overhead(overhead_requests),
            "memory": per_target_memory(memory_targets)}


def report(result: dict[str, Any]) -> list[_common.Row]:
    """The figures beside their goals."""
    load, over = result["load"], result["overhead"]
    rows = []
    for kind, limit in (("writes", load["write_limit_per_s"]), ("reads", load["read_limit_per_s"])):
        rate = load[f"{kind}_per_s"]
        rows.append(_common.Row(
            f"ARM {kind}/s after the burst", "n/a (no refill phase)" if rate is None else f"{rate:.2f}",
            f"<= {limit:g}/s, >= {0.9 * limit:g}/s", None if rate is None else 0.9 * limit <= rate <= limit * 1.02))
    rows += [
        _common.Row("HTTP 429 answers", str(load["throttled_429"]), "0", load["throttled_429"] == 0),
        _common.Row("requests failed", str(len(load["errors"])), "0", not load["errors"]),
        _common.Row("wall / lower bound", "n/a" if load["ratio"] is None else
                    f"{load['wall_s']:.1f} s / {load['lower_bound_s']:.1f} s = {load['ratio']:.2f}",
                    "<= 1.10", None if load["ratio"] is None else load["ratio"] <= 1.10),
        _common.Row("policy overhead per request, sync", f"{over['overhead_us_sync']:.1f} µs",
                    f"(pipeline alone: {over['median_us']['sync_base']:.0f} µs)"),
        _common.Row("policy overhead per request, aio", f"{over['overhead_us_aio']:.1f} µs",
                    f"(pipeline alone: {over['median_us']['aio_base']:.0f} µs)"),
        _common.Row("client CPU during the load", f"{load['client_cpu_s']:.1f} s"),
    ]
    if (mem := result.get("memory")) is not None:
        per_target = 2 + 3  # an ARM-less bucket set per target: per-VM update-vm + low-cost-get (+3 shared)
        rows += [
            _common.Row(f"buckets alive after {mem['targets']:,} targets", f"{mem['buckets_alive']:,}",
                        f"far below {mem['targets'] * 2:,} (one set per target)",
                        mem["buckets_alive"] < mem["targets"] * 2 / 10),
            _common.Row("throttle memory held per target", f"{mem['bytes_per_target']:.0f} B",
                        f"({mem['bytes_held'] / 1e6:.1f} MB in all; {per_target} buckets of ~3.5 KB kept per target before)"),
        ]
    return rows


def main(argv: list[str]) -> int:
    writes, reads, vms = (int(a) for a in argv[:3]) if len(argv) >= 3 else (600, 900, 300)
    result = run(writes, reads, vms)
    print(json.dumps(result, indent=1))
    _common.print_table(report(result), title=f"\nthrottle: {writes} writes + {reads} reads over {vms} VMs at documented limits")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
