"""azrun.runcommand._body: the PUT body and its size check (no I/O)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _fleet_support import LOCATION, RG, SUB

from azrun.errors import ConfigError
from azrun.models import RunSpec, Target, TargetKind
from azrun.runcommand import (
    BLOB_URI_ALLOWANCE,
    MAX_BODY_BYTES,
    RUN_TAG,
    BlobTargets,
    body_size,
    build_run_command,
    check_request_size,
)


def vm(name: str, power: str = "running") -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(rid, name, TargetKind.VM, SUB, RG, LOCATION, "linux", power, vm_name=name)


def instance(i: int) -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{i}"
    return Target(rid, f"ss/{i}", TargetKind.VMSS_UNIFORM, SUB, RG, LOCATION, "linux", "running",
                  scale_set="ss", instance_id=str(i), vm_name=f"ss_{i}")



def test_the_body_sets_failure_detection_and_carries_secrets_only_in_their_fields() -> None:
    spec = RunSpec(script="echo hi", parameters=(("a", "1"),), protected_parameters=(("T", "s3cr3t"),),
                   run_as_user="svc", run_as_password="pw", timeout_s=120)
    body = build_run_command(spec, location="westeurope", run_id="r1",
                             blobs=BlobTargets("https://a/o?sig=x", "https://a/e?sig=y", {"clientId": "c"}))
    props = body["properties"]
    assert body["tags"] == {RUN_TAG: "r1"} and body["location"] == "westeurope"
    assert props["treatFailureAsDeploymentFailure"] is True and props["asyncExecution"] is True
    assert props["timeoutInSeconds"] == 120 and props["source"] == {"script": "echo hi"}
    assert props["parameters"] == [{"name": "a", "value": "1"}]
    assert props["protectedParameters"] == [{"name": "T", "value": "s3cr3t"}]
    assert props["runAsUser"] == "svc" and props["runAsPassword"] == "pw"
    assert props["outputBlobManagedIdentity"] == {"clientId": "c"} == props["errorBlobManagedIdentity"]
    uri = build_run_command(RunSpec(script_uri="https://s/x.sh", script_uri_identity="system"),
                            location="l", run_id="r")["properties"]["source"]
    assert uri == {"scriptUri": "https://s/x.sh", "scriptUriManagedIdentity": {}}
    assert "s3cr3t" not in repr(spec)



def test_a_script_azure_would_refuse_is_refused_before_dispatch_with_a_hint() -> None:
    """The body is measured as serialised (JSON escapes count) against 4 MiB, with room for a
    target's blob URIs."""
    fits = RunSpec(script="a" * (MAX_BODY_BYTES - BLOB_URI_ALLOWANCE - 400), script_name="big.sh")
    assert check_request_size(fits) <= MAX_BODY_BYTES
    with pytest.raises(ConfigError) as info:
        check_request_size(RunSpec(script="a" * MAX_BODY_BYTES, script_name="big.sh"))
    assert "'big.sh' is too large" in info.value.message and "\n" not in info.value.message
    assert info.value.hint is not None and "--script-uri" in info.value.hint
    # newlines serialise as two bytes each: half the limit in newlines is already too much
    with pytest.raises(ConfigError):
        check_request_size(RunSpec(script="\n" * (MAX_BODY_BYTES // 2)))
    assert check_request_size(RunSpec(script_uri="https://s/x.sh")) < 16 * 1024


def test_body_size_is_what_goes_on_the_wire() -> None:
    body = build_run_command(RunSpec(script="é\n"), location="westeurope", run_id="r")
    assert body_size(body) == len(json.dumps(body).encode())


async def test_fleet_start_refuses_an_oversized_script_before_recording_a_run(tmp_path: Path) -> None:
    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud
    from azrun.fleet import Fleet

    async with Fleet(factory=ClientFactory(cloud=Cloud.from_env({})), state_dir=tmp_path) as fleet:
        with pytest.raises(ConfigError, match="too large to send inline"):
            await fleet.start([vm("vm-001")], "x" * (MAX_BODY_BYTES + 1))
        assert fleet.runs() == []
