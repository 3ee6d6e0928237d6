"""The run display: a live rich panel on a real terminal (a PTY under pexpect), plain lines with no
escape codes when piped, ``--quiet``, ``--verbose``, ``--no-color`` / ``NO_COLOR``; and the panel
rendered from snapshots in-process."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pexpect
import pytest
from _fleet_support import fleet_toml

from azrun.cli._progress import LiveProgress, PlainProgress, QuietProgress, make_display, render_panel
from azrun.fleet import ProgressSnapshot
from azrun.models import Target, TargetKind, TargetResult, TargetState

SCRIPT = "for i in 1 2 3; do echo tick $i; sleep 0.5; done"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def sim(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]) -> Any:
    s = sim_factory(fleet_toml(vms=6))
    azure_env(s)
    return s


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "AZRUN_DEBUG")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", **extra})
    return env


def _run_on_pty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "azrun", *args],
        env=env or _env(),
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=60,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, child.signalstatus
    return child.exitstatus, str(child.before)


def test_live_panel_on_a_terminal(sim: Any) -> None:
    rc, screen = _run_on_pty("run", "--all", "--command", SCRIPT)
    assert rc == 0, screen
    # the panel was drawn (rich draws boxes and moves the cursor) with its counts and rates
    assert "dispatched/s" in screen and "completed/s" in screen and "ETA" in screen
    assert "+- azrun run " in screen and "\x1b[" in screen
    assert re.search(r"Running \d", screen), screen
    # output lines printed above it, whole; and the final summary
    plain = ANSI.sub("", screen)
    for i in (1, 2, 3):
        assert re.search(rf"\[vm-00[1-6]\] tick {i}", plain), plain
    assert re.search(r"6 targets\s+Succeeded: 6", plain), plain
    assert re.search(r"vm-00\d\s+Succeeded", plain)  # terminal state lines above the panel


def test_piped_output_has_no_escape_codes(sim: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "azrun", "run", "--all", "--verbose", "--command", SCRIPT],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout and "\x1b[" not in done.stderr
    assert "tick 3" in done.stdout and "Succeeded: 6" in done.stdout
    assert "dispatched/s" not in done.stderr  # no panel; plain state lines instead
    assert re.search(r"vm-00\d\s+Running", done.stderr) and re.search(r"vm-00\d\s+Succeeded", done.stderr)


def test_quiet_and_no_color_on_a_terminal(sim: Any) -> None:
    rc, screen = _run_on_pty("--no-color", "run", "--all", "--quiet", "--command", "echo hi")
    assert rc == 0, screen
    assert "\x1b[" not in screen  # no panel, no colour
    assert "Succeeded: 6" in screen
    assert "[vm-001] hi" not in screen and "targets;" not in screen
    rc, screen = _run_on_pty(
        "run", "--all", "--output-mode", "summary", "--command", "echo hi", env=_env(NO_COLOR="1")
    )
    assert rc == 0, screen
    assert "dispatched/s" in screen  # the panel still draws (cursor moves) ...
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", screen)  # ... without a single colour


# -- in-process ----------------------------------------------------------------------------------------
def _target(name: str) -> Target:
    rid = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(
        resource_id=rid,
        name=name,
        kind=TargetKind.VM,
        subscription_id="s",
        resource_group="rg",
        location="westeurope",
        os="linux",
        power_state="running",
    )


def _snapshot(**kw: Any) -> ProgressSnapshot:
    base: dict[str, Any] = dict(
        run_id="r1", elapsed_s=12.0, total=10, counts={"Running": 3, "Succeeded": 5, "Failed": 1, "Pending": 1},
        dispatched=9, dispatch_rate_per_s=0.75, eta_s=7.0, polls_queued=3, arm_requests=40, throttled_429=2,
        slowest=(("vm-9", 11.0), ("vm-8", 9.0), ("vm-7", 8.0), ("vm-6", 1.0)),
    )  # fmt: skip
    base.update(kw)
    return ProgressSnapshot(**base)


def _render(renderable: Any) -> str:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(renderable)
    return buf.getvalue()


def test_panel_shows_counts_rates_throttle_and_slowest() -> None:
    text = _render(render_panel(_snapshot()))
    assert "Running 3" in text and "Succeeded 5" in text and "Failed 1" in text
    # one snapshot at 12 s: 6 ended, 9 dispatched by then; 4 remain at 0.5 completed/s
    assert "6/10 done" in text and "0.8 dispatched/s" in text and "0.5 completed/s" in text and "ETA 8s" in text
    assert "ARM requests 40" in text and "429s 2" in text
    assert "vm-9 11s" in text and "vm-7 8s" in text and "vm-6" not in text  # three slowest only
    assert "selecting targets" in _render(render_panel(None))
    stopped = _render(render_panel(_snapshot(stopped_reason="error budget spent")))
    assert "dispatch stopped: error budget spent" in stopped


def _scripted(steps: list[dict[str, Any]]) -> list[str]:
    """Feed a scripted run's snapshots to one live display; the panel text after each."""
    from rich.console import Console

    display = LiveProgress(Console(file=io.StringIO(), width=120, color_system=None), redirect_stdout=False)
    screens = []
    for step in steps:
        display.on_progress(_snapshot(**step))
        screens.append(_render(display.__rich__()))
    return screens


def test_every_panel_figure_against_a_scripted_run() -> None:
    """10 targets, 2 of them skipped (stopped); 4 dispatched per second until 8 are; each runs ~3 s."""
    common: dict[str, Any] = dict(total=10, eta_s=0.0, throttled_429=0, arm_requests=0, polls_queued=0)
    steps = [
        dict(common, elapsed_s=1.0, dispatched=4, counts={"Running": 4, "Pending": 4, "Skipped": 2},
             slowest=(("vm-1", 1.0), ("vm-2", 1.0), ("vm-3", 1.0), ("vm-4", 1.0))),
        dict(common, elapsed_s=2.0, dispatched=8, counts={"Running": 8, "Skipped": 2},
             slowest=(("vm-1", 2.0), ("vm-2", 2.0), ("vm-3", 2.0), ("vm-4", 2.0), ("vm-5", 1.0))),
        dict(common, elapsed_s=4.0, dispatched=8, counts={"Running": 4, "Succeeded": 4, "Skipped": 2},
             slowest=(("vm-5", 3.0), ("vm-6", 3.0), ("vm-7", 2.0), ("vm-8", 2.0))),
        dict(common, elapsed_s=30.0, dispatched=8, counts={"Running": 1, "Succeeded": 6, "Failed": 1, "Skipped": 2},
             slowest=(("vm-8", 28.0),)),
        dict(common, elapsed_s=40.0, dispatched=8, counts={"Succeeded": 7, "Failed": 1, "Skipped": 2}, slowest=()),
    ]
    first, second, third, fourth, last = _scripted(steps)
    # nothing ended yet: no ETA (never "ETA 0s" with nothing completed); skipped are not done
    assert "0/8 done (2 skipped)" in first and "ETA -" in first and "ETA 0s" not in first
    assert "4.0 dispatched/s" in first and "0.0 completed/s" in first
    # four targets tied at 1 s are not "the slowest": the tie is named as such
    assert "slowest: 4 running for 1s" in first and "vm-1" not in first
    assert "slowest: 4 running for 2s" in second  # a tie of 4 is not split to show 3 of them
    # 4 ended in 4 s: 1.0 completed/s, 4 remain: ETA 4s; the dispatch rate is 8 in 2 s
    assert "4/8 done (2 skipped)" in third and "1.0 completed/s" in third and "ETA 4s" in third
    assert "4.0 dispatched/s" in third
    assert "slowest: vm-5 3s | vm-6 3s" in third and "vm-7" not in third  # no partial tie group
    # dispatch ended at 2 s: the rate stays 4.0/s at 30 s instead of decaying to 8/30
    assert "4.0 dispatched/s" in fourth and "0.3 dispatched/s" not in fourth
    assert "7/8 done (2 skipped)" in fourth and "slowest: vm-8 28s" in fourth
    # the window: 3 more ended between 4 s and 30 s (26 s); 1 remains
    assert "0.1 completed/s" in fourth and "ETA 9s" in fourth
    assert "8/8 done (2 skipped)" in last and "ETA 0s" in last and "slowest" not in last


def test_live_progress_prints_lines_above_the_panel() -> None:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=True, color_system=None)
    got: list[str] = []
    display = LiveProgress(
        console, sink=lambda t, s, line: got.append(f"{t.name}:{line}"), redirect_stdout=False
    )
    with display:
        display.on_progress(_snapshot(elapsed_s=1.0, counts={"Succeeded": 1}))
        display.on_progress(_snapshot(elapsed_s=3.0, counts={"Succeeded": 5}))
        target = _target("vm-1")
        display.on_line(target, "stdout", "hello")
        display.on_target(TargetResult(target=target, state=TargetState.RUNNING))
        display.on_target(
            TargetResult(target=target, state=TargetState.FAILED, exit_code=3, message="boom\nbad")
        )
        assert display._completed_rate() == pytest.approx(5 / 3)  # 5 ended in 3 s (window not yet full)
    out = ANSI.sub("", buf.getvalue())
    assert got == ["vm-1:hello"]
    assert "vm-1" in out and "Failed exit=3 boom bad" in out
    assert not re.search(r"vm-1\s+Running", out)  # not verbose: only finished targets get a line


def test_make_display_picks_by_terminal_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    piped = io.StringIO()
    assert isinstance(make_display("stream", err=piped), PlainProgress)
    assert isinstance(make_display("stream", quiet=True, err=piped), QuietProgress)
    assert isinstance(make_display("summary", live=True, err=piped), LiveProgress)
    with pytest.raises(Exception, match="output-mode"):
        make_display("loud")
    plain = make_display("summary", verbose=True, err=piped)
    target = _target("vm-2")
    plain.on_target(TargetResult(target=target, state=TargetState.DISPATCHING))
    plain.on_target(TargetResult(target=target, state=TargetState.SUCCEEDED, exit_code=0))
    assert "Dispatching" in piped.getvalue() and "Succeeded exit=0" in piped.getvalue()
    assert "\x1b[" not in piped.getvalue()


@pytest.mark.parametrize("state", [TargetState.TIMED_OUT, TargetState.CANCELED, TargetState.UNDELIVERABLE])
def test_no_exit_code_is_shown_when_the_script_s_exit_is_unknown(state: TargetState) -> None:
    from azrun.cli._result import target_record
    from azrun.cli._run_view import render_targets

    result = TargetResult(target=_target("vm-3"), state=state, exit_code=0, message="stopped")
    piped = io.StringIO()
    plain = make_display("summary", err=piped)
    plain.on_target(result)
    assert state.value in piped.getvalue() and "exit=" not in piped.getvalue()
    assert target_record(result, run_id="r")["exitCode"] is None
    row = render_targets([result], color=False).splitlines()[1]
    assert " 0 " not in row
    failed = TargetResult(target=_target("vm-4"), state=TargetState.FAILED, exit_code=0)
    plain.on_target(failed)
    assert "Failed exit=0" in piped.getvalue()  # a script that ran and ended keeps its code
