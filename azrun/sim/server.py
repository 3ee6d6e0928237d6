"""``LocalAzure``: the whole local Azure in one process, and ``python -m azrun.sim up``.

Start order is chosen for the 3-second budget: the TLS material first (milliseconds), then
Azurite (the slow part, about a second) in the background while the ARM (HTTPS) and IMDS
(HTTP) servers bind port 0 on loopback. Only when all three listen is the env file written
(atomically: temp file + rename), so whoever waits for the file can use every endpoint at once.

The env (one ``export KEY=VALUE`` line each, values ``shlex.quote``d) is also printed to stdout:

    AZRUN_ARM_ENDPOINT, AZRUN_CA_BUNDLE, AZRUN_SIM_ADMIN, AZURE_POD_IDENTITY_AUTHORITY_HOST,
    AZRUN_SIM_APPSERVICE_ENDPOINT, AZRUN_SIM_APPSERVICE_HEADER, AZURE_SUBSCRIPTION_ID, and with
    storage: AZRUN_STORAGE_ENDPOINT, AZRUN_STORAGE_CONNECTION_STRING, AZRUN_OUTPUT_CONTAINER.

SIGINT/SIGTERM stop everything (scripts killed, servers closed, Azurite SIGTERMed, request log
closed) and the process exits 0. With ``--watch-parent`` it also stops when its parent dies, so
a test run that is killed leaves no simulator behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from azrun.sim.agent import Agent
from azrun.sim.arm.app import make_arm_app
from azrun.sim.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from azrun.sim.fleetspec import Faults, FleetSpec, Limits, load_fleet
from azrun.sim.identity import storage_role
from azrun.sim.imds import ImdsService
from azrun.sim.reqlog import RequestLog
from azrun.sim.state import World
from azrun.sim.tls import TlsFiles, make_tls

_LOG = logging.getLogger(__name__)
DEMO_FLEET = Path(__file__).with_name("fleets") / "demo.toml"


def _bound_port(runner: web.AppRunner) -> int:
    """The real port of a site bound to port 0."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the server did not bind a TCP port")


class LocalAzure:
    """ARM + IMDS + Azurite + the guest agent, started and stopped together."""

    def __init__(
        self,
        fleet: FleetSpec | str | Path,
        *,
        workdir: Path,
        request_log: Path | None = None,
        storage: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.spec = fleet if isinstance(fleet, FleetSpec) else load_fleet(fleet)
        self.workdir = Path(workdir)
        self.storage = storage
        self.host = host
        self.env: dict[str, str] = {}
        self._request_log_path = request_log
        self.reqlog: RequestLog | None = None
        self.world: World | None = None
        self.agent: Agent | None = None
        self.imds: ImdsService | None = None
        self.azurite: Azurite | None = None
        self._runners: list[web.AppRunner] = []
        self._outages: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"LocalAzure(arm={self.env.get('AZRUN_ARM_ENDPOINT')}, storage={self.storage})"

    def _faults(self) -> Faults:
        return self.world.faults if self.world is not None else self.spec.faults

    def _limits(self) -> Limits:
        return self.world.throttler.limits if self.world is not None else self.spec.limits

    async def start(self) -> dict[str, str]:
        """Start everything; return (and keep in ``env``) the variables clients need."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(self.workdir / "tls")
        storage_task: asyncio.Task[None] | None = None
        if self.storage:
            self.azurite = Azurite(workdir=self.workdir / "azurite", tls=tls, host=self.host)
            storage_task = asyncio.create_task(self.azurite.start())
        try:
            arm_port, imds_port = await self._start_servers(tls)
            if storage_task is not None:
                await storage_task
        except BaseException:
            if storage_task is not None and not storage_task.done():
                storage_task.cancel()
                with contextlib.suppress(BaseException):
                    await storage_task
            await self.stop()
            raise
        self.env = self._env(tls, arm_port, imds_port)
        return dict(self.env)

    async def _start_servers(self, tls: TlsFiles) -> tuple[int, int]:
        self.reqlog = RequestLog(self._request_log_path)
        self.agent = Agent(
            root=self.workdir / "vms",
            settings=self.spec.sim,
            faults=self._faults,
            ca_bundle=str(tls.ca_path),
            storage_account_key=(ACCOUNT, ACCOUNT_KEY),
            storage_role=lambda principal: storage_role(self.spec, principal),
        )
        self.world = World(self.spec, agent=self.agent, reqlog=self.reqlog)
        self.imds = ImdsService(self.spec, reqlog=self.reqlog, faults=self._faults, limits=self._limits)
        arm_context = tls.server_context()
        arm_port = await self._serve(make_arm_app(self.world), arm_context)
        imds_port = await self._serve(self.imds.app(), None)
        self.world.refuse_hook = lambda seconds: self._refuse(seconds, arm_port, arm_context)
        return arm_port, imds_port

    def _refuse(self, seconds: float, port: int, ssl_context: Any) -> None:
        """Close ARM's listening socket for ``seconds`` (connections refused), then listen again."""
        runner = self._runners[0]

        async def outage() -> None:
            await asyncio.sleep(0.05)  # let the admin answer go out first
            for site in list(runner.sites):
                await site.stop()
            await asyncio.sleep(seconds)
            if self._runners and self._runners[0] is runner:
                await web.TCPSite(runner, self.host, port, ssl_context=ssl_context).start()

        task = asyncio.get_running_loop().create_task(outage())
        self._outages.add(task)
        task.add_done_callback(self._outages.discard)

    async def _serve(self, app: web.Application, ssl_context: Any) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.host, 0, ssl_context=ssl_context).start()
        return _bound_port(runner)

    def _env(self, tls: TlsFiles, arm_port: int, imds_port: int) -> dict[str, str]:
        arm = f"https://{self.host}:{arm_port}"
        imds = f"http://{self.host}:{imds_port}"
        assert self.imds is not None
        env = {
            "AZRUN_ARM_ENDPOINT": arm,
            "AZRUN_CA_BUNDLE": str(tls.ca_path),
            "AZRUN_SIM_ADMIN": f"{arm}/_sim",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": imds,
            "AZRUN_SIM_APPSERVICE_ENDPOINT": f"{imds}/msi/token",
            "AZRUN_SIM_APPSERVICE_HEADER": self.imds.appservice_secret,
            "AZURE_SUBSCRIPTION_ID": self.spec.subscriptions[0].id if self.spec.subscriptions else "",
        }
        if self.azurite is not None:
            env["AZRUN_STORAGE_ENDPOINT"] = self.azurite.endpoint
            env["AZRUN_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string
            env["AZRUN_OUTPUT_CONTAINER"] = self.azurite.container_url
        return env

    async def stop(self) -> None:
        """Stop everything that was started (idempotent)."""
        for task in list(self._outages):
            task.cancel()
        if self.agent is not None:
            await self.agent.aclose()
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        if self.azurite is not None:
            await self.azurite.stop()
        if self.reqlog is not None:
            self.reqlog.close()


def env_lines(env: dict[str, str]) -> str:
    """The env file's text: ``export KEY=VALUE`` per variable, shell-quoted."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """Write the env file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(env_lines(env))
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azrun sim", description="The local Azure (ARM + IMDS + Azurite).")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local Azure in the foreground until SIGINT/SIGTERM")
    up.add_argument("--fleet", type=Path, default=None, help="fleet TOML (default: the demo fleet)")
    up.add_argument(
        "--env-file", type=Path, default=None, help="where to write the env (default: WORKDIR/env)"
    )
    up.add_argument("--request-log", type=Path, default=None, help="JSON-lines request log")
    up.add_argument("--workdir", type=Path, default=None, help="state directory (default: a temporary one)")
    up.add_argument("--no-storage", action="store_true", help="do not start Azurite")
    up.add_argument(
        "--profile",
        choices=("fast", "realistic"),
        default=None,
        help="timing profile (default: the fleet file's [sim] profile, else fast)",
    )
    up.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    up.add_argument("--watch-parent", action="store_true", help=argparse.SUPPRESS)
    return parser


async def _watch_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            _LOG.warning("parent process %d is gone; shutting down", parent)
            stop.set()


async def _serve(args: argparse.Namespace) -> int:
    started = time.monotonic()
    temp_workdir = args.workdir is None
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="azrun-sim-"))
    env_file: Path = args.env_file or workdir / "env"
    spec = load_fleet(args.fleet or DEMO_FLEET)
    if args.profile is not None:
        spec = replace(spec, sim=replace(spec.sim, profile=args.profile))
    sim = LocalAzure(
        spec,
        workdir=workdir,
        request_log=args.request_log,
        storage=not args.no_storage,
        host=args.host,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(stop)) if args.watch_parent else None
    try:
        env = await sim.start()
        write_env_file(env_file, env)
        sys.stdout.write(env_lines(env))
        sys.stdout.flush()
        print(
            f"local Azure ready in {time.monotonic() - started:.2f} s; env file: {env_file}", file=sys.stderr
        )
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await sim.stop()
        if temp_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``up [--fleet FILE] [--env-file FILE] [--request-log FILE] [--workdir DIR] [--no-storage]
    [--profile fast|realistic]``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"error: the local Azure could not start: {exc}", file=sys.stderr)
        return 1
