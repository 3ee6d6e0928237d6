"""Plain-text views for the run commands: state-change lines while a run goes, the summary
table after it, ``status`` and ``runs`` tables, and durations (``90s``, ``10m``, ``7d``).

No escape codes unless the stream is a TTY and colours are on (``NO_COLOR`` unset and no
``azrun --no-color``). The rich live display is in :mod:`azrun.cli._progress`; these stay as
the non-TTY view.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TextIO

from azrun.cli._panel import PanelMath
from azrun.fleet import ProgressSnapshot
from azrun.models import FleetResult, Target, TargetResult, TargetState

__all__ = [
    "LinePrinter",
    "color_for",
    "colors_disabled",
    "parse_duration",
    "render_runs",
    "render_summary",
    "render_targets",
]

_STATE_COLOR = {
    TargetState.SUCCEEDED: "32", TargetState.FAILED: "31", TargetState.TIMED_OUT: "31",
    TargetState.UNDELIVERABLE: "31", TargetState.CANCELED: "33", TargetState.SKIPPED: "33",
    TargetState.RUNNING: "36", TargetState.DISPATCHING: "36",
}  # fmt: skip


def parse_duration(text: str, *, flag: str) -> float:
    """``"90"``/``"90s"``/``"10m"``/``"2h"``/``"7d"``/``"1w"`` -> seconds (:func:`azrun.config.parse_duration`)."""
    from azrun.config import parse_duration as parse

    return parse(text, what=flag)


def colors_disabled() -> bool:
    """``NO_COLOR`` (https://no-color.org) or ``--no-color`` (before or after the command)."""
    from azrun.cli._globals import current

    return bool(os.environ.get("NO_COLOR")) or current().no_color


def color_for(stream: TextIO) -> bool:
    """Colour on ``stream``: only a terminal, and only if colours are not turned off."""
    try:
        return stream.isatty() and not colors_disabled()
    except (AttributeError, ValueError):
        return False


def _paint(text: str, code: str | None, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on and code else text


def _duration(result: TargetResult) -> str:
    if result.started_at and result.ended_at:
        return f"{(result.ended_at - result.started_at).total_seconds():.0f}s"
    return "-"


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LinePrinter:
    """The CLI's :class:`~azrun.fleet.FleetObserver`: one line per state change on ``err``,
    output lines through ``sink`` (the output module's printer), a progress line every
    ``progress_every_s`` seconds."""

    def __init__(
        self, *, err: TextIO | None = None, sink: object | None = None, verbose: bool = False,
        progress_every_s: float = 10.0,
    ) -> None:
        self._err = err
        self._sink = sink
        self._verbose = verbose
        self._every = progress_every_s
        self._last_progress = 0.0
        self._lock = threading.Lock()
        self._held: list[Callable[[], None]] | None = None
        self._math = PanelMath()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every line while the block runs (the Ctrl-C question), then print them."""
        with self._lock:
            self._held = []
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
            for emit in held:
                emit()

    def _emit(self, emit: Callable[[], None]) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(emit)
                return
        emit()

    def _out(self) -> TextIO:
        return self._err if self._err is not None else sys.stderr

    def _write(self, text: str) -> None:
        out = self._out()

        def write() -> None:
            out.write(text + "\n")
            out.flush()

        self._emit(write)

    def on_target(self, result: TargetResult) -> None:
        state = result.state
        if state is TargetState.DISPATCHING and not self._verbose:
            return
        if state is TargetState.PENDING:
            return
        color = color_for(self._out())
        line = f"{datetime.now().strftime('%H:%M:%S')} {result.target.name:<24} {_paint(state.value, _STATE_COLOR.get(state), color)}"
        if state.terminal:
            code = result.exit_code if state in (TargetState.SUCCEEDED, TargetState.FAILED) else None
            exit_part = f" exit={code}" if code is not None else ""
            detail = "" if state is TargetState.SUCCEEDED else f" {_one_line(result.message)}"
            line += f"{exit_part}{detail}"
        self._write(line)

    def on_line(self, target: Target, stream: str, line: str) -> None:
        sink = self._sink
        if callable(sink):
            self._emit(lambda: sink(target, stream, line))

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        self._math.add(snapshot)
        if snapshot.elapsed_s - self._last_progress < self._every:
            return
        self._last_progress = snapshot.elapsed_s
        fig = self._math.figures(snapshot)
        eta = f", eta {fig.eta_s:.0f}s" if fig.eta_s is not None else ""
        skipped = f" ({fig.skipped} skipped)" if fig.skipped else ""
        self._write(
            f"... {fig.done}/{fig.to_run} done{skipped}, {snapshot.counts.get('Running', 0)} running, "
            f"{fig.dispatch_rate:.1f} dispatched/s, {snapshot.arm_requests} ARM requests{eta}"
        )


def render_summary(result: FleetResult, *, color: bool, show_all: bool = False, limit: int = 50) -> str:
    """Counts, then one row per target that did not succeed (or every target with ``show_all``)."""
    counts = result.counts()
    order = [s.value for s in TargetState]
    parts = [
        _paint(f"{state}: {counts[state]}", _STATE_COLOR.get(TargetState(state)), color)
        for state in order if counts.get(state)
    ]  # fmt: skip
    lines = [f"run {result.run_id}: {len(result.results)} targets  " + "  ".join(parts)]
    lines += [f"note: {note}" for note in result.notes]  # e.g. the controller lost contact with Azure
    rows = [r for r in result.results if show_all or r.state is not TargetState.SUCCEEDED]
    if rows:
        lines.append(_table(rows[:limit], color=color))
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more (azrun status {result.run_id} --all)")
    requests = sum(r.arm_requests for r in result.results)
    dispatched = sum(1 for r in result.results if r.arm_requests)
    if dispatched:
        lines.append(f"ARM requests: {requests} ({requests / dispatched:.1f} per dispatched target)")
    return "\n".join(lines)


def _table(rows: Sequence[TargetResult], *, color: bool) -> str:
    head = f"{'TARGET':<28} {'STATE':<14} {'EXIT':>5} {'TIME':>6}  MESSAGE"
    out = [head]
    for r in rows:
        state = _paint(f"{r.state.value:<14}", _STATE_COLOR.get(r.state), color)
        known = r.exit_code if r.state in (TargetState.SUCCEEDED, TargetState.FAILED) else None
        exit_code = "" if known is None else str(known)
        out.append(f"{r.target.name:<28} {state} {exit_code:>5} {_duration(r):>6}  {_one_line(r.message, 80)}")
    return "\n".join(out)


def render_targets(results: Iterable[TargetResult], *, color: bool) -> str:
    return _table(list(results), color=color)


def render_runs(rows: Iterable[tuple[str, str, str, str, str]]) -> str:
    out = [f"{'RUN':<22} {'CREATED':<20} {'STATUS':<12} {'TARGETS':<40} SCRIPT"]
    for run_id, created, status, counts, script in rows:
        out.append(f"{run_id:<22} {created:<20} {status:<12} {counts:<40} {script}")
    return "\n".join(out)
