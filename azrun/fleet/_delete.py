"""Deleting one run command, the way Azure does it: ``DELETE`` answers 202 and an operation that
lasts 10-211 s, during which the run command is still listed (``Deleting``) and still counts
toward the machine's 25. A standalone step over a :class:`~azrun.fleet._dispatch.Dispatcher`
(the runner, ``azrun cancel``, cleanup and durable runs all use it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from azrun.errors import AzureFailure, FailureKind
from azrun.fleet._dispatch import Dispatcher
from azrun.models import Target
from azrun.runcommand import RequestCounter, classify_error

__all__ = ["DeleteResult", "backoff", "delete_run_command"]

_LOG = logging.getLogger(__name__)
_RETRY = frozenset({FailureKind.CONFLICT, FailureKind.THROTTLED, FailureKind.NOT_SENT,
                    FailureKind.UNKNOWN_OUTCOME, FailureKind.OTHER})
#: How often a lasting delete is read back (the operation takes 10 s or more).
DELETE_CHECK_S = 10.0

Sleep = Callable[[float], Awaitable[None]]


def backoff(base_s: float, attempt: int) -> float:
    """``base_s x 2^attempt``, jittered by +-25 %, at most 60 s."""
    return min(60.0, base_s * float(2**attempt) * random.uniform(0.75, 1.25))


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """``accepted``: Azure took the DELETE (or the run command was already gone); ``gone``: it is
    no longer there (False while Azure still lists it as Deleting); ``failure``: why not accepted."""

    accepted: bool
    gone: bool
    failure: AzureFailure | None = None


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def delete_run_command(
    dispatcher: Dispatcher,
    target: Target,
    name: str,
    *,
    sleep: Sleep = asyncio.sleep,
    counter: RequestCounter | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    wait_s: float = 0.0,
    slots: asyncio.Semaphore | None = None,
) -> DeleteResult:
    """DELETE (retrying conflicts, throttling and unanswered requests), then, for up to
    ``wait_s``, read it back until it is gone (a 404)."""
    failure: AzureFailure | None = None
    for attempt in range(retries + 1):
        try:
            async with slots or _nothing():
                await dispatcher.delete(target, name, counter=counter)
        except Exception as exc:
            failure = classify_error(exc)
            if failure.kind is FailureKind.NOT_FOUND:
                return DeleteResult(True, True)
            if attempt == retries or failure.kind not in _RETRY:
                _LOG.warning("could not delete %s on %s: %s", name, target.name, failure.describe())
                return DeleteResult(False, False, failure)
            await sleep(backoff(backoff_s, attempt))
            continue
        break
    gone = await _wait_gone(dispatcher, target, name, sleep=sleep, counter=counter, wait_s=wait_s)
    return DeleteResult(True, gone)


async def _wait_gone(
    dispatcher: Dispatcher, target: Target, name: str, *, sleep: Sleep, counter: RequestCounter | None, wait_s: float
) -> bool:
    if wait_s <= 0:
        return True  # accepted is enough for this caller
    waited = 0.0
    while True:
        try:
            if await dispatcher.get(target, name, counter=counter) is None:
                return True
        except Exception as exc:
            _LOG.debug("reading back the deletion of %s on %s: %s", name, target.name, classify_error(exc).describe())
        if waited >= wait_s:
            return False
        step = min(DELETE_CHECK_S, wait_s - waited)
        await sleep(step)
        waited += step
