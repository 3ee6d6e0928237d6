"""``SimProcess``: the local Azure as a subprocess, for tests, benchmarks and the demo.

It runs ``python -m azrun.sim up --watch-parent ...`` with everything under one working
directory (``fleet.toml``, ``env``, ``requests.jsonl``, ``sim.stderr.log``, ``sim/``) and waits
for the env file, which the simulator writes only once every service listens.

The child never outlives its parent: it runs in its own session (a Ctrl-C in the terminal does
not race the clean shutdown), ``atexit`` stops it when the parent exits normally, and
``--watch-parent`` makes it stop itself when the parent dies any other way.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from azrun.sim.reqlog import read_log

_CHECKOUT = Path(__file__).resolve().parents[2]


class SimStartError(RuntimeError):
    """The simulator did not become ready; the message carries the end of its stderr."""


def parse_env_file(text: str) -> dict[str, str]:
    """``export KEY=VALUE`` lines (shell-quoted values) -> dict."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            env[key] = value
    return env


class SimProcess:
    """One local Azure subprocess.

    Args:
        fleet: a fleet file path, TOML text (a str containing a newline), or None for the demo fleet.
        workdir: where everything of this simulator lives.
        storage: start Azurite too.
        extra_env: environment additions for the child (e.g. ``AZRUN_AZURITE_BIN``).
        profile: "fast" or "realistic" timing (azrun/sim/timing.py); None keeps the fleet file's.
    """

    def __init__(
        self,
        fleet: str | Path | None = None,
        *,
        workdir: Path,
        storage: bool = True,
        extra_env: dict[str, str] | None = None,
        profile: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.profile = profile
        self.workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(fleet, str) and "\n" in fleet:
            path = self.workdir / "fleet.toml"
            path.write_text(fleet, encoding="utf-8")
            fleet = path
        self.fleet: Path | None = Path(fleet) if fleet is not None else None
        self.storage = storage
        self.extra_env = dict(extra_env or {})
        self.env_file = self.workdir / "env"
        self.request_log = self.workdir / "requests.jsonl"
        self.stderr_path = self.workdir / "sim.stderr.log"
        self.env: dict[str, str] = {}
        self.ready_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"SimProcess(pid={pid}, arm={self.env.get('AZRUN_ARM_ENDPOINT')})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def admin(self) -> str:
        return self.env["AZRUN_SIM_ADMIN"]

    @property
    def ca_bundle(self) -> str:
        return self.env["AZRUN_CA_BUNDLE"]

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "azrun.sim", "up", "--watch-parent"]
        argv += ["--workdir", str(self.workdir / "sim"), "--env-file", str(self.env_file)]
        argv += ["--request-log", str(self.request_log)]
        if self.fleet is not None:
            argv += ["--fleet", str(self.fleet)]
        if not self.storage:
            argv.append("--no-storage")
        if self.profile is not None:
            argv += ["--profile", self.profile]
        return argv

    def start(self, timeout_s: float = 30) -> dict[str, str]:
        """Spawn the simulator and wait for its env file; raise SimStartError if it fails."""
        if self._process is not None:
            raise RuntimeError("this SimProcess is already started")
        self.env_file.unlink(missing_ok=True)
        env = {**os.environ, **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_CHECKOUT), env.get("PYTHONPATH", "")) if p)
        began = time.monotonic()
        with open(self.stderr_path, "wb") as err, open(self.workdir / "sim.stdout.log", "wb") as out:
            self._process = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(began, timeout_s)
        except BaseException:
            self.stop()
            raise
        return dict(self.env)

    def _wait_ready(self, began: float, timeout_s: float) -> None:
        assert self._process is not None
        while time.monotonic() - began < timeout_s:
            if self.env_file.exists():
                self.env = parse_env_file(self.env_file.read_text(encoding="utf-8"))
                self.ready_s = time.monotonic() - began
                return
            if self._process.poll() is not None:
                raise SimStartError(
                    f"the local Azure exited with code {self._process.returncode}: {self._stderr_tail()}"
                )
            time.sleep(0.02)
        raise SimStartError(f"the local Azure was not ready after {timeout_s:g} s: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return "(no stderr)"
        return text[-2000:] or "(empty stderr)"

    def stop(self, timeout_s: float = 10) -> int | None:
        """SIGTERM, wait, SIGKILL after ``timeout_s``; return the exit code (None if never started)."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def __enter__(self) -> SimProcess:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers for tests and benchmarks ---------------------------------------------------

    def requests(self) -> list[dict[str, Any]]:
        """Every request-log entry so far."""
        return read_log(self.request_log)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def _admin_url(self, path: str) -> str:
        path = path.removeprefix("/").removeprefix("_sim").removeprefix("/")
        return f"{self.admin}/{path}"

    def admin_get(self, path: str) -> Any:
        """GET an admin route (``"executions"`` or ``"/_sim/executions"``) and decode its JSON."""
        with urllib.request.urlopen(self._admin_url(path), context=self._ssl(), timeout=30) as resp:
            return _json(resp)

    def admin_post(self, path: str, body: Any) -> Any:
        """POST JSON to an admin route and decode the answer (None when empty)."""
        req = urllib.request.Request(
            self._admin_url(path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, context=self._ssl(), timeout=30) as resp:
            return _json(resp)


def _json(resp: IO[bytes]) -> Any:
    raw = resp.read()
    return json.loads(raw) if raw.strip() else None
