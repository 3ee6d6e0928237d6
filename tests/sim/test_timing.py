"""The timing profiles: fast by default, realistic draws from the recorded distributions."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from arm_support import TEST_FLEET, VM_PREFIX, Raw, start_sim, wait_for

from azrun.sim.fleetspec import FleetError, load_fleet
from azrun.sim.fleettypes import SimSettings
from azrun.sim.timing import DELETE_S, VM_START_S, VMSS_START_S, Timing


def test_fast_is_the_default_and_quick() -> None:
    t = Timing(SimSettings())
    assert not t.realistic and not t.status_cadence
    assert t.start_delay("/vm/1", scale_set_vm=False) == pytest.approx(0.2)
    assert t.delete_duration() == 0.0


def test_realistic_draws_from_the_recorded_ranges_reproducibly() -> None:
    settings = SimSettings(profile="realistic", seed=3)
    first, second = Timing(settings), Timing(settings)
    vm = [first.start_delay(f"/vm/{i}", scale_set_vm=False) for i in range(200)]
    assert vm == [second.start_delay(f"/vm/{i}", scale_set_vm=False) for i in range(200)]  # seeded
    # each VM's first run also installs the handler (60-120 s); its second run does not
    assert all(7 + 60 <= d <= 14 + 120 for d in vm)
    again = [first.start_delay(f"/vm/{i}", scale_set_vm=False) for i in range(200)]
    assert all(7 <= d <= 14 for d in again) and 9 <= statistics.median(again) <= 11
    [first.start_delay(f"/ss/{i}", scale_set_vm=True) for i in range(200)]  # the handler installs
    ss = [first.start_delay(f"/ss/{i}", scale_set_vm=True) for i in range(200)]
    assert all(7 <= d <= 44 for d in ss) and 24 <= statistics.median(ss) <= 31
    deletes = [first.delete_duration() for _ in range(300)]
    assert min(deletes) >= 10 and max(deletes) <= 211 and 10 <= statistics.median(deletes) <= 19
    assert first.status_cadence
    assert statistics.median(VM_START_S) == 9.5 and statistics.median(VMSS_START_S) == 27.5
    assert max(DELETE_S) == 211.0


def test_explicit_settings_win_over_the_profile() -> None:
    spec = load_fleet(
        "[sim]\nprofile = \"realistic\"\nagent_start_delay_s = 1\nhandler_install_s = 0\n"
        "delete_duration_s = [2, 3]\nagent_status_cadence = false\n"
    )
    t = Timing(spec.sim)
    assert t.start_delay("/vm/1", scale_set_vm=True) == 1.0 and not t.status_cadence
    assert 2 <= t.delete_duration() <= 3
    with pytest.raises(FleetError, match="profile"):
        load_fleet('[sim]\nprofile = "slow"\n')
    with pytest.raises(FleetError, match="delete_duration_s"):
        load_fleet("[sim]\ndelete_duration_s = [3, 1]\n")


@pytest.mark.slow
def test_realistic_run_starts_late_and_reports_on_the_agents_cadence(tmp_path: Path) -> None:
    """Recorded latency (>= 7 s), state changes only at the agent's reports, a lasting DELETE."""
    fleet = TEST_FLEET.read_text()
    for key in ("agent_start_delay_s = 0.05", "agent_status_interval_s = 0.2", "delete_duration_s = 0.3"):
        fleet = fleet.replace(key, "")
    fleet = fleet.replace("[sim]\n", '[sim]\nprofile = "realistic"\nhandler_install_s = 0\nagent_status_interval_s = 2\n'
                          "delete_duration_s = 1.5\n", 1)
    sim = start_sim(tmp_path, fleet)
    try:
        raw = Raw(sim)
        path = f"{VM_PREFIX}/vm-web-01/runCommands/real"
        put_at = time.monotonic()
        assert raw("PUT", path, body={"location": "westeurope", "properties": {"source": {"script": "echo hi"}}}).status_code == 201
        time.sleep(5)
        iv = raw("GET", path, params={"$expand": "instanceView"}).json()["properties"]["instanceView"]
        assert iv["executionState"] == "Pending"  # no VM starts a script within 7 s of the PUT
        done = wait_for(
            lambda: (p := raw("GET", path, params={"$expand": "instanceView"}).json()["properties"])
            ["provisioningState"] == "Succeeded" and p,
            timeout_s=40, interval_s=0.25,
        )
        assert time.monotonic() - put_at >= 7
        assert done["instanceView"]["output"] == "hi\n" and done["instanceView"]["exitCode"] == 0
        started = [e for e in sim.admin_get("executions")["value"] if e["runCommand"] == "real"]
        assert len(started) == 1
        assert raw("DELETE", path).status_code == 202
        assert raw("GET", path).json()["properties"]["provisioningState"] == "Deleting"
        wait_for(lambda: raw("GET", path).status_code == 404, timeout_s=10)
    finally:
        sim.stop()


def test_the_profile_is_settable_from_the_launcher_and_the_cli(tmp_path: Path) -> None:
    from azrun.sim.launcher import SimProcess
    from azrun.sim.server import _parser

    argv = SimProcess(TEST_FLEET, workdir=tmp_path, profile="realistic").argv()
    assert argv[argv.index("--profile") + 1] == "realistic"
    assert "--profile" not in SimProcess(TEST_FLEET, workdir=tmp_path).argv()
    assert _parser().parse_args(["up", "--profile", "realistic"]).profile == "realistic"
    with pytest.raises(SystemExit):
        _parser().parse_args(["up", "--profile", "slow"])
