"""The request log: one JSON line per request the local Azure answers.

Tests and benchmarks count from it (429s, IMDS calls, run-command PUTs), so every line has
the same keys: ``ts, service, method, path, op, status, caller, ms`` plus optional extras.
The path never carries a query string, so SAS signatures and secrets cannot land here.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO, Any


class RequestLog:
    """Append-only JSON-lines writer (thread-safe; flushed per line so readers see it at once)."""

    def __init__(self, path: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.counts: dict[tuple[str, int], int] = {}

    def write(
        self,
        *,
        service: str,
        method: str,
        path: str,
        op: str,
        status: int,
        caller: str | None,
        ms: float,
        **extra: Any,
    ) -> None:
        entry = {
            "ts": round(time.time(), 6),
            "service": service,
            "method": method,
            "path": path.split("?", 1)[0],
            "op": op,
            "status": status,
            "caller": caller,
            "ms": round(ms, 3),
            **extra,
        }
        line = json.dumps(entry, separators=(",", ":"))
        with self._lock:
            key = (service, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a request log (for tests and benchmarks)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
