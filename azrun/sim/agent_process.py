"""How the local agent turns one execution request into a process: argv, environment, user.

As the Linux handler (run-command-handler-linux ``exec.go``), with one deliberate difference:

- **Named parameters** become environment variables (public first, then protected); an entry
  with an empty value is skipped.
- **Nameless parameters**: the handler appends ``" " + value`` unquoted to a ``bash -c``
  string, so each value is word-split (and globbed, and shell-interpreted: an injection on the
  real VM). The local agent runs on the developer's own machine, so it passes the same *words*
  as separate argv entries, with **no shell in between**: ``"a b"`` still arrives as two
  arguments ``a`` and ``b`` (word splitting on blanks, as the handler's unquoted string), but
  ``;``, ``$(...)``, ``*`` and quotes are plain characters. Nothing a caller sends ever reaches
  a shell command line.
- **Interpreter**: ``bash -c "<script path>"`` lets the kernel honour a shebang and bash run a
  file without one; the agent does the same without ``-c``: a file starting with ``#!`` is
  executed directly, any other file is run as ``/bin/bash <script>``.
- **Windows** VMs run ``pwsh -NoProfile -NonInteractive -File script.ps1 -name value ... unnamed``
  only where ``pwsh`` is on PATH; otherwise the run fails (exitCode 127) with a message that says so.
- **Environment** scrubbed to ``PATH`` (a per-machine ``hostname`` shim first), ``HOME``,
  ``LANG``, ``ConfigExtensionName``, ``ConfigSequenceNumber`` plus the named parameters.
- **runAsUser**: an unknown user -> -102; switching user needs root, without it only the
  current user works. The password never reaches argv, logs or reprs.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azrun.sim.execution import ExecutionRequest

EXIT_BLOB_CREATE = -101
EXIT_RUNAS = -102
EXIT_DOWNLOAD = -100
EXIT_NO_PWSH = 127


class AgentFailure(Exception):
    """An execution fails before its script runs (download, blob creation, runAs, no pwsh)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def split_parameters(
    parameters: list[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[str]]:
    """(named, nameless words): empty values skipped, nameless values word-split on blanks."""
    named: list[tuple[str, str]] = []
    words: list[str] = []
    for name, value in parameters:
        if value == "":
            continue
        if name:
            named.append((name, value))
        else:
            words.extend(value.split())
    return named, words


def command(
    req: ExecutionRequest, workdir: Path, script: Path
) -> tuple[list[str], dict[str, str], pwd.struct_passwd | None]:
    """(argv, environment, user to switch to or None) for one execution; no shell involved."""
    home = workdir.parents[1] / "home"  # <root>/<vm>/home, shared by the VM's run commands
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{machine_bin(home, req.vm_display)}{os.pathsep}"
        + os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ConfigExtensionName": req.run_command,
        "ConfigSequenceNumber": str(req.seq),
    }
    named, words = split_parameters([*req.parameters, *req.protected_parameters])
    env.update(named)
    user = run_as(req, workdir)
    if user is not None:
        env["HOME"] = user.pw_dir
    if req.os.lower() == "windows":
        pwsh = shutil.which("pwsh")
        if pwsh is None:
            raise AgentFailure(
                EXIT_NO_PWSH,
                "Execution failed: this local Azure host has no PowerShell ('pwsh' is not on PATH), "
                "so scripts of Windows VMs cannot run here. Install PowerShell 7 or use a Linux VM.",
            )
        argv = [pwsh, "-NoProfile", "-NonInteractive", "-File", str(script)]
        for name, value in named:
            argv += [f"-{name}", value]
        return [*argv, *words], env, user
    with open(script, "rb") as f:
        shebang = f.read(2) == b"#!"
    head = [str(script)] if shebang else ["/bin/bash", str(script)]
    return [*head, *words], env, user


def run_as(req: ExecutionRequest, workdir: Path) -> pwd.struct_passwd | None:
    """The user to switch to (None: stay), or an AgentFailure -102 as the handler reports."""
    if not req.run_as_user:
        return None
    try:
        entry = pwd.getpwnam(req.run_as_user)
    except KeyError:
        raise AgentFailure(
            EXIT_RUNAS, f"Execution failed: runAsUser '{req.run_as_user}' does not exist on the VM"
        ) from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise AgentFailure(
            EXIT_RUNAS,
            f"Execution failed: cannot run as '{req.run_as_user}': the local Azure agent is not root",
        )
    for path in (workdir, *workdir.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return entry


async def spawn(
    workdir: Path,
    argv: list[str],
    env: dict[str, str],
    user: pwd.struct_passwd | None,
    stdout_path: Path,
    stderr_path: Path,
) -> asyncio.subprocess.Process:
    """Start the script in its own session, stdout/stderr to files (O_TRUNC, 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out_fd = os.open(stdout_path, flags, 0o600)
    err_fd = os.open(stderr_path, flags, 0o600)
    extra: dict[str, Any] = {}
    if user is not None:
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        for fd in (out_fd, err_fd):
            os.fchown(fd, user.pw_uid, user.pw_gid)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(workdir),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
            **extra,
        )
    except OSError as exc:
        raise AgentFailure(-1, f"Execution failed: failed to start the script: {exc.strerror}") from None
    finally:
        os.close(out_fd)
        os.close(err_fd)


def machine_bin(home: Path, display: str) -> Path:
    """A per-machine bin dir whose ``hostname`` names the simulated machine, not this host.

    Scripts commonly print ``$(hostname)``; on Azure each VM answers with its own name.
    """
    bin_dir = home.parent / "bin"
    shim = bin_dir / "hostname"
    if not shim.exists():
        bin_dir.mkdir(parents=True, exist_ok=True)
        name = display.replace("/", "_")
        shim.write_text(f"#!/bin/sh\necho {shlex.quote(name)}\n", encoding="utf-8")
        shim.chmod(0o755)
    return bin_dir
