"""Shared helpers of the throttle tests: a fake clock, the URLs they classify, and a counting
fake transport returning real azure-core responses."""

from __future__ import annotations

import http.client
import io
import json
from typing import Any

from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

from azrun.throttle import Throttle

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
ARM = f"https://management.azure.com/subscriptions/{SUB}"
RG = f"{ARM}/resourceGroups/RG-Web/providers/Microsoft.Compute"
VM_ID = f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachines/vm-001"
VMSS_VM_ID = (
    f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/microsoft.compute/virtualmachinescalesets/ss/virtualmachines/7"
)
RUN_PUT = f"{RG}/virtualMachines/vm-001/runCommands/azrun-1?api-version=2024-11-01"

ARM_429 = json.dumps({"error": {"code": "SubscriptionRequestsThrottled",
                                "message": "Number of 'write' requests for subscription exceeded."}})
COMPUTE_429 = json.dumps({"code": "OperationNotAllowed", "message": "too many requests", "details": [
    {"code": "TooManyRequests", "target": "HighCostGet", "message": "{}"}]})


class FakeClock:
    """Monotonic fake time; ``sleep`` advances it and records how long was slept."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def names(throttle: Throttle) -> dict[str, Any]:
    """Bucket stats by bucket name."""
    return {b.name: b for b in throttle.metrics().buckets}


class _Sock:
    def __init__(self, raw: bytes) -> None:
        self._file = io.BytesIO(raw)

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return self._file


def canned_response(request: HttpRequest, status: int, headers: dict[str, str], body: str = "") -> HttpResponse:
    """A real azure-core response, parsed by http.client from raw HTTP/1.1 bytes."""
    data = body.encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(data))}.items())
    raw = f"HTTP/1.1 {status} {http.client.responses.get(status, 'X')}\r\n{head}\r\n".encode() + data
    internal = http.client.HTTPResponse(_Sock(raw))  # type: ignore[arg-type]
    internal.begin()
    response = RestHttpClientTransportResponse(request=request, internal_response=internal)  # type: ignore[no-untyped-call]
    response.read()  # type: ignore[no-untyped-call]
    return response


Canned = tuple[int, dict[str, str], str]


class CountingTransport(HttpTransport):  # type: ignore[type-arg]
    """Returns canned responses in order; records (fake time, method) of every send and every sleep."""

    def __init__(self, clock: FakeClock, responses: list[Canned]) -> None:
        self.clock = clock
        self.responses = list(responses)
        self.sent: list[tuple[float, str]] = []
        self.slept: list[float] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        self.sent.append((self.clock(), request.method))
        status, headers, body = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return canned_response(request, status, headers, body)

    def sleep(self, duration: float) -> None:
        self.slept.append(duration)
        self.clock.now += duration

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __exit__(self, *args: object) -> None:
        pass
