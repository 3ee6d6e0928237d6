"""What ARM hands the guest agent (``ExecutionRequest``) and what it reports back (``ExecutionStatus``).

Plain data shared by the agent, its process helpers, the run-command book and the renderer.
Secrets (protected parameters, the runAs password, SAS URLs) are kept out of reprs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from azrun.sim.tokens import Principal


@dataclass
class ExecutionRequest:
    """One execution of a run command on one VM, as ARM hands it to the agent."""

    vm_id: str
    vm_display: str
    os: str
    run_command: str
    seq: int
    script: str | None = None
    script_uri: str | None = field(default=None, repr=False)
    command_id: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    protected_parameters: list[tuple[str, str]] = field(default_factory=list, repr=False)
    run_as_user: str | None = None
    run_as_password: str | None = field(default=None, repr=False)
    timeout_s: int = 0
    output_blob_uri: str | None = field(default=None, repr=False)
    error_blob_uri: str | None = field(default=None, repr=False)
    output_blob_principal: Principal | None = None
    error_blob_principal: Principal | None = None
    blob_identity_missing: bool = False
    hung: bool = False
    never_starts: bool = False  # fault: the agent never picks it up (status stays Pending)
    scale_set_vm: bool = False  # a Uniform instance (slower dispatch, as recorded)
    managed: bool = True  # a managed run command (False: the legacy action extension)


@dataclass
class ExecutionStatus:
    """The instance view of one execution; mutated only by the agent, on the event loop."""

    state: str = "Pending"
    message: str = ""
    exit_code: int = 0
    output: str = ""
    error: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    started: bool = False
    finished: bool = False
