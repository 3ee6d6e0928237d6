"""``azrun status | runs | cancel | cleanup``: runs as the ledger has them, and tidying up.

``status`` exits with the run's outcome (0 every target succeeded or is still going without a
failure, 1 a target failed, timed out, was undeliverable or canceled), so ``azrun status last``
works in a script's ``if``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from azrun.cli._exit import ExitCode
from azrun.cli._format import OutputFormat, emit
from azrun.cli._globals import current, with_global_options
from azrun.cli._options import NameOpt, ResourceGroupOpt, SubscriptionOpt, TagOpt
from azrun.cli._result import ledger_target_record, run_summary
from azrun.cli._run_inputs import load_settings, make_fleet, open_ledger
from azrun.cli._run_options import StateDirOpt
from azrun.cli._runids import OptionalRunIdArg, resolve_run_id
from azrun.cli._session import note

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("status", epilog="Examples:\n  azrun status                 # the latest run\n"
                "  azrun status 20261204 --all -o json\n  azrun status last --query \"targets[?state=='Failed'].name\"")(
        with_global_options(status_cmd))
    app.command("runs", epilog="Example: azrun runs -n 5 -o table")(with_global_options(runs_cmd))
    app.command("cancel", epilog="Examples: azrun cancel   # the latest run;   azrun cancel 20261204-17")(
        with_global_options(cancel_cmd))
    app.command("cleanup", epilog="Example: azrun cleanup --older-than 1d --all-azrun --dry-run")(
        with_global_options(cleanup_cmd))


JsonOpt = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o jsonl.")]


def _fmt(as_json: bool) -> OutputFormat:
    options = current()
    return OutputFormat.JSONL if as_json and not options.output.machine_readable else options.output


def status_cmd(
    run_id: OptionalRunIdArg = None,
    show_all: Annotated[bool, typer.Option("--all", help="Every target, not only those that did not succeed.")] = False,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
) -> None:
    """A run's per-target states from the ledger (works while the run is going, from any shell)."""
    from azrun.cli._run_view import color_for, render_summary
    from azrun.models import FleetResult, RunId

    options = current()
    fmt = _fmt(as_json)
    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(resolve_run_id(ledger, run_id))
        targets = ledger.targets(record.id)
    result = FleetResult(RunId(record.id), tuple(t.to_result() for t in targets))
    failed = any(r.state.counts_as_error or r.state.value == "Canceled" for r in result.results)
    code = ExitCode.TARGET_FAILED if failed else ExitCode.OK
    records = [ledger_target_record(t) for t in targets]
    doc: dict[str, Any] = {
        "runId": record.id, "status": record.status, "exitCode": int(code), "created": record.created.isoformat(),
        "script": record.spec.get("script_name") or record.spec.get("command_id"),
        "counts": {"total": len(targets), **result.counts()}, "targets": records,
    }  # fmt: skip
    if fmt is OutputFormat.JSONL and not options.query:
        emit(records, fmt, sys.stdout)
    elif fmt.machine_readable or options.query:
        emit(doc, fmt, sys.stdout, query=options.query, color=not options.colors_off)
    else:
        print(f"run {record.id}  status {record.status}  created {record.created:%Y-%m-%d %H:%M:%S}  "
              f"script {doc['script'] or ''}")
        print(render_summary(result, color=color_for(sys.stdout), show_all=show_all))
    running = [t for t in targets if not t.state.terminal]
    if running and not record.driven_here_by_live_process:
        note(f"{len(running)} target(s) not finished and no live azrun drives the run: azrun resume {record.id}")
    raise typer.Exit(int(code))


def runs_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Run history from the ledger, newest first."""
    from azrun.cli._run_view import render_runs

    options = current()
    with open_ledger(state_dir) as ledger:
        rows = [(r, ledger.counts(r.id)) for r in ledger.runs(limit)]

    def table(_: Any) -> str:
        return render_runs(
            (r.id, f"{r.created:%Y-%m-%d %H:%M:%S}", r.status, " ".join(f"{k}:{v}" for k, v in sorted(c.items())),
             str(r.spec.get("script_name") or r.spec.get("command_id") or ""))
            for r, c in rows
        )  # fmt: skip

    emit([run_summary(r, c) for r, c in rows], _fmt(as_json), sys.stdout, query=options.query, table=table,
         color=not options.colors_off)


def cancel_cmd(run_id: OptionalRunIdArg = None, state_dir: StateDirOpt = None) -> None:
    """Cancel a run: stop its dispatching and delete its in-flight run commands (kills the scripts)."""
    from azrun.cli._result import run_document
    from azrun.cli._run_view import color_for, render_summary

    options = current()
    settings = load_settings(state_dir=str(state_dir) if state_dir else None)
    with open_ledger(state_dir) as ledger:
        rid = resolve_run_id(ledger, run_id)

    async def go() -> int:
        from azrun.cli._options import client_factory

        factory = client_factory(settings)
        try:
            fleet = make_fleet(factory, state_dir, None, settings)  # not opened: cancel needs no output container
            try:
                result = await fleet.cancel(rid)
            finally:
                await fleet.aclose()
        finally:
            await factory.aclose()
        doc = run_document(result, status="canceled", exit_code=0)
        emit(doc, options.output, sys.stdout, query=options.query, color=not options.colors_off,
             table=lambda _: render_summary(result, color=color_for(sys.stdout)))
        return 0

    raise typer.Exit(asyncio.run(go()))


def cleanup_cmd(
    older_than: Annotated[str, typer.Option("--older-than", metavar="DURATION",
                                            help="Only run commands that finished longer ago than this.")] = "7d",
    all_azrun: Annotated[bool, typer.Option("--all-azrun", help="Also list the machines and delete every finished "
                                            "azrun run command found (name azrun-* AND tag azrun-run), not only those in the ledger.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted.")] = False,
    tag: TagOpt = None,
    subscription: SubscriptionOpt = None,
    resource_group: ResourceGroupOpt = None,
    name: NameOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Delete azrun's finished run commands so machines stay under Azure's 25 per VM.

    Never touches run commands azrun did not create, nor running ones. With --all-azrun and no
    selector, the machines are every machine in the ledger.
    """
    from azrun.cli._options import selector_from_options
    from azrun.cli._run_view import parse_duration

    options = current()
    seconds = parse_duration(older_than, flag="--older-than")
    selector = None
    if tag or resource_group or name:
        selector = selector_from_options(tag=tag, subscription=subscription, resource_group=resource_group,
                                         name=name, include_stopped=True)
    settings = load_settings(state_dir=str(state_dir) if state_dir else None)

    async def go() -> int:
        from azrun.cli._options import client_factory

        factory = client_factory(settings)
        try:
            fleet = make_fleet(factory, state_dir, None, settings)  # not opened: cleanup needs no output container
            try:
                report = await fleet.cleanup(older_than_s=seconds, all_azrun=all_azrun, machines=selector,
                                             dry_run=dry_run)
            finally:
                await fleet.aclose()
        finally:
            await factory.aclose()
        verb = "would delete" if dry_run else "deleted"
        doc = {"dryRun": dry_run, "deleted": list(report.deleted), "kept": len(report.kept),
               "failed": [{"id": rid, "reason": why} for rid, why in report.failed],
               "deleting": list(report.deleting), "armRequests": report.arm_requests}
        emit(doc, options.output, sys.stdout, query=options.query, color=not options.colors_off,
             table=lambda _: "\n".join(f"{verb} {rid}" for rid in report.deleted))
        for rid, why in report.failed:
            sys.stderr.write(f"failed {rid}: {why}\n")
        going = f"; {len(report.deleting)} still being deleted by Azure (they count toward the 25 until gone)" \
            if report.deleting else ""
        note(f"{verb} {len(report.deleted)} run command(s); kept {len(report.kept)}; failed {len(report.failed)}"
             f"{going}; {report.arm_requests} ARM requests")
        return int(ExitCode.AZURE) if report.failed else 0

    raise typer.Exit(asyncio.run(go()))
