"""Driving a run from the terminal: Ctrl-C and SIGTERM, the result, the exit code.

* First Ctrl-C: dispatch stops and (on a terminal) the question "cancel in-flight targets? [y/N]"
  is asked with the live stream *paused* (output lines that arrive meanwhile are held and printed
  after the answer), so it cannot scroll away. Without a terminal, in-flight targets are left
  running. A second Ctrl-C exits at once with 130; the ledger is intact.
* SIGTERM is treated like an unanswered Ctrl-C: dispatch stops, in-flight targets are left
  running, the run is marked interrupted in the ledger, the resume hint is printed, exit 143.
* The result: the summary table on stdout (``-o table``), or ONE JSON/YAML/TSV document
  (``-o json|jsonc|yaml|tsv``, with ``--query``) on stdout and the human summary on stderr;
  ``-o jsonl`` streams one record per target as each finishes (:class:`RecordStream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from azrun.cli._exit import ExitCode
from azrun.cli._format import OutputFormat, emit
from azrun.cli._globals import GlobalOptions, current
from azrun.cli._result import outcome_code, run_document, target_record

if TYPE_CHECKING:
    from azrun.cli._progress import Display
    from azrun.config import Settings
    from azrun.fleet import Fleet, ProgressSnapshot, RunHandle
    from azrun.models import FleetResult, Target, TargetResult
    from azrun.output import OutputStore

__all__ = ["RecordStream", "drive", "finish", "note", "session"]


def note(text: str) -> None:
    """An informational line on stderr, unless ``-q`` or ``--only-show-errors``."""
    if current().notes:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class RecordStream:
    """A display wrapper that also writes one JSON record per target as it finishes (``-o jsonl``)."""

    def __init__(self, display: Display, options: GlobalOptions, out: Any = None) -> None:
        self._display = display
        self._options = options
        self._out = out
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> RecordStream:
        self._display.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._display.__exit__(exc_type, exc, tb)

    def paused(self) -> contextlib.AbstractContextManager[None]:
        return self._display.paused()

    def write(self, result: TargetResult, run_id: str) -> None:
        with self._lock:
            if result.target.resource_id in self._done:
                return
            self._done.add(result.target.resource_id)
        emit(target_record(result, run_id=run_id), OutputFormat.JSONL, self._out or sys.stdout,
             query=self._options.query)

    def on_target(self, result: TargetResult) -> None:
        self._display.on_target(result)
        if result.state.terminal:
            self.write(result, self._run_id(result))

    def _run_id(self, result: TargetResult) -> str:
        return getattr(self, "run_id", "")

    def on_line(self, target: Target, stream: str, line: str) -> None:
        self._display.on_line(target, stream, line)

    def on_progress(self, snapshot: ProgressSnapshot) -> None:
        self.run_id = snapshot.run_id
        self._display.on_progress(snapshot)

    def rest(self, result: FleetResult) -> None:
        """Records for targets that ended without a state change reaching the observer."""
        for r in result.results:
            self.write(r, str(result.run_id))


async def drive(handle: RunHandle, display: Display) -> tuple[FleetResult, ExitCode | None]:
    """Wait for the run; returns its result and INTERRUPTED/TERMINATED if a signal stopped it."""
    loop = asyncio.get_running_loop()
    presses = 0
    stopped_by: ExitCode | None = None
    if isinstance(display, RecordStream):
        display.run_id = str(handle.run_id)

    def leave_running(why: str) -> None:
        handle.detach(f"run interrupted ({why}); in-flight targets left running")
        note(f"leaving in-flight targets running; re-attach later with: azrun resume {handle.run_id}")

    def decide(answer: str) -> None:
        if answer.strip().lower() in ("y", "yes"):
            note("canceling in-flight targets ...")
            handle.cancel("run canceled (Ctrl-C)")
        else:
            leave_running("Ctrl-C")

    def ask() -> None:
        with display.paused():
            try:
                sys.stderr.write("\ndispatch stopped. cancel in-flight targets? [y/N] ")
                sys.stderr.flush()
                answer = sys.stdin.readline()
            except (OSError, ValueError):
                answer = ""
        loop.call_soon_threadsafe(decide, answer)

    def on_sigint() -> None:
        nonlocal presses, stopped_by
        presses += 1
        stopped_by = stopped_by or ExitCode.INTERRUPTED
        if presses == 1:
            handle.stop_dispatch("run interrupted (Ctrl-C)")
            if _interactive():
                threading.Thread(target=ask, daemon=True, name="azrun-ctrl-c").start()
            else:
                decide("n")
            return
        sys.stderr.write(f"\ninterrupted; the ledger is intact: azrun status {handle.run_id} / "
                         f"azrun resume {handle.run_id}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(int(ExitCode.INTERRUPTED))

    def on_sigterm() -> None:
        nonlocal stopped_by
        if stopped_by is ExitCode.TERMINATED:
            return
        stopped_by = ExitCode.TERMINATED
        sys.stderr.write(f"\nterminated (SIGTERM): dispatch stopped; re-attach with: azrun resume {handle.run_id}\n")
        sys.stderr.flush()
        handle.detach("run interrupted (SIGTERM); in-flight targets left running")

    installed = []
    for sig, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm)):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        result = await handle.wait()
    finally:
        for sig in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return result, stopped_by


async def session(
    settings: Settings,
    state_dir: Path | None,
    output_mode: str,
    display: Display,
    start: Callable[[Fleet], Awaitable[RunHandle]],
) -> int:
    """Open the clients, the output store and the fleet; ``start`` a run; drive it; print; exit code."""
    from azrun.cli._options import client_factory
    from azrun.cli._run_inputs import make_fleet, open_output

    factory = client_factory(settings)
    store = None
    try:
        store = await open_output(settings, factory, "quiet" if not current().notes else output_mode)
        async with make_fleet(factory, state_dir, store, settings) as fleet:
            handle = await start(fleet)
            result, stopped_by = await drive(handle, display)
            return finish(result, fleet, store, stopped_by, display)
    finally:
        if store is not None:
            await store.aclose()
        await factory.aclose()


def finish(
    result: FleetResult, fleet: Fleet, store: OutputStore | None, stopped_by: ExitCode | None, display: Display
) -> int:
    """Print the result (table or one document) and the ledger/output locations; the exit code."""
    from azrun.cli._run_view import color_for, render_summary

    options = current()
    code = outcome_code(result, interrupted=stopped_by is ExitCode.INTERRUPTED,
                        terminated=stopped_by is ExitCode.TERMINATED)
    status = {ExitCode.OK: "succeeded", ExitCode.TARGET_FAILED: "failed", ExitCode.INTERRUPTED: "interrupted",
              ExitCode.TERMINATED: "interrupted"}[code]  # fmt: skip
    output = f"{store.container_url}/{result.run_id}/" if store is not None else None
    if options.output is OutputFormat.TABLE and not options.query:
        print(render_summary(result, color=color_for(sys.stdout)))
    else:
        if options.notes:
            sys.stderr.write(render_summary(result, color=color_for(sys.stderr)) + "\n")
        if isinstance(display, RecordStream):
            display.rest(result)
        else:
            doc = run_document(result, status=status, exit_code=int(code), ledger=str(fleet.ledger.path),
                               output=output)
            emit(doc, options.output, sys.stdout, query=options.query, color=not options.colors_off)
    note(f"ledger: {fleet.ledger.path} (azrun status {result.run_id})")
    if output:
        note(f"output: {output}")
    return int(code)
