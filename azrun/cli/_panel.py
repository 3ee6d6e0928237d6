"""The live panel's figures and its rendering (pure: fed snapshots, tested against scripted runs).

Every figure, and what it means:

* ``done``: targets that ended (Succeeded, Failed, TimedOut, Canceled, Undeliverable) out of the
  targets that run; skipped targets are counted apart (``2 skipped``), never as done.
* ``dispatched/s``: targets dispatched divided by the time of the last dispatch, so once
  dispatching ends the figure stays what it was instead of decaying with the clock.
* ``completed/s``: targets that ended over the last 15 s (the whole run before 15 s).
* ``ETA``: remaining targets / completed per second; ``-`` until one target has ended (no
  "ETA 0s" with nothing completed), ``0s`` only when nothing remains.
* ``wave i/n``: with ``--waves`` (or ``--canary``), the wave being rolled out; while soaking
  between waves, ``soaking: 4m10s left before wave i+1``; ``retrying N``: targets waiting out
  the backoff before their next delivery attempt (``--retries``).
* ``slowest``: the running targets that have run longest, at most three, and only whole groups
  of equal time (rounded as shown): listing three of twenty targets tied at 41 s would single out
  machines that are not slower than the rest, so a tie reads ``20 running for 41s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azrun.models import TargetState

if TYPE_CHECKING:
    from rich.console import RenderableType

    from azrun.fleet import ProgressSnapshot

__all__ = ["Figures", "PanelMath", "render_panel", "rollout_text", "seconds_text", "slowest_text"]

_RATE_WINDOW_S = 15.0
_ENDED = frozenset(s.value for s in TargetState if s.terminal and s is not TargetState.SKIPPED)
_STATE_STYLE = {
    "Pending": "dim", "Dispatching": "cyan", "Running": "cyan", "Succeeded": "green", "Failed": "red",
    "TimedOut": "red", "Undeliverable": "red", "Canceled": "yellow", "Skipped": "yellow",
}  # fmt: skip


def seconds_text(value: float) -> str:
    value = max(0.0, value)
    if value < 90:
        return f"{value:.0f}s"
    if value < 5400:
        return f"{value // 60:.0f}m{value % 60:02.0f}s"
    return f"{value // 3600:.0f}h{(value % 3600) // 60:02.0f}m"


def slowest_text(slowest: tuple[tuple[str, float], ...], limit: int = 3) -> str | None:
    """The slowest running targets without splitting a tie (see the module docstring)."""
    if not slowest:
        return None
    ordered = sorted(slowest, key=lambda s: -s[1])
    groups: list[list[tuple[str, float]]] = []
    for name, secs in ordered:
        if groups and seconds_text(groups[-1][0][1]) == seconds_text(secs):
            groups[-1].append((name, secs))
        else:
            groups.append([(name, secs)])
    shown: list[tuple[str, float]] = []
    for group in groups:
        if len(shown) + len(group) > limit:
            break
        shown += group
    if not shown:
        return f"{len(groups[0])} running for {seconds_text(groups[0][0][1])}"
    if len(groups) == 1 and len(shown) > 1:
        return f"{len(shown)} running for {seconds_text(shown[0][1])}"
    return " | ".join(f"{name} {seconds_text(secs)}" for name, secs in shown)


def rollout_text(snap: ProgressSnapshot) -> str | None:
    """``wave 2/4`` (and the soak countdown, and targets waiting to retry), or None."""
    parts = []
    if snap.wave is not None and snap.waves:
        if snap.soak_left_s is not None:
            parts.append(f"wave {snap.wave + 1}/{snap.waves} done | soaking: {seconds_text(snap.soak_left_s)} left "
                         f"before wave {snap.wave + 2}/{snap.waves}")
        else:
            parts.append(f"wave {snap.wave + 1}/{snap.waves}")
    if snap.retrying:
        parts.append(f"retrying {snap.retrying}")
    return " | ".join(parts) or None


@dataclass(frozen=True)
class Figures:
    """What the panel's second line says."""

    done: int
    to_run: int
    skipped: int
    dispatch_rate: float
    completed_rate: float
    eta_s: float | None


class PanelMath:
    """Keeps the history the rates need; :meth:`figures` for the latest snapshot."""

    def __init__(self, window_s: float = _RATE_WINDOW_S) -> None:
        self._window = window_s
        self._ended: deque[tuple[float, int]] = deque()
        self._dispatched = 0
        self._last_dispatch_s = 0.0

    def add(self, snap: ProgressSnapshot) -> None:
        ended = sum(n for state, n in snap.counts.items() if state in _ENDED)
        self._ended.append((snap.elapsed_s, ended))
        while len(self._ended) > 2 and snap.elapsed_s - self._ended[0][0] > self._window:
            self._ended.popleft()
        if snap.dispatched > self._dispatched:
            self._dispatched = snap.dispatched
            self._last_dispatch_s = snap.elapsed_s

    def completed_rate(self, snap: ProgressSnapshot) -> float:
        ended = sum(n for state, n in snap.counts.items() if state in _ENDED)
        if snap.elapsed_s <= self._window or len(self._ended) < 2:
            return ended / snap.elapsed_s if snap.elapsed_s > 0 else 0.0
        (t0, e0), (t1, e1) = self._ended[0], self._ended[-1]
        return (e1 - e0) / (t1 - t0) if t1 > t0 else 0.0

    def figures(self, snap: ProgressSnapshot) -> Figures:
        done = sum(n for state, n in snap.counts.items() if state in _ENDED)
        skipped = snap.counts.get(TargetState.SKIPPED.value, 0)
        to_run = max(0, snap.total - skipped)
        rate = self.completed_rate(snap)
        dispatched = max(self._dispatched, snap.dispatched)
        dispatch_rate = dispatched / self._last_dispatch_s if self._last_dispatch_s > 0 else 0.0
        remaining = to_run - done
        if remaining <= 0:
            eta: float | None = 0.0
        elif done == 0 or rate <= 0:
            eta = None
        else:
            eta = remaining / rate
        return Figures(done, to_run, skipped, dispatch_rate, rate, eta)


def render_panel(
    snapshot: ProgressSnapshot | None, figures: Figures | None = None, *, title: str = "azrun"
) -> RenderableType:
    """The live panel for one snapshot and its figures (a pure function, so tests can render it)."""
    from rich.box import ASCII2
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    if snapshot is None:
        return Panel(Text("selecting targets ...", style="dim"), title=title, title_align="left", box=ASCII2)
    if figures is None:
        math = PanelMath()
        math.add(snapshot)
        figures = math.figures(snapshot)
    grid = Table.grid(padding=(0, 1))
    grid.add_column()
    counts = Text()
    for state in TargetState:
        n = snapshot.counts.get(state.value, 0)
        if n:
            counts.append(f"{state.value} {n}", style=_STATE_STYLE.get(state.value, ""))
            counts.append("   ")
    grid.add_row(counts)
    eta = seconds_text(figures.eta_s) if figures.eta_s is not None else "-"
    skipped = f" ({figures.skipped} skipped)" if figures.skipped else ""
    grid.add_row(Text(
        f"{figures.done}/{figures.to_run} done{skipped} | {figures.dispatch_rate:.1f} dispatched/s | "
        f"{figures.completed_rate:.1f} completed/s | ETA {eta} | elapsed {seconds_text(snapshot.elapsed_s)}"
    ))  # fmt: skip
    metrics = snapshot.throttle
    wait_s = float(getattr(metrics, "wait_s", 0.0) or 0.0)
    throttled = max(snapshot.throttled_429, int(getattr(metrics, "throttled_429", 0) or 0))
    grid.add_row(Text(
        f"ARM requests {snapshot.arm_requests} | 429s {throttled} | throttle waits {wait_s:.1f}s | "
        f"polls queued {snapshot.polls_queued}", style="yellow" if throttled or wait_s >= 1 else "dim",
    ))  # fmt: skip
    rollout = rollout_text(snapshot)
    if rollout:
        grid.add_row(Text(rollout, style="bold cyan" if snapshot.soak_left_s is not None else "cyan"))
    slow = slowest_text(snapshot.slowest)
    if slow:
        grid.add_row(Text(f"slowest: {slow}", style="dim"))
    if snapshot.stopped_reason:
        grid.add_row(Text(f"dispatch stopped: {snapshot.stopped_reason}", style="bold yellow"))
    return Panel(grid, title=f"{title} run {snapshot.run_id}", title_align="left", box=ASCII2)
