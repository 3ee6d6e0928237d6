"""Where tailed lines go: ``--output-mode stream|summary|quiet|json``.

* ``stream``  -> :class:`StreamPrinter`: ``[vm-web-01] line`` on stdout, stderr lines as
  ``[vm-web-01] (stderr) line``; on a TTY each target's prefix gets its own colour and stderr
  text is red. One lock around each write keeps lines whole when threads or several event loops
  print at once; the tailer already delivers each target's lines in order.
* ``json``    -> :class:`JsonPrinter`: one JSON object per line, ``{"target","stream","line"}``.
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
from typing import TextIO

from azrun._compat import StrEnum
from azrun.models import Target
from azrun.output import Sink

__all__ = ["JsonPrinter", "OutputMode", "StreamPrinter", "make_sink"]

_PALETTE = ("36", "32", "33", "34", "35", "96", "92", "93", "94", "95")
_RED = "31"
_RESET = "\x1b[0m"


class OutputMode(StrEnum):
    """How a run shows its targets' output while it runs."""

    STREAM = "stream"
    SUMMARY = "summary"
    QUIET = "quiet"
    JSON = "json"


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

    def __init__(self, out: TextIO | None = None, *, color: bool | None = None) -> None:
        self._out = out
        self._color = color
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
        name = target.name
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
    """Prints one JSON object per output line: ``{"target", "stream", "line"}``."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "JsonPrinter()"

    def __call__(self, target: Target, stream: str, line: str) -> None:
        out = self._out if self._out is not None else sys.stdout
        text = json.dumps({"target": target.name, "stream": stream, "line": line}, ensure_ascii=False) + "\n"
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
