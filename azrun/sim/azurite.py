"""Azurite (the npm storage emulator): find it, install it if needed, start it, stop it.

Where the ``azurite-blob`` launcher is looked for, first hit wins:

1. ``$AZRUN_AZURITE_BIN``;
2. ``<checkout>/.local/azurite/node_modules/.bin/azurite-blob`` (what ``./scripts/setup`` installs;
   ``<checkout>`` is the directory holding the ``azrun`` package);
3. ``$XDG_DATA_HOME/azrun/azurite/node_modules/.bin/azurite-blob`` (``~/.local/share`` by default);
4. ``azurite-blob`` on ``PATH``.

If none exists and ``npm`` does, it is installed into (3) from the ``package.json`` shipped in
``azrun/sim/azurite/`` (pinned version), so a pip-installed azrun works too.

It runs as ``azurite-blob --blobHost 127.0.0.1 --blobPort <free> --location <dir> --silent
--disableTelemetry --skipApiVersionCheck --loose --cert --key --oauth basic``: HTTPS with the
local CA (bearer tokens need TLS), tokens checked by claims only, any x-ms-version accepted
(azure-storage-blob 12.31 sends 2026-10-06, newer than Azurite 3.35 knows), unknown headers
ignored. The run-output container ``azrun-output`` is created at start with a bearer token
minted locally (no SDK import: start-up stays fast).

Account ``devstoreaccount1`` with the emulator's well-known key (sdk-notes §6). Known gaps of
Azurite: no ``append_block_from_url``; user-delegation SAS from azure-storage-blob >= 12.29 is
rejected (use shared-key SAS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from azrun.sim.tls import TlsFiles
from azrun.sim.tokens import Principal, mint

ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
OUTPUT_CONTAINER = "azrun-output"
X_MS_VERSION = "2025-11-05"
_BIN = Path("node_modules") / ".bin" / "azurite-blob"
_PACKAGE_JSON = Path(__file__).with_name("azurite") / "package.json"


class AzuriteError(RuntimeError):
    """Azurite cannot be found, installed or started."""


def _checkout_dir() -> Path:
    return Path(__file__).resolve().parents[2]


def _data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "azrun" / "azurite"


def find_azurite(env: Mapping[str, str] | None = None) -> Path | None:
    """The ``azurite-blob`` launcher, or None (see the module docstring for the search order)."""
    env = os.environ if env is None else env
    explicit = env.get("AZRUN_AZURITE_BIN")
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise AzuriteError(f"AZRUN_AZURITE_BIN points to {path}, which does not exist")
        return path
    for candidate in (_checkout_dir() / ".local" / "azurite" / _BIN, _data_dir(env) / _BIN):
        if candidate.exists():
            return candidate
    found = shutil.which("azurite-blob", path=env.get("PATH"))
    return Path(found) if found else None


def install_azurite(target: Path) -> Path:
    """``npm install`` the pinned Azurite into ``target``; return its launcher."""
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError(
            "Azurite is not installed and npm is not available to install it. "
            "Run ./scripts/setup in a checkout, install Node.js + npm, or set AZRUN_AZURITE_BIN, "
            "or start the simulator with --no-storage."
        )
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_PACKAGE_JSON, target / "package.json")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=target,
        capture_output=True,
        text=True,
        check=False,
    )
    launcher = target / _BIN
    if result.returncode != 0 or not launcher.exists():
        raise AzuriteError(f"npm install of Azurite in {target} failed: {result.stderr.strip()[-500:]}")
    return launcher


def locate_or_install(env: Mapping[str, str] | None = None) -> Path:
    """Find Azurite, installing it into ``$XDG_DATA_HOME/azrun/azurite`` if it is missing."""
    env = os.environ if env is None else env
    return find_azurite(env) or install_azurite(_data_dir(env))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (Azurite needs a number; it cannot bind 0 and report)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the simulator dies, so Azurite is never orphaned (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Azurite:
    """One Azurite blob service on a free loopback port, HTTPS with the local CA."""

    def __init__(
        self, *, workdir: Path, tls: TlsFiles, host: str = "127.0.0.1", binary: Path | None = None
    ) -> None:
        self._workdir = workdir
        self._tls = tls
        self._host = host
        self._binary = binary
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log_path = workdir / "azurite.log"

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"Azurite(port={self.port}, pid={pid})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def endpoint(self) -> str:
        return f"https://{self._host}:{self.port}/{ACCOUNT}"

    @property
    def container_url(self) -> str:
        return f"{self.endpoint}/{OUTPUT_CONTAINER}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    async def start(self, *, timeout_s: float = 20.0, attempts: int = 3) -> None:
        """Start Azurite and create the output container; retry on a port taken meanwhile."""
        binary = self._binary if self._binary is not None else await asyncio.to_thread(locate_or_install)
        for attempt in range(attempts):
            self.port = free_port(self._host)
            await self._spawn(binary)
            if await self._wait_ready(timeout_s):
                await self._create_container()
                return
            await self.stop()
            if attempt == attempts - 1:
                raise AzuriteError(f"Azurite did not start; its log: {self._log_tail()}")

    async def _spawn(self, binary: Path) -> None:
        location = self._workdir / "data"
        location.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            "--blobHost", self._host,
            "--blobPort", str(self.port),
            "--location", str(location),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--cert", str(self._tls.cert_path),
            "--key", str(self._tls.key_path),
            "--oauth", "basic",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    async def _wait_ready(self, timeout_s: float) -> bool:
        """Poll the port until it accepts connections, the process dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.returncode is not None:
                return False
            try:
                _, writer = await asyncio.open_connection(self._host, self.port)
            except OSError:
                await asyncio.sleep(0.03)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return False

    async def _create_container(self) -> None:
        principal = Principal(
            object_id="00000000-0000-4000-8000-00000000a2a1",
            client_id="00000000-0000-4000-8000-00000000a2a1",
            tenant_id="00000000-0000-4000-8000-000000000000",
            name="local-azure",
        )
        token, _ = mint(principal, "https://storage.azure.com", ttl_s=300)
        headers = {"Authorization": f"Bearer {token}", "x-ms-version": X_MS_VERSION, "Content-Length": "0"}
        ctx = ssl.create_default_context(cafile=str(self._tls.ca_path))
        url = f"{self.container_url}?restype=container"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            for _ in range(50):
                try:
                    async with session.put(url, headers=headers) as resp:
                        if resp.status in (201, 409):  # 409: it exists (a reused --location)
                            return
                        detail = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                except aiohttp.ClientError as exc:
                    detail = type(exc).__name__
                await asyncio.sleep(0.05)
        raise AzuriteError(f"could not create the output container in Azurite: {detail}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM Azurite, SIGKILL it if it lingers."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes on 3.10
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1000:].strip() or "(empty)"
        except OSError:
            return "(no log)"
