"""The ``azrun`` command line: thin over the library.

One module per command group; each exposes ``register(app)`` and adds its commands to the app it
is given. This package builds the root app (:mod:`azrun.cli._app`) and calls them in
:data:`COMMAND_MODULES` order, so adding a command is one line there and no command module
imports this package back. Azure SDKs are imported lazily by the library, so ``azrun --help`` and
``azrun --version`` stay fast.

Exit codes: one table for every command, :mod:`azrun.cli._exit` (also in ``azrun --help``).
Errors print as one line and a hint; ``--debug`` (before or after the command, or
``AZRUN_DEBUG=1``) shows tracebacks instead and turns on DEBUG logging (redacted).
"""

from __future__ import annotations

import importlib
import sys

import typer

from azrun.cli._app import argv_flags, new_app, status_of
from azrun.cli._exit import ExitCode

__all__ = ["COMMAND_MODULES", "app", "main"]

COMMAND_MODULES = (
    "azrun.cli._auth",
    "azrun.cli._targets",
    "azrun.cli._plan",
    "azrun.cli._run",
    "azrun.cli._history",
    "azrun.cli._logs",
    "azrun.cli._report",
    "azrun.cli._config",
    "azrun.cli._sim",
    "azrun.cli._worker",
    "azrun.cli._durable",
)


def _build() -> typer.Typer:
    root = new_app()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(root)
    return root


app = _build()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``azrun`` console script: the command's exit code (see ``_exit``)."""
    import os

    from azrun.cli._signals import Terminated, sigterm_raises

    flags = argv_flags(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in flags or os.environ.get("AZRUN_DEBUG", "") not in ("", "0")
    no_color = "--no-color" in flags
    try:
        with sigterm_raises():
            rc = app(args=argv, prog_name="azrun", standalone_mode=False)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except Terminated:
        sys.stderr.write("terminated\n")
        return int(ExitCode.TERMINATED)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else int(ExitCode.USAGE)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int) and not hasattr(exc, "hint"):
            show()  # a usage error from the parser: it prints itself with the usage line
            return code
        return status_of(exc, debug=debug, no_color=no_color)
    return rc if isinstance(rc, int) else 0
