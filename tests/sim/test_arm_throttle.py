"""Throttling of the local ARM: ARM's and Compute's buckets, their headers and 429 bodies.

One simulator with tiny limits (so buckets run dry in a few requests); limits are replaced
at runtime through the admin API where a test needs other numbers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from arm_support import (
    SUB1,
    TEST_FLEET,
    VM_PREFIX,
    Raw,
    compute,
    error_of,
    principal,
    start_sim,
    token,
)
from azure.core.exceptions import HttpResponseError

from azrun.sim.launcher import SimProcess

RC_BODY = {"location": "westeurope", "properties": {"source": {"script": "true"}}}
GENEROUS = {
    "vm_update_resource": [100, 10],
    "vm_get_resource": [1000, 100],
    "vm_operation_resource": [1000, 100],
}



@pytest.fixture
def raw(sim: SimProcess) -> Iterator[Raw]:
    sim.admin_post("limits", GENEROUS)  # fresh, full buckets for every test
    yield Raw(sim)
    sim.admin_post("limits", GENEROUS)


def test_headers_on_every_response_and_decreasing(raw: Raw) -> None:
    first = raw("GET", f"{VM_PREFIX}/vm-web-01")
    for _ in range(9):
        last = raw("GET", f"{VM_PREFIX}/vm-web-01")
    key = "x-ms-ratelimit-remaining-subscription-reads"
    assert int(last.headers[key]) < int(first.headers[key]) - 5  # refill is 25/s: most of the 10 show
    assert first.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
    assert first.headers["x-ms-ratelimit-remaining-subscription-global-reads"] == "3749"
    # recorded names and order (current format): subscription first, then the VM
    assert first.headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/LowCostGetSubscriptionMaximum;23999,Microsoft.Compute/LowCostGetResource;999"
    )
    assert re.fullmatch(  # 10 taken, some refilled (100/s): the per-VM count is last, as recorded
        r"Microsoft\.Compute/LowCostGetSubscriptionMaximum;239\d\d,Microsoft\.Compute/LowCostGetResource;99\d",
        last.headers["x-ms-ratelimit-remaining-resource"],
    )
    assert "x-ms-request-charge" not in first.headers  # only scale-set VM operations carry it
    put = raw("PUT", f"{VM_PREFIX}/vm-web-01/runCommands/hdr", body=RC_BODY)
    assert put.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"
    assert put.headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/UpdateVMSubscriptionMaximum;1499,Microsoft.Compute/UpdateVMResource;99"
    )
    op = raw("GET", put.headers["Azure-AsyncOperation"], api_version=None)
    assert op.headers["x-ms-ratelimit-remaining-resource"] == (  # Resource first, as recorded
        "Microsoft.Compute/GetOperationResource;999,Microsoft.Compute/GetOperationSubscriptionMaximum;14999"
    )
    delete = raw("DELETE", f"{VM_PREFIX}/vm-web-01/runCommands/hdr")
    assert delete.headers["x-ms-ratelimit-remaining-subscription-deletes"] == "199"
    listing = raw("GET", f"/subscriptions/{SUB1}/providers/Microsoft.Compute/virtualMachines")
    assert "x-ms-ratelimit-remaining-resource" not in listing.headers  # ListAll: none, as recorded
    group = raw("GET", f"/subscriptions/{SUB1}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines")
    assert group.headers["x-ms-ratelimit-remaining-resource"].startswith(
        "Microsoft.Compute/HighCostGetSubscriptionMaximum;89"
    )
    tenant = raw("GET", "/subscriptions", api_version="2022-12-01")
    assert "x-ms-ratelimit-remaining-tenant-reads" in tenant.headers
    missing = raw("GET", f"{VM_PREFIX}/vm-nope")  # errors carry them too
    assert missing.status_code == 404 and "x-ms-ratelimit-remaining-subscription-reads" in missing.headers


def test_arm_bucket_429(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("limits", {**GENEROUS, "arm_reads": [3, 1]})
    statuses = [raw("GET", f"{VM_PREFIX}/vm-web-01").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = raw("GET", f"{VM_PREFIX}/vm-web-01")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    err = error_of(resp)
    assert err["code"] == "SubscriptionRequestsThrottled"
    oid = principal().object_id
    assert err["message"].startswith(
        f"Number of 'read' requests for subscription '{SUB1}' actor '{oid}' exceeded."
    )
    assert "Please try again after '1' seconds" in err["message"]
    assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    # another caller has a bucket of its own
    other = f"Bearer {token(principal('44444444-0000-4000-8000-000000000004'))}"
    assert raw("GET", f"{VM_PREFIX}/vm-web-01", auth=other).status_code == 200
    # the refused requests took no token: one Retry-After later the caller is served again
    time.sleep(1.05)
    assert raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200
    throttled = [e for e in sim.requests() if e["status"] == 429]
    assert throttled and throttled[-1]["throttle"] == "arm-read" and throttled[-1]["caller"] == oid


def test_compute_bucket_429(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("limits", {**GENEROUS, "vm_update_resource": [2, 0.05]})
    for i in range(2):
        assert raw("PUT", f"{VM_PREFIX}/vm-web-02/runCommands/t{i}", body=RC_BODY).status_code == 201
    resp = raw("PUT", f"{VM_PREFIX}/vm-web-02/runCommands/t2", body=RC_BODY)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "20"
    assert "Microsoft.Compute/UpdateVMResource;0" in resp.headers["x-ms-ratelimit-remaining-resource"]
    assert int(resp.headers["x-ms-ratelimit-remaining-subscription-writes"]) == 197  # ARM let it through
    err = error_of(resp)
    assert err["code"] == "OperationNotAllowed"
    assert err["message"] == (
        "The server rejected the request because too many requests have been received for this subscription."
    )
    (detail,) = err["details"]
    assert detail["code"] == "TooManyRequests" and detail["target"] == "UpdateVMResource"
    measured = json.loads(detail["message"])
    assert measured["operationGroup"] == "UpdateVMResource" and measured["allowedRequestCount"] == 2
    assert err["innererror"] == {"internalErrorCode": "TooManyRequestsReceived"}
    assert raw("PUT", f"{VM_PREFIX}/vm-web-03/runCommands/t2", body=RC_BODY).status_code == 201  # per VM
    client = compute(sim, retry_total=0)
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_run_commands.begin_delete("rg-web", "vm-web-02", "t0")
    assert exc.value.status_code == 429
    assert [e for e in sim.requests() if e["status"] == 429][-1]["throttle"] == "compute-UpdateVMResource"
    sim.admin_post("limits", GENEROUS)
    for name in ("vm-web-02/runCommands/t0", "vm-web-02/runCommands/t1", "vm-web-03/runCommands/t2"):
        raw("DELETE", f"{VM_PREFIX}/{name}")


def test_limits_off(sim: SimProcess, raw: Raw) -> None:
    sim.admin_post("limits", {"enabled": False, "arm_reads": [1, 0.001]})
    for _ in range(5):
        resp = raw("GET", f"{VM_PREFIX}/vm-web-01")
        assert resp.status_code == 200
        assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"] == "1"
    assert sim.admin_get("limits")["enabled"] is False


def test_fleet_file_limits(tmp_path_factory: pytest.TempPathFactory) -> None:
    fleet = TEST_FLEET.read_text().replace("[limits]\n", "[limits]\narm_writes = [1, 0.5]\n")
    sim = start_sim(tmp_path_factory.mktemp("arm-limits"), fleet)
    try:
        raw = Raw(sim)
        assert raw("PUT", f"{VM_PREFIX}/vm-web-01/runCommands/a", body=RC_BODY).status_code == 201
        resp = raw("PUT", f"{VM_PREFIX}/vm-web-01/runCommands/b", body=RC_BODY)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
        assert "Number of 'write' requests" in error_of(resp)["message"]
        assert raw("GET", f"{VM_PREFIX}/vm-web-01").status_code == 200  # reads are a separate bucket
    finally:
        sim.stop()
