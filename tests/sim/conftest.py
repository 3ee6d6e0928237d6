"""Shared fixtures of the local-Azure tests.

``sim``: one simulator subprocess per test module (the test fleet, no Azurite), so the tests of
a module share it and modules stay independent; ``raw``: plain HTTPS requests to its ARM.
A module that needs a reset between tests (faults, limits) overrides ``raw`` locally.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from arm_support import Raw, start_sim

from azrun.sim.launcher import SimProcess


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    name = request.module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", "-")
    s = start_sim(tmp_path_factory.mktemp(name))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def raw(sim: SimProcess) -> Raw:
    return Raw(sim)
