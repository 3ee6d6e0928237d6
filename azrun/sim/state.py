"""The in-memory world behind the local ARM: machines, power states, run commands, operations.

The fleet file is frozen data; this module holds what changes while the simulator runs and
the indexes that keep every request O(1) or O(page) (1,000 VMs at 200 requests/s).

Run-command semantics chosen where the docs are silent (docs/architecture.md):

- at most 25 managed run commands per VM: the 26th PUT answers ``409 OperationNotAllowed``;
- a VM that is not running: PUT/PATCH answer ``409 OperationNotAllowed`` "Cannot modify
  extensions in the VM when the VM is not running."; DELETE still removes the resource;
- a *changed* PUT/PATCH while provisioning is not terminal: ``409 Conflict``; an identical
  re-PUT is idempotent (200, no re-execution, unless ``sim.identical_put_reexecutes``) at any
  time, so a client retrying a PUT whose answer it lost does not start the script twice;
- a changed PUT after provisioning finished kills the previous execution (if still running)
  and runs again with the next sequence number, as the Linux handler does;
- DELETE is always accepted (202) and kills a running script; the resource is gone at once;
- timeout: the agent reports ``Failed`` / exit code -1 (the real handler never says TimedOut);
- a VM stopped or deallocated while its run command provisions: the script dies with the VM,
  the instance view stays frozen and provisioning turns ``Failed`` with Compute's
  ``OperationPreempted`` error;
- output/error managed identity ``{"objectId": ...}`` is treated as a missing identity: the
  Linux handler rejects object ids for blob upload ("ObjectId is not supported").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azrun.sim.agent import Agent, ExecutionRequest, ExecutionStatus
from azrun.sim.arm_throttle import Throttler
from azrun.sim.fleet import (
    Faults,
    FleetSpec,
    Identity,
    Limits,
    ResourceGroupSpec,
    SubscriptionSpec,
    VmSpec,
    VmssSpec,
)
from azrun.sim.identity import principal_by_object_id, resolve_vm_identity
from azrun.sim.reqlog import RequestLog
from azrun.sim.tokens import Principal

RUN_COMMAND_CAP = 25
ACTION_TIMEOUT_S = 90 * 60  # the action API's documented limit
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
POWER_STATES = ("running", "stopped", "deallocated")
_MAX_OPERATIONS = 100_000


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

    @property
    def async_execution(self) -> bool:
        return bool(self.settings.get("asyncExecution", False))

    @property
    def treat_failure(self) -> bool:
        return bool(self.settings.get("treatFailureAsDeploymentFailure", False))

    def provisioning_state(self) -> str:
        """Creating/Updating until the agent says so, then Succeeded (or Failed, see module doc)."""
        st = self.status
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


def _now() -> datetime:
    return datetime.now(UTC)


def settings_digest(location: str, properties: dict[str, Any]) -> str:
    """Fingerprint of what decides an execution (tags are not part of it)."""
    raw = json.dumps({"l": location, "p": properties}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


class World:
    """Live state of the local Azure, shared by every ARM handler (single event loop)."""

    def __init__(
        self, spec: FleetSpec, *, agent: Agent, reqlog: RequestLog, start_time: float | None = None
    ) -> None:
        self.spec = spec
        self.agent = agent
        self.reqlog = reqlog
        self.start_time = start_time if start_time is not None else time.time()
        self.tenant_id = spec.sim.tenant_id
        self.faults: Faults = spec.faults
        self.rng = random.Random(spec.faults.seed)
        self.throttler = Throttler(spec.limits)
        self.operations: OrderedDict[str, Operation] = OrderedDict()
        self.subscriptions: dict[str, SubscriptionSpec] = {s.id.lower(): s for s in spec.subscriptions}
        self.groups: dict[tuple[str, str], ResourceGroupSpec] = {}
        self.machines: dict[str, Machine] = {}
        self.vms_by_group: dict[tuple[str, str], list[Machine]] = {}
        self.vms_by_sub: dict[str, list[Machine]] = {}
        self.scale_sets: dict[str, ScaleSet] = {}
        self.resources_by_sub: dict[str, list[ResourceEntry]] = {}
        # subscription -> (lowercased tag name, value) -> resources: tag queries without a scan
        self.tag_index: dict[str, dict[tuple[str, str], list[ResourceEntry]]] = {}
        self._roles: dict[tuple[str, str], str] = {}
        self._deallocated_faults: set[tuple[str, float]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._index()

    # ----------------------------------------------------------------- indexes
    def _index(self) -> None:
        for sub in self.spec.subscriptions:
            for rg in sub.resource_groups:
                self.groups[(sub.id.lower(), rg.name.lower())] = rg
            for ident in sub.identities:
                key = (sub.id.lower(), ident.resource_group.lower())
                if key not in self.groups:  # identities may live in a group the file does not list
                    loc = sub.resource_groups[0].location if sub.resource_groups else "westeurope"
                    self.groups[key] = ResourceGroupSpec(ident.resource_group, loc)
        for vm in self.spec.vms:
            m = Machine(
                id=vm.resource_id,
                name=vm.name,
                display=vm.name,
                subscription_id=vm.subscription_id,
                resource_group=vm.resource_group,
                location=vm.location,
                os=vm.os,
                power=vm.power,
                host=vm,
            )
            self.machines[m.id.lower()] = m
            self.vms_by_group.setdefault((vm.subscription_id.lower(), vm.resource_group.lower()), []).append(
                m
            )
            self.vms_by_sub.setdefault(vm.subscription_id.lower(), []).append(m)
        for ss in self.spec.scale_sets:
            self.scale_sets[ss.resource_id.lower()] = ScaleSet(ss, self._members(ss))
        for sub in self.spec.subscriptions:
            entries = self.resources_by_sub[sub.id.lower()] = self._resources(sub)
            index = self.tag_index[sub.id.lower()] = {}
            for entry in entries:
                for name, value in entry.tags:
                    index.setdefault((name.lower(), value), []).append(entry)

    def _members(self, ss: VmssSpec) -> tuple[Machine, ...]:
        if ss.orchestration == "Flexible":
            return tuple(
                m
                for m in self.vms_by_group.get((ss.subscription_id.lower(), ss.resource_group.lower()), [])
                if isinstance(m.host, VmSpec) and m.host.vmss == ss.name
            )
        members = []
        for i in range(ss.instances):
            iid = str(i)
            m = Machine(
                id=f"{ss.resource_id}/virtualMachines/{iid}",
                name=f"{ss.name}_{iid}",
                display=f"{ss.name}/{iid}",
                subscription_id=ss.subscription_id,
                resource_group=ss.resource_group,
                location=ss.location,
                os=ss.os,
                power=ss.power_of(iid),
                host=ss,
                vmss=ss,
                instance_id=iid,
            )
            self.machines[m.id.lower()] = m
            members.append(m)
        return tuple(members)

    def _resources(self, sub: SubscriptionSpec) -> list[ResourceEntry]:
        sid = sub.id.lower()
        out = [
            ResourceEntry(
                m.id, m.name, "Microsoft.Compute/virtualMachines", m.location, m.resource_group, m.host.tags
            )
            for m in self.vms_by_sub.get(sid, [])
        ]
        out.extend(
            ResourceEntry(
                ss.spec.resource_id,
                ss.spec.name,
                "Microsoft.Compute/virtualMachineScaleSets",
                ss.spec.location,
                ss.spec.resource_group,
                ss.spec.tags,
            )
            for key, ss in self.scale_sets.items()
            if ss.spec.subscription_id.lower() == sid
        )
        out.extend(self._identity_entry(sub, i) for i in sub.identities)
        return out

    def _identity_entry(self, sub: SubscriptionSpec, ident: Identity) -> ResourceEntry:
        rg = self.groups[(sub.id.lower(), ident.resource_group.lower())]
        return ResourceEntry(
            ident.resource_id,
            ident.name,
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            rg.location,
            ident.resource_group,
            (),
        )

    # ----------------------------------------------------------------- lookups
    def machine(self, resource_id: str) -> Machine | None:
        return self.machines.get(resource_id.lower())

    def scale_set(self, sub: str, rg: str, name: str) -> ScaleSet | None:
        rid = f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachinescalesets/{name}"
        return self.scale_sets.get(rid.lower())

    def role(self, subscription_id: str, object_id: str) -> str:
        """RBAC role of a caller on a subscription: owner (default), reader or none."""
        key = (subscription_id.lower(), object_id.lower())
        role = self._roles.get(key)
        if role is None:
            sub = self.subscriptions.get(key[0])
            access = {k.lower(): v.lower() for k, v in (sub.access if sub else ())}
            found = principal_by_object_id(self.spec, object_id)
            role = access.get(key[1]) or (access.get(found[1].lower()) if found else None) or "owner"
            self._roles[key] = role
        return role

    # ----------------------------------------------------------------- live settings
    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings (admin API); re-seed and re-plan deallocations."""
        self.faults = faults
        self.rng = random.Random(faults.seed)
        if self._scheduler is not None:
            self._scheduler.cancel()
            self._scheduler = asyncio.get_running_loop().create_task(self._deallocate_on_schedule())

    def set_limits(self, limits: Limits) -> None:
        """Replace the limits (admin API): every bucket starts full again."""
        self.throttler = Throttler(limits)

    def hung(self, machine: Machine) -> bool:
        names = {n.lower() for n in self.faults.hung_agents}
        return machine.display.lower() in names or machine.name.lower() in names

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the deallocate-at-T scheduler (from the app's on_startup)."""
        self._scheduler = asyncio.get_running_loop().create_task(self._deallocate_on_schedule())

    async def aclose(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None

    async def _deallocate_on_schedule(self) -> None:
        plan = sorted(((at, name) for name, at in self.faults.deallocate_at), key=lambda x: x[0])
        for at, name in plan:
            if (name, at) in self._deallocated_faults:
                continue
            await asyncio.sleep(max(0.0, self.start_time + at - time.time()))
            self._deallocated_faults.add((name, at))
            for m in list(self.machines.values()):
                if name.lower() in (m.display.lower(), m.name.lower()):
                    await self.set_power(m, "deallocated")

    async def set_power(self, machine: Machine, power: str) -> None:
        """Change a machine's power state; stopping it kills its scripts (status frozen)."""
        machine.power = power
        if power == "running":
            return
        action = machine.action
        if action is not None and action.execution is not None and not action.execution.finished:
            action.preempted = True
            await self.agent.kill(machine.id, machine.action_extension)
        for rc in list(machine.run_commands.values()):
            if not rc.status.finished:
                if rc.provisioning_state() not in TERMINAL:
                    rc.preempted = True
                await self.agent.kill(machine.id, rc.name)

    # ----------------------------------------------------------------- run commands
    def conflict_for_put(
        self, machine: Machine, name: str, location: str, settings: dict[str, Any]
    ) -> str | None:
        """Why a PUT cannot proceed ("not-running", "cap", "in-progress") or None."""
        existing = machine.run_commands.get(name.lower())
        if existing is not None and self._is_identical(existing, location, settings):
            return None
        if machine.power != "running":
            return "not-running"
        if existing is None and len(machine.run_commands) >= RUN_COMMAND_CAP:
            return "cap"
        if existing is not None and existing.provisioning_state() not in TERMINAL:
            return "in-progress"
        return None

    def _is_identical(self, rc: RunCommand, location: str, settings: dict[str, Any]) -> bool:
        return rc.digest == settings_digest(location, settings) and not self.spec.sim.identical_put_reexecutes

    async def put_run_command(
        self,
        machine: Machine,
        name: str,
        location: str,
        tags: dict[str, str] | None,
        settings: dict[str, Any],
    ) -> tuple[RunCommand, bool, Operation]:
        """Create or replace a run command (caller checked ``conflict_for_put``).

        Returns (run command, created?, operation). Identical settings do not re-execute.
        """
        existing = machine.run_commands.get(name.lower())
        if existing is not None and self._is_identical(existing, location, settings):
            if tags is not None:
                existing.tags = tags
            return existing, False, self._operation("put", existing)
        if existing is not None:
            if not existing.status.finished:
                await self.agent.kill(machine.id, existing.name)
            seq = existing.seq + 1
            rc_name = existing.name
        else:
            seq, rc_name = 1, name
        rc = RunCommand(
            name=rc_name,
            machine=machine,
            location=location,
            tags=tags if tags is not None else (existing.tags if existing else {}),
            settings=settings,
            digest=settings_digest(location, settings),
            seq=seq,
            status=self.agent.start(self._execution_request(machine, rc_name, seq, settings)),
        )
        machine.run_commands[name.lower()] = rc
        return rc, existing is None, self._operation("put", rc)

    async def delete_run_command(self, machine: Machine, name: str) -> Operation | None:
        """Remove a run command, killing its script; None if there was none."""
        rc = machine.run_commands.pop(name.lower(), None)
        if rc is None:
            return None
        if not rc.status.finished:
            await self.agent.kill(machine.id, rc.name)
        op = self._operation("delete", rc)
        op.status, op.end = "Succeeded", op.start
        return op

    def _operation(self, kind: str, rc: RunCommand) -> Operation:
        return self._register(Operation(str(uuid.uuid4()), kind, rc.machine, rc, rc.seq, _now()))

    def _register(self, op: Operation) -> Operation:
        self.operations[op.id] = op
        while len(self.operations) > _MAX_OPERATIONS:
            self.operations.popitem(last=False)
        return op

    def poll(self, op_id: str) -> Operation | None:
        """The operation with its status brought up to date (terminal states are frozen)."""
        op = self.operations.get(op_id.lower())
        if op is None or op.status in TERMINAL:
            return op
        if op.kind == "action":
            self._poll_action(op)
            return op
        rc = op.run_command
        if rc is None:
            return op
        if op.machine.run_commands.get(rc.name.lower()) is not rc:
            op.status, op.end = "Canceled", _now()
            op.error = {
                "code": "OperationCanceled",
                "message": "The run command was deleted before it completed.",
            }
            return op
        state = rc.provisioning_state()
        if state in TERMINAL:
            op.status, op.end = state, _now()
            if state == "Failed":
                op.error = rc.failure()
        return op

    # ----------------------------------------------------------------- legacy action API
    def action_busy(self, machine: Machine) -> bool:
        """ "You can run one script at a time" (the action API's rule)."""
        op = machine.action
        return op is not None and self.poll(op.id) is op and op.status == "InProgress"

    def run_action(
        self,
        machine: Machine,
        *,
        script: str | None,
        command_id: str | None,
        parameters: list[tuple[str, str]],
    ) -> Operation:
        """Start a legacy ``runCommand`` action (caller checked power and ``action_busy``)."""
        machine.action_seq += 1
        req = ExecutionRequest(
            vm_id=machine.id,
            vm_display=machine.display,
            os=machine.os,
            run_command=machine.action_extension,
            seq=machine.action_seq,
            script=script,
            command_id=command_id,
            parameters=parameters,
            timeout_s=ACTION_TIMEOUT_S,
            hung=self.hung(machine),
        )
        op = Operation(str(uuid.uuid4()), "action", machine, None, machine.action_seq, _now())
        op.execution = self.agent.start(req)
        machine.action = op
        return self._register(op)

    def _poll_action(self, op: Operation) -> None:
        st = op.execution
        assert st is not None
        if op.preempted:
            op.status, op.end = "Failed", _now()
            op.error = {
                "code": "OperationPreempted",
                "message": "Operation execution has been preempted by a more recent operation.",
            }
        elif st.finished:
            op.status, op.end = "Succeeded", _now()
            if op.machine.os != "windows" and st.state == "Failed":
                # The Linux action extension fails the operation on a nonzero exit code.
                op.status = "Failed"
                op.error = {
                    "code": "VMExtensionProvisioningError",
                    "message": (
                        f"VM has reported a failure when processing extension 'RunCommandLinux'. Error message: "
                        f'"Enable failed: {st.message.removeprefix("Execution failed: ")}\n[stdout]\n'
                        f'{st.output}\n[stderr]\n{st.error}".'
                    ),
                }

    # ----------------------------------------------------------------- agent requests
    def _execution_request(
        self, machine: Machine, name: str, seq: int, s: dict[str, Any]
    ) -> ExecutionRequest:
        source = s.get("source") or {}
        out_p, out_missing = self._blob_principal(
            machine, s.get("outputBlobUri"), s.get("outputBlobManagedIdentity")
        )
        err_p, err_missing = self._blob_principal(
            machine, s.get("errorBlobUri"), s.get("errorBlobManagedIdentity")
        )
        timeout = s.get("timeoutInSeconds")
        return ExecutionRequest(
            vm_id=machine.id,
            vm_display=machine.display,
            os=machine.os,
            run_command=name,
            seq=seq,
            script=source.get("script"),
            script_uri=source.get("scriptUri"),
            command_id=source.get("commandId"),
            parameters=[(p["name"], p["value"]) for p in s.get("parameters") or []],
            protected_parameters=[(p["name"], p["value"]) for p in s.get("protectedParameters") or []],
            run_as_user=s.get("runAsUser") or None,
            run_as_password=s.get("runAsPassword") or None,
            timeout_s=int(timeout) if timeout is not None else 0,
            output_blob_uri=s.get("outputBlobUri") or None,
            error_blob_uri=s.get("errorBlobUri") or None,
            output_blob_principal=out_p,
            error_blob_principal=err_p,
            blob_identity_missing=out_missing or err_missing,
            hung=self.hung(machine),
        )

    def _blob_principal(self, machine: Machine, uri: Any, mi: Any) -> tuple[Principal | None, bool]:
        """(principal, missing) for a blob's managed identity; (None, False) when not in MI mode."""
        if not uri or not isinstance(mi, dict):
            return None, False
        if mi.get("objectId"):
            return None, True  # the Linux handler refuses object ids for blob upload
        found = resolve_vm_identity(self.spec, machine.host, client_id=mi.get("clientId") or None)
        return found, found is None
