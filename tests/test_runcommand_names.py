"""azrun.runcommand._names: run ids, run-command names, azrun's tag, machine paths (no I/O)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from _fleet_support import LOCATION, RG, SUB

from azrun.models import Target, TargetKind
from azrun.runcommand import (
    RUN_TAG,
    MachinePath,
    is_azrun_run_command,
    new_run_id,
    run_command_name,
)


def vm(name: str, power: str = "running") -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{name}"
    return Target(rid, name, TargetKind.VM, SUB, RG, LOCATION, "linux", power, vm_name=name)


def instance(i: int) -> Target:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{i}"
    return Target(rid, f"ss/{i}", TargetKind.VMSS_UNIFORM, SUB, RG, LOCATION, "linux", "running",
                  scale_set="ss", instance_id=str(i), vm_name=f"ss_{i}")



def test_run_ids_sort_by_time_and_names_are_unique_per_run() -> None:
    a = new_run_id(datetime(2026, 11, 22, 0, 12, tzinfo=timezone.utc))
    b = new_run_id(datetime(2026, 11, 22, 0, 13, tzinfo=timezone.utc))
    assert a.startswith("20261122-0012-") and len(a) == len("20261122-0012-ab12cd")
    assert a < b and new_run_id() != new_run_id()
    assert run_command_name(a) == f"azrun-{a}"


def test_only_azrun_named_and_tagged_run_commands_are_azruns() -> None:
    assert is_azrun_run_command("azrun-20261122-0012-ab12cd", {RUN_TAG: "20261122-0012-ab12cd"})
    assert not is_azrun_run_command("azrun-by-hand", {})  # the prefix alone is not enough
    assert not is_azrun_run_command("patch", {RUN_TAG: "x"})  # nor the tag alone


def test_machine_paths_come_from_the_resource_id() -> None:
    assert MachinePath.of(vm("vm-001")) == MachinePath(SUB, RG, vm_name="vm-001")
    p = MachinePath.of(instance(3))
    assert p.uniform and (p.scale_set, p.instance_id) == ("ss", "3")



def test_paths_need_no_network(tmp_path: Path) -> None:
    """MachinePath and the body builder are pure: usable to plan without any client."""
    assert MachinePath.of(instance(0)).instance_id == "0"
