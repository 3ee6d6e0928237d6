"""``azrun run | status | runs | resume | rerun | cancel | cleanup`` end to end against a local
Azure: exit codes, crash + resume (kill -9), Ctrl-C, and secrets that must appear nowhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _fleet_support import executions, executions_per_machine, fleet_toml

from azrun.cli import main
from azrun.ledger import Ledger
from azrun.models import TargetState
from azrun.runcommand import run_command_name


@pytest.fixture
def sim(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]]) -> Any:
    s = sim_factory(fleet_toml(vms=4, stopped=["vm-off"]))
    azure_env(s)
    return s


def state_dir() -> Path:
    return Path(os.environ["AZRUN_STATE_DIR"])


def ledger() -> Ledger:
    return Ledger.open(state_dir())


def azrun(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "azrun", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for(pred: Callable[[], bool], timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def latest_counts() -> dict[str, int]:
    try:
        with ledger() as led:
            rid = led.latest_run_id()
            return led.counts(rid) if rid else {}
    except Exception:
        return {}


RUN = ["run", "--tag", "env=prod", "--output-mode", "summary"]


def test_exit_codes(sim: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--command", "echo hi"]) == 0
    out = capsys.readouterr()
    assert "Succeeded: 4" in out.out and "Skipped: 1" in out.out and "vm-off" in out.out
    assert main([*RUN, "--command", 'case "$(hostname)" in vm-002) exit 7;; esac']) == 1
    out = capsys.readouterr()
    assert "vm-002" in out.out and "Failed" in out.out
    assert main(["run", "--tag", "env=prod"]) == 2  # no script
    assert "no script given" in capsys.readouterr().err
    assert main([*RUN, "--command", "true", "--max-errors", "lots"]) == 2
    assert main([*RUN, "--command", "true", "--param", "x"]) == 2  # not NAME=VALUE


def test_permission_errors_exit_2(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    azure_env(sim_factory(fleet_toml(vms=2, access='  "system:vm-001" = "none"')))
    assert main([*RUN, "--command", "true"]) == 2
    assert "error:" in capsys.readouterr().err


def test_status_and_runs_read_the_ledger(sim: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--command", "echo one"]) == 0
    assert main([*RUN, "--command", "exit 2", "--max-errors", "100%"]) == 1
    capsys.readouterr()
    with ledger() as led:
        first, second = [r.id for r in reversed(led.runs())]
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert out.index(second) < out.index(first) and "Failed:4" in out and "Succeeded:4" in out
    assert main(["status", first, "--all"]) == 0
    out = capsys.readouterr().out
    assert f"run {first}" in out and out.count("Succeeded") >= 4
    assert main(["status", "--json"]) == 0  # latest run
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["run"] for r in rows} == {second}
    assert sorted(r["state"] for r in rows) == ["Failed"] * 4 + ["Skipped"]
    assert main(["status", "no-such-run"]) == 2


def test_kill_9_then_resume_runs_every_target_exactly_once(sim: Any, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("sleep 1.5\necho done\n")
    proc = azrun(*RUN, "--script", str(script), "--max-concurrency", "2")
    try:
        wait_for(lambda: latest_counts().get("Running", 0) >= 2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with ledger() as led:
        run = led.require_run(None)
        before = led.counts(run.id)
    assert run.status == "running" and before.get("Pending", 0) >= 1  # the crash left work behind
    done = subprocess.run([sys.executable, "-m", "azrun", "resume", run.id, "--output-mode", "summary"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Succeeded: 4" in done.stdout
    with ledger() as led:
        rows = led.targets(run.id)
        assert led.require_run(run.id).status == "succeeded"
    assert sorted(r.state.value for r in rows) == ["Skipped"] + ["Succeeded"] * 4
    assert all(r.cleaned_at is not None for r in rows if r.state is TargetState.SUCCEEDED)
    per = executions_per_machine(sim, run_command_name(run.id))
    assert len(per) == 4 and set(per.values()) == {1}  # nothing ran twice, nothing was lost


def test_ctrl_c_without_a_terminal_leaves_targets_running_then_cancel(sim: Any) -> None:
    proc = azrun(*RUN, "--command", "sleep 60")
    try:
        wait_for(lambda: latest_counts().get("Running", 0) == 4)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "azrun resume" in err
    with ledger() as led:
        run = led.require_run(None)
        assert run.status == "interrupted"
        assert led.counts(run.id) == {"Running": 4, "Skipped": 1}
    assert sim.admin_get("stats")["runningScripts"] == 4  # left running, as asked
    done = subprocess.run([sys.executable, "-m", "azrun", "cancel", run.id], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Canceled: 4" in done.stdout
    assert sim.admin_get("stats")["runningScripts"] == 0


def test_second_ctrl_c_exits_at_once_with_the_ledger_intact(sim: Any) -> None:
    proc = azrun(*RUN, "--command", "sleep 60", "--max-concurrency", "1")
    try:
        wait_for(lambda: latest_counts().get("Running", 0) == 1)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    with ledger() as led:
        run = led.require_run(None)
        assert sum(led.counts(run.id).values()) == 5  # every row is still there
    subprocess.run([sys.executable, "-m", "azrun", "cancel", run.id], capture_output=True, timeout=120, check=True)


def test_cancel_a_live_run_from_another_shell(sim: Any) -> None:
    proc = azrun(*RUN, "--command", "sleep 60", "--max-concurrency", "2")
    try:
        wait_for(lambda: latest_counts().get("Running", 0) == 2)
        with ledger() as led:
            rid = led.require_run(None).id
        done = subprocess.run([sys.executable, "-m", "azrun", "cancel", rid], capture_output=True, text=True,
                              timeout=120)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert done.returncode == 0, done.stderr
    assert proc.returncode == 1  # the run ended with canceled targets
    with ledger() as led:
        assert led.require_run(rid).status == "canceled"
        assert led.counts(rid) == {"Canceled": 2, "Skipped": 3}
    assert sim.admin_get("stats")["runningScripts"] == 0
    assert len(executions(sim)) == 2


def test_rerun_failed_and_cleanup(sim: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flag = tmp_path / "fixed"
    script = tmp_path / "job.sh"
    script.write_text(f'[ -e {flag} ] && exit 0\ncase "$(hostname)" in vm-001|vm-003) exit 4;; esac\n')
    assert main([*RUN, "--script", str(script), "--max-errors", "100%", "--keep"]) == 1
    with ledger() as led:
        first = led.require_run(None).id
    flag.write_text("")
    assert main(["rerun", first, "--failed", "--output-mode", "summary"]) == 0
    with ledger() as led:
        second = led.require_run(None)
        assert second.options["rerun_of"] == first
        assert sorted(t.target.name for t in led.targets(second.id)) == ["vm-001", "vm-003"]
    capsys.readouterr()
    # both runs kept their run commands (--keep is recorded and re-used by rerun); cleanup removes them
    assert main(["cleanup", "--older-than", "0s"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(run_command_name(first)) == 4
    assert captured.out.count(run_command_name(second.id)) == 2
    assert main(["cleanup", "--older-than", "0s", "--all-azrun"]) == 0
    assert "deleted 0 run command(s)" in capsys.readouterr().err


def test_protected_values_appear_nowhere(sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    secret = "Cl1-Secret-Value-0815"
    monkeypatch.setenv("AZRUN_PARAM_TOKEN", secret)
    caplog.set_level("DEBUG")
    done = subprocess.run(
        [sys.executable, "-m", "azrun", "run", "--tag", "env=prod", "--protected-param", "TOKEN", "--verbose",
         "--command", 'echo "token is $TOKEN"; [ -n "$TOKEN" ]'],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "[vm-001] token is ***" in done.stdout  # the output printed, the value scrubbed
    assert secret not in done.stdout + done.stderr
    stored = b"".join(p.read_bytes() for p in state_dir().iterdir() if p.is_file())
    assert secret.encode() not in stored and b"TOKEN" in stored
    assert secret not in sim.request_log.read_text() and secret not in sim.stderr_path.read_text()
    # secrets on argv are refused outright when the script declares them
    declared = tmp_path / "s.sh"
    declared.write_text("# --- azrun ---\n# [parameters.token]\n# secret = true\n# --- end ---\necho hi\n")
    assert main([*RUN, "--script", str(declared), "--param", f"token={secret}"]) == 2
    assert secret not in caplog.text


def test_ctrl_c_on_a_terminal_asks_and_cancels(sim: Any) -> None:
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "azrun", *RUN, "--command", "sleep 60"], env=dict(os.environ),
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    try:
        wait_for(lambda: latest_counts().get("Running", 0) == 4)
        child.sendintr()
        child.expect_exact("cancel in-flight targets? [y/N]")
        child.sendline("y")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    with ledger() as led:
        run = led.require_run(None)
        assert run.status == "canceled"
        assert led.counts(run.id) == {"Canceled": 4, "Skipped": 1}
    assert sim.admin_get("stats")["runningScripts"] == 0
