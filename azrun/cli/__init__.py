"""The ``azrun`` command line: thin over the library.

One module per command group (``_sim``, ``_auth``, ``_targets``, ``_run``, ``_logs``, ...), each
registering its commands on :data:`app`. This package is the only place that reads flags; it turns them into library objects, calls the
library, and prints. Azure SDKs are imported lazily by the library, so ``azrun --help`` and
``azrun --version`` stay fast.

Exit codes: 0 all good; 1 a target failed; 2 usage, auth, permission or config error;
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from azrun import __version__
from azrun.errors import AzrunError

app = typer.Typer(
    name="azrun",
    help="Run a script on many Azure machines at once and bring every byte of output back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"azrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run a script on many Azure machines at once and bring every byte of output back."""


def _print_error(exc: AzrunError) -> None:
    from azrun.redact import redact

    err = sys.stderr
    color = err.isatty()
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    err.write(f"{red}error:{reset} {redact(exc.message)}\n")
    if exc.hint:
        err.write(f"{dim}hint:{reset} {redact(exc.hint)}\n")


def _register_commands() -> None:
    # each module adds its commands to `app`
    from azrun.cli import _auth, _config, _logs, _run, _sim, _targets  # noqa: F401


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``azrun`` console script."""
    try:
        rc = app(args=argv, prog_name="azrun", standalone_mode=False)
    except AzrunError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return 130
    except TyperException as exc:  # usage errors (typer vendors click's ClickException under it)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", 2))
    return rc if isinstance(rc, int) else 0
