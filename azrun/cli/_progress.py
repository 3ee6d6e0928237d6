"""What ``azrun run | resume | rerun`` show while a run goes.

Three displays, one :class:`~azrun.fleet.FleetObserver` each, chosen by :func:`make_display`:

* :class:`LiveProgress` when stderr is a terminal: a rich ``Live`` panel (ASCII only: a Ctrl-C
  echoed into a redraw cannot split a multibyte character, and any console font draws it) (4 refreshes a second)
  with counts per state, dispatched/s and completed/s, ETA, ARM requests, 429s and throttle
  waits, and the slowest running targets. Streamed output lines and state changes print *above*
  the panel through the same console, so neither garbles the other. The panel is transient:
  when the run ends it goes, and the summary stays.
* :class:`PlainProgress` otherwise (CI logs, Automation job streams, ``--debug``): the plain lines
  of :class:`~azrun.cli._run_view.LinePrinter`, never an escape code.
* :class:`QuietProgress` with ``--quiet``: nothing until the final summary (JSON output lines
  still flow when ``--output-mode json`` asked for them; they are the product, not chatter).

Each is a context manager; the command wraps the whole session in it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

from azrun.cli._panel import PanelMath, render_panel
from azrun.cli._result import known_exit_code
from azrun.cli._run_view import LinePrinter, color_for, colors_disabled
from azrun.errors import ConfigError
from azrun.models import Target, TargetResult, TargetState

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from azrun.fleet import ProgressSnapshot
    from azrun.output import Sink

__all__ = ["Display", "LiveProgress", "PlainProgress", "QuietProgress", "make_display", "render_panel"]

_STATE_STYLE = {
    "Pending": "dim", "Dispatching": "cyan", "Running": "cyan", "Succeeded": "green", "Failed": "red",
    "TimedOut": "red", "Undeliverable": "red", "Canceled": "yellow", "Skipped": "yellow",
}  # fmt: skip


class Display(Protocol):
    """A fleet observer that is also a context manager around the run."""

    def __enter__(self) -> Display: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def on_target(self, result: TargetResult) -> None: ...

    def on_line(self, target: Target, stream: str, line: str) -> None: ...

    def on_progress(self, snapshot: ProgressSnapshot) -> None: ...

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Hold every line (and the panel) while the block runs; print what was held after."""
        ...


class PlainProgress(LinePrinter):
    """The plain-lines display (a :class:`LinePrinter` that is also a no-op context manager)."""

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class QuietProgress:
    """``--quiet``: only output lines the caller asked for as data (JSON), nothing else."""

    def __init__(self, sink: Sink | None = None) -> None:
        self._sink = sink

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        yield

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def on_target(self, result: TargetResult) -> None:
        pass

    def on_line(self, target: Target, stream: str, line: str) -> None:
        if self._sink is not None:
            self._sink(target, stream, line)

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        pass


class LiveProgress:
    """The terminal display: a rich ``Live`` panel on stderr, output and state lines above it.

    Args:
        console: the stderr console the panel draws on.
        sink: the output printer; it writes to ``sys.stdout``, which the ``Live`` redirects
            through ``console`` when stdout is the same terminal (``redirect_stdout``).
        verbose: print every state change, not only the finished ones.
    """

    def __init__(
        self,
        console: Console,
        *,
        sink: Sink | None = None,
        verbose: bool = False,
        redirect_stdout: bool = True,
        title: str = "azrun",
    ) -> None:
        self._console = console
        self._sink = sink
        self._verbose = verbose
        self._redirect_stdout = redirect_stdout
        self._title = title
        self._lock = threading.Lock()
        self._snapshot: ProgressSnapshot | None = None
        self._states: dict[str, str] = {}  # resource id -> last state seen in on_target
        self._names: dict[str, str] = {}  # target name -> last state seen
        self._moves: list[tuple[str, str]] = []  # (from, to) state changes since the last snapshot
        self._math = PanelMath()
        self._live: Live | None = None
        self._held: list[Callable[[], None]] | None = None  # lines held while a question is asked

    def __enter__(self) -> LiveProgress:
        from rich.live import Live

        self._live = Live(
            self, console=self._console, refresh_per_second=4, transient=True,
            redirect_stdout=self._redirect_stdout, redirect_stderr=True,
        )  # fmt: skip
        self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __rich__(self) -> RenderableType:
        with self._lock:
            snapshot = self._current()
            figures = self._math.figures(snapshot) if snapshot is not None else None
        return render_panel(snapshot, figures, title=self._title)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The panel goes and lines are held while the block runs (the Ctrl-C question), then the
        held lines print and the panel comes back."""
        with self._lock:
            self._held = []
        live = self._live
        if live is not None:
            live.stop()
        try:
            yield
        finally:
            with self._lock:
                held, self._held = self._held or [], None
            if live is not None and self._live is live:
                live.start()
            for emit in held:
                emit()

    def _emit(self, emit: Callable[[], None]) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(emit)
                return
        emit()

    def _current(self) -> ProgressSnapshot | None:
        """The last snapshot with the state changes seen since applied, so the panel never lags
        a second behind (nor shows a finished run as still running)."""
        snap = self._snapshot
        if snap is None or not self._moves:
            return snap
        from dataclasses import replace

        counts = dict(snap.counts)
        for old, new in self._moves:
            if counts.get(old, 0) > 0:
                counts[old] -= 1
                counts[new] = counts.get(new, 0) + 1
        done = {name for name, state in self._names.items() if TargetState(state).terminal}
        return replace(snap, counts=counts, slowest=tuple(s for s in snap.slowest if s[0] not in done))

    def _completed_rate(self) -> float:
        snap = self._snapshot
        return self._math.completed_rate(snap) if snap is not None else 0.0

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._moves.clear()
            self._math.add(snapshot)

    def on_target(self, result: TargetResult) -> None:
        state = result.state
        with self._lock:
            key = result.target.resource_id
            old = self._states.get(key, TargetState.PENDING.value)
            self._states[key] = state.value
            self._names[result.target.name] = state.value
            if old != state.value:
                self._moves.append((old, state.value))
        if not (state.terminal or (self._verbose and state is not TargetState.PENDING)):
            return
        from rich.text import Text

        line = Text(f"{datetime.now():%H:%M:%S} {result.target.name:<24} ")
        line.append(state.value, style=_STATE_STYLE.get(state.value, ""))
        if state.terminal:
            code = known_exit_code(state, result.exit_code)
            if code is not None:
                line.append(f" exit={code}")
            if state is not TargetState.SUCCEEDED and result.message:
                line.append(" " + " ".join(result.message.split())[:100])
        self._emit(lambda: self._console.print(line, highlight=False, soft_wrap=True))

    def on_line(self, target: Target, stream: str, line: str) -> None:
        sink = self._sink
        if sink is not None:
            self._emit(lambda: sink(target, stream, line))


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_display(
    mode: str,
    *,
    verbose: bool = False,
    quiet: bool = False,
    live: bool | None = None,
    err: TextIO | None = None,
    title: str = "azrun",
    lines_to: TextIO | None = None,
) -> Display:
    """The display for ``--output-mode`` ``mode`` and the flags.

    ``live=None`` picks the rich panel when ``err`` (default stderr) is a terminal and neither
    ``--quiet`` nor ``--debug`` (whose log lines would tear the panel) is on. ``lines_to``: where
    output lines go (default stdout; stderr when stdout carries a machine-readable result).
    """
    from azrun.cli._print import OutputMode, make_sink

    try:
        chosen = OutputMode(mode)
    except ValueError as exc:
        raise ConfigError(
            f"--output-mode {mode!r} is not one of stream, summary, quiet, json",
            hint="e.g. --output-mode summary",
        ) from exc
    stream = err if err is not None else sys.stderr
    sink = make_sink(chosen, lines_to, color=False if colors_disabled() else None)
    if quiet:
        return QuietProgress(sink if chosen is OutputMode.JSON else None)
    if live is None:
        live = _is_tty(stream) and not _debugging()
    if not live:
        return PlainProgress(err=err, sink=sink, verbose=verbose)
    from rich.console import Console

    # markup and emoji off: redirected output and prompts ("[y/N]") must print exactly as written
    console = Console(
        file=stream,
        no_color=not color_for(stream),
        highlight=False,
        soft_wrap=True,
        markup=False,
        emoji=False,
    )
    return LiveProgress(console, sink=sink, verbose=verbose, redirect_stdout=_is_tty(sys.stdout), title=title)


def _debugging() -> bool:
    from azrun.cli._globals import current

    return current().debug
