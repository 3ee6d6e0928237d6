"""``azrun run | status | runs | resume | rerun | cancel | cleanup``: thin over :mod:`azrun.fleet`.

Exit codes: 0 every target succeeded (stopped machines reported as skipped are fine); 1 a target
failed, timed out, was undeliverable or canceled; 2 usage, auth, permission or config error;
130 Ctrl-C.

Secrets never come from argv: protected parameter values come from ``AZRUN_PARAM_<NAME>``,
``--param-file`` or a prompt; the run-as password from ``--run-as-password-env VAR``,
``--run-as-password-file FILE``, ``AZRUN_RUN_AS_PASSWORD`` or a prompt.

Ctrl-C during ``run``/``resume``: the first press stops dispatching and asks (on a terminal)
whether to cancel the in-flight targets or leave them running for ``azrun resume``; without a
terminal they are left running. A second press exits at once with 130; the ledger is intact.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from azrun.cli import app
from azrun.cli._options import (
    AllOpt,
    AllSubscriptionsOpt,
    ExcludeTagOpt,
    IncludeStoppedOpt,
    NameOpt,
    OsOpt,
    OutputFormat,
    OutputOpt,
    ResourceGroupOpt,
    SubscriptionOpt,
    TagOpt,
)
from azrun.cli._run_inputs import (
    fleet_options,
    gather_parameters,
    load_settings,
    make_fleet,
    open_ledger,
    recorded_spec,
    run_as_password,
    run_timeout_s,
    say,
    script_manifest,
    script_source,
    session,
)
from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.cli._progress import Display
    from azrun.fleet import Fleet, RunHandle

SRC = "Script"
PARAMS = "Parameters and identity"
FLEET = "Fleet behaviour"
OUT = "Output and state"

ScriptOpt = Annotated[Path | None, typer.Option("--script", "-f", metavar="FILE", rich_help_panel=SRC,
                                                 help="Script file to run (a manifest header or FILE.azrun.toml declares its parameters).")]
CommandOpt = Annotated[str | None, typer.Option("--command", "-c", metavar="TEXT", rich_help_panel=SRC,
                                                 help="Inline script text.")]
ScriptUriOpt = Annotated[str | None, typer.Option("--script-uri", metavar="URL", rich_help_panel=SRC,
                                                   help="Script downloaded by the VM (public, SAS, or with --script-uri-identity).")]
ScriptUriIdentityOpt = Annotated[str | None, typer.Option("--script-uri-identity", metavar="system|CLIENT_ID",
                                                           rich_help_panel=SRC, help="Managed identity the VM uses to download --script-uri.")]
CommandIdOpt = Annotated[str | None, typer.Option("--command-id", metavar="ID", rich_help_panel=SRC,
                                                   help="A built-in command (RunShellScript, RunPowerShellScript, ...).")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", metavar="NAME=VALUE", rich_help_panel=PARAMS,
                                                     help="Script parameter (repeatable; never for secrets).")]
ParamFileOpt = Annotated[Path | None, typer.Option("--param-file", metavar="FILE", rich_help_panel=PARAMS,
                                                    help="TOML file of name = value (secret or not).")]
ProtectedOpt = Annotated[list[str] | None, typer.Option("--protected-param", metavar="NAME", rich_help_panel=PARAMS,
                                                         help="Send NAME as a protected parameter; value from AZRUN_PARAM_<NAME>, --param-file or a prompt.")]
RunAsOpt = Annotated[str | None, typer.Option("--run-as", metavar="USER", rich_help_panel=PARAMS,
                                               help="Run the script as this user.")]
PasswordEnvOpt = Annotated[str | None, typer.Option("--run-as-password-env", metavar="VAR", rich_help_panel=PARAMS,
                                                     help="Environment variable holding the run-as password.")]
PasswordFileOpt = Annotated[Path | None, typer.Option("--run-as-password-file", metavar="FILE", rich_help_panel=PARAMS,
                                                       help="File holding the run-as password.")]
AskPasswordOpt = Annotated[bool, typer.Option("--ask-run-as-password", rich_help_panel=PARAMS,
                                              help="Prompt for the run-as password.")]
TimeoutOpt = Annotated[str | None, typer.Option("--timeout", metavar="DURATION", rich_help_panel=FLEET,
                                                 help="Per-target script timeout (timeoutInSeconds): 90s, 10m, 2h. Default 1h.")]
SyncOpt = Annotated[bool, typer.Option("--sync", rich_help_panel=FLEET,
                                       help="asyncExecution=false (the PUT waits for the script; only for short scripts).")]
ConcurrencyOpt = Annotated[str | None, typer.Option("--max-concurrency", metavar="N|N%", rich_help_panel=FLEET,
                                                     help="Targets in flight at once (default 50).")]
ErrorsOpt = Annotated[str | None, typer.Option("--max-errors", metavar="N|N%", rich_help_panel=FLEET,
                                                help="Stop dispatching once errors exceed this (default 0).")]
CanaryOpt = Annotated[int, typer.Option("--canary", metavar="N", rich_help_panel=FLEET,
                                        help="Run on N targets first; continue only if all succeed.")]
KeepOpt = Annotated[bool, typer.Option("--keep", rich_help_panel=FLEET,
                                       help="Keep the run command resources (default: delete each once finished).")]
GraceOpt = Annotated[str | None, typer.Option("--watchdog-grace", metavar="DURATION", rich_help_panel=FLEET,
                                               help="A target still Running timeout+grace after dispatch is canceled as TimedOut (default max(60s, 10%)).")]
OutputModeOpt = Annotated[str, typer.Option("--output-mode", metavar="stream|summary|quiet|json", rich_help_panel=OUT,
                                            help="How targets' output is shown while the run goes.")]
ContainerOpt = Annotated[str | None, typer.Option("--output-container", metavar="URL", rich_help_panel=OUT,
                                                   help="Blob container for full output (AZRUN_OUTPUT_CONTAINER).")]
AccountOpt = Annotated[str | None, typer.Option("--storage-account", metavar="NAME", rich_help_panel=OUT,
                                                 help="Storage account for output (container azrun-output).")]
BlobIdentityOpt = Annotated[str | None, typer.Option("--blob-identity", metavar="system|CLIENT_ID", rich_help_panel=OUT,
                                                      help="VMs write output with this managed identity instead of a SAS.")]
StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", metavar="DIR", rich_help_panel=OUT,
                                                   help="Where the ledger lives (AZRUN_STATE_DIR; default $XDG_STATE_HOME/azrun).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", rich_help_panel=OUT, help="Print every state change.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUT,
                                        help="Only the final summary and errors (no live display, no output lines).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]


def _display(output_mode: str, verbose: bool, quiet: bool) -> Display:
    """The live panel on a terminal, plain lines elsewhere, nothing with --quiet."""
    from azrun.cli._progress import make_display

    return make_display(output_mode, verbose=verbose, quiet=quiet)


def _note(quiet: bool, text: str) -> None:
    if not quiet:
        say(text)


# -- commands ------------------------------------------------------------------------------------------
@app.command("run")
def run_cmd(
    script: ScriptOpt = None,
    command: CommandOpt = None,
    script_uri: ScriptUriOpt = None,
    script_uri_identity: ScriptUriIdentityOpt = None,
    command_id: CommandIdOpt = None,
    param: ParamOpt = None,
    param_file: ParamFileOpt = None,
    protected_param: ProtectedOpt = None,
    run_as: RunAsOpt = None,
    run_as_password_env: PasswordEnvOpt = None,
    run_as_password_file: PasswordFileOpt = None,
    ask_run_as_password: AskPasswordOpt = False,
    timeout: TimeoutOpt = None,
    sync: SyncOpt = False,
    max_concurrency: ConcurrencyOpt = None,
    max_errors: ErrorsOpt = None,
    canary: CanaryOpt = 0,
    keep: KeepOpt = False,
    watchdog_grace: GraceOpt = None,
    tag: TagOpt = None,
    exclude_tag: ExcludeTagOpt = None,
    subscription: SubscriptionOpt = None,
    all_subscriptions: AllSubscriptionsOpt = False,
    resource_group: ResourceGroupOpt = None,
    name: NameOpt = None,
    os_: OsOpt = None,
    include_stopped: IncludeStoppedOpt = False,
    select_all: AllOpt = False,
    output_mode: OutputModeOpt = "stream",
    output_container: ContainerOpt = None,
    storage_account: AccountOpt = None,
    blob_identity: BlobIdentityOpt = None,
    state_dir: StateDirOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a script on every selected machine, with concurrency and error budgets.

    Example: azrun run --tag env=prod --script patch.sh --max-concurrency 10% --max-errors 2
    """
    from azrun.cli._options import selector_from_options
    from azrun.models import RunSpec

    selector = selector_from_options(
        tag=tag, exclude_tag=exclude_tag, subscription=subscription, all_subscriptions=all_subscriptions,
        resource_group=resource_group, name=name, os=os_, include_stopped=include_stopped, select_all=select_all,
    )  # fmt: skip
    src, record = script_source(script, command, script_uri, command_id, required=True)
    if script_uri_identity and not script_uri:
        raise ConfigError("--script-uri-identity needs --script-uri", hint="add --script-uri URL")
    manifest = script_manifest(src, script)
    public, protected = gather_parameters(manifest, param, param_file, protected_param)
    password = run_as_password(run_as, run_as_password_env, run_as_password_file, ask_run_as_password)
    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             blob_identity=blob_identity, state_dir=str(state_dir) if state_dir else None)
    timeout_s = run_timeout_s(timeout, manifest.timeout_s, settings)
    spec = RunSpec(
        **src, script_uri_identity=script_uri_identity, parameters=public, protected_parameters=protected,
        run_as_user=run_as, run_as_password=password, timeout_s=timeout_s, async_execution=not sync,
    )  # fmt: skip
    opts = fleet_options(settings, max_concurrency, max_errors, canary, keep, watchdog_grace)
    observer = _display(output_mode, verbose, quiet)

    async def start(fleet: Fleet) -> RunHandle:
        selection = await fleet.select(selector)
        skipped = f", {len(selection.skipped)} skipped (not running)" if selection.skipped else ""
        canary_note = f", canary {opts.canary}" if opts.canary else ""
        _note(quiet, f"{len(selection.targets)} targets{skipped}; max concurrency {opts.max_concurrency}, "
            f"max errors {opts.max_errors}{canary_note}")
        handle = await fleet.start(selection, spec, options=opts, observer=observer, record=record)
        _note(quiet, f"run {handle.run_id} started (ledger {fleet.ledger.path})")
        return handle

    with observer:
        rc = asyncio.run(session(settings, state_dir, "quiet" if quiet else output_mode, start))
    raise typer.Exit(rc)


@app.command("resume", epilog="Example: azrun resume 20261122-0012-ab12cd   # after a crash, Ctrl-C or a lost shell")
def resume_cmd(
    run_id: Annotated[str, typer.Argument(help="The run to resume (see 'azrun runs').")],
    script: ScriptOpt = None,
    command: CommandOpt = None,
    script_uri: ScriptUriOpt = None,
    param_file: ParamFileOpt = None,
    run_as_password_env: PasswordEnvOpt = None,
    run_as_password_file: PasswordFileOpt = None,
    output_mode: OutputModeOpt = "stream",
    output_container: ContainerOpt = None,
    storage_account: AccountOpt = None,
    state_dir: StateDirOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-attach to a run after a crash or Ctrl-C: poll what runs, dispatch only what never was.

    Nothing runs twice: targets whose PUT may have been sent are looked up by their run command's
    name first. The script is re-read from the recorded file (or give it again); protected
    parameter values are asked for again (AZRUN_PARAM_<NAME>, --param-file or a prompt).
    """
    from azrun.models import TargetState

    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             state_dir=str(state_dir) if state_dir else None)
    observer = _display(output_mode, verbose, quiet)
    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(run_id)
        must = any(t.state in (TargetState.PENDING, TargetState.DISPATCHING) for t in ledger.targets(record.id))
    spec = recorded_spec(
        record, script=script, command=command, script_uri=script_uri, param_file=param_file,
        run_as_password_env=run_as_password_env, run_as_password_file=run_as_password_file,
    ) if must else None  # fmt: skip

    async def start(fleet: Fleet) -> RunHandle:
        handle = await fleet.resume_start(record.id, spec, observer=observer)
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(fleet.status(record.id).counts().items()))
        _note(quiet, f"resuming run {record.id} ({counts})")
        return handle

    with observer:
        rc = asyncio.run(session(settings, state_dir, "quiet" if quiet else output_mode, start))
    raise typer.Exit(rc)


@app.command("rerun")
def rerun_cmd(
    run_id: Annotated[str, typer.Argument(help="The run whose targets to run again.")],
    failed: Annotated[bool, typer.Option("--failed", help="Targets that Failed, TimedOut or were Undeliverable.")] = False,
    state: Annotated[list[str] | None, typer.Option("--state", metavar="STATE", help="Targets in this state (repeatable).")] = None,
    script: ScriptOpt = None,
    command: CommandOpt = None,
    script_uri: ScriptUriOpt = None,
    param_file: ParamFileOpt = None,
    run_as_password_env: PasswordEnvOpt = None,
    run_as_password_file: PasswordFileOpt = None,
    max_concurrency: ConcurrencyOpt = None,
    max_errors: ErrorsOpt = None,
    output_mode: OutputModeOpt = "stream",
    output_container: ContainerOpt = None,
    storage_account: AccountOpt = None,
    state_dir: StateDirOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Start a new run of the same script on the targets of RUN that failed.

    Example: azrun rerun 20261122-0012-ab12cd --failed
    """
    from azrun.fleet import RERUN_STATES, FleetOptions
    from azrun.models import TargetState

    if not failed and not state:
        raise ConfigError("say which targets to run again", hint="use --failed, or --state STATE")
    try:
        states = list(RERUN_STATES if failed else ()) + [TargetState(s) for s in state or ()]
    except ValueError as exc:
        raise ConfigError(f"unknown --state: {exc}", hint=f"states: {', '.join(s.value for s in TargetState)}") from exc
    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             state_dir=str(state_dir) if state_dir else None)
    observer = _display(output_mode, verbose, quiet)
    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(run_id)
    spec = recorded_spec(
        record, script=script, command=command, script_uri=script_uri, param_file=param_file,
        run_as_password_env=run_as_password_env, run_as_password_file=run_as_password_file, new_script_ok=True,
    )  # fmt: skip
    opts = FleetOptions.from_dict(record.options.get("fleet", {}))
    if max_concurrency or max_errors:
        opts = FleetOptions.from_dict({**opts.to_dict(), **({"max_concurrency": max_concurrency} if max_concurrency else {}),
                                       **({"max_errors": max_errors} if max_errors else {})})
    source = {"source": record.options.get("source")} if not (script or command or script_uri) else \
        script_source(script, command, script_uri, None, required=False)[1]

    async def start(fleet: Fleet) -> RunHandle:
        handle = await fleet.rerun_start(record.id, spec, states=states, options=opts, observer=observer,
                                         record=source)
        _note(quiet, f"run {handle.run_id} re-runs {len(handle.runner.works)} target(s) of {record.id}")
        return handle

    with observer:
        rc = asyncio.run(session(settings, state_dir, "quiet" if quiet else output_mode, start))
    raise typer.Exit(rc)


@app.command("cancel", epilog="Examples: azrun cancel   # the latest run;   azrun cancel 20261122-0012-ab12cd")
def cancel_cmd(
    run_id: Annotated[str | None, typer.Argument(help="The run to cancel (default: the latest).")] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Cancel a run: stop its dispatching and delete its in-flight run commands (kills the scripts)."""
    from azrun.cli._run_view import color_for, render_summary

    settings = load_settings(state_dir=str(state_dir) if state_dir else None)

    async def go() -> int:
        from azrun.cli._options import client_factory

        factory = client_factory(settings)
        try:
            async with make_fleet(factory, state_dir, None, settings) as fleet:
                result = await fleet.cancel(run_id)
                print(render_summary(result, color=color_for(sys.stdout)))
                return 0
        finally:
            await factory.aclose()

    raise typer.Exit(asyncio.run(go()))


@app.command("cleanup", epilog="Example: azrun cleanup --older-than 1d --all-azrun --dry-run")
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
            async with make_fleet(factory, state_dir, None, settings) as fleet:
                report = await fleet.cleanup(older_than_s=seconds, all_azrun=all_azrun, machines=selector,
                                             dry_run=dry_run)
        finally:
            await factory.aclose()
        verb = "would delete" if dry_run else "deleted"
        for rid in report.deleted:
            print(f"{verb} {rid}")
        for rid, why in report.failed:
            say(f"failed {rid}: {why}")
        say(f"{verb} {len(report.deleted)} run command(s); kept {len(report.kept)}; failed {len(report.failed)}; "
             f"{report.arm_requests} ARM requests")
        return 1 if report.failed else 0

    raise typer.Exit(asyncio.run(go()))


@app.command("status", epilog="Examples: azrun status   # the latest run;   azrun status 20261122-0012-ab12cd --all --json")
def status_cmd(
    run_id: Annotated[str | None, typer.Argument(help="The run (default: the latest).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Every target, not only those that did not succeed.")] = False,
    as_json: JsonOpt = False,
    output: OutputOpt = OutputFormat.TABLE,
    state_dir: StateDirOpt = None,
) -> None:
    """A run's per-target states from the ledger (works while the run is going, from any shell)."""
    from azrun.cli._run_view import color_for, render_summary
    from azrun.models import FleetResult, RunId

    as_json = as_json or output is not OutputFormat.TABLE

    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(run_id)
        targets = ledger.targets(record.id)
    if as_json:
        for t in targets:
            print(json.dumps({
                "run": record.id, "target": t.target.resource_id, "name": t.target.name, "state": t.state.value,
                "exitCode": t.exit_code, "message": t.message, "runCommandId": t.run_command_id,
                "dispatchedAt": t.dispatched_at.isoformat() if t.dispatched_at else None,
                "startedAt": t.started_at.isoformat() if t.started_at else None,
                "endedAt": t.ended_at.isoformat() if t.ended_at else None,
                "stdoutUrl": t.stdout_url, "stderrUrl": t.stderr_url, "armRequests": t.arm_requests,
            }))  # fmt: skip
        return
    result = FleetResult(RunId(record.id), tuple(t.to_result() for t in targets))
    script = record.spec.get("script_name") or record.spec.get("command_id") or ""
    print(f"run {record.id}  status {record.status}  created {record.created:%Y-%m-%d %H:%M:%S}  script {script}")
    print(render_summary(result, color=color_for(sys.stdout), show_all=show_all))
    running = [t for t in targets if not t.state.terminal]
    if running and not record.driven_here_by_live_process:
        say(f"{len(running)} target(s) not finished and no live azrun drives the run: azrun resume {record.id}")


@app.command("runs", epilog="Example: azrun runs -n 5 --json")
def runs_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
    output: OutputOpt = OutputFormat.TABLE,
    state_dir: StateDirOpt = None,
) -> None:
    """Run history from the ledger, newest first."""
    from azrun.cli._run_view import render_runs

    as_json = as_json or output is not OutputFormat.TABLE

    with open_ledger(state_dir) as ledger:
        rows = [(r, ledger.counts(r.id)) for r in ledger.runs(limit)]
    if as_json:
        for r, counts in rows:
            print(json.dumps({"run": r.id, "created": r.created.isoformat(), "status": r.status, "counts": counts,
                              "script": r.spec.get("script_name"), "sha256": r.spec.get("script_sha256")}))
        return
    print(render_runs(
        (r.id, f"{r.created:%Y-%m-%d %H:%M:%S}", r.status, " ".join(f"{k}:{v}" for k, v in sorted(counts.items())),
         str(r.spec.get("script_name") or r.spec.get("command_id") or ""))
        for r, counts in rows
    ))  # fmt: skip
