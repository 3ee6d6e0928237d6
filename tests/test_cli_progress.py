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
    text = _render(render_panel(_snapshot(), 0.4))
    assert "Running 3" in text and "Succeeded 5" in text and "Failed 1" in text
    assert (
        "6/10 done" in text and "0.8 dispatched/s" in text and "0.4 completed/s" in text and "ETA 7s" in text
    )
    assert "ARM requests 40" in text and "429s 2" in text
    assert "vm-9 11s" in text and "vm-7 8s" in text and "vm-6" not in text  # three slowest only
    assert "selecting targets" in _render(render_panel(None, 0.0))
    stopped = _render(render_panel(_snapshot(stopped_reason="error budget spent"), 0.0))
    assert "dispatch stopped: error budget spent" in stopped


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
        assert display._completed_rate() == pytest.approx(2.0)
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
