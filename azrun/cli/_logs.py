"""``azrun logs``: print (or save) a run's full output from its blobs, at any later time.

Which targets: the ledger's rows for the run (``--state-dir``); when the ledger does not know
the run, the blobs under ``<run id>/`` in the configured output container. Which container and
credentials: the container of the URLs the ledger recorded (else ``--output-container`` /
``--storage-account`` / ``AZRUN_OUTPUT_CONTAINER``), with the connection string when it belongs
to that account, else azrun's Entra identity (Storage Blob Data Reader is enough).

Output:

* default: every target, its stdout then its stderr, each in its own order, every line tagged
  with its stream: ``[vm-web-01] (stdout) line`` / ``[vm-web-01] (stderr) line`` (``--json``:
  ``{"target","id","stream","line"}`` per line). The two streams are two blobs with no shared
  clock, so how their lines interleaved on the VM is unknown, and ``logs`` does not pretend;
* ``--stdout`` / ``--stderr`` with exactly one target: that blob's bytes, so
  ``azrun logs RUN --target vm-web-01 --stdout > out.log`` is what the script wrote (protected
  values masked);
* ``--follow``: stream the targets still running (and those not started yet) until every one is
  final; it also stops, with a one-line reason, when nobody drives the run any more (the driver
  died or was interrupted: ``azrun resume`` re-attaches) or after ``--idle-timeout`` with no
  line and no state change (a driver on another host azrun cannot see);
* ``--download DIR``: save ``DIR/<subscription>/<resource group>/<vm>[/<instance>]/stdout|stderr``
  for every target (files 0600).

Protected values a script echoed are masked (``***``) everywhere, as in the live stream, by the
run's salted fingerprints in the ledger (:class:`~azrun.redact.SecretFingerprints`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from azrun.errors import ConfigError, LedgerError, OutputError

if TYPE_CHECKING:
    from azrun.cli._logs_read import FollowState, LoggedTarget
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.ledger import RunRecord
    from azrun.output import OutputStore
    from azrun.redact import SecretFingerprints

LOGS = "Logs"
DEFAULT_IDLE = "10m"


def register(app: typer.Typer) -> None:
    from azrun.cli._logs_glue import logs_entry

    app.command("logs")(logs_entry(logs_command))


def logs_command(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Run id (default: the latest run).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", metavar="NAME",
                     help="Only this target (repeatable): its name, rg/name, or resource id."),
    ] = None,
    stdout_only: Annotated[
        bool, typer.Option("--stdout", help="Only stdout (one target: raw bytes).")
    ] = False,
    stderr_only: Annotated[
        bool, typer.Option("--stderr", help="Only stderr (one target: raw bytes).")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep streaming until every target is final (or nobody drives the run).")
    ] = False,
    idle_timeout: Annotated[
        str, typer.Option("--idle-timeout", metavar="DURATION",
                          help="--follow stops after this long with no line and no state change.")
    ] = DEFAULT_IDLE,
    download: Annotated[
        Path | None, typer.Option("--download", metavar="DIR", help="Save every target's output under DIR (files 0600).")
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

    Each target's stdout is printed, then its stderr, each line tagged (stdout) or (stderr). They
    are two blobs with no shared clock: each keeps its order, but how the two interleaved on the
    machine is not recorded anywhere, so logs does not guess. Protected values are masked (***).

    Examples:
      azrun logs                                  # latest run, every target
      azrun logs r-20260101-abcd --target vm-web-01 --stdout > web01.log
      azrun logs r-20260101-abcd --target rg-web/vm-web-01   # one of two machines of that name
      azrun logs r-20260101-abcd --follow
      azrun logs r-20260101-abcd --download ./out
    """
    from azrun.cli._run_view import parse_duration
    from azrun.config import Settings

    if stdout_only and stderr_only:
        raise ConfigError(
            "--stdout and --stderr exclude each other", hint="leave both out to see both streams"
        )
    idle_s = parse_duration(idle_timeout, flag="--idle-timeout")
    if idle_s <= 0:
        raise ConfigError("--idle-timeout must be positive", hint=f"e.g. --idle-timeout {DEFAULT_IDLE}")
    settings = Settings.load(flags={"output_container": output_container, "storage_account": storage_account})
    streams = ("stdout",) if stdout_only else ("stderr",) if stderr_only else ("stdout", "stderr")
    asyncio.run(
        _logs(
            settings,
            run_id,
            names=target or [],
            streams=streams,
            follow=follow,
            idle_s=idle_s,
            download=download,
            json_lines=json_lines,
            state_dir=state_dir,
        )
    )


def _say(text: str) -> None:
    sys.stderr.write(f"note: {text}\n")
    sys.stderr.flush()


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
    idle_s: float = 600.0,
) -> None:
    from azrun.cli._logs_read import copy_raw, download_logs, follow_logs, print_logs
    from azrun.cli._options import client_factory
    from azrun.cli._print import JsonPrinter, Labels, StreamPrinter

    rid, rows, record = _ledger_run(settings, run_id, state_dir)
    masks = _fingerprints(record)
    factory = client_factory(settings)
    store: OutputStore | None = None
    try:
        store, targets = await _open(settings, factory, rid, rows)
        targets = _select(targets, names, rid)
        if record is None:  # said only once the blobs prove the run exists
            _say(f"run {rid} is not in this ledger: protected values it echoed (if any) cannot be masked")
        if download is not None:
            saved = await download_logs(store, rid, targets, download, fingerprints=masks, warn=_say)
            total = sum(n for _, n in saved)
            sys.stderr.write(f"saved {len(saved)} files ({total} bytes) of run {rid} to {download}\n")
            return
        labels = Labels([lt.target for lt in targets])
        sink = JsonPrinter() if json_lines else StreamPrinter(labels=labels, tag_stdout=True)
        if follow:

            async def refresh() -> FollowState:
                from azrun.cli._logs_read import FollowState

                _, fresh, now = _ledger_run(settings, rid, state_dir, include_pending=True)
                chosen = _select(fresh, names, rid) if fresh is not None else targets
                return FollowState(chosen, driven=_driven(now) if now is not None else None)

            await follow_logs(store, rid, refresh, sink, fingerprints=masks, notice=_say, idle_s=idle_s)
        elif len(streams) == 1 and not json_lines and (len(targets) == 1 or names):
            if len(targets) != 1:
                raise ConfigError(
                    f"--{streams[0]} prints one target's raw bytes, and {len(targets)} targets match "
                    f"{', '.join(names)}",
                    hint="name one: rg/name or the resource id (`azrun status` lists them)",
                )
            sys.stdout.flush()  # raw bytes go under the text layer
            await copy_raw(store, rid, targets[0], streams[0], sys.stdout.buffer, fingerprints=masks, warn=_say)
        else:
            await print_logs(store, rid, targets, sink, streams=streams, fingerprints=masks)
    finally:
        if store is not None:
            await store.aclose()
        await factory.aclose()


def _fingerprints(record: RunRecord | None) -> SecretFingerprints | None:
    from azrun.redact import FINGERPRINTS_KEY, SecretFingerprints

    if record is None:
        return None
    found = SecretFingerprints.from_dict(record.options.get(FINGERPRINTS_KEY))
    return found or None


def _driven(record: RunRecord) -> bool | None:
    """Is anybody driving the run? False when it ended or its driver on this host is gone; None
    when its driver is on another host (azrun cannot see that process)."""
    import os
    import socket

    if record.status not in ("running", "canceling"):
        return False
    if record.host and record.host != socket.gethostname():
        return None
    if record.pid == os.getpid():
        return True  # driven in this very process (a library caller following its own run)
    return bool(record.pid) and record.driven_here_by_live_process


def _ledger_targets(
    settings: Settings, run_id: str | None, state_dir: Path | None, *, include_pending: bool = False
) -> tuple[str, list[LoggedTarget] | None]:
    """(run id, its targets) from the ledger; (run id, None) when the ledger does not know it."""
    rid, rows, _ = _ledger_run(settings, run_id, state_dir, include_pending=include_pending)
    return rid, rows


def _ledger_run(
    settings: Settings, run_id: str | None, state_dir: Path | None, *, include_pending: bool = False
) -> tuple[str, list[LoggedTarget] | None, Any]:
    """(run id, its targets, its record) from the ledger; (run id, None, None) when the ledger
    does not know it.

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
        return run_id, None, None
    with ledger:
        if run_id is not None and ledger.run(run_id) is None:
            return run_id, None, None
        record = ledger.require_run(run_id)
        rows = ledger.targets(record.id)
    return record.id, [
        LoggedTarget(r.target, r.stdout_url, r.stderr_url, finished=r.state.terminal,
                     truncated=r.output_truncated, stdout_tail=r.stdout_tail, stderr_tail=r.stderr_tail)
        for r in rows
        if r.stdout_url or r.stderr_url or (include_pending and not r.state.terminal)
    ], record  # fmt: skip


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
    from azrun.cli._exit import NotFound
    from azrun.output import target_path

    if not targets:
        raise NotFound(
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
        raise NotFound(
            f"run {run_id} has no target named {', '.join(sorted(missing))}",
            hint=f"targets of this run include: {known}",
        )
    return chosen
