"""azrun's own event loop: one per process, in a daemon thread, for the async library API.

Why: a fleet run is hundreds of small things per second on an event loop (TLS handshakes and
writes, HTTP parsing, JSON, timers, poll and tail bookkeeping), each short, together long. On the
caller's loop (an Azure Function's, a runbook's) they delay every other coroutine there: a
heartbeat sleeping 10 ms woke p99 50-120 ms late during a 100-target run even with every ledger
read and write off the loop. So by default (``Fleet(engine_loop="private")``) the run lives on
this loop, and the caller's loop only awaits results and events, bridged thread-safely. What is
left on the caller's loop is waiting for the GIL, which Python hands over every
``sys.getswitchinterval()`` (5 ms).

* :func:`engine` gives the process's :class:`EngineLoop`; its thread starts on first use and is
  stopped (the loop closed) at interpreter exit.
* :meth:`EngineLoop.call` runs a coroutine there and awaits it from the caller's loop.
  **Cancelling the awaiting task cancels the engine-side task and waits until it has finished
  reacting** (for a fleet run: detached and the ledger written, as on the caller's loop) before
  the caller sees ``CancelledError``: the ledger agrees the moment the caller's cancel returns.
* Objects bound to a loop (aiohttp sessions, asyncio locks) are made on the engine loop by the
  code that runs there; the process credential and token cache are thread-safe and loop-free.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

__all__ = ["EngineLoop", "bridge", "call_soon", "engine", "on_engine"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_JOIN_S = 5.0


class EngineLoop:
    """A private event loop in a daemon thread (see the module docstring)."""

    def __init__(self, name: str = "azrun-engine") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"EngineLoop({self.name!r}, running={alive})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's loop (the thread starts on first use)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed() or self._thread is None or not self._thread.is_alive():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    _cancel_all(loop)
                loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    def here(self) -> bool:
        """True when called from code running on the engine's loop."""
        return self._loop is not None and running_loop() is self._loop

    async def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the engine's loop; await its result from the caller's loop."""
        if self.here():
            return await coro
        return await bridge(self.loop, coro)

    def stop(self) -> None:
        """Stop the loop (its pending tasks are cancelled) and join the thread (atexit)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_JOIN_S)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=_JOIN_S))


async def bridge(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` as a task on ``loop`` (another thread's) and await it here.

    Cancelling the caller cancels that task and waits for it to finish before re-raising, so
    whatever the task does on cancellation (a run detaching and writing its ledger) is done when
    the caller's cancellation completes.
    """
    here = asyncio.get_running_loop()
    if here is loop:
        return await coro
    done: asyncio.Future[_T] = here.create_future()
    box: list[asyncio.Task[_T]] = []

    def settle(task: asyncio.Task[_T]) -> None:  # on the caller's loop
        if done.done():
            return
        if task.cancelled():
            done.cancel()
        elif task.exception() is not None:
            done.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            done.set_result(task.result())

    def relay(task: asyncio.Task[_T]) -> None:  # on the engine loop
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            here.call_soon_threadsafe(settle, task)

    def start() -> None:
        task = loop.create_task(coro)
        task.add_done_callback(relay)
        box.append(task)

    loop.call_soon_threadsafe(start)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        if done.done() and not done.cancelled():
            raise
        loop.call_soon_threadsafe(_cancel_first, box)  # runs after start(): same queue, FIFO
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(done)
        raise


def _cancel_first(box: list[asyncio.Task[Any]]) -> None:
    if box:
        box[0].cancel()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` on ``loop``: at once when already there, else thread-safely."""
    if running_loop() is loop:
        fn(*args)
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to tell
        loop.call_soon_threadsafe(fn, *args)


class _Engined(Protocol):
    @property
    def engine(self) -> EngineLoop | None: ...


_S = TypeVar("_S", bound=_Engined)


def on_engine(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """Decorates an async method of an object with an ``engine`` (an :class:`EngineLoop`, or
    None to stay on the caller's loop): the call runs on that engine's loop."""

    @functools.wraps(method)
    async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        chosen = self.engine
        if chosen is None or chosen.here():
            return await method(self, *args, **kwargs)
        return await chosen.call(method(self, *args, **kwargs))

    return wrapper


_ENGINE = EngineLoop()
atexit.register(_ENGINE.stop)


def engine() -> EngineLoop:
    """The process's engine loop."""
    return _ENGINE
