"""``azrun logs``: print (or save) a run's full output from its blobs, at any later time.

Which targets: the ledger's rows for the run (``--state-dir``); when the ledger does not know
the run, the blobs under ``<run id>/`` in the configured output container. Which container and
credentials: the container of the URLs the ledger recorded (else ``--output-container`` /
``--storage-account`` / ``AZRUN_OUTPUT_CONTAINER``), with the connection string when it belongs
to that account, else azrun's Entra identity (Storage Blob Data Reader is enough).

Output:

* default: every target, stdout then stderr, as the run streamed it: ``[vm-web-01] line`` and
  ``[vm-web-01] (stderr) line`` (``-o json``: ``{"target","stream","line"}`` per line);
* ``--stdout`` / ``--stderr`` with exactly one target: that blob's bytes unchanged, so
  ``azrun logs RUN --target vm-web-01 --stdout > out.log`` is byte-identical to what the script wrote;
* ``--follow``: stream the targets still running (and those not started yet) until the ledger says
  every one is done; a run whose driver died stays "running" in the ledger: stop with Ctrl-C;
* ``--download DIR``: save ``DIR/<target>/stdout`` and ``DIR/<target>/stderr`` for every target.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from azrun.errors import ConfigError, LedgerError, OutputError

if TYPE_CHECKING:
    from azrun.cli._logs_read import LoggedTarget
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.output import OutputStore

LOGS = "Logs"


def register(app: typer.Typer) -> None:
    from azrun.cli._logs_glue import logs_entry

    app.command("logs")(logs_entry(logs_command))


def logs_command(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Run id (default: the latest run).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", metavar="NAME", help="Only this target (repeatable; display name)."),
    ] = None,
    stdout_only: Annotated[
        bool, typer.Option("--stdout", help="Only stdout (one target: raw bytes).")
    ] = False,
    stderr_only: Annotated[
        bool, typer.Option("--stderr", help="Only stderr (one target: raw bytes).")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep streaming until the run is done.")
    ] = False,
    download: Annotated[
        Path | None, typer.Option("--download", metavar="DIR", help="Save every target's output under DIR.")
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    output_container: Annotated[
        str | None,
        typer.Option("--output-container", metavar="URL", help="Container holding the run's output."),
    ] = None,
    storage_account: Annotated[
        str | None,
        typer.Option("--storage-account", metavar="NAME", help="Account of the azrun-output container."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", metavar="DIR", help="Where the ledger lives.")
    ] = None,
) -> None:
    """Print a run's full output from its blobs (the source of truth), now or while it runs.

    Examples:
      azrun logs                                  # latest run, every target
      azrun logs r-20260101-abcd --target vm-web-01 --stdout > web01.log
      azrun logs r-20260101-abcd --follow
      azrun logs r-20260101-abcd --download ./out
    """
    from azrun.config import Settings

    if stdout_only and stderr_only:
        raise ConfigError(
            "--stdout and --stderr exclude each other", hint="leave both out to see both streams"
        )
    settings = Settings.load(flags={"output_container": output_container, "storage_account": storage_account})
    streams = ("stdout",) if stdout_only else ("stderr",) if stderr_only else ("stdout", "stderr")
    asyncio.run(
        _logs(
            settings,
            run_id,
            names=target or [],
            streams=streams,
            follow=follow,
            download=download,
            json_lines=json_lines,
            state_dir=state_dir,
        )
    )


async def _logs(
    settings: Settings,
    run_id: str | None,
    *,
    names: Sequence[str],
    streams: Sequence[str],
    follow: bool,
    download: Path | None,
    json_lines: bool,
    state_dir: Path | None,
) -> None:
    from azrun.cli._logs_read import copy_raw, download_logs, follow_logs, print_logs
    from azrun.cli._options import client_factory
    from azrun.cli._print import JsonPrinter, Labels, StreamPrinter

    rid, rows = _ledger_targets(settings, run_id, state_dir)
    factory = client_factory(settings)
    store: OutputStore | None = None
    try:
        store, targets = await _open(settings, factory, rid, rows)
        targets = _select(targets, names, rid)
        if download is not None:
            saved = await download_logs(store, rid, targets, download)
            total = sum(n for _, n in saved)
            sys.stderr.write(f"saved {len(saved)} files ({total} bytes) of run {rid} to {download}\n")
            return
        sink = JsonPrinter() if json_lines else StreamPrinter(labels=Labels([lt.target for lt in targets]))
        if follow:

            async def refresh() -> list[LoggedTarget]:
                _, fresh = _ledger_targets(settings, rid, state_dir, include_pending=True)
                return _select(fresh, names, rid) if fresh is not None else targets

            await follow_logs(store, rid, refresh, sink)
        elif len(streams) == 1 and not json_lines and (len(targets) == 1 or names):
            if len(targets) != 1:
                raise OutputError(
                    f"--{streams[0]} prints one target's raw bytes, and {len(targets)} targets match "
                    f"{', '.join(names)}",
                    hint="name one: rg/name or the resource id (`azrun status` lists them)",
                )
            sys.stdout.flush()  # raw bytes go under the text layer
            await copy_raw(store, rid, targets[0], streams[0], sys.stdout.buffer)
        else:
            await print_logs(store, rid, targets, sink, streams=streams)
    finally:
        if store is not None:
            await store.aclose()
        await factory.aclose()


def _ledger_targets(
    settings: Settings, run_id: str | None, state_dir: Path | None, *, include_pending: bool = False
) -> tuple[str, list[LoggedTarget] | None]:
    """(run id, its targets) from the ledger; (run id, None) when the ledger does not know it.

    Targets without blob URLs (not dispatched yet, skipped, or a run without storage) are left
    out unless ``include_pending`` (``--follow``: they may still start). This is the only place
    ``azrun logs`` touches the ledger.
    """
    from azrun.cli._logs_read import LoggedTarget
    from azrun.config import state_dir as resolve_state_dir
    from azrun.ledger import Ledger

    directory = resolve_state_dir(override=str(state_dir) if state_dir else None)
    try:
        ledger = Ledger.open(directory)
    except LedgerError:
        if run_id is None:
            raise
        return run_id, None
    with ledger:
        if run_id is not None and ledger.run(run_id) is None:
            return run_id, None
        record = ledger.require_run(run_id)
        rows = ledger.targets(record.id)
    return record.id, [
        LoggedTarget(r.target, r.stdout_url, r.stderr_url, finished=r.state.terminal)
        for r in rows
        if r.stdout_url or r.stderr_url or (include_pending and not r.state.terminal)
    ]


async def _open(
    settings: Settings, factory: ClientFactory, run_id: str, rows: list[LoggedTarget] | None
) -> tuple[OutputStore, list[LoggedTarget]]:
    from azrun.cli._logs_read import container_of, targets_from_blobs
    from azrun.output import OutputStore, container_url_from_settings

    urls = [u for r in rows or () for u in (r.stdout_url, r.stderr_url) if u]
    container = container_of(urls[0], run_id) if urls else None
    container = container or container_url_from_settings(settings, factory.cloud.storage_suffix)
    if container is None:
        raise OutputError(
            f"run {run_id} has no output blobs recorded and no output container is configured",
            hint="pass --output-container URL (or set AZRUN_OUTPUT_CONTAINER) for the container the run used",
        )
    conn = settings.get("storage_connection_string")
    store = await OutputStore.open(
        container_url=container, factory=factory, connection_string=_usable(conn, container), verify=False
    )
    if rows is not None:
        return store, rows
    try:
        return store, targets_from_blobs(await store.list_run(run_id))
    except BaseException:
        await store.aclose()
        raise


def _usable(connection_string: object, container_url: str) -> str | None:
    """The connection string, if it is for the container's account (else Entra is used)."""
    if not connection_string:
        return None
    text = str(connection_string)
    account = next(
        (p.split("=", 1)[1] for p in text.split(";") if p.lower().startswith("accountname=")), None
    )
    if account and (f"/{account}/" in container_url or f"//{account}." in container_url):
        return text
    return None


def _select(targets: list[LoggedTarget], names: Sequence[str], run_id: str) -> list[LoggedTarget]:
    """The targets ``--target`` names: a display name (every machine of that name), ``rg/name``,
    a blob path (``sub/rg/vm``) or a resource id; all compared case-insensitively."""
    from azrun.output import target_path

    if not targets:
        raise OutputError(
            f"run {run_id} has no output blobs",
            hint="the run had no output storage configured: only the ledger's last lines remain (`azrun status`)",
        )
    if not names:
        return targets

    def keys(lt: LoggedTarget) -> set[str]:
        t = lt.target
        path = t.resource_id[5:] if t.resource_id.startswith("blob:") else target_path(t)
        found = {t.name, f"{t.resource_group}/{t.name}", path, t.resource_id}
        if t.resource_group:
            found.add(f"{t.subscription_id}/{t.resource_group}/{t.name}")
        return {k.lower() for k in found if k}

    wanted = {n.strip().lower() for n in names}
    chosen = [t for t in targets if keys(t) & wanted]
    missing = wanted - set().union(*(keys(t) for t in chosen)) if chosen else wanted
    if missing:
        known = ", ".join(t.target.name for t in targets[:10])
        raise OutputError(
            f"run {run_id} has no target named {', '.join(sorted(missing))}",
            hint=f"targets of this run include: {known}",
        )
    return chosen
