"""Shared fixtures: a clean environment and the local Azure on random ports.

``local_azure`` starts the simulator (ARM + IMDS + Azurite) once per xdist worker with the
test fleet; ``sim_factory`` starts extra ones with a fleet of the test's own (limits, faults).
``azure_env`` puts a simulator's env into ``os.environ`` for one test, as ``source env`` would.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from azrun.fleet import Fleet

_CLEARED_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "AZRUN_", "IMDS_")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's Azure settings, and each gets its own state/runtime dirs."""
    for key in list(os.environ):
        if key.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZRUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    try:
        from azrun import auth

        auth.clear_process_cache()
    except (ImportError, AttributeError):
        pass


@pytest.fixture(scope="session")
def local_azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local Azure with the test fleet (started once per worker)."""
    from azrun.sim.launcher import SimProcess

    fleet = Path(__file__).resolve().parents[1] / "azrun" / "sim" / "fleets" / "test.toml"
    sim = SimProcess(fleet, workdir=tmp_path_factory.mktemp("local-azure"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """Start a local Azure with a fleet of the test's own: ``sim_factory(toml_text, storage=False)``."""
    from azrun.sim.launcher import SimProcess

    started: list[Any] = []

    def start(fleet: str | Path | None = None, *, storage: bool = False, **kwargs: Any) -> Any:
        sim = SimProcess(fleet, workdir=tmp_path_factory.mktemp("sim"), storage=storage, **kwargs)
        sim.start()
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], dict[str, str]]:
    """``azure_env(sim)`` exports a simulator's env vars for the current test."""

    def apply(sim: Any) -> dict[str, str]:
        for key, value in sim.env.items():
            monkeypatch.setenv(key, value)
        return dict(sim.env)

    return apply


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Callable[[], Fleet]]:
    """Fleets from the environment (``azure_env``) sharing one state dir, closed at the end."""
    made: list[Fleet] = []

    from azrun.fleet import Fleet

    def make() -> Fleet:
        f = Fleet.from_env(state_dir=tmp_path / "state")
        made.append(f)
        return f

    try:
        yield make
    finally:
        for f in made:
            await f.aclose()

