"""The examples (Function App job, Automation runbook) against the local Azure.

They are written against azrun's public pieces (Settings, ClientFactory, OutputStore, Fleet,
Selector, RunSpec); running them here keeps their signatures honest. ``function_app.py`` itself
needs ``azure-functions`` and is only checked to compile.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_function_app_compiles() -> None:
    py_compile.compile(str(EXAMPLES / "functions" / "function_app.py"), doraise=True)
    settings = json.loads((EXAMPLES / "functions" / "local.settings.json.example").read_text())
    assert settings["Values"]["AZRUN_STATE_DIR"]
    assert "azrun" in (EXAMPLES / "functions" / "requirements.txt").read_text()


async def test_function_job_runs_on_tagged_machines(local_azure: Any, azure_env: Any) -> None:
    azure_env(local_azure)
    job = _load(EXAMPLES / "functions" / "azrun_job.py", "azrun_job_example")
    result = await job.run_on_tag("role=web", 'echo "hello from $azrun_example"', timeout_s=60)
    summary = job.summarize(result)
    assert summary["counts"] == {"Succeeded": 4, "Skipped": 1}
    succeeded = [t for t in summary["targets"] if t["state"] == "Succeeded"]
    assert sorted(t["name"] for t in succeeded) == [f"vm-web-0{i}" for i in range(1, 5)]
    for target in succeeded:
        assert target["exit_code"] == 0
        assert "hello from" in target["stdout_tail"]
        assert target["stdout_url"] and "sig=" not in target["stdout_url"]
    json.dumps(summary)  # what the HTTP trigger returns must serialise


async def test_function_job_detaches_at_its_budget_and_the_next_invocation_resumes(
    local_azure: Any, azure_env: Any
) -> None:
    """The platform's timeout: past AZRUN_FUNCTION_BUDGET_S the run is detached (scripts keep
    running, the ledger says interrupted), and the next invocation finishes it; nothing runs twice."""
    from azrun.config import state_dir
    from azrun.ledger import Ledger

    azure_env(local_azure)
    env = dict(os.environ)  # the app settings: the local Azure's, and this test's state dir
    job = _load(EXAMPLES / "functions" / "azrun_job.py", "azrun_job_example_budget")
    script = 'echo "start $(hostname)"; sleep 3; echo "end $(hostname)"'
    first = await job.run_on_tag("role=web", script, timeout_s=60, environ={**env, "AZRUN_FUNCTION_BUDGET_S": "1"})
    assert isinstance(first, job.Detached)
    assert job.summarize(first)["detached"] is True
    with Ledger.open(state_dir()) as ledger:
        assert ledger.run_status(first.run_id) == "interrupted"
        rows = ledger.targets(first.run_id)
        assert {r.state.value for r in rows} <= {"Running", "Dispatching", "Pending", "Skipped"}
    # the next invocation: resumes the detached run before anything else, within its own budget
    later = await job.resume_detached(budget_s=60)
    assert [r.run_id for r in later] == [first.run_id] and not isinstance(later[0], job.Detached)
    result = later[0]
    assert result.counts() == {"Succeeded": 4, "Skipped": 1}
    for r in result.succeeded:  # each script ran once, to its end, across the two invocations
        assert r.stdout_tail.count("start ") == 1 and r.stdout_tail.count("end ") == 1
    with Ledger.open(state_dir()) as ledger:
        assert ledger.run_status(first.run_id) == "succeeded"
    assert await job.resume_detached(budget_s=60) == []  # nothing left for the invocation after


def test_runbook_main_prints_one_line_per_machine(
    local_azure: Any, azure_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    runbook = _load(EXAMPLES / "automation" / "runbook.py", "azrun_runbook_example")
    assert runbook.automation_settings() == {}  # no automationassets outside Automation
    rc = runbook.main(["--tag", "role=web", "--command", "echo runbook-ok", "--timeout", "60"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    machines = [line for line in lines if "machine" in line]
    assert sorted(m["machine"] for m in machines if m["state"] == "Succeeded") == [
        f"vm-web-0{i}" for i in range(1, 5)
    ]
    assert all("runbook-ok" in m["tail"] for m in machines if m["state"] == "Succeeded")
    assert lines[-1]["ok"] is True and lines[-1]["counts"]["Succeeded"] == 4


def test_runbook_reports_config_errors_with_a_hint(
    local_azure: Any, azure_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    runbook = _load(EXAMPLES / "automation" / "runbook.py", "azrun_runbook_example_err")
    assert runbook.main(["--tag", "=broken", "--command", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint: " in err
