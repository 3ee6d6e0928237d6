"""``azrun report``: one self-contained HTML page for a run (ledger + output blobs).

The page needs no network (CSS, JS and data inline) so it can be attached to a ticket or an
e-mail. Output is read from the run's blobs with the same container and credentials as
``azrun logs``; when they cannot be read the page shows the ledger's last lines and says so.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from azrun.cli._globals import current, with_global_options
from azrun.cli._runids import OptionalRunIdArg

if TYPE_CHECKING:
    from azrun.config import Settings
    from azrun.report import ReportData


def report_command(
    run_id: OptionalRunIdArg = None,
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

    Prints where it went (``-o json``: ``{runId, file, bytes, counts, throttle, driver}``).

    Examples:
      azrun report                                # the latest run -> azrun-<run>.html
      azrun report 20261204-1200-ab12cd --html change-1234.html
      azrun report last -o json --query file
    """
    from azrun.cli._format import emit
    from azrun.cli._session import note
    from azrun.config import Settings

    options = current()
    settings = Settings.load(flags={"output_container": output_container, "storage_account": storage_account})
    path, data = asyncio.run(
        write_report(settings, run_id, html_file, state_dir=state_dir, read_output=not no_output)
    )
    if options.output.machine_readable or options.query:
        emit(report_summary(path, data), options.output, sys.stdout, query=options.query,
             color=not options.colors_off)  # fmt: skip
    else:
        note(f"report written to {path}")


def report_summary(path: Path, data: ReportData) -> dict[str, Any]:
    """What ``azrun report -o json`` prints (camelCase, as all machine output)."""
    return {
        "runId": data.run_id, "file": str(path), "bytes": path.stat().st_size, "status": data.status,
        "counts": dict(data.counts), "throttle": dict(data.throttle), "driver": dict(data.driver),
    }  # fmt: skip


async def write_report(
    settings: Settings,
    run_id: str | None,
    html_file: Path | None,
    *,
    state_dir: Path | None = None,
    read_output: bool = True,
) -> tuple[Path, ReportData]:
    """Collect the run's report and write it; returns the file written (mode 0600: it holds
    output) and what it shows. ``run_id``: a full id, a unique prefix or ``last``."""
    from azrun.cli._logs import _ledger_targets, _open
    from azrun.cli._options import client_factory
    from azrun.cli._runids import resolve_run_id
    from azrun.config import state_dir as resolve_state_dir
    from azrun.ledger import Ledger
    from azrun.output import OutputStore
    from azrun.report import acollect_report, render_html

    directory = resolve_state_dir(override=str(state_dir) if state_dir else None)
    with Ledger.open(directory) as ledger:
        rid = resolve_run_id(ledger, run_id)
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
    return path, data


def _write_private(path: Path, text: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def register(app: typer.Typer) -> None:
    """Add ``azrun report`` to ``app``."""
    app.command("report")(with_global_options(report_command))


ReportOpt = Annotated[Path | None, typer.Option(
    "--report", metavar="FILE", rich_help_panel="Output and state",
    help="When the run ends, write its report (the page 'azrun report' makes) to FILE.")]


class ReportAfterRun:
    """``azrun run --report FILE``: remembers the run id the session starts and writes the
    report once the session is over (whatever the outcome: the page says how it ended)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.run_id: str | None = None

    def watch(self, start: Any) -> Any:
        """``start`` (the session's ``fleet -> handle`` coroutine), noting the run id it starts."""
        if self.path is None:
            return start

        async def watched(fleet: Any) -> Any:
            handle = await start(fleet)
            self.run_id = str(handle.run_id)
            return handle

        return watched

    def write(self, settings: Settings, state_dir: Path | None) -> None:
        """Write the report if asked and a run was started; a failure is a note, not the run's exit code."""
        from azrun.cli._session import note
        from azrun.errors import AzrunError

        if self.path is None or self.run_id is None:
            return
        try:
            path, _ = asyncio.run(write_report(settings, self.run_id, self.path, state_dir=state_dir))
        except (AzrunError, OSError) as exc:
            sys.stderr.write(f"error: the report of run {self.run_id} was not written: {exc}\n"
                             f"hint: azrun report {self.run_id} --html {self.path}\n")  # fmt: skip
            return
        note(f"report written to {path}")
