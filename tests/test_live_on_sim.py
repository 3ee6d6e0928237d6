"""The live suite (tests/live) run against a local Azure shaped like the infra/ deployment.

The live tests never run in CI (no subscription), so without this they would rot unnoticed.
Here they run in a child pytest with ``AZRUN_LIVE_*`` pointing at the simulator: same commands,
same assertions, only the cloud is local. A pass here says the suite is coherent with azrun's
CLI; only a real subscription says Azure agrees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from azrun.sim.fleetspec import load_fleet

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "tests" / "live" / "sim-infra.toml"


@pytest.mark.slow
def test_live_suite_passes_on_the_local_azure(sim_factory: Any) -> None:
    sim = sim_factory(FLEET, storage=True)
    spec = load_fleet(FLEET)
    subscription = spec.subscriptions[0]
    vm_output = next(i for i in subscription.identities if i.name == "id-azrun-vm-output")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AZRUN_LIVE_"))}
    env.update(sim.env)
    env.update(
        AZRUN_LIVE_SUBSCRIPTION=subscription.id,
        AZRUN_LIVE_RESOURCE_GROUP="rg-azrun-test",
        AZRUN_LIVE_TAG="azrun-test=true",
        AZRUN_LIVE_MACHINES="6",
        AZRUN_LIVE_OUTPUT_CONTAINER=sim.env["AZRUN_OUTPUT_CONTAINER"],
        AZRUN_LIVE_BLOB_IDENTITY=vm_output.client_id,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "live"), "-m", "live", "-q",
         "-p", "no:cacheprovider", "-p", "no:randomly", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "6 passed" in summary and "skipped" not in summary, proc.stdout[-3000:]
