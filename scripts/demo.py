"""The demo: start the local Azure with the demo fleet and run the main job on it.

Run through ./scripts/demo (which installs everything first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    from azrun.sim.launcher import SimProcess

    workdir = Path(os.environ.get("AZRUN_DEMO_DIR") or tempfile.mkdtemp(prefix="azrun-demo-"))
    print(f"Starting the local Azure (demo fleet) in {workdir} ...", flush=True)
    with SimProcess(None, workdir=workdir / "sim") as sim:
        env = {**os.environ, **sim.env, "AZRUN_STATE_DIR": str(workdir / "state")}
        steps = [
            ["azrun", "targets", "--tag", "env=prod"],
        ]
        for cmd in steps:
            print(f"\n$ {' '.join(cmd)}", flush=True)
            rc = subprocess.call(cmd, env=env)
            if rc not in (0, 1):
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
