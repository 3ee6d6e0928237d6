#!/usr/bin/env python3
"""Azure Automation Python runbook: run a script on the machines with a tag, with azrun.

Where it runs: a **Python 3.10 runbook** (azrun supports Python 3.10+). In Automation's cloud
sandbox, create a Python 3.10 runtime environment and import azrun's wheel and its dependencies
into it as packages (README, "Azure Automation"); on a **Linux Hybrid Runbook Worker**
(``infra/`` deploys one with ``deployHybridWorker=true``) azrun lives in ``/opt/azrun/venv``, and
if the interpreter the worker starts cannot import azrun the runbook re-executes itself with that
venv's.

Identity: on a hybrid worker "managed identity" is the worker VM's, reached through IMDS; the
runner identity is attached to the worker VM and named by ``AZRUN_CLIENT_ID``. (In a cloud
sandbox Automation exposes its own identity endpoint through ``IDENTITY_ENDPOINT`` /
``IDENTITY_HEADER``, which azrun's auto-detection understands.)

Settings come from the Automation variables ``infra/modules/automation.bicep`` creates
(``AZURE_SUBSCRIPTION_ID``, ``AZRUN_CLIENT_ID``, ``AZRUN_OUTPUT_CONTAINER``,
``AZRUN_BLOB_IDENTITY``, ``AZRUN_TARGET_TAG``), with the process environment as the fallback.

Parameters (Python runbooks get them as command-line arguments)::

    runbook.py [--tag KEY=VALUE] [--command TEXT] [--timeout SECONDS] [--max-errors N|N%]

Exit status: 0 when every machine succeeded, 1 otherwise (the job is then marked Failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

VENV_PYTHON = "/opt/azrun/venv/bin/python"
SETTINGS = (
    "AZURE_SUBSCRIPTION_ID",
    "AZRUN_CLIENT_ID",
    "AZRUN_OUTPUT_CONTAINER",
    "AZRUN_BLOB_IDENTITY",
    "AZRUN_TARGET_TAG",
)
DEFAULT_COMMAND = "hostname; uptime; df -h / | tail -1"


def ensure_azrun() -> None:
    """Re-execute under the worker's azrun venv when this interpreter has no azrun."""
    try:
        import azrun  # noqa: F401
    except ImportError:
        if os.path.exists(VENV_PYTHON) and os.path.realpath(sys.executable) != os.path.realpath(VENV_PYTHON):
            os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
        sys.exit(
            f"azrun is not installed for {sys.executable} and {VENV_PYTHON} does not exist: "
            "run this runbook on the azrun hybrid worker group (--run-on azrun-workers)"
        )


def automation_settings(names: Sequence[str] = SETTINGS) -> dict[str, str]:
    """Automation variables when running in Automation, else nothing (the environment is used)."""
    try:
        import automationassets  # type: ignore[import-not-found]  # provided by Azure Automation
    except ImportError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        try:
            value = automationassets.get_automation_variable(name)
        except Exception:  # an unset variable is not an error: the environment may have it
            continue
        if value:
            found[name] = str(value)
    return found


async def run(tag: str, command: str, *, timeout_s: int, max_errors: str, environ: Mapping[str, str]) -> Any:
    """One fleet run; returns azrun's FleetResult."""
    import azrun

    async with azrun.Fleet.from_env(environ) as fleet:
        return await fleet.run(
            azrun.Selector.from_options(tags=[tag]),
            azrun.RunSpec(script=command, script_name="runbook", timeout_s=timeout_s),
            max_errors=max_errors,
        )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a command on tagged machines with azrun.")
    parser.add_argument("--tag", help="KEY=VALUE (default: the AZRUN_TARGET_TAG variable)")
    parser.add_argument("--command", default=DEFAULT_COMMAND)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per machine")
    parser.add_argument("--max-errors", default="0")
    args = parser.parse_args(argv)

    env = {**(os.environ if environ is None else environ), **automation_settings()}
    env.setdefault("AZRUN_STATE_DIR", os.path.join(os.path.expanduser("~"), ".azrun-runbook"))
    tag = args.tag or env.get("AZRUN_TARGET_TAG")
    if not tag:
        parser.error("no --tag and no AZRUN_TARGET_TAG variable")

    from azrun.errors import AzrunError

    try:
        result = asyncio.run(
            run(tag, args.command, timeout_s=args.timeout, max_errors=args.max_errors, environ=env)
        )
    except AzrunError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    for r in result.results:
        # One JSON line per machine: Automation's job output stream keeps them.
        print(
            json.dumps(
                {
                    "machine": r.target.name,
                    "state": r.state.value,
                    "exit_code": r.exit_code,
                    "stdout": r.output.stdout_url,
                    "tail": r.stdout_tail[-500:],
                }
            )
        )
    print(json.dumps({"run_id": result.run_id, "counts": result.counts(), "ok": result.ok}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    ensure_azrun()
    sys.exit(main())
