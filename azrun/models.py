"""Frozen value objects that flow between azrun's modules.

Nothing here does I/O. ``Target`` comes out of :mod:`azrun.targets`, ``RunSpec`` goes into
:mod:`azrun.runcommand`, ``TargetResult`` comes out of :mod:`azrun.fleet` and into the ledger.
Secrets (protected parameters, the run-as password) are ``repr=False`` and never serialised by
:meth:`RunSpec.public_dict`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NewType

from azrun._compat import StrEnum
from azrun.config import DEFAULT_TIMEOUT_S

RunId = NewType("RunId", str)


class TargetKind(StrEnum):
    """How a machine is reached: VM paths, or VMSS-VM paths for Uniform instances."""

    VM = "vm"
    VMSS_UNIFORM = "vmss-uniform-instance"
    VMSS_FLEX = "vmss-flex-member"


class TargetState(StrEnum):
    """Per-target state of a fleet run (SSM-like)."""

    PENDING = "Pending"
    DISPATCHING = "Dispatching"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELED = "Canceled"
    SKIPPED = "Skipped"
    UNDELIVERABLE = "Undeliverable"

    @property
    def terminal(self) -> bool:
        """True for the final states (the target will not change again)."""
        return self in TERMINAL_STATES

    @property
    def counts_as_error(self) -> bool:
        """States that spend the error budget (like SSM: execution failures and timeouts)."""
        return self in (TargetState.FAILED, TargetState.TIMED_OUT, TargetState.UNDELIVERABLE)


TERMINAL_STATES = frozenset(
    {
        TargetState.SUCCEEDED,
        TargetState.FAILED,
        TargetState.TIMED_OUT,
        TargetState.CANCELED,
        TargetState.SKIPPED,
        TargetState.UNDELIVERABLE,
    }
)


@dataclass(frozen=True, slots=True)
class Target:
    """One machine a run command can be sent to."""

    resource_id: str  # ARM id of the VM or of the VMSS VM (Uniform instance)
    name: str  # display name: "vm-web-01", "vmss-api/3"
    kind: TargetKind
    subscription_id: str
    resource_group: str
    location: str
    os: str  # "linux" | "windows" | "unknown"
    power_state: str  # "running" | "stopped" | "deallocated" | "starting" | ... | "unknown"
    tags: tuple[tuple[str, str], ...] = ()
    scale_set: str | None = None  # VMSS name for Uniform instances and Flexible members
    instance_id: str | None = None  # Uniform instance id ("3")
    vm_name: str = ""  # VM name (Flexible members: the VM's own name)
    system_identity: bool = False
    user_identity_client_ids: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        """True when the machine's power state is running."""
        return self.power_state == "running"

    @property
    def sort_key(self) -> tuple[str, str, str, int, str]:
        """The order targets are listed and dispatched in (subscription, group, name)."""
        inst = int(self.instance_id) if self.instance_id and self.instance_id.isdigit() else -1
        return (
            self.subscription_id.lower(),
            self.resource_group.lower(),
            (self.scale_set or self.vm_name or self.name).lower(),
            inst,
            self.name.lower(),
        )

    def tag_dict(self) -> dict[str, str]:
        """The machine's tags as a dict."""
        return dict(self.tags)

    def to_dict(self) -> dict[str, Any]:
        """The target as JSON-ready camelCase keys (what ``azrun targets -o json`` prints)."""
        return {
            "id": self.resource_id,
            "name": self.name,
            "kind": self.kind.value,
            "subscription": self.subscription_id,
            "resourceGroup": self.resource_group,
            "location": self.location,
            "os": self.os,
            "power": self.power_state,
            "tags": self.tag_dict(),
            "scaleSet": self.scale_set,
            "instanceId": self.instance_id,
        }


@dataclass(frozen=True, slots=True)
class SkippedTarget:
    """A machine the selector matched but the run will not touch, and why."""

    target: Target
    reason: str


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run. Exactly one of ``script``, ``script_uri`` or ``command_id`` is set."""

    script: str | None = None
    script_uri: str | None = None
    script_uri_identity: str | None = None  # "system" or a client id
    command_id: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    protected_parameters: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    run_as_user: str | None = None
    run_as_password: str | None = field(default=None, repr=False)
    timeout_s: int = DEFAULT_TIMEOUT_S
    async_execution: bool = True
    script_name: str = ""  # what the user called it ("patch.sh", "inline")
    # per-OS scripts overriding ``script`` for targets of that OS: (("windows", "..."),)
    os_scripts: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def for_os(self, os_name: str) -> RunSpec:
        """The spec a target running ``os_name`` gets (its OS's script when one is given)."""
        body = dict(self.os_scripts).get(os_name.lower())
        return replace(self, script=body, script_uri=None, command_id=None, os_scripts=()) if body else self

    def __post_init__(self) -> None:
        sources = [s for s in (self.script, self.script_uri, self.command_id) if s]
        if len(sources) != 1:
            raise ValueError("a RunSpec needs exactly one of script, script_uri or command_id")

    @property
    def script_sha256(self) -> str:
        """SHA-256 of the script text (what the ledger and the report show instead of it)."""
        body = self.script or self.script_uri or self.command_id or ""
        return hashlib.sha256(body.encode()).hexdigest()

    def public_dict(self) -> dict[str, Any]:
        """What may be stored and shown: no script body, no secret values."""
        return {
            "script_name": self.script_name,
            "script_sha256": self.script_sha256,
            "script_uri": _strip_query(self.script_uri) if self.script_uri else None,
            "command_id": self.command_id,
            "parameters": [list(p) for p in self.parameters],
            "protected_parameter_names": [name for name, _ in self.protected_parameters],
            "run_as_user": self.run_as_user,
            "timeout_s": self.timeout_s,
            "async_execution": self.async_execution,
            **({"os_scripts_sha256": {o: hashlib.sha256(b.encode()).hexdigest() for o, b in self.os_scripts}}
               if self.os_scripts else {}),
        }


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


@dataclass(frozen=True, slots=True)
class OutputRef:
    """Where a target's full output lives (URLs never carry a SAS)."""

    stdout_url: str | None = None
    stderr_url: str | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False  # only the instance view's last 4 KB is known


@dataclass(frozen=True, slots=True)
class TargetResult:
    """The outcome for one target."""

    target: Target
    state: TargetState
    exit_code: int | None = None
    message: str = ""
    run_command_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output: OutputRef = field(default_factory=OutputRef)
    stdout_tail: str = ""
    stderr_tail: str = ""
    arm_requests: int = 0
    attempt: int = 1  # delivery attempts made (``--retries``)
    wave: int = 0  # rollout wave (``--waves``; 0 when the run has none)

    @property
    def succeeded(self) -> bool:
        """True when the script ran and exited 0."""
        return self.state is TargetState.SUCCEEDED


@dataclass(frozen=True, slots=True)
class FleetResult:
    """Every target's result; one failed VM never hides the rest."""

    run_id: RunId
    results: tuple[TargetResult, ...]
    notes: tuple[str, ...] = ()  # what the run itself went through (e.g. lost contact with Azure)

    @property
    def succeeded(self) -> tuple[TargetResult, ...]:
        """The targets that succeeded."""
        return tuple(r for r in self.results if r.state is TargetState.SUCCEEDED)

    @property
    def failed(self) -> tuple[TargetResult, ...]:
        """The targets that count as errors (failed, timed out, undeliverable)."""
        return tuple(r for r in self.results if r.state.counts_as_error)

    @property
    def ok(self) -> bool:
        """True when no target counts as an error (skipped machines are fine)."""
        return all(r.state in (TargetState.SUCCEEDED, TargetState.SKIPPED) for r in self.results)

    def counts(self) -> dict[str, int]:
        """How many targets ended in each state."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.state.value] = out.get(r.state.value, 0) + 1
        return out
