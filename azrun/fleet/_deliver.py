"""Sending one target's run command: the PUT, with ARM's known answers handled.

* 409 ``Conflict`` (another execution in progress): back off ``conflict_backoff_s x 2^n``
  (jittered) and retry, ``conflict_retries`` times, then Undeliverable.
* The PUT may have reached Azure (a 5xx after retries, a reset or timeout after sending:
  ``SubmitOutcomeUnknown``): GET the run command by its deterministic name before any new PUT,
  so nothing runs twice. Found: it was sent. Confirmed absent (404): it was not, send again.
  No GET answers either: :class:`OutcomeUnknown` (the runner watches it as sent until a GET
  says otherwise); only a confirmed-absent run command counts as never sent.
* Nothing was sent (``SubmitNotSent`` from a connect-phase failure): send again,
  ``submit_retries`` times, then Undeliverable with kind ``NOT_SENT``.
* The machine already holds 25 run commands (409 ``OperationNotAllowed``) and some of them are
  still being deleted (listed ``Deleting``): wait for those deletes, up to ``delete_wait_s``,
  then send again; otherwise Undeliverable with the ``azrun cleanup`` hint.
* Anything else ARM refuses (403 with the RBAC action, 404, 409 ``OperationNotAllowed`` with
  its hint, 429 past every retry): Undeliverable with ARM's words.

:func:`deliver` is a standalone step over a :class:`~azrun.fleet._dispatch.Dispatcher`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from azrun.fleet._delete import DELETE_CHECK_S, backoff
from azrun.fleet._dispatch import Dispatcher
from azrun.fleet._options import FleetOptions
from azrun.fleet._work import OutcomeUnknown, Undeliverable, Work
from azrun.runcommand import ArmFailure, FailureKind, RunCommandView, classify_error

__all__ = ["backoff_s", "deliver", "is_cap_refusal"]

Sleep = Callable[[float], Awaitable[None]]


def backoff_s(opts: FleetOptions, attempt: int) -> float:
    """``conflict_backoff_s x 2^attempt``, jittered by +-25 %, at most 60 s."""
    return backoff(opts.conflict_backoff_s, attempt)


def is_cap_refusal(failure: ArmFailure) -> bool:
    """ARM refused a new run command: the machine holds the most it allows (25)."""
    return failure.kind is FailureKind.NOT_ALLOWED and "maximum number" in failure.message.lower()


async def deliver(
    client: Dispatcher, work: Work, body: dict[str, Any], opts: FleetOptions, *, sleep: Sleep = asyncio.sleep
) -> RunCommandView:
    """PUT ``body`` as ``work``'s run command; the PUT's answer (or the GET's that confirmed it).

    Sets ``work.put_attempted`` when a request leaves the client and ``work.put_sent`` while the
    run command exists or may exist.

    Raises:
        Undeliverable: ARM refused it, or it was confirmed not sent after every retry.
        OutcomeUnknown: it may have been applied and no GET could tell (``put_sent`` stays True).
    """
    conflicts = resends = cap_waits = 0
    while True:
        try:
            view = await client.submit(work.target, work.run_command_name, body, counter=work.count,
                                       on_send=lambda: setattr(work, "put_attempted", True))
        except Exception as exc:
            failure = classify_error(exc)
        else:
            work.put_sent = True
            return view
        if failure.kind is FailureKind.CONFLICT and conflicts < opts.conflict_retries:
            await sleep(backoff_s(opts, conflicts))
            conflicts += 1
            continue
        if failure.kind is FailureKind.UNKNOWN_OUTCOME:
            work.put_sent = True  # until a GET says otherwise, it may exist
            found = await _read_back(client, work, failure)
            if found is not None:
                return found
            work.put_sent = False  # confirmed absent: never sent
        if failure.kind in (FailureKind.UNKNOWN_OUTCOME, FailureKind.NOT_SENT) and resends < opts.submit_retries:
            resends += 1
            await sleep(backoff_s(opts, resends - 1))
            continue
        if is_cap_refusal(failure) and cap_waits * DELETE_CHECK_S < opts.delete_wait_s and await _deleting(client, work):
            cap_waits += 1  # our (or anyone's) deletes still count toward the 25: let them finish
            await sleep(DELETE_CHECK_S)
            continue
        if failure.kind is FailureKind.CONFLICT:
            failure = ArmFailure(failure.kind, failure.status, failure.code,
                                 f"{failure.message} (still in conflict after {conflicts} retries)")
        raise Undeliverable(failure)


async def _read_back(client: Dispatcher, work: Work, failure: ArmFailure) -> RunCommandView | None:
    try:
        return await client.get(work.target, work.run_command_name, counter=work.count)
    except Exception as exc:
        again = classify_error(exc)
        raise OutcomeUnknown(
            f"the PUT may have reached Azure ({failure.message}) and reading it back failed "
            f"({again.describe()}); watching it until a read answers"
        ) from exc


async def _deleting(client: Dispatcher, work: Work) -> bool:
    """Does the machine hold run commands that are being deleted (they still count)?"""
    try:
        found = await client.list(work.target, counter=work.count)
    except Exception:
        return False
    return any(info.provisioning_state.lower() == "deleting" for info in found)
