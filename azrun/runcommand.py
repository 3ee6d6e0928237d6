"""One managed run command on one machine: build it, submit it, read it, delete it.

Everything fleet-wide (concurrency, budgets, scheduling) lives in :mod:`azrun.fleet`; this
module only knows the wire, over the aio Compute client from :class:`azrun.clients.ClientFactory`.

Choices, each answering a known Azure trap (azure-facts §1-2, peers §3):

* **Unique names.** Every run uses ``azrun-<run id>``; a same-name re-PUT may not re-execute.
  The resource is tagged ``{"azrun-run": <run id>}`` so :func:`is_azrun_run_command` (name
  prefix AND tag) recognises azrun's own and cleanup never touches anyone else's.
* **No hidden failures.** ``treatFailureAsDeploymentFailure`` is always set, and the exit code
  is always checked: ``Succeeded`` with a non-zero exit code is still a failure.
* **Cheap submit.** ``begin_create_or_update(..., polling=False)`` sends the PUT only: with
  ``asyncExecution`` the LRO would finish as soon as the script starts anyway, and the fleet's
  scheduled ``GET $expand=instanceView`` polls are the single source of completion.
* **Timeouts the real Linux handler way.** It reports ``Failed`` / exitCode -1 /
  "...exit status=-1" when it kills a script at ``timeoutInSeconds``; :func:`looks_timed_out`
  turns that into ``TimedOut`` when the run lasted (about) the timeout.
* **Tolerant states.** ``executionState`` is ``modelAsString``: unknown values are kept as text
  and treated as "not finished yet" (the watchdog bounds how long that can last).
* **Errors per target, not per fleet.** :func:`classify_error` turns SDK exceptions into an
  :class:`ArmFailure` (conflict, not allowed, forbidden with the RBAC action, not found, outcome
  unknown, ...) that the fleet maps onto target states; secrets never reach its message.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from azrun._compat import StrEnum
from azrun.models import RunId, RunSpec, Target, TargetKind, TargetState
from azrun.redact import redact

if TYPE_CHECKING:
    from azrun.clients import ClientFactory

__all__ = [
    "RUN_COMMAND_PREFIX",
    "RUN_TAG",
    "ArmFailure",
    "BlobTargets",
    "FailureKind",
    "MachinePath",
    "Outcome",
    "RequestCounter",
    "RunCommandClient",
    "RunCommandInfo",
    "RunCommandView",
    "WriteTargets",
    "build_run_command",
    "classify_error",
    "interpret",
    "is_azrun_run_command",
    "looks_timed_out",
    "new_run_id",
    "run_command_name",
]

RUN_COMMAND_PREFIX = "azrun-"
RUN_TAG = "azrun-run"
#: A run counts as timed out when it lasted at least ``timeout - TIMEOUT_SLACK_S`` (the
#: instance view's times have one-second resolution and the kill is not instantaneous).
TIMEOUT_SLACK_S = 1.5
_ACTION_RE = re.compile(r"perform action '([^']+)'")
_TERMINAL_PROVISIONING = frozenset({"succeeded", "failed", "canceled"})


# -- names and paths ---------------------------------------------------------------------------
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


# -- the request body ----------------------------------------------------------------------------
class WriteTargets(Protocol):
    """Where the agent writes stdout/stderr (``azrun.output.BlobPair`` has this shape)."""

    @property
    def stdout_write_uri(self) -> str: ...
    @property
    def stderr_write_uri(self) -> str: ...
    @property
    def identity(self) -> dict[str, str] | None: ...


@dataclass(frozen=True, slots=True)
class BlobTargets:
    """A plain :class:`WriteTargets`: write URIs (SAS, or plain for managed identity) and the
    ``RunCommandManagedIdentity`` body (``{}`` = system-assigned, ``{"clientId": ...}``; ``None``
    for SAS URIs)."""

    stdout_write_uri: str = field(repr=False)
    stderr_write_uri: str = field(repr=False)
    identity: dict[str, str] | None = None


def _identity_body(identity: str | None) -> dict[str, str]:
    if identity in (None, "", "system"):
        return {}
    return {"clientId": str(identity)}


def _source(spec: RunSpec) -> dict[str, Any]:
    if spec.script:
        return {"script": spec.script}
    if spec.script_uri:
        src: dict[str, Any] = {"scriptUri": spec.script_uri}
        if spec.script_uri_identity:
            src["scriptUriManagedIdentity"] = _identity_body(spec.script_uri_identity)
        return src
    return {"commandId": spec.command_id}


def build_run_command(
    spec: RunSpec, *, location: str, run_id: str, blobs: WriteTargets | None = None
) -> dict[str, Any]:
    """The PUT body. It carries secrets (protected parameters, password): never log it."""
    props: dict[str, Any] = {
        "source": _source(spec),
        "asyncExecution": spec.async_execution,
        "timeoutInSeconds": spec.timeout_s,
        "treatFailureAsDeploymentFailure": True,
    }
    if spec.parameters:
        props["parameters"] = [{"name": n, "value": v} for n, v in spec.parameters]
    if spec.protected_parameters:
        props["protectedParameters"] = [{"name": n, "value": v} for n, v in spec.protected_parameters]
    if spec.run_as_user:
        props["runAsUser"] = spec.run_as_user
        if spec.run_as_password:
            props["runAsPassword"] = spec.run_as_password
    if blobs is not None:
        props["outputBlobUri"] = blobs.stdout_write_uri
        props["errorBlobUri"] = blobs.stderr_write_uri
        if blobs.identity is not None:
            props["outputBlobManagedIdentity"] = dict(blobs.identity)
            props["errorBlobManagedIdentity"] = dict(blobs.identity)
    return {"location": location, "tags": {RUN_TAG: run_id}, "properties": props}


# -- what comes back -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunCommandView:
    """A run command as read back (``$expand=instanceView``); unknown states kept as text."""

    id: str | None = None
    name: str = ""
    provisioning_state: str = ""
    execution_state: str = ""
    execution_message: str = ""
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_sdk(cls, rc: Any) -> RunCommandView:
        """From an SDK model (hybrid: attribute and dict access) or a plain ARM dict."""
        data = rc.as_dict() if hasattr(rc, "as_dict") else dict(rc)
        props = data.get("properties", data)
        iv = props.get("instanceView") or props.get("instance_view") or {}
        return cls(
            id=data.get("id"),
            name=str(data.get("name") or ""),
            provisioning_state=str(props.get("provisioningState") or props.get("provisioning_state") or ""),
            execution_state=str(iv.get("executionState") or iv.get("execution_state") or ""),
            execution_message=str(iv.get("executionMessage") or iv.get("execution_message") or ""),
            exit_code=_int(iv.get("exitCode", iv.get("exit_code"))),
            output=str(iv.get("output") or ""),
            error=str(iv.get("error") or ""),
            start_time=_time(iv.get("startTime", iv.get("start_time"))),
            end_time=_time(iv.get("endTime", iv.get("end_time"))),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        )


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished run command, as azrun judges it."""

    state: TargetState
    exit_code: int | None
    message: str


def looks_timed_out(view: RunCommandView, timeout_s: int) -> bool:
    """The Linux handler's timeout: ``Failed`` / exit -1 after (about) ``timeoutInSeconds``."""
    if view.execution_state.lower() == "timedout":
        return True
    if timeout_s <= 0 or view.exit_code != -1 or view.execution_state.lower() != "failed":
        return False
    if view.start_time is None or view.end_time is None:
        return False
    lasted = (view.end_time - view.start_time).total_seconds()
    return lasted >= timeout_s - TIMEOUT_SLACK_S


def interpret(view: RunCommandView, timeout_s: int) -> Outcome | None:
    """Terminal outcome of a run command, or ``None`` while it is still going.

    Succeeded needs exit code 0 (or none reported). ``Unknown`` with an end time (the handler's
    "executed, state unknown" after an upgrade) is a failure; any other unknown state waits.
    A ``Failed`` provisioning with no terminal execution state (e.g. the VM was deallocated
    mid-run, or the extension failed before the script) is a failure.
    """
    state = view.execution_state.lower()
    message = view.execution_message
    if state == "succeeded":
        if view.exit_code not in (None, 0):
            return Outcome(TargetState.FAILED, view.exit_code, message or f"exit code {view.exit_code}")
        return Outcome(TargetState.SUCCEEDED, view.exit_code if view.exit_code is not None else 0, message)
    if state in ("failed", "timedout"):
        if looks_timed_out(view, timeout_s):
            return Outcome(TargetState.TIMED_OUT, view.exit_code, f"timed out after {timeout_s}s ({message})".strip())
        return Outcome(TargetState.FAILED, view.exit_code, message or "execution failed")
    if state == "canceled":
        return Outcome(TargetState.CANCELED, view.exit_code, message or "canceled")
    if state == "unknown" and view.end_time is not None:
        return Outcome(TargetState.FAILED, view.exit_code, message or "execution state unknown")
    if view.provisioning_state.lower() == "failed":
        what = f"while the script was {view.execution_state}" if view.execution_state else "before the script ran"
        return Outcome(TargetState.FAILED, view.exit_code,
                       f"run command provisioning failed {what} (VM stopped or deallocated, or the extension failed)")
    return None


# -- errors ------------------------------------------------------------------------------------------
class FailureKind(StrEnum):
    CONFLICT = "conflict"  # 409 Conflict: another execution in progress -> back off, retry
    NOT_ALLOWED = "not-allowed"  # 409 OperationNotAllowed: VM not running, 25-cap
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not-found"  # 404
    THROTTLED = "throttled"  # 429 after every retry
    AUTH = "auth"  # 401 / no token
    NOT_SENT = "not-sent"  # never reached Azure: safe to resend
    UNKNOWN_OUTCOME = "unknown-outcome"  # may have reached Azure: GET before a new PUT
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ArmFailure:
    """An SDK exception reduced to what the fleet decides on; the message is redacted."""

    kind: FailureKind
    status: int | None
    code: str
    message: str
    action: str | None = None  # RBAC action named by a 403

    @property
    def hint(self) -> str | None:
        if self.kind is FailureKind.FORBIDDEN:
            what = f"'{self.action}'" if self.action else "the run command actions"
            return f"grant the identity {what} (e.g. the 'Virtual Machine Contributor' role) on the VM's scope"
        if self.kind is FailureKind.NOT_ALLOWED and "maximum number" in self.message.lower():
            return "delete finished run commands with 'azrun cleanup' (a VM holds at most 25)"
        if self.kind is FailureKind.NOT_ALLOWED and "not running" in self.message.lower():
            return "start the VM, or leave it out of the selection"
        return None

    def describe(self) -> str:
        base = f"{self.status or ''} {self.code}: {self.message}".strip()
        return f"{base} (hint: {self.hint})" if self.hint else base


def classify_error(exc: BaseException) -> ArmFailure:
    """Reduce an azure-core exception to an :class:`ArmFailure` (never raises)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ClientAuthenticationError):
        return ArmFailure(FailureKind.AUTH, _status(exc), "AuthenticationFailed", _clean(str(exc)))
    if isinstance(exc, HttpResponseError):
        return _from_http(exc)
    if isinstance(exc, ServiceRequestError):
        return ArmFailure(FailureKind.NOT_SENT, None, "ServiceRequestError", _clean(str(exc)))
    if isinstance(exc, ServiceResponseError):
        return ArmFailure(FailureKind.UNKNOWN_OUTCOME, None, "ServiceResponseError", _clean(str(exc)))
    return ArmFailure(FailureKind.OTHER, None, type(exc).__name__, _clean(str(exc)))


def _status(exc: Any) -> int | None:
    status = getattr(exc, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _from_http(exc: Any) -> ArmFailure:
    status = _status(exc)
    err = getattr(exc, "error", None)
    code = str(getattr(err, "code", "") or "")
    message = str(getattr(err, "message", "") or getattr(exc, "message", "") or str(exc))
    message = _clean(message.splitlines()[0] if message else "")
    if status == 409 and code.lower() == "conflict":
        kind = FailureKind.CONFLICT
    elif status == 409:
        kind = FailureKind.NOT_ALLOWED
    elif status == 403:
        found = _ACTION_RE.search(message)
        return ArmFailure(FailureKind.FORBIDDEN, status, code or "AuthorizationFailed", message,
                          found.group(1) if found else None)
    elif status == 404:
        kind = FailureKind.NOT_FOUND
    elif status == 429:
        kind = FailureKind.THROTTLED
    elif status == 401:
        kind = FailureKind.AUTH
    else:
        kind = FailureKind.OTHER
    return ArmFailure(kind, status, code or f"HTTP{status}", message)


def _clean(text: str) -> str:
    return redact(" ".join(text.split()))[:500]


# -- the client ----------------------------------------------------------------------------------------
#: Told the status of every HTTP attempt that got a response (retries included).
RequestCounter = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RunCommandInfo:
    """One run command found on a machine (for cleanup)."""

    name: str
    id: str | None
    tags: dict[str, str]
    execution_state: str
    end_time: datetime | None
    provisioning_state: str

    @property
    def finished(self) -> bool:
        state = self.execution_state.lower()
        return state in ("succeeded", "failed", "canceled", "timedout") or (
            state == "" and self.provisioning_state.lower() in _TERMINAL_PROVISIONING
        )


def _hook(counter: RequestCounter | None) -> dict[str, Callable[[Any], None]]:
    if counter is None:
        return {}

    def on_response(pipeline_response: Any) -> None:
        counter(int(pipeline_response.http_response.status_code))

    return {"raw_response_hook": on_response}


class RunCommandClient:
    """Submit / read / delete managed run commands over the aio SDK (VM or VMSS-VM paths).

    Every method raises azure-core exceptions unchanged (callers use :func:`classify_error`),
    except that a 404 on read or delete is an answer (``None`` / ``False``), not an error.
    """

    def __init__(self, factory: ClientFactory, *, api_version: str | None = None) -> None:
        self._factory = factory
        self._api: dict[str, str] = {"api_version": api_version} if api_version else {}

    def _ops(self, path: MachinePath) -> Any:
        client = self._factory.aio_compute(path.subscription_id)
        return client.virtual_machine_scale_set_vm_run_commands if path.uniform else client.virtual_machine_run_commands

    @staticmethod
    def _args(path: MachinePath, name: str | None = None) -> tuple[str, ...]:
        head = (path.resource_group, path.scale_set or "", path.instance_id or "") if path.uniform else (
            path.resource_group, path.vm_name or "")
        return (*head, name) if name is not None else head

    async def submit(
        self,
        target: Target,
        name: str,
        body: dict[str, Any],
        *,
        counter: RequestCounter | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> RunCommandView:
        """PUT the run command (no LRO polling) and return what the PUT answered.

        ``on_send`` is called when the request leaves the client (after the throttle and the
        token): until then, cancelling the call sends nothing.
        """
        path = MachinePath.of(target)
        extra: dict[str, Any] = dict(_hook(counter))
        if on_send is not None:
            extra["raw_request_hook"] = lambda _request: on_send()
        poller = await self._ops(path).begin_create_or_update(
            *self._args(path, name), body, polling=False, **self._api, **extra
        )
        return RunCommandView.from_sdk(await poller.result())

    async def get(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> RunCommandView | None:
        """GET with the instance view; ``None`` when the run command does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        path = MachinePath.of(target)
        ops = self._ops(path)
        op = ops.get if path.uniform else ops.get_by_virtual_machine
        try:
            rc = await op(*self._args(path, name), expand="instanceView", **self._api, **_hook(counter))
        except ResourceNotFoundError:
            return None
        return RunCommandView.from_sdk(rc)

    async def delete(self, target: Target, name: str, *, counter: RequestCounter | None = None) -> bool:
        """DELETE (kills a running script); ``False`` when it was already gone."""
        from azure.core.exceptions import ResourceNotFoundError

        path = MachinePath.of(target)
        try:
            poller = await self._ops(path).begin_delete(
                *self._args(path, name), polling=False, **self._api, **_hook(counter)
            )
            await poller.result()
        except ResourceNotFoundError:
            return False
        return True

    async def power_state(self, target: Target, *, counter: RequestCounter | None = None) -> str | None:
        """The machine's power state now (``running``, ``deallocated``, ...), None when unknown.

        One read of the VM's (or VMSS VM's) instance view: used only for targets long overdue,
        to tell a stopped machine from a slow script.
        """
        from azure.core.exceptions import ResourceNotFoundError

        path = MachinePath.of(target)
        client = self._factory.aio_compute(path.subscription_id)
        view: Any
        try:
            if path.uniform:
                view = await client.virtual_machine_scale_set_vms.get_instance_view(
                    path.resource_group, path.scale_set or "", path.instance_id or "", **_hook(counter))
            else:
                view = await client.virtual_machines.instance_view(path.resource_group, path.vm_name or "",
                                                                    **_hook(counter))
        except ResourceNotFoundError:
            return "deleted"
        for status in getattr(view, "statuses", None) or ():
            code = str(getattr(status, "code", "") or "")
            if code.lower().startswith("powerstate/"):
                return code.split("/", 1)[1].lower()
        return None

    async def list(self, target: Target, *, counter: RequestCounter | None = None) -> list[RunCommandInfo]:
        """Every managed run command on the machine (with instance views, for their end times)."""
        path = MachinePath.of(target)
        ops = self._ops(path)
        pager = (ops.list if path.uniform else ops.list_by_virtual_machine)(
            *self._args(path), expand="instanceView", **self._api, **_hook(counter)
        )
        found: list[RunCommandInfo] = []
        async for rc in pager:
            view = RunCommandView.from_sdk(rc)
            found.append(RunCommandInfo(view.name, view.id, view.tags, view.execution_state, view.end_time,
                                        view.provisioning_state))
        return found
