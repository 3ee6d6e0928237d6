"""The local Azure: ARM + IMDS + Azurite + a real guest agent, for tests, benchmarks and demos.

This package imports nothing from the rest of azrun, so it cannot share the client's bugs.
Importing it is cheap; the public names load their modules on first use:

- ``LocalAzure`` (server.py): the whole simulator inside the current event loop;
- ``SimProcess`` (launcher.py): the simulator as a subprocess (``python -m azrun.sim up``);
- ``load_fleet`` / ``FleetSpec`` (fleetspec.py): the world it simulates.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FleetSpec", "LocalAzure", "SimProcess", "load_fleet"]

_HOMES = {
    "FleetSpec": "azrun.sim.fleetspec",
    "load_fleet": "azrun.sim.fleetspec",
    "LocalAzure": "azrun.sim.server",
    "SimProcess": "azrun.sim.launcher",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'azrun.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
