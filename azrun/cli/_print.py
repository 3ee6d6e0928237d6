"""Where tailed lines go: ``--output-mode stream|summary|quiet|json``.

* ``stream``  -> :class:`StreamPrinter`: ``[vm-web-01] line`` on stdout, stderr lines as
  ``[vm-web-01] (stderr) line``; on a TTY each target's prefix gets its own colour and stderr
  text is red. One lock around each write keeps lines whole when threads or several event loops
  print at once; the tailer already delivers each target's lines in order.
* ``json``    -> :class:`JsonPrinter`: one JSON object per line, ``{"target","id","stream","line"}``.

Machines with the same name (other resource groups or subscriptions) get distinct prefixes
(:class:`Labels`): ``[rg-a/vm-web-01]`` and ``[rg-b/vm-web-01]`` when all of them are known up
front (``azrun logs``); while a run streams, the first one seen keeps ``[vm-web-01]`` and each
later namesake gets the qualified prefix, with a one-line note on stderr saying which is which.
A prefix never changes once printed.
* ``summary`` / ``quiet`` -> no per-line printing (:func:`make_sink` returns None).

Lines are printed as the script wrote them (its own ANSI colours included), with two changes a
terminal would otherwise garble: a line redrawn with carriage returns (progress bars) shows only
its last state, and a line that switched colours on is reset at its end, so one target's colour
never bleeds into the next target's line. JSON keeps lines exactly as split.
"""

from __future__ import annotations

import json
import sys
import threading
import zlib
from collections.abc import Iterable
from typing import TextIO

from azrun._compat import StrEnum
from azrun.models import Target
from azrun.output import Sink

__all__ = ["JsonPrinter", "Labels", "OutputMode", "StreamPrinter", "make_sink"]

_PALETTE = ("36", "32", "33", "34", "35", "96", "92", "93", "94", "95")
_RED = "31"
_RESET = "\x1b[0m"


class OutputMode(StrEnum):
    """How a run shows its targets' output while it runs."""

    STREAM = "stream"
    SUMMARY = "summary"
    QUIET = "quiet"
    JSON = "json"


def _qualified(target: Target, namesakes: Iterable[Target]) -> str:
    """``rg/name``, or ``sub/rg/name`` when a namesake is in a resource group of the same name."""
    rg = target.resource_group.lower()
    same_rg = any(
        o.resource_group.lower() == rg and o.resource_id.lower() != target.resource_id.lower() for o in namesakes
    )
    if not same_rg:
        return f"{target.resource_group}/{target.name}"
    sub = target.subscription_id.lower()
    short = sub[:8]
    if any(o.subscription_id.lower()[:8] == short and o.subscription_id.lower() != sub for o in namesakes):
        short = sub
    return f"{short}/{target.resource_group}/{target.name}"


class Labels:
    """One distinct, stable prefix per machine (resource ids compared case-insensitively).

    Args:
        targets: every target known up front (their namesakes are all qualified).
        note: told once per lazily found namesake (default: a line on stderr).
    """

    def __init__(self, targets: Iterable[Target] = (), *, note: TextIO | None = None) -> None:
        self._labels: dict[str, str] = {}
        self._by_name: dict[str, list[Target]] = {}
        self._note = note
        self._lock = threading.Lock()
        known = list({t.resource_id.lower(): t for t in targets}.values())
        for t in known:
            self._by_name.setdefault(t.name.lower(), []).append(t)
        for t in known:
            group = self._by_name[t.name.lower()]
            self._labels[t.resource_id.lower()] = _qualified(t, group) if len(group) > 1 else t.name

    def __repr__(self) -> str:
        return f"Labels({len(self._labels)} targets)"

    def __call__(self, target: Target) -> str:
        key = target.resource_id.lower()
        label = self._labels.get(key)
        if label is not None:
            return label
        with self._lock:
            label = self._labels.get(key)
            if label is not None:
                return label
            group = self._by_name.setdefault(target.name.lower(), [])
            label = _qualified(target, group) if group else target.name
            if group:
                first = group[0]
                self._say(
                    f"note: more than one machine is named {target.name}: [{self._labels[first.resource_id.lower()]}] "
                    f"is {first.resource_id}, [{label}] is {target.resource_id}\n"
                )
            group.append(target)
            self._labels[key] = label
            return label

    def _say(self, text: str) -> None:
        out = self._note if self._note is not None else sys.stderr
        out.write(text)
        out.flush()


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


class StreamPrinter:
    """Prints ``[target] line`` (stderr: ``[target] (stderr) line``), coloured on a TTY.

    Args:
        out: where to write (default ``sys.stdout`` at call time).
        color: force colours on/off; None = only when ``out`` is a TTY.
    """

    def __init__(
        self, out: TextIO | None = None, *, color: bool | None = None, labels: Labels | None = None
    ) -> None:
        self._out = out
        self._color = color
        self._labels = labels or Labels()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StreamPrinter(color={self._color})"

    def _stream(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def format(self, target: Target, stream: str, line: str, *, color: bool = False) -> str:
        """One output line with its prefix (no newline)."""
        if "\r" in line:
            redrawn = [part for part in line.split("\r") if part]
            line = redrawn[-1] if redrawn else ""
        if "\x1b[" in line:
            line += _RESET
        name = self._labels(target)
        if not color:
            return f"[{name}] (stderr) {line}" if stream == "stderr" else f"[{name}] {line}"
        code = _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]
        prefix = f"\x1b[{code}m[{name}]{_RESET}"
        if stream == "stderr":
            return f"{prefix} \x1b[{_RED}m(stderr) {line}{_RESET}"
        return f"{prefix} {line}"

    def __call__(self, target: Target, stream: str, line: str) -> None:
        out = self._stream()
        color = _isatty(out) if self._color is None else self._color
        text = self.format(target, stream, line, color=color) + "\n"
        with self._lock:
            out.write(text)
            out.flush()


class JsonPrinter:
    """Prints one JSON object per output line: ``{"target", "id", "stream", "line"}`` (``id`` is
    the resource id: names are not unique across resource groups)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "JsonPrinter()"

    def __call__(self, target: Target, stream: str, line: str) -> None:
        out = self._out if self._out is not None else sys.stdout
        record = {"target": target.name, "id": target.resource_id, "stream": stream, "line": line}
        text = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            out.write(text)
            out.flush()


def make_sink(mode: OutputMode | str, out: TextIO | None = None, *, color: bool | None = None) -> Sink | None:
    """The line sink for an output mode; None for ``summary`` and ``quiet``."""
    chosen = OutputMode(mode)
    if chosen is OutputMode.STREAM:
        return StreamPrinter(out, color=color)
    if chosen is OutputMode.JSON:
        return JsonPrinter(out)
    return None
