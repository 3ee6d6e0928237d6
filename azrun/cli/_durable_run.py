"""``azrun run --engine durable`` (and its alias ``azrun durable run``): schedule, or follow live.

The flags are parsed exactly as for a local run (:func:`azrun.cli._run.build_run`,
:func:`azrun.cli._run_options.rollout_options`); the selection is split by OS as for a local run;
then :meth:`azrun.durable.DurableFleet.schedule` writes the plan and starts the orchestration.
Without ``--follow`` the run id is printed (``-o json``: ``{"runId": ...}``) and the command
returns 0. With ``--follow`` a finished line per target (read from the run's result blobs as
each tick writes them), a progress line now and then, and at the end the same summary (or ONE
document) and exit code as a local run. What a durable run cannot honour is refused here.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from azrun.cli._format import OutputFormat, emit
from azrun.cli._globals import current
from azrun.cli._result import target_record
from azrun.cli._session import note
from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.cli._logs_read import LoggedTarget
    from azrun.cli._platform import OsScripts
    from azrun.config import Settings
    from azrun.durable import DurableFleet, DurableRun
    from azrun.fleet import FleetOptions
    from azrun.models import RunSpec, Target, TargetResult
    from azrun.targets import Selector

__all__ = ["refuse_local_only", "run_durable"]

_HINT = "drop it, or run with --engine local"
PROGRESS_EVERY_S = 10.0


def refuse_local_only(**given: object) -> None:
    """One line + a fix for a flag only a local run has (``given``: flag name -> value)."""
    for flag, value in given.items():
        if value:
            raise ConfigError(f"--{flag.replace('_', '-')} is not available with --engine durable "
                              "(a durable run has no local ledger)", hint=_HINT)  # fmt: skip


def refuse_durable_only(engine: str, **given: object) -> None:
    for flag, value in given.items():
        if value and engine != "durable":
            raise ConfigError(f"--{flag.replace('_', '-')} is for durable runs", hint="add --engine durable")


def run_durable(
    selector: Selector, spec: RunSpec, scripts: OsScripts | None, opts: FleetOptions, settings: Settings, *,
    follow: bool, poll_s: float = 2.0, output_mode: str = "stream",
) -> int:
    """Schedule (and with ``follow`` watch) a durable run; the exit code."""
    return int(asyncio.run(_go(selector, spec, scripts, opts, settings, follow=follow, poll_s=poll_s,
                               output_mode=output_mode)))


async def _go(selector: Selector, spec: RunSpec, scripts: OsScripts | None, opts: FleetOptions,
              settings: Settings, *, follow: bool, poll_s: float, output_mode: str) -> int:  # fmt: skip
    from azrun.cli._platform import split_by_os
    from azrun.durable import DurableFleet, check_durable_options

    check_durable_options(opts)  # before any Azure call
    async with DurableFleet.from_env(settings) as fleet:
        selection = await fleet.fleet.select(selector)
        if scripts is not None:
            selection, _ = split_by_os(selection, scripts)
            if not selection.targets:
                raise ConfigError("no selected machine has a script for its OS",
                                  hint="add --script-linux FILE or --script-windows FILE for the other OS")
        rid = await fleet.schedule(selection, spec, options=opts, poll_s=max(0.2, poll_s))
        options = current()
        if not follow:
            if options.output.machine_readable or options.query:
                emit({"runId": rid, "scheduler": fleet.connection.describe(), "targets": len(selection.targets)},
                     options.output, sys.stdout, query=options.query)  # fmt: skip
            else:
                print(rid)
            note(f"watch it with: azrun durable status {rid}; output: azrun durable logs {rid}")
            return 0
        note(f"run {rid} scheduled on {fleet.connection.describe()}: {len(selection.targets)} targets")
        return await follow_run(fleet, rid, output_mode=output_mode)


async def follow_run(fleet: DurableFleet, rid: str, *, output_mode: str = "stream") -> int:
    """Watch a durable run to its end: a line per finished target, the targets' output lines as
    they are written (``--output-mode stream``: the output blobs tailed as ``azrun logs --follow``
    does), progress now and then, the summary; the exit code."""
    from azrun.cli._logs_read import FollowState, follow_logs
    from azrun.cli._print import Labels, StreamPrinter
    from azrun.cli._run_view import LinePrinter

    options = current()
    machine = options.output.machine_readable or bool(options.query)
    printer = LinePrinter(err=sys.stderr, verbose=options.verbose)
    everyone = await fleet.targets(rid)
    seen: set[str] = set()
    ended: dict[str, TargetResult] = {}
    last: list[Any] = [None, time.monotonic()]  # the latest status, when progress was last shown

    async def refresh() -> FollowState:
        run = last[0] = await fleet.status(rid)
        for result in await fleet.new_results(rid, seen):
            key = result.target.resource_id.lower()
            if key in ended:
                continue  # a retried tick rewrote its file: already shown
            ended[key] = result
            if options.notes:
                printer.on_target(result)
            if options.output is OutputFormat.JSONL:
                emit(target_record(result, run_id=rid), OutputFormat.JSONL, sys.stdout, query=options.query)
        if options.notes and not run.done and time.monotonic() - last[1] >= PROGRESS_EVERY_S:
            last[1] = time.monotonic()
            inflight = sum(int(s.get("inflight", 0)) for s in run.shards)
            sys.stderr.write(f"... {sum(run.counts.values())}/{run.total} done, {inflight} in flight, "
                             f"{run.arm_requests} ARM requests, {run.throttled_429} throttled\n")  # fmt: skip
            sys.stderr.flush()
        return FollowState([_logged(t, ended.get(t.resource_id.lower()), run.done) for t in everyone])

    if output_mode == "stream" and options.notes:
        sink = StreamPrinter(labels=Labels(everyone), out=sys.stderr if machine else None)
        await follow_logs(await fleet.store(), rid, refresh, sink, poll_s=1.0, idle_s=math.inf)
    else:
        await refresh()
        while not last[0].done:
            await asyncio.sleep(1.0)
            await refresh()
    run = last[0] if last[0] is not None and last[0].done else await fleet.status(rid)
    return await _finish(fleet, run, set(ended))


def _logged(target: Target, result: TargetResult | None, done: bool) -> LoggedTarget:
    from azrun.cli._logs_read import LoggedTarget

    if result is None:  # still to run (or, once the run is done, never dispatched: nothing to tail)
        return LoggedTarget(target, finished=done)
    out = result.output
    return LoggedTarget(target, out.stdout_url, out.stderr_url, finished=True, truncated=out.truncated,
                        stdout_tail=result.stdout_tail, stderr_tail=result.stderr_tail)  # fmt: skip


async def _finish(fleet: DurableFleet, run: DurableRun, shown: set[str]) -> int:
    """The summary table (or ONE document) and the exit code, as a local run's
    (:func:`azrun.cli._session.finish`)."""
    from azrun.cli._exit import ExitCode
    from azrun.cli._result import outcome_code, run_document
    from azrun.cli._run_view import color_for, render_summary
    from azrun.models import FleetResult, RunId

    options = current()
    notes = tuple(n for n in (run.stop, run.error and f"the run failed in the engine: {run.error}") if n)
    result = FleetResult(RunId(run.run_id), tuple(await fleet.results(run.run_id)), notes=notes)
    code = ExitCode.INTERNAL if run.status == "error" else outcome_code(result)
    store = await fleet.store()
    output = f"{store.container_url}/{run.run_id}/"
    if options.output is OutputFormat.TABLE and not options.query:
        print(render_summary(result, color=color_for(sys.stdout)))
    else:
        if options.notes:
            sys.stderr.write(render_summary(result, color=color_for(sys.stderr)) + "\n")
        if options.output is OutputFormat.JSONL:  # the records went out as targets finished; the rest now
            for r in result.results:
                if r.target.resource_id not in shown:
                    emit(target_record(r, run_id=run.run_id), OutputFormat.JSONL, sys.stdout, query=options.query)
            return int(code)
        doc: dict[str, Any] = run_document(result, status=run.status, exit_code=int(code), created=run.created_at,
                                           output=output)  # fmt: skip
        doc["engine"] = "durable"
        emit(doc, options.output, sys.stdout, query=options.query, color=not options.colors_off)
    note(f"output: {output}  (azrun durable status {run.run_id})")
    return int(code)
