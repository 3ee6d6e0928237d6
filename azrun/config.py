"""Settings: defaults < config file < ``AZRUN_*`` environment < flags.

The config file is TOML at ``$XDG_CONFIG_HOME/azrun/config.toml`` (or ``AZRUN_CONFIG``)::

    subscription = "00000000-..."        # or a list
    output_container = "https://acct.blob.core.windows.net/azrun-output"
    max_concurrency = "50"
    max_errors = "0"
    auth = "auto"                        # auto | msi | cli | device | env
    client_id = "..."                    # user-assigned identity

Each resolved value remembers where it came from, so ``azrun config show`` can say why a
setting has the value it has.
"""

from __future__ import annotations

import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azrun.errors import ConfigError

# key -> (environment variable, default)
KEYS: dict[str, tuple[str, Any]] = {
    "subscription": ("AZURE_SUBSCRIPTION_ID", None),
    "output_container": ("AZRUN_OUTPUT_CONTAINER", None),
    "storage_account": ("AZRUN_STORAGE_ACCOUNT", None),
    "storage_connection_string": ("AZRUN_STORAGE_CONNECTION_STRING", None),
    "max_concurrency": ("AZRUN_MAX_CONCURRENCY", "50"),
    "max_errors": ("AZRUN_MAX_ERRORS", "0"),
    "timeout": ("AZRUN_TIMEOUT", "3600"),
    "auth": ("AZRUN_AUTH", "auto"),
    "client_id": ("AZRUN_CLIENT_ID", None),
    "object_id": ("AZRUN_OBJECT_ID", None),
    "identity_resource_id": ("AZRUN_IDENTITY_RESOURCE_ID", None),
    "blob_identity": ("AZRUN_BLOB_IDENTITY", None),
    "state_dir": ("AZRUN_STATE_DIR", None),
    "throttle": ("AZRUN_THROTTLE", "on"),
}
SECRET_KEYS = frozenset({"storage_connection_string"})


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("AZRUN_CONFIG"):
        return Path(env["AZRUN_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "azrun" / "config.toml"


def state_dir(environ: Mapping[str, str] | None = None, override: str | None = None) -> Path:
    """Where the ledger lives: flag, ``AZRUN_STATE_DIR``, ``$XDG_STATE_HOME/azrun``."""
    env = os.environ if environ is None else environ
    if override:
        return Path(override)
    if env.get("AZRUN_STATE_DIR"):
        return Path(env["AZRUN_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "azrun"


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    source: str  # "default" | "config" | "env" | "flag"


@dataclass(frozen=True, slots=True)
class Settings:
    values: dict[str, Setting] = field(default_factory=dict)
    path: Path | None = None

    def get(self, key: str) -> Any:
        setting = self.values.get(key)
        return setting.value if setting else None

    def show(self) -> list[tuple[str, str, str]]:
        """(key, value, source) rows with secrets masked."""
        rows = []
        for key in KEYS:
            s = self.values[key]
            shown = "(set)" if key in SECRET_KEYS and s.value else ("" if s.value is None else str(s.value))
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
        env = os.environ if environ is None else environ
        cfg_path = path or config_path(env)
        file_values = _read_file(cfg_path)
        values: dict[str, Setting] = {}
        for key, (var, default) in KEYS.items():
            setting = Setting(default, "default")
            if key in file_values:
                setting = Setting(file_values[key], "config")
            if env.get(var):
                setting = Setting(env[var], "env")
            if flags and flags.get(key) not in (None, (), []):
                setting = Setting(flags[key], "flag")
            values[key] = setting
        return cls(values=values, path=cfg_path)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", hint="fix or remove the file") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(unknown)}",
            hint=f"known keys: {', '.join(KEYS)}",
        )
    return data
