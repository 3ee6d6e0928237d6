"""One target's steps as standalone async functions over a :class:`~azrun.fleet.Dispatcher`, for
callers that keep their own state between steps (durable runs, tests): the fleet's runner uses
the same ones.

* :func:`deliver` (``_deliver``): the PUT, conflicts retried, an unknown outcome read back.
* :func:`read_run_command`: one GET and azrun's judgement of it.
* :func:`delete_run_command` (``_delete``): the DELETE, waiting for its lasting operation.
"""

from __future__ import annotations

from dataclasses import dataclass

from azrun.fleet._delete import DeleteResult, delete_run_command
from azrun.fleet._deliver import deliver
from azrun.fleet._dispatch import Dispatcher
from azrun.models import Target
from azrun.runcommand import Outcome, RequestCounter, RunCommandView, interpret

__all__ = ["DeleteResult", "Reading", "delete_run_command", "deliver", "read_run_command"]


@dataclass(frozen=True, slots=True)
class Reading:
    """What one read found: ``view`` (None: the run command does not exist) and, once the script
    ended, its ``outcome``; ``started``: the agent has reported a start."""

    view: RunCommandView | None
    outcome: Outcome | None

    @property
    def exists(self) -> bool:
        return self.view is not None

    @property
    def started(self) -> bool:
        return self.view is not None and self.view.start_time is not None


async def read_run_command(
    dispatcher: Dispatcher, target: Target, name: str, *, timeout_s: int, counter: RequestCounter | None = None
) -> Reading:
    """GET the run command with its instance view and interpret it (raises what the GET raised:
    read it with :func:`azrun.azerrors.classify`; unreachable is not failed)."""
    view = await dispatcher.get(target, name, counter=counter)
    return Reading(view, None if view is None else interpret(view, timeout_s))
