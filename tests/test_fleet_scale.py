"""Issue 17's single-process scale, guarded at a size CI affords: what a fleet run keeps per target.

The benchmark (``scripts/benchmarks/bench_scale.py 10000``) measures the real figure (peak RSS of
10,000 targets in one process); this test measures the part of it that grows with the number of
targets, with ``tracemalloc``, on a few hundred VMs of the local Azure (limits off, a no-op
script), through the real SDK stack. A first run over the same targets warms the process (lazy
imports, the connection pool, the SDK's caches, the per-VM throttle buckets, which the throttle
bounds by pruning: ``test_throttle_registry``), so the second run's growth is what a run keeps per
target: ``Work`` records, results, run events, ledger rows cached, tasks and SDK objects left over.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tests._fleet_support import SUB, fleet_toml

#: Bytes a finished run may keep per target (its result, events and whatever else stays alive
#: until the run's result is dropped; the connection pool's growth is in it too, amortised).
#: Measured ~3.1 KB on 300 targets after the issue-17 work, 5.2 KB before (a per-target Event
#: and task, a Progress history holding every throttle bucket's stats, the last instance view).
#: The kept figure varies with load (new connections opened during the measured run are in
#: it: 4.9 KB once on a loaded machine), so its bound only catches gross regressions; the peak
#: bound is the one that tells the old code (17.2 KB) from the new.
RETAINED_PER_TARGET_MAX = 8_000
#: Bytes of peak traced memory per target over the warmed-up process (50 in flight).
#: Measured ~9.2 KB after, 17.2 KB before.
PEAK_PER_TARGET_MAX = 14_000
N = 300


def _roomy_throttle() -> Any:
    from azrun.throttle import Limit, Throttle, ThrottleLimits

    base = ThrottleLimits()
    huge: dict[str, Any] = {f.name: Limit(1e12, 1e9) for f in dataclasses.fields(base)
                            if isinstance(getattr(base, f.name), Limit)}
    return Throttle(dataclasses.replace(base, **huge))


@pytest.mark.slow
async def test_a_run_keeps_little_per_target(sim_factory: Any, azure_env: Any, tmp_path: Path) -> None:
    from azrun.clients import ClientFactory
    from azrun.fleet import Fleet
    from azrun.models import RunSpec, TargetState
    from azrun.targets import Selector

    sim = sim_factory(fleet_toml(vms=N, limits="enabled = false", start_delay_s=0.0))
    azure_env(sim)
    factory = ClientFactory.from_env(throttle=_roomy_throttle())
    spec = RunSpec(script="true", timeout_s=120, script_name="scale")
    try:
        async with Fleet(factory=factory, state_dir=tmp_path / "state", default_subscriptions=(SUB,)) as fleet:
            selection = await fleet.select(Selector.from_options(tags=["env=prod"]))
            targets = list(selection.targets)
            assert len(targets) == N
            warm = await fleet.run(targets, spec, max_concurrency=50, max_errors="100%")
            assert warm.counts() == {"Succeeded": N}
            del warm

            gc.collect()
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                result = await fleet.run(targets, spec, max_concurrency=50, max_errors="100%")
                gc.collect()
                retained, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        await factory.aclose()

    assert [r.state for r in result.results] == [TargetState.SUCCEEDED] * N
    per_target_retained = (retained - base) / N
    per_target_peak = (peak - base) / N
    assert per_target_retained < RETAINED_PER_TARGET_MAX, f"{per_target_retained:.0f} B kept per target"
    assert per_target_peak < PEAK_PER_TARGET_MAX, f"{per_target_peak:.0f} B peak per target"
