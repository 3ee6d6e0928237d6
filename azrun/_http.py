"""The aio HTTP transport every async SDK client of one :class:`~azrun.clients.ClientFactory` shares.

Why one: each azure-core ``AioHttpTransport`` owns an aiohttp session and its own connection
pool, so every client (Compute, Resources, Subscriptions, the output container) opened its own
connections; a 100-target run opened ~100 TLS connections to ARM (the PUTs) and ~100 to blob
storage (creating the output blobs), all in the same second. One shared session per factory and
loop, its connections kept alive (:data:`KEEPALIVE_S`), reuses them across clients and polls;
its pool is bounded per endpoint (:data:`POOL_PER_HOST`, why not lower: see there).

* aiohttp resends an idempotent request (PUT, DELETE) once, by itself, when the server drops
  the connection after the request was written (RFC 9112 section 9.3.1 allows it). For a run
  command that may run the script twice: a dropped PUT may have been applied. The shared session
  has that off, so the one who knows (:func:`azrun.fleet._deliver.deliver`: GET before a new
  PUT) decides. aiohttp has no public switch: the session's ``_retry_connection`` flag is set
  when the session opens (the fault matrix's lost-answer row fails if that stops working).
* One ``SSLContext`` per CA bundle (azure-core builds a new one for every request when
  ``connection_verify`` is a path, so aiohttp could never reuse a connection).
* :meth:`SharedTransport.client_view` is what a client gets: closing one client (``async with``
  exit, ``close()``) does not close the session the others use; the last one closed does, and
  so does :meth:`SharedTransport.close` (``ClientFactory.aclose``).
* aiohttp sessions belong to one event loop: a factory keeps one shared transport per loop.
"""

from __future__ import annotations

import ssl
from typing import Any

from azure.core.pipeline.transport import AioHttpTransport, AsyncHttpTransport

__all__ = ["KEEPALIVE_S", "POOL_PER_HOST", "SharedTransport"]

#: Connections per endpoint (host:port) one factory keeps (aiohttp's default total). Measured on a
#: 100-target run against the local Azure: a bound of 16 or 32 cut the TLS connections from ~195
#: to ~37 but stretched the run from 5.0 s to 8-9 s (a run-command PUT holds its connection until
#: ARM answers, so dispatches queued behind each other) and did not lower the heartbeat lag on
#: the caller's loop; what did is azrun's own loop (:mod:`azrun._engine`).
POOL_PER_HOST = 100
#: How long an idle connection is kept for reuse (the poll schedule's longest gaps are longer
#: than aiohttp's default of 15 s).
KEEPALIVE_S = 60.0

_CONTEXTS: dict[str, ssl.SSLContext] = {}


def _context(ca_bundle: str) -> ssl.SSLContext:
    context = _CONTEXTS.get(ca_bundle)
    if context is None:
        context = _CONTEXTS[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
    return context


class SharedTransport(AioHttpTransport):  # type: ignore[misc]
    """An ``AioHttpTransport`` with one bounded, kept-alive pool and one SSL context."""

    def __init__(self, ca_bundle: str | None = None, *, pool_per_host: int = POOL_PER_HOST,
                 env_settings: bool = True) -> None:
        # env_settings=False: no per-request proxy lookup (azrun.clients.env_names_proxy)
        if ca_bundle:
            super().__init__(connection_verify=ca_bundle, use_env_settings=env_settings)
        else:
            super().__init__(use_env_settings=env_settings)
        self.ca_bundle = ca_bundle
        self.pool_per_host = pool_per_host
        self.refs = 0  # client views holding the session open

    def __repr__(self) -> str:
        return f"SharedTransport(ca_bundle={self.ca_bundle!r}, pool_per_host={self.pool_per_host})"

    async def open(self) -> None:
        import aiohttp

        session: aiohttp.ClientSession | None = self.session  # type: ignore[has-type]
        if session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.pool_per_host,
                                             keepalive_timeout=KEEPALIVE_S)  # fmt: skip
            session = self.session = aiohttp.ClientSession(
                connector=connector, trust_env=self._use_env_settings, cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )  # fmt: skip
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False  # never resend a PUT blind (module docstring)
        self._has_been_opened = True
        await session.__aenter__()

    def _build_ssl_config(self, cert: Any, verify: Any) -> Any:
        if not cert and self.ca_bundle and verify == self.ca_bundle:
            return _context(self.ca_bundle)
        return super()._build_ssl_config(cert, verify)

    def client_view(self) -> AsyncHttpTransport[Any, Any]:
        """What one SDK client gets: sends through this transport, never closes it."""
        return _View(self)


class _View(AsyncHttpTransport[Any, Any]):
    """One client's handle: holds a reference on the shared session while in use (from its first
    request or ``async with`` to its ``close``); the last reference released closes the session
    (a client built and closed on its own leaks nothing), the next request opens a new one."""

    def __init__(self, shared: SharedTransport) -> None:
        self._shared = shared
        self._held = False

    def __repr__(self) -> str:
        return f"<view of {self._shared!r}, held={self._held}>"

    def _hold(self) -> None:
        if not self._held:
            self._held = True
            self._shared.refs += 1

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self._hold()
        return await self._shared.send(request, **kwargs)

    async def open(self) -> None:
        self._hold()
        await self._shared.open()

    async def close(self) -> None:
        if self._held:
            self._held = False
            self._shared.refs -= 1
            if self._shared.refs <= 0:
                await self._shared.close()

    async def __aenter__(self) -> _View:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sleep(self, duration: float) -> None:
        await self._shared.sleep(duration)
