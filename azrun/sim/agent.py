"""The guest agent of the local Azure: runs run-command scripts for real, as the Linux handler does.

Semantics follow the Linux handler (Azure/run-command-handler-linux, v1.3.28):

- **Working directory** ``<root>/<vm name>-<hash of its resource id>/<run command>/<seq>/``
  (0700; same-named VMs in other groups or subscriptions never share one): the script is
  written there verbatim (``script.sh``, 0500) and its output goes to the files ``stdout`` /
  ``stderr``.
- **Execution, parameters, runAsUser, Windows** (``agent_process.py``): named parameters become
  environment variables; nameless ones are word-split like the handler's unquoted ``bash -c``
  string but passed as argv entries, never through a shell; the script gets its own session.
- **Blobs** (``agent_blobs.py``): before the script starts, each of ``outputBlobUri`` /
  ``errorBlobUri`` is created or replaced as an empty append blob, through the SAS URL or with a
  token minted for the VM's identity (``outputBlobManagedIdentity``).
- **Creation failure**: the handler's real behaviour wins over the issue text ("script still
  runs"): the script is NOT run; the result is Failed, exitCode -101, with the handler's message.
  A SAS failure does not fall back to the system identity here.
- **Appends**: every ``agent_upload_interval_s`` all new bytes of each file go in ONE
  ``PUT <uri>&comp=appendblock`` (no chunking); a failure (or an injected one,
  ``faults.blob_append_failure_rate``) is only logged and the same bytes are retried next tick;
  a failure of the final append after exit is ignored (bytes lost, as in Azure).
- **Instance view**: ``Running`` / "Execution in progress" when the process starts; output/error
  = last 4096 bytes of the files (byte-based, decoded with ``errors="replace"``) every
  ``agent_status_interval_s`` and at exit. Exit 0 -> Succeeded / "Execution completed"; exit N
  -> Failed / N / "Execution failed: failed to execute command: command terminated with exit
  status=N"; killed by a signal -> N = -1.
- **Timeout** (``timeout_s > 0``): the whole process group is SIGKILLed (the real handler kills
  only bash; grandchildren are killed here so nothing leaks) -> Failed / -1. Never TimedOut.
  Likewise, background processes a script leaves in its group are killed when it exits (the
  real VM keeps them; the simulator must not leak processes into the test machine).
- **Hung agent** (fault): the script runs and uploads for real, but the status never leaves
  Running: the agent "never reports completion".
- **kill()** (run command deleted, VM deallocated): the process group is SIGKILLed, the status is
  frozen as it was (only ``finished`` is set) and the execution is forgotten.

Never logged: SAS query strings (only ``scheme://host/path``), protected parameter values,
passwords, tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from azrun.sim.agent_blobs import AppendBlob, BlobCreateError, BlobWriter, public_uri
from azrun.sim.agent_files import EXIT_NO_SOURCE, NO_SOURCE_MESSAGE, machine_dir, safe_name, tail
from azrun.sim.agent_process import EXIT_BLOB_CREATE, EXIT_DOWNLOAD, AgentFailure, command, spawn
from azrun.sim.execution import ExecutionRequest, ExecutionStatus
from azrun.sim.fleetspec import Faults, SimSettings
from azrun.sim.timing import Timing
from azrun.sim.tokens import Principal

_LOG = logging.getLogger(__name__)

_SHELL_COMMANDS = {"runshellscript": "linux", "runpowershellscript": "windows"}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


@dataclass
class _Execution:
    req: ExecutionRequest
    status: ExecutionStatus  # what ARM shows (published at the agent's reports under cadence)
    workdir: Path
    truth: ExecutionStatus = field(default_factory=ExecutionStatus)  # what really happened
    reporter: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    killed: bool = False
    group_gone: bool = False  # its process group was killed after the script ended: never again


class Agent:
    """Runs scripts for all VMs of the local Azure; see the module docstring for the semantics.

    Args:
        root: where the per-VM working directories go.
        settings: cadences and the start delay.
        faults: the live fault settings (append failure rate); read at each use.
        ca_bundle: CA file trusted for blob HTTPS (the local CA), or None for the system store.
        storage_account_key: (account, key) of the emulator; kept for callers, never used to
            authenticate (the agent uses what the handler has: a SAS or a token).
        storage_role: the role a principal has on the output container ("contributor",
            "reader", "none"); default: everyone is a contributor.
    """

    def __init__(
        self,
        *,
        root: Path,
        settings: SimSettings,
        faults: Callable[[], Faults],
        ca_bundle: str | None,
        storage_account_key: tuple[str, str] | None,
        storage_role: Callable[[Principal], str] | None = None,
    ) -> None:
        self._root = Path(root)
        self._settings = settings
        self._faults = faults
        self.storage_account_key = storage_account_key
        self._rng = random.Random(faults().seed)
        self.timing = Timing(settings)
        self._live: dict[tuple[str, str], _Execution] = {}
        self._history: list[_Execution] = []
        self._blobs = BlobWriter(
            ca_bundle=ca_bundle,
            token_ttl_s=settings.token_ttl_s,
            storage_role=storage_role or (lambda _p: "contributor"),
            append_fails=lambda: self._rng.random() < self._faults().blob_append_failure_rate,
        )

    def __repr__(self) -> str:
        return f"Agent(live={len(self._live)}, running={self.running_count()}, started={len(self._history)})"

    # -- public API -------------------------------------------------------------------------

    def start(self, req: ExecutionRequest) -> ExecutionStatus:
        """Schedule ``req`` (after ``agent_start_delay_s``) and return its live status."""
        loop = asyncio.get_running_loop()
        key = (req.vm_id.lower(), req.run_command.lower())
        previous = self._live.pop(key, None)
        workdir = self._root / machine_dir(req.vm_id, req.vm_display) / safe_name(req.run_command) / str(req.seq)
        status = ExecutionStatus()
        cadence = self.timing.status_cadence
        ex = _Execution(req=req, status=status, workdir=workdir, truth=ExecutionStatus() if cadence else status)
        ex.task = loop.create_task(self._run(ex, previous), name=f"agent:{req.vm_display}/{req.run_command}")
        if cadence:
            ex.reporter = loop.create_task(self._report_loop(ex), name=f"report:{req.vm_display}/{req.run_command}")
        self._live[key] = ex
        return ex.status

    async def kill(self, vm_id: str, run_command: str) -> None:
        """Kill that run command's script (whole group) if running; freeze and forget its status."""
        ex = self._live.pop((vm_id.lower(), run_command.lower()), None)
        if ex is not None:
            await self._kill(ex)

    def executions(self) -> list[dict[str, Any]]:
        """Every execution whose script process started (for ``GET /_sim/executions``)."""
        out = []
        for ex in self._history:
            st = ex.truth
            out.append(
                {
                    "vm": ex.req.vm_id,
                    "vmDisplay": ex.req.vm_display,
                    "runCommand": ex.req.run_command,
                    "seq": ex.req.seq,
                    "state": st.state,
                    "exitCode": st.exit_code,
                    "startTime": _iso(st.start_time),
                    "endTime": _iso(st.end_time),
                    "pid": ex.process.pid if ex.process else None,
                    "killed": ex.killed,
                    "hung": ex.req.hung,
                }
            )
        return out

    def running_count(self) -> int:
        """Script processes still running."""
        return sum(1 for ex in self._history if ex.process is not None and ex.process.returncode is None)

    async def aclose(self) -> None:
        """Kill every script (and what it left behind) and close the HTTP session."""
        live = list(self._live.values())
        self._live.clear()
        for ex in live:
            await self._kill(ex)
        for ex in [*live, *self._history]:
            if ex.reporter is not None:
                ex.reporter.cancel()
        for ex in self._history:
            self._killpg(ex)
        await self._blobs.aclose()

    # -- execution --------------------------------------------------------------------------

    async def _run(self, ex: _Execution, previous: _Execution | None) -> None:
        if previous is not None:
            await self._kill(previous)
        req = ex.req
        await asyncio.sleep(self.timing.start_delay(req.vm_id, scale_set_vm=req.scale_set_vm, managed=req.managed))
        if req.never_starts:
            await asyncio.Event().wait()  # fault: the agent never picks it up; only kill() ends this
        ex.truth.start_time = _now()
        try:
            await self._execute(ex)
        except AgentFailure as failure:
            self._finish(ex, "Failed", failure.exit_code, failure.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the simulator's own bug: report it rather than hang the run
            _LOG.exception("agent failure on %s/%s", ex.req.vm_display, ex.req.run_command)
            self._finish(ex, "Failed", -1, f"Execution failed: local Azure agent error: {type(exc).__name__}")

    async def _execute(self, ex: _Execution) -> None:
        req = ex.req
        ex.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        script = await self._write_script(ex)
        stdout_path, stderr_path = ex.workdir / "stdout", ex.workdir / "stderr"
        blobs = [
            await self._create_blob(uri, principal, req.blob_identity_missing, source)
            for uri, principal, source in (
                (req.output_blob_uri, req.output_blob_principal, stdout_path),
                (req.error_blob_uri, req.error_blob_principal, stderr_path),
            )
            if uri
        ]
        argv, env, user = command(req, ex.workdir, script)
        process = await spawn(ex.workdir, argv, env, user, stdout_path, stderr_path)
        ex.process = process
        self._history.append(ex)
        st = ex.truth
        st.state, st.message, st.started = "Running", "Execution in progress", True
        stop = asyncio.Event()
        uploader = asyncio.create_task(self._upload_loop(blobs, stop))
        reporter = asyncio.create_task(self._status_loop(ex, stop))
        try:
            rc = await self._wait(ex, process)
            stop.set()
            await uploader
            for blob in blobs:
                await self._blobs.append(blob)  # the final append: errors only logged
        finally:
            stop.set()
            reporter.cancel()
            if not uploader.done():
                uploader.cancel()
        if req.hung or ex.killed:
            return
        self._refresh(ex)
        if rc == 0:
            self._finish(ex, "Succeeded", 0, "Execution completed")
        else:
            msg = f"Execution failed: failed to execute command: command terminated with exit status={rc}"
            self._finish(ex, "Failed", rc, msg)

    async def _wait(self, ex: _Execution, process: asyncio.subprocess.Process) -> int:
        """Wait for the script; on timeout kill its whole group. Returns the handler's exit code."""
        timeout = ex.req.timeout_s if ex.req.timeout_s > 0 else None
        try:
            rc = await asyncio.wait_for(process.wait(), timeout)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes on 3.10
            self._killpg(ex)
            await process.wait()
            rc = -1
        # Whatever the script left running in its group dies with it: nothing leaks from the
        # simulator, and the group id is never signalled again once it may be reused.
        self._killpg(ex)
        ex.group_gone = True
        return rc if rc >= 0 else -1

    def _finish(self, ex: _Execution, state: str, exit_code: int, message: str) -> None:
        if ex.killed:
            return
        st = ex.truth
        if st.start_time is None:
            st.start_time = _now()
        st.state, st.exit_code, st.message = state, exit_code, message
        st.end_time = _now()
        st.finished = True

    def _refresh(self, ex: _Execution) -> None:
        ex.truth.output = tail(ex.workdir / "stdout")
        ex.truth.error = tail(ex.workdir / "stderr")

    async def _report_loop(self, ex: _Execution) -> None:
        """Under the status cadence: publish what happened at each of the agent's reports."""
        interval = self._settings.agent_status_interval_s
        await asyncio.sleep(self.timing.report_phase())
        while not ex.killed:
            if ex.truth.started and not ex.truth.finished:
                self._refresh(ex)
            for f in fields(ExecutionStatus):
                setattr(ex.status, f.name, getattr(ex.truth, f.name))
            if ex.truth.finished:
                return
            await asyncio.sleep(interval)

    async def _status_loop(self, ex: _Execution, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.agent_status_interval_s)
            if not stop.is_set():
                self._refresh(ex)

    async def _kill(self, ex: _Execution) -> None:
        if ex.truth.finished and (ex.task is None or ex.task.done()):
            if ex.reporter is not None:
                ex.reporter.cancel()
            return  # it completed on its own: its record stays as it was
        ex.killed = True
        ex.status.finished = ex.truth.finished = True
        if ex.reporter is not None and not ex.reporter.done() and ex.reporter is not asyncio.current_task():
            ex.reporter.cancel()
        self._killpg(ex)
        task = ex.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if ex.process is not None:
            if ex.process.returncode is None:
                await ex.process.wait()
            ex.group_gone = True

    @staticmethod
    def _killpg(ex: _Execution) -> None:
        if ex.process is None or ex.group_gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ex.process.pid, signal.SIGKILL)

    # -- script and process -----------------------------------------------------------------

    async def _write_script(self, ex: _Execution) -> Path:
        req = ex.req
        windows = req.os.lower() == "windows"
        name = "script.ps1" if windows else "script.sh"
        if not (req.script or req.script_uri or req.command_id):
            raise AgentFailure(EXIT_NO_SOURCE, f"Execution failed: {NO_SOURCE_MESSAGE}")
        if req.script_uri:
            content, name = await self._download(req.script_uri)
        elif req.command_id and req.command_id.lower() not in _SHELL_COMMANDS:
            raise AgentFailure(
                EXIT_DOWNLOAD,
                f"Execution failed: processing file downloads failed: commandId '{req.command_id}' is not "
                "supported by the local Azure (use RunShellScript or RunPowerShellScript with a script)",
            )
        else:
            content = (req.script or "").encode("utf-8")
        path = ex.workdir / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path.write_bytes(content)
        path.chmod(0o500)
        return path

    async def _download(self, uri: str) -> tuple[bytes, str]:
        """Fetch a scriptUri (one try, like the handler's SAS GET)."""
        name = safe_name(public_uri(uri).rstrip("/").rsplit("/", 1)[-1]) or "script.sh"
        try:
            async with self._blobs.session().get(URL(uri, encoded=True)) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError) as exc:
            raise AgentFailure(
                EXIT_DOWNLOAD,
                f"Execution failed: Failed to download the script '{public_uri(uri)}': {type(exc).__name__}",
            ) from None
        if status != 200:
            raise AgentFailure(
                EXIT_DOWNLOAD,
                f"Execution failed: Failed to download the script '{public_uri(uri)}': status code {status}",
            )
        if name.endswith((".sh", ".txt", ".py", ".pl")) or body.startswith(b"#!"):
            body = body.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        return body, name

    # -- blobs ------------------------------------------------------------------------------

    async def _create_blob(
        self, uri: str, principal: Principal | None, identity_missing: bool, source: Path
    ) -> AppendBlob:
        try:
            return await self._blobs.create(uri, principal, identity_missing, source)
        except BlobCreateError as exc:
            raise AgentFailure(EXIT_BLOB_CREATE, f"Execution failed: {exc}") from None

    async def _upload_loop(self, blobs: list[AppendBlob], stop: asyncio.Event) -> None:
        while blobs and not stop.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.agent_upload_interval_s)
            if stop.is_set():
                return
            for blob in blobs:
                await self._blobs.append(blob)
