"""ARM's error envelope, as one exception type the handlers raise and the middleware renders.

Every failure the local ARM answers is ``{"error": {"code", "message", ...}}`` with the code
Azure uses, so clients exercise the same error mapping they need against the real service.
Messages never carry request bodies, tokens or query strings.
"""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An ARM error response: HTTP status, ``error.code``, ``error.message`` and extras."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        log: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}
        self.log = log or {}  # extra request-log keys (e.g. {"throttle": "arm-read"})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def missing_api_version() -> ArmError:
    return ArmError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )


def invalid_api_version(version: str, supported: list[str]) -> ArmError:
    return ArmError(
        400,
        "InvalidApiVersionParameter",
        f"The api-version '{version}' is invalid. The supported versions are '{','.join(supported)}'.",
    )


def subscription_not_found(sub: str) -> ArmError:
    return ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")


def invalid_subscription_id(sub: str) -> ArmError:
    return ArmError(
        400, "InvalidSubscriptionId", f"The provided subscription identifier '{sub}' is malformed or invalid."
    )


def resource_group_not_found(rg: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")


def resource_not_found(rtype: str, name: str, rg: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def entity_not_found() -> ArmError:
    """What Compute answers for an unknown scale-set instance or operation id."""
    return ArmError(404, "NotFound", "The entity was not found in this Azure location.")


def invalid_request_content(detail: str) -> ArmError:
    return ArmError(
        400,
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: '{detail}'.",
    )


def invalid_parameter(message: str, target: str) -> ArmError:
    return ArmError(400, "InvalidParameter", message, extra={"target": target})


def authorization_failed(oid: str, action: str, scope: str) -> ArmError:
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{oid}' with object id '{oid}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
        "please refresh your credentials.",
    )


def no_route(path: str) -> ArmError:
    return ArmError(
        404,
        "InvalidResourceType",
        f"The resource type could not be found for the request path '{path}'.",
    )


def method_not_allowed(method: str) -> ArmError:
    return ArmError(
        405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'."
    )


def conflict_in_progress() -> ArmError:
    return ArmError(
        409,
        "Conflict",
        "Run command extension execution is in progress. Please wait for completion before invoking a run command.",
    )


def vm_not_running() -> ArmError:
    return ArmError(
        409, "OperationNotAllowed", "Cannot modify extensions in the VM when the VM is not running."
    )


def too_many_run_commands(vm: str, cap: int) -> ArmError:
    return ArmError(
        409,
        "OperationNotAllowed",
        f"The maximum number of managed run commands ({cap}) has been reached for VM '{vm}'. "
        "Delete unused run commands and retry.",
    )


def internal_error() -> ArmError:
    return ArmError(
        500,
        "InternalServerError",
        "Encountered internal server error. Diagnostic information: timestamp '', "
        "subscription id '', tracking id '', request correlation id ''.",
    )
