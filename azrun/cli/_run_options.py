"""The options of the run commands (``run``, ``plan``, ``resume``, ``rerun``, ``cancel``,
``cleanup``, ``status``), declared once as ``Annotated`` aliases.

``-f`` means a file everywhere (``--script``), as in az; ``logs`` follows with ``--follow`` (long
form only). Global options (``-o``, ``--query``, ``-q``, ``-v``, ...) come from
:mod:`azrun.cli._globals`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

SRC = "Script"
PARAMS = "Parameters and identity"
FLEET = "Fleet behaviour"
OUT = "Output and state"

ScriptOpt = Annotated[Path | None, typer.Option(
    "--script", "-f", metavar="FILE", rich_help_panel=SRC,
    help="Script file for every selected machine (checked against each machine's OS), or a run manifest "
    "FILE.azrun.toml naming a script per OS ([scripts] linux = ..., windows = ...).")]
ScriptLinuxOpt = Annotated[Path | None, typer.Option(
    "--script-linux", metavar="FILE", rich_help_panel=SRC,
    help="Script for the Linux machines; with no --script-windows, Windows machines are skipped.")]
ScriptWindowsOpt = Annotated[Path | None, typer.Option(
    "--script-windows", metavar="FILE", rich_help_panel=SRC,
    help="Script for the Windows machines; with no --script-linux, Linux machines are skipped.")]
CommandOpt = Annotated[str | None, typer.Option(
    "--command", "-c", metavar="TEXT", rich_help_panel=SRC, help="Inline script text.")]
ScriptUriOpt = Annotated[str | None, typer.Option(
    "--script-uri", metavar="URL", rich_help_panel=SRC,
    help="Script downloaded by the VM (public, SAS, or with --script-uri-identity).")]
ScriptUriIdentityOpt = Annotated[str | None, typer.Option(
    "--script-uri-identity", metavar="system|CLIENT_ID", rich_help_panel=SRC,
    help="Managed identity the VM uses to download --script-uri.")]
CommandIdOpt = Annotated[str | None, typer.Option(
    "--command-id", metavar="ID", rich_help_panel=SRC,
    help="A built-in command (RunShellScript, RunPowerShellScript, ...).")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-p", metavar="NAME=VALUE", rich_help_panel=PARAMS,
    help="Script parameter (repeatable; never for secrets).")]
ParamFileOpt = Annotated[Path | None, typer.Option(
    "--param-file", metavar="FILE", rich_help_panel=PARAMS, help="TOML file of name = value (secret or not).")]
ProtectedOpt = Annotated[list[str] | None, typer.Option(
    "--protected-param", metavar="NAME", rich_help_panel=PARAMS,
    help="Send NAME as a protected parameter; value from AZRUN_PARAM_<NAME>, --param-file or a prompt.")]
RunAsOpt = Annotated[str | None, typer.Option(
    "--run-as", metavar="USER", rich_help_panel=PARAMS, help="Run the script as this user.")]
PasswordEnvOpt = Annotated[str | None, typer.Option(
    "--run-as-password-env", metavar="VAR", rich_help_panel=PARAMS,
    help="Environment variable holding the run-as password.")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--run-as-password-file", metavar="FILE", rich_help_panel=PARAMS, help="File holding the run-as password.")]
AskPasswordOpt = Annotated[bool, typer.Option(
    "--ask-run-as-password", rich_help_panel=PARAMS, help="Prompt for the run-as password.")]
TimeoutOpt = Annotated[str | None, typer.Option(
    "--timeout", metavar="DURATION", rich_help_panel=FLEET,
    help="Per-target script timeout (timeoutInSeconds): 90s, 10m, 2h. Default 1h.")]
SyncOpt = Annotated[bool, typer.Option(
    "--sync", rich_help_panel=FLEET,
    help="asyncExecution=false (the PUT waits for the script; only for short scripts).")]
ConcurrencyOpt = Annotated[str | None, typer.Option(
    "--max-concurrency", metavar="N|N%", rich_help_panel=FLEET, help="Targets in flight at once (default 50).")]
ErrorsOpt = Annotated[str | None, typer.Option(
    "--max-errors", metavar="N|N%", rich_help_panel=FLEET,
    help="Stop dispatching once errors exceed this (default 0).")]
CanaryOpt = Annotated[int, typer.Option(
    "--canary", metavar="N", rich_help_panel=FLEET,
    help="Run on N targets first; continue only if all succeed (the first wave of N,100%).")]
WavesOpt = Annotated[str | None, typer.Option(
    "--waves", metavar="PLAN", rich_help_panel=FLEET,
    help="Roll out in waves, each finished before the next: cumulative sizes 1,10%,50%,100%, or one wave "
    "per tag:KEY value, region, resource-group or subscription.")]
SoakOpt = Annotated[str | None, typer.Option(
    "--soak", metavar="DURATION", rich_help_panel=FLEET, help="Wait this long between waves (e.g. 10m).")]
WaveErrorsOpt = Annotated[str | None, typer.Option(
    "--wave-max-errors", metavar="N|N%", rich_help_panel=FLEET,
    help="Stop the rollout once a wave's errors exceed this (N% of the wave).")]
RetriesOpt = Annotated[int, typer.Option(
    "--retries", metavar="N", rich_help_panel=FLEET,
    help="Retry a target's delivery up to N times (agent not ready or never started, 409 Conflict, 5xx).")]
RetryFailedOpt = Annotated[bool, typer.Option(
    "--retry-failed-scripts", rich_help_panel=FLEET,
    help="With --retries, also run again a script that ran and failed or timed out.")]
StartTimeoutOpt = Annotated[str | None, typer.Option(
    "--start-timeout", metavar="DURATION", rich_help_panel=FLEET,
    help="Give up on a target whose script the VM agent has not started this long after dispatch (default 15m: "
    "a first run installs the handler).")]
KeepOpt = Annotated[bool, typer.Option(
    "--keep", rich_help_panel=FLEET,
    help="Keep the run command resources (default: delete each once finished).")]
GraceOpt = Annotated[str | None, typer.Option(
    "--watchdog-grace", metavar="DURATION", rich_help_panel=FLEET,
    help="A target still Running timeout+grace after its script started is canceled as TimedOut "
    "(default max(60s, 10%)).")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", rich_help_panel=FLEET, help="Show the plan (as 'azrun plan') and dispatch nothing.")]
OutputModeOpt = Annotated[str, typer.Option(
    "--output-mode", metavar="stream|summary|quiet|json", rich_help_panel=OUT,
    help="How targets' output lines are shown while the run goes (on stderr when -o is not table).")]
ContainerOpt = Annotated[str | None, typer.Option(
    "--output-container", metavar="URL", rich_help_panel=OUT,
    help="Blob container for full output (AZRUN_OUTPUT_CONTAINER).")]
AccountOpt = Annotated[str | None, typer.Option(
    "--storage-account", metavar="NAME", rich_help_panel=OUT,
    help="Storage account for output (container azrun-output).")]
BlobIdentityOpt = Annotated[str | None, typer.Option(
    "--blob-identity", metavar="system|CLIENT_ID", rich_help_panel=OUT,
    help="VMs write output with this managed identity instead of a SAS.")]
StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", metavar="DIR", rich_help_panel=OUT,
    help="Where the ledger lives (AZRUN_STATE_DIR; default $XDG_STATE_HOME/azrun).")]


ENGINE = "Engine"
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", metavar="local|durable", rich_help_panel=ENGINE,
    help="local: this process runs it (a local ledger). durable: schedule it on the Durable Task engine, "
    "run by `azrun worker` processes; prints the run id (AZRUN_ENGINE, default local).")]
FollowOpt = Annotated[bool, typer.Option(
    "--follow", "--wait", rich_help_panel=ENGINE,
    help="With --engine durable: follow the run live to its end (finished lines, summary, exit code).")]

def rollout_options(
    opts: Any, *, waves: str | None, soak: str | None, wave_max_errors: str | None, retries: int,
    retry_failed_scripts: bool, start_timeout: str | None,
) -> Any:
    """``opts`` (:class:`~azrun.fleet.FleetOptions`) with the rollout flags applied (one-line errors)."""
    from dataclasses import replace

    from azrun.config import parse_duration
    from azrun.errors import ConfigError
    from azrun.fleet import FleetOptions, WavePlan

    soak_s = parse_duration(soak, what="--soak") if soak else 0.0
    if waves is None and (soak or wave_max_errors):
        raise ConfigError("--soak and --wave-max-errors need --waves", hint="e.g. --waves 1,10%,100% --soak 10m")
    plan = WavePlan.parse(waves, soak_s=soak_s, max_errors=wave_max_errors) if waves is not None else None
    if retry_failed_scripts and retries <= 0:
        raise ConfigError("--retry-failed-scripts needs --retries N", hint="e.g. --retries 1 --retry-failed-scripts")
    changes: dict[str, Any] = {"waves": plan, "retries": retries, "retry_failed_scripts": retry_failed_scripts}
    if start_timeout is not None:
        changes["start_timeout_s"] = parse_duration(start_timeout, what="--start-timeout")
    # the library's checks (--canary with --waves, negative --retries or --start-timeout), one place
    FleetOptions.make(max_concurrency=opts.max_concurrency, max_errors=opts.max_errors, canary=opts.canary,
                      **changes)
    return replace(opts, **changes)
