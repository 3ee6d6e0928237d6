"""Errors azrun raises, each a one-line cause plus a hint that says what to do.

The tree::

    AzrunError                      exit code 2 unless a subclass says otherwise
    ├── ConfigError                 bad flag, config file or manifest
    ├── AuthError                   no identity / token could not be had
    ├── PermissionDenied            ARM said 403; the hint names the RBAC action
    ├── ThrottledError              throttled past every retry (carries retry_after_s)
    ├── TargetError
    │   └── NoTargetsMatched        the selector matched nothing
    ├── RunCommandError             a run command's PUT failed (carries the AzureFailure)
    │   ├── SubmitNotSent           the PUT provably never took effect: safe to send again
    │   └── SubmitOutcomeUnknown    the PUT may have been applied: GET before any new PUT
    ├── OutputError                 output storage unusable (container, role, SAS)
    └── LedgerError                 the state dir / ledger cannot be used

No message, repr or hint ever carries a token, a SAS signature or a protected parameter:
messages pass through :func:`azrun.redact.redact` when they quote anything from the wire.

:class:`AzureFailure` is the other half of the vocabulary: an Azure SDK exception reduced to
what azrun decides on (kind, status, code, RBAC action, retryable, a clean message). Only
:mod:`azrun.azerrors` builds one from an exception (:func:`azrun.azerrors.classify`).
"""

from __future__ import annotations

from dataclasses import dataclass

from azrun._compat import StrEnum


class AzrunError(Exception):
    """Base class: a one-line message and an optional hint."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(AzrunError):
    """A flag, config file, manifest or parameter is wrong."""


class AuthError(AzrunError):
    """No usable identity, or the identity endpoint refused a token."""


class PermissionDenied(AzrunError):
    """ARM answered 403; ``action`` is the RBAC action that was missing."""

    def __init__(self, message: str, *, action: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.action = action


class ThrottledError(AzrunError):
    """Azure kept throttling after every retry."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class TargetError(AzrunError):
    """Target selection failed."""


class NoTargetsMatched(TargetError):
    """The selector matched no machine."""


class FailureKind(StrEnum):
    """What an Azure failure means for the caller's next step."""

    CONFLICT = "conflict"  # 409 Conflict: another execution in progress -> back off, retry
    NOT_ALLOWED = "not-allowed"  # 409 OperationNotAllowed: VM not running, 25-cap
    FORBIDDEN = "forbidden"  # 403 (the RBAC action in AzureFailure.action)
    NOT_FOUND = "not-found"  # 404
    THROTTLED = "throttled"  # 429 after every retry
    AUTH = "auth"  # 401 / no token
    NOT_SENT = "not-sent"  # never reached Azure: safe to resend
    UNKNOWN_OUTCOME = "unknown-outcome"  # may have reached Azure: GET before a new PUT
    OTHER = "other"  # anything else (5xx on a read, a bad answer, a bug)


_RETRYABLE = frozenset({FailureKind.CONFLICT, FailureKind.THROTTLED, FailureKind.NOT_SENT, FailureKind.UNKNOWN_OUTCOME})


@dataclass(frozen=True, slots=True)
class AzureFailure:
    """An Azure SDK exception reduced to what azrun decides on.

    ``message`` is one line, redacted (no token, SAS signature or object repr); ``status`` is
    the HTTP status when an answer arrived; ``code`` ARM's (or storage's) error code;
    ``action`` the RBAC action a 403 names; ``retry_after_s`` what a 429 asked for.
    """

    kind: FailureKind
    status: int | None
    code: str
    message: str
    action: str | None = None
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        """Worth trying again later: conflicts, throttling, network failures and 5xx answers."""
        return self.kind in _RETRYABLE or (self.status is not None and self.status >= 500)

    @property
    def hint(self) -> str | None:
        if self.kind is FailureKind.FORBIDDEN:
            what = f"'{self.action}'" if self.action else "the run command actions"
            return f"grant the identity {what} (e.g. the 'Virtual Machine Contributor' role) on the VM's scope"
        if self.kind is FailureKind.NOT_ALLOWED and "maximum number" in self.message.lower():
            return "delete finished run commands with 'azrun cleanup' (a VM holds at most 25)"
        if self.kind is FailureKind.NOT_ALLOWED and "not running" in self.message.lower():
            return "start the VM, or leave it out of the selection"
        return None

    def describe(self) -> str:
        """``"<status> <code>: <message> (hint: ...)"`` on one line."""
        base = f"{self.status or ''} {self.code}: {self.message}".strip()
        return f"{base} (hint: {self.hint})" if self.hint else base


class RunCommandError(AzrunError):
    """A run command's PUT failed; ``failure`` says how (raised by ``RunCommandClient.submit``).

    The two subclasses are the contract a caller decides on before sending the PUT again:
    :class:`SubmitNotSent` (no attempt can have been applied: resend) and
    :class:`SubmitOutcomeUnknown` (one may have been: GET the run command first).
    """

    def __init__(self, message: str, *, failure: AzureFailure, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or failure.hint)
        self.failure = failure


class SubmitNotSent(RunCommandError):
    """The PUT provably never took effect: every attempt failed before it was sent (connection
    refused, DNS, TLS, no token) or ARM rejected it with a 4xx (409, 403, 404, 429 ...). Safe to
    send again once the cause is gone."""


class SubmitOutcomeUnknown(RunCommandError):
    """The PUT may have been applied: an attempt was answered 5xx, timed out or was reset after it
    was sent. Read the run command back (GET by its name) before deciding to send a new PUT;
    ``failure.kind`` is :attr:`FailureKind.UNKNOWN_OUTCOME`."""


class OutputError(AzrunError):
    """Output storage is missing, forbidden or misconfigured."""


class LedgerError(AzrunError):
    """The ledger (state dir) cannot be opened or written."""
