"""One exit-code table for every command (``azrun.cli._exit``): each code is produced where its
meaning applies, with azrun's one-line error (no raw SDK line before it) and a hint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from azrun.cli._exit import ExitCode, exit_code_for
from azrun.errors import AuthError, ConfigError, LedgerError, NoTargetsMatched, OutputError, PermissionDenied

SUB = "11111111-1111-4111-8111-111111111111"


def _azrun(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "AZRUN_", "IDENTITY_", "MSI_")) and k not in ("NO_COLOR",)}
    return subprocess.run([sys.executable, "-m", "azrun", *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=120, check=False)


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), proc.stderr
    return lines[0], lines[1]


def test_the_table_maps_each_error_once() -> None:
    assert exit_code_for(ConfigError("x")) is ExitCode.USAGE
    assert exit_code_for(NoTargetsMatched("x")) is ExitCode.NOT_FOUND
    assert exit_code_for(AuthError("x")) is ExitCode.AUTH
    assert exit_code_for(PermissionDenied("x")) is ExitCode.PERMISSION
    assert exit_code_for(OutputError("x")) is ExitCode.OUTPUT_STORAGE
    assert exit_code_for(LedgerError("x")) is ExitCode.LOCAL_STATE
    assert exit_code_for(RuntimeError("x")) is ExitCode.INTERNAL
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes)) and ExitCode.TARGET_FAILED == 1 and ExitCode.TERMINATED == 143


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _azrun("bogus").returncode == 2
    assert _azrun("status", "--bogus").returncode == 2
    bad = tmp_path / "bad.sh"
    bad.write_bytes(b"\xff\xfe echo hi\n")
    proc = _azrun("run", "--all", "-f", str(bad), AZRUN_STATE_DIR=str(tmp_path / "s"))
    assert proc.returncode == 2
    error, hint = _one_line_error(proc)
    assert f"--script {bad} is not UTF-8 text" in error and "UTF-8" in hint


def test_no_such_run_exits_3(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    for command in ("status", "resume", "rerun", "cancel", "logs", "report"):
        proc = _azrun(command, "20991231-2359-abcdef", *(["--failed"] if command == "rerun" else []),
                      AZRUN_STATE_DIR=state)
        assert proc.returncode == 3, (command, proc.stderr)
        error, _ = _one_line_error(proc)
        assert "no such run '20991231-2359-abcdef'" in error
    empty = _azrun("status", "last", AZRUN_STATE_DIR=state)
    assert empty.returncode == 3 and "no runs recorded" in empty.stderr


def test_corrupted_ledger_exits_8(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_text("this is not a database, it was overwritten\n" * 20)
    proc = _azrun("status", AZRUN_STATE_DIR=str(tmp_path))
    assert proc.returncode == 8
    error, hint = _one_line_error(proc)
    assert "the ledger is unusable" in error and "move ledger.db" in hint


def test_missing_ca_bundle_exits_8(tmp_path: Path) -> None:
    proc = _azrun("targets", "--all", AZRUN_ARM_ENDPOINT="https://127.0.0.1:9", AZRUN_CA_BUNDLE="/nope/ca.pem",
                  AZURE_SUBSCRIPTION_ID=SUB)
    assert proc.returncode == 8
    error, hint = _one_line_error(proc)
    assert "the CA bundle /nope/ca.pem (AZRUN_CA_BUNDLE) does not exist" in error and "PEM" in hint


def test_auth_failure_exits_4_with_no_sdk_line_before_the_error() -> None:
    env = {"AZRUN_AUTH": "msi", "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
           "AZURE_SUBSCRIPTION_ID": SUB}
    proc = _azrun("targets", "--all", **env)
    assert proc.returncode == 4
    error, _ = _one_line_error(proc)  # exactly azrun's two lines: azure-identity's WARNINGs are held back
    assert "IMDS" in error
    verbose = _azrun("targets", "--all", "-v", **env)
    assert verbose.returncode == 4 and "get_token" in verbose.stderr  # -v shows the SDK's warnings


@pytest.mark.parametrize("flag", ["--debug", "--no-color", "--only-show-errors"])
def test_global_flags_after_the_command_reach_the_error_printer(flag: str) -> None:
    proc = _azrun("run", "--all", flag)
    if flag == "--debug":
        assert "Traceback" in proc.stderr and "ConfigError: no script given" in proc.stderr
    else:
        assert proc.returncode == 2 and proc.stderr.startswith("error: no script given")
