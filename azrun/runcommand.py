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
* **Errors per target, not per fleet.** :func:`azrun.azerrors.classify` (also exported here as
  ``classify_error``) turns SDK exceptions into an :class:`~azrun.errors.AzureFailure` (alias
  ``ArmFailure``: conflict, not allowed, forbidden with the RBAC action, not found, outcome
  unknown, ...) that the fleet maps onto target states; secrets never reach its message.
* **A failed PUT says whether it may have landed.** :meth:`RunCommandClient.submit` raises
  :class:`~azrun.errors.SubmitNotSent` when no attempt can have been applied (nothing left the
  client, or ARM answered 4xx) and :class:`~azrun.errors.SubmitOutcomeUnknown` when one may have
  (a 5xx, a timeout or a reset after sending): then GET the run command before any new PUT.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from azrun.azerrors import classify
from azrun.errors import AzureFailure, FailureKind, SubmitNotSent, SubmitOutcomeUnknown
from azrun.models import RunId, RunSpec, Target, TargetKind, TargetState

if TYPE_CHECKING:
    from azrun.clients import ClientFactory

__all__ = [
    "RUN_COMMAND_PREFIX",
    "RUN_TAG",
    "ArmFailure",
    "AzureFailure",
    "BlobTargets",
    "FailureKind",
    "MachinePath",
    "Outcome",
    "PutAttempts",
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
    "submit_error",
]

#: Old names, kept for callers written before azrun.azerrors owned the translation.
ArmFailure = AzureFailure
classify_error = classify

RUN_COMMAND_PREFIX = "azrun-"
RUN_TAG = "azrun-run"
#: A run counts as timed out when it lasted at least ``timeout - TIMEOUT_SLACK_S`` (the
#: instance view's times have one-second resolution and the kill is not instantaneous).
TIMEOUT_SLACK_S = 1.5
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


class PutAttempts:
    """What the pipeline hooks saw of one submit: attempts sent and statuses answered."""

    def __init__(self, counter: RequestCounter | None = None, on_send: Callable[[], None] | None = None) -> None:
        self.sent = 0
        self.statuses: list[int] = []
        self._counter = counter
        self._on_send = on_send

    def hooks(self) -> dict[str, Callable[[Any], None]]:
        def on_request(_request: Any) -> None:
            self.sent += 1
            if self._on_send is not None:
                self._on_send()

        def on_response(pipeline_response: Any) -> None:
            status = int(pipeline_response.http_response.status_code)
            self.statuses.append(status)
            if self._counter is not None:
                self._counter(status)

        return {"raw_request_hook": on_request, "raw_response_hook": on_response}


def submit_error(failure: AzureFailure, attempts: PutAttempts, target: str = "") -> SubmitNotSent | SubmitOutcomeUnknown:
    """The error a failed PUT raises: may any attempt have been applied?

    Applied is possible when an attempt was answered 5xx (or 408), when the last one was sent but
    not answered (timeout, reset: ``UNKNOWN_OUTCOME``), or when an earlier attempt went
    unanswered (the retry policy hid why). Otherwise every attempt either never left the client
    (``NOT_SENT``: refused, DNS, TLS; or no token, so nothing was sent at all) or was refused
    with a 4xx: nothing was applied.
    """
    unanswered = attempts.sent - len(attempts.statuses)
    final_unsent = 1 if failure.kind is FailureKind.NOT_SENT else 0
    maybe_applied = (
        failure.kind is FailureKind.UNKNOWN_OUTCOME
        or any(s >= 500 or s == 408 for s in attempts.statuses)
        or unanswered > final_unsent
    )
    on = f" on {target}" if target else ""
    if maybe_applied:
        unknown = AzureFailure(FailureKind.UNKNOWN_OUTCOME, failure.status, failure.code, failure.message,
                               failure.action, failure.retry_after_s)
        return SubmitOutcomeUnknown(
            f"the run command PUT{on} may have been applied ({unknown.describe()})", failure=unknown,
            hint="read the run command back (GET) before sending it again",
        )
    return SubmitNotSent(f"the run command PUT{on} was not applied ({failure.describe()})", failure=failure)


class RunCommandClient:
    """Submit / read / delete managed run commands over the aio SDK (VM or VMSS-VM paths).

    :meth:`submit` raises :class:`~azrun.errors.SubmitNotSent` or
    :class:`~azrun.errors.SubmitOutcomeUnknown` (see :func:`submit_error`); the other methods raise
    azure-core exceptions unchanged (callers use :func:`azrun.azerrors.classify`), except that a
    404 on read or delete is an answer (``None`` / ``False``), not an error.
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

        ``on_send`` is called when an attempt leaves the client (after the throttle and the
        token): until then, cancelling the call sends nothing.

        Raises:
            SubmitNotSent: no attempt can have been applied (safe to send again).
            SubmitOutcomeUnknown: an attempt may have been applied: GET before a new PUT.
        """
        from azure.core.exceptions import AzureError

        path = MachinePath.of(target)
        attempts = PutAttempts(counter, on_send)
        try:
            poller = await self._ops(path).begin_create_or_update(
                *self._args(path, name), body, polling=False, **self._api, **attempts.hooks()
            )
            return RunCommandView.from_sdk(await poller.result())
        except AzureError as exc:
            raise submit_error(classify(exc), attempts, target.name) from exc

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
