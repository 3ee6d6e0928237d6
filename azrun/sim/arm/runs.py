"""Run commands and async operations of the local ARM: the lifecycle behind the handlers.

Semantics chosen where the docs are silent (also in docs/architecture.md):

- at most 25 managed run commands per VM: the 26th PUT answers ``409 OperationNotAllowed``
  "The maximum number of managed run commands (25) has been reached for VM '...'";
- a VM that is not running: PUT/PATCH answer ``409 OperationNotAllowed`` "Cannot modify
  extensions in the VM when the VM is not running."; DELETE still removes the resource;
- a *changed* PUT/PATCH while provisioning is not terminal: ``409 Conflict``; an identical
  re-PUT is idempotent (200, no re-execution, unless ``sim.identical_put_reexecutes``) at any
  time, so a client retrying a PUT whose answer it lost does not start the script twice;
- a changed PUT after provisioning finished kills the previous execution (if still running)
  and runs again with the next sequence number, as the Linux handler does; tags alone are
  not a change;
- DELETE is always accepted (202) and kills a running script; as recorded, its operation lasts
  (``Timing.delete_duration``: 0.3 s fast, 10-211 s realistic) while the run command is still
  listed with ``provisioningState: Deleting`` (and still counts towards the 25); a PUT/PATCH of
  it meanwhile answers ``409 Conflict``; a DELETE of nothing answers 204; on a VM whose agent is
  not ready (fault) the DELETE never finishes;
- timeout: the agent reports ``Failed`` / exit code -1 (the real handler never says TimedOut);
- a VM stopped or deallocated while its run command provisions: the script dies with the VM,
  the instance view stays frozen and provisioning turns ``Failed`` with Compute's
  ``OperationPreempted`` error;
- output/error managed identity ``{"objectId": ...}`` is treated as a missing identity: the
  Linux handler rejects object ids for blob upload ("ObjectId is not supported");
- the legacy action API runs one script at a time per VM; on Linux a nonzero exit fails the
  operation (``VMExtensionProvisioningError``), as RunCommandLinux does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from azrun.sim.agent import Agent
from azrun.sim.execution import ExecutionRequest
from azrun.sim.fleetspec import FleetSpec
from azrun.sim.identity import resolve_vm_identity
from azrun.sim.model import TERMINAL, Machine, Operation, RunCommand, settings_digest
from azrun.sim.tokens import Principal

RUN_COMMAND_CAP = 25
ACTION_TIMEOUT_S = 90 * 60  # the action API's documented limit
_MAX_OPERATIONS = 100_000


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RunBook:
    """Every run command and operation of the world, and the rules that govern them."""

    def __init__(
        self,
        *,
        agent: Agent,
        spec: FleetSpec,
        hung: Callable[[Machine], bool],
        agent_fault: Callable[[Machine], str | None] = lambda _m: None,
    ) -> None:
        self.agent = agent
        self.spec = spec
        self.hung = hung
        self.agent_fault = agent_fault  # "not-ready" | "never-starts" | None
        self.operations: dict[str, Operation] = {}  # insertion-ordered; the oldest are dropped

    def conflict(self, machine: Machine, name: str, location: str, settings: dict[str, Any]) -> str | None:
        """Why a PUT cannot proceed ("not-running", "cap", "in-progress") or None."""
        existing = machine.run_commands.get(name.lower())
        if existing is not None and existing.deleting:
            return "in-progress"
        if existing is not None and self._is_identical(existing, location, settings):
            return None
        if machine.power != "running":
            return "not-running"
        if existing is None and len(machine.run_commands) >= RUN_COMMAND_CAP:
            return "cap"
        if existing is not None and (existing.deleting or existing.provisioning_state() not in TERMINAL):
            return "in-progress"
        return None

    def _is_identical(self, rc: RunCommand, location: str, settings: dict[str, Any]) -> bool:
        return (
            rc.digest == settings_digest(location, settings)
            and not self.spec.sim.identical_put_reexecutes
        )

    async def put(
        self,
        machine: Machine,
        name: str,
        location: str,
        tags: dict[str, str] | None,
        settings: dict[str, Any],
    ) -> tuple[RunCommand, bool, Operation]:
        """Create or replace a run command (the caller checked ``conflict``).

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

    async def delete(self, machine: Machine, name: str) -> Operation | None:
        """Start deleting a run command, killing its script; None if there was none.

        The run command stays listed (``Deleting``) until the operation ends; a second DELETE
        meanwhile answers the same operation.
        """
        rc = machine.run_commands.get(name.lower())
        if rc is None:
            return None
        if rc.deleting and rc.delete_op is not None:
            return rc.delete_op
        if not rc.status.finished:
            await self.agent.kill(machine.id, rc.name)
        rc.deleting = True
        op = rc.delete_op = self._operation("delete", rc)
        if self.agent_fault(machine) != "not-ready":  # no agent, no acknowledgement: never ends
            loop = asyncio.get_running_loop()
            loop.call_later(self.agent.timing.delete_duration(), self._deleted, machine, rc, op)
        return op

    @staticmethod
    def _deleted(machine: Machine, rc: RunCommand, op: Operation) -> None:
        if machine.run_commands.get(rc.name.lower()) is rc:
            del machine.run_commands[rc.name.lower()]
        op.status, op.end = "Succeeded", _now()

    def _operation(self, kind: str, rc: RunCommand) -> Operation:
        return self._register(Operation(str(uuid.uuid4()), kind, rc.machine, rc, rc.seq, _now()))

    def _register(self, op: Operation) -> Operation:
        self.operations[op.id] = op
        while len(self.operations) > _MAX_OPERATIONS:
            del self.operations[next(iter(self.operations))]
        return op

    def poll(self, op_id: str) -> Operation | None:
        """The operation with its status brought up to date (terminal states are frozen)."""
        op = self.operations.get(op_id.lower())
        if op is None or op.status in TERMINAL or op.kind == "delete":
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
            never_starts=self.agent_fault(machine) is not None,
            scale_set_vm=machine.uniform,
            managed=False,
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
            never_starts=self.agent_fault(machine) is not None,
            scale_set_vm=machine.uniform,
        )

    def _blob_principal(self, machine: Machine, uri: Any, mi: Any) -> tuple[Principal | None, bool]:
        """(principal, missing) for a blob's managed identity; (None, False) when not in MI mode."""
        if not uri or not isinstance(mi, dict):
            return None, False
        if mi.get("objectId"):
            return None, True  # the Linux handler refuses object ids for blob upload
        found = resolve_vm_identity(self.spec, machine.host, client_id=mi.get("clientId") or None)
        return found, found is None
