"""SIGTERM treated like Ctrl-C (``kill``, a CI job's cancel, systemd's stop).

Outside a run, SIGTERM ends the command with :class:`Terminated` (exit 143, one line). During
``run``/``resume``/``rerun`` the run's driver (:mod:`azrun.cli._session`) installs its own handler
on the event loop: dispatch stops, in-flight targets are left running and marked interrupted in
the ledger, the resume hint is printed, and the process exits 143.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["Terminated", "sigterm_raises"]


class Terminated(Exception):
    """The process received SIGTERM."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block (main thread only), SIGTERM raises :class:`Terminated`."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
