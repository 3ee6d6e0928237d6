"""Benchmark: how long the ``azrun`` command takes to start, answer and exit.

``run(repeats, vms)`` times whole processes (fork + exec to exit, wall clock), each command
``repeats`` times after one untimed warm-up (so ``.pyc`` files and the page cache are warm, as
they are for anyone who runs azrun twice), and reports the median:

* ``python -c pass``: the interpreter alone, the floor every Python CLI pays, measured in the
  same run so the ratios below do not depend on the machine;
* ``azrun --version`` and ``azrun --help``: pure start-up (no Azure SDK may load for these);
* ``azrun targets --all``: start-up plus a token from the local IMDS and the ARM reads of a
  50-VM resource group on a local Azure at the documented limits (started once, not timed).

It also runs ``python -X importtime -m azrun --version`` once and lists the heaviest top-level
imports, so that a slow ``--version`` comes with its cause.

Goal: ``azrun --version`` <= 0.3 s.

Run: ``python scripts/benchmarks/bench_startup.py [repeats vms]`` (default 5 50).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402

VERSION_GOAL_S = 0.3
HELP_GOAL_S = 0.5  # not in the issue: --help renders with typer/rich, allow it a little more


def azrun_argv() -> list[str]:
    """The console script next to this interpreter (what a user runs), else ``python -m azrun``."""
    script = Path(sys.executable).with_name("azrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "azrun"]


def time_command(argv: Sequence[str], env: Mapping[str, str], repeats: int) -> dict[str, Any]:
    """Wall seconds of ``repeats`` runs of ``argv`` after one warm-up; raises if any run fails."""
    samples: list[float] = []
    for i in range(repeats + 1):
        began = time.perf_counter()
        done = subprocess.run(list(argv), env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, check=False)
        wall = time.perf_counter() - began
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-600:]
            raise RuntimeError(f"{' '.join(argv[-2:])} exited {done.returncode}: {tail}")
        if i:  # the first run warms the caches
            samples.append(wall)
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4),
            "max_s": round(max(samples), 4), "samples_s": [round(s, 4) for s in samples]}


def import_offenders(env: Mapping[str, str], top: int = 8) -> list[dict[str, Any]]:
    """The heaviest imports under the top level of ``azrun --version`` (cumulative ms, ``-X importtime``).

    Depth 0 is ``azrun.cli`` itself (everything); depths 1-2 name the packages to make lazy.
    """
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "azrun", "--version"], env=dict(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        # "import time: <self us> | <cumulative us> | <two spaces per nesting level><module>"
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        self_us, cumulative_us, name = parts
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if 1 <= depth <= 2:  # what azrun.cli (depth 0) pulls in, and what those pull in
            rows.append({"module": name.strip(), "depth": depth, "cumulative_ms": round(int(cumulative_us) / 1000, 1),
                         "self_ms": round(int(self_us) / 1000, 1)})
    rows.sort(key=lambda r: r["cumulative_ms"], reverse=True)
    return rows[:top]


def run(repeats: int = 5, vms: int = 50) -> dict[str, Any]:
    """Start a local Azure with ``vms`` VMs once, then time each command (see the module doc)."""
    where = _common.workdir("startup")
    try:
        with _common.start_sim(vms, where / "sim") as sim:
            env = {**os.environ, **sim.env, "AZRUN_RUNTIME_DIR": str(where / "runtime"),
                   "AZRUN_STATE_DIR": str(where / "state"), "XDG_CONFIG_HOME": str(where / "config"),
                   "NO_COLOR": "1", "COLUMNS": "120"}
            azrun = azrun_argv()
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "azrun --version": [*azrun, "--version"],
                "azrun --help": [*azrun, "--help"],
                f"azrun targets --all ({vms} VMs)": [*azrun, "targets", "--all"],
            }
            mark = len(sim.requests())
            timings = {label: time_command(argv, env, repeats) for label, argv in commands.items()}
            arm = [e for e in sim.requests()[mark:] if e.get("service") == "arm"]
            offenders = import_offenders(env)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    base = timings["python -c pass"]["median_s"]
    return {
        "repeats": repeats,
        "vms": vms,
        "command": azrun,
        "timings": timings,
        "ratio_to_python": {k: round(v["median_s"] / base, 1) for k, v in timings.items() if base > 0},
        "targets_arm_requests_per_run": round(len(arm) / (repeats + 1), 1),
        "targets_429": _common.count_429(arm),
        "import_offenders": offenders,
    }


def report(result: dict[str, Any]) -> list[_common.Row]:
    """The figures beside their goals."""
    t, ratio = result["timings"], result["ratio_to_python"]
    rows = [_common.Row("python -c pass (baseline)", f"{t['python -c pass']['median_s']:.3f} s")]
    goals = {"azrun --version": VERSION_GOAL_S, "azrun --help": HELP_GOAL_S}
    for label, value in t.items():
        if label == "python -c pass":
            continue
        goal = goals.get(label)
        rows.append(_common.Row(
            f"{label}, median of {result['repeats']}", f"{value['median_s']:.3f} s ({ratio.get(label, 0):.1f}x python)",
            "" if goal is None else f"<= {goal:g} s", None if goal is None else value["median_s"] <= goal))
    rows.append(_common.Row("azrun targets: ARM requests per run / 429s",
                            f"{result['targets_arm_requests_per_run']:g} / {result['targets_429']}", "0 429s",
                            result["targets_429"] == 0))
    if result["import_offenders"]:
        top = ", ".join(f"{r['module']} {r['cumulative_ms']:.0f} ms" for r in result["import_offenders"][:3])
        rows.append(_common.Row("heaviest imports of --version", top))
    return rows


def main(argv: list[str]) -> int:
    repeats, vms = (int(a) for a in argv[:2]) if len(argv) >= 2 else (5, 50)
    result = run(repeats, vms)
    print(json.dumps(result, indent=1))
    _common.print_table(report(result), title=f"\nstart-up: median of {repeats} process runs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
