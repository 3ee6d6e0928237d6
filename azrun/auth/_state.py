"""The one deliberate global in azrun: this process's credentials, tokens and pacer.

Everything process-scoped hangs off one :class:`ProcessState`. Credential handles look it up
on every call instead of holding on to it, so replacing it is enough to start over:
:func:`reset` does that for tests, and a forked child does it automatically
(``os.register_at_fork``), so a child never inherits its parent's tokens, locks held by
threads that do not exist in it, or HTTP connections it shares with its parent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from azrun.auth._cache import TokenCache
from azrun.auth._pacing import Pacer, PacingConfig

__all__ = ["ProcessState", "configure_pacing", "current", "reset"]

T = TypeVar("T")


class ProcessState:
    """Credentials (inner SDK objects and azrun handles), the token cache and the pacer."""

    def __init__(self, pacing: PacingConfig | None = None) -> None:
        self.pid = os.getpid()
        self.cache = TokenCache()
        self.pacing = pacing  # None: read AZRUN_IMDS_* / AZRUN_RUNTIME_DIR when first needed
        self._lock = threading.RLock()  # re-entrant: building an inner credential builds the pacer
        self._objects: dict[Hashable, Any] = {}
        self._pacer: Pacer | None = None

    def get_or_create(self, key: Hashable, make: Callable[[], T]) -> T:
        """The object stored under ``key``, made once per process by ``make``."""
        found = self._objects.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        with self._lock:
            found = self._objects.get(key)
            if found is None:
                found = self._objects[key] = make()
            return found

    def pacer(self) -> Pacer:
        """The process's identity-endpoint pacer (built on first use)."""
        if self._pacer is None:
            with self._lock:
                if self._pacer is None:
                    self._pacer = Pacer.from_config(self.pacing or PacingConfig.from_env(os.environ))
        return self._pacer

    def forget_inherited(self) -> None:
        """In a forked child: let go of the parent's open lock files."""
        if self._pacer is not None and self._pacer.files is not None:
            self._pacer.files.close_inherited()

    def __repr__(self) -> str:
        return f"ProcessState(pid={self.pid}, objects={len(self._objects)}, {self.cache!r}, pacer={self._pacer!r})"


_state = ProcessState()


def current() -> ProcessState:
    """This process's state."""
    return _state


def reset(pacing: PacingConfig | None = None) -> None:
    """Drop every credential, token and the pacer (for tests; the CLI never needs it)."""
    global _state
    _state = ProcessState(pacing)


def configure_pacing(config: PacingConfig | None) -> None:
    """Use ``config`` for identity-endpoint pacing from now on (``None``: from the environment).

    Call it before the first token is fetched: the pacer is built once per process.
    """
    _state.pacing = config
    _state._pacer = None


def _after_fork_in_child() -> None:
    global _state
    inherited = _state
    inherited.forget_inherited()
    _state = ProcessState(inherited.pacing)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
