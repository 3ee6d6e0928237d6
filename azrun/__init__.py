"""azrun: run a script on many Azure machines at once and bring every byte of output back.

Importing azrun is cheap: the names below load their modules on first use (module
``__getattr__``), and the Azure SDKs load only when a client is built.

Library use (Azure Functions, Automation runbooks, scripts)::

    import azrun

    async with azrun.Fleet.from_env() as fleet:
        result = await fleet.run(azrun.Selector.from_options(tags=["env=prod"]),
                                 azrun.RunSpec(script="uptime", timeout_s=300),
                                 max_concurrency="20%", max_errors=1)
    for r in result.failed:
        print(r.target.name, r.state, r.exit_code, r.stderr_tail)

    result = azrun.run(azrun.Selector.from_options(tags=["env=prod"]), "uptime")   # sync
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_LAZY: dict[str, str] = {
    "Fleet": "azrun.fleet",
    "FleetOptions": "azrun.fleet",
    "FleetObserver": "azrun.fleet",
    "Budget": "azrun.fleet",
    "RunHandle": "azrun.fleet",
    "RunStatus": "azrun.fleet",
    "ProgressSnapshot": "azrun.fleet",
    "CleanupReport": "azrun.fleet",
    "FleetEvent": "azrun.fleet",
    "TargetDispatched": "azrun.fleet",
    "TargetRunning": "azrun.fleet",
    "OutputLine": "azrun.fleet",
    "TargetFinished": "azrun.fleet",
    "Progress": "azrun.fleet",
    "RunSummary": "azrun.fleet",
    "RunSpec": "azrun.models",
    "Target": "azrun.models",
    "TargetKind": "azrun.models",
    "TargetState": "azrun.models",
    "TargetResult": "azrun.models",
    "FleetResult": "azrun.models",
    "OutputRef": "azrun.models",
    "RunId": "azrun.models",
    "Selector": "azrun.targets",
    "Selection": "azrun.targets",
    "ClientFactory": "azrun.clients",
    "Ledger": "azrun.ledger",
    "OutputStore": "azrun.output",
    "AzrunError": "azrun.errors",
    "DurableFleet": "azrun.durable",
}

__all__ = [
    "AzrunError",
    "Budget",
    "CleanupReport",
    "ClientFactory",
    "DurableFleet",
    "Fleet",
    "FleetEvent",
    "FleetObserver",
    "FleetOptions",
    "FleetResult",
    "Ledger",
    "OutputLine",
    "OutputRef",
    "OutputStore",
    "Progress",
    "ProgressSnapshot",
    "RunHandle",
    "RunId",
    "RunSpec",
    "RunStatus",
    "RunSummary",
    "Selection",
    "Selector",
    "Target",
    "TargetDispatched",
    "TargetFinished",
    "TargetKind",
    "TargetResult",
    "TargetRunning",
    "TargetState",
    "__version__",
    "run",
]

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.durable import DurableFleet
    from azrun.errors import AzrunError
    from azrun.fleet import (
        Budget,
        CleanupReport,
        Fleet,
        FleetEvent,
        FleetObserver,
        FleetOptions,
        OutputLine,
        Progress,
        ProgressSnapshot,
        RunHandle,
        RunStatus,
        RunSummary,
        TargetDispatched,
        TargetFinished,
        TargetRunning,
    )
    from azrun.ledger import Ledger
    from azrun.models import (
        FleetResult,
        OutputRef,
        RunId,
        RunSpec,
        Target,
        TargetKind,
        TargetResult,
        TargetState,
    )
    from azrun.output import OutputStore
    from azrun.targets import Selection, Selector


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'azrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def run(
    targets: Selector | Selection | Sequence[Target] | Target,
    spec: RunSpec | str,
    *,
    options: FleetOptions | None = None,
    max_concurrency: str | int | None = None,
    max_errors: str | int | None = None,
    canary: int | None = None,
    keep: bool | None = None,
    observer: FleetObserver | None = None,
) -> FleetResult:
    """Run ``spec`` on ``targets`` and wait (sync; starts its own event loop).

    Uses :meth:`Fleet.from_env` (cloud, identity, output storage, state dir: the settings
    ``azrun run`` uses); the keyword arguments are :meth:`Fleet.run`'s. Not for use inside a
    running event loop: use :class:`Fleet`.
    """
    import asyncio

    from azrun.fleet import Fleet

    async def go() -> FleetResult:
        async with Fleet.from_env(engine_loop="caller") as fleet:  # this loop is azrun's alone
            return await fleet.run(targets, spec, options=options, max_concurrency=max_concurrency,
                                   max_errors=max_errors, canary=canary, keep=keep, observer=observer)

    return asyncio.run(go())
