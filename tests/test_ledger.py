"""azrun.ledger: file mode, schema, transactions, the Dispatching-before-PUT claim, secrets."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from azrun.errors import LedgerError
from azrun.ledger import SCHEMA_VERSION, Ledger, target_from_json, target_to_json
from azrun.models import OutputRef, RunSpec, SkippedTarget, Target, TargetKind, TargetResult, TargetState

SUB = "11111111-1111-4111-8111-111111111111"
SECRET = "pp-Sup3r-S3cret-value"
PASSWORD = "run-as-P4ssw0rd"


def _target(i: int, kind: TargetKind = TargetKind.VM, power: str = "running") -> Target:
    if kind is TargetKind.VMSS_UNIFORM:
        rid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{i}"
        return Target(rid, f"ss/{i}", kind, SUB, "rg", "westeurope", "linux", power, scale_set="ss",
                      instance_id=str(i), vm_name=f"ss_{i}")
    rid = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{i:03d}"
    return Target(rid, f"vm-{i:03d}", kind, SUB, "rg", "westeurope", "linux", power, tags=(("env", "prod"),),
                  vm_name=f"vm-{i:03d}", system_identity=True, user_identity_client_ids=("c1",))


def _spec() -> RunSpec:
    return RunSpec(script="echo $TOKEN", parameters=(("mode", "fast"),), protected_parameters=(("TOKEN", SECRET),),
                   run_as_user="svc", run_as_password=PASSWORD, timeout_s=120, script_name="job.sh")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path / "state")


def test_files_are_private_and_the_journal_is_wal(ledger: Ledger, tmp_path: Path) -> None:
    ledger.create_run("r1", spec=_spec(), targets=[_target(1)])
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    for extra in tmp_path.glob("state/ledger.db-*"):
        assert stat.S_IMODE(os.stat(extra).st_mode) == 0o600


def test_a_run_and_its_targets_round_trip(ledger: Ledger) -> None:
    targets = [_target(1), _target(2), _target(0, TargetKind.VMSS_UNIFORM)]
    stopped = SkippedTarget(_target(9, power="deallocated"), "VM is deallocated")
    ledger.create_run("r1", spec=_spec(), targets=targets, skipped=[stopped],
                      selector={"describe": "--tag env=prod"}, options={"fleet": {"max_errors": "0"}})
    run = ledger.require_run("r1")
    assert run.status == "running" and run.pid == os.getpid()
    assert run.spec["script_sha256"] == _spec().script_sha256 and run.selector == {"describe": "--tag env=prod"}
    rows = ledger.targets("r1")
    assert [r.target for r in rows] == [*targets, stopped.target]  # every Target field survives
    assert [r.state for r in rows] == [TargetState.PENDING] * 3 + [TargetState.SKIPPED]
    assert rows[-1].message == "VM is deallocated" and rows[-1].ended_at is not None
    assert ledger.counts("r1") == {"Pending": 3, "Skipped": 1}
    assert ledger.require_run(None).id == "r1"  # latest


def test_target_json_keeps_every_field() -> None:
    t = _target(4)
    assert target_from_json(target_to_json(t)) == t


def test_dispatch_claim_only_from_pending(ledger: Ledger) -> None:
    t = _target(1)
    ledger.create_run("r1", spec=_spec(), targets=[t, _target(2)])
    now = datetime.now(timezone.utc)
    assert ledger.begin_dispatch("r1", t.resource_id, run_command_name="azrun-r1", run_command_id="id",
                                 dispatched_at=now)
    row = ledger.target("r1", t.resource_id)
    assert row is not None and row.state is TargetState.DISPATCHING and row.run_command_name == "azrun-r1"
    # a second claim (another process, or a replay) is refused: nothing is sent twice
    assert not ledger.begin_dispatch("r1", t.resource_id, run_command_name="azrun-r1", run_command_id="id",
                                     dispatched_at=now)
    # `azrun cancel` skips what is still pending; a runner's later claim then fails
    assert ledger.skip_pending("r1", "run canceled") == 1
    assert not ledger.begin_dispatch("r1", _target(2).resource_id, run_command_name="n", run_command_id="i",
                                     dispatched_at=now)


def test_results_and_cleanup_marks(ledger: Ledger) -> None:
    t = _target(1)
    ledger.create_run("r1", spec=_spec(), targets=[t])
    ledger.begin_dispatch("r1", t.resource_id, run_command_name="azrun-r1", run_command_id="id",
                          dispatched_at=datetime.now(timezone.utc))
    result = TargetResult(t, TargetState.FAILED, exit_code=3, message="exit 3", run_command_id="id",
                          started_at=datetime.now(timezone.utc), ended_at=datetime.now(timezone.utc),
                          output=OutputRef("https://x/o", "https://x/e", 10, 2, True), stdout_tail="a\nb",
                          stderr_tail="e", arm_requests=4)
    ledger.record_result("r1", result)
    assert [r.target for r in ledger.uncleaned()] == [t]
    row = ledger.target("r1", t.resource_id)
    assert row is not None and row.to_result() == result
    ledger.update_target("r1", t.resource_id, cleaned_at=datetime.now(timezone.utc))
    assert ledger.uncleaned() == []
    with pytest.raises(ValueError):
        ledger.update_target("r1", t.resource_id, target="nope")
    with pytest.raises(LedgerError):
        ledger.update_target("r1", "/not/there", message="x")


def test_secrets_are_never_written(ledger: Ledger) -> None:
    ledger.create_run("r1", spec=_spec(), targets=[_target(1)], options={"password": True})
    ledger.close()
    blob = b"".join(p.read_bytes() for p in ledger.path.parent.iterdir())
    assert SECRET.encode() not in blob and PASSWORD.encode() not in blob
    assert b"TOKEN" in blob  # the name is recorded, so resume knows to ask for it


def test_a_transaction_failure_changes_nothing(ledger: Ledger) -> None:
    t = _target(1)
    ledger.create_run("r1", spec=_spec(), targets=[t])
    with pytest.raises(LedgerError):
        ledger.create_run("r1", spec=_spec(), targets=[_target(2)])  # duplicate id: rolled back whole
    assert [r.target for r in ledger.targets("r1")] == [t]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer azrun"):
        Ledger(path)


def test_an_unwritable_state_dir_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError) as info:
        Ledger.open(blocker / "state")
    assert info.value.hint and "state-dir" in info.value.hint


def test_another_process_reads_while_a_run_writes(ledger: Ledger) -> None:
    """WAL: `azrun status` in another shell sees committed states without blocking the run."""
    t = _target(1)
    ledger.create_run("r1", spec=_spec(), targets=[t])
    ledger.begin_dispatch("r1", t.resource_id, run_command_name="n", run_command_id="i", dispatched_at=datetime.now(timezone.utc))
    code = (
        "import sys; from azrun.ledger import Ledger; "
        f"L = Ledger.open({str(ledger.path.parent)!r}); print(L.counts('r1'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "{'Dispatching': 1}"


def test_liveness_of_the_driving_process(ledger: Ledger) -> None:
    ledger.create_run("r1", spec=_spec(), targets=[_target(1)])
    assert not ledger.require_run("r1").driven_here_by_live_process  # ourselves
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ledger._db.execute("UPDATE runs SET pid=? WHERE id='r1'", (child.pid,))
        assert ledger.require_run("r1").driven_here_by_live_process
    finally:
        child.kill()
        child.wait()
    assert not ledger.require_run("r1").driven_here_by_live_process


def test_waves_and_attempts_are_kept_and_a_schema_2_ledger_is_migrated(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "state") as ledger:
        ledger.create_run("r1", spec=_spec(), targets=[_target(1), _target(2)], waves=[0, 1])
        ledger.update_target("r1", _target(2).resource_id, attempt=3)
        rows = {r.target.name: r for r in ledger.targets("r1")}
        assert (rows["vm-001"].wave, rows["vm-002"].wave, rows["vm-002"].attempt) == (0, 1, 3)
        assert rows["vm-002"].to_result().attempt == 3 and rows["vm-002"].to_result().wave == 1
        path = ledger.path
    with sqlite3.connect(path) as db:  # back to what schema 2 looked like
        db.execute("ALTER TABLE targets DROP COLUMN attempt")
        db.execute("ALTER TABLE targets DROP COLUMN wave")
        db.execute("UPDATE schema_version SET version = 2")
    with Ledger.open(tmp_path / "state") as again:
        rows = {r.target.name: r for r in again.targets("r1")}
        assert (rows["vm-002"].wave, rows["vm-002"].attempt) == (0, 1)
        assert again._db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
