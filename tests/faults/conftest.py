"""Fixtures of the fault matrix: ``world(fleet_text)`` starts a local Azure (with Azurite) of the
row's own and hands back a :class:`FaultWorld`; everything it started is stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_support import FaultWorld


@pytest.fixture
def world(sim_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., FaultWorld]]:
    made: list[FaultWorld] = []

    def make(fleet_text: str, *, state_dir: Path | None = None) -> FaultWorld:
        w = FaultWorld(sim_factory(fleet_text, storage=True), tmp_path, state_dir=state_dir)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()
