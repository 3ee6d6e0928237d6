"""Fault injection of the local ARM: errors, resets, latency, conflicts, 429 storms, hung agents,
VMs deallocated on schedule; all seeded, all switchable at runtime through ``/_sim/faults``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from arm_support import SUB1, VM_PREFIX, Raw, compute, error_of, wait_for
from azure.core.exceptions import HttpResponseError

from azrun.sim.launcher import SimProcess

RC_BODY = {"location": "westeurope", "properties": {"source": {"script": "echo done"}}}



@pytest.fixture
def raw(sim: SimProcess) -> Iterator[Raw]:
    yield Raw(sim)
    sim.admin_post("faults", {})  # every test leaves a healthy world behind


def test_error_rate(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"arm_error_rate": 1.0})
    codes = set()
    for _ in range(12):
        resp = raw("GET", f"{VM_PREFIX}/vm-web-01")
        assert resp.status_code in (500, 503)
        codes.add(error_of(resp)["code"])
    assert codes == {"InternalServerError", "ServiceUnavailable"}
    with pytest.raises(HttpResponseError) as exc:
        compute(sim, retry_total=0).virtual_machines.get("rg-web", "vm-web-01")
    assert exc.value.status_code in (500, 503)
    assert sim.admin_get("stats")["requests"]["arm"].get("500", 0) > 0


def test_faults_are_seeded(sim: SimProcess, raw: Raw) -> None:
    runs = []
    for _ in range(2):
        sim.admin_post("faults", {"seed": 42, "arm_error_rate": 0.5})
        runs.append([raw("GET", f"{VM_PREFIX}/vm-web-01").status_code for _ in range(16)])
    assert runs[0] == runs[1] and 200 in runs[0] and set(runs[0]) - {200}


def test_latency(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"arm_latency_ms": 300})
    started = time.monotonic()
    assert raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_connection_resets(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"arm_reset_rate": 1.0})
    with pytest.raises(requests.exceptions.ConnectionError):
        raw("GET", f"{VM_PREFIX}/vm-web-01")
    sim.admin_post("faults", {})
    assert raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200
    reset = [e for e in sim.requests() if e.get("fault") == "reset"]
    assert reset and reset[-1]["status"] == 0 and reset[-1]["op"] == "VirtualMachines_Get"
    assert "Traceback" not in sim.stderr_path.read_text()


def test_conflicts_on_run_command_puts(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"arm_conflict_rate": 1.0})
    resp = raw("PUT", f"{VM_PREFIX}/vm-web-01/runCommands/c", body=RC_BODY)
    assert resp.status_code == 409 and error_of(resp)["code"] == "Conflict"
    assert raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200  # only PUTs conflict
    assert raw("GET", f"{VM_PREFIX}/vm-web-01/runCommands/c").status_code == 404  # nothing was created


def test_throttle_storm(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"arm_throttle_rate": 1.0})
    resp = raw("GET", f"{VM_PREFIX}/vm-web-01")
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 3
    assert [e for e in sim.requests() if e["status"] == 429][-1]["throttle"] == "fault"


def test_hung_agent_never_completes(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"hung_agents": ["vm-web-04"]})
    path = f"{VM_PREFIX}/vm-web-04/runCommands/hung"
    assert raw("PUT", path, body=RC_BODY).status_code == 201
    entry = wait_for(
        lambda: [e for e in sim.admin_get("executions")["value"] if e["runCommand"] == "hung" and e["hung"]]
    )
    assert entry
    time.sleep(0.5)  # the script (echo) ended long ago
    props = raw("GET", path, params={"$expand": "instanceView"}).json()["properties"]
    assert props["provisioningState"] == "Creating" and props["instanceView"]["executionState"] == "Running"
    assert raw("DELETE", path).status_code == 202


def test_deallocate_at(sim: SimProcess, raw: Raw) -> None:
    vm = f"/subscriptions/{SUB1}/resourceGroups/rg-ops/providers/Microsoft.Compute/virtualMachines/vm-ops-01"
    path = f"{vm}/runCommands/long"
    try:
        assert (
            raw("PUT", path, body={**RC_BODY, "properties": {"source": {"script": "sleep 10"}}}).status_code
            == 201
        )
        sim.admin_post("faults", {"deallocate_at": [{"vm": "vm-ops-01", "at_s": 0}]})
        wait_for(
            lambda: (
                raw("GET", vm, params={"$expand": "instanceView"}).json()["properties"]["instanceView"][
                    "statuses"
                ][1]["code"]
                == "PowerState/deallocated"
            )
        )
        props = raw("GET", path).json()["properties"]
        assert props["provisioningState"] == "Failed"
        again = raw("PUT", f"{vm}/runCommands/after", body=RC_BODY)
        assert again.status_code == 409 and error_of(again)["code"] == "OperationNotAllowed"
    finally:
        sim.admin_post("power", {"id": vm, "power": "running"})
        raw("DELETE", path)


def test_admin_rejects_unknown_fault_keys(sim: SimProcess) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as exc:
        sim.admin_post("faults", {"no_such_fault": 1})
    assert exc.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as exc2:
        sim.admin_post("power", {"id": "/nope", "power": "running"})
    assert exc2.value.code == 404


def test_agent_that_never_starts_leaves_the_run_pending(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"agents_never_start": ["vm-web-03"]})
    path = f"{VM_PREFIX}/vm-web-03/runCommands/never"
    put = raw("PUT", path, body=RC_BODY)
    assert put.status_code == 201
    time.sleep(0.5)  # far past the fast profile's dispatch latency
    props = raw("GET", path, params={"$expand": "instanceView"}).json()["properties"]
    assert props["provisioningState"] == "Creating" and props["instanceView"]["executionState"] == "Pending"
    assert "startTime" not in props["instanceView"]
    assert [e for e in sim.admin_get("executions")["value"] if e["runCommand"] == "never"] == []  # nothing ran
    op = raw("GET", put.headers["Azure-AsyncOperation"], api_version=None).json()
    assert op["status"] == "InProgress"
    assert raw("DELETE", path).status_code == 202  # unlike a not-ready agent, the DELETE completes
    wait_for(lambda: raw("GET", path).status_code == 404)


def test_agent_not_ready_never_starts_and_its_delete_never_ends(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"agents_not_ready": ["vm-web-02"]})
    path = f"{VM_PREFIX}/vm-web-02/runCommands/notready"
    assert raw("PUT", path, body=RC_BODY).status_code == 201
    delete = raw("DELETE", path)
    assert delete.status_code == 202
    view = raw("GET", f"{VM_PREFIX}/vm-web-02", params={"$expand": "instanceView"}).json()
    assert view["properties"]["instanceView"]["vmAgent"]["statuses"][0]["displayStatus"] == "Not Ready"
    time.sleep(0.8)  # the test fleet's DELETE lasts 0.3 s when an agent answers
    assert raw("GET", delete.headers["Azure-AsyncOperation"], api_version=None).json()["status"] == "InProgress"
    assert raw("GET", path).json()["properties"]["provisioningState"] == "Deleting"
    assert raw("DELETE", path).headers["Azure-AsyncOperation"] == delete.headers["Azure-AsyncOperation"]
    conflict = raw("PUT", path, body=RC_BODY)  # the name is busy while it is being deleted
    assert conflict.status_code == 409 and error_of(conflict) == {
        "code": "Conflict",
        "message": "Run command extension execution is in progress. Please wait for completion before "
        "invoking a run command.",
    }


def test_outage_resets_then_recovers(sim: SimProcess, raw: Raw) -> None:
    assert sim.admin_post("outage", {"seconds": 0.6}) == {"seconds": 0.6, "mode": "reset"}
    with pytest.raises(requests.exceptions.ConnectionError):
        raw("GET", f"{VM_PREFIX}/vm-web-01")
    assert "requests" in sim.admin_get("stats")  # the admin API still answers
    wait_for(lambda: _answers(raw), timeout_s=5)


def test_outage_refuses_connections_then_listens_again(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("outage", {"seconds": 0.8, "mode": "refuse"})
    time.sleep(0.2)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{sim.env['AZRUN_ARM_ENDPOINT']}/subscriptions", timeout=5, verify=sim.env["AZRUN_CA_BUNDLE"])
    wait_for(lambda: _answers(raw), timeout_s=10, interval_s=0.2)


def _answers(raw: Raw) -> bool:
    try:
        return bool(raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200)
    except requests.exceptions.ConnectionError:
        return False


def test_admin_rejects_a_bad_outage(sim: SimProcess) -> None:
    with pytest.raises(Exception, match="400"):
        sim.admin_post("outage", {"seconds": 0})


def test_extension_busy_answers_the_recorded_conflict(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("faults", {"extensions_busy": ["vm-web-01"]})
    resp = raw("PUT", f"{VM_PREFIX}/vm-web-01/runCommands/busy", body=RC_BODY)
    assert resp.status_code == 409 and error_of(resp)["code"] == "Conflict"
    assert "Please wait for completion before invoking a run command." in error_of(resp)["message"]
    assert raw("PUT", f"{VM_PREFIX}/vm-web-03/runCommands/busy", body=RC_BODY).status_code == 201  # that VM only
    raw("DELETE", f"{VM_PREFIX}/vm-web-03/runCommands/busy")
