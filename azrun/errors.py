"""Errors azrun raises, each a one-line cause plus a hint that says what to do.

The tree::

    AzrunError                      exit code 2 unless a subclass says otherwise
    ├── ConfigError                 bad flag, config file or manifest
    ├── AuthError                   no identity / token could not be had
    ├── PermissionDenied            ARM said 403; the hint names the RBAC action
    ├── ThrottledError              throttled past every retry (carries retry_after_s)
    ├── TargetError
    │   └── NoTargetsMatched        the selector matched nothing
    ├── RunCommandError
    │   ├── SubmitNotSent           the PUT never reached Azure: safe to send again
    │   └── SubmitOutcomeUnknown    the PUT may have reached Azure: GET before any new PUT
    ├── OutputError                 output storage unusable (container, role, SAS)
    └── LedgerError                 the state dir / ledger cannot be used

No message, repr or hint ever carries a token, a SAS signature or a protected parameter:
messages pass through :func:`azrun.redact.redact` when they quote anything from the wire.
"""

from __future__ import annotations


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


class RunCommandError(AzrunError):
    """A run command could not be submitted, read or deleted."""


class SubmitNotSent(RunCommandError):
    """The request never reached Azure, so it is safe to send again."""


class SubmitOutcomeUnknown(RunCommandError):
    """The request may have reached Azure: read the resource before sending a new PUT."""


class OutputError(AzrunError):
    """Output storage is missing, forbidden or misconfigured."""


class LedgerError(AzrunError):
    """The ledger (state dir) cannot be opened or written."""
