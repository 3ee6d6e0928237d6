"""One fleet run with azrun's library, configured only by the environment (the app settings).

Shared by the timer and HTTP triggers in ``function_app.py``; it imports nothing from Azure
Functions, so it runs (and is tested, against azrun's local Azure) anywhere.

Settings (see ``infra/modules/functionapp.bicep``): ``AZURE_SUBSCRIPTION_ID``,
``AZRUN_CLIENT_ID`` (the user-assigned identity the app runs as), ``AZRUN_OUTPUT_CONTAINER`` and
``AZRUN_BLOB_IDENTITY`` (full output in blobs, written by the VMs' identity),
``AZRUN_STATE_DIR`` (the ledger), ``AZRUN_MAX_CONCURRENCY`` / ``AZRUN_MAX_ERRORS``, and
``AZRUN_FUNCTION_BUDGET_S`` (below).

**The platform's timeout: detach, and resume on the next invocation.** A Function is cut off
after ``functionTimeout`` (host.json; 5-10 min on the Consumption plan). Waiting for a fleet run
longer than that would lose it half-way, so each invocation waits at most
``AZRUN_FUNCTION_BUDGET_S`` (set it a minute under ``functionTimeout``). When the budget runs
out, azrun's cancellation contract applies: cancelling the awaiting task *detaches* the run
(in-flight scripts keep running on their machines, the ledger records the run ``interrupted``,
nothing is killed and nothing runs twice), and the next invocation first resumes every run an
earlier one detached (:func:`resume_detached`) before starting a new one. Detaching rather than
keeping runs short, because patch jobs do not fit a 5-minute window and killing them on a timer
is the worse failure. The ledger must survive between invocations: point ``AZRUN_STATE_DIR`` at
storage that persists (``/home/azrun`` on Premium and Dedicated plans, an Azure Files mount
elsewhere), not ``/tmp``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azrun.models import FleetResult

TAIL_CHARS = 1000
#: The record key marking runs this job started (and may resume): the script is kept so a
#: resumed run can dispatch targets never sent. Never put secrets in such a script.
JOB_KEY = "function_job"


@dataclass(frozen=True)
class Detached:
    """A run the invocation's budget ran out on: still going on the machines, resumed next time."""

    run_id: str
    budget_s: float


def budget_from(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds one invocation may wait (``AZRUN_FUNCTION_BUDGET_S``; unset: no limit)."""
    value = (environ if environ is not None else os.environ).get("AZRUN_FUNCTION_BUDGET_S", "")
    return float(value) if value.strip() else None


async def _within(budget_s: float | None, run: Any) -> FleetResult | None:
    """``await run`` for at most ``budget_s`` (None once it ran out: the run was detached)."""
    if budget_s is None:
        return await run  # type: ignore[no-any-return]
    try:
        return await asyncio.wait_for(run, budget_s)  # type: ignore[no-any-return]
    except asyncio.TimeoutError:  # the task was cancelled: azrun detached the run (not killed)
        return None


async def run_on_tag(
    tag: str,
    script: str,
    *,
    timeout_s: int = 600,
    budget_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> FleetResult | Detached:
    """Run ``script`` on every running machine tagged ``tag`` (``KEY=VALUE``) and wait for all,
    or for ``budget_s`` (default ``AZRUN_FUNCTION_BUDGET_S``), after which the run is detached."""
    import azrun

    budget_s = budget_s if budget_s is not None else budget_from(environ)
    async with azrun.Fleet.from_env(environ) as fleet:
        handle = await fleet.start(
            azrun.Selector.from_options(tags=[tag]),
            azrun.RunSpec(script=script, script_name="function", timeout_s=timeout_s),
            record={JOB_KEY: {"tag": tag, "script": script, "timeout_s": timeout_s}},
        )
        result = await _within(budget_s, handle.wait())
    return result if result is not None else Detached(str(handle.run_id), budget_s or 0.0)


async def resume_detached(
    *, budget_s: float | None = None, environ: Mapping[str, str] | None = None, limit: int = 50
) -> list[FleetResult | Detached]:
    """Resume every run of this job an earlier invocation detached (newest last), each within
    what is left of the budget; returns what became of each."""
    import azrun

    budget_s = budget_s if budget_s is not None else budget_from(environ)
    loop = asyncio.get_running_loop()
    deadline = None if budget_s is None else loop.time() + budget_s
    done: list[FleetResult | Detached] = []
    async with azrun.Fleet.from_env(environ) as fleet:
        waiting = [r for r in reversed(fleet.runs(limit)) if r.status == "interrupted" and JOB_KEY in r.options]
        for record in waiting:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                done.append(Detached(record.id, budget_s or 0.0))
                continue
            job = record.options[JOB_KEY]
            spec = azrun.RunSpec(script=job["script"], script_name="function", timeout_s=int(job["timeout_s"]))
            handle = await fleet.resume_start(record.id, spec)
            result = await _within(left, handle.wait())
            done.append(result if result is not None else Detached(record.id, budget_s or 0.0))
    return done


def summarize(result: FleetResult | Detached) -> dict[str, Any]:
    """A JSON-ready summary: counts, and per machine its state, exit code and output location."""
    if isinstance(result, Detached):
        return {"run_id": result.run_id, "ok": None, "detached": True,
                "note": f"still running after {result.budget_s:g} s; the next invocation resumes it"}
    return {
        "run_id": result.run_id,
        "ok": result.ok,
        "detached": False,
        "counts": result.counts(),
        "targets": [
            {
                "name": r.target.name,
                "state": r.state.value,
                "exit_code": r.exit_code,
                "message": r.message,
                "stdout_url": r.output.stdout_url,
                "stderr_url": r.output.stderr_url,
                "stdout_tail": r.stdout_tail[-TAIL_CHARS:],
            }
            for r in result.results
        ],
    }
