"""The shard fence (a blob lease on Azurite): one tick of a shard at a time, stale copies do nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from azrun.durable import _fence
from azrun.durable._fence import ShardFence, StaleTick
from azrun.errors import AzrunError
from tests.durable.support import multi_fleet_toml


def test_fence_excludes_a_concurrent_copy_and_stops_stale_ones(
    sim_factory: Any, azure_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azrun.config import Settings
    from azrun.output import OutputStore

    sim = sim_factory(multi_fleet_toml(1, 1), storage=True)
    azure_env(sim)
    monkeypatch.setattr(_fence, "WAIT_S", 1.0)

    async def go() -> None:
        settings = Settings.load()
        factory = settings.client_factory()
        store = await OutputStore.from_settings(settings, factory, verify=False)
        assert store is not None
        try:
            async with ShardFence(store, "run-1", 0, 3):
                with pytest.raises(AzrunError, match="cannot lease"):
                    async with ShardFence(store, "run-1", 0, 3):  # a duplicate of the running tick
                        pass
                async with ShardFence(store, "run-1", 1, 0):  # other shards are not held up
                    pass
            with pytest.raises(StaleTick):
                async with ShardFence(store, "run-1", 0, 2):  # an old copy after tick 3 started
                    pass
            async with ShardFence(store, "run-1", 0, 3):  # a retry of tick 3 runs again
                pass
            async with ShardFence(store, "run-1", 0, 4):
                pass
        finally:
            await store.aclose()
            await factory.aclose()

    asyncio.run(go())
