"""The local Azure's live entities as plain data: machines, run commands, operations.

``state.World`` indexes them and ``arm.runs.RunBook`` applies the lifecycle rules to them;
both import this module, neither imports the other's caller (no import cycle).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azrun.sim.execution import ExecutionStatus
from azrun.sim.fleetspec import VmSpec, VmssSpec

POWER_STATES = ("running", "stopped", "deallocated")
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})


@dataclass(eq=False)
class Machine:
    """Something that runs scripts: a VM, a Flexible member (also a VM) or a Uniform instance."""

    id: str
    name: str  # ARM name: "vm-web-01", or "<vmss>_<instance id>" for Uniform instances
    display: str  # "vm-web-01" or "vmss-api/3" (fault tables and logs use this)
    subscription_id: str
    resource_group: str
    location: str
    os: str
    power: str
    host: VmSpec | VmssSpec  # who owns the identities (the scale set for Uniform instances)
    vmss: VmssSpec | None = None
    instance_id: str | None = None
    run_commands: dict[str, RunCommand] = field(default_factory=dict)
    action: Operation | None = None  # the latest legacy ``runCommand`` action (one at a time)
    action_seq: int = 0
    agent_ready: bool = True  # False under the ``agents_not_ready`` fault

    @property
    def action_extension(self) -> str:
        """The extension the legacy action API runs on (its name in the agent's executions)."""
        return "RunCommandWindows" if self.os == "windows" else "RunCommandLinux"

    @property
    def uniform(self) -> bool:
        return self.instance_id is not None

    @property
    def run_command_type(self) -> str:
        if self.uniform:
            return "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/runCommands"
        return "Microsoft.Compute/virtualMachines/runCommands"


@dataclass(frozen=True, slots=True)
class ScaleSet:
    spec: VmssSpec
    members: tuple[Machine, ...]  # Uniform instances, or Flexible member VMs


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    """One row of the generic ``/resources`` listing."""

    id: str
    name: str
    type: str
    location: str
    resource_group: str
    tags: tuple[tuple[str, str], ...]


@dataclass(eq=False)
class RunCommand:
    """One managed run command resource and its current execution."""

    name: str
    machine: Machine
    location: str
    tags: dict[str, str]
    settings: dict[str, Any] = field(repr=False)  # full properties as sent, secrets included
    digest: str = field(repr=False)  # what an identical re-PUT must match
    seq: int
    status: ExecutionStatus
    preempted: bool = False
    deleting: bool = False  # a DELETE was accepted; still listed until its operation ends
    delete_op: Operation | None = None

    @property
    def async_execution(self) -> bool:
        return bool(self.settings.get("asyncExecution", False))

    @property
    def treat_failure(self) -> bool:
        return bool(self.settings.get("treatFailureAsDeploymentFailure", False))

    def provisioning_state(self) -> str:
        """Creating/Updating until the agent says so, then Succeeded (or Failed, see module doc)."""
        st = self.status
        if self.deleting:
            return "Deleting"
        if self.preempted:
            return "Failed"
        if self.async_execution and st.started:
            return "Succeeded"
        if not st.finished:
            return "Creating" if self.seq == 1 else "Updating"
        if self.treat_failure and st.state == "Failed":
            return "Failed"
        return "Succeeded"

    def failure(self) -> dict[str, str]:
        """The ``error`` of a Failed provisioning (ARM async-operation shape)."""
        if self.preempted:
            return {
                "code": "OperationPreempted",
                "message": "Operation execution has been preempted by a more recent operation.",
            }
        handler = "RunCommandHandlerWindows" if self.machine.os == "windows" else "RunCommandHandlerLinux"
        link = "Windows" if self.machine.os == "windows" else "Linux"
        return {
            "code": "VMExtensionProvisioningError",
            "message": (
                f"VM has reported a failure when processing extension '{self.name}' (publisher "
                f"'Microsoft.CPlat.Core' and type '{handler}'). Error message: '{self.status.message}'. "
                f"More information on troubleshooting is available at https://aka.ms/VMExtension{link}Troubleshoot."
            ),
        }


@dataclass(eq=False)
class Operation:
    """An ARM async operation (the ``Azure-AsyncOperation`` / ``Location`` URLs)."""

    id: str
    kind: str  # "put" | "delete" | "action"
    machine: Machine
    run_command: RunCommand | None
    seq: int
    start: datetime
    status: str = "InProgress"
    end: datetime | None = None
    error: dict[str, str] | None = None
    execution: ExecutionStatus | None = None  # the legacy action's execution
    preempted: bool = False


def settings_digest(location: str, properties: dict[str, Any]) -> str:
    """Fingerprint of what decides an execution (tags are not part of it)."""
    raw = json.dumps({"l": location, "p": properties}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()
