"""One fleet run with azrun's library, configured only by the environment (the app settings).

Shared by the timer and HTTP triggers in ``function_app.py``; it imports nothing from Azure
Functions, so it runs (and is tested, against azrun's local Azure) anywhere.

Settings (see ``infra/modules/functionapp.bicep``): ``AZURE_SUBSCRIPTION_ID``,
``AZRUN_CLIENT_ID`` (the user-assigned identity the app runs as), ``AZRUN_OUTPUT_CONTAINER`` and
``AZRUN_BLOB_IDENTITY`` (full output in blobs, written by the VMs' identity),
``AZRUN_STATE_DIR`` (the ledger; ``/tmp/azrun`` is fine: each invocation is one complete run),
``AZRUN_MAX_CONCURRENCY`` / ``AZRUN_MAX_ERRORS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azrun.models import FleetResult

TAIL_CHARS = 1000


async def run_on_tag(
    tag: str, script: str, *, timeout_s: int = 600, environ: Mapping[str, str] | None = None
) -> FleetResult:
    """Run ``script`` on every running machine tagged ``tag`` (``KEY=VALUE``) and wait for all."""
    import azrun

    async with azrun.Fleet.from_env(environ) as fleet:
        return await fleet.run(
            azrun.Selector.from_options(tags=[tag]),
            azrun.RunSpec(script=script, script_name="function", timeout_s=timeout_s),
        )


def summarize(result: FleetResult) -> dict[str, Any]:
    """A JSON-ready summary: counts, and per machine its state, exit code and output location."""
    return {
        "run_id": result.run_id,
        "ok": result.ok,
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
