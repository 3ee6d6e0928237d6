"""azrun in Azure Functions (Python v2 programming model): a scheduled run and an HTTP trigger.

Both run as the Function App's user-assigned identity (``AZRUN_CLIENT_ID``), which holds the
custom "azrun runner" role (infra/modules/role.bicep). Deploy with ``infra/`` and
``func azure functionapp publish <app> --python`` (see infra/README.md).

* Timer: every ``AZRUN_SCHEDULE`` (NCRONTAB, UTC) first resumes the runs an earlier invocation
  detached, then runs ``SCHEDULED_SCRIPT`` on the machines tagged ``AZRUN_TARGET_TAG`` and logs
  one line per machine. Each invocation waits at most ``AZRUN_FUNCTION_BUDGET_S`` (a minute
  under host.json's ``functionTimeout``): a run still going then is *detached*, not killed, and
  the next invocation resumes it (see ``azrun_job.py``).
* HTTP: ``POST /api/run`` with ``{"tag": "azrun-test=true", "command": "uptime", "timeout_s": 120}``
  (function key required) runs the command and answers with the summary (200 all good, 207 some
  failed, 202 still running: detached within the request's 180 s budget, resumed by the timer).
  HTTP requests are cut off after about 230 s.
"""

from __future__ import annotations

import json
import logging
import os

import azure.functions as func
from azrun_job import Detached, resume_detached, run_on_tag, summarize

from azrun.errors import AzrunError, ConfigError, TargetError

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("azrun.functions")

SCHEDULED_SCRIPT = """#!/bin/bash
set -eu
echo "host: $(hostname)"
uptime
df -h / | tail -1
"""
MAX_HTTP_TIMEOUT_S = 180


@app.timer_trigger(schedule="%AZRUN_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def scheduled_run(timer: func.TimerRequest) -> None:
    """Run the scheduled script on the tagged machines; a failed machine fails the invocation."""
    if timer.past_due:
        log.warning("timer is past due; running now")
    for earlier in await resume_detached():
        log.info("resumed run %s: %s", earlier.run_id, summarize(earlier).get("counts", "detached again"))
        if isinstance(earlier, Detached):
            return  # the budget went on earlier runs: the next invocation goes on with them
    result = await run_on_tag(os.environ["AZRUN_TARGET_TAG"], SCHEDULED_SCRIPT)
    if isinstance(result, Detached):
        log.warning("run %s still running at the budget: detached, the next invocation resumes it", result.run_id)
        return
    for r in result.results:
        log.info("%s: %s exit=%s", r.target.name, r.state.value, r.exit_code)
    log.info("run %s: %s", result.run_id, result.counts())
    if not result.ok:
        raise RuntimeError(f"run {result.run_id} failed on {len(result.failed)} machine(s)")


@app.route(route="run", methods=["POST"])
async def http_run(req: func.HttpRequest) -> func.HttpResponse:
    """Run a short command on the machines with a tag; 200 all good, 207 some failed, 400/502 errors."""
    try:
        body = req.get_json()
        tag = str(body.get("tag") or os.environ["AZRUN_TARGET_TAG"])
        command = str(body["command"])
        timeout_s = min(int(body.get("timeout_s", 120)), MAX_HTTP_TIMEOUT_S)
    except (ValueError, KeyError, TypeError):
        return _json({"error": 'send {"command": "...", "tag": "KEY=VALUE", "timeout_s": N}'}, 400)
    try:
        result = await run_on_tag(tag, command, timeout_s=timeout_s, budget_s=MAX_HTTP_TIMEOUT_S)
    except (ConfigError, TargetError) as exc:  # the request was wrong: bad tag, nothing matched
        return _json({"error": exc.message, "hint": exc.hint}, 400)
    except AzrunError as exc:  # identity, permissions, throttling: messages carry no secrets
        return _json({"error": exc.message, "hint": exc.hint}, 502)
    if isinstance(result, Detached):
        return _json(summarize(result), 202)
    return _json(summarize(result), 200 if result.ok else 207)


def _json(data: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json")
