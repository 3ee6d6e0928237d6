"""The options every command accepts, before or after its name, as in the Azure CLI:
``-o/--output``, ``--query``, ``--only-show-errors``, ``-q/--quiet``, ``-v/--verbose``,
``--no-color`` and ``--debug``.

:func:`with_global_options` adds them to a command's signature (so ``azrun run --help`` lists them
and ``azrun status -o json`` parses), takes their values out before the command's own function
runs, and makes them readable through :func:`current` for exactly that invocation (a
``ContextVar`` set and reset around the call: in-process callers never see one invocation's
flags in the next). It also sets the log levels: azure-identity and azure-core warnings are
silenced below ERROR (azrun prints its own one-line error) unless ``-v`` or ``--debug``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from azrun.cli._format import OutputFormat

__all__ = ["GLOBAL", "GlobalOptions", "current", "logging_for", "with_global_options"]

GLOBAL = "Global options"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class GlobalOptions:
    """One invocation's global flags (root options OR-ed with the command's)."""

    output: OutputFormat = OutputFormat.TABLE
    query: str | None = None
    only_show_errors: bool = False
    quiet: bool = False
    verbose: bool = False
    no_color: bool = False
    debug: bool = False

    @property
    def colors_off(self) -> bool:
        return self.no_color or bool(os.environ.get("NO_COLOR"))

    @property
    def notes(self) -> bool:
        """Whether informational lines (notes, hints, progress) may print on stderr."""
        return not (self.quiet or self.only_show_errors)


_CURRENT: ContextVar[GlobalOptions | None] = ContextVar("azrun_global_options", default=None)


def current() -> GlobalOptions:
    """The running command's global options (defaults outside a command)."""
    return _CURRENT.get() or GlobalOptions(debug=os.environ.get("AZRUN_DEBUG", "") not in ("", "0"))


@contextlib.contextmanager
def using(options: GlobalOptions) -> Iterator[GlobalOptions]:
    """Make ``options`` current for the block (tests and the run commands' helpers use it)."""
    token = _CURRENT.set(options)
    try:
        yield options
    finally:
        _CURRENT.reset(token)


OutputOpt = Annotated[OutputFormat, typer.Option(
    "--output", "-o", case_sensitive=False, rich_help_panel=GLOBAL,
    help="json (one document), jsonc, jsonl (one value per line, streaming), yaml, tsv, or table.")]
QueryOpt = Annotated[str | None, typer.Option(
    "--query", metavar="JMESPATH", rich_help_panel=GLOBAL,
    help="JMESPath query applied to the output, as in az: --query \"[?state=='Failed'].name\".")]
OnlyErrorsOpt = Annotated[bool, typer.Option(
    "--only-show-errors", rich_help_panel=GLOBAL, help="Only errors on stderr: no notes or warnings.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", rich_help_panel=GLOBAL, help="Only the result and errors (no live display, no output lines).")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", rich_help_panel=GLOBAL, help="More detail: every state change, Azure SDK warnings.")]
NoColorOpt = Annotated[bool, typer.Option(
    "--no-color", rich_help_panel=GLOBAL, help="No colours (also when NO_COLOR is set or output is not a terminal).")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", rich_help_panel=GLOBAL, help="Tracebacks and DEBUG logs (secrets redacted).")]

_PARAMS: dict[str, tuple[Any, Any]] = {
    "output": (OutputOpt, OutputFormat.TABLE),
    "query": (QueryOpt, None),
    "only_show_errors": (OnlyErrorsOpt, False),
    "quiet": (QuietOpt, False),
    "verbose": (VerboseOpt, False),
    "no_color": (NoColorOpt, False),
    "debug": (DebugOpt, False),
}
_CTX = "azrun_ctx"


def _merge(root: Mapping[str, Any], given: Mapping[str, Any]) -> GlobalOptions:
    env_debug = os.environ.get("AZRUN_DEBUG", "") not in ("", "0")

    def flag(name: str) -> bool:
        return bool(given.get(name) or root.get(name))
    return GlobalOptions(
        output=OutputFormat(given.get("output") or OutputFormat.TABLE),
        query=given.get("query") or None,
        only_show_errors=flag("only_show_errors"),
        quiet=flag("quiet"),
        verbose=flag("verbose"),
        no_color=flag("no_color"),
        debug=flag("debug") or env_debug,
    )


def with_global_options(func: F, *, data: bool = True) -> F:
    """``func`` with the global options added to its parameters (``data=False``: no ``-o``/``--query``,
    for commands that print no data)."""
    sig = inspect.signature(func, eval_str=True)
    own = set(sig.parameters)
    added = {
        name: spec for name, spec in _PARAMS.items()
        if name not in own and (data or name not in ("output", "query"))
    }  # fmt: skip
    own_ctx = next((p.name for p in sig.parameters.values() if p.annotation is typer.Context), None)
    extra = [] if own_ctx else [inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    extra += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, (annotation, default) in added.items()
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx: typer.Context = kwargs[own_ctx] if own_ctx else kwargs.pop(_CTX)
        given = {name: kwargs.pop(name) for name in added}
        given.update({name: kwargs[name] for name in _PARAMS if name in own and name in kwargs})
        options = _merge(ctx.find_root().params, given)
        with using(options), logging_for(options):
            return func(*args, **kwargs)

    params = [*sig.parameters.values(), *extra]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


_QUIET_LOGGERS = ("azure", "msal", "urllib3", "aiohttp")


@contextlib.contextmanager
def logging_for(options: GlobalOptions) -> Iterator[None]:
    """Log levels for one invocation, restored afterwards.

    ``--debug``: DEBUG on stderr behind the redacting filter. Otherwise the Azure SDK's and
    MSAL's loggers are held at ERROR (``-v``: WARNING), so no raw SDK warning precedes azrun's
    own one-line error.
    """
    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    if options.debug:
        from azrun.redact import install_log_redaction

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(logging.DEBUG)
        install_log_redaction()
    else:
        level = logging.WARNING if options.verbose else logging.ERROR
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        if not options.debug:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)
