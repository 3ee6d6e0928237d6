"""azrun.azerrors: the one translation of Azure SDK exceptions (classify, and raise as azrun errors)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azrun.azerrors import azure_error, before_sending, classify, clean, map_azure_errors, missing_action
from azrun.errors import (
    AuthError,
    AzrunError,
    FailureKind,
    PermissionDenied,
    TargetError,
    ThrottledError,
)

SUB_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
SUB_MISSING = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"


class _Response:
    """The few attributes azure-core's HttpResponseError reads from a response."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.content_type = "application/json"
        self.request = None
        self._body = json.dumps(body)

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


def _http_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Exception:
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.core.exceptions import ARMErrorFormat

    response = _Response(status, {"error": {"code": code, "message": message}}, headers)
    return HttpResponseError(response=response, error_format=ARMErrorFormat)


def test_403_names_the_missing_action_and_never_the_token() -> None:
    msg = (
        "The client 'x' with object id 'x' does not have authorization to perform action "
        "'Microsoft.Compute/virtualMachines/read' over scope '/subscriptions/s' Bearer eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.sig"
    )
    err = azure_error(_http_error(403, "AuthorizationFailed", msg), "listing", subscription=SUB_A)
    assert isinstance(err, PermissionDenied)
    assert err.action == "Microsoft.Compute/virtualMachines/read"
    assert SUB_A in err.message and "eyJ" not in err.message and "\n" not in err.message
    assert missing_action("nothing here") is None


def test_error_mapping_by_status_and_code() -> None:
    throttled = azure_error(_http_error(429, "TooManyRequests", "slow down", {"Retry-After": "7"}))
    assert isinstance(throttled, ThrottledError) and throttled.retry_after_s == 7
    missing = azure_error(_http_error(404, "SubscriptionNotFound", "nope"), "listing", subscription=SUB_MISSING)
    assert isinstance(missing, TargetError) and SUB_MISSING in missing.message
    other = azure_error(_http_error(500, "InternalServerError", "boom\nsecond line"))
    assert type(other) is AzrunError and other.message == "ARM answered 500 InternalServerError: boom second line"
    assert azure_error(ValueError("not azure")) is None


def test_map_azure_errors_translates_network_and_auth_errors() -> None:
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    with pytest.raises(AuthError) as auth, map_azure_errors("listing"):
        raise ClientAuthenticationError("token request failed: access_token=abc.def")
    assert "abc.def" not in auth.value.message and isinstance(auth.value.__cause__, ClientAuthenticationError)
    with pytest.raises(AzrunError, match="cannot reach Azure") as net, map_azure_errors("listing"):
        raise ServiceRequestError("connection refused")
    assert net.value.hint
    with pytest.raises(KeyError), map_azure_errors("listing"):
        raise KeyError("untouched")


def test_classify_and_raise_read_the_same_status_code_and_action() -> None:
    msg = "does not have authorization to perform action 'Microsoft.Compute/virtualMachines/runCommands/write' over"
    exc = _http_error(403, "AuthorizationFailed", msg)
    failure = classify(exc)
    raised = azure_error(exc, "running")
    assert isinstance(raised, PermissionDenied)
    assert (failure.kind, failure.status, failure.code) == (FailureKind.FORBIDDEN, 403, "AuthorizationFailed")
    assert failure.action == raised.action == "Microsoft.Compute/virtualMachines/runCommands/write"
    assert not failure.retryable
    throttled = classify(_http_error(429, "TooManyRequests", "slow down", {"Retry-After": "7"}))
    assert throttled.retry_after_s == 7 and throttled.retryable
    assert classify(_http_error(503, "ServiceUnavailable", "later")).retryable


def test_storage_error_codes_are_read_too() -> None:
    from azure.core.exceptions import ResourceNotFoundError

    exc = ResourceNotFoundError("The specified container does not exist.\nRequestId:1\nTime:now")
    exc.status_code = 404
    exc.error_code = "ContainerNotFound"  # type: ignore[attr-defined]
    failure = classify(exc)
    assert (failure.kind, failure.status, failure.code) == (FailureKind.NOT_FOUND, 404, "ContainerNotFound")
    assert failure.message == "The specified container does not exist."


def test_messages_lose_object_reprs_secrets_and_newlines() -> None:
    from azure.core.exceptions import ServiceRequestError

    text = ("Cannot connect to host 127.0.0.1:1 ssl:<ssl.SSLContext object at 0x7f3a2b1c9e40> "
            "[Connect call failed]\nsig=abcdef")
    assert clean(text) == "Cannot connect to host 127.0.0.1:1 [Connect call failed] sig=REDACTED"
    err = azure_error(ServiceRequestError(text, error=ConnectionRefusedError(111, "refused")), "listing")
    assert err is not None and "object at" not in err.message and "abcdef" not in err.message


def test_only_a_connect_phase_cause_proves_nothing_was_sent() -> None:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    class ClientConnectorError(OSError):  # aiohttp's names: the base is found along the MRO
        pass

    class ClientConnectorDNSError(ClientConnectorError):
        pass

    assert before_sending(ServiceRequestError("dns", error=ClientConnectorDNSError()))
    assert not before_sending(ServiceRequestError("Server disconnected"))
    assert classify(ServiceResponseError("reset")).kind is FailureKind.UNKNOWN_OUTCOME
    assert classify(ValueError("x")).kind is FailureKind.OTHER
