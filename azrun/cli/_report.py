"""``azrun report``: one self-contained HTML page for a run (ledger + output blobs).

The page needs no network (CSS, JS and data inline) so it can be attached to a ticket or an
e-mail. Output is read from the run's blobs with the same container and credentials as
``azrun logs``; when they cannot be read the page shows the ledger's last lines and says so.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from azrun.config import Settings


def report_command(
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="Run id (default: the latest run).")] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", metavar="FILE", help="Where to write the page (default: azrun-<run>.html).")
    ] = None,
    no_output: Annotated[
        bool, typer.Option("--no-output", help="Leave the blobs unread: the page shows the ledger's last lines.")
    ] = False,
    output_container: Annotated[
        str | None, typer.Option("--output-container", metavar="URL", help="Container holding the run's output.")
    ] = None,
    storage_account: Annotated[
        str | None, typer.Option("--storage-account", metavar="NAME", help="Account of the azrun-output container.")
    ] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", metavar="DIR", help="Where the ledger lives.")] = None,
) -> None:
    """Write a run's report: one self-contained HTML page (timeline, per-target table and output).

    Examples:
      azrun report                                # the latest run -> azrun-<run>.html
      azrun report 20261204-1200-ab12cd --html change-1234.html
    """
    from azrun.config import Settings

    settings = Settings.load(flags={"output_container": output_container, "storage_account": storage_account})
    path = asyncio.run(write_report(settings, run_id, html_file, state_dir=state_dir, read_output=not no_output))
    sys.stderr.write(f"report written to {path}\n")


async def write_report(
    settings: Settings,
    run_id: str | None,
    html_file: Path | None,
    *,
    state_dir: Path | None = None,
    read_output: bool = True,
) -> Path:
    """Collect the run's report and write it; returns the file written (mode 0600: it holds output)."""
    from azrun.cli._logs import _ledger_targets, _open
    from azrun.cli._options import client_factory
    from azrun.config import state_dir as resolve_state_dir
    from azrun.ledger import Ledger
    from azrun.output import OutputStore
    from azrun.report import acollect_report, render_html

    directory = resolve_state_dir(override=str(state_dir) if state_dir else None)
    with Ledger.open(directory) as ledger:
        rid = ledger.require_run(run_id).id
        store: OutputStore | None = None
        factory = client_factory(settings) if read_output else None
        try:
            if factory is not None:
                _, rows = _ledger_targets(settings, rid, state_dir)
                if rows:
                    store, _ = await _open(settings, factory, rid, rows)
            reader = None
            if store is not None:
                opened = store

                async def reader(url: str) -> bytes:
                    return await opened.read_name(opened.name_from_url(url))

            data = await acollect_report(ledger, rid, reader=reader)
        finally:
            if store is not None:
                await store.aclose()
            if factory is not None:
                await factory.aclose()
    path = html_file or Path(f"azrun-{rid}.html")
    _write_private(path, render_html(data))
    return path


def _write_private(path: Path, text: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def register(app: typer.Typer) -> None:
    """Add ``azrun report`` to ``app``."""
    app.command("report")(report_command)
