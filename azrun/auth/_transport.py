"""An azure-core transport that paces and records every identity-endpoint request.

azure-identity's managed-identity credentials send through an azure-core ``Pipeline`` whose
retry policy sits above the transport, so a transport wrapper (passed as ``transport=``, a
documented credential keyword) sees every attempt, retries included. That is where IMDS
pacing must be: a retry is a request too. Retry sleeps go through :meth:`sleep`, delegated.

Imported only when a managed-identity credential is built (it imports azure.core).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.pipeline.transport import HttpTransport

from azrun.auth._diagnosis import Attempt, record, summarize_body
from azrun.auth._pacing import Pacer
from azrun.redact import redact

__all__ = ["PacedTransport"]


class PacedTransport(HttpTransport[Any, Any]):
    """Wraps ``inner``: each ``send`` waits for the pacer, then records what came back."""

    def __init__(self, inner: HttpTransport[Any, Any], pacer: Pacer) -> None:
        self._inner = inner
        self._pacer = pacer

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = _without_query(str(getattr(request, "url", "")))
        with self._pacer.turn():
            try:
                response = self._inner.send(request, **kwargs)
            except Exception as exc:
                record(Attempt(url, None, redact(f"{type(exc).__name__}: {exc}")[:240]))
                raise
        status = int(getattr(response, "status_code", 0))
        record(Attempt(url, status, _error_detail(response) if status >= 400 else ""))
        return response

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> PacedTransport:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)

    def sleep(self, duration: float) -> None:
        self._inner.sleep(duration)

    def __repr__(self) -> str:
        return f"PacedTransport({self._inner.__class__.__name__}, {self._pacer!r})"


def _without_query(url: str) -> str:
    """The endpoint without its query (which names the identity and resource)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _error_detail(response: Any) -> str:
    """The error code / description of a non-2xx answer, redacted; never raises."""
    try:
        text = response.text()
    except Exception:
        return ""
    return summarize_body(text if isinstance(text, str) else "")
