"""Shared helpers of the benchmarks: a local Azure with an n-VM fleet, request-log counts,
resource usage, and the "figure | value | goal | met?" report table.

Benchmarks are scripts, not tests: each has ``run(...) -> dict`` (the smoke test calls it at a
tiny size) and a ``__main__`` that prints the figures beside their goals. The local Azure keeps
the *documented* limits unless a benchmark says otherwise (azure-facts §3):

* ARM, per subscription x caller: reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s;
* Compute per VM: run-command writes 12 + 4/min, GETs 36 + 12/min; per subscription: updates
  1,500 + 500/min, GETs 24,000 + 8,000/min;
* IMDS: 20 token requests/s, 5 at once.

Import as ``import _common`` after putting this directory on ``sys.path`` (the benchmarks do it
for themselves; the smoke test does it for them).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from azrun.sim.launcher import SimProcess

SUB = "11111111-1111-4111-8111-111111111111"
RG = "rg-bench"
LOCATION = "westeurope"
IDENTITY = "id-bench"

#: Documented limits, (burst, refill per second), for lower-bound arithmetic.
ARM_READS = (250.0, 25.0)
ARM_WRITES = (200.0, 10.0)
ARM_DELETES = (200.0, 10.0)
IMDS_RPS, IMDS_CONCURRENCY = 20.0, 5

__all__ = [
    "ARM_DELETES", "ARM_READS", "ARM_WRITES", "IDENTITY", "IMDS_CONCURRENCY", "IMDS_RPS", "LOCATION", "RG",
    "SUB", "Row", "Usage", "bucket_lower_bound_s", "child_usage", "count_429", "count_by_op", "environ",
    "fleet_toml", "peak_rss_mb", "print_table", "run_child", "self_usage", "start_sim", "vm_name", "workdir",
]


# -- the fleet ----------------------------------------------------------------------------------
def vm_name(i: int) -> str:
    """Name of the i-th VM (1-based) of :func:`fleet_toml`."""
    return f"vm-{i:04d}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _table(name: str, values: Mapping[str, Any] | None) -> list[str]:
    return [f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in (values or {}).items()), ""]


def fleet_toml(
    n: int,
    *,
    limits: Mapping[str, Any] | None = None,
    faults: Mapping[str, Any] | None = None,
    sim: Mapping[str, Any] | None = None,
) -> str:
    """A fleet of ``n`` running Linux VMs ``vm-0001..`` in one resource group of one subscription.

    The first VM is the one the local IMDS belongs to; it has a system identity and the
    user-assigned identity :data:`IDENTITY`. ``limits``/``faults``/``sim`` add keys to those
    tables (nothing given: the documented limits, no faults).
    """
    settings = {"current_vm": f"{RG}/{vm_name(1)}", "agent_start_delay_s": 0.05, "agent_upload_interval_s": 15,
                "agent_status_interval_s": 1, "page_size": 100, **(sim or {})}
    lines = _table("sim", settings) + _table("limits", limits) + _table("faults", faults)
    lines += [
        "[[subscription]]", f'id = "{SUB}"', 'name = "bench"',
        "  [[subscription.identity]]", f'  name = "{IDENTITY}"', f'  resource_group = "{RG}"',
        "  [[subscription.resource_group]]", f'  name = "{RG}"', f'  location = "{LOCATION}"',
        "    [[subscription.resource_group.vm]]", '    name = "vm-{i:04d}"', f"    count = {n}",
        "    system_identity = true", '    system_identity_storage_role = "contributor"', f'    user_identities = ["{IDENTITY}"]', '    tags = { env = "bench" }',
    ]
    return "\n".join(lines) + "\n"


def workdir(prefix: str) -> Path:
    """A fresh temporary directory for one benchmark run."""
    return Path(tempfile.mkdtemp(prefix=f"azrun-bench-{prefix}-"))


def start_sim(
    n: int,
    where: Path,
    *,
    limits: Mapping[str, Any] | None = None,
    faults: Mapping[str, Any] | None = None,
    sim: Mapping[str, Any] | None = None,
) -> SimProcess:
    """Start a local Azure (no storage) with :func:`fleet_toml`; the caller stops it (or uses ``with``)."""
    from azrun.sim.launcher import SimProcess

    proc = SimProcess(fleet_toml(n, limits=limits, faults=faults, sim=sim), workdir=where, storage=False)
    proc.start(timeout_s=60)
    return proc


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` plus ``values`` for the duration (restored exactly afterwards)."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- the request log ----------------------------------------------------------------------------
def count_by_op(entries: Iterable[Mapping[str, Any]], service: str | None = "arm") -> dict[str, dict[str, int]]:
    """``{op: {"requests": n, "429": k}}`` for the entries of ``service`` (None: every service)."""
    requests: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    for entry in entries:
        if service is None or entry.get("service") == service:
            requests[str(entry.get("op"))] += 1
            throttled[str(entry.get("op"))] += entry.get("status") == 429
    return {op: {"requests": count, "429": throttled[op]} for op, count in requests.most_common()}


def count_429(entries: Iterable[Mapping[str, Any]], service: str | None = "arm") -> int:
    """How many entries of ``service`` were answered 429."""
    return sum(1 for e in entries if (service is None or e.get("service") == service) and e.get("status") == 429)


def bucket_lower_bound_s(requests: int, bucket: tuple[float, float]) -> float:
    """The earliest time the last of ``requests`` can go through a full ``(burst, refill/s)`` bucket."""
    burst, refill = bucket
    return max(0.0, (requests - burst) / refill)


# -- resource usage -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds (user + system) and peak resident memory of a process."""

    cpu_s: float
    peak_rss_mb: float


def _usage(ru: resource.struct_rusage) -> Usage:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return Usage(ru.ru_utime + ru.ru_stime, ru.ru_maxrss / scale)


@contextlib.contextmanager
def self_usage() -> Iterator[list[Usage]]:
    """Measure this process over a block: yields a list that holds one :class:`Usage` afterwards.

    The CPU time is the block's; the peak RSS is the process's peak so far (the kernel keeps no
    per-block peak), so run each measured variant in a fresh process when the peak matters.
    """
    out: list[Usage] = []
    before = _usage(resource.getrusage(resource.RUSAGE_SELF))
    try:
        yield out
    finally:
        after = _usage(resource.getrusage(resource.RUSAGE_SELF))
        out.append(Usage(after.cpu_s - before.cpu_s, after.peak_rss_mb))


def peak_rss_mb() -> float:
    """This process's own peak RSS: ``VmHWM`` on Linux (reset at ``exec``), else ``ru_maxrss``.

    ``ru_maxrss`` of a process started by ``fork``/``vfork`` + ``exec`` also counts the parent's
    memory at the fork (Linux carries the old address space's high-water mark across ``exec``),
    so a child of a large parent cannot measure itself with it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return _usage(resource.getrusage(resource.RUSAGE_SELF)).peak_rss_mb


def child_usage(proc: subprocess.Popen[Any], timeout_s: float | None = None) -> tuple[int, Usage]:
    """Wait for ``proc`` and return (exit code, its own CPU time and peak RSS) via ``wait4``.

    Use it instead of ``proc.wait()``; do not also call ``communicate`` (read the pipes first).
    The CPU time is the child's alone; the peak RSS includes the parent's at the fork (see
    :func:`peak_rss_mb`), so when the parent is large let the child report :func:`peak_rss_mb`.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG if deadline is not None else 0)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, _usage(ru)
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            deadline = None  # now wait for it without a limit
        time.sleep(0.01)


def run_child(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 600) -> tuple[int, str, str, Usage]:
    """Run a command to completion: (exit code, stdout, stderr, its CPU time and peak RSS)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=dict(env) if env is not None else None)
        code, usage = child_usage(proc, timeout_s)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), usage


# -- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Row:
    """One line of a benchmark report: a figure, what was measured, the goal, and whether it is met.

    ``met`` is None for figures that have no goal (context, such as wall time).
    """

    figure: str
    value: str
    goal: str = ""
    met: bool | None = None

    def cells(self) -> tuple[str, str, str, str]:
        mark = "" if self.met is None else ("yes" if self.met else "NO")
        return self.figure, self.value, self.goal, mark


def print_table(rows: Sequence[Row], *, title: str = "", file: Any = None) -> str:
    """Print (and return) ``figure | value | goal | met?`` as an aligned plain-text table."""
    header = ("figure", "value", "goal", "met?")
    cells = [header, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    text = (f"{title}\n" if title else "") + "\n".join(lines)
    print(text, file=file or sys.stdout, flush=True)
    return text
