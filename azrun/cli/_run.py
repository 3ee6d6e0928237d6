"""``azrun run | resume | rerun``: start or continue a run, thin over :mod:`azrun.fleet`.

Exit codes: the table in :mod:`azrun.cli._exit` (0 every target succeeded; 1 a target failed,
timed out, was undeliverable or canceled; 130 Ctrl-C; 143 SIGTERM; ...).

Output: the live display on stderr; the result on stdout: the summary table (``-o table``) or
ONE document (``-o json|jsonc|yaml|tsv``, with ``--query``), or one record per target as each
finishes (``-o jsonl``). With a machine-readable ``-o``, targets' output lines go to stderr, so
``azrun run ... -o json | jq`` works.

Secrets never come from argv: protected parameter values come from ``AZRUN_PARAM_<NAME>``,
``--param-file`` or a prompt; the run-as password from ``--run-as-password-env VAR``,
``--run-as-password-file FILE``, ``AZRUN_RUN_AS_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from azrun.cli._durable_run import refuse_durable_only, refuse_local_only, run_durable
from azrun.cli._globals import current, with_global_options
from azrun.cli._options import (
    AllOpt,
    AllSubscriptionsOpt,
    ExcludeTagOpt,
    IncludeStoppedOpt,
    NameOpt,
    OsOpt,
    ResourceGroupOpt,
    SubscriptionOpt,
    TagOpt,
)
from azrun.cli._report import ReportOpt
from azrun.cli._run_inputs import (
    fleet_options,
    gather_parameters,
    load_settings,
    open_ledger,
    recorded_spec,
    run_as_password,
    run_timeout_s,
    script_manifest,
    script_source,
)
from azrun.cli._run_options import (
    AccountOpt,
    AskPasswordOpt,
    BlobIdentityOpt,
    CanaryOpt,
    CommandIdOpt,
    CommandOpt,
    ConcurrencyOpt,
    ContainerOpt,
    DryRunOpt,
    EngineOpt,
    ErrorsOpt,
    FollowOpt,
    GraceOpt,
    KeepOpt,
    OutputModeOpt,
    ParamFileOpt,
    ParamOpt,
    PasswordEnvOpt,
    PasswordFileOpt,
    ProtectedOpt,
    RetriesOpt,
    RetryFailedOpt,
    RunAsOpt,
    ScriptLinuxOpt,
    ScriptOpt,
    ScriptUriIdentityOpt,
    ScriptUriOpt,
    ScriptWindowsOpt,
    SoakOpt,
    StartTimeoutOpt,
    StateDirOpt,
    SyncOpt,
    TimeoutOpt,
    WaveErrorsOpt,
    WavesOpt,
    rollout_options,
)
from azrun.cli._runids import RunIdArg, resolve_run_id
from azrun.cli._session import note, session
from azrun.cli._worker import SchedulerOpt, TaskHubOpt
from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.cli._platform import OsScripts
    from azrun.cli._progress import Display
    from azrun.fleet import Fleet, RunHandle
    from azrun.models import RunSpec
    from azrun.targets import Selector

__all__ = ["build_run", "register"]

RUN_EPILOG = """Examples:
  azrun run --tag env=prod -f patch.sh --max-concurrency 10% --max-errors 2
  azrun run --tag role=web --script-linux hello.sh --script-windows hello.ps1
  azrun run --all -c 'uptime' -o json | jq '.counts'
  azrun run --tag env=prod -f patch.sh --dry-run      # the plan, nothing dispatched
"""


def register(app: typer.Typer) -> None:
    app.command("run", epilog=RUN_EPILOG)(with_global_options(run_cmd))
    app.command("resume", epilog="Example: azrun resume last   # after a crash, Ctrl-C, SIGTERM or a lost shell")(
        with_global_options(resume_cmd))
    app.command("rerun", epilog="Example: azrun rerun last --failed")(with_global_options(rerun_cmd))


def display_for(output_mode: str) -> Display:
    """The live panel on a terminal, plain lines elsewhere, nothing with -q; output lines on stderr
    and per-target records on stdout when ``-o`` is machine-readable."""
    from azrun.cli._format import OutputFormat
    from azrun.cli._progress import make_display
    from azrun.cli._session import RecordStream

    options = current()
    machine = options.output.machine_readable or bool(options.query)
    display = make_display(output_mode, verbose=options.verbose, quiet=options.quiet,
                           lines_to=sys.stderr if machine else None)
    return RecordStream(display, options) if options.output is OutputFormat.JSONL else display


def os_scripts(
    script: Path | None, script_linux: Path | None, script_windows: Path | None, src: dict[str, Any]
) -> OsScripts | None:
    """Which script each OS gets (None: a URI or built-in command, not checked)."""
    from azrun.cli._platform import OsScripts, is_run_manifest

    if script is not None and is_run_manifest(script):
        return OsScripts.from_manifest(script.expanduser())
    if script_linux or script_windows:
        return OsScripts.from_files(script_linux, script_windows)
    if src.get("script"):
        return OsScripts(any_os=(str(src["script"]), str(src.get("script_name") or "")))
    command_id = str(src.get("command_id") or "")
    if command_id.startswith("RunPowerShell"):
        return OsScripts(any_os=("", "x.ps1"))
    if command_id.startswith("RunShell"):
        return OsScripts(any_os=("", "x.sh"))
    return None


def _per_os_source(scripts: OsScripts) -> tuple[dict[str, Any], dict[str, Any]]:
    first = scripts.linux or scripts.windows
    assert first is not None
    others = tuple((o, s[0]) for o, s in (("windows", scripts.windows),) if s is not None and scripts.linux)
    src: dict[str, Any] = {"script": first[0], "script_name": " + ".join(
        s[1] for s in (scripts.linux, scripts.windows) if s)}
    if others:
        src["os_scripts"] = others
    return src, {"source": {"kind": "per-os", "paths": dict(scripts.paths)}}


def build_run(
    *, script: Path | None, script_linux: Path | None, script_windows: Path | None, command: str | None,
    script_uri: str | None, script_uri_identity: str | None, command_id: str | None, param: list[str] | None,
    param_file: Path | None, protected_param: list[str] | None, run_as: str | None,
    run_as_password_env: str | None, run_as_password_file: Path | None, ask_run_as_password: bool,
    timeout: str | None, sync: bool, settings: Any,
) -> tuple[RunSpec, dict[str, Any], OsScripts | None]:
    """(the RunSpec, what the ledger records about the source, the per-OS scripts) from the flags."""
    from azrun.models import RunSpec

    per_os = bool(script_linux or script_windows or (script is not None and script.name.endswith(".azrun.toml")))
    if per_os and (command or script_uri or command_id or (script is not None and (script_linux or script_windows))):
        raise ConfigError("give either one script for every OS or --script-linux/--script-windows",
                          hint="one script source per run")
    if per_os:
        scripts = os_scripts(script, script_linux, script_windows, {})
        assert scripts is not None
        src, record = _per_os_source(scripts)
        manifest_path = Path(scripts.paths[0][1]) if scripts.paths else None
    else:
        src, record = script_source(script, command, script_uri, command_id, required=True)
        scripts = os_scripts(script, None, None, src)
        manifest_path = script
    if script_uri_identity and not script_uri:
        raise ConfigError("--script-uri-identity needs --script-uri", hint="add --script-uri URL")
    manifest = script_manifest({k: v for k, v in src.items() if k != "os_scripts"}, manifest_path)
    public, protected = gather_parameters(manifest, param, param_file, protected_param)
    password = run_as_password(run_as, run_as_password_env, run_as_password_file, ask_run_as_password)
    timeout_s = run_timeout_s(timeout, manifest.timeout_s, settings)
    spec = RunSpec(
        **src, script_uri_identity=script_uri_identity, parameters=public, protected_parameters=protected,
        run_as_user=run_as, run_as_password=password, timeout_s=timeout_s, async_execution=not sync,
    )  # fmt: skip
    return spec, record, scripts


def recorded_per_os(record: Any, spec_of: Any) -> RunSpec | None:
    """For a run started with a script per OS: its spec with both scripts re-read from the recorded
    paths (``spec_of(command=text)`` builds the rest as for any run); None for other runs."""
    from dataclasses import replace

    from azrun.cli._platform import OsScripts

    source = record.options.get("source") or {}
    if source.get("kind") != "per-os":
        return None
    paths = source.get("paths") or {}
    scripts = OsScripts.from_files(*(Path(paths[o]) if paths.get(o) else None for o in ("linux", "windows")))
    src, _ = _per_os_source(scripts)
    spec: RunSpec = spec_of(command=src["script"])
    return replace(spec, script_name=src["script_name"], os_scripts=src.get("os_scripts", ()))


def run_cmd(
    script: ScriptOpt = None,
    script_linux: ScriptLinuxOpt = None,
    script_windows: ScriptWindowsOpt = None,
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
    waves: WavesOpt = None,
    soak: SoakOpt = None,
    wave_max_errors: WaveErrorsOpt = None,
    retries: RetriesOpt = 0,
    retry_failed_scripts: RetryFailedOpt = False,
    start_timeout: StartTimeoutOpt = None,
    keep: KeepOpt = False,
    watchdog_grace: GraceOpt = None,
    dry_run: DryRunOpt = False,
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
    report: ReportOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    taskhub: TaskHubOpt = None,
    follow: FollowOpt = False,
) -> None:
    """Run a script on every selected machine, with concurrency and error budgets."""
    from azrun.cli._options import selector_from_options
    from azrun.cli._platform import split_by_os
    from azrun.cli._report import ReportAfterRun

    selector: Selector = selector_from_options(
        tag=tag, exclude_tag=exclude_tag, subscription=subscription, all_subscriptions=all_subscriptions,
        resource_group=resource_group, name=name, os=os_, include_stopped=include_stopped, select_all=select_all,
    )  # fmt: skip
    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             blob_identity=blob_identity, state_dir=str(state_dir) if state_dir else None,
                             engine=engine, durable_endpoint=scheduler, durable_taskhub=taskhub)  # fmt: skip
    durable = settings.engine() == "durable"
    refuse_durable_only(settings.engine(), follow=follow, scheduler=scheduler, taskhub=taskhub)
    if durable:
        refuse_local_only(state_dir=state_dir, report=report)
    spec, record, scripts = build_run(
        script=script, script_linux=script_linux, script_windows=script_windows, command=command,
        script_uri=script_uri, script_uri_identity=script_uri_identity, command_id=command_id, param=param,
        param_file=param_file, protected_param=protected_param, run_as=run_as,
        run_as_password_env=run_as_password_env, run_as_password_file=run_as_password_file,
        ask_run_as_password=ask_run_as_password, timeout=timeout, sync=sync, settings=settings,
    )  # fmt: skip
    opts = rollout_options(
        fleet_options(settings, max_concurrency, max_errors, canary, keep, watchdog_grace), waves=waves, soak=soak,
        wave_max_errors=wave_max_errors, retries=retries, retry_failed_scripts=retry_failed_scripts,
        start_timeout=start_timeout,
    )  # fmt: skip
    if dry_run:
        from azrun.cli._plan import show_plan

        raise typer.Exit(show_plan(selector, spec, scripts, opts, settings, state_dir))
    if durable:
        raise typer.Exit(run_durable(selector, spec, scripts, opts, settings, follow=follow, output_mode=output_mode))
    display = display_for(output_mode)

    async def start(fleet: Fleet) -> RunHandle:
        selection = await fleet.select(selector)
        if scripts is not None:
            selection, _ = split_by_os(selection, scripts)
            if not selection.targets:
                raise ConfigError("no selected machine has a script for its OS",
                                  hint="add --script-linux FILE or --script-windows FILE for the other OS")
        skipped = f", {len(selection.skipped)} skipped" if selection.skipped else ""
        canary_note = f", canary {opts.canary}" if opts.canary else ""
        canary_note += f", waves {opts.waves.describe()}" if opts.waves is not None else ""
        canary_note += f", retries {opts.retries}" if opts.retries else ""
        note(f"{len(selection.targets)} targets{skipped}; max concurrency {opts.max_concurrency}, "
             f"max errors {opts.max_errors}{canary_note}")
        handle = await fleet.start(selection, spec, options=opts, observer=display, record=record)
        note(f"run {handle.run_id} started (ledger {fleet.ledger.path})")
        return handle

    after = ReportAfterRun(report)
    with display:
        rc = asyncio.run(session(settings, state_dir, output_mode, display, after.watch(start)))
    after.write(settings, state_dir)
    raise typer.Exit(rc)


def resume_cmd(
    run_id: RunIdArg,
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
) -> None:
    """Re-attach to a run after a crash, Ctrl-C or SIGTERM: poll what runs, dispatch only what never was.

    Nothing runs twice: targets whose PUT may have been sent are looked up by their run command's
    name first. The script is re-read from the recorded file (or give it again); protected
    parameter values are asked for again (AZRUN_PARAM_<NAME>, --param-file or a prompt).
    """
    from azrun.models import TargetState

    settings = load_settings(output_container=output_container, storage_account=storage_account,
                             state_dir=str(state_dir) if state_dir else None)
    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(resolve_run_id(ledger, run_id))
        must = any(t.state in (TargetState.PENDING, TargetState.DISPATCHING) for t in ledger.targets(record.id))
    def spec_of(**given: Any) -> RunSpec:
        flags: dict[str, Any] = {"script": script, "command": command, "script_uri": script_uri, **given}
        return recorded_spec(record, param_file=param_file, run_as_password_env=run_as_password_env,
                             run_as_password_file=run_as_password_file, **flags)

    spec = None
    if must:
        spec = (recorded_per_os(record, spec_of) if not (script or command or script_uri) else None) or spec_of()
    display = display_for(output_mode)

    async def start(fleet: Fleet) -> RunHandle:
        handle = await fleet.resume_start(record.id, spec, observer=display)
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(fleet.status(record.id).counts().items()))
        note(f"resuming run {record.id} ({counts})")
        return handle

    with display:
        rc = asyncio.run(session(settings, state_dir, output_mode, display, start))
    raise typer.Exit(rc)


def rerun_cmd(
    run_id: RunIdArg,
    failed: Annotated[bool, typer.Option(
        "--failed", help="Targets that Failed, TimedOut or were Undeliverable.")] = False,
    state: Annotated[list[str] | None, typer.Option(
        "--state", metavar="STATE", help="Targets in this state (repeatable).")] = None,
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
) -> None:
    """Start a new run of the same script on the targets of RUN that failed."""
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
    with open_ledger(state_dir) as ledger:
        record = ledger.require_run(resolve_run_id(ledger, run_id))
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
    display = display_for(output_mode)

    async def start(fleet: Fleet) -> RunHandle:
        handle = await fleet.rerun_start(record.id, spec, states=states, options=opts, observer=display,
                                         record=source)
        note(f"run {handle.run_id} re-runs {len(handle.runner.works)} target(s) of {record.id}")
        return handle

    with display:
        rc = asyncio.run(session(settings, state_dir, output_mode, display, start))
    raise typer.Exit(rc)
