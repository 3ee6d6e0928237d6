"""Names and paths: run ids, run-command names, azrun's tag, and where a target's run commands
live (VM or VMSS-VM paths). No I/O."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from azrun.models import RunId, Target, TargetKind

__all__ = ["RUN_COMMAND_PREFIX", "RUN_TAG", "MachinePath", "is_azrun_run_command", "new_run_id", "run_command_name"]

RUN_COMMAND_PREFIX = "azrun-"
RUN_TAG = "azrun-run"


def new_run_id(now: datetime | None = None) -> RunId:
    """A short, sortable run id: ``20261122-0012-ab12cd`` (UTC minute + 24 random bits)."""
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%d-%H%M")
    return RunId(f"{stamp}-{secrets.token_hex(3)}")


def run_command_name(run_id: str) -> str:
    """The run command's resource name for a run: unique per run, so a re-run always executes."""
    return f"{RUN_COMMAND_PREFIX}{run_id}"


def is_azrun_run_command(name: str, tags: dict[str, str] | None) -> bool:
    """True only for run commands azrun created: the name prefix AND the run tag."""
    return name.lower().startswith(RUN_COMMAND_PREFIX) and bool(tags) and RUN_TAG in (tags or {})


@dataclass(frozen=True, slots=True)
class MachinePath:
    """Where a target's run commands live: VM paths, or VMSS-VM paths for Uniform instances."""

    subscription_id: str
    resource_group: str
    vm_name: str | None = None
    scale_set: str | None = None
    instance_id: str | None = None

    @classmethod
    def of(cls, target: Target) -> MachinePath:
        """Parse the target's ARM id (the id, not the display name, is authoritative)."""
        parts = target.resource_id.strip("/").split("/")
        low = [p.lower() for p in parts]
        rg = parts[low.index("resourcegroups") + 1] if "resourcegroups" in low else target.resource_group
        if target.kind is TargetKind.VMSS_UNIFORM or "virtualmachinescalesets" in low:
            i = low.index("virtualmachinescalesets")
            return cls(target.subscription_id, rg, scale_set=parts[i + 1], instance_id=parts[i + 3])
        name = parts[low.index("virtualmachines") + 1] if "virtualmachines" in low else target.vm_name or target.name
        return cls(target.subscription_id, rg, vm_name=name)

    @property
    def uniform(self) -> bool:
        return self.scale_set is not None
