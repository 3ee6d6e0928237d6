"""The ``azrun`` command line: thin over the library.

One module per command group (``_sim``, ``_auth``, ``_targets``, ``_run``, ``_logs``, ...), each
registering its commands on :data:`app`. This package is the only place that reads flags; it turns them into library objects, calls the
library, and prints. Azure SDKs are imported lazily by the library, so ``azrun --help`` and
``azrun --version`` stay fast.

Exit codes: 0 all good; 1 a target failed (or an unexpected internal error); 2 usage, auth,
permission or config error; 130 interrupted (Ctrl-C).

Errors print as one red line and a hint; ``azrun --debug`` shows tracebacks instead and turns on
DEBUG logging (redacted, so no token or SAS reaches the log).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.exceptions import TyperException

from azrun import __version__
from azrun.errors import AzrunError

EPILOG = """\
Examples:

  azrun auth                                    # who am I, which subscriptions
  azrun targets --tag env=prod                  # what a selector picks
  azrun run --tag env=prod -f patch.sh --max-concurrency 10%
  azrun status                                  # the latest run, per target
  azrun --debug run --all -c 'uptime'           # with tracebacks and DEBUG logs

Exit codes: 0 all targets succeeded; 1 a target failed, timed out, was undeliverable or
canceled (or an unexpected error); 2 usage, auth, permission or config error; 130 Ctrl-C.

Colours: off when output is not a terminal, with --no-color, or with NO_COLOR set.
"""

app = typer.Typer(
    name="azrun",
    help="Run a script on many Azure machines at once and bring every byte of output back.",
    epilog=EPILOG,
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
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and DEBUG logs (secrets redacted).")
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colours (also when NO_COLOR is set).")
    ] = False,
) -> None:
    """Run a script on many Azure machines at once and bring every byte of output back."""
    if debug:
        _debug_logging()


def _debug_logging() -> None:
    """DEBUG logs on stderr, every handler behind the redacting filter."""
    import logging

    from azrun.redact import install_log_redaction

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG)
    install_log_redaction()


def _root_flags(argv: list[str]) -> set[str]:
    """The options given before the command name (``azrun --debug run ...``)."""
    flags: set[str] = set()
    for arg in argv:
        if not arg.startswith("-"):
            break
        flags.add(arg)
    return flags


def _print_error(message: str, hint: str | None, *, no_color: bool = False) -> None:
    import os

    from azrun.redact import redact

    err = sys.stderr
    try:
        color = err.isatty() and not no_color and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        color = False
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    err.write(f"{red}error:{reset} {redact(message)}\n")
    if hint:
        err.write(f"{dim}hint:{reset} {redact(hint)}\n")


def _register_commands() -> None:
    # each module adds its commands to `app`
    from azrun.cli import _auth, _config, _logs, _report, _run, _sim, _targets  # noqa: F401

    _report.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``azrun`` console script.

    Errors become one red line and a hint (exit code from the error); with ``--debug`` (or
    ``AZRUN_DEBUG=1``) they propagate with their traceback instead.
    """
    import os

    flags = _root_flags(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in flags or os.environ.get("AZRUN_DEBUG", "") not in ("", "0")
    no_color = "--no-color" in flags
    try:
        rc = app(args=argv, prog_name="azrun", standalone_mode=False)
    except AzrunError as exc:
        if debug:
            raise
        _print_error(exc.message, exc.hint, no_color=no_color)
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
    except Exception as exc:  # a bug: one line unless --debug asked for the traceback
        if debug:
            raise
        _print_error(f"unexpected {type(exc).__name__}: {exc}",
                     "run again with 'azrun --debug ...' for the traceback, and report it", no_color=no_color)
        return 1
    return rc if isinstance(rc, int) else 0
