"""Sending one target's run command: the PUT, with ARM's known answers handled.

* 409 ``Conflict`` (another execution in progress): back off ``conflict_backoff_s x 2^n``
  (jittered) and retry, ``conflict_retries`` times, then Undeliverable.
* The PUT may have reached Azure but no answer came (``ServiceResponseError``): GET the run
  command by its deterministic name before any new PUT, so nothing runs twice.
* Nothing was sent (``ServiceRequestError``): send again, ``submit_retries`` times.
* Anything else ARM refuses (403 with the RBAC action, 404, 409 ``OperationNotAllowed`` with
  its hint, 429 past every retry): Undeliverable with ARM's words.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from azrun.fleet._options import FleetOptions
from azrun.fleet._work import Undeliverable, Work
from azrun.runcommand import ArmFailure, FailureKind, RunCommandClient, RunCommandView, classify_error

__all__ = ["backoff_s", "deliver"]

Sleep = Callable[[float], Awaitable[None]]


def backoff_s(opts: FleetOptions, attempt: int) -> float:
    """``conflict_backoff_s x 2^attempt``, jittered by +-25 %, at most 60 s."""
    base = opts.conflict_backoff_s * float(2**attempt)
    return min(60.0, base * random.uniform(0.75, 1.25))


async def deliver(
    client: RunCommandClient, work: Work, body: dict[str, Any], opts: FleetOptions, *, sleep: Sleep = asyncio.sleep
) -> RunCommandView:
    """PUT ``body`` as ``work``'s run command; the PUT's answer, or :class:`Undeliverable`.

    Sets ``work.put_attempted`` when a request leaves the client and ``work.put_sent`` while the
    run command exists or may exist.
    """
    conflicts = resends = 0
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
            work.put_sent = False
        if failure.kind in (FailureKind.UNKNOWN_OUTCOME, FailureKind.NOT_SENT) and resends < opts.submit_retries:
            resends += 1
            await sleep(backoff_s(opts, resends - 1))
            continue
        if failure.kind is FailureKind.CONFLICT:
            failure = ArmFailure(failure.kind, failure.status, failure.code,
                                 f"{failure.message} (still in conflict after {conflicts} retries)")
        raise Undeliverable(failure)


async def _read_back(client: RunCommandClient, work: Work, failure: ArmFailure) -> RunCommandView | None:
    try:
        return await client.get(work.target, work.run_command_name, counter=work.count)
    except Exception as exc:
        again = classify_error(exc)
        raise Undeliverable(
            f"the PUT may have reached Azure ({failure.message}) and reading it back failed "
            f"({again.describe()}); the run command may exist"
        ) from exc
