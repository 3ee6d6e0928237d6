"""Printing a command's data the way the Azure CLI does: ``-o json|jsonc|yaml|table|tsv|jsonl``
and ``--query`` (JMESPath, the same library ``az`` uses).

Every data command builds plain JSON-able data (dicts, lists, strings, numbers) with camelCase
keys (:func:`camel_keys`, as ``az`` prints ARM's keys) and hands it to :func:`emit`:

* ``json``: ONE JSON document (indented), so ``jq '.[0]'`` works;
* ``jsonc``: the same, coloured on a terminal;
* ``jsonl``: one compact JSON value per line (each element of a list), the streaming form;
* ``yaml``: block YAML;
* ``tsv``: one line per element, scalar values tab-separated, no header (for ``cut`` and ``read``);
* ``table``: the command's own human view, or (after ``--query``) a generic table of the result.

``--query`` runs on the data before formatting, as in ``az``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TextIO

from azrun._compat import StrEnum
from azrun.errors import ConfigError

__all__ = ["OutputFormat", "apply_query", "camel", "camel_keys", "emit", "to_tsv", "to_yaml"]


class OutputFormat(StrEnum):
    """The values of ``-o/--output``."""

    TABLE = "table"
    JSON = "json"
    JSONC = "jsonc"
    JSONL = "jsonl"
    YAML = "yaml"
    TSV = "tsv"

    @property
    def machine_readable(self) -> bool:
        return self is not OutputFormat.TABLE


_SNAKE = re.compile(r"_([a-z0-9])")


def camel(key: str) -> str:
    """``exit_code`` -> ``exitCode`` (keys already in camelCase are left alone)."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), key)


def camel_keys(data: Any, *, keep: frozenset[str] = frozenset({"tags"})) -> Any:
    """``data`` with every dict key in camelCase; values under a key in ``keep`` (user data such as
    tags) are left as they are."""
    if isinstance(data, dict):
        return {camel(str(k)): (v if k in keep else camel_keys(v, keep=keep)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [camel_keys(v, keep=keep) for v in data]
    return data


def apply_query(data: Any, query: str | None) -> Any:
    """``data`` filtered by the JMESPath ``query`` (None: unchanged)."""
    if not query:
        return data
    import jmespath  # type: ignore[import-untyped]
    from jmespath.exceptions import JMESPathError  # type: ignore[import-untyped]

    try:
        return jmespath.search(query, data)
    except JMESPathError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--query {query!r} is not a valid JMESPath expression: {first}",
                          hint="e.g. --query \"[?state=='Failed'].name\"; see https://jmespath.org") from exc


# ------------------------------------------------------------------------------------------ YAML
_PLAIN = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_ ./@+-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED and not text.endswith(" "):
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_lines(data: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(data, dict):
        if not data:
            return [pad + "{}"]
        out: list[str] = []
        for key, value in data.items():
            name = _scalar(str(key))
            if isinstance(value, dict | list | tuple) and value:
                out.append(f"{pad}{name}:")
                out += _yaml_lines(value, indent + (2 if isinstance(value, dict) else 0))
            else:
                out.append(f"{pad}{name}: {_yaml_lines(value, 0)[0]}")
        return out
    if isinstance(data, list | tuple):
        if not data:
            return [pad + "[]"]
        out = []
        for item in data:
            inner = _yaml_lines(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out += inner[1:]
        return out
    return [pad + _scalar(data)]


def to_yaml(data: Any) -> str:
    """Block-style YAML for JSON-able data (strings quoted JSON-style whenever plain is unsafe)."""
    return "\n".join(_yaml_lines(data, 0)) + "\n"


# ------------------------------------------------------------------------------------------- TSV
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"  # as az prints them
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value).replace("\t", " ").replace("\n", " ")


def to_tsv(data: Any) -> str:
    """One line per element (or one for a single object); values in key order, tab-separated."""
    rows = data if isinstance(data, list) else [data]
    lines = []
    for row in rows:
        if isinstance(row, dict):
            lines.append("\t".join(_cell(v) for v in row.values()))
        else:
            lines.append(_cell(row))
    return "\n".join(lines) + ("\n" if lines else "")


# ----------------------------------------------------------------------------------------- table
def generic_table(data: Any) -> str:
    """A plain table of a query's result: columns from the keys of the first rows."""
    rows = data if isinstance(data, list) else [data]
    if not rows:
        return ""
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(_cell(r) for r in rows)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join((c[:1].upper() + c[1:]).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _colored_json(text: str) -> str:
    keys = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:)')
    strings = re.compile(r'(:\s*|^\s*|\[\s*|,\s*)("(?:[^"\\]|\\.)*")', re.MULTILINE)
    text = strings.sub(lambda m: f"{m.group(1)}\x1b[32m{m.group(2)}\x1b[0m", text)
    return keys.sub(lambda m: f"\x1b[36m{m.group(1)}\x1b[0m{m.group(2)}", text)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def emit(
    data: Any,
    fmt: OutputFormat,
    out: TextIO,
    *,
    query: str | None = None,
    table: Callable[[Any], str] | None = None,
    color: bool = False,
) -> None:
    """Print ``data`` (already camelCase) on ``out`` in format ``fmt`` after ``--query``.

    ``table`` is the command's human view of the unqueried data; with a query (or without a
    view) the table is generic. ``color``: colours allowed (``jsonc`` paints only on a terminal).
    """
    shown = apply_query(data, query)
    if fmt is OutputFormat.TABLE:
        text = table(data) if table is not None and not query else generic_table(shown)
        if text:
            out.write(text.rstrip("\n") + "\n")
    elif fmt is OutputFormat.JSON or fmt is OutputFormat.JSONC:
        text = json.dumps(shown, indent=2, ensure_ascii=False)
        paint = fmt is OutputFormat.JSONC and color and _isatty(out)
        out.write((_colored_json(text) if paint else text) + "\n")
    elif fmt is OutputFormat.JSONL:
        for item in shown if isinstance(shown, list) else [shown]:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    elif fmt is OutputFormat.YAML:
        out.write(to_yaml(shown))
    else:
        out.write(to_tsv(shown))
    out.flush()
