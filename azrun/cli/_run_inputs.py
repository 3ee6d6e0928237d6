"""What the run commands turn flags into: the script source, parameters and secrets, settings,
the output store and the fleet (the run's session and its Ctrl-C protocol are :mod:`azrun.cli._session`).

Secrets never come from argv: protected parameter values come from ``AZRUN_PARAM_<NAME>``,
``--param-file`` or a prompt; the run-as password from ``--run-as-password-env VAR``,
``--run-as-password-file FILE``, ``AZRUN_RUN_AS_PASSWORD`` or a prompt.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azrun.errors import ConfigError

__all__ = [
    "fleet_options",
    "gather_parameters",
    "interactive",
    "load_settings",
    "make_fleet",
    "open_ledger",
    "open_output",
    "read_script",
    "recorded_spec",
    "resolve_state_dir",
    "run_as_password",
    "run_timeout_s",
    "say",
    "script_manifest",
    "script_source",
    "secret_prompt",
]

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.fleet import Fleet
    from azrun.ledger import Ledger, RunRecord
    from azrun.models import RunSpec
    from azrun.output import OutputStore


def interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def resolve_state_dir(override: Path | None) -> Path:
    """``--state-dir``, else the ``state_dir`` setting (env, config file), else the platform's."""
    return load_settings(state_dir=str(override) if override else None).state_dir()


def open_ledger(override: Path | None) -> Ledger:
    from azrun.ledger import Ledger

    return Ledger.open(resolve_state_dir(override))


def read_script(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --script {path}: {exc.strerror}", hint="check the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--script {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                          hint="save it as UTF-8 (PowerShell: Set-Content -Encoding utf8)") from exc


def script_source(
    script: Path | None, command: str | None, script_uri: str | None, command_id: str | None, *, required: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RunSpec source kwargs, what the ledger records about the source: never the text)."""
    given = [x for x in (script, command, script_uri, command_id) if x]
    if len(given) > 1:
        raise ConfigError("give only one of --script, --command, --script-uri, --command-id",
                          hint="one script per run")
    if not given:
        if required:
            raise ConfigError("no script given", hint="use --script FILE, --command TEXT, --script-uri URL or --command-id ID")
        return {}, {}
    if script is not None:
        path = script.expanduser().resolve()
        return ({"script": read_script(path), "script_name": path.name},
                {"source": {"kind": "file", "path": str(path)}})
    if command is not None:
        return {"script": command, "script_name": "inline"}, {"source": {"kind": "inline"}}
    if script_uri is not None:
        return ({"script_uri": script_uri, "script_name": script_uri.split("?", 1)[0].rsplit("/", 1)[-1]},
                {"source": {"kind": "uri", "signed": "?" in script_uri}})
    return {"command_id": command_id, "script_name": command_id or ""}, {"source": {"kind": "command-id"}}


def script_manifest(source: dict[str, Any], script: Path | None) -> Any:
    from azrun.manifest import Manifest

    if script is not None:
        return Manifest.for_script(script.expanduser().resolve())
    if source.get("script"):
        return Manifest.parse(source["script"], None, script_name="inline")
    return Manifest()


def secret_prompt(label: str) -> str:
    return getpass.getpass(f"{label}: ", stream=sys.stderr)


def gather_parameters(
    manifest: Any, params: list[str] | None, param_file: Path | None, protected: list[str] | None, *,
    required_protected: list[str] | None = None,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(public, protected) parameters from --param, --param-file, AZRUN_PARAM_*, prompts."""
    from azrun.manifest import resolve_parameters

    on_tty = interactive()
    bound = resolve_parameters(
        manifest, argv_params=params or (), param_file=param_file, environ=os.environ,
        prompt=(lambda spec: secret_prompt(f"value of secret parameter {spec.name}")) if on_tty else None,
    )  # fmt: skip
    secret = dict(bound.protected)
    for name in [*(protected or ()), *(required_protected or ())]:
        if name in secret:
            continue
        value = os.environ.get(f"AZRUN_PARAM_{name.upper()}") or os.environ.get(f"AZRUN_PARAM_{name}")
        if not value and on_tty:
            value = secret_prompt(f"value of protected parameter {name}")
        if not value:
            raise ConfigError(f"no value for protected parameter {name}",
                              hint=f"set AZRUN_PARAM_{name.upper()}, use --param-file, or run on a terminal to be prompted")
        secret[name] = value
    return bound.parameters, tuple(secret.items())


def run_as_password(run_as: str | None, env_var: str | None, file: Path | None, ask: bool, *, required: bool = False) -> str | None:
    if not run_as:
        if env_var or file or ask:
            raise ConfigError("a run-as password needs --run-as USER", hint="add --run-as USER")
        return None
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read --run-as-password-file: {exc.strerror}", hint="check the path") from exc
    if env_var:
        if not os.environ.get(env_var):
            raise ConfigError(f"--run-as-password-env {env_var}: the variable is not set", hint=f"export {env_var}")
        return os.environ[env_var]
    if os.environ.get("AZRUN_RUN_AS_PASSWORD"):
        return os.environ["AZRUN_RUN_AS_PASSWORD"]
    if ask or required:
        if not interactive():
            raise ConfigError("the run-as password is needed and there is no terminal to ask",
                              hint="use --run-as-password-env VAR or --run-as-password-file FILE")
        return secret_prompt(f"password for {run_as}")
    return None


def load_settings(**flags: Any) -> Settings:
    """The one settings resolution (:mod:`azrun.config`) with these flags on top (None = not given)."""
    from azrun.config import Settings

    return Settings.load(flags={k: v for k, v in flags.items() if v is not None})


def run_timeout_s(flag: str | None, manifest_timeout_s: int | None, settings: Settings) -> int:
    """``--timeout``, else the script manifest's ``timeout``, else the setting (env, file, default);
    every source through the same parser and limits (:func:`azrun.config.parse_timeout`)."""
    from azrun.config import parse_timeout

    if flag:
        return parse_timeout(flag, what="--timeout")
    if manifest_timeout_s:
        return parse_timeout(manifest_timeout_s, what="the script manifest's timeout")
    return settings.timeout_s()


async def open_output(settings: Settings, factory: ClientFactory, mode: str) -> OutputStore | None:
    from azrun.output import NO_STORAGE_NOTICE, OutputStore

    choice = settings.output()
    url = choice.url(factory.cloud.storage_suffix) if choice else None
    store = None
    if choice is not None and url is not None:
        store = await OutputStore.open(container_url=url, factory=factory, connection_string=choice.connection_string,
                                       blob_identity=choice.blob_identity)
    if store is None and mode != "quiet":
        say(f"note: {NO_STORAGE_NOTICE}")
    return store


def make_fleet(factory: ClientFactory, state_dir: Path | None, store: OutputStore | None, settings: Settings) -> Fleet:
    """The same construction as :meth:`azrun.Fleet.from_env`, from the CLI's settings."""
    from azrun.fleet import Fleet

    if state_dir is not None:
        settings = settings.with_flags(state_dir=str(state_dir))
    return Fleet.from_env(settings=settings, factory=factory, output=store, engine_loop="caller")  # its loop is azrun's


def fleet_options(settings: Settings, max_concurrency: str | None, max_errors: str | None, canary: int, keep: bool,
             grace: str | None) -> Any:
    from azrun.config import parse_duration
    from azrun.fleet import FleetOptions

    chosen = settings.with_flags(max_concurrency=max_concurrency, max_errors=max_errors)
    return FleetOptions.make(
        max_concurrency=chosen.max_concurrency(), max_errors=chosen.max_errors(), canary=canary, keep=keep,
        watchdog_grace_s=parse_duration(grace, what="--watchdog-grace") if grace else None,
    )  # fmt: skip


def recorded_spec(
    record: RunRecord, *, script: Path | None, command: str | None, script_uri: str | None,
    param_file: Path | None, run_as_password_env: str | None, run_as_password_file: Path | None,
    new_script_ok: bool = False,
) -> RunSpec:
    """The recorded run's spec with its script (from the flags or the recorded file) and secrets.

    The script must hash as recorded (resume), unless ``new_script_ok`` and it was given on the
    command line (``rerun --script fixed.sh``: a new run may run a fixed script).
    """
    from azrun.fleet import respec

    src, _ = script_source(script, command, script_uri, None, required=False)
    same = not (new_script_ok and src)
    if not src:
        stored = record.options.get("source") or {}
        if stored.get("kind") == "file" and stored.get("path"):
            path = Path(stored["path"])
            if not path.is_file():
                raise ConfigError(f"run {record.id}'s script {path} is gone",
                                  hint="pass the same script with --script FILE")
            src = {"script": read_script(path)}
    names = list(record.spec.get("protected_parameter_names", []))
    from azrun.manifest import Manifest

    _, protected = gather_parameters(Manifest(), None, param_file, None, required_protected=names)
    password = None
    if record.options.get("password"):
        password = run_as_password(record.spec.get("run_as_user"), run_as_password_env, run_as_password_file,
                             False, required=True)
    return respec(record.spec, run_id=record.id, script=src.get("script"), script_uri=src.get("script_uri"),
                  protected=dict(protected), run_as_password=password,
                  password_required=bool(record.options.get("password")), same_script=same)


