"""``azrun config show``: every setting, its value, and where that value came from.

Settings resolve as defaults < config file < ``AZRUN_*`` environment < flags
(:mod:`azrun.config`); when a run picks up a surprising subscription or concurrency, this says
which layer set it. Secret settings show as ``(set)`` and every value passes through
:func:`azrun.redact.redact`, so a container URL pasted with a SAS never prints its signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

config_app = typer.Typer(
    help="Show the resolved configuration and where each value comes from.", no_args_is_help=True,
    epilog="Example: azrun config show -o json",
)


def register(app: typer.Typer) -> None:
    from azrun.cli._globals import with_global_options

    config_app.command("show")(with_global_options(config_show))
    app.add_typer(config_app, name="config")


def parse_set_flags(items: list[str]) -> dict[str, str]:
    """``["max-concurrency=10"]`` -> ``{"max_concurrency": "10"}``, rejecting unknown keys."""
    from azrun.config import KEYS
    from azrun.errors import ConfigError
    from azrun.manifest import parse_param_args

    flags: dict[str, str] = {}
    for key, value in parse_param_args(items).items():
        name = key.replace("-", "_")
        if name not in KEYS:
            import difflib

            close = difflib.get_close_matches(name, list(KEYS), n=1)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown setting '{key}'{guess}", hint=f"settings: {', '.join(KEYS)}")
        flags[name] = value
    return flags


def settings_report(flags: dict[str, str], path: Path | None) -> dict[str, Any]:
    """The data both output formats print: config file, and one row per setting."""
    from azrun.config import KEYS, Settings
    from azrun.redact import redact

    settings = Settings.load(flags=flags, path=path)
    rows = [
        {
            "key": key,
            "value": redact(shown) if shown else None,
            "source": source,
            "variable": KEYS[key][0],
        }
        for key, shown, source in settings.show()
    ]
    cfg = settings.path
    return {
        "configFile": str(cfg) if cfg else None,
        "configFileExists": bool(cfg and cfg.is_file()),
        "settings": rows,
    }


def render_table(report: dict[str, Any]) -> str:
    """Plain aligned columns: readable in a terminal and stable in a pipe."""
    exists = "" if report["configFileExists"] else " (not found)"
    header = ("KEY", "VALUE", "SOURCE", "VARIABLE")
    rows = [(r["key"], r["value"] or "-", r["source"], r["variable"]) for r in report["settings"]]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"config file: {report['configFile']}{exists}", ""]
    for row in [header, *rows]:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )
    return "\n".join(line.rstrip() for line in lines)


def config_show(
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Preview a flag: show what a command given this setting as a flag would use.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Read this config file instead of the default one.")
    ] = None,
) -> None:
    """Show each setting's value and source (default, config, env or flag).

    Example: azrun config show --set max-concurrency=10 -o json
    """
    import sys

    from azrun.cli._format import emit
    from azrun.cli._globals import current

    options = current()
    report = settings_report(parse_set_flags(set_ or []), config)
    emit(report, options.output, sys.stdout, query=options.query, table=render_table,
         color=not options.colors_off)  # fmt: skip
