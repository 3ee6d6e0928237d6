"""The fake Azure and the virtual clock themselves: a run of real-Azure timing in milliseconds."""

from __future__ import annotations

import time
from pathlib import Path

from fleet_fakes import FakeAzure, Harness, Script, vms, vrun

from azrun.models import TargetState


def test_a_run_with_real_azure_timing_takes_milliseconds(tmp_path: Path) -> None:
    azure = FakeAzure(script=Script(start_s=9.5, duration_s=600, stdout="patched"))
    h = Harness(azure, tmp_path)

    async def main() -> tuple[object, float]:
        t0 = azure.now()
        result = await h.run(vms(20))
        return result, azure.now() - t0

    wall = time.perf_counter()
    result, virtual = vrun(main)
    wall = time.perf_counter() - wall
    assert result.ok and {r.state for r in result.results} == {TargetState.SUCCEEDED}  # type: ignore[attr-defined]
    assert all(r.stdout_tail == "patched" and r.exit_code == 0 for r in result.results)  # type: ignore[attr-defined]
    assert virtual > 600 and wall < 5
    assert all(azure.runs_on(f"vm-{i:03d}") == 1 for i in range(1, 21))
