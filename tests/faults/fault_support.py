"""The fault matrix's harness: a local Azure with a fleet of the row's own, ``azrun`` as a
subprocess (as a person or a cron job runs it), and one place that checks the four invariants.

The invariants (issue 14, "The fault suite"), checked by :meth:`FaultWorld.check`:

1. **definite**: every target of the run ends in a terminal state (``azrun status -o json``);
2. **once**: no script ran twice: the simulator's ``GET /_sim/executions`` has at most one
   execution per machine of the run's run command;
3. **clean**: after ``azrun cleanup`` no run command is left on any machine (listed through ARM
   with the compute SDK, and the simulator's own count agrees);
4. **agrees**: the ledger agrees with the simulator, target by target: Succeeded/Failed with an
   exit code <=> an execution that ended with that code; never sent (Pending, Skipped,
   Undeliverable) <=> no execution; no execution the ledger does not know of; no exit code
   recorded for a script whose exit is unknown.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken

from azrun.sim.launcher import SimProcess
from azrun.sim.tokens import Principal, mint

SUB = "11111111-1111-4111-8111-111111111111"
TERMINAL = frozenset({"Succeeded", "Failed", "TimedOut", "Canceled", "Skipped", "Undeliverable"})
NEVER_SENT = frozenset({"Skipped", "Undeliverable", "Pending"})
HANDLER_PRE_START = frozenset({-100, -101, -102})  # script download, output blob creation, runAsUser
_NEVER_PRINTED = ("Traceback (most recent call last)", "object at 0x")  # tracebacks, reprs (issue 14, 15)
_OWNER = "0a0a0a0a-0000-4000-8000-00000000fa17"  # not in the fleet's access table: an owner
_CHECKOUT = Path(__file__).resolve().parents[2]


def fleet(*, vms: int = 4, faults: str = "", sim: str = "") -> str:
    """A one-group world ``vm-001..`` (tag env=prod) on the fast profile; vm-001 is this IMDS's VM."""
    parts = [
        "[sim]",
        'current_vm = "rg/vm-001"',
        "agent_start_delay_s = 0.05",
        "agent_upload_interval_s = 0.3",
        "agent_status_interval_s = 0.2",
        "seed = 14",
        sim,
    ]
    if faults:
        parts += ["[faults]", faults]
    parts += [
        "[limits]",  # Compute's per-VM buckets roomy: the rows inject their own 429s
        "vm_update_resource = [100, 10]",
        "vm_get_resource = [1000, 100]",
        "vm_operation_resource = [1000, 100]",
        "[[subscription]]",
        f'id = "{SUB}"',
        'name = "faults"',
        "  [[subscription.resource_group]]",
        '  name = "rg"',
        '  location = "westeurope"',
        "    [[subscription.resource_group.vm]]",
        '    name = "vm-{i:03d}"',
        f"    count = {vms}",
        "    system_identity = true",
        '    tags = { env = "prod" }',
    ]
    return "\n".join(parts) + "\n"


class _Credential:
    """Tokens for an owner, minted the way the local IMDS mints them (the checks bypass IMDS)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        p = Principal(object_id=_OWNER, client_id=_OWNER, tenant_id=_tenant())
        value, expires_on = mint(p, "https://management.azure.com/", ttl_s=3600)
        return AccessToken(value, expires_on)


def _tenant() -> str:
    from azrun.sim.fleetspec import DEFAULT_TENANT

    return DEFAULT_TENANT


def wait_for(pred: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not met in {timeout_s:g} s")


@dataclass
class Verdict:
    """What :meth:`FaultWorld.check` found: the run's ledger view and the simulator's."""

    run_id: str
    status: dict[str, Any]
    states: dict[str, str]  # target name -> state
    executions: list[dict[str, Any]] = field(default_factory=list)
    cleanup: subprocess.CompletedProcess[str] | None = None

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


class FaultWorld:
    """One row's world: a local Azure (with Azurite), a state dir, and ``azrun`` as a subprocess."""

    def __init__(self, sim: SimProcess, tmp: Path, *, state_dir: Path | None = None) -> None:
        self.sim = sim
        self.tmp = tmp
        self.state_dir = state_dir or tmp / "state"
        self.env = {**os.environ, **sim.env, "AZRUN_STATE_DIR": str(self.state_dir), "NO_COLOR": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_CHECKOUT), os.environ.get("PYTHONPATH", "")) if p)
        self.children: list[subprocess.Popen[str]] = []

    # -- azrun as a person runs it ---------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "azrun", *args]

    def azrun(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
        for junk in _NEVER_PRINTED:  # whatever the fault, azrun speaks in one-line causes
            assert junk not in done.stdout + done.stderr, f"azrun {' '.join(args)} printed {junk!r}: {done.stderr}"
        return done

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        self.children.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[str], timeout_s: float = 120) -> tuple[str, str]:
        """The spawned azrun's stdout and stderr once it exits (no traceback, no repr in them)."""
        out, err = proc.communicate(timeout=timeout_s)
        for junk in _NEVER_PRINTED:
            assert junk not in out + err, f"azrun printed {junk!r}: {err}"
        return out, err

    def kill9(self, proc: subprocess.Popen[str]) -> None:
        """kill -9, and reap it (a zombie's pid still looks alive to the lease check)."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)

    def close(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)

    # -- the ledger, as any shell sees it ---------------------------------------------------
    def status(self, run: str = "last") -> dict[str, Any]:
        done = self.azrun("status", run, "-o", "json")
        assert done.returncode in (0, 1), f"azrun status exited {done.returncode}: {done.stderr}"
        return dict(json.loads(done.stdout))

    def counts(self, run: str = "last") -> dict[str, int]:
        """The latest run's per-state counts, read straight from the ledger file (cheap, for polling)."""
        from azrun.ledger import Ledger

        try:
            with Ledger.open(self.state_dir) as led:
                rid = led.latest_run_id() if run == "last" else run
                return dict(led.counts(rid)) if rid else {}
        except Exception:
            return {}

    def targets(self, run: str = "last") -> list[Any]:
        from azrun.ledger import Ledger

        with Ledger.open(self.state_dir) as led:
            rid = led.latest_run_id() if run == "last" else run
            return list(led.targets(rid)) if rid else []

    def wait_counts(self, pred: Callable[[dict[str, int]], bool], timeout_s: float = 30,
                    what: str = "ledger counts") -> dict[str, int]:
        return dict(wait_for(lambda: (lambda c: c if pred(c) else None)(self.counts()), timeout_s, what))

    def latest_run_id(self) -> str | None:
        from azrun.ledger import Ledger

        try:
            with Ledger.open(self.state_dir) as led:
                rid = led.latest_run_id()
        except Exception:
            return None
        return str(rid) if rid else None

    def run_id(self) -> str:
        rid = self.latest_run_id()
        assert rid, "no run in the ledger"
        return rid

    # -- the simulator, as ground truth -----------------------------------------------------
    def set_faults(self, **faults: Any) -> None:
        self.sim.admin_post("faults", faults)

    def executions(self, run_id: str) -> list[dict[str, Any]]:
        name = f"azrun-{run_id}".lower()
        return [e for e in self.sim.admin_get("executions")["value"] if e["runCommand"].lower() == name]

    def wait_started(self, n: int, run: str = "last", timeout_s: float = 30) -> list[dict[str, Any]]:
        """Wait until ``n`` scripts of the run have started on their machines (the simulator's view)."""
        def started() -> list[dict[str, Any]] | None:
            rid = self.latest_run_id() if run == "last" else run
            execs = self.executions(rid) if rid else []
            return execs if len(execs) >= n else None

        return list(wait_for(started, timeout_s, f"{n} scripts started"))

    def script(self, text: str, name: str = "job.sh") -> str:
        """A script file (``resume`` re-reads a run's script from its recorded file)."""
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def running_scripts(self) -> int:
        return int(self.sim.admin_get("stats")["runningScripts"])

    def compute(self) -> Any:
        """A compute SDK client on the local ARM, as an owner."""
        from azure.mgmt.compute import ComputeManagementClient

        return ComputeManagementClient(
            _Credential(), SUB, base_url=self.sim.env["AZRUN_ARM_ENDPOINT"],
            credential_scopes=["https://management.azure.com/.default"],
            connection_verify=self.sim.env["AZRUN_CA_BUNDLE"], polling_interval=0,
        )

    def run_commands_left(self) -> list[str]:
        """Every run command on every VM, through ARM (the compute SDK, as a person would look)."""
        with self.compute() as client:
            left = []
            for vm in client.virtual_machines.list_all():
                rg = str(vm.id).split("/")[4]
                for rc in client.virtual_machine_run_commands.list_by_virtual_machine(rg, str(vm.name)):
                    left.append(f"{vm.name}/{rc.name}")
        return left

    # -- the four invariants ----------------------------------------------------------------
    def check(self, run_id: str | None = None, *, cleanup: bool = True) -> Verdict:
        """Heal the world (faults off), then assert the four invariants for the run; see module doc."""
        self.set_faults()
        run_id = run_id or self.run_id()
        status = self.status(run_id)
        targets = status["targets"]
        states = {t["name"]: t["state"] for t in targets}
        assert targets, f"run {run_id} has no targets"
        # 1. definite
        loose = {n: s for n, s in states.items() if s not in TERMINAL}
        assert not loose, f"targets not in a definite state: {loose}"
        # 2. once
        execs = self.executions(run_id)
        per = Counter(e["vm"].lower() for e in execs)
        twice = {vm.rsplit("/", 1)[1]: n for vm, n in per.items() if n > 1}
        assert not twice, f"scripts ran more than once: {twice}"
        # 4. agrees (before cleanup, which deletes nothing the simulator's history holds)
        by_vm = {e["vm"].lower(): e for e in execs}
        recorded = {r.target.resource_id.lower(): r.exit_code for r in self.targets(run_id)}  # raw, not as shown
        for t in targets:
            _agree({**t, "exitCode": recorded[t["id"].lower()]}, by_vm.pop(t["id"].lower(), None))
        assert not by_vm, f"executions the ledger does not know of: {sorted(by_vm)}"
        verdict = Verdict(run_id, status, states, execs)
        # 3. clean
        if cleanup:
            verdict.cleanup = self.azrun("cleanup", "--older-than", "0s", "--all-azrun", "--tag", "env=prod")
            assert verdict.cleanup.returncode == 0, f"cleanup failed: {verdict.cleanup.stderr}"
            left = self.run_commands_left()
            assert not left, f"run commands left behind after cleanup: {left}"
            assert self.sim.admin_get("stats")["runCommands"] == 0
            assert self.running_scripts() == 0, "scripts still running after cleanup"
        return verdict


def _agree(target: dict[str, Any], execution: dict[str, Any] | None) -> None:
    """One target: the ledger's state and exit code against the simulator's execution."""
    name, state, code = target["name"], target["state"], target.get("exitCode")
    where = f"{name}: ledger {state} exit={code}, simulator {_brief(execution)}"
    if state in NEVER_SENT:
        assert execution is None, f"{where} (a target never sent has no execution)"
        assert code is None, where
        return
    if state == "Succeeded":
        assert execution is not None and execution["state"] == "Succeeded" and execution["exitCode"] == 0, where
        assert code == 0, where
        return
    finished = execution is not None and execution["endTime"] is not None and not execution["killed"]
    if state == "Failed" and code in HANDLER_PRE_START:
        assert execution is None, f"{where} (the handler failed before the script started)"
        return
    if state == "Failed" and code is not None:
        assert execution is not None and finished and execution["exitCode"] == code, where
        return
    if state in ("TimedOut", "Canceled", "Failed"):  # the exit is unknown: killed, lost, or never started
        assert code is None, f"{where} (no exit code may be recorded when the script's exit is unknown)"
        if execution is not None:
            stopped = execution["killed"] or execution["hung"] or execution["exitCode"] == -1
            assert stopped, f"{where} (the script ended on its own, so its exit is known)"
        return
    raise AssertionError(f"{where}: unexpected state")


def _brief(execution: dict[str, Any] | None) -> str:
    if execution is None:
        return "no execution"
    keys = ("state", "exitCode", "killed", "hung", "endTime")
    return "{" + ", ".join(f"{k}={execution.get(k)!r}" for k in keys) + "}"


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full (ENOSPC); the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        while True:  # the last few bytes, so no page is left for anyone
            try:
                written += f.write(b"\0" * 512)
            except OSError:
                break
    return written


def names(rows: Iterable[Any]) -> list[str]:
    return sorted(str(r) for r in rows)
