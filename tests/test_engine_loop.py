"""azrun's own event loop (azrun/_engine.py) and what it is for: the caller's loop stays free.

* the bridge keeps the cancellation contract: a cancelled caller sees ``CancelledError`` only
  after the engine-side task has finished reacting to it;
* a library run on the local Azure executes on the engine thread (observers are called there),
  ``handle.events()`` is read from the caller's loop, and a heartbeat on the caller's loop stays
  on time within a generous bound;
* with ``engine_loop="caller"`` (the CLI's way), the runner still never touches the ledger
  synchronously on the loop thread while a run goes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import azrun
from azrun._engine import EngineLoop, engine
from azrun.fleet._events import EventHub, NullObserver, RunSummary
from azrun.ledger import Ledger
from azrun.models import FleetResult, RunId


@pytest.fixture
def private() -> Iterator[EngineLoop]:
    loop = EngineLoop("azrun-engine-test")
    try:
        yield loop
    finally:
        loop.stop()


async def test_results_and_errors_cross_the_bridge(private: EngineLoop) -> None:
    async def where() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise ValueError("from the engine")

    assert await private.call(where()) == "azrun-engine-test"
    with pytest.raises(ValueError, match="from the engine"):
        await private.call(fail())


async def test_a_cancelled_caller_returns_only_after_the_engine_side_reacted(private: EngineLoop) -> None:
    reacted: list[str] = []

    async def run() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # e.g. detaching and writing the ledger
            reacted.append(threading.current_thread().name)
            raise

    task = asyncio.get_running_loop().create_task(private.call(run()))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reacted == ["azrun-engine-test"]  # already done when the caller's cancel completed


async def test_events_pushed_on_the_engine_wake_a_subscriber_on_another_loop(private: EngineLoop) -> None:
    hub = EventHub(NullObserver())
    seen: list[Any] = []

    async def consume() -> None:
        async for event in hub.subscribe():
            seen.append(event)

    reader = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(0.05)  # the subscriber is waiting

    async def finish() -> None:
        hub.close(RunSummary(FleetResult(RunId("r1"), ()), "succeeded"))

    await private.call(finish())
    await asyncio.wait_for(reader, 5)
    assert [type(e).__name__ for e in seen] == ["RunSummary"]


class _Threads(azrun.FleetObserver):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def on_target(self, result: Any) -> None:
        self.names.add(threading.current_thread().name)

    def on_line(self, target: Any, stream: str, line: str) -> None:
        self.names.add(threading.current_thread().name)

    def on_progress(self, snapshot: Any) -> None:
        pass


async def _with_heartbeat(go: Callable[[], Any]) -> tuple[Any, list[float]]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = False

    async def beat() -> None:
        while not stop:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append((loop.time() - due) * 1000)

    beating = loop.create_task(beat())
    try:
        result = await go()
    finally:
        stop = True
        await beating
    return result, sorted(lags)


async def test_a_library_run_lives_on_the_engine_and_the_callers_loop_stays_on_time(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]]
) -> None:
    azure_env(local_azure)
    threads = _Threads()
    async with azrun.Fleet.from_env(observer=threads) as fleet:
        assert fleet.engine_loop == "private" and fleet.engine is engine()
        spec = azrun.RunSpec(script="echo hi; sleep 1", timeout_s=60)
        handle = await fleet.start(azrun.Selector.from_options(tags=["role=web"]), spec)

        async def watch() -> list[Any]:
            return [e async for e in handle.events()]

        events, lags = await _with_heartbeat(watch)
        result = await handle.wait()
    assert result.counts() == {"Succeeded": 4, "Skipped": 1}
    assert isinstance(events[-1], azrun.RunSummary) and events[-1].result == result
    assert threads.names == {"azrun-engine"}  # every observer call on azrun's thread, none on ours
    assert len(lags) > 50
    p99 = lags[int(0.99 * len(lags))]
    assert p99 < 50, f"heartbeat p99 {p99:.1f} ms on the caller's loop"  # generous: the goal is 5 ms


async def test_on_the_callers_loop_the_runner_never_reads_or_writes_the_ledger_there(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    azure_env(local_azure)
    calls: list[tuple[str, int]] = []
    # every Ledger method that touches SQLite (record_result only maps a result onto update_target)
    for name in ("run_status", "target", "targets", "update_target", "begin_dispatch", "set_run_status",
                 "skip_pending", "merge_run_options", "counts", "run", "renew_lease", "release_lease"):
        original = getattr(Ledger, name)

        def spy(self: Ledger, *args: Any, __name: str = name, __original: Any = original, **kwargs: Any) -> Any:
            calls.append((__name, threading.get_ident()))
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(Ledger, name, spy)
    async with azrun.Fleet.from_env(state_dir=tmp_path / "state", engine_loop="caller") as fleet:
        assert fleet.engine is None
        handle = await fleet.start(azrun.Selector.from_options(tags=["role=web"]),
                                   azrun.RunSpec(script="echo hi", timeout_s=60))  # fmt: skip
        calls.clear()  # from here on the run is the runner's
        result = await handle.wait()
    assert result.counts() == {"Succeeded": 4, "Skipped": 1}
    names = {n for n, _ in calls}
    assert {"run_status", "update_target", "set_run_status"} <= names  # the spy sees the ledger's traffic
    on_loop = sorted({n for n, ident in calls if ident == threading.get_ident()})
    assert on_loop == [], f"sync ledger calls on the event loop's thread: {on_loop}"
