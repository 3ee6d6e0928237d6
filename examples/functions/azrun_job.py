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
    from azrun.auth import IdentitySelector
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.fleet import Fleet
    from azrun.models import RunSpec
    from azrun.output import OutputStore
    from azrun.targets import Selector

    settings = Settings.load(environ=environ)
    client_id = settings.get("client_id")
    factory = ClientFactory.from_env(
        environ,
        identity=IdentitySelector(client_id=str(client_id)) if client_id else None,
        auth_mode=str(settings.get("auth")),
    )
    store = None
    try:
        store = await OutputStore.from_settings(settings, factory)
        subscription = settings.get("subscription")
        fleet = Fleet(
            factory=factory,
            output=store,
            state_dir=settings.get("state_dir"),
            default_subscriptions=(str(subscription),) if subscription else (),
        )
        async with fleet:
            return await fleet.run(
                Selector.from_options(tags=[tag]),
                RunSpec(script=script, script_name="function", timeout_s=timeout_s),
                max_concurrency=str(settings.get("max_concurrency")),
                max_errors=str(settings.get("max_errors")),
            )
    finally:
        if store is not None:
            await store.aclose()
        await factory.aclose()


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
