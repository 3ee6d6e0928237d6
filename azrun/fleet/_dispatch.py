"""The two seams of a fleet run: what it sends through (:class:`Dispatcher`) and what it reads
the time from (:class:`Clock`).

* :class:`Dispatcher` is the shape the fleet needs of Azure's run commands: submit (PUT), get
  (GET with the instance view), delete, list (cleanup) and the machine's power state.
  :class:`azrun.runcommand.RunCommandClient` implements it over the real SDK; tests use a
  handler-backed fake (``tests/fleet/fleet_fakes.py``), the way httpx's ``MockTransport`` turns
  a function into a server.
* :class:`Clock` gives monotonic seconds, the wall time and ``sleep``. :class:`SystemClock`
  is the real one; tests run the fleet on a virtual-time event loop with a clock read from it,
  so a run of hours takes milliseconds.

Errors a dispatcher raises are read with :func:`azrun.azerrors.classify`: a failed submit raises
:class:`~azrun.errors.SubmitNotSent` or :class:`~azrun.errors.SubmitOutcomeUnknown`; the others
raise whatever the transport raised (azure-core's exceptions, or a
:class:`~azrun.errors.RunCommandError` carrying its failure). A missing run command is an
answer, not an error: ``get`` returns ``None`` and ``delete`` ``False``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from azrun.models import Target
from azrun.runcommand import RequestCounter, RunCommandInfo, RunCommandView

__all__ = ["Clock", "Dispatcher", "LoopClock", "SystemClock"]


@runtime_checkable
class Dispatcher(Protocol):
    """Run commands on machines, as the fleet uses them (see the module docstring)."""

    async def submit(
        self,
        target: Target,
        name: str,
        body: dict[str, Any],
        *,
        counter: RequestCounter | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> RunCommandView: ...

    async def get(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> RunCommandView | None: ...

    async def delete(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> bool: ...

    async def list(self, target: Target, *, counter: RequestCounter | None = None) -> list[RunCommandInfo]: ...

    async def power_state(self, target: Target, *, counter: RequestCounter | None = None) -> str | None: ...


class Clock(Protocol):
    """Monotonic seconds, the wall time (UTC) and a sleep on the same time line."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``datetime.now(UTC)``, ``asyncio.sleep``."""

    def __repr__(self) -> str:
        return "SystemClock()"

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class LoopClock:
    """The running event loop's clock (``loop.time()``), the wall time derived from it.

    On an ordinary loop this is the real time; on a virtual-time loop (the fleet's tests) it is
    the virtual time, and ``now()`` advances with it from the moment the clock was made.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, epoch: datetime | None = None) -> None:
        self._loop = loop or asyncio.get_event_loop()
        self._t0 = self._loop.time()
        self._epoch = epoch or datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return f"LoopClock(t={self.monotonic():.3f})"

    def monotonic(self) -> float:
        return self._loop.time()

    def now(self) -> datetime:
        from datetime import timedelta

        return self._epoch + timedelta(seconds=self._loop.time() - self._t0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
