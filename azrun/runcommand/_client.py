"""The wire: submit / get / delete / list managed run commands over the aio Compute client
(VM or VMSS-VM paths), and what a failed PUT means (:func:`submit_error`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrun.azerrors import classify
from azrun.errors import AzureFailure, FailureKind, SubmitNotSent, SubmitOutcomeUnknown
from azrun.models import Target
from azrun.runcommand._names import MachinePath
from azrun.runcommand._view import RunCommandView

if TYPE_CHECKING:
    from azrun.clients import ClientFactory

__all__ = ["PutAttempts", "RequestCounter", "RunCommandClient", "RunCommandInfo", "submit_error"]

_TERMINAL_PROVISIONING = frozenset({"succeeded", "failed", "canceled"})


#: Per-call retry settings for the PUT: the pipeline resends it only after a 429 (answered, so
#: not applied; the throttle's own budget). azure-core would also resend a PUT answered 5xx or
#: whose connection dropped, holding PUT idempotent, but an identical re-PUT of a run command may
#: run the script again (unconfirmed for Azure; the local Azure can be told to), and azure-core
#: raises the same ``ServiceRequestError`` for a refused connection and for one dropped after the
#: request was written. Its ``raw_request_hook`` also fires for the first attempt only, so
#: :class:`PutAttempts` could not count resends. So every other failure ends the call, and
#: :func:`azrun.fleet._deliver.deliver` decides: resend what provably was not sent, GET first
#: what may have been applied.
NO_BLIND_RESEND: dict[str, int] = {"retry_status": 0, "retry_read": 0, "retry_connect": 0}

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
        client = self._factory.acompute(path.subscription_id)
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
                *self._args(path, name), body, polling=False, **self._api, **attempts.hooks(), **NO_BLIND_RESEND
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
        client = self._factory.acompute(path.subscription_id)
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
