"""``azrun worker``: host the durable engine's orchestrations and ticks for a scheduler.

The scheduler comes from ``--scheduler`` / ``AZRUN_DURABLE_ENDPOINT`` (and ``--taskhub`` /
``AZRUN_DURABLE_TASKHUB``); the identity, throttle and storage key from the same settings as
every other command. Runs until SIGTERM / Ctrl-C; any number of workers may serve one scheduler.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from azrun.cli._exit import ExitCode
from azrun.cli._globals import with_global_options

__all__ = ["SchedulerOpt", "TaskHubOpt", "register"]

SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", metavar="URL|HOST:PORT",
    help="Durable Task Scheduler endpoint (https://...) or a local scheduler's host:port (AZRUN_DURABLE_ENDPOINT).")]
TaskHubOpt = Annotated[str | None, typer.Option(
    "--taskhub", metavar="NAME", help="Task hub of the Durable Task Scheduler (AZRUN_DURABLE_TASKHUB, default 'default').")]


def register(app: typer.Typer) -> None:
    app.command("worker", epilog="Example: azrun worker --scheduler https://sched-x.westeurope.durabletask.io "
                "--taskhub azrun")(with_global_options(worker_cmd, data=False))


def worker_cmd(
    scheduler: SchedulerOpt = None,
    taskhub: TaskHubOpt = None,
    max_shards: Annotated[int, typer.Option(
        "--max-shards", metavar="N", help="Subscriptions this worker serves at once (default 32).")] = 32,
) -> None:
    """Serve durable runs: run their orchestrations and ticks until stopped (SIGTERM / Ctrl-C)."""
    from azrun.cli._run_inputs import load_settings
    from azrun.durable import DurableWorker, SchedulerConnection, WorkerHost

    settings = load_settings(durable_endpoint=scheduler, durable_taskhub=taskhub)
    connection = SchedulerConnection.from_settings(settings)
    worker = DurableWorker(connection, WorkerHost(settings), max_shards=max(1, max_shards))
    worker.start()
    sys.stderr.write(f"azrun worker {worker.host.name} serving {connection.describe()}\n")
    sys.stderr.flush()
    try:
        while True:
            time.sleep(1.0)
    finally:
        if not worker.stop(timeout_s=60.0):
            sys.stderr.write("azrun worker: ticks still running after 60 s; leaving them to the other workers\n")
            sys.stderr.flush()
            os._exit(int(ExitCode.TERMINATED))
