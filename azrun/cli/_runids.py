"""Run ids on the command line: the full id (``20261204-1730-ab12cd``), a unique prefix of one,
or ``last``; shell completion offers the ledger's ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from azrun.cli._exit import NotFound
from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.ledger import Ledger

__all__ = ["LAST", "NoSuchRun", "OptionalRunIdArg", "RunIdArg", "complete_run_id", "resolve_run_id"]

LAST = "last"
FORMAT = "20261204-1730-ab12cd"


class NoSuchRun(ConfigError, NotFound):
    """No run in the ledger has this id or prefix."""


def _all_ids(ledger: Ledger) -> list[str]:
    return [r.id for r in ledger.runs(1_000_000)]


def resolve_run_id(ledger: Ledger, text: str | None) -> str:
    """The full run id ``text`` names in ``ledger`` (None or ``last``: the latest run)."""
    if text is None or text.strip().lower() == LAST:
        latest = ledger.latest_run_id()
        if latest is None:
            raise NoSuchRun(f"no runs recorded in {ledger.path}",
                            hint="start one with 'azrun run', or point --state-dir at the right ledger")
        return latest
    text = text.strip()
    if ledger.run(text) is not None:
        return text
    hits = [rid for rid in _all_ids(ledger) if rid.startswith(text)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        shown = ", ".join(hits[:5]) + (" ..." if len(hits) > 5 else "")
        raise ConfigError(f"run id prefix {text!r} is ambiguous: {shown}", hint="type more of the id")
    raise NoSuchRun(f"no such run {text!r} in {ledger.path}",
                    hint=f"run ids look like {FORMAT}; list them with 'azrun runs'")


def complete_run_id(incomplete: str) -> list[str]:
    """Shell completion: ``last`` and the ledger's run ids starting with what was typed."""
    from azrun.config import state_dir
    from azrun.ledger import Ledger

    try:
        with Ledger.open(state_dir()) as ledger:
            ids = [r.id for r in ledger.runs(200)]
    except Exception:  # completion must never print a traceback into the shell
        ids = []
    return [c for c in (LAST, *ids) if c.startswith(incomplete)]


_HELP = f"Run id ({FORMAT}), a unique prefix of one, or 'last'."
RunIdArg = Annotated[str, typer.Argument(metavar="RUN", help=_HELP, autocompletion=complete_run_id)]
OptionalRunIdArg = Annotated[
    str | None,
    typer.Argument(metavar="RUN", help=_HELP + " Default: the latest run.", autocompletion=complete_run_id),
]
