"""One run, a script per OS (as an AWS SSM document carries one per platform).

Where the scripts come from:

* ``--script-linux FILE`` / ``--script-windows FILE``: a script for each OS; a machine whose OS has
  none ends ``Skipped: no script for Windows`` (or Linux) without being touched;
* ``-f run.azrun.toml``: a run manifest naming both, paths relative to it::

      [scripts]
      linux = "patch.sh"
      windows = "patch.ps1"

* ``-f FILE`` / ``-c TEXT``: one script for every selected machine. What it looks like is checked
  against each machine's OS before anything runs: a ``.ps1``/``.cmd``/``.bat`` file or a
  PowerShell-looking body going to Linux, or a ``.sh`` file or a ``#!`` (bash, sh, python, ...)
  script going to Windows, is refused with the machines named and a fix. A script that could be
  either (``echo hi``) goes everywhere.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from azrun.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from azrun.models import SkippedTarget, Target
    from azrun.targets import Selection

__all__ = ["OS_NAMES", "OsScripts", "looks_like", "split_by_os"]

OS_NAMES = {"linux": "Linux", "windows": "Windows"}
_WINDOWS_EXT = (".ps1", ".psm1", ".cmd", ".bat")
_LINUX_EXT = (".sh", ".bash", ".zsh", ".ksh")
_POWERSHELL = re.compile(
    r"(?im)^\s*(param\s*\(|\[CmdletBinding|Write-(Host|Output|Error)\b|Get-[A-Z][A-Za-z]+|Set-[A-Z][A-Za-z]+|"
    r"New-[A-Z][A-Za-z]+|Import-Module\b|\$env:[A-Za-z_]|\$[A-Za-z_]+\s*=\s*Get-|@echo\s+off\b)"
)


def looks_like(text: str, name: str = "") -> str | None:
    """``"linux"``, ``"windows"`` or None (could be either) for a script's name and body."""
    lower = name.lower()
    if lower.endswith(_WINDOWS_EXT):
        return "windows"
    if lower.endswith(_LINUX_EXT):
        return "linux"
    first = text.lstrip("\ufeff").lstrip().split("\n", 1)[0]
    if first.startswith("#!"):
        return "windows" if "pwsh" in first or "powershell" in first.lower() else "linux"
    if _POWERSHELL.search(text):
        return "windows"
    return None


@dataclass(frozen=True)
class OsScripts:
    """The script text (and file name) each OS gets; ``any_os`` for a single script."""

    linux: tuple[str, str] | None = None  # (text, name)
    windows: tuple[str, str] | None = None
    any_os: tuple[str, str] | None = None
    paths: tuple[tuple[str, str], ...] = ()  # (os, path) for the ledger

    @property
    def per_os(self) -> bool:
        return self.any_os is None

    def for_os(self, os_name: str) -> tuple[str, str] | None:
        if self.any_os is not None:
            return self.any_os
        return self.linux if os_name.lower() == "linux" else self.windows if os_name.lower() == "windows" else None

    @classmethod
    def from_files(cls, linux: Path | None, windows: Path | None) -> OsScripts:
        from azrun.cli._run_inputs import read_script

        def load(path: Path | None, os_name: str) -> tuple[str, str] | None:
            if path is None:
                return None
            path = path.expanduser().resolve()
            text = read_script(path)
            seen = looks_like(text, path.name)
            if seen is not None and seen != os_name:
                raise ConfigError(
                    f"--script-{os_name} {path.name} looks like a {OS_NAMES[seen]} script",
                    hint=f"give it as --script-{seen} {path.name}",
                )
            return text, path.name

        paths = tuple((o, str(p.expanduser().resolve())) for o, p in (("linux", linux), ("windows", windows)) if p)
        return cls(linux=load(linux, "linux"), windows=load(windows, "windows"), paths=paths)

    @classmethod
    def from_manifest(cls, path: Path) -> OsScripts:
        """A run manifest (``[scripts] linux = ..., windows = ...``), paths relative to it."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read run manifest {path.name}: {exc}", hint="check the TOML") from exc
        scripts = data.get("scripts")
        if not isinstance(scripts, dict) or not set(scripts) & {"linux", "windows"}:
            raise ConfigError(f"run manifest {path.name} names no scripts",
                              hint='add [scripts] with linux = "FILE" and/or windows = "FILE"')
        unknown = set(scripts) - {"linux", "windows"}
        if unknown:
            raise ConfigError(f"run manifest {path.name}: unknown OS {', '.join(sorted(unknown))}",
                              hint="the keys of [scripts] are linux and windows")
        base = path.resolve().parent
        return cls.from_files(*((base / str(scripts[k])) if scripts.get(k) else None for k in ("linux", "windows")))


def is_run_manifest(path: Path) -> bool:
    return path.name.endswith(".azrun.toml")


def split_by_os(selection: Selection, scripts: OsScripts) -> tuple[Selection, tuple[SkippedTarget, ...]]:
    """The selection with machines that have no script for their OS moved to ``skipped``
    (``no script for Windows``); an obvious mismatch of a single script is refused."""
    from dataclasses import replace

    from azrun.models import SkippedTarget

    if scripts.any_os is not None:
        text, name = scripts.any_os
        seen = looks_like(text, name)
        wrong = [t for t in selection.targets if seen is not None and _os(t) not in (seen, "")]
        if wrong:
            other = _os(wrong[0])
            names = ", ".join(t.name for t in wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
            raise ConfigError(
                f"{name or 'the script'} looks like a {OS_NAMES[seen or 'linux']} script but {len(wrong)} selected "
                f"machine(s) run {OS_NAMES.get(other, other)}: {names}",
                hint=f"add --os {seen}, or give --script-{seen} {name or 'FILE'} and --script-{other} FILE "
                f"(machines without a script for their OS are skipped)",
            )
        return selection, ()
    keep: list[Target] = []
    skipped: list[SkippedTarget] = []
    for t in selection.targets:
        if scripts.for_os(_os(t)) is None:
            skipped.append(SkippedTarget(t, f"no script for {OS_NAMES.get(_os(t), t.os or 'this OS')}"))
        else:
            keep.append(t)
    new = replace(selection, targets=tuple(keep), skipped=(*selection.skipped, *skipped))
    return new, tuple(skipped)


def _os(target: Target) -> str:
    return (target.os or "").lower()
