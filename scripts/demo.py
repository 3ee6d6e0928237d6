"""The demo: start the local Azure with the demo fleet and run the main job on it.

Run through ./scripts/demo (which installs everything first, quietly). Each step is an ordinary
azrun command, printed before it runs, so the demo doubles as a tour of the CLI. The local
Azure's own files live in a temporary directory removed at the end; what the demo produced stays
in ``.azrun-demo/`` (or ``$AZRUN_DEMO_DIR``): the ledger, and every target's output downloaded
from the blobs before the local Azure stops, so ``azrun runs`` and the saved files keep working.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "scripts" / "inventory.sh"


def steps(output: Path) -> list[list[str]]:
    return [
        ["azrun", "auth"],
        ["azrun", "targets", "--tag", "env=prod", "--tag", "role=web,app"],
        ["azrun", "plan", "--tag", "env=prod", "--tag", "role=web,app", "--script-linux", str(SCRIPT)],
        [
            "azrun", "run", "--tag", "env=prod", "--tag", "role=web,app", "--script-linux", str(SCRIPT),
            "--param", "ROUNDS=3", "--max-concurrency", "50%", "--max-errors", "1",
        ],
        ["azrun", "status", "last"],
        ["azrun", "logs", "last", "--target", "vm-web-01"],
        ["azrun", "logs", "last", "--download", str(output)],
    ]


def _shown(cmd: list[str]) -> str:
    return " ".join(shlex.quote(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c) for c in cmd)


def main() -> int:
    from azrun.sim.launcher import SimProcess

    keep = Path(os.environ.get("AZRUN_DEMO_DIR") or ROOT / ".azrun-demo").resolve()
    shutil.rmtree(keep / "output", ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    state, output = keep / "state", keep / "output"
    print("Starting the local Azure (demo fleet: azrun/sim/fleets/demo.toml) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="azrun-demo-") as scratch, SimProcess(None, workdir=Path(scratch)) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_", "IDENTITY_", "MSI_"))}
        env.update(sim.env)
        env["AZRUN_STATE_DIR"] = str(state)
        print(f"local Azure ready in {sim.ready_s:.1f} s: ARM {sim.env['AZRUN_ARM_ENDPOINT']}", flush=True)
        for cmd in steps(output):
            print(f"\n$ {_shown(cmd)}", flush=True)
            rc = subprocess.call(cmd, env=env, cwd=ROOT)
            if rc not in (0, 1):
                return rc
    print(f"\nThe local Azure is stopped. What the demo produced is in {os.path.relpath(keep, Path.cwd())}/:")
    print(f"  every target's output: {os.path.relpath(output, Path.cwd())}/<subscription>/<resource group>/<machine>/stdout, stderr")
    print(f"  the ledger: AZRUN_STATE_DIR={os.path.relpath(state, Path.cwd())} azrun runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
