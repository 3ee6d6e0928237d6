"""``azrun durable run | status | runs | cancel | logs | scheduler``: runs on the Durable Task engine.

``run`` writes the plan to the output container, schedules the run and prints its id (``--follow``
watches it to the end); the other commands read the scheduler and the output container only, so
they work from any machine. ``scheduler`` serves a local scheduler (development and tests).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from azrun.cli._exit import ExitCode
from azrun.cli._format import emit
from azrun.cli._globals import current, with_global_options
from azrun.cli._options import (
    AllOpt,
    AllSubscriptionsOpt,
    ExcludeTagOpt,
    NameOpt,
    ResourceGroupOpt,
    SubscriptionOpt,
    TagOpt,
)
from azrun.cli._run_options import (
    AccountOpt,
    CommandIdOpt,
    CommandOpt,
    ConcurrencyOpt,
    ContainerOpt,
    ErrorsOpt,
    KeepOpt,
    ParamOpt,
    ScriptOpt,
    ScriptUriOpt,
    TimeoutOpt,
)
from azrun.cli._worker import SchedulerOpt, TaskHubOpt

__all__ = ["register"]

RunArg = Annotated[str, typer.Argument(metavar="RUN_ID", help="The durable run's id (as `azrun durable run` printed).")]


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="durable", no_args_is_help=True, add_completion=False,
                        help="Runs beyond one process: scheduled on the Durable Task engine, served by `azrun worker`.",
                        epilog="Example: azrun durable run --tag env=prod -c uptime --scheduler 127.0.0.1:4001 --follow")
    group.command("run", epilog="Example: azrun durable run --tag env=prod -c 'uptime' --scheduler host:4001 --follow")(
        with_global_options(run_cmd))
    group.command("status", epilog="Example: azrun durable status 20261205-0526-3dedbe -o json")(
        with_global_options(status_cmd))
    group.command("runs", epilog="Example: azrun durable runs -n 5")(with_global_options(runs_cmd))
    group.command("cancel", epilog="Example: azrun durable cancel 20261205-0526-3dedbe")(
        with_global_options(cancel_cmd, data=False))
    group.command("logs", epilog="Example: azrun durable logs 20261205-0526-3dedbe --target vm-web-01")(
        with_global_options(logs_cmd, data=False))
    group.command("scheduler", epilog="Example: azrun durable scheduler --port 4001 &")(
        with_global_options(scheduler_cmd, data=False))
    app.add_typer(group)


def _run_async(coro: Any) -> Any:
    """``asyncio.run``, with an unknown run reported as "not found" (exit 3)."""
    from azrun.cli._exit import NotFound
    from azrun.durable import UnknownDurableRun

    try:
        return asyncio.run(coro)
    except UnknownDurableRun as exc:
        raise NotFound(exc.message, hint=exc.hint) from None


def _fleet(scheduler: str | None, taskhub: str | None, **flags: Any) -> Any:
    from azrun.cli._run_inputs import load_settings
    from azrun.durable import DurableFleet

    return DurableFleet.from_env(load_settings(durable_endpoint=scheduler, durable_taskhub=taskhub, **flags))


def run_cmd(
    script: ScriptOpt = None,
    command: CommandOpt = None,
    script_uri: ScriptUriOpt = None,
    command_id: CommandIdOpt = None,
    param: ParamOpt = None,
    timeout: TimeoutOpt = None,
    max_concurrency: ConcurrencyOpt = None,
    max_errors: ErrorsOpt = None,
    keep: KeepOpt = False,
    tag: TagOpt = None,
    exclude_tag: ExcludeTagOpt = None,
    subscription: SubscriptionOpt = None,
    all_subscriptions: AllSubscriptionsOpt = False,
    resource_group: ResourceGroupOpt = None,
    name: NameOpt = None,
    select_all: AllOpt = False,
    output_container: ContainerOpt = None,
    storage_account: AccountOpt = None,
    scheduler: SchedulerOpt = None,
    taskhub: TaskHubOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Watch the run until it ends.")] = False,
    poll: Annotated[float, typer.Option("--poll", metavar="SECONDS", help="Completion polling interval.")] = 2.0,
) -> None:
    """Schedule a run on the durable engine and print its id (an alias of `azrun run --engine durable`)."""
    from azrun.cli._durable_run import run_durable
    from azrun.cli._options import selector_from_options
    from azrun.cli._run_inputs import fleet_options, load_settings, run_timeout_s, script_source
    from azrun.models import RunSpec

    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             durable_endpoint=scheduler, durable_taskhub=taskhub)  # fmt: skip
    source, _ = script_source(script, command, script_uri, command_id, required=True)
    params = tuple(tuple(p.split("=", 1)) for p in param or () if "=" in p)
    spec = RunSpec(**source, parameters=params, timeout_s=run_timeout_s(timeout, None, settings))  # type: ignore[arg-type]
    selector = selector_from_options(tag=tag, exclude_tag=exclude_tag, subscription=subscription,
                                     all_subscriptions=all_subscriptions, resource_group=resource_group,
                                     name=name, select_all=select_all)  # fmt: skip
    opts = fleet_options(settings, max_concurrency, max_errors, 0, keep, None)
    raise typer.Exit(run_durable(selector, spec, None, opts, settings, follow=follow, poll_s=poll))


def _line(run: Any) -> str:
    counts = " ".join(f"{k} {v}" for k, v in sorted(run.counts.items()))
    return f"{run.run_id} {run.status}: {sum(run.counts.values())}/{run.total} done {counts}  429s {run.throttled_429}"


def _code(run: Any) -> int:
    if run.status == "succeeded":
        return int(ExitCode.OK)
    return int(ExitCode.TARGET_FAILED)


def _doc(run: Any) -> dict[str, Any]:
    return {
        "runId": run.run_id, "status": run.status, "runtimeStatus": run.runtime_status,
        "created": run.created_at.isoformat() if run.created_at else None, "total": run.total,
        "counts": run.counts, "armRequests": run.arm_requests, "throttled429": run.throttled_429,
        "shards": list(run.shards), "error": run.error, "stop": run.stop,
    }  # fmt: skip


def status_cmd(run_id: RunArg, scheduler: SchedulerOpt = None, taskhub: TaskHubOpt = None,
               output_container: ContainerOpt = None, storage_account: AccountOpt = None) -> None:  # fmt: skip
    """A durable run's state: per subscription while it runs, the summary once it ended."""

    async def go() -> Any:
        async with _fleet(scheduler, taskhub, output_container=output_container, storage_account=storage_account) as f:
            return await f.status(run_id)

    run = _run_async(go())
    options = current()
    if options.output.machine_readable or options.query:
        emit(_doc(run), options.output, sys.stdout, query=options.query)
    else:
        print(_line(run))
        for s in run.shards:
            counts = " ".join(f"{k} {v}" for k, v in sorted(s.get("counts", {}).items()))
            print(f"  {s.get('subscription')}: {s.get('cursor', 0)}/{s.get('total')} dispatched, "
                  f"{s.get('inflight', 0)} in flight  {counts}  429s {s.get('throttled', 0)}")
    raise typer.Exit(_code(run) if run.done else 0)


def runs_cmd(scheduler: SchedulerOpt = None, taskhub: TaskHubOpt = None,
             limit: Annotated[int, typer.Option("-n", "--limit", help="How many (newest first).")] = 20) -> None:  # fmt: skip
    """Durable runs the scheduler knows, newest first."""

    async def go() -> Any:
        async with _fleet(scheduler, taskhub) as f:
            return await f.runs(limit)

    runs = _run_async(go())
    options = current()
    if options.output.machine_readable or options.query:
        emit([_doc(r) for r in runs], options.output, sys.stdout, query=options.query)
        return
    for r in runs:
        print(_line(r))


def cancel_cmd(run_id: RunArg, scheduler: SchedulerOpt = None, taskhub: TaskHubOpt = None,
               output_container: ContainerOpt = None, storage_account: AccountOpt = None) -> None:  # fmt: skip
    """Cancel a durable run: in-flight run commands are deleted (scripts killed), the rest skipped."""

    async def go() -> None:
        async with _fleet(scheduler, taskhub, output_container=output_container, storage_account=storage_account) as f:
            await f.cancel(run_id)

    _run_async(go())
    print(f"cancel requested for {run_id}")


def logs_cmd(run_id: RunArg, scheduler: SchedulerOpt = None, taskhub: TaskHubOpt = None,
             output_container: ContainerOpt = None, storage_account: AccountOpt = None,
             target: Annotated[str | None, typer.Option("--target", metavar="NAME", help="Only this machine.")] = None,
             ) -> None:  # fmt: skip
    """Finished targets' full output from the blobs, each line prefixed by the machine's name."""
    async def go() -> None:
        async with _fleet(scheduler, taskhub, output_container=output_container, storage_account=storage_account) as f:
            store = await f.store()
            for r in sorted(await f.results(run_id), key=lambda r: r.target.sort_key):
                if target and r.target.name != target:
                    continue
                code = "" if r.exit_code is None else f" (exit {r.exit_code})"
                print(f"== {r.target.name}: {r.state.value}{code}")
                if not r.output.stdout_url:
                    continue
                for stream in ("stdout", "stderr"):
                    data = await store.read(run_id, r.target, stream)
                    for line in data.decode(errors="replace").splitlines():
                        out = sys.stdout if stream == "stdout" else sys.stderr
                        out.write(f"{r.target.name}: {line}\n")

    asyncio.run(go())


def scheduler_cmd(
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free one).")] = 4001,
    address_file: Annotated[Path | None, typer.Option("--address-file", help="Write host:port here once listening.")] = None,
) -> None:
    """A local scheduler for development and tests (the Durable Task SDK's in-memory backend)."""
    from azrun.durable._local import LocalScheduler

    sched = LocalScheduler(port=port)
    address = sched.start()
    if address_file is not None:
        address_file.write_text(address + "\n", encoding="utf-8")
    sys.stderr.write(f"local durable scheduler on {address} (in memory: state is lost when it stops)\n")
    sys.stderr.flush()
    try:
        while True:
            time.sleep(1.0)
    finally:
        sched.stop(grace=1)
