"""Benchmark: live output from append blobs on the local Azure's Azurite.

``run(targets)`` starts a local Azure with storage, opens an :class:`azrun.output.OutputStore`
(account-key SAS, as the demo does) and measures three things:

1. **append-to-print latency** for ``targets`` streaming targets: each target appends one
   time-stamped line about every ``write_every_s`` seconds through its own SAS URI (exactly the
   handler's ``PUT ?comp=appendblock``); the latency of a line is the time from the append's 201
   to the tailer handing the line to the sink. Reported as p50 / p95 / max (default tailer
   settings: 0.5 s after data, growing x1.5 per empty poll up to 5 s), separately for the steady
   stream and for each target's first line after the idle period (the backed-off case).
   Every target streams (no cap); the tailer's poll budget (100 polls/s) stretches intervals
   when the targets' demand exceeds it, and ``max_stretch`` reports by how much.
2. **storage requests per target-minute**, counted by the store's request hook (every attempt),
   while every target is idle (after the interval has backed off) and while every target streams.
3. **MB/s for one large output**: a ``large_mb`` MB blob written in 4 MiB appends, then read to
   the end by ``Tailer.complete`` (through the line splitter, as a stream-mode run would) and by
   ``OutputStore.download`` (raw bytes to a file).

Figures depend on the machine: Azurite is a single Node.js process and dominates the cost.

Run: ``python scripts/benchmarks/bench_output.py [targets]`` (default 50).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FLEET = """
[sim]
current_vm = "rg-ops/vm-ops-01"

[[subscription]]
id = "11111111-1111-4111-8111-111111111111"
name = "bench"

  [[subscription.resource_group]]
  name = "rg-ops"
  location = "westeurope"

    [[subscription.resource_group.vm]]
    name = "vm-ops-01"
    system_identity = true
    system_identity_storage_role = "contributor"
"""
X_MS_VERSION = "2025-11-05"


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _target(name: str) -> Any:
    from azrun.models import Target, TargetKind

    return Target(
        resource_id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name, kind=TargetKind.VM, subscription_id="s", resource_group="rg", location="westeurope",
        os="linux", power_state="running",
    )  # fmt: skip


class _Writer:
    """Appends like the Linux handler: one ``PUT <sas>&comp=appendblock`` per upload."""

    def __init__(self, ca: str) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca), limit=64),
            skip_auto_headers=("Content-Type",),
        )

    async def append(self, sas_uri: str, data: bytes) -> None:
        headers = {"x-ms-version": X_MS_VERSION, "Content-Length": str(len(data))}
        async with self._session.put(f"{sas_uri}&comp=appendblock", headers=headers, data=data) as resp:
            if resp.status != 201:
                raise RuntimeError(f"append failed: {resp.status} {await resp.text()}")

    async def close(self) -> None:
        await self._session.close()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(_pct(values, 0.50), 3),
        "p95": round(_pct(values, 0.95), 3),
        "max": round(max(values, default=float("nan")), 3),
        "mean": round(statistics.fmean(values), 3) if values else None,
    }


async def _streaming(
    store: Any, writer: _Writer, n: int, *, idle_s: float, stream_s: float, every_s: float
) -> Any:
    from azrun.output import Tailer

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    targets = [_target(f"vm-{i:04d}") for i in range(n)]
    pairs = await asyncio.gather(*(store.prepare(run_id, t, expiry_s=3600) for t in targets))
    appended: dict[str, float] = {}
    latencies: list[float] = []  # every line after the first of its target
    first_latencies: list[float] = []  # the first line of each target, after the idle period

    def sink(target: Any, stream: str, line: str) -> None:
        sent = appended.get(line)
        # None: the tailer printed the line before the writer saw its append's 201 (same event
        # loop), so its latency is 0; without this such lines went uncounted.
        latency = 0.0 if sent is None else time.perf_counter() - sent
        (first_latencies if line.endswith(" line 0") else latencies).append(latency)

    tailer = Tailer(store, run_id, sink)  # defaults: every target live, 100 polls/s budget
    for t in targets:
        tailer.add(t)
    # idle: let the intervals back off to the maximum (~15 s with the defaults), then count
    await asyncio.sleep(15.0)
    before = store.stats.requests
    await asyncio.sleep(idle_s)
    idle_requests = store.stats.requests - before

    rng = random.Random(7)
    starts = [rng.uniform(0.0, 5.0) for _ in range(n)]  # first writes spread over the idle interval

    async def write(i: int, pair: Any) -> None:
        await asyncio.sleep(starts[i])
        seq = 0
        deadline = time.perf_counter() + stream_s - starts[i]
        while time.perf_counter() < deadline:
            line = f"vm-{i:04d} line {seq}"
            await writer.append(pair.stdout_write_uri, (line + "\n").encode())
            appended[line] = time.perf_counter()
            seq += 1
            await asyncio.sleep(every_s)

    before = store.stats.requests  # the writer's appends are not counted (its own session)
    await asyncio.gather(*(write(i, p) for i, p in enumerate(pairs)))
    stream_requests = store.stats.requests - before
    await asyncio.gather(*(tailer.complete(t, iv_output="", iv_error="") for t in targets))
    await tailer.aclose()
    return {
        "targets": n,
        "lines": len(appended),
        "lines_printed_live": len(latencies) + len(first_latencies),
        "latency_s": _summary(latencies),
        "first_line_after_idle_latency_s": _summary(first_latencies),
        "poll_budget_rps": 100.0,
        "max_stretch": round(tailer.stats.max_stretch, 2),
        "storage_requests_per_s": {
            "idle": round(idle_requests / idle_s, 1),
            "streaming": round(stream_requests / stream_s, 1),
            "goal": "<= 100 (the tailer's budget) + the final reads",
        },
        "storage_requests_per_target_minute": {
            "idle": round(idle_requests / n / (idle_s / 60), 1),
            "streaming": round(stream_requests / n / (stream_s / 60), 1),
            "streaming_note": f"each target appends every {every_s} s; stdout + stderr polled",
        },
    }


async def _large(store: Any, writer: _Writer, mb: int, workdir: Path) -> dict[str, Any]:
    from azrun.output import Tailer

    run_id, target = f"bench-{uuid.uuid4().hex[:8]}", _target("vm-large")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    line = b"0123456789abcdef " * 5 + b"\n"  # 86 bytes
    block = line * (4 * 1024 * 1024 // len(line))
    total = 0
    while total < mb * 1024 * 1024:
        await writer.append(pair.stdout_write_uri, block)
        total += len(block)
    lines = 0

    def sink(target: Any, stream: str, text: str) -> None:
        nonlocal lines
        lines += 1

    tailer = Tailer(store, run_id, sink)
    began = time.perf_counter()
    ref, _, _ = await tailer.complete(target, iv_output="", iv_error="")
    tail_s = time.perf_counter() - began
    began = time.perf_counter()
    from azrun.output import blob_name

    saved = await store.download(blob_name(run_id, target, "stdout"), workdir / "large.out")
    download_s = time.perf_counter() - began
    assert ref.stdout_bytes == total == saved
    return {
        "bytes": total,
        "lines": lines,
        "tail_complete_mb_s": round(total / 1e6 / tail_s, 1),
        "download_mb_s": round(total / 1e6 / download_s, 1),
    }


async def _measure(
    targets: int, workdir: Path, *, idle_s: float, stream_s: float, every_s: float, large_mb: int
) -> Any:
    from azrun.clients import ClientFactory
    from azrun.output import OutputStore

    factory = ClientFactory.from_env()
    store = await OutputStore.open(
        container_url=os.environ["AZRUN_OUTPUT_CONTAINER"],
        factory=factory,
        connection_string=os.environ["AZRUN_STORAGE_CONNECTION_STRING"],
        storage_rps=1000.0,
        max_inflight=64,
    )
    writer = _Writer(os.environ["AZRUN_CA_BUNDLE"])
    try:
        live = await _streaming(store, writer, targets, idle_s=idle_s, stream_s=stream_s, every_s=every_s)
        large = await _large(store, writer, large_mb, workdir)
    finally:
        await writer.close()
        await store.aclose()
        await factory.aclose()
    return {"live": live, "large_output": large, "store_requests_total": store.stats.snapshot()}


def run(
    targets: int = 50,
    *,
    idle_s: float = 30.0,
    stream_s: float = 20.0,
    write_every_s: float = 1.0,
    large_mb: int = 32,
) -> dict[str, Any]:
    """Start a local Azure with Azurite and return the figures described in the module docstring."""
    from azrun.sim.launcher import SimProcess

    with tempfile.TemporaryDirectory(prefix="bench-output-") as work:
        sim = SimProcess(FLEET, workdir=Path(work), storage=True)
        began = time.perf_counter()
        sim.start(timeout_s=120)
        try:
            result: dict[str, Any] = {"sim_start_s": round(time.perf_counter() - began, 2)}
            with _environ(sim.env):
                job = _measure(
                    targets,
                    Path(work),
                    idle_s=idle_s,
                    stream_s=stream_s,
                    every_s=write_every_s,
                    large_mb=large_mb,
                )
                result |= asyncio.run(job)
        finally:
            sim.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=2))
