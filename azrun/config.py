"""Settings: one resolution for the CLI and the library: flags > environment > config file > defaults.

The config file is TOML at ``$XDG_CONFIG_HOME/azrun/config.toml`` (``%APPDATA%\\azrun\\config.toml``
on Windows; ``AZRUN_CONFIG`` names another)::

    subscription = "00000000-..."        # or a list
    output_container = "https://acct.blob.core.windows.net/azrun-output"
    max_concurrency = "50"
    max_errors = "0"
    timeout = "30m"                      # a duration, as --timeout takes it
    auth = "auto"                        # auto | msi | cli | device | interactive | env
    client_id = "..."                    # user-assigned identity

:data:`SETTINGS` is the one table of keys, variables and defaults; ``azrun config show``,
``azrun run`` and :meth:`azrun.Fleet.from_env` all resolve through :meth:`Settings.load`, so a
Function gets exactly what a terminal gets. Every value is parsed and checked by the same parser
whatever layer it comes from (``timeout = "5m"`` in the file, ``AZRUN_TIMEOUT=5m`` and
``--timeout 5m`` mean the same), and each resolved value remembers where it came from.

Keys in a *group* are resolved together: the highest layer that sets any key of the group sets
the whole group. So ``--storage-account X`` wins over ``AZRUN_OUTPUT_CONTAINER`` from the
environment, and ``--object-id`` over ``AZRUN_CLIENT_ID``: a lower layer never half-overrides a
choice made above it.

This module and the ``from_env`` classmethods are the only places that read the environment.
"""

from __future__ import annotations

import math
import os
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.auth import IdentitySelector
    from azrun.clients import ClientFactory

__all__ = [
    "DEFAULT_ENGINE",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "ENGINES",
    "KEYS",
    "MAX_TIMEOUT_S",
    "SETTINGS",
    "OutputChoice",
    "Setting",
    "SettingKey",
    "Settings",
    "config_path",
    "default_state_dir",
    "parse_budget",
    "parse_duration",
    "parse_timeout",
    "state_dir",
]

# -- defaults, written once ----------------------------------------------------------------------
DEFAULT_MAX_CONCURRENCY = "50"
DEFAULT_MAX_ERRORS = "0"
DEFAULT_TIMEOUT_S = 3600
#: How long a dispatched script may wait for the VM agent to pick it up (its reported start)
#: before azrun gives up on it: a VM's first run command installs the handler, which takes minutes.
DEFAULT_START_TIMEOUT_S = 900
DEFAULT_AUTH = "auto"
#: Which engine ``azrun run`` uses: ``local`` (this process, a local ledger) or ``durable``
#: (scheduled on the Durable Task engine, served by ``azrun worker`` processes).
ENGINES = ("local", "durable")
DEFAULT_ENGINE = "local"
#: The output blobs' SAS and a user delegation key live at most 7 days; a run's SAS must cover
#: its timeout + the watchdog grace (10 %) + a 1 h margin, so 6 days is the longest honest timeout.
SAS_MAX_LIFETIME_S = 7 * 24 * 3600
MAX_TIMEOUT_S = 6 * 24 * 3600

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]?\s*)+$", re.IGNORECASE)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_duration(raw: object, *, what: str) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` -> seconds (a bare number is seconds).

    Raises:
        ConfigError: not a duration (``what`` names where it came from: a flag, a variable, a file).
    """
    if isinstance(raw, bool):
        raise ConfigError(f"{what} {raw!r} is not a duration", hint="e.g. 90s, 10m, 2h, 7d")
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw)
    if not _DURATION.match(text):
        raise ConfigError(f"{what} {text!r} is not a duration", hint="e.g. 90s, 10m, 1h30m, 2h, 7d")
    return sum(float(n) * _UNIT_S[unit.lower()] for n, unit in _DURATION_PART.findall(text))


def _fmt_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_timeout(raw: object, *, what: str = "--timeout") -> int:
    """A script timeout in whole seconds, 1 s to :data:`MAX_TIMEOUT_S`.

    ``0`` is refused (Azure reads ``timeoutInSeconds=0`` as *no timeout*, which would also need a
    SAS longer than storage allows), as are fractions (``0.5s`` would round to 0) and anything
    over 6 days: the output blobs' SAS and the user delegation key that signs it last at most
    7 days and must cover the timeout, the watchdog's grace and a margin.
    """
    seconds = parse_duration(raw, what=what)
    if seconds <= 0:
        raise ConfigError(
            f"{what} {raw!r}: a timeout must be positive (0 would mean no timeout at all)",
            hint=f"give a duration such as 30m; the largest is {_fmt_duration(MAX_TIMEOUT_S)}",
        )
    if seconds != math.floor(seconds):
        raise ConfigError(
            f"{what} {raw!r}: Azure takes the timeout in whole seconds", hint="e.g. 1s, 90s, 10m"
        )
    if seconds > MAX_TIMEOUT_S:
        raise ConfigError(
            f"{what} {raw!r} is longer than the largest honest timeout, {_fmt_duration(MAX_TIMEOUT_S)}: "
            "the output blobs' SAS (and the user delegation key signing it) lasts at most 7 days "
            "and must cover the timeout, the watchdog's grace (10%) and a 1h margin",
            hint=f"use at most {_fmt_duration(MAX_TIMEOUT_S)}; split longer work into several runs",
        )
    return int(seconds)


def parse_budget(raw: object, *, what: str, allow_zero: bool) -> str:
    """``N`` or ``N%`` (validated) as text; ``allow_zero=False`` for concurrency."""
    text = str(raw).strip() if not isinstance(raw, bool) else ""
    found = _BUDGET.match(text)
    if not found:
        raise ConfigError(f"{what} must be N or N%, got {raw!r}", hint="e.g. 50, 10%")
    value, pct = float(found.group(1)), bool(found.group(2))
    if pct and value > 100:
        raise ConfigError(f"{what} over 100%: {raw!r}", hint="use at most 100%")
    if not pct and value != int(value):
        raise ConfigError(f"{what} must be a whole number, got {raw!r}", hint="e.g. 50, 10%")
    if value == 0 and not allow_zero:
        raise ConfigError(
            f"{what} {text}: nothing could ever run", hint="use at least 1 (or a percentage above 0%)"
        )
    return f"{value:g}%" if pct else str(int(value))


def _text(raw: object, *, what: str) -> str:
    if isinstance(raw, bool | dict | list):
        raise ConfigError(f"{what} must be text, got {raw!r}", hint="quote the value")
    return str(raw).strip()


def _subscriptions(raw: object, *, what: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    found = tuple(str(s).strip() for s in items if str(s).strip())
    if not found:
        raise ConfigError(f"{what} names no subscription", hint="a subscription id, or several separated by commas")
    return found


def _choice(*allowed: str) -> Callable[..., str]:
    def parse(raw: object, *, what: str) -> str:
        text = _text(raw, what=what).lower()
        if text not in allowed:
            raise ConfigError(f"{what} {raw!r} is not one of {', '.join(allowed)}", hint=f"use one of: {', '.join(allowed)}")
        return text

    return parse


def _on_off(raw: object, *, what: str) -> str:
    if isinstance(raw, bool):
        return "on" if raw else "off"
    text = _text(raw, what=what).lower()
    if text in ("on", "1", "true", "yes"):
        return "on"
    if text in ("off", "0", "false", "no"):
        return "off"
    raise ConfigError(f"{what} {raw!r} is not on or off", hint="use on or off")


@dataclass(frozen=True, slots=True)
class SettingKey:
    """One setting: its variables (first wins), default, parser and group."""

    name: str
    env: tuple[str, ...]
    default: Any
    parse: Callable[..., Any] = _text
    group: str | None = None
    secret: bool = False


#: The one table of settings. Variables are read in order (``AZRUN_CLIENT_ID`` before
#: ``AZURE_CLIENT_ID``, the variable azure-identity users set for a user-assigned identity).
SETTINGS: tuple[SettingKey, ...] = (
    SettingKey("subscription", ("AZURE_SUBSCRIPTION_ID", "AZRUN_SUBSCRIPTION"), None, _subscriptions),
    SettingKey("output_container", ("AZRUN_OUTPUT_CONTAINER",), None, group="output"),
    SettingKey("storage_account", ("AZRUN_STORAGE_ACCOUNT",), None, group="output"),
    SettingKey("storage_connection_string", ("AZRUN_STORAGE_CONNECTION_STRING",), None, secret=True),
    SettingKey("max_concurrency", ("AZRUN_MAX_CONCURRENCY",), DEFAULT_MAX_CONCURRENCY,
               lambda raw, what: parse_budget(raw, what=what, allow_zero=False)),
    SettingKey("max_errors", ("AZRUN_MAX_ERRORS",), DEFAULT_MAX_ERRORS,
               lambda raw, what: parse_budget(raw, what=what, allow_zero=True)),
    SettingKey("timeout", ("AZRUN_TIMEOUT",), DEFAULT_TIMEOUT_S, parse_timeout),
    SettingKey("auth", ("AZRUN_AUTH",), DEFAULT_AUTH, _choice("auto", "msi", "cli", "device", "interactive", "env")),
    SettingKey("client_id", ("AZRUN_CLIENT_ID", "AZURE_CLIENT_ID"), None, group="identity"),
    SettingKey("object_id", ("AZRUN_OBJECT_ID",), None, group="identity"),
    SettingKey("identity_resource_id", ("AZRUN_IDENTITY_RESOURCE_ID",), None, group="identity"),
    SettingKey("blob_identity", ("AZRUN_BLOB_IDENTITY",), None),
    SettingKey("state_dir", ("AZRUN_STATE_DIR",), None),
    SettingKey("throttle", ("AZRUN_THROTTLE",), "on", _on_off),
    # the durable engine (azrun worker, azrun durable): a Durable Task Scheduler endpoint
    # (https://...) or a local scheduler's host:port, and the task hub
    SettingKey("durable_endpoint", ("AZRUN_DURABLE_ENDPOINT",), None),
    SettingKey("durable_taskhub", ("AZRUN_DURABLE_TASKHUB",), "default"),
    SettingKey("engine", ("AZRUN_ENGINE",), DEFAULT_ENGINE, _choice(*ENGINES)),
)  # fmt: skip
_BY_NAME = {key.name: key for key in SETTINGS}
#: key -> (its main environment variable, default): what ``azrun config show`` lists.
KEYS: dict[str, tuple[str, Any]] = {key.name: (key.env[0], key.default) for key in SETTINGS}
SECRET_KEYS = frozenset(key.name for key in SETTINGS if key.secret)
#: Variables that make ``AZURE_CLIENT_ID`` a service principal's id, not a managed identity's.
_SERVICE_PRINCIPAL_VARS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE")


# -- places ------------------------------------------------------------------------------------------
def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``AZRUN_CONFIG``, else the platform's config dir: ``$XDG_CONFIG_HOME/azrun/config.toml``
    (``~/.config``), ``%APPDATA%\\azrun\\config.toml`` on Windows."""
    env = os.environ if environ is None else environ
    if env.get("AZRUN_CONFIG"):
        return Path(env["AZRUN_CONFIG"])
    if sys.platform == "win32":
        base = env.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
    else:
        base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "azrun" / "config.toml"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The platform's state dir: ``$XDG_STATE_HOME/azrun`` (``~/.local/state``),
    ``%LOCALAPPDATA%\\azrun\\state`` on Windows, ``~/Library/Application Support/azrun`` on macOS."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32":
        return Path(env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")) / "azrun" / "state"
    if sys.platform == "darwin" and not env.get("XDG_STATE_HOME"):
        return Path.home() / "Library" / "Application Support" / "azrun"
    return Path(env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")) / "azrun"


def azure_cli_default(environ: Mapping[str, str] | None = None) -> str | None:
    """The Azure CLI's default subscription id (``az account set``: ``isDefault`` in
    ``$AZURE_CONFIG_DIR/azureProfile.json``, default ``~/.azure``), or None (no profile, not
    logged in, unreadable)."""
    import json

    env = os.environ if environ is None else environ
    base = env.get("AZURE_CONFIG_DIR") or str(Path(env.get("HOME") or Path.home()) / ".azure")
    try:
        data = json.loads((Path(base) / "azureProfile.json").read_text(encoding="utf-8-sig"))  # az writes a BOM
    except (OSError, ValueError):
        return None
    for sub in data.get("subscriptions") or () if isinstance(data, dict) else ():
        if isinstance(sub, dict) and sub.get("isDefault") and sub.get("id"):
            return str(sub["id"])
    return None


def state_dir(environ: Mapping[str, str] | None = None, override: str | Path | None = None) -> Path:
    """Where the ledger lives: ``override`` (the flag), else the resolved ``state_dir`` setting."""
    return Settings.load(environ=environ, flags={"state_dir": str(override)} if override else None).state_dir()


# -- resolution --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setting:
    """A resolved value and the layer it came from (``default``, ``config``, ``env`` or ``flag``);
    ``origin`` names the variable or file key."""

    value: Any
    source: str
    origin: str = ""


@dataclass(frozen=True, slots=True)
class OutputChoice:
    """Where full output goes: a container URL (or an account whose ``azrun-output`` container is
    meant), the key to use if any, and whether the VMs write with their managed identity."""

    container_url: str | None = None
    storage_account: str | None = None
    connection_string: str | None = field(default=None, repr=False)
    blob_identity: str | None = None

    def url(self, storage_suffix: str) -> str | None:
        """The container URL, derived from the account or connection string when not given."""
        from azrun.output._connect import container_url_for

        return container_url_for(
            output_container=self.container_url, storage_account=self.storage_account,
            connection_string=self.connection_string, storage_suffix=storage_suffix,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting resolved; build with :meth:`load`. ``get`` returns parsed values."""

    values: dict[str, Setting] = field(default_factory=dict)
    path: Path | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    _file: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> Any:
        setting = self.values.get(key)
        return setting.value if setting else None

    def source(self, key: str) -> str:
        return self.values[key].source

    def show(self) -> list[tuple[str, str, str]]:
        """(key, value, source) rows with secrets masked."""
        rows = []
        for key in KEYS:
            s = self.values[key]
            value = ",".join(s.value) if isinstance(s.value, tuple) else s.value
            shown = "(set)" if key in SECRET_KEYS and value else ("" if value is None else str(value))
            rows.append((key, shown, s.source))
        return rows

    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
        path: Path | None = None,
    ) -> Settings:
        """Resolve every setting: ``flags`` (keys of :data:`KEYS`; ``None`` = not given) over
        ``environ`` (default ``os.environ``) over the config file over the defaults.

        Raises:
            ConfigError: an unknown key, or a value its parser refuses (named with its layer).
        """
        env = dict(os.environ if environ is None else environ)
        cfg_path = path or config_path(env)
        return cls._resolve(env, cfg_path, _read_file(cfg_path), dict(flags or {}))

    def with_flags(self, **flags: Any) -> Settings:
        """The same environment and file with these flags on top (``None`` = not given)."""
        merged = {k: v.value for k, v in self.values.items() if v.source == "flag"}
        merged.update({k: v for k, v in flags.items() if v is not None})
        return self._resolve(dict(self.environ), self.path, self._file, merged)

    @classmethod
    def _resolve(
        cls, env: dict[str, str], cfg_path: Path | None, file_values: Mapping[str, Any], flags: dict[str, Any]
    ) -> Settings:
        unknown = sorted(set(flags) - set(_BY_NAME))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}", hint=f"settings: {', '.join(KEYS)}")
        layers: list[tuple[str, dict[str, tuple[Any, str]]]] = [
            ("flag", {k: (v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v not in (None, (), [], "")}),
            ("env", _env_layer(env)),
            ("config", {k: (v, f"{k} in {cfg_path}") for k, v in file_values.items()}),
        ]
        chosen: dict[str, Setting] = {}
        for key in SETTINGS:
            members = [k for k in SETTINGS if k.group == key.group] if key.group else [key]
            for source, layer in layers:
                if any(m.name in layer for m in members):
                    if key.name in layer:
                        raw, origin = layer[key.name]
                        chosen[key.name] = Setting(key.parse(raw, what=origin), source, origin)
                    else:  # a sibling was set here: this key is not taken from a lower layer
                        chosen[key.name] = Setting(None, source, "")
                    break
            else:
                chosen[key.name] = Setting(key.default, "default")
        return cls(values=chosen, path=cfg_path, environ=env, _file=dict(file_values))

    # -- typed views: what the CLI and Fleet.from_env build from -----------------------------------
    def subscriptions(self) -> tuple[str, ...]:
        """The subscription scope when a selector names none: the setting (flag,
        ``AZURE_SUBSCRIPTION_ID``, config file), else, when azrun may use the Azure CLI's login
        (auth ``auto`` or ``cli``), the Azure CLI's default subscription, as ``az`` does."""
        value = self.get("subscription")
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value if str(v).strip())
        if value:
            return tuple(v.strip() for v in str(value).split(",") if v.strip())
        if self.auth_mode() in ("auto", "cli"):
            default = azure_cli_default(self.environ)
            return (default,) if default else ()
        return ()

    def identity(self) -> IdentitySelector | None:
        """The user-assigned identity named, or None (system-assigned, or the login's own)."""
        from azrun.auth import IdentitySelector

        chosen = IdentitySelector(
            client_id=self.get("client_id") or None, object_id=self.get("object_id") or None,
            resource_id=self.get("identity_resource_id") or None,
        )  # fmt: skip
        return None if chosen.is_system_assigned else chosen

    def auth_mode(self) -> str:
        return str(self.get("auth") or DEFAULT_AUTH)

    def output(self) -> OutputChoice | None:
        """The output storage named, or None (instance view only: last 4 KB)."""
        choice = OutputChoice(
            container_url=self.get("output_container") or None, storage_account=self.get("storage_account") or None,
            connection_string=self.get("storage_connection_string") or None,
            blob_identity=self.get("blob_identity") or None,
        )  # fmt: skip
        if not (choice.container_url or choice.storage_account or choice.connection_string):
            return None
        return choice

    def state_dir(self) -> Path:
        value = self.get("state_dir")
        return Path(value).expanduser() if value else default_state_dir(self.environ)

    def timeout_s(self) -> int:
        return int(self.get("timeout") or DEFAULT_TIMEOUT_S)

    def max_concurrency(self) -> str:
        return str(self.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY)

    def max_errors(self) -> str:
        value = self.get("max_errors")
        return DEFAULT_MAX_ERRORS if value is None else str(value)

    def engine(self) -> str:
        """``local`` or ``durable`` (``--engine``, ``AZRUN_ENGINE``, ``engine`` in the config file)."""
        return str(self.get("engine") or DEFAULT_ENGINE)

    def client_factory(self) -> ClientFactory:
        """A :class:`~azrun.clients.ClientFactory` for this environment, identity and auth mode."""
        from azrun.clients import ClientFactory

        return ClientFactory.from_env(
            self.environ, identity=self.identity(), auth_mode=self.auth_mode(),
            throttle=self.get("throttle") != "off",
        )  # fmt: skip


def _env_layer(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    service_principal = any(env.get(v) for v in _SERVICE_PRINCIPAL_VARS)
    for key in SETTINGS:
        for var in key.env:
            if var == "AZURE_CLIENT_ID" and service_principal:
                continue  # a service principal's own id, not a managed identity to pick
            if env.get(var, "").strip():
                found[key.name] = (env[var].strip(), var)
                break
    return found


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", hint="fix or remove the file") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(KEYS)}",
        )
    return data
