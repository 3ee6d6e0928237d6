"""The one exit-code table of every ``azrun`` command, and which error maps to which code.

Codes 0-2 follow the Azure CLI and POSIX habits (0 ok, 2 usage); 1 is a *run outcome* (a target
did not succeed), never a crash, so a script can tell "my fleet has a problem" from "azrun could
not do its job". 130/143 are the shell's 128+SIGINT/SIGTERM.
"""

from __future__ import annotations

import sqlite3
from enum import IntEnum

from azrun.errors import AzrunError


class ExitCode(IntEnum):
    """What an ``azrun`` process's exit status means (the same for every command)."""

    OK = 0
    TARGET_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    PERMISSION = 5
    AZURE = 6
    OUTPUT_STORAGE = 7
    LOCAL_STATE = 8
    INTERNAL = 70
    INTERRUPTED = 130
    TERMINATED = 143


MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "success (every target succeeded; skipped stopped machines are fine)",
    ExitCode.TARGET_FAILED: "a target failed, timed out, was undeliverable or canceled (run, rerun, resume, "
    "status of such a run)",
    ExitCode.USAGE: "usage: a bad flag, argument, config file, manifest or script (not UTF-8, wrong OS)",
    ExitCode.NOT_FOUND: "not found: no such run, no machine matched, no such target",
    ExitCode.AUTH: "auth: no identity, or no token for it",
    ExitCode.PERMISSION: "permission denied by Azure (the hint names the RBAC action)",
    ExitCode.AZURE: "Azure kept failing or throttling past every retry",
    ExitCode.OUTPUT_STORAGE: "output storage unusable (container, role, SAS)",
    ExitCode.LOCAL_STATE: "local state: the ledger is unusable or corrupted, a CA bundle is missing, disk full",
    ExitCode.INTERNAL: "internal error (a bug in azrun: please report it with --debug output)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); the ledger is intact, 'azrun resume' re-attaches",
    ExitCode.TERMINATED: "terminated (SIGTERM); treated like Ctrl-C",
}


def table_text(indent: str = "  ") -> str:
    """The table for ``azrun --help`` and the README, one code per line."""
    return "\n".join(f"{indent}{int(code):>3}  {MEANING[code]}" for code in ExitCode)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The code for an exception that ended a command (the single mapping)."""
    from azrun import errors

    table: tuple[tuple[type[BaseException], ExitCode], ...] = (
        (errors.NoTargetsMatched, ExitCode.NOT_FOUND),
        (errors.AuthError, ExitCode.AUTH),
        (errors.PermissionDenied, ExitCode.PERMISSION),
        (errors.ThrottledError, ExitCode.AZURE),
        (errors.RunCommandError, ExitCode.AZURE),
        (errors.OutputError, ExitCode.OUTPUT_STORAGE),
        (errors.LedgerError, ExitCode.LOCAL_STATE),
        (NotFound, ExitCode.NOT_FOUND),
        (LocalStateError, ExitCode.LOCAL_STATE),
        (errors.AzrunError, ExitCode.USAGE),
        (sqlite3.Error, ExitCode.LOCAL_STATE),
        (OSError, ExitCode.LOCAL_STATE),
    )
    for kind, code in table:
        if isinstance(exc, kind):
            return code
    return ExitCode.INTERNAL


class NotFound(AzrunError):
    """Something named on the command line does not exist (a run, a target)."""


class LocalStateError(AzrunError):
    """The local environment is unusable: a CA bundle missing, a corrupted ledger, a full disk."""
