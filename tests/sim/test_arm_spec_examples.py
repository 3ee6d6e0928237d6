"""Every run-command example of the REST spec (vendored in tests/fixtures/spec/), served and parsed back.

Each example's request is sent to the local ARM (location moved to the VM's region, example
blob hosts replaced by a closed loopback port so nothing leaves the machine); the answer must
carry every key the example's recorded answer has and parse with the SDK's models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arm_support import RC_EXAMPLES, SUB1, VM_PREFIX, Raw, compute, start_sim, wait_for
from azure.mgmt.compute.models import (
    RunCommandDocument,
    RunCommandDocumentBase,
    RunCommandInput,
    RunCommandResult,
    VirtualMachineRunCommand,
)

from azrun.sim.launcher import SimProcess

SS_VM = f"/subscriptions/{SUB1}/resourceGroups/rg-scale/providers/Microsoft.Compute/virtualMachineScaleSets/vmss-api/virtualMachines/0"
LOCATIONS = f"/subscriptions/{SUB1}/providers/Microsoft.Compute/locations/westeurope"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RC_EXAMPLES / name).read_text())
    return loaded


def local_request(run_command: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(run_command).replace(
        "https://mystorageaccount.blob.core.windows.net", "https://127.0.0.1:1"
    )
    out: dict[str, Any] = json.loads(text)
    if "location" in out:
        out["location"] = "West Europe"
    return out


def missing_keys(expected: Any, got: Any, path: str = "") -> list[str]:
    """Keys present in the example's answer but not in ours (recursively).

    ``tags`` and the inside of ``source`` are example data (which source kind, which tags).
    """
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key, value in expected.items():
            if key == "tags":
                continue
            if key not in got:
                out.append(f"{path}/{key}")
            elif key != "source":
                out += missing_keys(value, got[key], f"{path}/{key}")
        return out
    if isinstance(expected, list) and isinstance(got, list) and expected and got:
        return missing_keys(expected[0], got[0], f"{path}[0]")
    return []


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    s = start_sim(tmp_path_factory.mktemp("arm-spec"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def raw(sim: SimProcess) -> Raw:
    return Raw(sim)


def test_every_example_is_covered() -> None:
    names = {p.name for p in Path(RC_EXAMPLES).glob("*.json")}
    assert names == {
        "RunCommand_Get.json", "RunCommand_List.json", "VirtualMachineRunCommand.json",
        "VirtualMachineRunCommand_CreateOrUpdate.json", "VirtualMachineRunCommand_Delete.json",
        "VirtualMachineRunCommand_Get.json", "VirtualMachineRunCommand_List.json",
        "VirtualMachineRunCommand_Update.json", "VirtualMachineScaleSetVMRunCommand.json",
        "VirtualMachineScaleSetVMRunCommand_CreateOrUpdate.json", "VirtualMachineScaleSetVMRunCommand_Delete.json",
        "VirtualMachineScaleSetVMRunCommand_Get.json", "VirtualMachineScaleSetVMRunCommand_List.json",
        "VirtualMachineScaleSetVMRunCommand_Update.json",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("prefix", "stem"),
    [(f"{VM_PREFIX}/vm-web-01", "VirtualMachineRunCommand"), (SS_VM, "VirtualMachineScaleSetVMRunCommand")],
)
def test_managed_run_command_examples(raw: Raw, prefix: str, stem: str) -> None:
    create = example(f"{stem}_CreateOrUpdate.json")
    name = create["parameters"]["runCommandName"]
    path = f"{prefix}/runCommands/{name}"
    request = local_request(create["parameters"]["runCommand"])
    put = raw("PUT", path, body=request, api_version="2024-11-01")
    assert put.status_code == 201, put.text
    assert missing_keys(create["responses"]["201"]["body"], put.json()) == []
    parsed = VirtualMachineRunCommand(put.json())
    assert parsed.provisioning_state == "Creating" and parsed.location == "westeurope"
    assert parsed.run_as_password is None and parsed.output_blob_managed_identity is None
    wait_for(lambda: raw("GET", path).json()["properties"]["provisioningState"] in ("Succeeded", "Failed"))
    again = raw("PUT", path, body=request, api_version="2024-11-01")
    assert again.status_code == 200
    assert missing_keys(create["responses"]["200"]["body"], again.json()) == []

    get_example = example(f"{stem}_Get.json")
    got = raw("GET", path, api_version="2024-11-01")
    assert missing_keys(get_example["responses"]["200"]["body"], got.json()) == []
    assert VirtualMachineRunCommand(
        got.json()
    ).source.script_uri == "https://127.0.0.1:1/scriptcontainer/" + (
        "scriptURI" if stem.startswith("VirtualMachineRunCommand") else "MyScript.ps1"
    )

    listed = raw("GET", f"{prefix}/runCommands", api_version="2024-11-01").json()
    assert missing_keys(example(f"{stem}_List.json")["responses"]["200"]["body"], listed) == []

    update = example(f"{stem}_Update.json")
    patch = raw(
        "PATCH", path, body=local_request(update["parameters"]["runCommand"]), api_version="2024-11-01"
    )
    assert patch.status_code == 200, patch.text
    assert missing_keys(update["responses"]["200"]["body"], patch.json()) == []
    assert VirtualMachineRunCommand(patch.json()).provisioning_state in ("Updating", "Succeeded", "Failed")

    delete = raw("DELETE", path, api_version="2024-11-01")
    assert str(delete.status_code) in example(f"{stem}_Delete.json")["responses"]
    wait_for(lambda: raw("GET", path).status_code == 404)  # the DELETE's operation lasts a while


def test_location_run_command_catalogue(raw: Raw) -> None:
    listed = raw("GET", f"{LOCATIONS}/runCommands", api_version="2024-11-01")
    assert listed.status_code == 200
    want = example("RunCommand_List.json")["responses"]["200"]["body"]
    assert missing_keys(want, listed.json()) == []
    docs = [RunCommandDocumentBase(d) for d in listed.json()["value"]]
    assert {"RunShellScript", "RunPowerShellScript"} <= {d.id for d in docs}
    one = raw("GET", f"{LOCATIONS}/runCommands/RunPowerShellScript", api_version="2024-11-01")
    assert missing_keys(example("RunCommand_Get.json")["responses"]["200"]["body"], one.json()) == []
    assert RunCommandDocument(one.json()).os_type == "Windows"
    assert raw("GET", f"{LOCATIONS}/runCommands/nope", api_version="2024-11-01").status_code == 404


def test_action_api_examples(sim: SimProcess, raw: Raw) -> None:
    client = compute(sim, api_version="2024-11-01")
    vm_example = example("VirtualMachineRunCommand.json")
    want = vm_example["responses"]["200"]["body"]
    # The example is a Windows command: send it to the Windows VM (which may lack pwsh; still a result).
    win = client.virtual_machines.begin_run_command(
        "rg-web", "vm-win-01", RunCommandInput(vm_example["parameters"]["parameters"])
    ).result()
    assert isinstance(win, RunCommandResult) and len(win.value or []) == 2
    linux = client.virtual_machines.begin_run_command(
        "rg-web",
        "vm-web-01",
        RunCommandInput(command_id="RunShellScript", script=["echo hi", "echo err >&2"]),
    ).result()
    assert [(s.code, s.message) for s in linux.value] == [
        ("ComponentStatus/StdOut/succeeded", "hi\n"),
        ("ComponentStatus/StdErr/succeeded", "err\n"),
    ]
    ss_example = example("VirtualMachineScaleSetVMRunCommand.json")
    body = dict(ss_example["parameters"]["parameters"], commandId="RunShellScript", script=["echo instance"])
    result = client.virtual_machine_scale_set_vms.begin_run_command(
        "rg-scale", "vmss-api", "0", RunCommandInput(body)
    ).result()
    assert result.value[0].message == "instance\n"
    post = raw(
        "POST", f"{VM_PREFIX}/vm-web-02/runCommand", body={"commandId": "RunShellScript", "script": ["true"]}
    )
    assert post.status_code == 202 and "monitor=true" in post.headers["Location"]
    done = wait_for(
        lambda: (r := raw("GET", post.headers["Location"], api_version=None)).status_code == 200 and r
    )
    assert missing_keys(want, done.json()) == []
