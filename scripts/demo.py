"""The demo: start the local Azure with the demo fleet and run the main job on it.

Run through ./scripts/demo (which installs everything first). Each step is an ordinary azrun
command, printed before it runs, so the demo doubles as a tour of the CLI.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "scripts" / "inventory.sh"

STEPS = [
    ["azrun", "auth"],
    ["azrun", "targets", "--tag", "env=prod", "--tag", "role=web,app"],
    [
        "azrun", "run", "--tag", "env=prod", "--tag", "role=web,app", "--os", "linux",
        "--script", str(SCRIPT), "--param", "ROUNDS=3", "--max-concurrency", "50%", "--max-errors", "1",
    ],
    ["azrun", "status"],
    ["azrun", "logs", "--target", "vm-web-01"],
]


def main() -> int:
    from azrun.sim.launcher import SimProcess

    workdir = Path(os.environ.get("AZRUN_DEMO_DIR") or tempfile.mkdtemp(prefix="azrun-demo-"))
    print(f"Starting the local Azure (demo fleet: azrun/sim/fleets/demo.toml) in {workdir} ...", flush=True)
    with SimProcess(None, workdir=workdir / "sim") as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_", "IDENTITY_", "MSI_"))}
        env.update(sim.env)
        env["AZRUN_STATE_DIR"] = str(workdir / "state")
        print(f"local Azure ready in {sim.ready_s:.1f} s: ARM {sim.env['AZRUN_ARM_ENDPOINT']}", flush=True)
        for cmd in STEPS:
            shown = " ".join(shlex.quote(c) if c != str(SCRIPT) else "examples/scripts/inventory.sh" for c in cmd)
            print(f"\n$ {shown}", flush=True)
            rc = subprocess.call(cmd, env=env, cwd=ROOT)
            if rc not in (0, 1):
                return rc
        print(f"\nledger: {workdir / 'state'}  (AZRUN_STATE_DIR={workdir / 'state'} azrun runs)")
        print(f"output blobs: {sim.env['AZRUN_OUTPUT_CONTAINER']}/<run id>/<target>/stdout|stderr")
    return 0


if __name__ == "__main__":
    sys.exit(main())
