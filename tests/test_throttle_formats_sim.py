"""azrun's throttle against the local Azure in both recorded header formats: VM and scale-set VM
run commands (PUT, GET, LIST, DELETE), every policy name reconciled, no 429 at documented limits."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from azrun import auth

SUB = "11111111-1111-4111-8111-111111111111"
RG = "rg-formats"
BODY: Any = {"location": "westeurope", "properties": {"source": {"script": "true"}, "asyncExecution": True}}


def fleet(header_format: str) -> str:
    return (
        f'[sim]\ncurrent_vm = "{RG}/vm-01"\nagent_start_delay_s = 0.05\n'
        f'[limits]\nheader_format = "{header_format}"\n'
        f'[[subscription]]\nid = "{SUB}"\nname = "formats"\n'
        f'  [[subscription.resource_group]]\n  name = "{RG}"\n  location = "westeurope"\n'
        '    [[subscription.resource_group.vm]]\n    name = "vm-{i:02d}"\n    count = 4\n    system_identity = true\n'
        '    [[subscription.resource_group.vmss]]\n    name = "ss"\n    orchestration = "Uniform"\n    instances = 4\n'
    )


async def exercise() -> dict[str, Any]:
    from azrun.clients import ClientFactory

    factory = ClientFactory.from_env()
    assert factory.throttle is not None
    compute = factory.acompute(SUB)
    try:
        vms, ssvms = compute.virtual_machine_run_commands, compute.virtual_machine_scale_set_vm_run_commands
        await asyncio.gather(
            *(vms.begin_create_or_update(RG, f"vm-{i:02d}", "rc", BODY, polling=False) for i in range(1, 5)),
            *(ssvms.begin_create_or_update(RG, "ss", str(i), "rc", BODY, polling=False) for i in range(4)),
        )
        await asyncio.gather(
            *(vms.get_by_virtual_machine(RG, f"vm-{i:02d}", "rc", expand="instanceView") for i in range(1, 5)),
            *(ssvms.get(RG, "ss", str(i), "rc", expand="instanceView") for i in range(4)),
        )
        listed = [rc async for rc in ssvms.list(RG, "ss", "0")]
        assert [rc.name for rc in listed] == ["rc"]
        await asyncio.gather(
            *(vms.begin_delete(RG, f"vm-{i:02d}", "rc", polling=False) for i in range(1, 5)),
            *(ssvms.begin_delete(RG, "ss", str(i), "rc", polling=False) for i in range(4)),
        )
        return {b.name: b for b in factory.throttle.metrics().buckets}
    finally:
        await factory.aclose()


@pytest.mark.parametrize("header_format", ["current", "legacy"])
def test_both_header_formats_are_reconciled_without_429(
    header_format: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azrun.sim.launcher import SimProcess

    sim = SimProcess(fleet(header_format), workdir=tmp_path / "sim", storage=False)
    with sim:
        for key in list(os.environ):
            if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "AZRUN_", "IMDS_")):
                monkeypatch.delenv(key)
        for key, value in sim.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
        auth.clear_process_cache()
        try:
            buckets = asyncio.run(exercise())
        finally:
            auth.clear_process_cache()
        arm = [r for r in sim.requests() if r.get("service") == "arm"]
    assert [r for r in arm if r["status"] == 429] == []
    assert sum(1 for r in arm if r["op"].startswith("VirtualMachineScaleSetVMRunCommands_")) == 4 + 4 + 1 + 4
    ss0 = "compute/rg-formats/virtualmachinescalesets/ss/virtualmachines/0"
    if header_format == "current":
        # per scale-set VM, reconciled from VMScaleSetVMActionsResource / DeleteVMScaleSetVMResource;11
        assert buckets[f"{ss0}/vmss-vm-update"].level < 11.5 and buckets[f"{ss0}/vmss-vm-delete"].level < 11.5
        assert f"learned/{SUB}/microsoft.compute/vmscalesetbatchedvmrequestssubscriptionmaximum" in buckets
        assert not any("3min" in name for name in buckets)
    else:
        learned = {name.rsplit("/", 1)[-1] for name in buckets if name.startswith("learned/")}
        assert {"updatevm3min", "updatevm30min", "lowcostget3min", "vmscalesetbatchedvmrequests5min"} <= learned
        assert not any("subscriptionmaximum" in name for name in learned)
