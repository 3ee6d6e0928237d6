"""The fleet's view of output: with an :class:`~azrun.output.OutputStore` (append blobs, tailed
live) or without one (the instance view's last 4 KB, flagged truncated when it may be cut).

Output is optional by design: a run without storage still works, it just says so once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from azrun.models import OutputRef, Target
from azrun.runcommand import RunCommandView

if TYPE_CHECKING:
    from azrun.output import OutputStore, Tailer

__all__ = ["InstanceViewOutput", "OutputPort", "StoreOutput"]

_LOG = logging.getLogger(__name__)
LineSink = Any  # Callable[[Target, str, str], None]


class OutputPort(Protocol):
    """What the runner needs from output handling."""

    def urls(self, target: Target) -> tuple[str | None, str | None]: ...

    def refuse(self, target: Target) -> str | None:
        """Why this target cannot write its output (MI mode without the identity), or None."""

    async def prepare(self, target: Target, expiry_s: int) -> Any:
        """Blob write targets for the PUT (``BlobPair``-like) or None when there is no store."""

    def attach(self, target: Target) -> None:
        """Start streaming the target's output (it is Running)."""

    async def complete(self, target: Target, view: RunCommandView | None) -> tuple[OutputRef, str, str]:
        """``(OutputRef, stdout tail, stderr tail)`` once the target is finished."""

    async def aclose(self) -> None: ...


class InstanceViewOutput:
    """No storage: results come from the instance view (last 4 KB), flagged when possibly cut.

    With a ``sink``, a finished target's instance-view lines are printed then (nothing streams
    live without blobs)."""

    def __init__(self, sink: LineSink | None = None) -> None:
        self._sink = sink

    def urls(self, target: Target) -> tuple[str | None, str | None]:
        return None, None

    def refuse(self, target: Target) -> str | None:
        return None

    async def prepare(self, target: Target, expiry_s: int) -> Any:
        return None

    def attach(self, target: Target) -> None:
        pass

    async def complete(self, target: Target, view: RunCommandView | None) -> tuple[OutputRef, str, str]:
        from azrun.output import instance_view_output

        if view is None:
            return OutputRef(truncated=True), "", ""
        if self._sink is not None:
            from azrun.output import split_text

            for stream, text in (("stdout", view.output), ("stderr", view.error)):
                for line in split_text(text.encode("utf-8")):
                    self._sink(target, stream, line)
        return instance_view_output(view.output, view.error)

    async def aclose(self) -> None:
        pass


class StoreOutput:
    """Append blobs in an :class:`OutputStore`, tailed by a :class:`Tailer` into ``sink``."""

    def __init__(self, store: OutputStore, run_id: str, sink: LineSink, *, max_tailed: int | None = None,
                 tailer: Tailer | None = None) -> None:
        from azrun.output import Tailer

        self.store = store
        self._run_id = run_id
        self._tailer = tailer or Tailer(store, run_id, sink, max_tailed=max_tailed)

    def urls(self, target: Target) -> tuple[str | None, str | None]:
        out, err = self.store.urls(self._run_id, target)
        return out, err

    def refuse(self, target: Target) -> str | None:
        return self.store.check_target_identity(target)

    async def prepare(self, target: Target, expiry_s: int) -> Any:
        return await self.store.prepare(self._run_id, target, expiry_s=expiry_s)

    def attach(self, target: Target) -> None:
        self._tailer.add(target)

    async def complete(self, target: Target, view: RunCommandView | None) -> tuple[OutputRef, str, str]:
        return await self._tailer.complete(
            target, iv_output=view.output if view else "", iv_error=view.error if view else ""
        )

    async def aclose(self) -> None:
        await self._tailer.aclose()
