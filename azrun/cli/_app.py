"""The root ``azrun`` app (help, version, root options) and how an error ends a command.

The command modules add themselves to the app :func:`new_app` returns (each module's
``register(app)``); :mod:`azrun.cli` wires them together, so no command module imports
:mod:`azrun.cli` back.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Annotated

import typer

from azrun import __version__
from azrun.cli._exit import ExitCode, exit_code_for, table_text

__all__ = ["EPILOG", "argv_flags", "new_app", "print_error", "status_of"]

EPILOG = f"""\
Examples:

  azrun auth                                    # who am I, which subscriptions
  azrun targets --tag env=prod                  # what a selector picks
  azrun plan --tag env=prod -f patch.sh         # what a run would do, nothing dispatched
  azrun run --tag env=prod -f patch.sh --max-concurrency 10%
  azrun status last -o json                     # the latest run, per target, as JSON
  azrun run --all -c 'uptime' --debug           # with tracebacks and DEBUG logs

Global options, accepted before or after the command (as in az): -o/--output
json|jsonc|jsonl|yaml|tsv|table, --query JMESPATH, --only-show-errors, -q, -v, --no-color, --debug.

Exit codes (the same for every command):

{table_text()}

Run ids look like 20261204-1730-ab12cd; commands taking one also accept a unique prefix and
'last'. Colours: off when output is not a terminal, with --no-color, or with NO_COLOR set.
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"azrun {__version__}")
        raise typer.Exit()


def new_app() -> typer.Typer:
    """The root app with no commands yet."""
    app = typer.Typer(
        name="azrun",
        help="Run a script on many Azure machines at once and bring every byte of output back.",
        epilog=EPILOG,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False,
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and DEBUG logs (secrets redacted).")] = False,
        no_color: Annotated[bool, typer.Option("--no-color", help="No colours (also when NO_COLOR is set).")] = False,
        only_show_errors: Annotated[
            bool, typer.Option("--only-show-errors", help="Only errors on stderr: no notes or warnings.")
        ] = False,
    ) -> None:
        """Run a script on many Azure machines at once and bring every byte of output back."""

    return app


def argv_flags(argv: list[str]) -> set[str]:
    """The global boolean flags given anywhere on the command line (up to a ``--``)."""
    flags: set[str] = set()
    for arg in argv:
        if arg == "--":
            break
        if arg in ("--debug", "--no-color", "--only-show-errors"):
            flags.add(arg)
    return flags


def print_error(message: str, hint: str | None, *, no_color: bool = False) -> None:
    """``error: <one line>`` and ``hint: <one line>`` on stderr (red and dim on a terminal)."""
    from azrun.redact import redact

    err = sys.stderr
    try:
        color = err.isatty() and not no_color and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        color = False
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    first = " ".join(str(message).split()) or "failed"
    err.write(f"{red}error:{reset} {redact(first)}\n")
    if hint:
        err.write(f"{dim}hint:{reset} {redact(' '.join(hint.split()))}\n")


def status_of(exc: BaseException, *, debug: bool, no_color: bool) -> int:
    """Print ``exc`` as azrun's one-line error (re-raising it under ``--debug``) and return its code."""
    from azrun.errors import AzrunError

    if debug:
        raise exc
    code = exit_code_for(exc)
    if isinstance(exc, AzrunError):
        print_error(exc.message, exc.hint, no_color=no_color)
    elif isinstance(exc, UnicodeDecodeError):
        print_error(f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                    "save the script as UTF-8 (PowerShell: Set-Content -Encoding utf8)", no_color=no_color)
        code = ExitCode.USAGE
    elif isinstance(exc, sqlite3.Error):
        print_error(f"the ledger is unusable ({type(exc).__name__}: {exc})",
                    "move ledger.db out of the state dir (--state-dir / AZRUN_STATE_DIR) and retry; keep it to "
                    "inspect old runs", no_color=no_color)
    elif code is ExitCode.LOCAL_STATE:
        where = getattr(exc, "filename", None)
        print_error(f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}" + (f": {where}" if where else ""),
                    "check the file or directory named (disk space, permissions, REQUESTS_CA_BUNDLE/SSL_CERT_FILE)",
                    no_color=no_color)
    else:
        print_error(f"unexpected {type(exc).__name__}: {exc}",
                    "run again with 'azrun --debug ...' for the traceback, and report it", no_color=no_color)
    return int(code)
